//! Persist-before-acknowledge bookkeeping. Every durable write gets a ticket; a message that
//! acknowledges state waits here until the ticket covering that state is reported durable.

use crate::message::Envelope;
use crate::types::{Ballot, Slot};
use std::collections::VecDeque;

/// What the acceptor's state will be once a ticket is durable.
#[derive(Clone, Copy, Debug)]
struct Mark {
    ticket: u64,
    ballot: Ballot,
    horizon: Slot,
}

/// Tickets issued, tickets durable, and the sends waiting on them.
#[derive(Debug)]
pub struct Durability {
    next_ticket: u64,
    durable_upto: u64,
    marks: VecDeque<Mark>,
    durable_ballot: Ballot,
    durable_horizon: Slot,
    deferred: VecDeque<(u64, Envelope)>,
}

impl Durability {
    /// State after recovery: everything recovered is durable.
    pub fn new(ballot: Ballot, horizon: Slot) -> Self {
        Durability {
            next_ticket: 1,
            durable_upto: 0,
            marks: VecDeque::new(),
            durable_ballot: ballot,
            durable_horizon: horizon,
            deferred: VecDeque::new(),
        }
    }

    /// Issues the next ticket; `ballot`/`horizon` is the acceptor state the write makes durable.
    pub fn issue(&mut self, ballot: Ballot, horizon: Slot) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.marks.push_back(Mark { ticket, ballot, horizon });
        ticket
    }

    /// The newest ticket issued (0 if none).
    pub fn last_issued(&self) -> u64 {
        self.next_ticket - 1
    }

    /// Holds `envelope` until `ticket` is durable; hands it back at once if it already is.
    #[must_use]
    pub fn defer(&mut self, ticket: u64, envelope: Envelope) -> Option<Envelope> {
        if ticket <= self.durable_upto {
            return Some(envelope);
        }
        self.deferred.push_back((ticket, envelope));
        None
    }

    /// Records that every ticket `<= upto` is durable; `pop_released` then hands out the sends
    /// this releases.
    pub fn complete(&mut self, upto: u64) {
        assert!(
            upto < self.next_ticket,
            "contract violated: persisted-ticket-was-issued ({upto} >= {})",
            self.next_ticket
        );
        if upto > self.durable_upto {
            self.durable_upto = upto;
        }
        while let Some(mark) = self.marks.front() {
            if mark.ticket > self.durable_upto {
                break;
            }
            self.durable_ballot = mark.ballot;
            self.durable_horizon = mark.horizon;
            self.marks.pop_front();
        }
    }

    /// The oldest deferred send whose ticket is durable, if any (no list is built: a persist
    /// completion costs no allocation).
    pub fn pop_released(&mut self) -> Option<Envelope> {
        let (ticket, _) = self.deferred.front()?;
        if *ticket > self.durable_upto {
            return None;
        }
        self.deferred.pop_front().map(|(_, envelope)| envelope)
    }

    /// Ballot of the newest durable acceptor state.
    pub fn durable_ballot(&self) -> Ballot {
        self.durable_ballot
    }

    /// Every slot below this is durably accepted at `durable_ballot` or durably chosen.
    pub fn durable_horizon(&self) -> Slot {
        self.durable_horizon
    }

    /// Whether every issued ticket is durable.
    pub fn idle(&self) -> bool {
        self.marks.is_empty()
    }
}

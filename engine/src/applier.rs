//! Applies committed slots to a state machine exactly once per (client, seq): a retried request
//! that already executed gets the cached reply instead of executing again.

use crate::state_machine::StateMachine;
use crate::types::{ClientId, Slot, Value};
use bytes::Bytes;
use std::collections::BTreeMap;

/// What applying one request produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Executed now; this is its reply.
    Executed(Bytes),
    /// Executed before (a retry); this is the cached reply.
    Duplicate(Bytes),
    /// Older than the client's latest executed request: the client has moved on.
    Stale,
}

/// One request's result, for replying to its client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The client.
    pub client: ClientId,
    /// Its sequence number.
    pub seq: u64,
    /// What happened.
    pub outcome: Outcome,
}

/// A state machine plus the session table that suppresses duplicates. The session table is part of
/// the replicated state: every replica builds the same one from the same log.
pub struct Applier<S> {
    state_machine: S,
    sessions: BTreeMap<ClientId, (u64, Bytes)>,
    next_slot: Slot,
    executed_count: u64,
}

impl<S: StateMachine> Applier<S> {
    /// Wraps `state_machine`, expecting slot 0 next.
    pub fn new(state_machine: S) -> Self {
        Applier { state_machine, sessions: BTreeMap::new(), next_slot: 0, executed_count: 0 }
    }

    /// Applies the chosen value of `slot`; slots must come in order, each once.
    pub fn apply(&mut self, slot: Slot, value: &Value, results: &mut Vec<Applied>) {
        assert_eq!(slot, self.next_slot, "contract violated: apply-in-slot-order");
        self.next_slot += 1;
        let Value::Batch(requests) = value else { return };
        for request in requests.iter() {
            let outcome = match self.sessions.get(&request.client) {
                Some((last, reply)) if *last == request.seq => Outcome::Duplicate(reply.clone()),
                Some((last, _)) if *last > request.seq => Outcome::Stale,
                _ => {
                    let reply = self.state_machine.execute(&request.op);
                    self.executed_count += 1;
                    self.sessions.insert(request.client, (request.seq, reply.clone()));
                    Outcome::Executed(reply)
                }
            };
            results.push(Applied { client: request.client, seq: request.seq, outcome });
        }
    }

    /// The next slot expected.
    pub fn next_slot(&self) -> Slot {
        self.next_slot
    }

    /// Requests executed (duplicates excluded).
    pub fn executed_count(&self) -> u64 {
        self.executed_count
    }

    /// The wrapped state machine.
    pub fn state_machine(&self) -> &S {
        &self.state_machine
    }
}

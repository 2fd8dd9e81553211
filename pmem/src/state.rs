//! The log's in-memory view, rebuilt by replaying records in stream order: where each live
//! slot's latest record sits, the promised ballot, the commit slot and the discarded prefix.

use crate::live_slots::LiveSlots;
use crate::record::{Header, Kind};
use decree_engine::types::{Ballot, Slot};

/// Where the latest record of one slot sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Logical position of the record.
    pub lsn: u64,
    /// Ballot the value was accepted at.
    pub ballot: Ballot,
    /// Payload bytes.
    pub payload_len: u32,
}

/// The acceptor's durable hard state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    /// Highest ballot promised (never accept below it).
    pub promise: Ballot,
    /// Every slot below this is chosen.
    pub commit: Slot,
}

/// Everything recovery rebuilds from the record stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogState {
    /// Live slots and their latest records.
    pub entries: LiveSlots,
    /// Promise and commit.
    pub hard: HardState,
    /// Slots below this were discarded after a checkpoint.
    pub base: Slot,
}

impl LogState {
    /// Applies one record, in stream order.
    pub fn apply(&mut self, header: &Header) {
        match header.kind {
            Kind::Entry if header.slot >= self.base => {
                // A later record for the slot supersedes the earlier one (re-accept at a higher ballot).
                let loc = Location { lsn: header.lsn, ballot: header.ballot, payload_len: header.payload_len };
                self.entries.insert(header.slot, loc);
            }
            Kind::Entry => {}
            // max, not last-wins: a promise or commit never moves backwards, even if a driver
            // re-states an older one.
            Kind::Promise => self.hard.promise = self.hard.promise.max(header.ballot),
            Kind::Commit => self.hard.commit = self.hard.commit.max(header.slot),
            Kind::TruncateSuffix => self.entries.truncate_from(header.slot),
            Kind::DiscardPrefix if header.slot > self.base => {
                self.base = header.slot;
                self.entries.discard_below(header.slot);
            }
            Kind::DiscardPrefix | Kind::Pad => {}
        }
    }

    /// Position of the oldest record a live slot still needs, if any.
    pub fn oldest_live_lsn(&self) -> Option<u64> {
        self.entries.iter().map(|(_, loc)| loc.lsn).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: Kind, lsn: u64, slot: u64, round: u64) -> Header {
        Header { kind, lsn, slot, ballot: Ballot { round, leader: 1 }, payload_len: 0, durable_lsn: 0, epoch: 1 }
    }

    #[test]
    fn later_entry_supersedes_and_keeps_later_slots() {
        let mut s = LogState::default();
        s.apply(&rec(Kind::Entry, 0, 5, 1));
        s.apply(&rec(Kind::Entry, 56, 6, 1));
        s.apply(&rec(Kind::Entry, 112, 5, 2));
        assert_eq!(s.entries.get(5).unwrap().ballot.round, 2);
        assert!(s.entries.contains(6), "re-accepting slot 5 must not forget slot 6");
    }

    #[test]
    fn truncate_and_discard_forget_the_right_slots() {
        let mut s = LogState::default();
        for slot in 0..10 {
            s.apply(&rec(Kind::Entry, slot * 48, slot, 1));
        }
        s.apply(&rec(Kind::TruncateSuffix, 480, 7, 0));
        s.apply(&rec(Kind::DiscardPrefix, 528, 3, 0));
        s.apply(&rec(Kind::Entry, 576, 2, 1)); // below the base: stays discarded
        assert_eq!(s.entries.slots().collect::<Vec<_>>(), vec![3, 4, 5, 6]);
        assert_eq!(s.base, 3);
    }

    #[test]
    fn promise_and_commit_never_regress() {
        let mut s = LogState::default();
        s.apply(&rec(Kind::Promise, 0, 0, 9));
        s.apply(&rec(Kind::Promise, 48, 0, 4));
        s.apply(&rec(Kind::Commit, 96, 12, 0));
        s.apply(&rec(Kind::Commit, 144, 3, 0));
        assert_eq!(s.hard.promise.round, 9);
        assert_eq!(s.hard.commit, 12);
    }
}

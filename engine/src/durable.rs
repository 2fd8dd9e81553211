//! What a replica's storage holds, rebuilt from the `DurableWrite`s it made durable. Storages
//! (pmem's log, the simulator's) replay their records into this to recover.

use crate::core::log::AcceptLog;
use crate::core::DurableWrite;
use crate::types::{Ballot, Checkpoint, Slot, Value};
use std::collections::BTreeMap;
use thiserror::Error;

/// Recovered acceptor state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Durable {
    promised: Ballot,
    entries: BTreeMap<Slot, (Ballot, Value)>,
    commit: Slot,
    checkpoint: Option<Checkpoint>,
}

/// Recovered records that cannot come from a correct replica.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RecoveryError {
    /// Accepted slots must be contiguous; a hole means records were lost in the middle.
    #[error("recovered log has a hole at slot {0}: records were lost, refusing to vote on it")]
    Hole(Slot),
    /// The same slot at the same ballot with two values: corruption.
    #[error("slot {slot} holds two values at ballot {ballot}: storage is corrupt")]
    Conflict {
        /// Slot.
        slot: Slot,
        /// Ballot.
        ballot: Ballot,
    },
}

impl Durable {
    /// Replays one durable write.
    pub fn apply(&mut self, write: &DurableWrite) -> Result<(), RecoveryError> {
        match write {
            DurableWrite::Promise(ballot) => self.promised = self.promised.max(*ballot),
            DurableWrite::Commit(slot) => self.commit = self.commit.max(*slot),
            DurableWrite::Checkpoint(checkpoint) => {
                if self.checkpoint.as_ref().is_none_or(|held| held.slot < checkpoint.slot) {
                    self.entries = self.entries.split_off(&checkpoint.slot);
                    self.commit = self.commit.max(checkpoint.slot);
                    self.checkpoint = Some(checkpoint.clone());
                }
            }
            DurableWrite::Entries(entries) => {
                let base = self.base();
                for entry in entries.iter().filter(|e| e.slot >= base) {
                    match self.entries.get(&entry.slot) {
                        Some((ballot, value)) if *ballot == entry.ballot && *value != entry.value => {
                            return Err(RecoveryError::Conflict { slot: entry.slot, ballot: entry.ballot });
                        }
                        Some((ballot, _)) if *ballot > entry.ballot => {}
                        _ => {
                            self.entries.insert(entry.slot, (entry.ballot, entry.value.clone()));
                        }
                    }
                    self.promised = self.promised.max(entry.ballot);
                }
            }
        }
        Ok(())
    }

    /// First slot the log holds: the checkpoint's slot, or 0.
    pub fn base(&self) -> Slot {
        self.checkpoint.as_ref().map_or(0, |c| c.slot)
    }

    /// The newest checkpoint stored.
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        self.checkpoint.as_ref()
    }

    /// Checks the recovered state is one a correct replica could have written.
    pub fn validate(&self) -> Result<(), RecoveryError> {
        for (expected, slot) in (self.base()..).zip(self.entries.keys()) {
            if *slot != expected {
                return Err(RecoveryError::Hole(expected));
            }
        }
        Ok(())
    }

    /// Highest ballot promised (or accepted at).
    pub fn promised(&self) -> Ballot {
        self.promised
    }

    /// Highest commit index recorded.
    pub fn commit(&self) -> Slot {
        self.commit
    }

    /// Number of slots held.
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// Splits into (promised, log, commit) for the core. The commit is clamped to the log held.
    pub(crate) fn into_parts(self) -> (Ballot, AcceptLog, Slot, Option<Checkpoint>) {
        self.validate().expect("contract violated: recovered-log-contiguous");
        let mut log = AcceptLog::new(self.base());
        for (slot, (ballot, value)) in self.entries {
            log.put(slot, ballot, value);
        }
        let commit = self.commit.min(log.end()).max(log.base());
        (self.promised, log, commit, self.checkpoint)
    }
}

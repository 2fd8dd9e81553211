//! Safety checks run at every simulated step: at most one value chosen per slot (by the Paxos
//! definition, over durable accepts), committed prefixes never change, and every replica applies
//! a prefix of one sequence.

use super::Violation;
use crate::types::{Ballot, Entry, Slot, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The global view the checks compare every replica against.
#[derive(Debug, Default)]
pub struct SafetyChecker {
    quorum: usize,
    /// The one sequence every replica's applied log must be a prefix of.
    learned: Vec<Value>,
    /// Durable accepts per (slot, ballot): the value and who accepted it.
    accepts: HashMap<(Slot, Ballot), (Value, BTreeSet<usize>)>,
    /// Slots chosen by the Paxos definition: a majority durably accepted one (ballot, value).
    chosen: BTreeMap<Slot, Value>,
}

impl SafetyChecker {
    /// A checker for a group needing `quorum` votes.
    pub fn new(quorum: usize) -> Self {
        SafetyChecker { quorum, ..Default::default() }
    }

    /// Replica `node` made `entries` durable.
    pub fn on_durable_accept(&mut self, node: usize, entries: &[Entry]) -> Result<(), Violation> {
        for entry in entries {
            let (value, voters) = self
                .accepts
                .entry((entry.slot, entry.ballot))
                .or_insert_with(|| (entry.value.clone(), BTreeSet::new()));
            if *value != entry.value {
                return Err(Violation::TwoValuesInOneBallot { slot: entry.slot, ballot: entry.ballot });
            }
            voters.insert(node);
            if voters.len() >= self.quorum {
                match self.chosen.get(&entry.slot) {
                    Some(chosen) if *chosen != entry.value => {
                        return Err(Violation::TwoValuesChosen { slot: entry.slot });
                    }
                    Some(_) => {}
                    None => {
                        if let Some(learned) = self.learned.get(entry.slot as usize) {
                            if *learned != entry.value {
                                return Err(Violation::TwoValuesChosen { slot: entry.slot });
                            }
                        }
                        self.chosen.insert(entry.slot, entry.value.clone());
                    }
                }
            }
        }
        Ok(())
    }

    /// Replica `node` applied `value` at `slot` (its applies come in slot order from 0).
    pub fn on_apply(&mut self, node: usize, slot: Slot, value: &Value) -> Result<(), Violation> {
        let index = slot as usize;
        if index < self.learned.len() {
            if self.learned[index] != *value {
                return Err(Violation::AppliedDiverged { node, slot });
            }
        } else if index == self.learned.len() {
            if let Some(chosen) = self.chosen.get(&slot) {
                if chosen != value {
                    return Err(Violation::TwoValuesChosen { slot });
                }
            }
            self.learned.push(value.clone());
        } else {
            return Err(Violation::AppliedDiverged { node, slot });
        }
        Ok(())
    }

    /// Checks one replica's committed value at `slot` against the learned sequence.
    pub fn check_committed(&self, node: usize, slot: Slot, value: Option<&Value>) -> Result<(), Violation> {
        match (self.learned.get(slot as usize), value) {
            (Some(learned), Some(value)) if learned == value => Ok(()),
            _ => Err(Violation::CommittedPrefixChanged { node, slot }),
        }
    }

    /// Slots chosen so far.
    pub fn chosen_count(&self) -> usize {
        self.learned.len().max(self.chosen.len())
    }
}

//! Safety checks run at every simulated step: at most one value chosen per slot (by the Paxos
//! definition, over durable accepts), committed prefixes never change, and every replica applies
//! a prefix of one sequence.

use super::Violation;
use crate::applier::{Applier, Outcome};
use crate::kv::{KvOp, KvStore};
use crate::membership::Membership;
use crate::types::{Ballot, Entry, ReplicaId, Slot, Value};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The global view the checks compare every replica against.
pub struct SafetyChecker {
    /// Configurations by the first slot they decide, from the learned sequence's reconfigs.
    configurations: Vec<(Slot, Membership)>,
    /// The one sequence every replica's applied log must be a prefix of.
    learned: Vec<Value>,
    /// Durable accepts per (slot, ballot): the value and who accepted it.
    accepts: HashMap<(Slot, Ballot), (Value, BTreeSet<usize>)>,
    /// Slots chosen by the Paxos definition: a majority durably accepted one (ballot, value).
    chosen: BTreeMap<Slot, Value>,
    /// The learned sequence applied to a reference state machine...
    reference: Applier<KvStore>,
    /// ...recording each key's value after every slot that changed it: (slots applied, value).
    key_history: HashMap<Bytes, Vec<(Slot, Option<Bytes>)>>,
}

impl SafetyChecker {
    /// A checker for a group that starts with `initial`.
    pub fn new(initial: Membership) -> Self {
        SafetyChecker {
            learned: Vec::new(),
            accepts: HashMap::new(),
            chosen: BTreeMap::new(),
            reference: Applier::new(KvStore::default(), initial.clone()),
            key_history: HashMap::new(),
            configurations: vec![(0, initial)],
        }
    }

    /// The configuration that decides `slot`, if the learned sequence reaches far enough to know it.
    fn configuration_of(&self, slot: Slot) -> Option<&Membership> {
        if slot as usize > self.learned.len() {
            return None;
        }
        self.configurations.iter().rev().find(|(from, _)| *from <= slot).map(|(_, m)| m)
    }

    /// The configuration after every learned reconfig.
    pub fn latest_configuration(&self) -> &Membership {
        &self.configurations.last().expect("the initial configuration").1
    }

    /// Checks slot `slot` against the Paxos definition of chosen, once its configuration is known:
    /// a majority of that configuration's voters durably accepted one (ballot, value).
    fn evaluate(&mut self, slot: Slot) -> Result<(), Violation> {
        let Some(membership) = self.configuration_of(slot) else {
            return Ok(());
        };
        let quorum = membership.quorum();
        let mut newly_chosen = Vec::new();
        for ((s, _), (value, accepted_by)) in self.accepts.iter() {
            if *s != slot {
                continue;
            }
            let votes = accepted_by.iter().filter(|n| membership.is_voter(ReplicaId(**n as u32))).count();
            if votes >= quorum {
                newly_chosen.push(value.clone());
            }
        }
        for value in newly_chosen {
            match self.chosen.get(&slot) {
                Some(chosen) if *chosen != value => return Err(Violation::TwoValuesChosen { slot }),
                Some(_) => {}
                None => {
                    if let Some(learned) = self.learned.get(slot as usize) {
                        if *learned != value {
                            return Err(Violation::TwoValuesChosen { slot });
                        }
                    }
                    self.chosen.insert(slot, value);
                }
            }
        }
        Ok(())
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
            self.evaluate(entry.slot)?;
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
            self.record_reference(slot, value);
            if let Value::Reconfig(membership) = value {
                self.configurations.push((slot + 1, membership.clone()));
            }
            // The next slot's configuration is now known: judge what was accepted there early.
            self.evaluate(slot)?;
            self.evaluate(slot + 1)?;
        } else {
            return Err(Violation::AppliedDiverged { node, slot });
        }
        Ok(())
    }

    /// Applies a newly learned slot to the reference and records what each write left its key at.
    fn record_reference(&mut self, slot: Slot, value: &Value) {
        let mut results = Vec::new();
        self.reference.apply(slot, value, &mut results);
        let Value::Batch(requests) = value else {
            return;
        };
        for (request, result) in requests.iter().zip(results) {
            if !matches!(result.outcome, Outcome::Executed(_)) {
                continue;
            }
            if let Ok(op @ (KvOp::Put { .. } | KvOp::Cas { .. })) = KvOp::decode(request.op) {
                let after = self.reference.state_machine().get(op.key()).map(Bytes::copy_from_slice);
                self.key_history.entry(op.key().clone()).or_default().push((slot + 1, after));
            }
        }
    }

    /// A read at replica `node` of `key` with `slot` slots applied returned `value`: it must be the
    /// key's value after exactly those slots of the one sequence.
    pub fn check_read(&self, node: usize, key: &Bytes, slot: Slot, value: Option<&Bytes>) -> Result<(), Violation> {
        if slot as usize > self.learned.len() {
            return Err(Violation::WrongRead { node, slot });
        }
        let expected = self
            .key_history
            .get(key)
            .and_then(|history| history.iter().rev().find(|(at, _)| *at <= slot))
            .and_then(|(_, value)| value.as_ref());
        if expected != value {
            return Err(Violation::WrongRead { node, slot });
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

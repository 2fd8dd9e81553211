//! The checks that judge a run: committed prefixes at every step, convergence after healing, and
//! the linearizability of the client history.

use super::world::*;
use crate::kv::{KvOp, KvReply, KvStore};
use crate::sim::kv_model::KvRegister;
use crate::sim::linearizability::{self, Operation};
use crate::sim::Violation;
use crate::types::{ReplicaId, Slot};
use bytes::Bytes;
use std::collections::BTreeMap;

impl World {
    /// Newly committed slots of `node` match the one sequence.
    pub(super) fn check_new_commits(&mut self, node: usize) -> Result<(), Violation> {
        let Some(core) = self.nodes[node].core.as_ref() else {
            return Ok(());
        };
        let commit = core.status().commit;
        let from = self.nodes[node].commit_checked.max(core.log_base());
        for slot in from..commit {
            self.safety.check_committed(node, slot, core.committed_value(slot))?;
        }
        self.nodes[node].commit_checked = commit;
        Ok(())
    }

    /// Every live replica's whole committed prefix still matches (it must never change).
    pub(super) fn sweep_committed(&self) -> Result<(), Violation> {
        for (index, node) in self.nodes.iter().enumerate() {
            let Some(core) = node.core.as_ref() else {
                continue;
            };
            for slot in core.log_base()..core.status().commit {
                self.safety.check_committed(index, slot, core.committed_value(slot))?;
            }
        }
        Ok(())
    }

    /// After healing and settling, every member of the final configuration caught up to the same
    /// state (removed replicas may lag: nobody replicates to them any more).
    pub(super) fn check_converged(&self) -> Result<(), Violation> {
        let members = self.safety.latest_configuration();
        let states: Vec<(Slot, &KvStore)> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(index, _)| members.is_member(ReplicaId(*index as u32)))
            .map(|(_, n)| (n.applier.next_slot(), n.applier.state_machine()))
            .collect();
        let (slot, state) = states[0];
        for (index, (other_slot, other_state)) in states.iter().enumerate().skip(1) {
            if *other_slot != slot || *other_state != state {
                return Err(Violation::Diverged(format!(
                    "replica 0 applied {slot} slots, replica {index} applied {other_slot}; states equal: {}",
                    *other_state == state
                )));
            }
        }
        Ok(())
    }

    pub(super) fn check_history(&self) -> Result<(), Violation> {
        let mut by_key: BTreeMap<Bytes, Vec<Operation<KvOp, KvReply>>> = BTreeMap::new();
        for done in &self.history {
            by_key.entry(done.op.key().clone()).or_default().push(Operation {
                call_time: done.call_us,
                return_time: done.return_us,
                op: done.op.clone(),
                out: done.reply.clone(),
            });
        }
        for (key, operations) in by_key {
            if linearizability::check::<KvRegister>(&operations).is_err() {
                return Err(Violation::NotLinearizable {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    operations: operations.len(),
                });
            }
        }
        Ok(())
    }
}

//! Fault injection and administration in the simulated world: crashes, partitions, configuration
//! changes, leadership transfers, and the heal that ends the safety phase.

use super::world::*;
use crate::core::Input;
use crate::membership::Membership;
use crate::sim::Violation;
use crate::types::ReplicaId;

impl World {
    /// Crashes `node` (if up and faults are on): its unpersisted writes and volatile state are lost.
    pub(super) fn crash(&mut self, node: usize) {
        if self.healed {
            return;
        }
        if self.nodes[node].core.is_some() {
            let state = &mut self.nodes[node];
            state.core = None;
            state.awaiting.clear();
            state.reads.clear();
            state.incarnation += 1;
            self.report.lost_writes += state.storage.crash() as u64;
            self.report.crashes += 1;
            let down = self.rng.u64(10_000..400_000);
            self.after(down, Event::Restart { node });
        }
    }

    pub(super) fn partition(&mut self) {
        if self.healed {
            return;
        }
        let n = self.nodes.len();
        match self.rng.u32(0..3) {
            0 => {
                // Isolate one replica both ways.
                let isolated = self.rng.usize(0..n);
                for other in (0..n).filter(|o| *o != isolated) {
                    self.network.block(isolated, other);
                    self.network.block(other, isolated);
                }
            }
            1 => {
                // Asymmetric: one replica can send but not hear (or the reverse).
                let node = self.rng.usize(0..n);
                let outbound = self.rng.bool();
                for other in (0..n).filter(|o| *o != node) {
                    if outbound {
                        self.network.block(node, other);
                    } else {
                        self.network.block(other, node);
                    }
                }
            }
            _ => {
                // Split into two random groups.
                let side: Vec<bool> = (0..n).map(|_| self.rng.bool()).collect();
                for a in 0..n {
                    for b in 0..n {
                        if side[a] != side[b] {
                            self.network.block(a, b);
                        }
                    }
                }
            }
        }
        self.report.partitions += 1;
        let length = self.rng.u64(50_000..800_000);
        self.after(length, Event::PartitionEnd);
    }

    /// An administrator asks the (apparent) leader for a new configuration drawn at random from
    /// the pool: adds, removes, replaces, promotes learners, shrinks to one voter or grows to five.
    pub(super) fn reconfigure(&mut self) -> Result<(), Violation> {
        if self.healed {
            return Ok(());
        }
        let gap = self.rng.u64(0..2 * self.config.reconfig_every_ms * 1_000);
        self.after(gap, Event::Reconfigure);
        let pool = self.nodes.len();
        let size = [1, 3, 3, 3, 5][self.rng.usize(0..5)].min(pool);
        let mut ids: Vec<u32> = (0..pool as u32).collect();
        self.rng.shuffle(&mut ids);
        if ids[..size].iter().all(|i| self.vetoed.contains(&(*i as usize))) {
            // A group whose every voter refuses to lead can never make progress: not a useful test.
            ids.swap(0, size);
        }
        let voters: Vec<ReplicaId> = ids[..size].iter().map(|i| ReplicaId(*i)).collect();
        let learners: Vec<ReplicaId> = ids[size..].iter().filter(|_| self.rng.bool()).map(|i| ReplicaId(*i)).collect();
        let membership = Membership::try_new(voters, learners).expect("drawn configurations are well formed");
        let target = self.apparent_leader().unwrap_or_else(|| self.rng.usize(0..pool));
        self.step(target, Input::ChangeMembership(membership))
    }

    /// An administrator asks the leader to hand over (to a random voter, or the best one).
    pub(super) fn transfer(&mut self) -> Result<(), Violation> {
        if self.healed {
            return Ok(());
        }
        let gap = self.rng.u64(0..2 * self.config.transfer_every_ms * 1_000);
        self.after(gap, Event::Transfer);
        let Some(leader) = self.apparent_leader() else {
            return Ok(());
        };
        let to = if self.rng.bool() { None } else { Some(ReplicaId(self.rng.u32(0..self.nodes.len() as u32))) };
        self.step(leader, Input::TransferLeadership { to })
    }

    /// The live replica claiming leadership at the highest ballot.
    pub(super) fn apparent_leader(&self) -> Option<usize> {
        (0..self.nodes.len())
            .filter_map(|n| self.nodes[n].core.as_ref().map(|c| (c.status(), n)))
            .filter(|(status, _)| status.leading)
            .max_by_key(|(status, _)| status.promised)
            .map(|(_, n)| n)
    }

    /// Faults stop: links heal, crashed replicas restart, clients run their last operations.
    pub(super) fn heal(&mut self) {
        self.healed = true;
        self.network.heal();
        self.faults.drop_per_mille = 0;
        self.faults.duplicate_per_mille = 0;
        self.faults.stall_per_mille = 0;
        for node in 0..self.nodes.len() {
            if self.nodes[node].core.is_none() {
                self.start_node(node);
            }
        }
        for client in &mut self.clients {
            client.heal_ops_left = Some(self.config.heal_ops_per_client);
        }
        for client in 0..self.clients.len() {
            if self.clients[client].current.is_none() {
                self.after(0, Event::ClientNext { client });
            }
        }
        self.heal_deadline_us = self.now_us + self.config.heal_bound_ms * 1_000;
    }
}

//! The acceptor side: promises (phase 1b), accepts (phase 2b), heartbeats, and acknowledging
//! only what is durable.

use crate::contract;
use super::{DurableWrite, Replica, Role};
use crate::message::{Accept, Accepted, Heartbeat, Message, Prepare, Promise, Reject, Rejection};
use crate::types::{Ballot, Entry, ReplicaId};

impl Replica {
    pub(crate) fn on_prepare(&mut self, from: ReplicaId, prepare: Prepare) {
        let ballot = prepare.ballot;
        if ballot.owner() != from {
            return; // a ballot speaks only for its owner
        }
        if ballot < self.promised {
            self.reject(from, ballot, Rejection::Stale { promised: self.promised });
            return;
        }
        if ballot > self.promised {
            if let Some(leader) = self.live_leader() {
                // Leader stickiness: a replica that cannot see the leader must not depose it
                // while the rest still can.
                self.reject(from, ballot, Rejection::LeaderAlive { leader });
                return;
            }
            self.adopt_ballot(ballot);
            self.leader_hint = None;
            self.reset_election_timer();
        }
        let promise = Promise { ballot, commit: self.commit, entries: self.log.entries_from(prepare.from_slot) };
        #[cfg(feature = "mutations")]
        if self.mutated(super::Mutation::PromiseBeforePersist) {
            self.send(from, Message::Promise(promise));
            return;
        }
        self.send_when_durable(from, Message::Promise(promise));
    }

    pub(crate) fn on_accept(&mut self, from: ReplicaId, accept: Accept) {
        let ballot = accept.ballot;
        if ballot.owner() != from {
            return;
        }
        if ballot < self.promised {
            #[cfg(feature = "mutations")]
            if self.mutated(super::Mutation::AcceptLowerBallot) {
                self.accept_below_promise(from, accept);
                return;
            }
            self.reject(from, ballot, Rejection::Stale { promised: self.promised });
            return;
        }
        self.follow(ballot);
        if accept.start > self.horizon {
            self.reject(from, ballot, Rejection::Gap { horizon: self.horizon });
            return;
        }
        contract!(self, ballot == self.promised, "accept-not-below-promise");
        let end = accept.start + accept.values.len() as u64;
        for (offset, value) in accept.values.into_iter().enumerate() {
            let slot = accept.start + offset as u64;
            if slot < self.log.base() {
                continue;
            }
            if let Some(cell) = self.log.get(slot) {
                if slot < self.commit {
                    contract!(self, cell.value == value, "chosen-value-never-changes", "slot {slot}");
                    continue;
                }
                if cell.ballot == ballot {
                    contract!(self, cell.value == value, "one-value-per-slot-per-ballot", "slot {slot} ballot {ballot}");
                    continue;
                }
            }
            self.log.put(slot, ballot, value.clone());
            self.unpersisted.push(Entry { slot, ballot, value });
        }
        self.horizon = self.horizon.max(end);
        self.learn_commit(accept.commit.min(self.horizon));
        #[cfg(feature = "mutations")]
        if self.mutated(super::Mutation::AckBeforePersist) {
            self.send(from, Message::Accepted(Accepted { ballot, upto: self.horizon }));
        }
    }

    pub(crate) fn on_heartbeat(&mut self, from: ReplicaId, heartbeat: Heartbeat) {
        let ballot = heartbeat.ballot;
        if ballot.owner() != from {
            return;
        }
        if ballot < self.promised {
            self.reject(from, ballot, Rejection::Stale { promised: self.promised });
            return;
        }
        self.follow(ballot);
        self.learn_commit(heartbeat.commit.min(self.horizon));
        if self.durability.durable_ballot() == self.promised {
            let upto = self.durability.durable_horizon();
            self.send(from, Message::Accepted(Accepted { ballot, upto }));
        }
    }

    /// Acknowledges, to the leader, the horizon that has just become durable.
    pub(crate) fn after_durable(&mut self) {
        if !matches!(self.role, Role::Follower) {
            return;
        }
        let ballot = self.promised;
        if self.durability.durable_ballot() != ballot || ballot.owner() == self.id() || ballot == Ballot::ZERO {
            return;
        }
        let upto = self.durability.durable_horizon();
        self.send(ballot.owner(), Message::Accepted(Accepted { ballot, upto }));
    }

    /// A message from the leader of `ballot` (>= promised): follow it.
    fn follow(&mut self, ballot: Ballot) {
        if ballot > self.promised {
            self.adopt_ballot(ballot);
        }
        self.leader_hint = Some(ballot.owner());
        self.last_leader_contact_ms = Some(self.now_ms);
        self.reset_election_timer();
    }

    /// Promises `ballot` (higher than any before): durable before any acknowledgement of it, and
    /// the horizon restarts at the commit index because later slots were accepted at older ballots.
    pub(crate) fn adopt_ballot(&mut self, ballot: Ballot) {
        contract!(self, ballot > self.promised, "promise-only-rises", "{ballot} <= {}", self.promised);
        self.step_down(ballot);
        self.promised = ballot;
        self.horizon = self.commit;
        self.persist(DurableWrite::Promise(ballot));
    }

    /// The leader this replica heard from within the minimum election timeout, if any.
    fn live_leader(&self) -> Option<ReplicaId> {
        if let Role::Leader(_) = self.role {
            return self.has_quorum_contact().then_some(self.id());
        }
        let heard = self.last_leader_contact_ms?;
        let leader = self.leader_hint?;
        (self.now_ms.saturating_sub(heard) < self.cfg.election_timeout_min_ms).then_some(leader)
    }

    pub(crate) fn reject(&mut self, to: ReplicaId, ballot: Ballot, reason: Rejection) {
        self.send(to, Message::Reject(Reject { ballot, reason }));
    }

    /// Mutation only: accepts a run below the promised ballot and acknowledges it once durable.
    #[cfg(feature = "mutations")]
    fn accept_below_promise(&mut self, from: ReplicaId, accept: Accept) {
        let end = accept.start + accept.values.len() as u64;
        if accept.start > self.log.end() {
            return;
        }
        for (offset, value) in accept.values.into_iter().enumerate() {
            let slot = accept.start + offset as u64;
            if slot < self.commit {
                continue;
            }
            self.log.put(slot, accept.ballot, value.clone());
            self.unpersisted.push(Entry { slot, ballot: accept.ballot, value });
        }
        let upto = end;
        self.send_when_durable(from, Message::Accepted(Accepted { ballot: accept.ballot, upto }));
    }
}

//! The acceptor side: promises (phase 1b), accepts (phase 2b), heartbeats, and acknowledging
//! only what is durable.

use super::{DurableWrite, Replica, Role};
use crate::contract;
use crate::message::{Accept, Accepted, Heartbeat, Message, Prepare, Promise, Reject, Rejection};
use crate::types::{Ballot, ReplicaId};

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
            if let Some(leader) = self.live_leader().filter(|leader| *leader != from && !prepare.transfer) {
                // Leader stickiness: a replica that cannot see the leader must not depose it
                // while the rest still can. (The leader itself may re-run phase 1, e.g. after a
                // configuration change.)
                self.reject(from, ballot, Rejection::LeaderAlive { leader });
                return;
            }
            self.adopt_ballot(ballot);
            self.leader_hint = None;
            self.reset_election_timer();
        }
        let promise = Promise {
            ballot,
            commit: self.commit,
            log_base: self.log.base(),
            entries: self.log.entries_from(prepare.from_slot),
        };
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
        self.leader_awaits = accept.awaited;
        let end = accept.start + accept.values.len() as u64;
        for (offset, value) in accept.values.into_iter().enumerate() {
            let slot = accept.start + offset as u64;
            if slot < self.log.base() {
                continue;
            }
            if let Some(cell) = self.log.get(slot) {
                if slot < self.commit {
                    // Held chosen. A proposal at a lower ballot than the one held may carry
                    // another value: an old leader's, delayed, at a replica that learned the
                    // slot chosen (`Chosen`) without promising the newer ballot. From that
                    // ballot on, Paxos makes every proposal carry the chosen value.
                    if ballot >= cell.ballot {
                        contract!(self, cell.value == value, "chosen-value-never-changes", "slot {slot}");
                    }
                    continue;
                }
                if cell.ballot == ballot {
                    contract!(
                        self,
                        cell.value == value,
                        "one-value-per-slot-per-ballot",
                        "slot {slot} ballot {ballot}"
                    );
                    continue;
                }
            }
            self.accept_locally(slot, ballot, value);
        }
        self.horizon = self.horizon.max(end);
        self.learn_commit(accept.commit.min(self.horizon));
        #[cfg(feature = "mutations")]
        if self.mutated(super::Mutation::AckBeforePersist) {
            self.send(from, Message::Accepted(Accepted { ballot, upto: self.horizon, round: 0 }));
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
        self.leader_round_seen = self.leader_round_seen.max(heartbeat.round);
        self.learn_commit(heartbeat.commit.min(self.horizon));
        if self.durability.durable_ballot() == self.promised {
            let upto = self.durability.durable_horizon();
            self.send(from, Message::Accepted(Accepted { ballot, upto, round: self.leader_round_seen }));
        }
    }

    /// Acknowledges, to the leader, the horizon that has just become durable.
    pub(crate) fn after_durable(&mut self) {
        if !matches!(self.role, Role::Follower) {
            return;
        }
        let ballot = self.promised;
        // Only toward a leader heard from at this ballot (a mere candidate has nothing to count).
        if self.durability.durable_ballot() != ballot
            || self.leader_hint != Some(ballot.owner())
            || ballot.owner() == self.id()
        {
            return;
        }
        let upto = self.durability.durable_horizon();
        self.send(ballot.owner(), Message::Accepted(Accepted { ballot, upto, round: self.leader_round_seen }));
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
        self.leader_round_seen = 0;
        self.leader_awaits = true;
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
            self.accept_locally(slot, accept.ballot, value);
        }
        let upto = end;
        self.send_when_durable(from, Message::Accepted(Accepted { ballot: accept.ballot, upto, round: 0 }));
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::{DurableWrite, Input};
    use crate::message::{Accept, Accepted, Heartbeat, Message, Rejection};
    use crate::types::ReplicaId;

    fn accept(round: u64, leader: u32, start: u64, n: u64, commit: u64) -> Message {
        let values = (start..start + n).map(|s| batch(9, s + 1, "op")).collect();
        Message::Accept(Accept { ballot: ballot(round, leader), start, values, commit, awaited: true })
    }

    #[test]
    fn a_stale_accept_below_the_ballot_a_slot_was_learned_chosen_at_leaves_it_alone() {
        // Simulation seed 250: r4 learned slot 0 chosen at ballot 6.1 from a `Chosen` answer,
        // never promised 6.1, then got old leader r0's delayed accept at 5.0 with another value.
        let mut r = replica(2, 3);
        let chosen = crate::message::Chosen {
            ballot: ballot(6, 1),
            start: 0,
            entries: vec![crate::types::Entry { slot: 0, ballot: ballot(6, 1), value: batch(1, 1, "chosen") }],
            commit: 1,
        };
        deliver(&mut r, 10, 1, Message::Chosen(chosen));
        assert_eq!(r.status().commit, 1);
        let stale = Accept {
            ballot: ballot(5, 0),
            start: 0,
            values: [batch(2, 1, "stale")].into_iter().collect(),
            commit: 1,
            awaited: true,
        };
        deliver(&mut r, 11, 0, Message::Accept(stale));
        assert_eq!(r.log.get(0).unwrap().value, batch(1, 1, "chosen"), "the chosen value stays");
    }

    #[test]
    fn promise_is_held_until_the_promised_ballot_is_durable() {
        let mut r = replica(1, 3);
        let out = deliver(&mut r, 10, 0, prepare(ballot(1, 0)));
        assert!(sent(&out).is_empty(), "no promise before persist: {out:?}");
        assert_eq!(persists(&out)[0].1, DurableWrite::Promise(ballot(1, 0)));
        let out = persist_all(&mut r, 11, &out);
        assert!(matches!(sent(&out)[..], [(ReplicaId(0), Message::Promise(ref p))] if p.ballot == ballot(1, 0)));
    }

    #[test]
    fn prepare_below_the_promise_is_rejected_with_the_promise() {
        let mut r = replica(1, 3);
        let out = deliver(&mut r, 10, 2, prepare(ballot(2, 2)));
        persist_all(&mut r, 10, &out);
        // Let the stickiness window pass, so only the ballot order decides.
        let out = deliver(&mut r, 1_000, 0, prepare(ballot(1, 0)));
        let reply = sent(&out);
        assert!(
            matches!(reply[..], [(_, Message::Reject(ref rej))] if rej.reason == Rejection::Stale { promised: ballot(2, 2) })
        );
    }

    #[test]
    fn accept_below_the_promise_is_rejected_and_not_stored() {
        let mut r = replica(1, 3);
        let out = deliver(&mut r, 10, 2, prepare(ballot(2, 2)));
        persist_all(&mut r, 10, &out);
        let out = deliver(&mut r, 11, 0, accept(1, 0, 0, 1, 0));
        assert!(persists(&out).is_empty(), "nothing persisted from a stale accept");
        assert!(matches!(sent(&out)[..], [(_, Message::Reject(_))]));
        assert_eq!(r.status().log_end, 0);
    }

    #[test]
    fn accepted_is_sent_only_after_the_entries_are_durable_and_covers_them() {
        let mut r = replica(1, 3);
        let out = deliver(&mut r, 10, 0, accept(1, 0, 0, 3, 0));
        assert!(sent(&out).is_empty(), "no acknowledgement before persist");
        let out = persist_all(&mut r, 11, &out);
        let acks = sent(&out);
        assert_eq!(acks, vec![(ReplicaId(0), Message::Accepted(Accepted { ballot: ballot(1, 0), upto: 3, round: 0 }))]);
    }

    #[test]
    fn an_accept_past_the_horizon_is_refused_with_the_gap() {
        let mut r = replica(1, 3);
        let out = deliver(&mut r, 10, 0, accept(1, 0, 0, 2, 0));
        persist_all(&mut r, 10, &out);
        let out = deliver(&mut r, 12, 0, accept(1, 0, 5, 1, 0));
        assert!(
            matches!(sent(&out)[..], [(_, Message::Reject(ref rej))] if rej.reason == Rejection::Gap { horizon: 2 })
        );
    }

    #[test]
    fn a_new_ballot_restarts_the_horizon_at_the_commit_index() {
        let mut r = replica(1, 3);
        let out = deliver(&mut r, 10, 0, accept(1, 0, 0, 4, 2));
        persist_all(&mut r, 10, &out);
        assert_eq!(r.status().commit, 2);
        // Leader 2 at a higher ballot may only continue from the commit index: slots 2..4 were
        // accepted at an older ballot and must be re-accepted at the new one.
        let out = deliver(&mut r, 20, 2, accept(2, 2, 3, 1, 2));
        assert!(
            matches!(sent(&out)[..], [(_, Message::Reject(ref rej))] if rej.reason == Rejection::Gap { horizon: 2 })
        );
    }

    #[test]
    fn heartbeat_propagates_commit_only_within_the_horizon() {
        let mut r = replica(1, 3);
        let out = deliver(&mut r, 10, 0, accept(1, 0, 0, 2, 0));
        persist_all(&mut r, 10, &out);
        let out = deliver(&mut r, 11, 0, Message::Heartbeat(Heartbeat { ballot: ballot(1, 0), commit: 10, round: 0 }));
        assert_eq!(r.status().commit, 2, "commit is capped at what this replica holds at the leader's ballot");
        let applied: Vec<u64> = out
            .iter()
            .filter_map(|c| match c {
                super::super::Command::Apply { slot, .. } => Some(*slot),
                _ => None,
            })
            .collect();
        assert_eq!(applied, vec![0, 1]);
    }

    #[test]
    fn proposals_at_a_follower_are_redirected_to_the_leader() {
        let mut r = replica(1, 3);
        let out = deliver(&mut r, 10, 0, accept(1, 0, 0, 1, 0));
        persist_all(&mut r, 10, &out);
        let out = step(&mut r, 11, Input::Propose(vec![request(5, 1, "x")]));
        assert!(
            matches!(&out[..], [super::super::Command::Redirect { leader: Some(ReplicaId(0)), requests }] if requests.len() == 1)
        );
    }
}

//! Leader election: phase 1 over the whole undecided suffix, with randomized back-off.

use super::{Command, Replica, Role};
use crate::contract;
use crate::message::{Message, Prepare, Promise};
use crate::types::{Ballot, Entry, ReplicaId, Slot};
use std::collections::{BTreeMap, BTreeSet};

/// A candidate's phase 1 in progress.
#[derive(Debug)]
pub(crate) struct Election {
    /// The ballot being prepared.
    pub ballot: Ballot,
    /// Every slot below this was chosen and known when the election started.
    pub from_slot: Slot,
    /// Replicas that promised (the candidate counts once its own promise is durable).
    pub promised_by: BTreeSet<ReplicaId>,
    /// For each reported slot, the entry with the highest ballot.
    pub highest: BTreeMap<Slot, Entry>,
    /// Highest commit index any promiser reported.
    pub max_commit: Slot,
}

impl Replica {
    /// Starts phase 1 because the leader asked this replica to take over.
    pub(crate) fn start_election_for_transfer(&mut self) {
        self.campaign(true);
    }

    /// Starts phase 1 for a fresh ballot above every round seen.
    pub(crate) fn start_election(&mut self) {
        self.campaign(false);
    }

    fn campaign(&mut self, transfer: bool) {
        let round = self.promised.round.max(self.max_round_seen) + 1;
        let ballot = Ballot::new(round, self.id());
        self.adopt_ballot(ballot);
        self.leader_hint = None;
        self.last_leader_contact_ms = None;
        let from_slot = self.commit;
        self.role = Role::Candidate(Election {
            ballot,
            from_slot,
            promised_by: BTreeSet::new(),
            highest: BTreeMap::new(),
            max_commit: self.commit,
        });
        self.reset_election_timer();
        let own = Promise {
            ballot,
            commit: self.commit,
            log_base: self.log.base(),
            entries: self.log.entries_from(from_slot),
        };
        self.send_when_durable(self.id(), Message::Promise(own));
        let me = self.id();
        let voters: Vec<ReplicaId> = self.membership.voters().to_vec();
        for voter in voters.into_iter().filter(|v| *v != me) {
            self.send(voter, Message::Prepare(Prepare { ballot, from_slot, transfer }));
        }
    }

    pub(crate) fn on_promise(&mut self, from: ReplicaId, promise: Promise) {
        let quorum = self.membership.quorum();
        let is_voter = self.membership.is_voter(from);
        let Role::Candidate(election) = &mut self.role else {
            return;
        };
        if promise.ballot != election.ballot || !is_voter || !election.promised_by.insert(from) {
            return;
        }
        #[cfg(feature = "mutations")]
        let gap_checked = self.cfg.mutation != super::Mutation::IgnoreCheckpointGap;
        #[cfg(not(feature = "mutations"))]
        let gap_checked = true;
        let Role::Candidate(election) = &mut self.role else {
            return;
        };
        if gap_checked && promise.log_base > election.from_slot {
            // The promiser discarded slots this candidate has not learned: they are only in its
            // checkpoint, so re-proposing them is impossible. Stand down and fetch the checkpoint.
            self.role = Role::Follower;
            self.reset_election_timer();
            self.request_snapshot(from, promise.log_base);
            return;
        }
        election.max_commit = election.max_commit.max(promise.commit);
        for entry in promise.entries {
            if entry.slot < election.from_slot {
                continue;
            }
            match election.highest.get(&entry.slot) {
                Some(held) if held.ballot >= entry.ballot => {}
                _ => {
                    election.highest.insert(entry.slot, entry);
                }
            }
        }
        if election.promised_by.len() >= quorum {
            self.become_leader();
        }
    }

    /// Phase 1 succeeded: re-propose the highest-ballot value of every undecided slot at our
    /// ballot (no-ops where nobody reported one), then lead.
    fn become_leader(&mut self) {
        let Role::Candidate(election) = std::mem::replace(&mut self.role, Role::Follower) else {
            unreachable!("become_leader outside an election")
        };
        let ballot = election.ballot;
        contract!(self, ballot == self.promised, "leader-owns-promised-ballot");
        contract!(self, self.membership.is_voter(self.id()), "leader-is-a-voter");
        let reported_end =
            election.highest.keys().next_back().map_or(election.from_slot, |s| s + 1).max(self.log.end());
        let new_commit = election.max_commit.max(self.commit);
        // A reconfig ends this configuration's slots: later slots belong to the next one, whose
        // phase 1 runs once the reconfig is chosen. If a promiser already knows it chosen, adopt
        // only what is known chosen; applying it switches configurations and restarts phase 1.
        let cut = Self::first_reconfig(election.highest.range(election.from_slot..));
        let end = match cut {
            Some(slot) if slot < new_commit => new_commit,
            Some(slot) => slot + 1,
            None => reported_end,
        };
        contract!(self, new_commit <= end, "adopted-commit-within-suffix", "{new_commit} > {end}");
        for slot in election.from_slot.max(self.commit)..end {
            let value = match election.highest.get(&slot) {
                Some(entry) => entry.value.clone(),
                None => crate::types::Value::Noop,
            };
            #[cfg(feature = "mutations")]
            let value = if self.mutated(super::Mutation::SkipRepropose) && slot >= new_commit {
                crate::types::Value::Noop
            } else {
                value
            };
            if slot < self.commit {
                continue; // already chosen and known here
            }
            self.accept_locally(slot, ballot, value);
        }
        self.horizon = end;
        self.learn_commit(new_commit);
        let mut leadership =
            super::leader::Leadership::new(ballot, &self.membership, self.id(), election.from_slot, self.now_ms);
        leadership.reconfig_pending = cut.filter(|slot| *slot >= self.commit);
        leadership.phase1_end = end;
        self.role = Role::Leader(leadership);
        self.leader_hint = Some(self.id());
        self.out.push(Command::LeadershipChanged { leading: true, ballot });
        self.broadcast_heartbeat();
        self.replicate_all();
    }

    /// Stops leading or campaigning because `seen` (a higher ballot) exists.
    pub(crate) fn step_down(&mut self, seen: Ballot) {
        match std::mem::replace(&mut self.role, Role::Follower) {
            Role::Leader(leadership) => {
                self.out.push(Command::LeadershipChanged { leading: false, ballot: seen });
                let hint = (seen.owner() != self.id()).then_some(seen.owner());
                for read in &leadership.reads {
                    self.out.push(Command::ReadRefused { id: read.id, leader: hint });
                }
                let refused = leadership.pending.iter().map(|r| (r.client, r.seq)).collect();
                self.leader_hint = (seen.owner() != self.id()).then_some(seen.owner());
                self.last_leader_contact_ms = self.leader_hint.map(|_| self.now_ms);
                self.redirect(refused);
                self.reset_election_timer();
            }
            Role::Candidate(_) => self.reset_election_timer(),
            Role::Follower => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::{Command, Input};
    use crate::message::{Heartbeat, Message, Promise};
    use crate::types::{Entry, ReplicaId, Value};

    #[test]
    fn phase1_reproposes_the_highest_ballot_value_of_every_reported_slot() {
        let mut r = replica(0, 3);
        step(&mut r, 0, Input::Tick);
        // Having seen round 2, the next election uses round 3.
        deliver(&mut r, 1, 2, Message::Heartbeat(Heartbeat { ballot: ballot(2, 2), commit: 0, round: 0 }));
        let out = step(&mut r, 2_000, Input::Tick);
        let prepares: Vec<_> = sent(&out).into_iter().filter(|(_, m)| matches!(m, Message::Prepare(_))).collect();
        assert_eq!(prepares.len(), 2, "prepare goes to both other voters");
        let (a, b, c, d) = (batch(1, 1, "a"), batch(1, 2, "b"), batch(2, 1, "c"), batch(3, 1, "d"));
        let from_1 = Promise {
            ballot: ballot(3, 0),
            commit: 0,
            log_base: 0,
            entries: vec![
                Entry { slot: 0, ballot: ballot(1, 1), value: a },
                Entry { slot: 1, ballot: ballot(1, 1), value: b.clone() },
                Entry { slot: 2, ballot: ballot(1, 1), value: Value::Noop },
                Entry { slot: 3, ballot: ballot(1, 1), value: d.clone() },
            ],
        };
        let from_2 = Promise {
            ballot: ballot(3, 0),
            commit: 0,
            log_base: 0,
            entries: vec![Entry { slot: 0, ballot: ballot(2, 2), value: c.clone() }],
        };
        // Its own promise is not durable yet, so it needs both others.
        deliver(&mut r, 2_001, 1, Message::Promise(from_1));
        assert!(!r.status().leading, "one promise is not a majority while its own is not durable");
        deliver(&mut r, 2_002, 2, Message::Promise(from_2));
        assert!(r.status().leading);
        assert_eq!(r.status().log_end, 4);
        let accepts: Vec<Value> = (0..4).map(|s| r.log.get(s).unwrap().value.clone()).collect();
        assert_eq!(accepts[0], c, "slot 0: ballot 2.2 beats 1.1");
        assert_eq!(accepts[1], b);
        assert_eq!(accepts[2], Value::Noop);
        assert_eq!(accepts[3], d);
        assert!((0..4).all(|s| r.log.get(s).unwrap().ballot == ballot(3, 0)), "all re-proposed at the new ballot");
    }

    #[test]
    fn phase1_prefers_the_higher_ballot_when_promises_disagree() {
        let mut r = replica(0, 3);
        step(&mut r, 0, Input::Tick);
        deliver(&mut r, 1, 2, Message::Heartbeat(Heartbeat { ballot: ballot(2, 2), commit: 0, round: 0 }));
        let out = step(&mut r, 2_000, Input::Tick);
        persist_all(&mut r, 2_000, &out); // own promise durable: one more makes a majority
        let (low, high) = (batch(1, 1, "low"), batch(2, 1, "high"));
        let promise = Promise {
            ballot: ballot(3, 0),
            commit: 0,
            log_base: 0,
            entries: vec![Entry { slot: 0, ballot: ballot(2, 2), value: high.clone() }],
        };
        // Its own log holds nothing; r1 reports the higher-ballot value.
        r.log.put(0, ballot(1, 1), low);
        let _ = deliver(&mut r, 2_001, 1, Message::Promise(promise));
        assert!(r.status().leading);
        assert_eq!(r.log.get(0).unwrap().value, high);
    }

    #[test]
    fn a_single_voter_group_elects_itself_once_its_promise_is_durable() {
        let mut r = replica(0, 1);
        step(&mut r, 0, Input::Tick);
        let out = step(&mut r, 1_000, Input::Tick);
        assert!(!r.status().leading);
        let out = persist_all(&mut r, 1_000, &out);
        assert!(r.status().leading);
        assert!(out.iter().any(|c| matches!(c, Command::LeadershipChanged { leading: true, .. })));
        assert_eq!(r.leader(), Some(ReplicaId(0)));
    }
}

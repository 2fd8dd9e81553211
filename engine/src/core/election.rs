//! Leader election: phase 1 over the whole undecided suffix, with randomized back-off.

use crate::contract;
use super::{Command, Replica, Role};
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
    /// Starts phase 1 for a fresh ballot above every round seen.
    pub(crate) fn start_election(&mut self) {
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
        let own = Promise { ballot, commit: self.commit, entries: self.log.entries_from(from_slot) };
        self.send_when_durable(self.id(), Message::Promise(own));
        let me = self.id();
        let voters: Vec<ReplicaId> = self.membership.voters().to_vec();
        for voter in voters.into_iter().filter(|v| *v != me) {
            self.send(voter, Message::Prepare(Prepare { ballot, from_slot }));
        }
    }

    pub(crate) fn on_promise(&mut self, from: ReplicaId, promise: Promise) {
        let quorum = self.membership.quorum();
        let is_voter = self.membership.is_voter(from);
        let Role::Candidate(election) = &mut self.role else { return };
        if promise.ballot != election.ballot || !is_voter || !election.promised_by.insert(from) {
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
        let end = election.highest.keys().next_back().map_or(election.from_slot, |s| s + 1).max(self.log.end());
        let new_commit = election.max_commit.max(self.commit);
        contract!(self, new_commit <= end, "adopted-commit-within-suffix", "{new_commit} > {end}");
        for slot in election.from_slot..end {
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
            self.log.put(slot, ballot, value.clone());
            self.unpersisted.push(Entry { slot, ballot, value });
        }
        self.horizon = end;
        self.learn_commit(new_commit);
        self.role = Role::Leader(super::leader::Leadership::new(
            ballot,
            &self.membership,
            self.id(),
            election.from_slot,
            self.now_ms,
        ));
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
                let refused = leadership.pending.iter().map(|r| (r.client, r.seq)).collect();
                self.leader_hint = (seen.owner() != self.id()).then_some(seen.owner());
                self.redirect(refused);
                self.reset_election_timer();
            }
            Role::Candidate(_) => self.reset_election_timer(),
            Role::Follower => {}
        }
    }
}

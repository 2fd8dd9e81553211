//! The leader: batching client requests into slots, the pipelined phase 2 window, per-follower
//! replication and catch-up, commit by majority, heartbeats and check-quorum.

use super::{Command, Replica, Role};
use crate::batch::Batch;
use crate::contract;
use crate::membership::Membership;
use crate::message::{Accept, Accepted, Heartbeat, Message, Reject, Rejection};
use crate::types::{Ballot, ReplicaId, Request, Slot, Value};
use std::collections::{BTreeMap, VecDeque};

/// What the leader knows of one follower.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    /// Next slot to send.
    pub next: Slot,
    /// Every slot below this is durably accepted there at our ballot (or chosen).
    pub matched: Slot,
    /// `matched` at the previous heartbeat, to spot a stalled follower.
    pub matched_at_heartbeat: Slot,
    /// When it last answered at our ballot.
    pub last_ack_ms: u64,
    /// When a checkpoint chunk last went to it (its next slot was discarded); None: no transfer.
    /// The follower drives a transfer with its requests, so the leader restarts one only after
    /// an election timeout of silence: restarting on every stalled heartbeat started a new chain
    /// of chunk requests each time, and a multi-megabyte checkpoint never finished (CI, stop 8).
    pub snapshot_sent_ms: Option<u64>,
    /// Highest heartbeat round it echoed.
    pub round: u64,
    /// The horizon in its latest acknowledgement (it can fall below `matched` after a restart).
    pub reported: Slot,
    /// `reported` at the previous heartbeat.
    pub reported_at_heartbeat: Slot,
    /// When accepts last went to it (a spare replicated lazily waits `spare_lag_ms` after it).
    pub sent_ms: u64,
    /// Since when accepts sent to it have waited for its acknowledgement; None: it holds all sent.
    pub waiting_since_ms: Option<u64>,
}

/// State that exists only while leading.
#[derive(Debug)]
pub(crate) struct Leadership {
    /// The ballot led.
    pub ballot: Ballot,
    /// Per follower.
    pub progress: BTreeMap<ReplicaId, Progress>,
    /// Requests waiting for room in the window.
    pub pending: VecDeque<Request>,
    /// When the next heartbeat is due.
    pub next_heartbeat_ms: u64,
    /// When leadership began (check-quorum waits one election timeout before judging).
    pub since_ms: u64,
    /// A reconfig at this slot is not yet chosen: nothing is proposed past it.
    pub reconfig_pending: Option<Slot>,
    /// End of the slots phase 1 re-proposed: a read-index never goes below it.
    pub phase1_end: Slot,
    /// Heartbeat rounds sent for read confirmation.
    pub read_round: u64,
    /// A read arrived since the last round: start one at the end of the step.
    pub read_round_due: bool,
    /// Linearizable reads waiting for confirmation and apply.
    pub reads: VecDeque<super::reads::PendingRead>,
    /// A leadership hand-over in progress: no new proposals meanwhile.
    pub transfer: Option<super::transfer::Transfer>,
    /// Spares are replicated at once and their votes awaited, because commits kept completing on
    /// a spare's vote: the commit path answers slower than a lazily replicated spare
    /// (`note_who_completed_commit`).
    pub spares_eager: bool,
    /// Commits in a row that went against the current mode: completed by a spare's vote while
    /// spares are lazy, by the commit path's while they are eager.
    pub commits_against_mode: u32,
}

/// Commits in a row completed against the mode before the leader switches it (`spares_eager`):
/// enough that one late acknowledgement does not flip it.
const SWITCH_AFTER_COMMITS: u32 = 8;

impl Progress {
    /// A follower assumed to need everything from `next` on.
    pub(crate) fn new(next: Slot, now_ms: u64) -> Self {
        Progress {
            next,
            matched: 0,
            matched_at_heartbeat: 0,
            last_ack_ms: now_ms,
            snapshot_sent_ms: None,
            round: 0,
            reported: 0,
            reported_at_heartbeat: 0,
            sent_ms: now_ms,
            waiting_since_ms: None,
        }
    }
}

impl Leadership {
    pub(crate) fn new(ballot: Ballot, membership: &Membership, me: ReplicaId, from_slot: Slot, now_ms: u64) -> Self {
        let progress =
            membership.members().filter(|m| *m != me).map(|m| (m, Progress::new(from_slot, now_ms))).collect();
        Leadership {
            ballot,
            progress,
            pending: VecDeque::new(),
            next_heartbeat_ms: now_ms,
            since_ms: now_ms,
            reconfig_pending: None,
            phase1_end: from_slot,
            read_round: 0,
            read_round_due: false,
            reads: VecDeque::new(),
            transfer: None,
            spares_eager: false,
            commits_against_mode: 0,
        }
    }
}

impl Replica {
    pub(crate) fn leader_propose(&mut self, requests: &mut Vec<Request>) {
        let limit = self.cfg.max_pending_requests;
        let Role::Leader(leadership) = &mut self.role else { unreachable!("leader_propose while not leading") };
        let room = limit.saturating_sub(leadership.pending.len());
        let mut overflow = Vec::new();
        for (index, request) in requests.drain(..).enumerate() {
            if index < room {
                leadership.pending.push_back(request);
            } else {
                overflow.push((request.client, request.seq));
            }
        }
        if !overflow.is_empty() {
            // Back-pressure: the client retries; redirect names this replica as the leader.
            self.redirect(overflow);
        }
        self.fill_window();
    }

    /// Cuts pending requests into batches while the window has room, one slot per batch.
    pub(crate) fn fill_window(&mut self) {
        let mut proposed = false;
        while let Some((ballot, batch)) = self.cut_batch() {
            self.propose_at_horizon(ballot, Value::Batch(batch));
            proposed = true;
        }
        if proposed {
            self.replicate_all();
        }
    }

    /// The next batch of pending requests, if the window has room and nothing (a pending reconfig,
    /// a hand-over) holds proposals back.
    fn cut_batch(&mut self) -> Option<(Ballot, Batch)> {
        let window_end = self.commit + self.cfg.window_slots;
        let (max_requests, max_bytes) = (self.cfg.max_batch_requests, self.cfg.max_batch_bytes);
        let horizon = self.horizon;
        let Role::Leader(leadership) = &mut self.role else { return None };
        if leadership.pending.is_empty()
            || horizon >= window_end
            || leadership.reconfig_pending.is_some()
            || leadership.transfer.is_some()
        {
            return None;
        }
        let (mut count, mut size_bytes) = (0, 0);
        for request in &leadership.pending {
            let next_size = size_bytes + request.size_bytes();
            if count > 0 && (count >= max_requests || next_size > max_bytes) {
                break;
            }
            size_bytes = next_size;
            count += 1;
        }
        // The batch copies the requests into the core's arena; their own buffers go back now.
        let batch = Batch::encode(leadership.pending.range(..count), &mut self.batch_arena);
        leadership.pending.drain(..count);
        Some((leadership.ballot, batch))
    }

    /// Proposes `value` in the next slot (stale entries past the horizon, from older ballots, are
    /// overwritten); the caller replicates.
    pub(crate) fn propose_at_horizon(&mut self, ballot: Ballot, value: Value) -> Slot {
        let slot = self.horizon;
        self.accept_locally(slot, ballot, value);
        self.horizon = slot + 1;
        slot
    }

    pub(crate) fn replicate_all(&mut self) {
        let Role::Leader(leadership) = &self.role else { return };
        // On the stack: a proposal allocates nothing (a group has a handful of followers).
        let followers: smallvec::SmallVec<[ReplicaId; 8]> = leadership.progress.keys().copied().collect();
        for follower in followers {
            self.replicate_if_due(follower);
        }
    }

    /// `replicate`, unless `follower` is a spare replicated lazily whose lag is not up yet and
    /// for which less than a full accept is waiting (so a spare never falls behind by more).
    fn replicate_if_due(&mut self, follower: ReplicaId) {
        let Role::Leader(leadership) = &self.role else { return };
        let Some(progress) = leadership.progress.get(&follower) else { return };
        let lazy = self.lazy_spare(leadership, follower);
        let due = !lazy
            || self.now_ms >= progress.sent_ms + self.cfg.spare_lag_ms
            || self.horizon.saturating_sub(progress.next) >= self.cfg.max_values_per_accept as u64;
        if due {
            self.send_accepts(follower, !lazy);
        }
    }

    /// Whether this replica leads with spares replicated lazily and awaits their votes now,
    /// because a follower on its commit path stalled (`commit_path_stalled`) or answers slower
    /// than the spares (`spares_eager`).
    pub fn awaits_spares(&self) -> bool {
        match &self.role {
            Role::Leader(leadership) => {
                self.cfg.spare_lag_ms > 0 && (leadership.spares_eager || self.commit_path_stalled(leadership))
            }
            _ => false,
        }
    }

    /// Whether `follower` is replicated lazily now (`CoreConfig::spare_lag_ms`): a spare, while
    /// the commit path keeps up (neither stalled nor slower than the spares) and no hand-over
    /// waits for it.
    fn lazy_spare(&self, leadership: &Leadership, follower: ReplicaId) -> bool {
        self.cfg.spare_lag_ms > 0
            && leadership.transfer.as_ref().is_none_or(|t| t.to != follower)
            && self.membership.is_spare(self.id(), follower)
            && !leadership.spares_eager
            && !self.commit_path_stalled(leadership)
    }

    /// The followers on the commit path: the voters other than the leader that are not spares.
    fn commit_path(&self) -> impl Iterator<Item = ReplicaId> + '_ {
        let me = self.id();
        self.membership.voters().iter().copied().filter(move |v| *v != me && !self.membership.is_spare(me, *v))
    }

    /// Whether every follower on the commit path holds `slot`: false when a spare's vote
    /// completed the majority for it.
    fn commit_path_holds(&self, leadership: &Leadership, slot: Slot) -> bool {
        self.commit_path().all(|v| leadership.progress.get(&v).is_some_and(|p| p.matched >= slot))
    }

    /// Counts who completed the commit at `slot` and switches `spares_eager` after
    /// `SWITCH_AFTER_COMMITS` in a row against the mode. A commit path that answers, but slower
    /// than a spare replicated once per `spare_lag_ms` (a slow disk, a loaded host), then no
    /// longer holds commits back: the spares are replicated at once and their votes awaited, and
    /// once the commit path completes commits again, they are lazy again.
    fn note_who_completed_commit(&mut self, slot: Slot) {
        if self.cfg.spare_lag_ms == 0 {
            return;
        }
        let Role::Leader(leadership) = &self.role else { return };
        let by_commit_path = self.commit_path_holds(leadership, slot);
        let Role::Leader(leadership) = &mut self.role else { return };
        if by_commit_path == leadership.spares_eager {
            leadership.commits_against_mode += 1;
            if leadership.commits_against_mode >= SWITCH_AFTER_COMMITS {
                leadership.spares_eager = !leadership.spares_eager;
                leadership.commits_against_mode = 0;
            }
        } else {
            leadership.commits_against_mode = 0;
        }
    }

    /// How long a follower on the commit path may leave accepts unacknowledged before the leader
    /// takes it as slow or down: twice the spare lag, and at least half a heartbeat interval (a
    /// follower syncing under load answers every millisecond or two; at 1-2 ms, 15 times a second
    /// on the 2-vCPU host at 64-256 clients).
    pub(crate) fn stall_after_ms(&self) -> u64 {
        (2 * self.cfg.spare_lag_ms).max(self.cfg.heartbeat_interval_ms / 2)
    }

    /// Whether a follower on the commit path has left accepts unacknowledged for
    /// `stall_after_ms` (it is slow or down): the spares are then replicated at once, and a commit
    /// gets their votes instead, until it acknowledges again.
    fn commit_path_stalled(&self, leadership: &Leadership) -> bool {
        let stall_ms = self.stall_after_ms();
        let stalled = |p: &Progress| p.waiting_since_ms.is_some_and(|since| self.now_ms >= since + stall_ms);
        self.commit_path().any(|v| leadership.progress.get(&v).is_some_and(stalled))
    }

    /// Sends the next chunks of the log to `follower`, bounded by its in-flight allowance.
    pub(crate) fn replicate(&mut self, follower: ReplicaId) {
        let awaited = match &self.role {
            Role::Leader(leadership) => !self.lazy_spare(leadership, follower),
            _ => return,
        };
        self.send_accepts(follower, awaited);
    }

    /// `replicate` with the accepts' `awaited` mark already decided by the caller.
    fn send_accepts(&mut self, follower: ReplicaId, awaited: bool) {
        let in_flight_limit = self.cfg.window_slots + self.cfg.max_values_per_accept as u64;
        let chunk = self.cfg.max_values_per_accept;
        let commit = self.commit;
        let end = self.horizon; // only this leader's own proposals, never stale entries past them
        let base = self.log.base();
        let (now_ms, restart_after_ms) = (self.now_ms, self.cfg.election_timeout_min_ms);
        let Role::Leader(leadership) = &mut self.role else {
            return;
        };
        let ballot = leadership.ballot;
        let Some(progress) = leadership.progress.get_mut(&follower) else {
            return;
        };
        if progress.next < base {
            // Its next slot was discarded: it needs the checkpoint first (the follower then
            // drives the transfer with its requests).
            if progress.snapshot_sent_ms.is_none_or(|sent| now_ms >= sent + restart_after_ms) {
                progress.snapshot_sent_ms = Some(now_ms);
                self.send_snapshot_chunk(follower, 0, 0);
            }
            return;
        }
        progress.snapshot_sent_ms = None;
        while progress.next < end && progress.next < progress.matched.saturating_add(in_flight_limit) {
            let start = progress.next;
            let values = self.log.values(start, chunk.min((end - start) as usize));
            assert!(!values.is_empty(), "contract violated: replicate-sends-held-slots");
            progress.next = start + values.len() as u64;
            progress.sent_ms = now_ms;
            progress.waiting_since_ms.get_or_insert(now_ms);
            // Straight to `out` (not `self.send`): `progress` still borrows the role.
            let accept = Message::Accept(Accept { ballot, start, values, commit, awaited });
            self.out.push(Command::send(self.cfg.id, follower, accept));
        }
    }

    pub(crate) fn on_accepted(&mut self, from: ReplicaId, accepted: Accepted) {
        let now_ms = self.now_ms;
        let Role::Leader(leadership) = &mut self.role else {
            return;
        };
        if accepted.ballot != leadership.ballot {
            return;
        }
        let Some(progress) = leadership.progress.get_mut(&from) else {
            return;
        };
        progress.last_ack_ms = now_ms;
        progress.round = progress.round.max(accepted.round);
        progress.reported = accepted.upto;
        // Even an old horizon moves `next` forward: a rewind may have pushed it below it.
        progress.next = progress.next.max(accepted.upto);
        if accepted.upto > progress.matched {
            progress.matched = accepted.upto;
            // It made progress: what it still lacks waits from now on.
            progress.waiting_since_ms = (progress.matched < progress.next).then_some(now_ms);
            self.advance_commit();
        }
        self.replicate_if_due(from);
        self.advance_transfer();
    }

    pub(crate) fn on_reject(&mut self, from: ReplicaId, reject: Reject) {
        match reject.reason {
            Rejection::Stale { promised } => {
                self.max_round_seen = self.max_round_seen.max(promised.round);
                let mine = match &self.role {
                    Role::Leader(l) => Some(l.ballot),
                    Role::Candidate(e) => Some(e.ballot),
                    Role::Follower => None,
                };
                if mine == Some(reject.ballot) && promised > reject.ballot {
                    self.step_down(promised);
                }
            }
            Rejection::Gap { horizon } => {
                let now_ms = self.now_ms;
                let Role::Leader(leadership) = &mut self.role else {
                    return;
                };
                if reject.ballot != leadership.ballot {
                    return;
                }
                let Some(progress) = leadership.progress.get_mut(&from) else {
                    return;
                };
                progress.last_ack_ms = now_ms;
                if horizon < progress.next {
                    progress.next = horizon;
                    self.replicate(from);
                }
            }
            Rejection::LeaderAlive { .. } => {}
        }
    }

    /// Commit = the highest slot a majority has durably accepted at our ballot.
    fn advance_commit(&mut self) {
        let Role::Leader(leadership) = &self.role else {
            return;
        };
        let own =
            if self.durability.durable_ballot() == leadership.ballot { self.durability.durable_horizon() } else { 0 };
        // On the stack for groups of up to 8 voters (they are 3-7 in practice); larger ones spill.
        let mut matched: smallvec::SmallVec<[Slot; 8]> = self
            .membership
            .voters()
            .iter()
            .map(|v| if *v == self.id() { own } else { leadership.progress.get(v).map_or(0, |p| p.matched) })
            .collect();
        matched.sort_unstable_by(|a, b| b.cmp(a));
        #[allow(unused_mut)]
        let mut votes = self.membership.quorum();
        #[cfg(feature = "mutations")]
        if self.mutated(super::Mutation::CommitWithoutQuorum) && votes > 1 {
            votes -= 1;
        }
        // A follower may report a horizon past our proposals (it knows later slots chosen, e.g. past
        // a reconfig this leader stopped at); we can only commit what we hold.
        let candidate = matched[votes - 1].min(self.horizon);
        if candidate > self.commit {
            contract!(self, candidate <= self.horizon, "commit-within-proposals");
            self.note_who_completed_commit(candidate);
            self.learn_commit(candidate);
            self.fill_window();
        }
    }

    /// Called after local durability advanced: the leader's own vote may complete a majority.
    pub(crate) fn leader_after_durable(&mut self) {
        if matches!(self.role, Role::Leader(_)) {
            self.advance_commit();
        }
    }

    pub(crate) fn leader_tick(&mut self) {
        let Role::Leader(leadership) = &self.role else {
            return;
        };
        if self.now_ms < leadership.next_heartbeat_ms {
            // Between heartbeats: spares replicated lazily get what is due, and a stalled commit
            // path is noticed without waiting for new input.
            if self.cfg.spare_lag_ms > 0 {
                self.replicate_all();
            }
            return;
        }
        #[allow(unused_mut)]
        let mut judged = self.now_ms >= leadership.since_ms + self.cfg.election_timeout_max_ms;
        #[cfg(feature = "mutations")]
        if self.mutated(super::Mutation::ReadWithoutConfirmation) {
            judged = false;
        }
        if judged && !self.has_quorum_contact() {
            // Check-quorum: a leader cut off from a majority stops taking requests it cannot commit.
            let ballot = self.promised;
            self.step_down(ballot);
            self.leader_hint = None;
            return;
        }
        if let Role::Leader(leadership) = &mut self.role {
            for progress in leadership.progress.values_mut() {
                if progress.matched == progress.matched_at_heartbeat && progress.next > progress.matched {
                    progress.next = progress.matched; // stalled: resend what may have been lost
                }
                if progress.matched == progress.matched_at_heartbeat
                    && progress.reported < progress.next
                    && progress.reported == progress.reported_at_heartbeat
                {
                    // It keeps reporting less than we sent (it restarted and lost its volatile
                    // horizon): resend from what it reports.
                    progress.next = progress.reported;
                }
                progress.matched_at_heartbeat = progress.matched;
                progress.reported_at_heartbeat = progress.reported;
            }
            leadership.next_heartbeat_ms = self.now_ms + self.cfg.heartbeat_interval_ms;
        }
        self.broadcast_heartbeat();
        self.replicate_all();
        self.advance_transfer();
    }

    pub(crate) fn broadcast_heartbeat(&mut self) {
        let Role::Leader(leadership) = &self.role else {
            return;
        };
        let heartbeat = Heartbeat { ballot: leadership.ballot, commit: self.commit, round: leadership.read_round };
        for follower in leadership.progress.keys() {
            self.out.push(Command::send(self.cfg.id, *follower, Message::Heartbeat(heartbeat.clone())));
        }
    }

    /// Whether a majority (counting itself) answered within the minimum election timeout.
    pub(crate) fn has_quorum_contact(&self) -> bool {
        let Role::Leader(leadership) = &self.role else {
            return false;
        };
        let recent = leadership
            .progress
            .iter()
            .filter(|(id, p)| {
                self.membership.is_voter(**id)
                    && self.now_ms.saturating_sub(p.last_ack_ms) < self.cfg.election_timeout_min_ms
            })
            .count();
        recent + 1 >= self.membership.quorum()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::{Command, Input};
    use super::SWITCH_AFTER_COMMITS;
    use crate::message::{Accepted, Message, Reject, Rejection};
    use crate::types::{ReplicaId, Value};

    fn proposed_slots(commands: &[Command]) -> Vec<u64> {
        let mut slots: Vec<u64> = sent(commands)
            .into_iter()
            .filter(|(to, _)| *to == ReplicaId(1))
            .filter_map(|(_, m)| match m {
                Message::Accept(a) => Some((a.start..a.start + a.values.len() as u64).collect::<Vec<_>>()),
                _ => None,
            })
            .flatten()
            .collect();
        slots.dedup();
        slots
    }

    #[test]
    fn the_window_bounds_slots_in_flight_and_pending_requests_batch_when_it_opens() {
        let mut r = leader_of_three();
        let window = r.cfg.window_slots;
        let mut outs = Vec::new();
        for seq in 1..=window + 10 {
            outs.extend(step(&mut r, 2_000, Input::Propose(vec![request(7, seq, "w")])));
        }
        assert_eq!(r.status().log_end, window, "no slot beyond commit + window");
        let out = persist_all(&mut r, 2_001, &outs);
        assert!(
            r.status().commit == 0 && out.iter().all(|c| !matches!(c, Command::Apply { .. })),
            "own vote alone commits nothing"
        );
        let ballot = r.promised;
        let out = deliver(&mut r, 2_002, 1, Message::Accepted(Accepted { ballot, upto: 4, round: 0 }));
        assert_eq!(r.status().commit, 4, "own durable vote + one follower is a majority");
        // The window slid by 4: the 10 queued requests go out in one batch.
        assert_eq!(r.status().log_end, window + 1);
        let Value::Batch(batch) = &r.log.get(window).unwrap().value else { panic!("expected a batch") };
        assert_eq!(batch.len(), 10);
        assert!(proposed_slots(&out).contains(&window));
    }

    #[test]
    fn commit_needs_the_leaders_own_durable_vote_or_two_followers() {
        let mut r = leader_of_three();
        let out = step(&mut r, 2_000, Input::Propose(vec![request(7, 1, "x")]));
        let ballot = r.promised;
        deliver(&mut r, 2_001, 1, Message::Accepted(Accepted { ballot, upto: 1, round: 0 }));
        assert_eq!(r.status().commit, 0, "leader's own write not yet durable: one follower is not a majority");
        let out = persist_all(&mut r, 2_002, &out);
        assert_eq!(r.status().commit, 1);
        assert!(out.iter().any(|c| matches!(c, Command::Apply { slot: 0, .. })));
    }

    /// The messages in `commands` to replica `to`.
    fn sent_to(commands: &[Command], to: u32) -> Vec<Message> {
        sent(commands).into_iter().filter(|(id, _)| *id == ReplicaId(to)).map(|(_, m)| m).collect()
    }

    /// Accepts in `commands` to replica `to`.
    fn accepts_to(commands: &[Command], to: u32) -> usize {
        sent_to(commands, to).iter().filter(|m| matches!(m, Message::Accept(_))).count()
    }

    /// Proposes one request at `now_ms` and commits it with replica 1's acknowledgement and the
    /// leader's own sync; returns the commands of both steps.
    fn propose_and_commit(r: &mut super::Replica, now_ms: u64, seq: u64) -> Vec<Command> {
        let mut out = step(r, now_ms, Input::Propose(vec![request(7, seq, "x")]));
        let upto = r.status().log_end;
        out.extend(persist_all(r, now_ms, &out.clone()));
        let ballot = r.promised;
        out.extend(deliver(r, now_ms, 1, Message::Accepted(Accepted { ballot, upto, round: 0 })));
        assert_eq!(r.status().commit, upto, "the leader and replica 1 commit it");
        out
    }

    #[test]
    fn a_spare_is_sent_to_once_per_lag_while_the_commit_path_keeps_up() {
        // Leader 0 of {0,1,2}: replica 1 completes its majority, replica 2 is the spare.
        let mut r = leader_of_three_with(|c| c.spare_lag_ms = 1);
        let mut out = Vec::new();
        for seq in 1..=10 {
            out.extend(propose_and_commit(&mut r, 2_000, seq));
        }
        assert_eq!(accepts_to(&out, 1), 10, "the commit path gets every proposal at once");
        assert!(accepts_to(&out, 2) <= 1, "the spare at most once within a millisecond");
        // A millisecond later the spare gets everything since, in one accept.
        let out = propose_and_commit(&mut r, 2_001, 11);
        let to_spare = sent_to(&out, 2);
        let [Message::Accept(accept)] = &to_spare[..] else { panic!("one accept to the spare: {to_spare:?}") };
        assert_eq!(accept.start + accept.values.len() as u64, 11, "it carries the log up to the new proposal");
        assert!(!accept.awaited, "the spare may group its syncs");
        // Within a millisecond, a full accept's worth still goes at once.
        let chunk = r.cfg.max_values_per_accept as u64;
        let mut out = Vec::new();
        for seq in 12..12 + chunk {
            out.extend(propose_and_commit(&mut r, 2_001, seq));
        }
        let to_spare = sent_to(&out, 2);
        let [Message::Accept(accept)] = &to_spare[..] else { panic!("one accept: {to_spare:?}") };
        assert_eq!((accept.start, accept.values.len() as u64), (11, chunk), "a full accept, the moment it fills");

        // Without a lag the spare is a follower like the others.
        let mut eager = leader_of_three();
        let mut out = Vec::new();
        for seq in 1..=10 {
            out.extend(propose_and_commit(&mut eager, 2_000, seq));
        }
        assert_eq!(accepts_to(&out, 2), 10);
    }

    #[test]
    fn a_commit_path_follower_silent_for_the_stall_time_makes_the_spares_eager_until_it_answers() {
        let mut r = leader_of_three_with(|c| c.spare_lag_ms = 1);
        let stall = r.stall_after_ms();
        assert_eq!(stall, r.cfg.heartbeat_interval_ms / 2, "half a heartbeat is more than twice the lag");
        let t0 = 2_000;
        propose_and_commit(&mut r, t0, 1);
        // Replica 1 goes silent: the next proposal waits for a vote it will not get.
        let mut writes = step(&mut r, t0, Input::Propose(vec![request(7, 2, "x")]));
        persist_all(&mut r, t0, &writes.clone());
        assert_eq!(r.status().commit, 1);
        let out = step(&mut r, t0 + 1, Input::Tick);
        assert_eq!(accepts_to(&out, 2), 1, "the spare's lag is up: it gets slot 1 at the tick");
        let ballot = r.promised;
        deliver(&mut r, t0 + 1, 2, Message::Accepted(Accepted { ballot, upto: 2, round: 0 }));
        assert_eq!(r.status().commit, 2, "the spare's vote completes the majority");
        let out = step(&mut r, t0 + 1, Input::Propose(vec![request(7, 3, "x")]));
        assert_eq!(accepts_to(&out, 2), 0, "not stalled yet: the spare waits for its lag");
        writes.extend(out);
        step(&mut r, t0 + stall - 1, Input::Tick);
        assert!(!r.awaits_spares(), "silent for less than the stall time");
        step(&mut r, t0 + stall, Input::Tick);
        assert!(r.awaits_spares(), "silent for the stall time");
        let out = step(&mut r, t0 + stall, Input::Propose(vec![request(7, 4, "x")]));
        assert_eq!(accepts_to(&out, 2), 1, "every proposal goes to the spare at once");
        let [Message::Accept(accept)] = &sent_to(&out, 2)[..] else { panic!("one accept to the spare") };
        assert!(accept.awaited, "marked awaited, so the spare syncs without its delay");
        writes.extend(out);
        // Replica 1 answers again: the spare waits for its lag again.
        let t1 = t0 + stall + 1;
        persist_all(&mut r, t1, &writes);
        deliver(&mut r, t1, 1, Message::Accepted(Accepted { ballot, upto: 4, round: 0 }));
        assert_eq!(r.status().commit, 4);
        assert!(!r.awaits_spares(), "replica 1 holds everything sent to it");
        let out = propose_and_commit(&mut r, t1, 5);
        assert_eq!(accepts_to(&out, 2), 1, "its lag is up");
        let out = propose_and_commit(&mut r, t1, 6);
        assert_eq!(sent_to(&out, 2).len(), 0, "lazy again");
    }

    /// Replica 1 (the commit path) answers every proposal, but only after the spare did: each
    /// round, the spare's lag is up, it gets the slot (at the proposal or the tick) and its vote
    /// commits it; replica 1's comes a millisecond later, so it never stalls. After
    /// `SWITCH_AFTER_COMMITS` such rounds the spare is replicated at once and awaited; after as
    /// many commits completed by replica 1 again, it is lazy again.
    #[test]
    fn a_commit_path_slower_than_the_spare_makes_the_spare_eager_until_it_is_faster_again() {
        let mut r = leader_of_three_with(|c| c.spare_lag_ms = 1);
        let ballot = r.promised;
        let mut t = 2_000;
        propose_and_commit(&mut r, t, 1);
        for seq in 2..=1 + u64::from(SWITCH_AFTER_COMMITS) {
            assert!(!r.awaits_spares(), "round {seq}: still lazy");
            t += 2;
            let mut out = step(&mut r, t, Input::Propose(vec![request(7, seq, "x")]));
            persist_all(&mut r, t, &out.clone());
            let upto = r.status().log_end;
            out.extend(step(&mut r, t + 1, Input::Tick));
            assert!(accepts_to(&out, 2) >= 1, "round {seq}: the spare gets the slot once its lag is up");
            deliver(&mut r, t + 1, 2, Message::Accepted(Accepted { ballot, upto, round: 0 }));
            assert_eq!(r.status().commit, upto, "round {seq}: the spare's vote commits it");
            deliver(&mut r, t + 2, 1, Message::Accepted(Accepted { ballot, upto, round: 0 }));
        }
        assert!(r.awaits_spares(), "the commit path was slower than the spare every time");
        let out = step(&mut r, t + 2, Input::Propose(vec![request(7, 100, "x")]));
        let to_spare = sent_to(&out, 2);
        let [Message::Accept(accept)] = &to_spare[..] else { panic!("one accept to the spare: {to_spare:?}") };
        assert!(accept.awaited, "sent at once and awaited");
        persist_all(&mut r, t + 2, &out);
        let upto = r.status().log_end;
        deliver(&mut r, t + 2, 2, Message::Accepted(Accepted { ballot, upto, round: 0 }));
        deliver(&mut r, t + 2, 1, Message::Accepted(Accepted { ballot, upto, round: 0 }));
        // Replica 1 is the faster one again: its vote completes the next commits.
        for seq in 101..100 + u64::from(SWITCH_AFTER_COMMITS) {
            let out = propose_and_commit(&mut r, t + 3, seq);
            assert_eq!(accepts_to(&out, 2), 1, "still eager: every proposal goes to the spare");
            assert!(r.awaits_spares());
        }
        propose_and_commit(&mut r, t + 3, 100 + u64::from(SWITCH_AFTER_COMMITS));
        assert!(!r.awaits_spares(), "lazy again after the commit path completed enough commits");
        let out = propose_and_commit(&mut r, t + 3, 200);
        assert_eq!(accepts_to(&out, 2), 0, "within its lag the spare waits again");
    }

    #[test]
    fn a_gap_rejection_rewinds_that_follower_and_resends() {
        let mut r = leader_of_three();
        for seq in 1..=3 {
            step(&mut r, 2_000, Input::Propose(vec![request(7, seq, "x")]));
        }
        let ballot = r.promised;
        let out = deliver(&mut r, 2_001, 1, Message::Reject(Reject { ballot, reason: Rejection::Gap { horizon: 1 } }));
        assert_eq!(proposed_slots(&out), vec![1, 2]);
    }

    #[test]
    fn a_stale_rejection_deposes_the_leader_and_redirects_queued_requests() {
        let mut r = leader_of_three();
        let mut outs = Vec::new();
        for seq in 1..=r.cfg.window_slots + 2 {
            outs.extend(step(&mut r, 2_000, Input::Propose(vec![request(7, seq, "x")])));
        }
        let ballot = r.promised;
        let higher = crate::types::Ballot::new(ballot.round + 1, ReplicaId(2));
        let out = deliver(
            &mut r,
            2_001,
            1,
            Message::Reject(Reject { ballot, reason: Rejection::Stale { promised: higher } }),
        );
        assert!(!r.status().leading);
        assert!(out.iter().any(|c| matches!(c, Command::LeadershipChanged { leading: false, .. })));
        assert!(out
            .iter()
            .any(|c| matches!(c, Command::Redirect { requests, leader: Some(ReplicaId(2)) } if requests.len() == 2)));
    }

    #[test]
    fn a_leader_cut_off_from_the_majority_steps_down() {
        let mut r = leader_of_three();
        let mut now = 1_001; // leadership began here
        while r.status().leading && now < 5_000 {
            now += 10;
            step(&mut r, now, Input::Tick);
        }
        assert!(!r.status().leading, "check-quorum deposed the isolated leader");
        let bound =
            1_001 + r.cfg.election_timeout_max_ms + r.cfg.election_timeout_min_ms + 2 * r.cfg.heartbeat_interval_ms;
        assert!(now <= bound, "stepped down at {now}, later than {bound}");
    }
}

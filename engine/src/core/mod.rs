//! The protocol core: one replica's multi-Paxos state machine.
//!
//! # Driving loop
//!
//! ```text
//! loop {
//!     input = next event (tick, message, client requests, storage completion)
//!     replica.step(now_ms, input, &mut commands)
//!     for command in commands.drain(..) {          // in order
//!         Persist  -> hand to the log; when durable, step(Input::Persisted { upto: ticket })
//!         Send     -> transport
//!         Apply    -> state machine (slot order), replies to waiting clients
//!         Redirect -> tell those clients where the leader is
//!     }
//! }
//! ```
//!
//! The core acknowledges nothing before it is durable: `Accepted` and `Promise` messages are held
//! back until the `Persist` commands covering them complete.
//!
//! # Protocol summary
//!
//! Ballots are `(round, replica)`. A candidate sends `Prepare(b, from)` where every slot below
//! `from` is chosen and known to it; acceptors promise and report everything they accepted from
//! `from` on. With a majority of promises the candidate re-proposes, at `b`, the highest-ballot
//! value of every slot up to the highest reported slot (no-ops in gaps), then proposes new client
//! batches. Acceptors accept runs of consecutive slots and never forget an accepted slot; each
//! keeps a *horizon*: every slot below it is chosen or accepted at its promised ballot, so one
//! cumulative `Accepted(b, upto)` acknowledges a prefix. A slot is chosen once a majority's
//! durable horizon at `b` passes it.

mod acceptor;
mod checkpoint;
pub mod config;
mod contract;
pub mod durability;
mod election;
pub mod io;
mod leader;
mod learning;
pub mod log;
mod reads;
mod reconfig;
#[cfg(test)]
pub(crate) mod testkit;
mod transfer;

pub use config::CoreConfig;
#[cfg(feature = "mutations")]
pub use config::Mutation;
pub use io::{AdminReply, Command, DurableWrite, Input};

use crate::contract;
use crate::durable::Durable;
use crate::membership::Membership;
use crate::message::{Envelope, Message};
use crate::types::{Ballot, Checkpoint, ClientId, Entry, ReplicaId, Request, Slot, Value};
use durability::Durability;
use election::Election;
use leader::Leadership;
use log::AcceptLog;

/// What this replica currently does.
#[derive(Debug)]
pub(crate) enum Role {
    /// Accepts from a leader (or waits for one).
    Follower,
    /// Running phase 1 for its own ballot.
    Candidate(Election),
    /// Phase 1 done; proposing at its ballot.
    Leader(Leadership),
}

/// A snapshot of a replica's protocol state, for status output and simulation checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This replica.
    pub id: ReplicaId,
    /// Highest ballot promised.
    pub promised: Ballot,
    /// Whether it currently leads.
    pub leading: bool,
    /// The leader it believes in.
    pub leader: Option<ReplicaId>,
    /// Every slot below this is chosen and known here.
    pub commit: Slot,
    /// Every slot below this was handed to the state machine.
    pub applied: Slot,
    /// One past the last slot in the log.
    pub log_end: Slot,
    /// The configuration in force (after every reconfig this replica applied).
    pub membership: Membership,
}

/// One replica's multi-Paxos core. See the module docs for the driving loop.
pub struct Replica {
    pub(crate) cfg: CoreConfig,
    pub(crate) membership: Membership,
    /// Slot of the reconfig that produced `membership` (None: the initial configuration).
    pub(crate) config_slot: Option<Slot>,
    /// The newest checkpoint, served to replicas whose next slot was discarded.
    pub(crate) checkpoint: Option<Checkpoint>,
    /// A checkpoint being received from a peer.
    pub(crate) incoming: Option<checkpoint::Incoming>,
    /// Log prefixes to discard once the checkpoint write with that ticket is durable.
    pub(crate) pending_discards: std::collections::VecDeque<(u64, Slot)>,
    pub(crate) rng: fastrand::Rng,
    pub(crate) now_ms: u64,
    pub(crate) promised: Ballot,
    pub(crate) log: AcceptLog,
    pub(crate) commit: Slot,
    pub(crate) applied: Slot,
    pub(crate) horizon: Slot,
    pub(crate) durability: Durability,
    pub(crate) unpersisted: crate::types::Entries,
    pub(crate) persisted_commit: Slot,
    pub(crate) role: Role,
    pub(crate) leader_hint: Option<ReplicaId>,
    pub(crate) last_leader_contact_ms: Option<u64>,
    pub(crate) election_deadline_ms: u64,
    /// Whether a step has run: the first one arms the election timer from the driver's clock.
    pub(crate) started: bool,
    pub(crate) next_commit_persist_ms: u64,
    pub(crate) max_round_seen: u64,
    /// Highest heartbeat round seen from the leader of `promised` (echoed for read-index).
    pub(crate) leader_round_seen: u64,
    /// Whether the leader of `promised` waits for this replica's vote (its latest accept said so).
    pub(crate) leader_awaits: bool,
    /// Fast reads waiting for this replica to apply far enough.
    pub(crate) waiting_fast_reads: Vec<(u64, Slot)>,
    /// The state machine lets this replica campaign (RSL's CanBecomePrimary veto).
    pub(crate) candidacy_allowed: bool,
    pub(crate) out: Vec<Command>,
    /// Where the leader encodes the batches it proposes (amortized: no allocation per batch).
    pub(crate) batch_arena: crate::chunk_arena::ChunkArena,
    /// The emptied buffer of the last proposal, handed back to the driver for the next one.
    pub(crate) spare_requests: Vec<Request>,
}

impl Replica {
    /// A replica with empty storage.
    pub fn new(cfg: CoreConfig) -> Self {
        Self::recover(cfg, Durable::default())
    }

    /// A replica restarting from what its storage recovered.
    pub fn recover(cfg: CoreConfig, durable: Durable) -> Self {
        if let Err(why) = cfg.validate() {
            panic!("invalid core configuration: {why}");
        }
        let (promised, log, commit, checkpoint) = durable.into_parts();
        let rng = fastrand::Rng::with_seed(cfg.seed);
        let log_base = log.base();
        let mut replica = Replica {
            membership: cfg.membership.clone(),
            config_slot: checkpoint.as_ref().and_then(|c| c.config_slot),
            checkpoint: None,
            incoming: None,
            pending_discards: std::collections::VecDeque::new(),
            rng,
            now_ms: 0,
            promised,
            horizon: commit,
            durability: Durability::new(promised, commit),
            unpersisted: Default::default(),
            persisted_commit: commit,
            role: Role::Follower,
            leader_hint: None,
            last_leader_contact_ms: None,
            election_deadline_ms: 0,
            started: false,
            next_commit_persist_ms: 0,
            max_round_seen: promised.round,
            leader_round_seen: 0,
            leader_awaits: true,
            waiting_fast_reads: Vec::new(),
            candidacy_allowed: true,
            out: Vec::new(),
            batch_arena: crate::batch::batch_arena(),
            spare_requests: Vec::new(),
            log,
            commit,
            applied: log_base,
            cfg,
        };
        if let Some(checkpoint) = checkpoint {
            replica.membership = checkpoint.membership.clone();
            replica.checkpoint = Some(checkpoint);
        }
        // Entries past the commit index durably accepted at the promised ballot still count: the
        // horizon covers them, so the leader need not resend them after a restart.
        while replica.log.get(replica.horizon).is_some_and(|cell| cell.ballot == promised && promised != Ballot::ZERO) {
            replica.horizon += 1;
        }
        replica.durability = Durability::new(promised, replica.horizon);
        replica.adopt_committed_configuration();
        replica
    }

    /// Feeds one input at time `now_ms` (the driver's monotonic clock) and appends the resulting
    /// commands to `commands`.
    pub fn step(&mut self, now_ms: u64, input: Input, commands: &mut Vec<Command>) {
        contract!(self, now_ms >= self.now_ms, "clock-monotonic", "{now_ms} < {}", self.now_ms);
        self.now_ms = now_ms;
        if !self.started {
            self.started = true;
            self.reset_election_timer();
        }
        match input {
            Input::Tick => self.on_tick(),
            Input::Receive(envelope) => self.on_receive(envelope),
            Input::Propose(requests) => self.on_propose(requests),
            Input::Persisted { upto } => self.on_persisted(upto),
            Input::ChangeMembership(membership) => self.on_change_membership(membership),
            Input::CheckpointTaken(checkpoint) => self.on_checkpoint_taken(checkpoint),
            Input::Read { id } => self.on_read(id),
            Input::FastRead { id, min_slot } => self.on_fast_read(id, min_slot),
            Input::TransferLeadership { to } => self.on_transfer_leadership(to),
        }
        self.start_read_round();
        self.flush_entries();
        self.apply_committed();
        self.serve_reads();
        self.check_invariants();
        commands.append(&mut self.out);
    }

    /// Whether this replica may campaign: the driver passes the state machine's
    /// `can_become_primary` here. A vetoed voter still votes and accepts; it only never campaigns.
    pub fn set_candidacy(&mut self, allowed: bool) {
        self.candidacy_allowed = allowed;
    }

    /// This replica's id.
    pub fn id(&self) -> ReplicaId {
        self.cfg.id
    }

    /// Current protocol state.
    pub fn status(&self) -> Status {
        Status {
            id: self.id(),
            promised: self.promised,
            leading: matches!(self.role, Role::Leader(_)),
            leader: self.leader(),
            commit: self.commit,
            applied: self.applied,
            log_end: self.log.end(),
            membership: self.membership.clone(),
        }
    }

    /// The leader this replica believes in.
    pub fn leader(&self) -> Option<ReplicaId> {
        match self.role {
            Role::Leader(_) => Some(self.id()),
            _ => self.leader_hint,
        }
    }

    /// The leader, if this replica leads or heard from it within the maximum election timeout (a
    /// stale hint, e.g. at a replica removed from the configuration, sends clients in circles).
    pub fn fresh_leader_hint(&self) -> Option<ReplicaId> {
        if let Role::Leader(_) = self.role {
            return Some(self.id());
        }
        let heard = self.last_leader_contact_ms?;
        (self.now_ms.saturating_sub(heard) <= self.cfg.election_timeout_max_ms).then_some(self.leader_hint?)
    }

    /// Whether this replica may group its syncs as a spare: under the leader it hears from it is
    /// a spare (`Membership::is_spare`), and that leader's latest accept said its commits do not
    /// wait for this replica's vote (the replicas on its commit path keep up). False without a
    /// fresh leader.
    pub fn may_sync_late(&self) -> bool {
        !self.leader_awaits
            && self.fresh_leader_hint().is_some_and(|leader| self.membership.is_spare(leader, self.id()))
    }

    /// First slot still held in the log (slots below were discarded after a checkpoint).
    pub fn log_base(&self) -> Slot {
        self.log.base()
    }

    /// The chosen value of a committed slot, if still held.
    pub fn committed_value(&self, slot: Slot) -> Option<&crate::types::Value> {
        if slot >= self.commit {
            return None;
        }
        self.log.get(slot).map(|cell| &cell.value)
    }

    pub(crate) fn contracts_enabled(&self) -> bool {
        #[cfg(feature = "mutations")]
        {
            self.cfg.contracts
        }
        #[cfg(not(feature = "mutations"))]
        {
            true
        }
    }

    #[cfg(feature = "mutations")]
    pub(crate) fn mutated(&self, mutation: config::Mutation) -> bool {
        self.cfg.mutation == mutation
    }

    fn on_receive(&mut self, envelope: Envelope) {
        if envelope.to != self.id() || envelope.from == self.id() {
            return; // misrouted or looped back: not ours to act on
        }
        let ballot = envelope.msg.ballot();
        self.max_round_seen = self.max_round_seen.max(ballot.round);
        let from = envelope.from;
        match envelope.msg {
            Message::Prepare(m) => self.on_prepare(from, m),
            Message::Promise(m) => self.on_promise(from, m),
            Message::Accept(m) => self.on_accept(from, m),
            Message::Accepted(m) => self.on_accepted(from, m),
            Message::Reject(m) => self.on_reject(from, m),
            Message::Heartbeat(m) => self.on_heartbeat(from, m),
            Message::Fetch(m) => self.on_fetch(from, m),
            Message::Chosen(m) => self.on_chosen(from, m),
            Message::Snapshot(m) => self.on_snapshot_chunk(from, m),
            Message::SnapshotRequest(m) => self.on_snapshot_request(from, m),
            Message::TimeoutNow(m) => self.on_timeout_now(from, m),
        }
    }

    fn on_tick(&mut self) {
        match self.role {
            Role::Leader(_) => self.leader_tick(),
            Role::Follower | Role::Candidate(_) => {
                if self.now_ms >= self.election_deadline_ms {
                    if self.membership.is_voter(self.id()) && self.candidacy_allowed {
                        self.start_election();
                    } else {
                        // It cannot campaign; maybe a configuration it has not learned made it a
                        // voter, or its leader is gone: ask the members it knows what is chosen.
                        self.fetch_chosen();
                    }
                }
            }
        }
        if self.now_ms >= self.next_commit_persist_ms && self.commit > self.persisted_commit {
            // Lazily, so a restart replays less; safety never depends on it.
            self.persist(DurableWrite::Commit(self.commit));
            self.persisted_commit = self.commit;
            self.next_commit_persist_ms = self.now_ms + self.cfg.heartbeat_interval_ms;
        }
    }

    fn on_propose(&mut self, mut requests: Vec<Request>) {
        if requests.is_empty() {
            return;
        }
        if matches!(self.role, Role::Leader(_)) {
            self.leader_propose(&mut requests);
        } else {
            self.redirect(requests.iter().map(|r| (r.client, r.seq)).collect());
            requests.clear();
        }
        self.spare_requests = requests;
    }

    /// The emptied buffer of the last proposal (or a new one), for the driver to fill next: the
    /// proposal path reuses one buffer instead of allocating one per batch.
    pub fn take_request_buffer(&mut self) -> Vec<Request> {
        std::mem::take(&mut self.spare_requests)
    }

    pub(crate) fn redirect(&mut self, requests: Vec<(ClientId, u64)>) {
        if !requests.is_empty() {
            let leader = self.fresh_leader_hint();
            self.out.push(Command::Redirect { requests, leader });
        }
    }

    fn on_persisted(&mut self, upto: u64) {
        self.durability.complete(upto);
        self.discard_checkpointed(upto);
        while let Some(envelope) = self.durability.pop_released() {
            if envelope.to == self.id() {
                self.on_receive_own(envelope);
            } else {
                self.out.push(Command::Send(envelope));
            }
        }
        self.after_durable();
        self.leader_after_durable();
    }

    /// A message to itself (the candidate's own promise) skips the network.
    fn on_receive_own(&mut self, envelope: Envelope) {
        if let Message::Promise(promise) = envelope.msg {
            self.on_promise(self.id(), promise);
        }
    }

    /// Issues a durable write now (after any entries queued earlier in this step, keeping FIFO).
    pub(crate) fn persist(&mut self, write: DurableWrite) -> u64 {
        self.flush_entries();
        let ticket = self.durability.issue(self.promised, self.horizon);
        self.out.push(Command::Persist { ticket, write });
        ticket
    }

    /// Accepts `value` at `slot` in this replica's own log; made durable with the step's other entries.
    pub(crate) fn accept_locally(&mut self, slot: Slot, ballot: Ballot, value: Value) {
        self.log.put(slot, ballot, value.clone());
        self.unpersisted.push(Entry { slot, ballot, value });
    }

    /// Entries accepted during this step go out as one write.
    fn flush_entries(&mut self) {
        if self.unpersisted.is_empty() {
            return;
        }
        let entries = std::mem::take(&mut self.unpersisted);
        let ticket = self.durability.issue(self.promised, self.horizon);
        self.out.push(Command::Persist { ticket, write: DurableWrite::Entries(entries) });
    }

    /// Sends `msg` once everything issued so far is durable.
    pub(crate) fn send_when_durable(&mut self, to: ReplicaId, msg: Message) {
        self.flush_entries();
        let envelope = Envelope { from: self.id(), to, msg };
        let ticket = self.durability.last_issued();
        if let Some(envelope) = self.durability.defer(ticket, envelope) {
            if envelope.to == self.id() {
                self.on_receive_own(envelope);
            } else {
                self.out.push(Command::Send(envelope));
            }
        }
    }

    pub(crate) fn send(&mut self, to: ReplicaId, msg: Message) {
        self.out.push(Command::send(self.id(), to, msg));
    }

    /// Raises the commit index to `upto` (never past what the log holds) and applies.
    pub(crate) fn learn_commit(&mut self, upto: Slot) {
        if upto <= self.commit {
            return;
        }
        contract!(self, upto <= self.log.end(), "commit-within-log", "commit {upto} > log end {}", self.log.end());
        self.commit = upto;
    }

    /// Hands every committed, unapplied slot to the state machine, in order.
    fn apply_committed(&mut self) {
        while self.applied < self.commit {
            let slot = self.applied;
            let Some(cell) = self.log.get(slot) else {
                contract!(self, false, "committed-slot-held", "slot {slot}");
                break;
            };
            let value = cell.value.clone();
            let reconfig = match &value {
                Value::Reconfig(membership) => Some(membership.clone()),
                _ => None,
            };
            self.out.push(Command::Apply { slot, value });
            self.applied += 1;
            if let Some(membership) = reconfig {
                self.on_configuration_applied(slot, membership);
            }
        }
        contract!(self, self.applied <= self.commit, "apply-never-passes-commit");
    }

    /// Re-arms the election timer with a fresh random timeout.
    pub(crate) fn reset_election_timer(&mut self) {
        let timeout = self.rng.u64(self.cfg.election_timeout_min_ms..=self.cfg.election_timeout_max_ms);
        self.election_deadline_ms = self.now_ms + timeout;
    }

    /// Invariants that hold between steps.
    fn check_invariants(&self) {
        contract!(self, self.applied <= self.commit, "applied-le-commit");
        contract!(self, self.commit <= self.horizon, "commit-le-horizon");
        contract!(
            self,
            self.horizon <= self.log.end(),
            "horizon-within-log",
            "horizon {} > end {}",
            self.horizon,
            self.log.end()
        );
        contract!(self, self.commit <= self.log.end(), "commit-within-log");
        if let Role::Leader(leadership) = &self.role {
            contract!(self, leadership.ballot == self.promised, "leader-ballot-is-promised");
        }
    }
}

//! The protocol core thread: drains the inbox, batches client requests into one proposal, steps the
//! core, and executes its commands in order (persist -> persistence ring, send -> transport,
//! apply -> state machine and client replies, redirect -> client replies).

use super::event::{Event, NodeStatus, Responder, Response};
use super::observer::Observer;
use super::persistence::{PersistJob, Persister};
use super::storage::{CheckpointWriter, LogStorage};
use super::read_only::ReadOnly;
use super::inbox::{CorePass, Inbox};
use super::shared::Shared;
use super::transport::PeerTransport;
use crate::applier::{Applied, Applier, Outcome};
use crate::core::io::AdminReply;
use crate::core::{Command, DurableWrite, Input, Replica};
use crate::flat_table::FlatTable;
use crate::state_machine::StateMachine;
use crate::types::{ClientId, Request};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most inbox events handled between two looks at the clock (bounds tick lateness).
const MAX_EVENTS_PER_PASS: usize = 4_096;
/// Most inbox events a pass may have handled and still persist inline (`flush_persists`). At low
/// load a pass handles one request or one peer message; under load the thread running the pass
/// has more sockets to read, and a sync there would stall them (1024 clients, tcp + file log:
/// p50 883-1,018 us before inline persistence, 1,111-1,372 us with it in every pass).
const INLINE_PERSIST_MAX_EVENTS: usize = 2;
/// A waiting client entry older than this is dropped (its client timed out and moved on).
const AWAITING_EXPIRY: Duration = Duration::from_secs(30);

/// A client waiting for its request to be applied here.
struct Waiter<R> {
    request_id: u64,
    reply_to: R,
    since: Instant,
}

/// When the driver checkpoints, and where the helper thread stores what it took.
pub struct CheckpointPolicy {
    /// Checkpoint every this many applied slots (0: only when the log is half full).
    pub every_slots: u64,
    /// The core's `checkpoint_retain_slots`: log it keeps below a checkpoint.
    pub retain_slots: u64,
    /// Stores a checkpoint off the persistence thread (`LogStorage::checkpoint_writer`).
    pub writer: Option<Arc<dyn CheckpointWriter>>,
}

/// The core thread's state.
pub struct Driver<S, T, L, R, O> {
    core: Replica,
    applier: Applier<S>,
    transport: T,
    persister: Arc<Persister<L, O>>,
    /// Writes of this pass not yet handed over or persisted (`flush_persists`).
    persists: Vec<PersistJob>,
    inbox: Arc<Inbox<R>>,
    shared: Arc<Shared>,
    observer: Arc<O>,
    next_tick_ms: u64,
    next_sweep: Instant,
    /// An insert and a remove per request on the leader's core; flat, so that a slot's replies
    /// can prefetch their entries before removing them.
    awaiting: FlatTable<(ClientId, u64), Waiter<R>>,
    commands: Vec<Command>,
    batch: Vec<Request>,
    applied: Vec<Applied>,
    /// One applied slot's reply latencies, for the observer's one call per slot.
    reply_latencies_us: Vec<u64>,
    started: Instant,
    tick_ms: u64,
    checkpoint: CheckpointPolicy,
    /// The slot of a checkpoint taken whose log prefix the core has not discarded yet.
    checkpoint_in_flight: Option<u64>,
    /// Client writes are being shed because the log is nearly full (logged on each change).
    shedding: bool,
    last_checkpoint_slot: u64,
    /// Bytes of the last checkpoint serialized (0: none yet): past 1 MiB, the slot-count policy
    /// waits until the log holds four times as much (`slots_due`).
    last_checkpoint_bytes: u64,
    /// Reads waiting for the core's read-index, by read id.
    reads: HashMap<u64, PendingRead<R>, foldhash::fast::RandomState>,
    next_read_id: u64,
    /// The operator waiting for the `Command::Admin` of the input being stepped.
    admin: Option<Waiter<R>>,
    /// `Replica::awaits_spares` at the end of the last pass.
    spares_awaited: bool,
}

/// A read-only request waiting for `Command::ReadReady`.
struct PendingRead<R> {
    request: Request,
    waiter: Waiter<R>,
}

impl<S: StateMachine + ReadOnly, T: PeerTransport, L: LogStorage, R: Responder, O: Observer> Driver<S, T, L, R, O> {
    /// Wires a recovered core and applier (built from the same recovered checkpoint, if any) to
    /// their rings and transport. A checkpoint is taken every `checkpoint_every_slots` applied
    /// slots (0: never) and when the log is half full (`maybe_checkpoint`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        core: Replica,
        applier: Applier<S>,
        transport: T,
        persister: Arc<Persister<L, O>>,
        inbox: Arc<Inbox<R>>,
        shared: Arc<Shared>,
        observer: Arc<O>,
        tick_ms: u64,
        checkpoint: CheckpointPolicy,
    ) -> Self {
        let last_checkpoint_slot = applier.next_slot();
        Driver {
            core,
            applier,
            transport,
            persister,
            persists: Vec::with_capacity(64),
            inbox,
            shared,
            observer,
            next_tick_ms: 0,
            next_sweep: Instant::now() + AWAITING_EXPIRY,
            awaiting: FlatTable::default(),
            commands: Vec::with_capacity(256),
            batch: Vec::with_capacity(1024),
            applied: Vec::with_capacity(1024),
            reply_latencies_us: Vec::with_capacity(1024),
            started: Instant::now(),
            tick_ms: tick_ms.max(1),
            checkpoint,
            checkpoint_in_flight: None,
            shedding: false,
            last_checkpoint_slot,
            last_checkpoint_bytes: 0,
            reads: HashMap::default(),
            next_read_id: 1,
            admin: None,
            spares_awaited: false,
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// One pass: drains the inbox, ticks and sweeps if due, persists what the pass staged.
    /// Returns whether events were handled, and how long until the next tick is due.
    pub fn pass(&mut self) -> (bool, Duration) {
        let handled = self.drain_inbox();
        let now_ms = self.now_ms();
        if now_ms >= self.next_tick_ms {
            self.step(Input::Tick);
            self.next_tick_ms = now_ms + self.tick_ms;
        }
        if Instant::now() >= self.next_sweep {
            self.awaiting.retain(|_, w| w.since.elapsed() < AWAITING_EXPIRY);
            self.reads.retain(|_, r| r.waiter.since.elapsed() < AWAITING_EXPIRY);
            self.next_sweep = Instant::now() + AWAITING_EXPIRY;
        }
        self.flush_persists(handled <= INLINE_PERSIST_MAX_EVENTS);
        self.watch_spares();
        (handled > 0, Duration::from_millis(self.next_tick_ms.saturating_sub(self.now_ms())))
    }

    /// Handles up to `MAX_EVENTS_PER_PASS` events; all client requests among them become one
    /// proposal. Returns how many it handled.
    fn drain_inbox(&mut self) -> usize {
        let mut handled = 0;
        while handled < MAX_EVENTS_PER_PASS {
            let Some(event) = self.inbox.pop() else { break };
            handled += 1;
            match event {
                Event::Peer(envelope) => self.step(Input::Receive(envelope)),
                Event::CheckpointReady(checkpoint) => {
                    self.observer.on_checkpoint(checkpoint.slot, checkpoint.data.len());
                    tracing::debug!(slot = checkpoint.slot, bytes = checkpoint.data.len(), "checkpoint serialized");
                    self.last_checkpoint_bytes = checkpoint.data.len() as u64;
                    self.step(Input::CheckpointTaken(checkpoint));
                }
                Event::Persisted { upto } => self.step(Input::Persisted { upto }),
                Event::Request { request, request_id, reply_to } => {
                    let waiter = Waiter { request_id, reply_to, since: Instant::now() };
                    if S::is_read_only(&request.op) {
                        let id = self.next_read_id;
                        self.next_read_id += 1;
                        self.reads.insert(id, PendingRead { request, waiter });
                        self.step(Input::Read { id });
                    } else if self.shed_writes() && self.core.status().leading {
                        // A full log stops the replica: shed writes until a checkpoint frees
                        // space (the client backs off and retries the same seq). Only the leader
                        // sheds; a follower still redirects.
                        self.observer.on_write_shed();
                        waiter.reply_to.respond(request_id, Response::Busy);
                    } else {
                        self.awaiting.insert((request.client, request.seq), waiter);
                        self.batch.push(request);
                    }
                }
                Event::FastRead { request, min_slot, request_id, reply_to } => {
                    let waiter = Waiter { request_id, reply_to, since: Instant::now() };
                    if !S::is_read_only(&request.op) {
                        let detail = "a stale read must carry a read-only operation (e.g. a get)".to_string();
                        waiter.reply_to.respond(request_id, Response::Admin { ok: false, detail, leader: None, slot: None });
                        continue;
                    }
                    let id = self.next_read_id;
                    self.next_read_id += 1;
                    self.reads.insert(id, PendingRead { request, waiter });
                    self.step(Input::FastRead { id, min_slot });
                }
                Event::TransferLeadership { to, request_id, reply_to } => {
                    self.admin_step(Input::TransferLeadership { to }, Waiter { request_id, reply_to, since: Instant::now() });
                }
                Event::ChangeMembership { change, request_id, reply_to } => {
                    let waiter = Waiter { request_id, reply_to, since: Instant::now() };
                    let status = self.core.status();
                    if !status.leading {
                        // The same answer the core gives, so clients follow it the same way.
                        let detail = "not the leader".to_string();
                        waiter.reply_to.respond(request_id, Response::Admin { ok: false, detail, leader: status.leader, slot: None });
                        continue;
                    }
                    match change.apply(&status.membership) {
                        Ok(next) => self.admin_step(Input::ChangeMembership(next), waiter),
                        Err(why) => {
                            waiter.reply_to.respond(request_id, Response::Admin { ok: false, detail: why.to_string(), leader: None, slot: None })
                        }
                    }
                }
                Event::Checkpoint { request_id, reply_to } => {
                    let response = match self.take_checkpoint() {
                        Some(slot) => Response::Admin { ok: true, detail: format!("checkpoint taken at slot {slot}"), leader: None, slot: Some(slot) },
                        None if self.last_checkpoint_slot > 0 => {
                            let slot = self.last_checkpoint_slot;
                            let detail = format!("nothing applied since the checkpoint at slot {slot}");
                            Response::Admin { ok: true, detail, leader: None, slot: Some(slot) }
                        }
                        None => Response::Admin { ok: false, detail: "nothing applied yet: no state to checkpoint".into(), leader: None, slot: None },
                    };
                    reply_to.respond(request_id, response);
                }
                Event::Status { request_id, reply_to } => {
                    let status = Box::new(NodeStatus {
                        core: self.core.status(),
                        executed: self.applier.executed_count(),
                        log_bytes: self.shared.log_bytes.load(Ordering::Relaxed),
                    });
                    reply_to.respond(request_id, Response::Status(status));
                }
            }
        }
        if !self.batch.is_empty() {
            self.observer.on_batch(self.batch.len());
            let batch = std::mem::take(&mut self.batch);
            self.step(Input::Propose(batch));
            // The core hands the emptied buffer back: no allocation per proposal.
            self.batch = self.core.take_request_buffer();
        }
        handled
    }

    /// Steps an administrative input; the core answers it within the same step (`Command::Admin`).
    fn admin_step(&mut self, input: Input, waiter: Waiter<R>) {
        self.admin = Some(waiter);
        self.step(input);
        if let Some(waiter) = self.admin.take() {
            let detail = "the core gave no answer".to_string();
            waiter.reply_to.respond(waiter.request_id, Response::Admin { ok: false, detail, leader: None, slot: None });
        }
    }

    fn step(&mut self, input: Input) {
        let now_ms = self.now_ms();
        let mut commands = std::mem::take(&mut self.commands);
        self.core.step(now_ms, input, &mut commands);
        for command in commands.drain(..) {
            self.execute(command);
        }
        self.commands = commands;
        // More events wait in this pass: let the persistence thread sync while the core works.
        if !self.persists.is_empty() && !self.inbox.is_empty() {
            self.update_spare();
            self.persister.hand_over(&mut self.persists);
        }
        self.maybe_checkpoint();
    }

    /// End of a pass: this pass's sends are out, and its remaining writes are persisted here if
    /// `inline` (a light pass: the thread running it has little else to do) and the persistence
    /// thread is idle, saving a hand-off and a wake-up; otherwise they are handed over, and the
    /// thread goes back to its sockets while the log syncs. Persisting inline releases the sends
    /// that waited on it, which may stage more writes.
    fn flush_persists(&mut self, inline: bool) {
        self.update_spare();
        while inline && !self.persists.is_empty() {
            let Some(upto) = self.persister.try_inline(&mut self.persists) else { break };
            self.step(Input::Persisted { upto });
        }
        self.persister.hand_over(&mut self.persists);
    }

    /// Reports when the leader starts or stops awaiting its spares (a follower on its commit path
    /// stalled or answers slower than the spares, or keeps up again).
    fn watch_spares(&mut self) {
        let awaited = self.core.awaits_spares();
        if awaited != self.spares_awaited {
            self.spares_awaited = awaited;
            self.observer.on_spares_awaited(awaited);
            if awaited {
                tracing::warn!("a follower on the commit path is slow or down: the spares are sent to at once and awaited");
            } else {
                tracing::info!("the commit path keeps up again: spares are sent to lazily");
            }
        }
    }

    /// Tells the persister whether the writes about to go are a spare's (`Persister::set_spare`).
    fn update_spare(&self) {
        // A promise answers a candidate, whose election waits for it: never delayed as a spare's.
        let promising = self.persists.iter().any(|(_, write)| matches!(write, DurableWrite::Promise(_)));
        self.persister.set_spare(self.core.may_sync_late() && !promising);
    }

    /// The checkpoint policy: hand the core a checkpoint so it can persist it and discard the log
    /// below it, every `checkpoint_every_slots` applied slots (once the log holds four times the
    /// last checkpoint's bytes, for checkpoints of 1 MiB and more: `slots_due`), and also whenever
    /// the log is half full: under large batches the slot count alone let a 256 MiB log fill up
    /// (and a full log stops the replica) before the next checkpoint was due.
    fn maybe_checkpoint(&mut self) {
        let log_bytes = self.shared.log_bytes.load(Ordering::Relaxed);
        let capacity = self.shared.log_capacity_bytes.load(Ordering::Relaxed);
        let half_full = capacity != 0 && log_bytes >= capacity / 2;
        let slots_due = slots_due(
            self.applier.next_slot(),
            self.last_checkpoint_slot,
            self.checkpoint.every_slots,
            log_bytes,
            self.last_checkpoint_bytes,
        );
        // The log shrinks only once the last checkpoint is durable and the core discarded below
        // it (whether it discarded for this checkpoint or for a newer one it holds): until then
        // a half-full log must not start another full serialization per step.
        let retain = self.checkpoint.retain_slots;
        if self.checkpoint_in_flight.is_some_and(|slot| self.core.log_base() + retain >= slot) {
            self.checkpoint_in_flight = None;
        }
        let bytes_due = half_full && self.checkpoint_in_flight.is_none();
        if slots_due || bytes_due {
            self.take_checkpoint();
        }
    }

    /// Whether client writes are shed now: the log is three quarters full, past the half-full
    /// checkpoint, so a checkpoint is due or on its way but has not freed space yet.
    fn shed_writes(&mut self) -> bool {
        let capacity = self.shared.log_capacity_bytes.load(Ordering::Relaxed);
        let bytes = self.shared.log_bytes.load(Ordering::Relaxed);
        let nearly_full = capacity != 0 && bytes >= capacity / 4 * 3;
        if nearly_full != self.shedding {
            self.shedding = nearly_full;
            if nearly_full {
                tracing::warn!(log_bytes = bytes, capacity, "log three quarters full; answering client writes Busy until a checkpoint frees space");
            } else {
                tracing::info!(log_bytes = bytes, capacity, "log space freed; accepting client writes again");
            }
        }
        nearly_full
    }

    /// Checkpoints the applier now and hands it to the core; returns its slot (None: nothing
    /// applied since the last one).
    fn take_checkpoint(&mut self) -> Option<u64> {
        if self.applier.next_slot() <= self.last_checkpoint_slot {
            return None;
        }
        // Freezing is cheap (the KV store's map is structurally shared); serializing and storing
        // are not, so they run on a helper thread and the checkpoint comes back through the inbox:
        // neither the core thread nor the persistence thread's group commits wait for them.
        let frozen = self.applier.freeze_checkpoint();
        let slot = frozen.slot();
        self.last_checkpoint_slot = slot;
        self.checkpoint_in_flight = Some(slot);
        let (inbox, shared, writer) = (self.inbox.clone(), self.shared.clone(), self.checkpoint.writer.clone());
        let spawned = std::thread::Builder::new().name("decree-checkpoint".into()).spawn(move || {
            super::background::lower_own_priority();
            let checkpoint = frozen.finish();
            if let Some(Err(e)) = writer.map(|writer| writer.store(&checkpoint)) {
                // The persistence thread stores it again when the core persists it, and a failure
                // there stops the replica as every log failure does.
                tracing::warn!(slot, error = %e, "storing the checkpoint off the commit path failed");
            }
            let _ = inbox.push_blocking(Event::CheckpointReady(checkpoint), move || shared.stopping());
        });
        if let Err(why) = spawned {
            tracing::warn!(slot, %why, "could not start the checkpoint thread; skipping this checkpoint");
            self.checkpoint_in_flight = None;
            return None;
        }
        Some(slot)
    }

    fn execute(&mut self, command: Command) {
        match command {
            // Deferred to the end of the step or pass (`flush_persists`): the sends of the same
            // step go out first, and a write that needs it waits on its ticket in the core.
            Command::Persist { ticket, write } => self.persists.push((ticket, write)),
            Command::Send(envelope) => self.transport.send(envelope),
            Command::Apply { slot, value } => {
                self.applied.clear();
                let mut applied = std::mem::take(&mut self.applied);
                self.applier.apply(slot, &value, &mut applied);
                self.observer.on_applied(1, applied.len());
                // Only a leader awaits; its entries' misses overlap when all are asked for first.
                if !self.awaiting.is_empty() {
                    applied.iter().for_each(|result| self.awaiting.prefetch((result.client, result.seq)));
                }
                // One clock read for the slot's replies (they go out together), none for a slot
                // nobody here waits on (every slot on a follower).
                let mut now = None;
                for result in applied.drain(..) {
                    let Some(waiter) = self.awaiting.remove((result.client, result.seq)) else { continue };
                    let payload = match result.outcome {
                        Outcome::Executed(reply) | Outcome::Duplicate(reply) => reply,
                        Outcome::Stale => continue,
                    };
                    let now = *now.get_or_insert_with(Instant::now);
                    self.reply_latencies_us.push(now.saturating_duration_since(waiter.since).as_micros() as u64);
                    waiter.reply_to.respond(waiter.request_id, Response::Reply { seq: result.seq, payload });
                }
                self.applied = applied;
                if !self.reply_latencies_us.is_empty() {
                    self.observer.on_replies(&self.reply_latencies_us);
                    self.reply_latencies_us.clear();
                }
            }
            Command::Redirect { requests, leader } => {
                for key in requests {
                    if let Some(waiter) = self.awaiting.remove(key) {
                        waiter.reply_to.respond(waiter.request_id, Response::Redirect { leader });
                    }
                }
            }
            Command::Admin(reply) => {
                tracing::info!(?reply, "administrative request answered");
                let (ok, detail, leader, slot) = match reply {
                    AdminReply::TransferStarted { to } => (true, format!("leadership is being handed to {to}"), None, None),
                    AdminReply::ReconfigProposed { slot } => (true, format!("configuration change proposed at slot {slot}"), None, Some(slot)),
                    AdminReply::Refused { reason, leader } => (false, reason.to_string(), leader, None),
                };
                if let Some(waiter) = self.admin.take() {
                    waiter.reply_to.respond(waiter.request_id, Response::Admin { ok, detail, leader, slot });
                }
            }
            Command::ReadReady { id, .. } => {
                // Every Apply before this command has run: the state reflects the read index.
                if let Some(read) = self.reads.remove(&id) {
                    let payload = self.applier.state_machine_mut().query(&read.request.op);
                    self.observer.on_replies(&[read.waiter.since.elapsed().as_micros() as u64]);
                    read.waiter.reply_to.respond(read.waiter.request_id, Response::Reply { seq: read.request.seq, payload });
                }
            }
            Command::ReadRefused { id, leader } => {
                if let Some(read) = self.reads.remove(&id) {
                    read.waiter.reply_to.respond(read.waiter.request_id, Response::Redirect { leader });
                }
            }
            Command::InstallCheckpoint(checkpoint) => {
                let slot = checkpoint.slot;
                match self.applier.install(&checkpoint) {
                    Ok(()) => {
                        self.last_checkpoint_slot = slot;
                        tracing::info!(slot, "installed a checkpoint received from a peer");
                    }
                    Err(why) => panic!("checkpoint at slot {slot} received intact but not loadable: {why}"),
                }
            }
            Command::LeadershipChanged { leading, ballot } => {
                tracing::info!(leading, %ballot, "leadership changed");
                self.observer.on_leadership(leading, ballot);
            }
        }
    }
}

impl<S, T, L, R, O> CorePass for Driver<S, T, L, R, O>
where
    S: StateMachine + ReadOnly + Send,
    T: PeerTransport,
    L: LogStorage,
    R: Responder,
    O: Observer,
{
    fn pass(&mut self) -> (bool, Duration) {
        Driver::pass(self)
    }
}

impl<S, T, L, R, O> Drop for Driver<S, T, L, R, O> {
    fn drop(&mut self) {
        tracing::info!(status = ?self.core.status(), "protocol core stopped");
    }
}

/// The log holds at least this many times the last checkpoint's bytes before the slot count may
/// checkpoint again: checkpoints then add at most a quarter to what the log writes, and recovery
/// replays at most four checkpoints' worth of log.
const LOG_BYTES_PER_CHECKPOINT_BYTE: u64 = 4;
/// Checkpoints smaller than this follow the slot count alone: rewriting them costs a few
/// milliseconds, and a replica that fell behind catches up sooner from a recent one.
const AMORTIZED_CHECKPOINT_BYTES: u64 = 1 << 20;

/// The slot-count checkpoint is due: `every` slots applied since the last one (0: never by count),
/// and, once checkpoints reach `AMORTIZED_CHECKPOINT_BYTES`, the log holding
/// `LOG_BYTES_PER_CHECKPOINT_BYTE` times the bytes the last one took. By count alone, 100,000 keys
/// (about 8 MB serialized) were rewritten every 0.5 s at one client beside 1-2 MB of log: 12% of
/// the CPUs, and a multi-megabyte write and fsync on the disk the commits sync on.
fn slots_due(next_slot: u64, last_slot: u64, every: u64, log_bytes: u64, last_checkpoint_bytes: u64) -> bool {
    every != 0
        && next_slot >= last_slot + every
        && (last_checkpoint_bytes < AMORTIZED_CHECKPOINT_BYTES
            || log_bytes >= last_checkpoint_bytes.saturating_mul(LOG_BYTES_PER_CHECKPOINT_BYTE))
}

#[cfg(test)]
mod tests {
    use super::{slots_due, AMORTIZED_CHECKPOINT_BYTES};

    #[test]
    fn the_slot_count_waits_for_a_log_four_times_a_large_last_checkpoint() {
        assert!(slots_due(10_000, 0, 10_000, 0, 0), "no checkpoint yet: the count alone");
        assert!(!slots_due(9_999, 0, 10_000, 1 << 30, 0), "count not reached");
        assert!(!slots_due(20_000, 10_000, 10_000, 31_999_999, 8_000_000), "log under 4x the state");
        assert!(slots_due(20_000, 10_000, 10_000, 32_000_000, 8_000_000));
        assert!(!slots_due(1 << 40, 0, 0, 1 << 30, 0), "0: never by count");
        assert!(slots_due(20_000, 10_000, 10_000, 1_000, 500_000), "a small checkpoint: the count alone");
        assert!(!slots_due(20_000, 10_000, 10_000, 1_000, AMORTIZED_CHECKPOINT_BYTES));
    }
}

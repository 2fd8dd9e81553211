//! The simulated world: replicas, their storage and clocks, the network and the clients, driven
//! by one event queue and one seeded generator.

use super::client::{Completed, ReadMode, SimClient};
use super::network::{Delivery, Network, NetworkFaults};
use super::safety::SafetyChecker;
use super::storage::SimStorage;
use super::{Report, SimConfig, SimOptions, Violation};
use crate::applier::{Applier, Outcome};
use crate::core::{Command, CoreConfig, DurableWrite, Input, Replica};
use crate::kv::KvStore;
use crate::membership::Membership;
use crate::message::{Envelope, Message};
use crate::state_machine::StateMachine;
use crate::types::{ClientId, ReplicaId, Request, Slot};
use bytes::Bytes;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

pub(super) const TICK_US: u64 = 5_000;
pub(super) const MAX_EVENTS: u64 = 20_000_000;
pub(super) const SETTLE_US: u64 = 2_000_000;
pub(super) const SWEEP_EVERY_EVENTS: u64 = 4_096;

/// A client's view of a reply.
#[derive(Clone, Debug)]
pub(super) enum Response {
    /// A write's (or log read's) reply and the slot count it is reflected in.
    Reply(Bytes, Slot),
    /// A read served without the log, and the slot count it reflects.
    ReadValue(Option<Bytes>, Slot),
    Redirect(Option<ReplicaId>),
}

#[derive(Clone, Debug)]
pub(super) enum Event {
    Deliver { to: usize, envelope: Envelope },
    ClientRequest { node: usize, request: Request },
    ClientRead { node: usize, client: usize, seq: u64, key: Bytes, mode: ReadMode },
    Transfer,
    ClientResponse { client: usize, seq: u64, response: Response },
    ClientSend { client: usize, generation: u64 },
    ClientTimeout { client: usize, generation: u64 },
    ClientNext { client: usize },
    Tick { node: usize, incarnation: u64 },
    PersistDone { node: usize, incarnation: u64, ticket: u64 },
    Crash,
    CrashNode { node: usize },
    Restart { node: usize },
    PartitionStart,
    PartitionEnd,
    Reconfigure,
    Heal,
}

pub(super) struct Scheduled {
    at_us: u64,
    order: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at_us, self.order) == (other.at_us, other.order)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: reverse so the earliest event pops first.
        (other.at_us, other.order).cmp(&(self.at_us, self.order))
    }
}

pub(super) struct Node {
    pub(super) core: Option<Replica>,
    pub(super) applier: Applier<KvStore>,
    pub(super) storage: SimStorage,
    pub(super) incarnation: u64,
    pub(super) awaiting: BTreeSet<(ClientId, u64)>,
    /// Reads handed to the core: id -> (client, seq, key, mode).
    pub(super) reads: BTreeMap<u64, (usize, u64, Bytes, ReadMode)>,
    pub(super) clock_offset_us: u64,
    pub(super) clock_rate_ppm: i64,
    pub(super) commit_checked: Slot,
    pub(super) last_checkpoint: Slot,
    /// The KV map's hash seed: each replica has its own, as real ones draw a random one, so any
    /// reply or checkpoint byte that depended on it would show as divergence.
    pub(super) kv_seed: u64,
}

impl Node {
    pub(super) fn local_ms(&self, now_us: u64) -> u64 {
        let scaled = (now_us + self.clock_offset_us) as i128 * (1_000_000 + self.clock_rate_ppm as i128) / 1_000_000;
        (scaled / 1_000) as u64
    }
}

/// One simulation run.
pub struct World {
    pub(super) seed: u64,
    pub(super) config: SimConfig,
    pub(super) options: SimOptions,
    pub(super) rng: fastrand::Rng,
    pub(super) now_us: u64,
    pub(super) order: u64,
    pub(super) queue: BinaryHeap<Scheduled>,
    pub(super) nodes: Vec<Node>,
    pub(super) clients: Vec<SimClient>,
    pub(super) network: Network,
    pub(super) faults: NetworkFaults,
    pub(super) healed: bool,
    pub(super) heal_deadline_us: u64,
    pub(super) safety: SafetyChecker,
    pub(super) history: Vec<Completed>,
    pub(super) written: Vec<Bytes>,
    pub(super) report: Report,
    pub(super) commands: Vec<Command>,
    pub(super) next_read_id: u64,
    /// When each replica was told to take over (TimeoutNow sent), to time the hand-over.
    pub(super) handovers: BTreeMap<usize, u64>,
    /// Replicas whose state machine vetoes candidacy for the whole run (RSL's CanBecomePrimary).
    pub(super) vetoed: BTreeSet<usize>,
    /// Each checkpoint slot's first replica and the crc32c of its bytes: every replica must write
    /// the same bytes for the same slot.
    pub(super) checkpoint_digests: BTreeMap<Slot, (usize, u32)>,
}

/// Replica `node`'s KV hash seed in the run of `seed` (derived, so the run's random stream is
/// unchanged and a failing seed replays as before).
fn kv_seed(seed: u64, node: usize) -> u64 {
    (seed ^ 0x6b76_5f73_6565_6421).wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(node as u64)
}

impl World {
    /// Builds the world for `seed`.
    pub fn new(seed: u64, config: SimConfig, options: SimOptions) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let nodes = (0..config.pool)
            .map(|node| kv_seed(seed, node))
            .map(|node_kv_seed| Node {
                core: None,
                applier: Applier::new(
                    KvStore::with_hash_seed(node_kv_seed),
                    Membership::new((0..config.voters as u32).map(ReplicaId).collect()),
                ),
                storage: SimStorage::default(),
                incarnation: 0,
                awaiting: BTreeSet::new(),
                reads: BTreeMap::new(),
                clock_offset_us: rng.u64(0..1_000_000),
                clock_rate_ppm: rng.i64(-(config.max_drift_ppm as i64)..=config.max_drift_ppm as i64),
                commit_checked: 0,
                last_checkpoint: 0,
                kv_seed: node_kv_seed,
            })
            .collect();
        let clients = (0..config.clients).map(|_| SimClient::new(rng.usize(0..config.pool))).collect();
        let initial = Membership::new((0..config.voters as u32).map(ReplicaId).collect());
        World {
            seed,
            faults: config.faults.clone(),
            options,
            rng,
            now_us: 0,
            order: 0,
            queue: BinaryHeap::new(),
            nodes,
            clients,
            network: Network::default(),
            healed: false,
            heal_deadline_us: u64::MAX,
            safety: SafetyChecker::new(initial),
            history: Vec::new(),
            written: Vec::new(),
            report: Report { seed, ..Report::default() },
            commands: Vec::new(),
            next_read_id: 0,
            handovers: BTreeMap::new(),
            vetoed: if config.veto_one_replica { BTreeSet::from([0]) } else { BTreeSet::new() },
            checkpoint_digests: BTreeMap::new(),
            config,
        }
    }

    /// Runs to completion: safety phase, heal phase, settle, then the final checks.
    pub fn run(mut self) -> Result<Report, Violation> {
        for node in 0..self.nodes.len() {
            self.start_node(node);
        }
        for client in 0..self.clients.len() {
            let at = self.rng.u64(0..20_000);
            self.schedule(at, Event::ClientNext { client });
        }
        if self.config.crash_every_ms > 0 {
            let at = self.rng.u64(0..2 * self.config.crash_every_ms * 1_000);
            self.schedule(at, Event::Crash);
        }
        if self.config.partition_every_ms > 0 {
            let at = self.rng.u64(0..2 * self.config.partition_every_ms * 1_000);
            self.schedule(at, Event::PartitionStart);
        }
        if self.config.transfer_every_ms > 0 {
            let at = self.rng.u64(0..2 * self.config.transfer_every_ms * 1_000);
            self.schedule(at, Event::Transfer);
        }
        if self.config.reconfig_every_ms > 0 {
            let at = self.rng.u64(0..2 * self.config.reconfig_every_ms * 1_000);
            self.schedule(at, Event::Reconfigure);
        }
        self.schedule(self.config.fault_phase_ms * 1_000, Event::Heal);
        let mut settle_until = None;
        while let Some(next) = self.queue.pop() {
            if let Some(until) = settle_until {
                if next.at_us > until {
                    break;
                }
            }
            self.now_us = next.at_us;
            self.report.events += 1;
            if self.report.events > MAX_EVENTS {
                return Err(Violation::Liveness { waiting_clients: self.waiting_clients() });
            }
            if self.now_us > self.heal_deadline_us && settle_until.is_none() {
                if self.options.trace {
                    for (index, node) in self.nodes.iter().enumerate() {
                        eprintln!("node {index}: {:?}", node.core.as_ref().map(|c| c.status()));
                    }
                }
                return Err(Violation::Liveness { waiting_clients: self.waiting_clients() });
            }
            if self.options.trace {
                eprintln!("{:>10}us {:?}", self.now_us, next.event);
            }
            self.handle(next.event)?;
            if self.report.events % SWEEP_EVERY_EVENTS == 0 {
                self.sweep_committed()?;
            }
            if settle_until.is_none() && self.healed && self.clients.iter().all(|c| c.done) {
                settle_until = Some(self.now_us + SETTLE_US);
            }
        }
        self.sweep_committed()?;
        if self.options.trace {
            for (index, node) in self.nodes.iter().enumerate() {
                eprintln!(
                    "final node {index}: applied {} {:?}",
                    node.applier.next_slot(),
                    node.core.as_ref().map(|c| c.status())
                );
            }
        }
        self.check_converged()?;
        self.check_history()?;
        self.report.sim_ms = self.now_us / 1_000;
        self.report.slots_chosen = self.safety.chosen_count() as u64;
        Ok(self.report)
    }

    pub(super) fn schedule(&mut self, at_us: u64, event: Event) {
        self.order += 1;
        self.queue.push(Scheduled { at_us, order: self.order, event });
    }

    pub(super) fn after(&mut self, delay_us: u64, event: Event) {
        self.schedule(self.now_us + delay_us, event);
    }

    pub(super) fn waiting_clients(&self) -> usize {
        self.clients.iter().filter(|c| !c.done).count()
    }

    pub(super) fn core_config(&self, node: usize) -> CoreConfig {
        let voters = (0..self.config.voters as u32).map(ReplicaId).collect();
        let mut config = CoreConfig::new(ReplicaId(node as u32), voters);
        config.seed = self.seed ^ ((node as u64) << 32) ^ self.nodes[node].incarnation.wrapping_mul(0x9e37_79b9);
        // Small chunks and a short retained tail, so transfers are chunked, cut and resumed.
        config.snapshot_chunk_bytes = 64;
        config.checkpoint_retain_slots = self.config.checkpoint_retain_slots;
        // A third of the seeds each replicate to spares eagerly, lazily every 1 ms, or every 2 ms.
        config.spare_lag_ms = self.seed % 3;
        #[cfg(feature = "mutations")]
        {
            config.mutation = self.options.mutation;
            config.contracts = !self.options.contracts_off;
        }
        config
    }

    pub(super) fn start_node(&mut self, node: usize) {
        let config = self.core_config(node);
        let durable = self.nodes[node].storage.recover();
        let initial = config.membership.clone();
        let state = &mut self.nodes[node];
        state.applier = match durable.checkpoint() {
            Some(checkpoint) => Applier::from_checkpoint(KvStore::with_hash_seed(state.kv_seed), checkpoint)
                .expect("a stored checkpoint loads"),
            None => Applier::new(KvStore::with_hash_seed(state.kv_seed), initial),
        };
        let mut core = Replica::recover(config, durable);
        core.set_candidacy(state.applier.state_machine().can_become_primary() && !self.vetoed.contains(&node));
        state.core = Some(core);
        state.commit_checked = state.core.as_ref().map_or(0, |c| c.log_base());
        state.last_checkpoint = state.applier.next_slot();
        let incarnation = state.incarnation;
        let phase = self.rng.u64(0..TICK_US);
        self.after(phase, Event::Tick { node, incarnation });
    }

    fn handle(&mut self, event: Event) -> Result<(), Violation> {
        match event {
            Event::Deliver { to, envelope } => self.step(to, Input::Receive(envelope)),
            Event::ClientRequest { node, request } => {
                if self.nodes[node].core.is_none() {
                    return Ok(());
                }
                self.nodes[node].awaiting.insert((request.client, request.seq));
                self.step(node, Input::Propose(vec![request]))
            }
            Event::ClientRead { node, client, seq, key, mode } => {
                if self.nodes[node].core.is_none() {
                    return Ok(());
                }
                self.next_read_id += 1;
                let id = self.next_read_id;
                self.nodes[node].reads.insert(id, (client, seq, key, mode));
                let input = match mode {
                    ReadMode::Fast { min_slot } => Input::FastRead { id, min_slot },
                    _ => Input::Read { id },
                };
                self.step(node, input)
            }
            Event::Transfer => self.transfer(),
            Event::ClientResponse { client, seq, response } => {
                self.on_client_response(client, seq, response);
                Ok(())
            }
            Event::ClientSend { client, generation } => {
                if self.clients[client].generation == generation && self.clients[client].current.is_some() {
                    self.send_request(client);
                }
                Ok(())
            }
            Event::ClientTimeout { client, generation } => {
                let c = &mut self.clients[client];
                if c.generation == generation && c.current.is_some() {
                    c.target = (c.target + 1) % self.nodes.len();
                    self.report.retries += 1;
                    self.send_request(client);
                }
                Ok(())
            }
            Event::ClientNext { client } => {
                self.start_op(client);
                Ok(())
            }
            Event::Tick { node, incarnation } => {
                if self.nodes[node].core.is_none() || self.nodes[node].incarnation != incarnation {
                    return Ok(());
                }
                self.after(TICK_US, Event::Tick { node, incarnation });
                let allowed =
                    self.nodes[node].applier.state_machine().can_become_primary() && !self.vetoed.contains(&node);
                if let Some(core) = self.nodes[node].core.as_mut() {
                    core.set_candidacy(allowed);
                }
                self.step(node, Input::Tick)
            }
            Event::PersistDone { node, incarnation, ticket } => {
                if self.nodes[node].incarnation != incarnation || self.nodes[node].core.is_none() {
                    return Ok(()); // the write was lost in a crash
                }
                let write = self.nodes[node].storage.complete(ticket);
                if let DurableWrite::Entries(entries) = &write {
                    self.safety.on_durable_accept(node, entries)?;
                }
                self.step(node, Input::Persisted { upto: ticket })
            }
            Event::Crash => {
                let node = self.rng.usize(0..self.nodes.len());
                self.crash(node);
                if self.config.crash_every_ms > 0 {
                    let gap = self.rng.u64(0..2 * self.config.crash_every_ms * 1_000);
                    self.after(gap, Event::Crash);
                }
                Ok(())
            }
            Event::CrashNode { node } => {
                self.crash(node);
                Ok(())
            }
            Event::Restart { node } => {
                if self.nodes[node].core.is_none() {
                    self.start_node(node);
                }
                Ok(())
            }
            Event::PartitionStart => {
                self.partition();
                Ok(())
            }
            Event::PartitionEnd => {
                self.network.heal();
                if !self.healed && self.config.partition_every_ms > 0 {
                    let gap = self.rng.u64(0..2 * self.config.partition_every_ms * 1_000);
                    self.after(gap, Event::PartitionStart);
                }
                Ok(())
            }
            Event::Heal => {
                self.heal();
                Ok(())
            }
            Event::Reconfigure => self.reconfigure(),
        }
    }

    /// Feeds one input to a live replica and carries out its commands.
    pub(super) fn step(&mut self, node: usize, input: Input) -> Result<(), Violation> {
        let now_ms = self.nodes[node].local_ms(self.now_us);
        let mut commands = std::mem::take(&mut self.commands);
        let Some(core) = self.nodes[node].core.as_mut() else {
            return Ok(());
        };
        core.step(now_ms, input, &mut commands);
        let mut result = Ok(());
        for command in commands.drain(..) {
            if let Err(violation) = self.execute(node, command) {
                result = Err(violation);
                break;
            }
        }
        self.commands = commands;
        result?;
        self.check_new_commits(node)?;
        self.maybe_checkpoint(node)
    }

    /// Takes a checkpoint every `checkpoint_every_slots` applied slots (the driver's slot count,
    /// without its byte rule: the simulation checkpoints often, to test the protocol around them).
    fn maybe_checkpoint(&mut self, node: usize) -> Result<(), Violation> {
        let every = self.config.checkpoint_every_slots;
        let state = &mut self.nodes[node];
        if every == 0 || state.core.is_none() || state.applier.next_slot() < state.last_checkpoint + every {
            return Ok(());
        }
        let checkpoint = state.applier.checkpoint();
        state.last_checkpoint = checkpoint.slot;
        let digest = crc32c::crc32c(&checkpoint.data);
        let &mut (first, held) = self.checkpoint_digests.entry(checkpoint.slot).or_insert((node, digest));
        if held != digest {
            return Err(Violation::Diverged(format!(
                "replicas {first} and {node} wrote different checkpoint bytes at slot {}",
                checkpoint.slot
            )));
        }
        self.report.checkpoints_taken += 1;
        self.step(node, Input::CheckpointTaken(checkpoint))
    }

    fn execute(&mut self, node: usize, command: Command) -> Result<(), Violation> {
        if self.options.trace && !matches!(command, Command::Send(_) | Command::Persist { .. }) {
            eprintln!("{:>10}us   node {node} -> {command:?}", self.now_us);
        }
        match command {
            Command::Persist { ticket, write } => {
                let (low, high) = self.config.write_latency_us;
                let latency =
                    if self.rng.u32(0..100) == 0 { self.config.slow_write_us } else { self.rng.u64(low..=high) };
                let done_at = self.nodes[node].storage.submit(ticket, write, self.now_us, latency);
                let incarnation = self.nodes[node].incarnation;
                self.schedule(done_at, Event::PersistDone { node, incarnation, ticket });
            }
            Command::Send(envelope) => {
                let acknowledges = matches!(envelope.msg, Message::Promise(_) | Message::Accepted(_));
                if let Message::TimeoutNow(_) = envelope.msg {
                    self.handovers.insert(envelope.to.0 as usize, self.now_us);
                }
                if acknowledges && !self.healed && self.rng.u32(0..1000) < self.config.crash_after_ack_per_mille {
                    let delay = self.rng.u64(0..=self.config.write_latency_us.1);
                    self.after(delay, Event::CrashNode { node });
                }
                let to = envelope.to.0 as usize;
                if to < self.nodes.len() {
                    self.transmit(Some((node, to)), |_| Event::Deliver { to, envelope: envelope.clone() });
                }
            }
            Command::Apply { slot, value } => {
                self.safety.on_apply(node, slot, &value)?;
                let mut applied = Vec::new();
                self.nodes[node].applier.apply(slot, &value, &mut applied);
                for result in applied {
                    if !self.nodes[node].awaiting.remove(&(result.client, result.seq)) {
                        continue;
                    }
                    let reply = match result.outcome {
                        Outcome::Executed(reply) | Outcome::Duplicate(reply) => reply,
                        Outcome::Stale => continue,
                    };
                    self.respond(result.client, result.seq, Response::Reply(reply, slot + 1));
                }
            }
            Command::Redirect { requests, leader } => {
                for (client, seq) in requests {
                    if self.nodes[node].awaiting.remove(&(client, seq)) {
                        self.respond(client, seq, Response::Redirect(leader));
                    }
                }
            }
            Command::ReadReady { id, slot } => {
                let state = &mut self.nodes[node];
                let Some((client, seq, key, mode)) = state.reads.remove(&id) else {
                    return Ok(());
                };
                if state.applier.next_slot() != slot {
                    return Err(Violation::Diverged(format!(
                        "read served at slot {slot} but {} applied",
                        state.applier.next_slot()
                    )));
                }
                let value = state.applier.state_machine().get(&key).map(Bytes::copy_from_slice);
                if let ReadMode::Fast { min_slot } = mode {
                    self.report.fast_reads += 1;
                    if slot < min_slot {
                        return Err(Violation::StaleRead { node, slot, min_slot });
                    }
                    self.safety.check_read(node, &key, slot, value.as_ref())?;
                } else {
                    self.report.index_reads += 1;
                }
                self.respond(ClientId(client as u64), seq, Response::ReadValue(value, slot));
            }
            Command::ReadRefused { id, leader } => {
                if let Some((client, seq, _, _)) = self.nodes[node].reads.remove(&id) {
                    self.respond(ClientId(client as u64), seq, Response::Redirect(leader));
                }
            }
            Command::InstallCheckpoint(checkpoint) => {
                self.report.checkpoints_installed += 1;
                let state = &mut self.nodes[node];
                state.applier.install(&checkpoint).map_err(Violation::Diverged)?;
                state.last_checkpoint = checkpoint.slot;
                state.commit_checked = state.commit_checked.max(checkpoint.slot);
            }
            Command::Admin(reply) => match reply {
                crate::core::AdminReply::ReconfigProposed { .. } => self.report.reconfigs_proposed += 1,
                crate::core::AdminReply::TransferStarted { .. } => self.report.transfers_started += 1,
                crate::core::AdminReply::Refused { .. } => {}
            },
            Command::LeadershipChanged { leading, .. } => {
                if leading && self.vetoed.contains(&node) {
                    return Err(Violation::Diverged(format!(
                        "replica {node} leads although its state machine vetoed it"
                    )));
                }
                self.nodes[node].applier.state_machine_mut().on_primary_change(leading);
                if let Some(told_us) = self.handovers.remove(&node).filter(|_| leading) {
                    let took_us = self.now_us - told_us;
                    // In units of this run's mean round trip plus mean write: "about one round trip"
                    // means about 1.5 here (TimeoutNow one way, then a phase-1 round trip and a persist).
                    let faults = &self.config.faults;
                    let (low, high) = self.config.write_latency_us;
                    let unit_us = (faults.min_delay_us + faults.max_delay_us) + (low + high) / 2;
                    self.report.handover_us.push(took_us);
                    self.report.handover_per_mille_of_rtt.push(took_us * 1000 / unit_us.max(1));
                }
                if leading {
                    self.report.elections_won += 1;
                }
            }
        }
        Ok(())
    }

    /// Sends over the network (`link` is None for client traffic, which partitions spare).
    pub(super) fn transmit(&mut self, link: Option<(usize, usize)>, event: impl Fn(()) -> Event) {
        self.report.messages += 1;
        match self.network.route(&mut self.rng, &self.faults, link) {
            Delivery::Dropped => self.report.dropped += 1,
            Delivery::Once(delay) => self.after(delay, event(())),
            Delivery::Twice(first, second) => {
                self.report.duplicated += 1;
                self.after(first, event(()));
                self.after(second, event(()));
            }
        }
    }
}

//! The deterministic simulator. One `u64` seed drives everything: the schedule, network delays,
//! drops, duplicates and partitions (asymmetric too), crashes and restarts with storage that
//! loses unpersisted writes, clock drift, and concurrent clients with timeouts and retries.
//!
//! A run has a *safety phase* (faults on) and a *heal phase* (faults off, crashed replicas back)
//! in which every client operation must complete within a bound. Safety is checked at every
//! step ([`safety`]), the client history at the end ([`linearizability`]). A failing seed replays
//! exactly with `decree sim --seed N`.

pub mod client;
mod client_traffic;
mod faults;
pub mod kv_model;
pub mod linearizability;
pub mod network;
pub mod safety;
pub mod storage;
mod verdict;
pub mod world;

use crate::types::{Ballot, Slot};
use std::fmt;

/// Knobs of a run that do not come from the seed.
#[derive(Clone, Debug, Default)]
pub struct SimOptions {
    /// Print every event (for replaying a failure).
    pub trace: bool,
    /// A deliberate protocol bug to run with.
    #[cfg(feature = "mutations")]
    pub mutation: crate::core::Mutation,
    /// Turn the core's contracts off, to measure what the simulator's own checks catch.
    #[cfg(feature = "mutations")]
    pub contracts_off: bool,
}

/// The shape of one run, drawn from its seed.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Voting replicas at the start (3 or 5): replicas `0 .. voters`.
    pub voters: usize,
    /// All replicas that exist (the rest start as non-members and may be added).
    pub pool: usize,
    /// Mean time between configuration changes (0: none).
    pub reconfig_every_ms: u64,
    /// Concurrent clients.
    pub clients: usize,
    /// Keys the clients touch (few, so operations conflict).
    pub keys: usize,
    /// Length of the safety phase (faults on).
    pub fault_phase_ms: u64,
    /// Operations each client runs after faults stop.
    pub heal_ops_per_client: usize,
    /// Bound on the heal phase: every operation must complete within it.
    pub heal_bound_ms: u64,
    /// Network fault rates during the safety phase.
    pub faults: network::NetworkFaults,
    /// Mean time between crashes (0: none).
    pub crash_every_ms: u64,
    /// Mean time between partitions (0: none).
    pub partition_every_ms: u64,
    /// Chance, in thousandths, that a replica crashes right after it sends an acknowledgement
    /// (promise or accepted): the window where persist-before-acknowledge matters.
    pub crash_after_ack_per_mille: u32,
    /// Storage write latency range; a few writes take `slow_write_us` instead.
    pub write_latency_us: (u64, u64),
    /// Latency of the occasional slow write (a stalled disk).
    pub slow_write_us: u64,
    /// Largest clock rate error, parts per million.
    pub max_drift_ppm: u64,
    /// Client request timeout before it retries elsewhere.
    pub client_timeout_ms: u64,
    /// Replicas checkpoint every this many applied slots (0: never).
    pub checkpoint_every_slots: u64,
    /// Log slots kept below a checkpoint.
    pub checkpoint_retain_slots: u64,
    /// Mean time between leadership transfer requests (0: none).
    pub transfer_every_ms: u64,
    /// Replica 0's state machine vetoes its candidacy (it must never lead, yet the group must live).
    pub veto_one_replica: bool,
}

impl SimConfig {
    /// Draws a run's shape from its seed: every seed gets a different mix of faults.
    pub fn from_seed(seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed_c0f1_9000_0001);
        let voters = if rng.u32(0..4) == 0 { 5 } else { 3 };
        let reconfig_every_ms = [0, 0, 300, 800][rng.usize(0..4)];
        let pool = if reconfig_every_ms > 0 { voters + 2 } else { voters };
        let max_delay_us = [500, 2_000, 10_000, 30_000][rng.usize(0..4)];
        SimConfig {
            voters,
            pool,
            reconfig_every_ms,
            clients: rng.usize(2..=5),
            keys: rng.usize(1..=3),
            fault_phase_ms: rng.u64(1_000..=3_000),
            heal_ops_per_client: 3,
            heal_bound_ms: 20_000,
            faults: network::NetworkFaults {
                drop_per_mille: [0, 10, 50, 150][rng.usize(0..4)],
                duplicate_per_mille: [0, 10, 50][rng.usize(0..3)],
                min_delay_us: 50,
                max_delay_us,
                stall_per_mille: [0, 5, 20][rng.usize(0..3)],
                max_stall_us: 500_000,
            },
            crash_every_ms: [0, 100, 300, 800][rng.usize(0..4)],
            crash_after_ack_per_mille: [0, 0, 2, 20][rng.usize(0..4)],
            write_latency_us: [(20, 300), (200, 2_000), (1_000, 8_000)][rng.usize(0..3)],
            slow_write_us: [5_000, 30_000][rng.usize(0..2)],
            partition_every_ms: [0, 400, 1_000][rng.usize(0..3)],
            max_drift_ppm: [0, 1_000, 20_000][rng.usize(0..3)],
            client_timeout_ms: 200,
            checkpoint_every_slots: [0, 0, 10, 40][rng.usize(0..4)],
            checkpoint_retain_slots: [0, 5][rng.usize(0..2)],
            transfer_every_ms: [0, 0, 300][rng.usize(0..3)],
            veto_one_replica: rng.u32(0..8) == 0,
        }
    }
}

/// A broken safety or liveness property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// A core contract panicked.
    Contract(String),
    /// Two different values were chosen for one slot.
    TwoValuesChosen {
        /// The slot.
        slot: Slot,
    },
    /// Two different values were accepted in one ballot for one slot.
    TwoValuesInOneBallot {
        /// The slot.
        slot: Slot,
        /// The ballot.
        ballot: Ballot,
    },
    /// A replica's committed value changed.
    CommittedPrefixChanged {
        /// Replica index.
        node: usize,
        /// The slot.
        slot: Slot,
    },
    /// A replica applied something off the one sequence.
    AppliedDiverged {
        /// Replica index.
        node: usize,
        /// The slot.
        slot: Slot,
    },
    /// The client history is not linearizable.
    NotLinearizable {
        /// The key whose history failed.
        key: String,
        /// Operations in that key's history.
        operations: usize,
    },
    /// Operations still incomplete when the heal bound ran out.
    Liveness {
        /// Clients still waiting.
        waiting_clients: usize,
    },
    /// Replicas did not converge to the same state after healing.
    Diverged(String),
    /// A fast read was served below the slot the client asked for.
    StaleRead {
        /// Replica index.
        node: usize,
        /// Slot served at.
        slot: Slot,
        /// Slot asked for.
        min_slot: Slot,
    },
    /// A read returned a value that is not the key's value at the slot it was served at.
    WrongRead {
        /// Replica index.
        node: usize,
        /// Slot served at.
        slot: Slot,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// What one run did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Events processed.
    pub events: u64,
    /// Simulated time at the end.
    pub sim_ms: u64,
    /// Messages sent between replicas and clients.
    pub messages: u64,
    /// Messages dropped (by loss or partition).
    pub dropped: u64,
    /// Messages duplicated.
    pub duplicated: u64,
    /// Replica crashes.
    pub crashes: u64,
    /// Persist writes lost to crashes.
    pub lost_writes: u64,
    /// Partitions started.
    pub partitions: u64,
    /// Times a replica became leader.
    pub elections_won: u64,
    /// Client operations completed (and checked).
    pub operations: u64,
    /// Client retries (timeouts and redirects).
    pub retries: u64,
    /// Slots chosen.
    pub slots_chosen: u64,
    /// Configuration changes proposed.
    pub reconfigs_proposed: u64,
    /// Checkpoints taken by replicas.
    pub checkpoints_taken: u64,
    /// Checkpoints received from a peer and installed.
    pub checkpoints_installed: u64,
    /// Leadership transfers started.
    pub transfers_started: u64,
    /// Linearizable read-index reads served (checked in the history).
    pub index_reads: u64,
    /// Fast reads served (checked against the chosen sequence at their slot).
    pub fast_reads: u64,
    /// Leadership hand-overs: from the leader sending TimeoutNow to the target leading, in µs.
    pub handover_us: Vec<u64>,
    /// The same hand-overs in thousandths of (mean round trip + mean write) of their run.
    pub handover_per_mille_of_rtt: Vec<u64>,
}

impl Report {
    /// Injected faults of every kind.
    pub fn faults(&self) -> u64 {
        self.dropped + self.duplicated + self.crashes + self.partitions
    }
}

/// Runs one seed. Contract panics inside the core are caught and reported as violations.
pub fn run(seed: u64, options: &SimOptions) -> Result<Report, Violation> {
    let config = SimConfig::from_seed(seed);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        world::World::new(seed, config, options.clone()).run()
    }));
    match outcome {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".into());
            Err(Violation::Contract(message))
        }
    }
}

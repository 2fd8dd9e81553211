//! Tunables of one replica's protocol core.

use crate::membership::Membership;
use crate::types::ReplicaId;

/// Configuration of a protocol core. Times are in milliseconds of the driver's clock.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// This replica.
    pub id: ReplicaId,
    /// The initial voters (configuration changes replace it at run time).
    pub membership: Membership,
    /// How often a leader sends heartbeats (and retransmits stalled accepts).
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomized election timeout.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout.
    pub election_timeout_max_ms: u64,
    /// Most slots a leader keeps in flight beyond its commit index (the pipeline window).
    pub window_slots: u64,
    /// Most client requests batched into one slot.
    pub max_batch_requests: usize,
    /// Most request bytes batched into one slot.
    pub max_batch_bytes: usize,
    /// Most values one accept message carries (catch-up is sent in chunks of this size).
    pub max_values_per_accept: usize,
    /// Most client requests a leader queues while its window is full; beyond it they are refused.
    pub max_pending_requests: usize,
    /// Bytes per checkpoint chunk sent to a lagging replica.
    pub snapshot_chunk_bytes: usize,
    /// Largest checkpoint a replica will buffer from a peer.
    pub max_snapshot_bytes: u64,
    /// Slots kept below a checkpoint, so a replica slightly behind gets entries, not a checkpoint.
    pub checkpoint_retain_slots: u64,
    /// A leader replicates to its spares (`Membership::is_spare`) at most once per this many
    /// milliseconds, and at each of their acknowledgements, while its commit path keeps up; 0:
    /// like any follower, at every proposal. For spares that sync late anyway (one host whose
    /// replicas share a disk): each message to them costs the two CPUs a send, a wake-up and a
    /// receive per commit.
    pub spare_lag_ms: u64,
    /// Seeds the core's own randomness (election back-off), so a run replays exactly.
    pub seed: u64,
    /// Deliberate protocol breakage for mutation tests.
    #[cfg(feature = "mutations")]
    pub mutation: Mutation,
    /// Whether contracts are checked (mutation tests turn them off to measure the simulator alone).
    #[cfg(feature = "mutations")]
    pub contracts: bool,
}

impl CoreConfig {
    /// Defaults suited to a LAN / single host deployment.
    pub fn new(id: ReplicaId, voters: Vec<ReplicaId>) -> Self {
        CoreConfig {
            id,
            membership: Membership::new(voters),
            heartbeat_interval_ms: 20,
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
            window_slots: 64,
            max_batch_requests: 1024,
            max_batch_bytes: 1 << 20,
            max_values_per_accept: 64,
            max_pending_requests: 65_536,
            snapshot_chunk_bytes: 64 << 10,
            max_snapshot_bytes: 1 << 30,
            checkpoint_retain_slots: 64,
            spare_lag_ms: 0,
            seed: id.0 as u64,
            #[cfg(feature = "mutations")]
            mutation: Mutation::None,
            #[cfg(feature = "mutations")]
            contracts: true,
        }
    }

    /// Checks the tunables are coherent; returns a message naming the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if self.heartbeat_interval_ms == 0 {
            return Err("heartbeat_interval_ms must be > 0".into());
        }
        if self.election_timeout_min_ms <= 2 * self.heartbeat_interval_ms {
            return Err("election_timeout_min_ms must exceed twice heartbeat_interval_ms".into());
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return Err("election_timeout_max_ms must exceed election_timeout_min_ms".into());
        }
        if self.window_slots == 0 || self.max_batch_requests == 0 || self.max_batch_bytes == 0 {
            return Err("window_slots, max_batch_requests and max_batch_bytes must be > 0".into());
        }
        if self.snapshot_chunk_bytes == 0 || self.snapshot_chunk_bytes > crate::codec::MAX_FRAME_PAYLOAD_BYTES / 2 {
            return Err("snapshot_chunk_bytes must be in 1..=MAX_FRAME_PAYLOAD_BYTES/2".into());
        }
        if self.max_values_per_accept == 0 || self.max_values_per_accept > crate::codec::MAX_ENTRIES_PER_MESSAGE {
            return Err("max_values_per_accept must be in 1..=MAX_ENTRIES_PER_MESSAGE".into());
        }
        Ok(())
    }
}

/// A deliberate protocol bug, compiled only with the `mutations` feature.
#[cfg(feature = "mutations")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mutation {
    /// The protocol as designed.
    #[default]
    None,
    /// Phase 1 ignores the values promisers report and fills the suffix with no-ops.
    SkipRepropose,
    /// Acceptors accept (and acknowledge) accepts below their promised ballot.
    AcceptLowerBallot,
    /// Acceptors acknowledge accepts before the entries are durable.
    AckBeforePersist,
    /// The leader commits with one vote fewer than a majority.
    CommitWithoutQuorum,
    /// A new configuration takes effect when proposed instead of when chosen.
    EarlyReconfig,
    /// A candidate ignores that a promiser discarded slots it has not learned (checkpointed away).
    IgnoreCheckpointGap,
    /// The leader serves linearizable reads from local state without confirming it still leads
    /// (no quorum round, and no check-quorum step-down either: the classic stale-leader read).
    ReadWithoutConfirmation,
}

//! The protocol's vocabulary: replica ids, ballots, slots, client requests and log values.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Identifies one replica (voter or learner) of a group. Stable across restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReplicaId(pub u32);

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

/// A Paxos ballot: ordered by round first, then by the proposing replica, so two replicas never
/// own the same ballot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Ballot {
    /// Monotonic round number; a new candidate picks one above every round it has seen.
    pub round: u64,
    /// The replica that owns this ballot.
    pub leader: u32,
}

impl Ballot {
    /// The ballot below every real one; nothing is ever accepted at it.
    pub const ZERO: Ballot = Ballot { round: 0, leader: 0 };

    /// The ballot `round` owned by `leader`.
    pub fn new(round: u64, leader: ReplicaId) -> Self {
        Ballot { round, leader: leader.0 }
    }

    /// The replica that owns this ballot.
    pub fn owner(&self) -> ReplicaId {
        ReplicaId(self.leader)
    }
}

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.round, self.leader)
    }
}

/// Index of a log position (a "decree" in RSL's words). Slots start at 0.
pub type Slot = u64;

/// Identifies a client session for duplicate suppression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClientId(pub u64);

/// One client command. `(client, seq)` makes it idempotent: a retried request executes once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The client session that issued it.
    pub client: ClientId,
    /// Per-client sequence number, strictly increasing, one outstanding request per client.
    pub seq: u64,
    /// The state machine operation, opaque to the protocol.
    pub op: Bytes,
}

impl Request {
    /// Bytes this request adds to a batch (payload plus fixed per-request overhead).
    pub fn size_bytes(&self) -> usize {
        self.op.len() + 16
    }
}

/// The value decided for one slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// Fills a slot that no earlier leader left a value in (gaps found during phase 1).
    Noop,
    /// A batch of client requests, applied in order.
    Batch(crate::batch::Batch),
    /// A configuration change: slots after this one belong to the new configuration. The leader
    /// proposes nothing past it until it is chosen, then runs phase 1 again in the new configuration.
    Reconfig(crate::membership::Membership),
}

impl Value {
    /// Number of client requests the value carries.
    pub fn request_count(&self) -> usize {
        match self {
            Value::Noop | Value::Reconfig(_) => 0,
            Value::Batch(requests) => requests.len(),
        }
    }
}

/// The values one `Accept` carries: in steady state one or two, held inline (catch-up spills to the heap).
pub type Values = smallvec::SmallVec<[Value; 2]>;

/// The entries of one durable write: in steady state one or two, held inline.
pub type Entries = smallvec::SmallVec<[Entry; 2]>;

/// A log entry as acceptors store and report it: the value accepted for `slot` at `ballot`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Log position.
    pub slot: Slot,
    /// Ballot at which the value was accepted.
    pub ballot: Ballot,
    /// The accepted value.
    pub value: Value,
}

/// A state machine checkpoint: the applied state of every slot below `slot`, with the configuration
/// in force after them. `data` is opaque to the protocol (the applier's serialization).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Every slot below this is reflected in `data`.
    pub slot: Slot,
    /// The configuration after applying every slot below `slot`.
    pub membership: crate::membership::Membership,
    /// Slot of the reconfig that produced `membership` (None: the initial configuration).
    pub config_slot: Option<Slot>,
    /// The serialized state.
    pub data: Bytes,
}

impl Checkpoint {
    /// crc32c of the data, checked after a transfer.
    pub fn checksum(&self) -> u32 {
        crc32c::crc32c(&self.data)
    }
}

//! Messages replicas exchange. Phase names follow Paxos: Prepare/Promise is phase 1,
//! Accept/Accepted is phase 2. Replication is log-shaped: an `Accept` carries a run of
//! consecutive slots, and `Accepted` acknowledges a cumulative horizon.

use crate::types::{Ballot, Entry, ReplicaId, Slot};
use serde::{Deserialize, Serialize};

/// A message with its sender and receiver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Sender.
    pub from: ReplicaId,
    /// Receiver.
    pub to: ReplicaId,
    /// Content.
    pub msg: Message,
}

/// Everything one replica says to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Phase 1a: a candidate asks for a promise for `ballot` over every slot from `from_slot` on.
    Prepare(Prepare),
    /// Phase 1b: the acceptor promises and reports what it accepted from `from_slot` on.
    Promise(Promise),
    /// Phase 2a: the leader proposes values for consecutive slots.
    Accept(Accept),
    /// Phase 2b: every slot below `upto` is durably accepted at `ballot` (or known chosen).
    Accepted(Accepted),
    /// A refusal: the ballot is stale, or an accept left a gap.
    Reject(Reject),
    /// Leader liveness and commit propagation; answered with `Accepted`.
    Heartbeat(Heartbeat),
    /// A replica that cannot campaign and hears no leader asks a peer for chosen entries.
    Fetch(Fetch),
    /// Entries the sender knows are chosen, answering a `Fetch`.
    Chosen(Chosen),
    /// One chunk of a checkpoint, for a replica whose next slot was discarded.
    Snapshot(SnapshotChunk),
    /// The receiver of a checkpoint asks for the chunk at `offset` (acknowledging all before it).
    SnapshotRequest(SnapshotRequest),
    /// Leadership transfer: campaign now.
    TimeoutNow(TimeoutNow),
}

/// A chunk `offset .. offset + data.len()` of the checkpoint at `slot`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// The sender's promised ballot.
    pub ballot: Ballot,
    /// The checkpoint covers every slot below this.
    pub slot: Slot,
    /// The configuration after those slots.
    pub membership: crate::membership::Membership,
    /// Slot of the reconfig that produced it.
    pub config_slot: Option<Slot>,
    /// Size of the whole checkpoint.
    pub total_bytes: u64,
    /// crc32c of the whole checkpoint, checked once assembled.
    pub checksum: u32,
    /// Where this chunk starts.
    pub offset: u64,
    /// The chunk.
    pub data: bytes::Bytes,
}

/// Asks for the chunk of the checkpoint at `slot` starting at `offset`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRequest {
    /// The requester's promised ballot.
    pub ballot: Ballot,
    /// The checkpoint being assembled.
    pub slot: Slot,
    /// Bytes already held.
    pub offset: u64,
}

/// A request for chosen entries from `from_slot` on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fetch {
    /// The requester's current ballot (not a claim to lead; carried for `Message::ballot`).
    pub ballot: Ballot,
    /// First slot the requester lacks.
    pub from_slot: Slot,
}

/// Chosen entries `start .. start + entries.len()`, each with the ballot it was accepted at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chosen {
    /// The sender's promised ballot.
    pub ballot: Ballot,
    /// First slot carried.
    pub start: Slot,
    /// The chosen entries, consecutive from `start`.
    pub entries: Vec<Entry>,
    /// The sender's commit index (every slot below it is chosen).
    pub commit: Slot,
}

/// Phase 1a.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepare {
    /// The candidate's ballot.
    pub ballot: Ballot,
    /// The candidate knows every slot below this is chosen; phase 1 covers the rest.
    pub from_slot: Slot,
    /// The campaign was asked for by the leader (leadership transfer): promise even though the
    /// leader was heard from recently.
    pub transfer: bool,
}

/// Phase 1b.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promise {
    /// The ballot promised.
    pub ballot: Ballot,
    /// The acceptor knows every slot below this is chosen (its entries there are chosen values).
    pub commit: Slot,
    /// First slot the acceptor still holds (slots below were discarded after a checkpoint).
    pub log_base: Slot,
    /// Every entry the acceptor holds at or above the prepare's `from_slot`, ascending by slot.
    pub entries: Vec<Entry>,
}

/// Phase 2a for the run of slots `start .. start + values.len()`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accept {
    /// The leader's ballot.
    pub ballot: Ballot,
    /// First slot of the run.
    pub start: Slot,
    /// One value per slot.
    #[serde(deserialize_with = "deserialize_values")]
    pub values: crate::types::Values,
    /// The leader's commit index: every slot below it is chosen.
    pub commit: Slot,
    /// Whether the leader's commits wait for the receiver's vote. False only to a spare it
    /// replicates lazily (`CoreConfig::spare_lag_ms`), which may then group its syncs.
    pub awaited: bool,
}

/// Decodes an accept's values without trusting the length it announces: smallvec's own decoder
/// reserves that length up front, so a short frame could ask for gigabytes. More than
/// `MAX_ENTRIES_PER_MESSAGE` is refused before anything is reserved; below it, the values grow
/// only as they actually decode.
fn deserialize_values<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<crate::types::Values, D::Error> {
    use crate::codec::MAX_ENTRIES_PER_MESSAGE;
    use serde::de::{Error, SeqAccess, Visitor};
    struct Bounded;
    impl<'de> Visitor<'de> for Bounded {
        type Value = crate::types::Values;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "at most {MAX_ENTRIES_PER_MESSAGE} values")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            if let Some(announced) = seq.size_hint().filter(|n| *n > MAX_ENTRIES_PER_MESSAGE) {
                return Err(A::Error::invalid_length(announced, &self));
            }
            let mut values = crate::types::Values::new();
            while let Some(value) = seq.next_element()? {
                if values.len() == MAX_ENTRIES_PER_MESSAGE {
                    return Err(A::Error::invalid_length(values.len() + 1, &self));
                }
                values.push(value);
            }
            Ok(values)
        }
    }
    deserializer.deserialize_seq(Bounded)
}

/// Phase 2b, cumulative.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// The ballot the acceptor accepted at.
    pub ballot: Ballot,
    /// Every slot below this is durably accepted at `ballot` or durably known chosen.
    pub upto: Slot,
    /// The highest heartbeat round of this ballot's leader the acceptor has seen (read-index
    /// confirmation: a majority echoing round `r` confirms leadership after `r` was sent).
    pub round: u64,
}

/// Why an acceptor refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    /// The acceptor has promised a higher ballot.
    Stale {
        /// The ballot it promised.
        promised: Ballot,
    },
    /// The accept started past the acceptor's horizon; resend from `horizon`.
    Gap {
        /// First slot the acceptor lacks in the current ballot.
        horizon: Slot,
    },
    /// The acceptor will not promise: it heard from a live leader within the election timeout.
    LeaderAlive {
        /// The leader it follows.
        leader: ReplicaId,
    },
}

/// A refusal of a prepare, accept or heartbeat at `ballot`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    /// The ballot that was refused.
    pub ballot: Ballot,
    /// Why.
    pub reason: Rejection,
}

/// Leader heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The leader's ballot.
    pub ballot: Ballot,
    /// The leader's commit index.
    pub commit: Slot,
    /// Heartbeat round, echoed back in `Accepted.round`.
    pub round: u64,
}

/// The leader hands over: the receiver starts an election at once, and others promise to it even
/// though they heard from the leader recently.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutNow {
    /// The handing-over leader's ballot.
    pub ballot: Ballot,
}

impl Message {
    /// The ballot the message speaks for.
    pub fn ballot(&self) -> Ballot {
        match self {
            Message::Prepare(m) => m.ballot,
            Message::Promise(m) => m.ballot,
            Message::Accept(m) => m.ballot,
            Message::Accepted(m) => m.ballot,
            Message::Reject(m) => m.ballot,
            Message::Heartbeat(m) => m.ballot,
            Message::Fetch(m) => m.ballot,
            Message::Chosen(m) => m.ballot,
            Message::Snapshot(m) => m.ballot,
            Message::SnapshotRequest(m) => m.ballot,
            Message::TimeoutNow(m) => m.ballot,
        }
    }

    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Prepare(_) => "prepare",
            Message::Promise(_) => "promise",
            Message::Accept(_) => "accept",
            Message::Accepted(_) => "accepted",
            Message::Reject(_) => "reject",
            Message::Heartbeat(_) => "heartbeat",
            Message::Fetch(_) => "fetch",
            Message::Chosen(_) => "chosen",
            Message::Snapshot(_) => "snapshot",
            Message::SnapshotRequest(_) => "snapshot-request",
            Message::TimeoutNow(_) => "timeout-now",
        }
    }
}

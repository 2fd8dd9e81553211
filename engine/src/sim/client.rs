//! Simulated clients: one outstanding operation each, a timeout that retries the same
//! (client, seq) at another replica, and redirects followed to the named leader.

use crate::kv::{KvOp, KvReply};
use bytes::Bytes;

/// How a read travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// Through the log like a write (and every write).
    Log,
    /// Linearizable read-index read at the leader.
    Index,
    /// Bounded-staleness read at any replica, at least as fresh as `min_slot`.
    Fast {
        /// The highest slot this client has seen.
        min_slot: u64,
    },
}

/// An operation waiting for its reply.
#[derive(Clone, Debug)]
pub struct InFlight {
    /// What was invoked.
    pub op: KvOp,
    /// When it was first invoked.
    pub call_us: u64,
    /// How it travels.
    pub mode: ReadMode,
}

/// A completed operation, for the linearizability check.
#[derive(Clone, Debug)]
pub struct Completed {
    /// Invocation time.
    pub call_us: u64,
    /// Response time.
    pub return_us: u64,
    /// What was invoked.
    pub op: KvOp,
    /// What came back.
    pub reply: KvReply,
}

/// One simulated client.
#[derive(Debug)]
pub struct SimClient {
    /// Sequence number of the current (or last) operation.
    pub seq: u64,
    /// The operation in flight.
    pub current: Option<InFlight>,
    /// The replica it sends to next.
    pub target: usize,
    /// Bumped on every send, so stale timers are ignored.
    pub generation: u64,
    /// Operations left once faults stop (`None` while faults run: unbounded).
    pub heal_ops_left: Option<usize>,
    /// No more operations to run.
    pub done: bool,
    /// Redirects followed in a row for the current operation (hints can be stale and circular).
    pub redirects_in_a_row: u32,
    /// Highest slot any reply reflected (writes: their slot + 1; reads: the slot served at).
    pub seen_slot: u64,
}

impl SimClient {
    /// A client that starts at replica `target`.
    pub fn new(target: usize) -> Self {
        SimClient {
            seq: 0,
            current: None,
            target,
            generation: 0,
            heal_ops_left: None,
            done: false,
            redirects_in_a_row: 0,
            seen_slot: 0,
        }
    }
}

/// Draws the next operation. Values are unique per (client, seq) so the checker can tell writes apart.
pub fn next_op(rng: &mut fastrand::Rng, client: usize, seq: u64, keys: usize, written: &[Bytes]) -> KvOp {
    let key = Bytes::from(format!("k{}", rng.usize(0..keys)));
    let value = Bytes::from(format!("c{client}s{seq}"));
    match rng.u32(0..10) {
        0..=3 => KvOp::Get { key },
        4..=6 => KvOp::Put { key, value },
        _ => {
            let expected = if written.is_empty() || rng.bool() {
                None
            } else {
                Some(written[rng.usize(0..written.len())].clone())
            };
            KvOp::Cas { key, expected, new: value }
        }
    }
}

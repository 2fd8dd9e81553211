//! The crate's error type: what happened, to which resource, and what to do about it.

use decree_engine::codec::CodecError;
use thiserror::Error;

/// Everything a transport can report.
#[derive(Debug, Error)]
pub enum VerbsError {
    /// A write would reach past the end of the peer's region; nothing was written.
    #[error("write of {len} bytes at offset {offset} exceeds the {region_len}-byte region of {peer}: the caller's log offset is wrong")]
    OutOfBounds {
        /// Peer whose region it is.
        peer: String,
        /// Requested start.
        offset: u64,
        /// Requested length.
        len: u64,
        /// Size of the region.
        region_len: u64,
    },
    /// The key does not name the peer's region (the region was re-registered, or the key is forged).
    #[error("key {given:#x} does not name the region of {peer} (its key is {expected:#x}): reconnect to learn the current key")]
    WrongKey {
        /// Peer whose region it is.
        peer: String,
        /// Key the write carried.
        given: u32,
        /// Key of the region.
        expected: u32,
    },
    /// This leader is fenced out: the follower granted its region to another leader.
    #[error("write refused by {peer}: leader token {token:#x} is fenced out (the follower granted its region to a newer leader)")]
    Fenced {
        /// Peer that refused.
        peer: String,
        /// The refused leader's token.
        token: u64,
    },
    /// The connection to the peer is gone; outstanding writes did not complete.
    #[error("peer {peer} disconnected: {reason}")]
    Disconnected {
        /// Peer.
        peer: String,
        /// What was observed.
        reason: String,
    },
    /// A write or handshake did not complete in time: the peer (or its NIC) is stalled or gone.
    #[error("{what} to {peer} did not complete within {timeout_ms} ms: the peer is stalled or unreachable")]
    Timeout {
        /// Peer.
        peer: String,
        /// The operation that timed out.
        what: String,
        /// The bound that ran out.
        timeout_ms: u64,
    },
    /// The peer leaves its control messages unread (queued sends: `Conn::queue`); the link is
    /// given up and redialled.
    #[error("peer {peer} does not read its control messages: {what}")]
    Stalled {
        /// Peer.
        peer: String,
        /// How far behind it is.
        what: String,
    },
    /// The peer sent bytes that are not a valid control frame; the connection is closed.
    #[error("garbage control frame from {peer}: {source}; the connection was closed")]
    BadFrame {
        /// Peer.
        peer: String,
        /// What the decoder found.
        #[source]
        source: CodecError,
    },
    /// The peer broke the transport's own protocol (bad hello, unknown message type).
    #[error("protocol violation by {peer}: {what}")]
    Protocol {
        /// Peer.
        peer: String,
        /// What was wrong.
        what: String,
    },
    /// Too many writes outstanding; poll completions before posting more.
    #[error("{what} is full ({capacity} outstanding): poll completions before posting more")]
    QueueFull {
        /// The queue.
        what: &'static str,
        /// Its bound.
        capacity: usize,
    },
    /// An operating-system call failed.
    #[error("{op} on {resource} failed: {source}{hint}")]
    Os {
        /// The call.
        op: &'static str,
        /// What it was applied to (path, address, device).
        resource: String,
        /// The error.
        #[source]
        source: std::io::Error,
        /// What to do, when known (empty otherwise).
        hint: &'static str,
    },
    /// Pinning memory for RDMA failed because the locked-memory limit is too low.
    #[error("registering {len} bytes on {device} failed: locked-memory limit (RLIMIT_MEMLOCK) too low; raise it (ulimit -l unlimited, or memlock in /etc/security/limits.conf)")]
    MemlockTooLow {
        /// Device.
        device: String,
        /// Bytes to pin.
        len: u64,
    },
    /// No RDMA device of that name (or none at all).
    #[error("no RDMA device '{name}' (found: {found}): load rdma_rxe and run tools/softroce/setup-rxe.sh, or use ci/guest/run-guest.sh")]
    NoDevice {
        /// Requested name.
        name: String,
        /// Devices present.
        found: String,
    },
    /// The other end of a side channel does not hold the cluster secret (or refused ours).
    #[error("{peer} failed the cluster-secret handshake: {reason}; the connection was refused")]
    Unauthenticated {
        /// The other end.
        peer: String,
        /// Why.
        reason: String,
    },
    /// A configuration value is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl VerbsError {
    /// Wraps the last OS error of `op` on `resource`.
    pub fn os(op: &'static str, resource: impl Into<String>, source: std::io::Error) -> VerbsError {
        VerbsError::Os {
            op,
            resource: resource.into(),
            source,
            hint: "",
        }
    }
}

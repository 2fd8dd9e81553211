//! A hook that proves both ends of a side channel (the rdma TCP channel, the shm control socket)
//! hold the cluster secret before anything else crosses it. The transport stays agnostic of how:
//! the replica server plugs in its challenge-response HMAC (`decree_tools::auth`).

use crate::VerbsError;
use std::io::{Read, Write};
use std::sync::Arc;

/// A byte stream a handshake runs over.
pub trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// Mutual authentication of a side channel; an error refuses the connection.
pub trait Handshake: Send + Sync {
    /// The dialling side (a leader connecting to a follower's region).
    fn connect(&self, stream: &mut dyn Stream) -> Result<(), String>;
    /// The accepting side (the follower owning the region).
    fn accept(&self, stream: &mut dyn Stream) -> Result<(), String>;
}

/// A handshake shared by every connection of an endpoint; `None` admits anyone who can connect
/// (tests and benchmarks on a private host).
#[derive(Clone, Default)]
pub struct Gate(pub Option<Arc<dyn Handshake>>);

impl Gate {
    /// Runs the dialling side toward `peer`, if gated.
    pub fn connect(&self, stream: &mut dyn Stream, peer: &str) -> Result<(), VerbsError> {
        self.0
            .as_ref()
            .map_or(Ok(()), |h| h.connect(stream))
            .map_err(|reason| refused(peer, reason))
    }

    /// Runs the accepting side for `peer`, if gated.
    pub fn accept(&self, stream: &mut dyn Stream, peer: &str) -> Result<(), VerbsError> {
        self.0
            .as_ref()
            .map_or(Ok(()), |h| h.accept(stream))
            .map_err(|reason| refused(peer, reason))
    }
}

fn refused(peer: &str, reason: String) -> VerbsError {
    VerbsError::Unauthenticated {
        peer: peer.to_string(),
        reason,
    }
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Gate(secret)"
        } else {
            "Gate(open)"
        })
    }
}

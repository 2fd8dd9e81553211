//! The transport seam: one-sided writes into a follower's region, completions, control messages.

use crate::{Durability, VerbsError};
use decree_engine::message::Envelope;

/// Identifies a leader to a follower's fence; derive it from the leader's ballot so a newer
/// leader has a different token. Zero means "nobody".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaderToken(pub u64);

impl LeaderToken {
    /// No leader: a region granted to `NONE` refuses every write.
    pub const NONE: LeaderToken = LeaderToken(0);
}

/// What a leader knows about a follower's region after connecting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteRegion {
    /// Key every write must carry (the RDMA rkey, or the shm/tcp region key).
    pub key: u32,
    /// Size of the region in bytes.
    pub len: u64,
}

/// Names one posted write in its completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WriteId(pub u64);

/// A one-sided write: `bytes` land at `offset` of the region named by `key`.
#[derive(Clone, Copy, Debug)]
pub struct Write<'a> {
    /// Region key (from [`RemoteRegion::key`]).
    pub key: u32,
    /// Byte offset in the follower's region.
    pub offset: u64,
    /// The bytes.
    pub bytes: &'a [u8],
    /// Immediate data delivered to the follower with the write (RDMA WRITE_WITH_IMM).
    pub imm: Option<u32>,
}

/// What a leader learns from polling a link.
#[derive(Debug)]
pub enum LeaderEvent {
    /// The write landed in the follower's memory. `durable` says whether that alone counts toward
    /// a quorum under the link's durability mode; otherwise wait for `Persisted`.
    Completed {
        /// The write.
        id: WriteId,
        /// Counts toward a quorum by itself.
        durable: bool,
    },
    /// The write did not land; the follower's region is untouched by it.
    Failed {
        /// The write.
        id: WriteId,
        /// Why.
        error: VerbsError,
    },
    /// The follower persisted every byte of its region below `upto`.
    Persisted {
        /// Exclusive end of the persisted prefix.
        upto: u64,
    },
    /// A control message from the follower.
    Message(Envelope),
}

/// What a follower learns from polling its endpoint.
#[derive(Debug)]
pub enum FollowerEvent {
    /// A write with immediate data landed (the bytes are in the region before this is seen).
    Imm {
        /// Writer.
        from: LeaderToken,
        /// The immediate.
        imm: u32,
    },
    /// Bytes landed (only transports that see writes pass by, i.e. tcp and sim, report this; on
    /// shm and rdma the follower polls the records' validity markers instead).
    Landed {
        /// Writer.
        from: LeaderToken,
        /// Start offset.
        offset: u64,
        /// Length.
        len: u64,
    },
    /// A control message.
    Message {
        /// Sender.
        from: LeaderToken,
        /// The message.
        envelope: Envelope,
    },
}

/// The leader's half of a connection to one follower.
pub trait LeaderLink {
    /// The follower's name, for logs and errors.
    fn peer(&self) -> &str;
    /// The follower's region as announced at connect.
    fn remote(&self) -> RemoteRegion;
    /// The remote durability mode in force on this link.
    fn durability(&self) -> Durability;
    /// Posts a one-sided write; bounds and key are checked before anything is sent.
    fn post_write(&mut self, write: &Write<'_>) -> Result<WriteId, VerbsError>;
    /// Posts several writes; transports that can (tcp) put them on the wire together. Stops at
    /// the first refused write: the ids of those posted before it come back with the error.
    fn post_batch(
        &mut self,
        writes: &[Write<'_>],
        ids: &mut Vec<WriteId>,
    ) -> Result<(), VerbsError> {
        for w in writes {
            ids.push(self.post_write(w)?);
        }
        Ok(())
    }
    /// Sends one control message. Transports polled from one thread (shm, rdma) never block
    /// here: what the socket does not take at once waits, and `poll` writes more of it.
    fn send(&mut self, envelope: &Envelope) -> Result<(), VerbsError>;
    /// Appends what happened since the last poll to `out`; never blocks.
    fn poll(&mut self, out: &mut Vec<LeaderEvent>) -> Result<(), VerbsError>;
    /// Control-message bytes `send` accepted that the peer's socket has not taken yet (the
    /// polling thread should come back soon, not sleep, while any wait).
    fn queued_bytes(&self) -> usize {
        0
    }
}

/// The follower's endpoint: its registered region and the leaders connected to it.
pub trait FollowerLink {
    /// The region's key and size.
    fn local(&self) -> RemoteRegion;
    /// Copies bytes out of the local region.
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), VerbsError>;
    /// Fencing: from return on, only `leader`'s writes land; every other leader's are refused.
    fn grant(&mut self, leader: LeaderToken) -> Result<(), VerbsError>;
    /// The leader currently granted.
    fn granted(&self) -> LeaderToken;
    /// Sends one control message to a connected leader.
    fn send(&mut self, to: LeaderToken, envelope: &Envelope) -> Result<(), VerbsError>;
    /// Tells `to` that every byte below `upto` is persisted here.
    fn ack_persisted(&mut self, to: LeaderToken, upto: u64) -> Result<(), VerbsError>;
    /// Appends what happened since the last poll to `out`; never blocks.
    fn poll(&mut self, out: &mut Vec<FollowerEvent>) -> Result<(), VerbsError>;
    /// For endpoints that can sleep (shm): the wake sequence to read *before* polling for work,
    /// then hand to `sleep`. None: this endpoint cannot sleep, poll it.
    fn wake_seq(&self) -> Option<u32> {
        None
    }
    /// Sleeps until a peer or a [`Wake`] handle gives this endpoint work, or `timeout`; returns
    /// at once if the sequence moved past `seq` (work arrived since it was read).
    fn sleep(&self, _seq: u32, _timeout: std::time::Duration) {}
    /// A handle another thread of this process uses to interrupt `sleep` (it has queued work for
    /// the thread that polls this endpoint).
    fn waker(&self) -> Option<std::sync::Arc<dyn Wake>> {
        None
    }
}

/// Interrupts a follower endpoint's `sleep`.
pub trait Wake: Send + Sync {
    /// Wakes the sleeper (cheap when it is awake).
    fn wake(&self);
}

/// Refuses a range that does not fit in a region of `region_len` bytes.
pub fn check_bounds(
    peer: &str,
    offset: u64,
    len: usize,
    region_len: u64,
) -> Result<(), VerbsError> {
    let fits = offset
        .checked_add(len as u64)
        .is_some_and(|end| end <= region_len);
    if fits {
        Ok(())
    } else {
        Err(VerbsError::OutOfBounds {
            peer: peer.to_string(),
            offset,
            len: len as u64,
            region_len,
        })
    }
}

/// Refuses a write whose key is not the region's.
pub fn check_key(peer: &str, given: u32, expected: u32) -> Result<(), VerbsError> {
    if given == expected {
        Ok(())
    } else {
        Err(VerbsError::WrongKey {
            peer: peer.to_string(),
            given,
            expected,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_refuse_overflow_and_past_end() {
        assert!(check_bounds("p", 0, 10, 10).is_ok());
        assert!(matches!(
            check_bounds("p", 1, 10, 10),
            Err(VerbsError::OutOfBounds { offset: 1, .. })
        ));
        assert!(check_bounds("p", u64::MAX, 2, 10).is_err());
        assert!(matches!(
            check_key("p", 1, 2),
            Err(VerbsError::WrongKey {
                given: 1,
                expected: 2,
                ..
            })
        ));
    }
}

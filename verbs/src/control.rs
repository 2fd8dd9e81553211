//! Control messages on a connection: the engine's framed `Envelope`s, plus the transport's own
//! message tags.

use crate::VerbsError;
use decree_engine::codec::{decode_frame, encode_frame};
use decree_engine::message::Envelope;

/// Leader -> follower, first message: leader token u64.
pub const TAG_HELLO: u8 = 1;
/// Follower -> leader reply: region key u32, region len u64 (+ transport-specific fields).
pub const TAG_WELCOME: u8 = 2;
/// Leader -> follower (tcp): write id u64, key u32, offset u64, has_imm u8, imm u32, bytes.
pub const TAG_WRITE: u8 = 3;
/// Follower -> leader (tcp): write id u64 landed.
pub const TAG_COMPLETE: u8 = 4;
/// Follower -> leader (tcp): write id u64 refused, reason u8 (see `NACK_*`), detail u64.
pub const TAG_NACK: u8 = 5;
/// Follower -> leader: persisted prefix end u64.
pub const TAG_PERSISTED: u8 = 6;
/// Either way: one engine frame.
pub const TAG_CONTROL: u8 = 7;
/// Follower -> leader (rdma), no body: the follower's polling thread adopted this connection, so
/// its queue pair now has the access the follower's fence gives its leader. Until it arrives the
/// leader posts no one-sided write (it would meet a QP with no access and break it).
pub const TAG_ADOPTED: u8 = 8;

/// A control message body held without its receive buffer growing.
pub const CONTROL_BYTES_EXPECTED: usize = 4096;

/// Nack reason: the writer is fenced out.
pub const NACK_FENCED: u8 = 1;
/// Nack reason: the write reaches past the region.
pub const NACK_OUT_OF_BOUNDS: u8 = 2;
/// Nack reason: the key does not name the region.
pub const NACK_WRONG_KEY: u8 = 3;

/// Frames an envelope as a control message body.
pub fn encode_control(envelope: &Envelope) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(envelope, &mut out);
    out
}

/// Decodes a control message body: exactly one valid engine frame.
pub fn decode_control(peer: &str, body: &[u8]) -> Result<Envelope, VerbsError> {
    let (envelope, used) = decode_frame(body).map_err(|source| VerbsError::BadFrame {
        peer: peer.to_string(),
        source,
    })?;
    if used != body.len() {
        return Err(VerbsError::Protocol {
            peer: peer.to_string(),
            what: format!("{} bytes after the control frame", body.len() - used),
        });
    }
    Ok(envelope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use decree_engine::message::{Heartbeat, Message};
    use decree_engine::types::{Ballot, ReplicaId};
    use proptest::prelude::*;

    fn hb() -> Envelope {
        Envelope {
            from: ReplicaId(1),
            to: ReplicaId(2),
            msg: Message::Heartbeat(Heartbeat {
                ballot: Ballot::default(),
                commit: 9,
                round: 4,
            }),
        }
    }

    #[test]
    fn round_trip_and_trailing_bytes_refused() {
        let mut body = encode_control(&hb());
        assert_eq!(decode_control("p", &body).unwrap(), hb());
        body.push(0);
        assert!(matches!(
            decode_control("p", &body),
            Err(VerbsError::Protocol { .. })
        ));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_control("p", &bytes);
        }

        #[test]
        fn flipped_byte_is_refused(at in 0usize..1000, bit in 0u8..8) {
            let mut body = encode_control(&hb());
            let i = at % body.len();
            prop_assume!(!(6..8).contains(&i)); // the frame header's reserved bytes are not checked
            body[i] ^= 1 << bit;
            prop_assert!(decode_control("p", &body).is_err());
        }
    }
}

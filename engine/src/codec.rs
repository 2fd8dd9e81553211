//! Wire framing for replica messages: a fixed header (magic, version, length, crc32c) in front of a
//! postcard-encoded `Envelope`. Every decoder of outside bytes returns an error, never panics, and
//! never allocates more than the frame it was given.

use crate::message::{Envelope, Message};
use thiserror::Error;

/// First bytes of every frame: "DCRE".
pub const FRAME_MAGIC: u32 = 0x4443_5245;
/// Wire format version this build speaks. 2: a batch travels as its requests' encoding in one byte
/// string (`crate::batch`). 3: an accept says whether the leader waits for the receiver's vote.
pub const FRAME_VERSION: u16 = 3;
/// Header: magic u32, version u16, reserved u16, payload length u32, crc32c u32.
pub const FRAME_HEADER_BYTES: usize = 16;
/// Largest payload accepted; bigger frames are refused before any allocation.
pub const MAX_FRAME_PAYLOAD_BYTES: usize = 64 << 20;
/// Most values one accept, or entries one promise, may carry.
pub const MAX_ENTRIES_PER_MESSAGE: usize = 1 << 16;

/// What was wrong with a frame.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CodecError {
    /// Fewer bytes than the header or the announced payload.
    #[error("frame truncated: need {needed} bytes, have {have}")]
    Truncated {
        /// Bytes the frame needs.
        needed: usize,
        /// Bytes present.
        have: usize,
    },
    /// Not a decree frame at all.
    #[error("bad frame magic {0:#010x}: peer is not speaking decree's replica protocol")]
    BadMagic(u32),
    /// A version this build does not speak.
    #[error("unsupported frame version {0} (this build speaks {FRAME_VERSION})")]
    UnsupportedVersion(u16),
    /// Payload larger than the limit.
    #[error("frame payload of {0} bytes exceeds the {MAX_FRAME_PAYLOAD_BYTES}-byte limit")]
    Oversize(usize),
    /// The checksum does not match: corrupted in flight or in memory.
    #[error("frame checksum mismatch: header says {expected:#010x}, payload hashes to {actual:#010x}")]
    BadChecksum {
        /// Checksum in the header.
        expected: u32,
        /// Checksum of the payload received.
        actual: u32,
    },
    /// The payload is not a valid envelope.
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// The envelope decoded but breaks a structural rule.
    #[error("invalid message: {0}")]
    Invalid(&'static str),
}

/// Appends one framed envelope to `out`.
pub fn encode_frame(envelope: &Envelope, out: &mut Vec<u8>) {
    let header_at = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    let payload = postcard::to_extend(envelope, std::mem::take(out)).expect("encoding into a Vec cannot fail");
    *out = payload;
    let payload_len = out.len() - header_at - FRAME_HEADER_BYTES;
    assert!(payload_len <= MAX_FRAME_PAYLOAD_BYTES, "contract: encoded frame exceeds MAX_FRAME_PAYLOAD_BYTES");
    let crc = crc32c::crc32c(&out[header_at + FRAME_HEADER_BYTES..]);
    let header = &mut out[header_at..header_at + FRAME_HEADER_BYTES];
    header[0..4].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
    header[4..6].copy_from_slice(&FRAME_VERSION.to_le_bytes());
    header[8..12].copy_from_slice(&(payload_len as u32).to_le_bytes());
    header[12..16].copy_from_slice(&crc.to_le_bytes());
}

/// Reads the header at the start of `bytes` and returns the whole frame's length, so a stream
/// reader knows how much to wait for. Validates magic, version and size.
pub fn frame_len(bytes: &[u8]) -> Result<usize, CodecError> {
    if bytes.len() < FRAME_HEADER_BYTES {
        return Err(CodecError::Truncated { needed: FRAME_HEADER_BYTES, have: bytes.len() });
    }
    let magic = u32::from_le_bytes(bytes[0..4].try_into().unwrap());
    if magic != FRAME_MAGIC {
        return Err(CodecError::BadMagic(magic));
    }
    let version = u16::from_le_bytes(bytes[4..6].try_into().unwrap());
    if version != FRAME_VERSION {
        return Err(CodecError::UnsupportedVersion(version));
    }
    let payload_len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    if payload_len > MAX_FRAME_PAYLOAD_BYTES {
        return Err(CodecError::Oversize(payload_len));
    }
    Ok(FRAME_HEADER_BYTES + payload_len)
}

/// Decodes one frame from the start of `bytes`; returns the envelope and the bytes consumed.
pub fn decode_frame(bytes: &[u8]) -> Result<(Envelope, usize), CodecError> {
    let total = frame_len(bytes)?;
    if bytes.len() < total {
        return Err(CodecError::Truncated { needed: total, have: bytes.len() });
    }
    let expected = u32::from_le_bytes(bytes[12..16].try_into().unwrap());
    let payload = &bytes[FRAME_HEADER_BYTES..total];
    let actual = crc32c::crc32c(payload);
    if expected != actual {
        return Err(CodecError::BadChecksum { expected, actual });
    }
    let (envelope, rest): (Envelope, &[u8]) =
        postcard::take_from_bytes(payload).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CodecError::Malformed(format!("{} trailing bytes after the envelope", rest.len())));
    }
    validate(&envelope.msg)?;
    Ok((envelope, total))
}

/// Structural rules a decoded message must satisfy before the core sees it.
pub fn validate(msg: &Message) -> Result<(), CodecError> {
    match msg {
        Message::Promise(p) => {
            if p.entries.len() > MAX_ENTRIES_PER_MESSAGE {
                return Err(CodecError::Invalid("promise carries too many entries"));
            }
            if p.entries.windows(2).any(|w| w[0].slot >= w[1].slot) {
                return Err(CodecError::Invalid("promise entries are not strictly ascending by slot"));
            }
            if p.entries.iter().any(|e| e.ballot > p.ballot) {
                return Err(CodecError::Invalid("promise reports an entry above the promised ballot"));
            }
            validate_values(p.entries.iter().map(|e| &e.value))?;
        }
        Message::Accept(a) => {
            // Its value count was bounded while decoding (`message::deserialize_values`), before
            // anything was reserved.
            if a.start.checked_add(a.values.len() as u64).is_none() {
                return Err(CodecError::Invalid("accept slot range overflows"));
            }
            validate_values(a.values.iter())?;
        }
        Message::Chosen(c) => {
            if c.entries.len() > MAX_ENTRIES_PER_MESSAGE {
                return Err(CodecError::Invalid("chosen carries too many entries"));
            }
            let consecutive = c.entries.iter().enumerate().all(|(i, e)| Some(e.slot) == c.start.checked_add(i as u64));
            if !consecutive {
                return Err(CodecError::Invalid("chosen entries are not consecutive from start"));
            }
            if c.start.saturating_add(c.entries.len() as u64) > c.commit {
                return Err(CodecError::Invalid("chosen entries reach past the sender's commit"));
            }
            validate_values(c.entries.iter().map(|e| &e.value))?;
        }
        Message::Snapshot(s) => {
            let end = s.offset.checked_add(s.data.len() as u64);
            if end.is_none_or(|end| end > s.total_bytes) {
                return Err(CodecError::Invalid("snapshot chunk reaches past the checkpoint's size"));
            }
            s.membership.validate().map_err(|_| CodecError::Invalid("malformed configuration in a snapshot"))?;
        }
        Message::Prepare(_)
        | Message::Accepted(_)
        | Message::Reject(_)
        | Message::Heartbeat(_)
        | Message::Fetch(_)
        | Message::SnapshotRequest(_)
        | Message::TimeoutNow(_) => {}
    }
    Ok(())
}

fn validate_values<'a>(values: impl Iterator<Item = &'a crate::types::Value>) -> Result<(), CodecError> {
    for value in values {
        if let crate::types::Value::Reconfig(membership) = value {
            membership.validate().map_err(|_| CodecError::Invalid("malformed configuration in a reconfig value"))?;
        }
    }
    Ok(())
}

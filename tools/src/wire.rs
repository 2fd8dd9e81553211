//! The client protocol: length-prefixed, versioned, checksummed frames around postcard messages.
//!
//! Header (16 bytes, little-endian): magic "DCLI" u32, version u16, reserved u16, payload length
//! u32, crc32c of the payload u32. Payloads above `MAX_CLIENT_PAYLOAD_BYTES` are refused before any
//! allocation. Every decoder returns an error, never panics.

use bytes::Bytes;
use decree_engine::runtime::MembershipChange;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use thiserror::Error;

/// "DCLI".
pub const CLIENT_MAGIC: u32 = 0x4443_4c49;
/// Client protocol version this build speaks.
pub const CLIENT_VERSION: u16 = 1;
/// Header size.
pub const CLIENT_HEADER_BYTES: usize = 16;
/// Largest payload accepted either way.
pub const MAX_CLIENT_PAYLOAD_BYTES: usize = 1 << 20;

/// What a client sends. `Op` is how operation bytes are held: owned `Bytes`, or `&[u8]` borrowed
/// from the received frame while a server decodes it (both encode alike).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientFrame<Op = Bytes> {
    /// Execute `op` once for (client, seq).
    Request {
        /// Echoed in the answer.
        request_id: u64,
        /// Session id (random per client instance).
        client: u64,
        /// Per-session sequence number; retries reuse it.
        seq: u64,
        /// State machine operation bytes.
        op: Op,
    },
    /// Ask for the replica's status.
    Status {
        /// Echoed in the answer.
        request_id: u64,
    },
    /// Ask the leader to hand leadership to replica `to` (None: the most caught-up voter).
    TransferLeadership {
        /// Echoed in the answer.
        request_id: u64,
        /// Target replica id.
        to: Option<u32>,
    },
    /// Ask the leader to edit the configuration; answered by `ServerFrame::Admin` with the slot.
    ChangeMembership {
        /// Echoed in the answer.
        request_id: u64,
        /// The edit.
        change: MembershipChange,
    },
    /// Ask this replica to checkpoint now; answered by `ServerFrame::Admin` with the slot.
    Checkpoint {
        /// Echoed in the answer.
        request_id: u64,
    },
    /// A read-only `op` served by this replica (any role) once it has applied `min_slot` slots:
    /// bounded staleness, no round trip to the leader.
    StaleRead {
        /// Echoed in the answer.
        request_id: u64,
        /// Session id.
        client: u64,
        /// Per-session sequence number.
        seq: u64,
        /// Read-only state machine operation bytes.
        op: Op,
        /// Slots that must be applied here before it is served.
        min_slot: u64,
    },
}

impl<Op> ClientFrame<Op> {
    /// The same frame with its op bytes held as `f` makes them.
    pub fn map_op<Into>(self, f: impl FnOnce(Op) -> Into) -> ClientFrame<Into> {
        match self {
            ClientFrame::Request { request_id, client, seq, op } => {
                ClientFrame::Request { request_id, client, seq, op: f(op) }
            }
            ClientFrame::StaleRead { request_id, client, seq, op, min_slot } => {
                ClientFrame::StaleRead { request_id, client, seq, op: f(op), min_slot }
            }
            ClientFrame::Status { request_id } => ClientFrame::Status { request_id },
            ClientFrame::TransferLeadership { request_id, to } => ClientFrame::TransferLeadership { request_id, to },
            ClientFrame::ChangeMembership { request_id, change } => {
                ClientFrame::ChangeMembership { request_id, change }
            }
            ClientFrame::Checkpoint { request_id } => ClientFrame::Checkpoint { request_id },
        }
    }
}

/// Why the server refused a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// Bad magic, checksum or encoding.
    Malformed,
    /// Payload above the limit.
    Oversize,
    /// A protocol version the server does not speak.
    UnsupportedVersion,
}

/// A replica's status, as sent to clients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusView {
    /// Replica id.
    pub id: u32,
    /// Whether it leads.
    pub leading: bool,
    /// The leader it believes in.
    pub leader: Option<u32>,
    /// Promised ballot, as "round.leader".
    pub ballot: String,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// End of its log.
    pub log_end: u64,
    /// Requests executed.
    pub executed: u64,
    /// Log bytes.
    pub log_bytes: u64,
    /// Voters of the configuration in force here.
    pub voters: Vec<u32>,
    /// Learners of the configuration in force here.
    pub learners: Vec<u32>,
}

/// What a replica sends. `Payload` holds a reply's bytes: owned `Bytes`, or `&[u8]` borrowed from
/// the received frame while a load generator reads it (both encode alike).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerFrame<Payload = Bytes> {
    /// The request's result.
    Reply {
        /// The request's id.
        request_id: u64,
        /// Its seq.
        seq: u64,
        /// State machine reply bytes.
        payload: Payload,
    },
    /// Not the leader: go to `leader_addr` (if known).
    Redirect {
        /// The request's id.
        request_id: u64,
        /// Leader id, if known.
        leader: Option<u32>,
        /// Leader's client address, if known.
        leader_addr: Option<String>,
    },
    /// Overloaded: retry after a back-off.
    Busy {
        /// The request's id.
        request_id: u64,
    },
    /// Status answer.
    Status {
        /// The request's id.
        request_id: u64,
        /// The status.
        status: StatusView,
    },
    /// Answer to an administrative request.
    Admin {
        /// The request's id.
        request_id: u64,
        /// Whether it was accepted.
        ok: bool,
        /// What happened.
        detail: String,
        /// When refused by a non-leader: the leader's client address, if known.
        leader_addr: Option<String>,
        /// The slot it concerns (proposed configuration change, checkpoint), if any.
        slot: Option<u64>,
    },
    /// The last frame was refused; the server closes the connection after this.
    Error {
        /// Category.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
    },
}

/// A frame that could not be read.
#[derive(Debug, Error)]
pub enum WireError {
    /// The socket failed or closed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// Not a decree client frame.
    #[error("bad magic {0:#010x}: peer is not speaking decree's client protocol")]
    BadMagic(u32),
    /// Unknown version.
    #[error("unsupported client protocol version {0} (this build speaks {CLIENT_VERSION})")]
    UnsupportedVersion(u16),
    /// Too large.
    #[error("frame payload of {0} bytes exceeds the {MAX_CLIENT_PAYLOAD_BYTES}-byte limit")]
    Oversize(usize),
    /// Checksum mismatch.
    #[error("frame checksum mismatch")]
    BadChecksum,
    /// The payload did not decode.
    #[error("malformed payload: {0}")]
    Malformed(String),
}

impl WireError {
    /// The error code to send back for a refused frame (None: the socket itself failed).
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            WireError::Io(_) => None,
            WireError::UnsupportedVersion(_) => Some(ErrorCode::UnsupportedVersion),
            WireError::Oversize(_) => Some(ErrorCode::Oversize),
            WireError::BadMagic(_) | WireError::BadChecksum | WireError::Malformed(_) => Some(ErrorCode::Malformed),
        }
    }
}

/// Appends one framed message to `out`; the caller guarantees it fits the payload limit.
pub fn encode<T: Serialize>(message: &T, out: &mut Vec<u8>) {
    try_encode(message, out).expect("contract: client frame exceeds MAX_CLIENT_PAYLOAD_BYTES");
}

/// Appends one framed message to `out`, or leaves `out` as it was and returns `Oversize` when
/// the payload exceeds `MAX_CLIENT_PAYLOAD_BYTES` (a server's reply can, by a few bytes of ids,
/// even when the request that stored the value fit).
pub fn try_encode<T: Serialize>(message: &T, out: &mut Vec<u8>) -> Result<(), WireError> {
    let at = out.len();
    out.extend_from_slice(&[0u8; CLIENT_HEADER_BYTES]);
    let mut buf = postcard::to_extend(message, std::mem::take(out)).expect("encoding into a Vec cannot fail");
    let len = buf.len() - at - CLIENT_HEADER_BYTES;
    if len > MAX_CLIENT_PAYLOAD_BYTES {
        buf.truncate(at);
        *out = buf;
        return Err(WireError::Oversize(len));
    }
    let crc = crc32c::crc32c(&buf[at + CLIENT_HEADER_BYTES..]);
    let header = &mut buf[at..at + CLIENT_HEADER_BYTES];
    header[0..4].copy_from_slice(&CLIENT_MAGIC.to_le_bytes());
    header[4..6].copy_from_slice(&CLIENT_VERSION.to_le_bytes());
    header[8..12].copy_from_slice(&(len as u32).to_le_bytes());
    header[12..16].copy_from_slice(&crc.to_le_bytes());
    *out = buf;
    Ok(())
}

/// Writes one framed message.
pub fn write_frame<T: Serialize>(writer: &mut impl Write, message: &T) -> std::io::Result<()> {
    let mut out = Vec::new();
    encode(message, &mut out);
    writer.write_all(&out)
}

/// Checks a frame header; returns the payload length (within the limit) and its crc32c.
pub fn decode_header(header: &[u8; CLIENT_HEADER_BYTES]) -> Result<(usize, u32), WireError> {
    let magic = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    if magic != CLIENT_MAGIC {
        return Err(WireError::BadMagic(magic));
    }
    let version = u16::from_le_bytes(header[4..6].try_into().expect("2 bytes"));
    if version != CLIENT_VERSION {
        return Err(WireError::UnsupportedVersion(version));
    }
    let len = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes")) as usize;
    if len > MAX_CLIENT_PAYLOAD_BYTES {
        return Err(WireError::Oversize(len));
    }
    Ok((len, u32::from_le_bytes(header[12..16].try_into().expect("4 bytes"))))
}

/// Checks a payload against the header's crc32c and decodes it (`T` may borrow from `payload`).
pub fn decode_payload<'a, T: Deserialize<'a>>(payload: &'a [u8], crc: u32) -> Result<T, WireError> {
    if crc32c::crc32c(payload) != crc {
        return Err(WireError::BadChecksum);
    }
    postcard::from_bytes(payload).map_err(|e| WireError::Malformed(e.to_string()))
}

/// Reads one framed message, reusing `buf` for the payload.
pub fn read_frame<T: DeserializeOwned>(reader: &mut impl Read, buf: &mut Vec<u8>) -> Result<T, WireError> {
    let crc = read_payload(reader, buf)?;
    decode_payload(buf, crc)
}

/// Reads one frame's payload into `buf` (its header checked) and returns the header's crc32c
/// for `decode_payload`, which may then borrow from `buf` (no allocation for a frame whose byte
/// strings are `&[u8]`).
pub fn read_payload(reader: &mut impl Read, buf: &mut Vec<u8>) -> Result<u32, WireError> {
    let mut header = [0u8; CLIENT_HEADER_BYTES];
    reader.read_exact(&mut header)?;
    let (len, crc) = decode_header(&header)?;
    buf.clear();
    buf.resize(len, 0);
    reader.read_exact(buf)?;
    Ok(crc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(frame: &ClientFrame) -> Result<ClientFrame, WireError> {
        let mut out = Vec::new();
        encode(frame, &mut out);
        read_frame(&mut out.as_slice(), &mut Vec::new())
    }

    #[test]
    fn borrowed_frames_encode_and_decode_as_owned_ones_do() {
        let owned = ServerFrame::Reply { request_id: 5, seq: 2, payload: Bytes::from_static(b"reply") };
        let borrowed = ServerFrame::Reply { request_id: 5, seq: 2, payload: &b"reply"[..] };
        let (mut from_owned, mut from_borrowed) = (Vec::new(), Vec::new());
        encode(&owned, &mut from_owned);
        encode(&borrowed, &mut from_borrowed);
        assert_eq!(from_owned, from_borrowed);
        let mut buf = Vec::new();
        let crc = read_payload(&mut from_owned.as_slice(), &mut buf).unwrap();
        let read: ServerFrame<&[u8]> = decode_payload(&buf, crc).unwrap();
        assert_eq!(read, borrowed);
        let request = ClientFrame::Request { request_id: 1, client: 2, seq: 3, op: &b"op"[..] };
        let mut out = Vec::new();
        encode(&request, &mut out);
        let read: ClientFrame = read_frame(&mut out.as_slice(), &mut buf).unwrap();
        assert_eq!(read, request.map_op(Bytes::copy_from_slice));
    }

    #[test]
    fn frames_roundtrip_and_damage_is_named() {
        let frame = ClientFrame::Request { request_id: 7, client: 9, seq: 3, op: Bytes::from_static(b"op") };
        assert_eq!(roundtrip(&frame).unwrap(), frame);
        let mut out = Vec::new();
        encode(&frame, &mut out);
        let mut flipped = out.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(
            read_frame::<ClientFrame>(&mut flipped.as_slice(), &mut Vec::new()),
            Err(WireError::BadChecksum)
        ));
        let mut versioned = out.clone();
        versioned[4] = 9;
        assert!(matches!(
            read_frame::<ClientFrame>(&mut versioned.as_slice(), &mut Vec::new()),
            Err(WireError::UnsupportedVersion(9))
        ));
        let mut huge = out;
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            read_frame::<ClientFrame>(&mut huge.as_slice(), &mut Vec::new()),
            Err(WireError::Oversize(_))
        ));
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Bytes from the network never panic the decoder, and it never reads past a refused header.
        #[test]
        fn arbitrary_bytes_decode_to_an_error_or_a_frame(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = read_frame::<ClientFrame>(&mut bytes.as_slice(), &mut Vec::new());
        }

        /// Every request frame round-trips, and any single flipped payload bit is caught.
        #[test]
        fn requests_roundtrip_and_bit_flips_are_refused(request_id: u64, client: u64, seq: u64, op in proptest::collection::vec(any::<u8>(), 0..512), flip in any::<prop::sample::Index>()) {
            let frame = ClientFrame::Request { request_id, client, seq, op: Bytes::from(op) };
            let mut out = Vec::new();
            encode(&frame, &mut out);
            prop_assert_eq!(read_frame::<ClientFrame>(&mut out.as_slice(), &mut Vec::new()).unwrap(), frame.clone());
            // The server's borrowing decode reads the same frame.
            let (_, crc) = decode_header(out[..CLIENT_HEADER_BYTES].try_into().unwrap()).unwrap();
            let borrowed = decode_payload::<ClientFrame<&[u8]>>(&out[CLIENT_HEADER_BYTES..], crc).unwrap();
            prop_assert_eq!(borrowed.map_op(Bytes::copy_from_slice), frame);
            let at = CLIENT_HEADER_BYTES + flip.index(out.len() - CLIENT_HEADER_BYTES);
            out[at] ^= 1;
            prop_assert!(read_frame::<ClientFrame>(&mut out.as_slice(), &mut Vec::new()).is_err());
        }
    }
}

//! The on-media record: the unit the log appends, recovery replays, and the RDMA transport copies
//! into a follower's registered region.
//!
//! Layout (little-endian, 56-byte header, payload padded to 8 bytes so every record starts aligned):
//!
//! ```text
//!  0..4   crc32c      over (log_id as 8 LE bytes) ++ header[4..56] ++ payload
//!  4..8   payload_len bytes of payload that follow the header (padding excluded)
//!  8      kind        Kind as u8
//!  9      version     RECORD_VERSION
//! 10..12  reserved    zero
//! 12..16  ballot.leader
//! 16..24  lsn         logical byte position of this record in the log stream
//! 24..32  slot
//! 32..40  ballot.round
//! 40..48  durable_lsn every record before this position was durable when this one was written
//! 48..52  epoch       incarnation of the writer (bumped durably at every open)
//! 52..56  reserved    zero
//! ```
//!
//! Validity marker: a reader (recovery, or a follower polling its RDMA-written region) accepts a
//! record only when the checksum over the whole record matches and `lsn` equals the position it
//! expected. A partially landed record fails the checksum (false accept 2^-32 per check); zeroed
//! memory never validates (its checksum is not zero); a stale record from an earlier lap of the
//! ring or an earlier format of the medium carries another `lsn` or `log_id` and is rejected.
//! `durable_lsn` lets recovery tell a torn tail from corruption of acknowledged data. `epoch`
//! stops a torn, never-persisted record of a crashed incarnation from being "completed" by the
//! identical words of a later torn write at the same position (records of one slot at one position
//! share most words): past the position where the current incarnation started, only its own epoch
//! is accepted.

use decree_engine::types::{Ballot, Slot};

/// Bytes in a record header.
pub const HEADER_SIZE_BYTES: usize = 56;
/// Record format version written into every header.
pub const RECORD_VERSION: u8 = 1;
/// Records are padded to this alignment.
pub const ALIGN_BYTES: usize = 8;
/// Largest payload a record may carry; a larger length field is treated as garbage.
pub const MAX_PAYLOAD_BYTES: usize = 64 << 20;

/// What a record means to the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// An accepted value for `slot` at `ballot`; a later Entry for the same slot supersedes it.
    Entry = 1,
    /// The acceptor promised `ballot`.
    Promise = 2,
    /// Every slot below `slot` is chosen.
    Commit = 3,
    /// Forget entries at `slot` and above that were appended before this record.
    TruncateSuffix = 4,
    /// Forget entries below `slot` (a checkpoint covers them).
    DiscardPrefix = 5,
    /// Filler to the end of the ring; the next record starts at the next lap.
    Pad = 6,
}

impl Kind {
    /// The kind encoded as `byte`, if any.
    pub fn from_u8(byte: u8) -> Option<Kind> {
        Some(match byte {
            1 => Kind::Entry,
            2 => Kind::Promise,
            3 => Kind::Commit,
            4 => Kind::TruncateSuffix,
            5 => Kind::DiscardPrefix,
            6 => Kind::Pad,
            _ => return None,
        })
    }
}

/// The decoded fixed part of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// What the record means.
    pub kind: Kind,
    /// Logical position of the record in the log stream.
    pub lsn: u64,
    /// Slot the record is about (0 where the kind has none).
    pub slot: Slot,
    /// Ballot the record carries (ZERO where the kind has none).
    pub ballot: Ballot,
    /// Bytes of payload after the header.
    pub payload_len: u32,
    /// Everything before this position was durable when the record was written.
    pub durable_lsn: u64,
    /// Incarnation of the writer.
    pub epoch: u32,
}

impl Header {
    /// Total bytes the record occupies on the medium, padding included.
    pub fn encoded_size_bytes(&self) -> usize {
        encoded_size_bytes(self.payload_len as usize)
    }
}

/// Total bytes a record with `payload_len` bytes of payload occupies, padding included.
pub fn encoded_size_bytes(payload_len: usize) -> usize {
    HEADER_SIZE_BYTES + payload_len.div_ceil(ALIGN_BYTES) * ALIGN_BYTES
}

/// Why bytes are not a valid record at the expected position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// The length field is larger than any record may be.
    Length,
    /// The record claims another position (stale lap, or garbage).
    Position,
    /// The checksum does not match (torn or corrupted).
    Checksum,
    /// Checksum matched but the kind byte is unknown.
    Kind,
    /// Checksum matched but the format version is not ours.
    Version,
}

/// Result of decoding the bytes at one position.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A complete, checksummed record and its payload.
    Valid(Header, &'a [u8]),
    /// Fewer bytes than the header or the header's length asks for.
    Incomplete,
    /// Not a record written at this position.
    Invalid(Invalid),
}

/// Appends the encoding of one record to `out` (header, payload, zero padding).
pub fn encode_into(out: &mut Vec<u8>, log_id: u64, header: &Header, payload: &[u8]) {
    assert_eq!(header.payload_len as usize, payload.len(), "record: payload_len matches payload");
    assert!(payload.len() <= MAX_PAYLOAD_BYTES, "record: payload within MAX_PAYLOAD_BYTES");
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]); // crc, filled below
    out.extend_from_slice(&header.payload_len.to_le_bytes());
    out.push(header.kind as u8);
    out.push(RECORD_VERSION);
    out.extend_from_slice(&[0u8; 2]);
    out.extend_from_slice(&header.ballot.leader.to_le_bytes());
    out.extend_from_slice(&header.lsn.to_le_bytes());
    out.extend_from_slice(&header.slot.to_le_bytes());
    out.extend_from_slice(&header.ballot.round.to_le_bytes());
    out.extend_from_slice(&header.durable_lsn.to_le_bytes());
    out.extend_from_slice(&header.epoch.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(payload);
    let padded_len = encoded_size_bytes(payload.len());
    out.resize(start + padded_len, 0);
    let crc = checksum(log_id, &out[start + 4..start + HEADER_SIZE_BYTES], payload);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes the record that should sit at `expected_lsn` from `bytes` (which start at it).
pub fn decode(log_id: u64, expected_lsn: u64, bytes: &[u8]) -> Decoded<'_> {
    if bytes.len() < HEADER_SIZE_BYTES {
        return Decoded::Incomplete;
    }
    // Position first: it rejects stale laps and garbage without touching the payload.
    if read_u64(bytes, 16) != expected_lsn {
        return Decoded::Invalid(Invalid::Position);
    }
    let payload_len = read_u32(bytes, 4) as usize;
    if payload_len > MAX_PAYLOAD_BYTES {
        return Decoded::Invalid(Invalid::Length);
    }
    if bytes.len() < HEADER_SIZE_BYTES + payload_len {
        return Decoded::Incomplete;
    }
    let payload = &bytes[HEADER_SIZE_BYTES..HEADER_SIZE_BYTES + payload_len];
    if checksum(log_id, &bytes[4..HEADER_SIZE_BYTES], payload) != read_u32(bytes, 0) {
        return Decoded::Invalid(Invalid::Checksum);
    }
    if bytes[9] != RECORD_VERSION {
        return Decoded::Invalid(Invalid::Version);
    }
    let Some(kind) = Kind::from_u8(bytes[8]) else {
        return Decoded::Invalid(Invalid::Kind);
    };
    let header = Header {
        kind,
        lsn: expected_lsn,
        slot: read_u64(bytes, 24),
        ballot: Ballot { round: read_u64(bytes, 32), leader: read_u32(bytes, 12) },
        payload_len: payload_len as u32,
        durable_lsn: read_u64(bytes, 40),
        epoch: read_u32(bytes, 48),
    };
    Decoded::Valid(header, payload)
}

fn checksum(log_id: u64, header_tail: &[u8], payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&log_id.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, header_tail);
    crc32c::crc32c_append(crc, payload)
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(kind: Kind, lsn: u64, slot: u64, payload_len: u32) -> Header {
        Header { kind, lsn, slot, ballot: Ballot { round: 7, leader: 2 }, payload_len, durable_lsn: 5, epoch: 3 }
    }

    #[test]
    fn zeroed_memory_is_not_a_record() {
        let zeros = vec![0u8; 256];
        assert_eq!(decode(0, 0, &zeros), Decoded::Invalid(Invalid::Checksum));
    }

    #[test]
    fn another_log_id_is_rejected() {
        let mut buf = Vec::new();
        encode_into(&mut buf, 1, &header(Kind::Entry, 0, 3, 3), b"abc");
        assert!(matches!(decode(1, 0, &buf), Decoded::Valid(..)));
        assert_eq!(decode(2, 0, &buf), Decoded::Invalid(Invalid::Checksum));
    }

    #[test]
    fn every_proper_prefix_is_incomplete_or_invalid() {
        let mut buf = Vec::new();
        encode_into(&mut buf, 9, &header(Kind::Entry, 64, 1, 20), &[0xAB; 20]);
        for cut in 0..buf.len() - 4 {
            // A prefix followed by zeros models a record whose tail has not landed yet.
            let mut partial = buf[..cut].to_vec();
            partial.resize(buf.len(), 0);
            assert!(!matches!(decode(9, 64, &partial), Decoded::Valid(..)), "cut at {cut} validated");
        }
    }

    proptest! {
        #[test]
        fn round_trip(kind in 1u8..=6, lsn in any::<u64>(), slot in any::<u64>(), round in any::<u64>(),
                      leader in any::<u32>(), durable in any::<u64>(), log_id in any::<u64>(), epoch in any::<u32>(),
                      payload in proptest::collection::vec(any::<u8>(), 0..600)) {
            let h = Header { kind: Kind::from_u8(kind).unwrap(), lsn, slot, ballot: Ballot { round, leader },
                             payload_len: payload.len() as u32, durable_lsn: durable, epoch };
            let mut buf = vec![0xEE; 3];
            encode_into(&mut buf, log_id, &h, &payload);
            prop_assert_eq!(buf.len() - 3, h.encoded_size_bytes());
            prop_assert_eq!(buf.len() % ALIGN_BYTES, 3 % ALIGN_BYTES);
            prop_assert_eq!(decode(log_id, lsn, &buf[3..]), Decoded::Valid(h, &payload[..]));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256),
                                       lsn in any::<u64>(), log_id in any::<u64>()) {
            let _ = decode(log_id, lsn, &bytes);
        }

        #[test]
        fn any_single_bit_flip_is_detected(payload in proptest::collection::vec(any::<u8>(), 0..100),
                                           bit in any::<prop::sample::Index>()) {
            let h = header(Kind::Entry, 128, 4, payload.len() as u32);
            let mut buf = Vec::new();
            encode_into(&mut buf, 3, &h, &payload);
            // Padding bytes are outside the checksum by design; flip only covered bytes.
            let covered_bits = (HEADER_SIZE_BYTES + payload.len()) * 8;
            let i = bit.index(covered_bits);
            buf[i / 8] ^= 1 << (i % 8);
            prop_assert!(!matches!(decode(3, 128, &buf), Decoded::Valid(..)));
        }
    }
}

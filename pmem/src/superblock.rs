//! The log's superblock: magic, format version, identity, ring geometry and the ring's head.
//!
//! Two copies at fixed offsets; an update writes the copy the current generation does not use and
//! persists it, so a crash mid-update leaves the other copy valid (each copy is checksummed).

use crate::error::{Error, Result};
use crate::medium::Medium;

/// File magic.
pub const MAGIC: [u8; 8] = *b"DECREEPM";
/// On-media format version (superblock, records, and the encoding of the values records carry).
/// 2: a batch value is stored as its requests' encoding in one byte string (`decree_engine::batch`).
pub const FORMAT_VERSION: u32 = 2;
/// Where the record ring starts; one page holds both superblock copies.
pub const DATA_OFFSET_BYTES: u64 = 4096;
/// Offsets of the two copies.
const COPY_OFFSETS: [u64; 2] = [0, 2048];
const ENCODED_SIZE_BYTES: usize = 60;

/// The decoded superblock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// Random identity of this formatting; seeds every record checksum.
    pub log_id: u64,
    /// Bumped on every update; the valid copy with the highest generation wins.
    pub generation: u64,
    /// Bytes in the record ring.
    pub capacity_bytes: u64,
    /// Logical position of the oldest record still in use.
    pub head_lsn: u64,
    /// Incarnation of the current writer: bumped (durably) at every open, before any append.
    pub epoch: u32,
    /// Where the current incarnation started appending: records at or past it must carry `epoch`.
    pub epoch_start_lsn: u64,
}

impl Superblock {
    /// Whether a checksummed record of `epoch` at `lsn` belongs to the log: records past the
    /// current incarnation's start must be its own; earlier ones must be older.
    pub fn accepts(&self, lsn: u64, epoch: u32) -> bool {
        if lsn >= self.epoch_start_lsn {
            epoch == self.epoch
        } else {
            epoch < self.epoch
        }
    }
}

impl Superblock {
    fn encode(&self) -> [u8; ENCODED_SIZE_BYTES] {
        let mut out = [0u8; ENCODED_SIZE_BYTES];
        out[0..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[12..20].copy_from_slice(&self.log_id.to_le_bytes());
        out[20..28].copy_from_slice(&self.generation.to_le_bytes());
        out[28..36].copy_from_slice(&self.capacity_bytes.to_le_bytes());
        out[36..44].copy_from_slice(&self.head_lsn.to_le_bytes());
        out[44..52].copy_from_slice(&self.epoch_start_lsn.to_le_bytes());
        out[52..56].copy_from_slice(&self.epoch.to_le_bytes());
        let crc = crc32c::crc32c(&out[..56]);
        out[56..60].copy_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8; ENCODED_SIZE_BYTES]) -> std::result::Result<Superblock, String> {
        if bytes[0..8] != MAGIC {
            return Err("bad magic".into());
        }
        let crc = u32::from_le_bytes(bytes[56..60].try_into().expect("4"));
        if crc32c::crc32c(&bytes[..56]) != crc {
            return Err("bad checksum".into());
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4"));
        if version != FORMAT_VERSION {
            return Err(format!("format version {version}, this build reads {FORMAT_VERSION}"));
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
        Ok(Superblock {
            log_id: u64_at(12),
            generation: u64_at(20),
            capacity_bytes: u64_at(28),
            head_lsn: u64_at(36),
            epoch_start_lsn: u64_at(44),
            epoch: u32::from_le_bytes(bytes[52..56].try_into().expect("4")),
        })
    }

    /// Writes this superblock into the copy its generation selects and persists it.
    pub fn store(&self, medium: &mut dyn Medium) -> std::io::Result<()> {
        let at = COPY_OFFSETS[(self.generation % 2) as usize];
        medium.write_at(at, &self.encode())?;
        medium.persist()
    }

    /// Reads both copies and returns the valid one with the highest generation.
    pub fn load(medium: &dyn Medium) -> Result<Superblock> {
        let mut best: Option<Superblock> = None;
        let mut why = Vec::new();
        for at in COPY_OFFSETS {
            let mut bytes = [0u8; ENCODED_SIZE_BYTES];
            medium.read_at(at, &mut bytes).map_err(|source| Error::Io {
                resource: medium.resource().to_string(),
                op: "read superblock",
                source,
            })?;
            match Superblock::decode(&bytes) {
                Ok(sb) if best.is_none_or(|b| sb.generation > b.generation) => best = Some(sb),
                Ok(_) => {}
                Err(e) => why.push(format!("copy at {at}: {e}")),
            }
        }
        let sb = best.ok_or_else(|| Error::NotFormatted {
            resource: medium.resource().to_string(),
            detail: why.join("; "),
        })?;
        if DATA_OFFSET_BYTES + sb.capacity_bytes > medium.size_bytes() {
            return Err(Error::Corrupt {
                resource: medium.resource().to_string(),
                offset: 0,
                lsn: 0,
                detail: format!("superblock ring capacity {} exceeds medium size {}", sb.capacity_bytes, medium.size_bytes()),
            });
        }
        Ok(sb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimMedium;

    #[test]
    fn newest_valid_copy_wins_and_a_torn_copy_falls_back() {
        let mut m = SimMedium::new(DATA_OFFSET_BYTES + 4096);
        let a = Superblock { log_id: 11, generation: 1, capacity_bytes: 4096, head_lsn: 0, epoch: 1, epoch_start_lsn: 0 };
        a.store(&mut m).unwrap();
        let b = Superblock { generation: 2, head_lsn: 512, ..a };
        b.store(&mut m).unwrap();
        assert_eq!(Superblock::load(&m).unwrap(), b);
        // Damage generation 2's copy: the loader must fall back to generation 1.
        m.flip_bit(COPY_OFFSETS[0] + 37, 3);
        assert_eq!(Superblock::load(&m).unwrap(), a);
    }

    #[test]
    fn blank_medium_is_not_formatted() {
        let m = SimMedium::new(DATA_OFFSET_BYTES + 64);
        assert!(matches!(Superblock::load(&m), Err(Error::NotFormatted { .. })));
    }
}

//! Ring geometry: how a logical position (lsn) maps to a byte offset, and where a record of a
//! given size may start. Records never straddle the end of the ring; the gap before the wrap is
//! skipped (an explicit Pad record when a header fits, implicitly otherwise).

use crate::record::HEADER_SIZE_BYTES;
use crate::superblock::DATA_OFFSET_BYTES;

/// Byte offset in the medium of logical position `lsn`.
pub fn medium_offset(lsn: u64, capacity_bytes: u64) -> u64 {
    DATA_OFFSET_BYTES + lsn % capacity_bytes
}

/// Bytes from `lsn` to the end of its lap.
pub fn lap_remaining_bytes(lsn: u64, capacity_bytes: u64) -> u64 {
    capacity_bytes - lsn % capacity_bytes
}

/// Where a record of `size` bytes appended at `tail_lsn` starts: there, or at the next lap when
/// the rest of this one is too short for it.
pub fn record_start_lsn(tail_lsn: u64, size: u64, capacity_bytes: u64) -> u64 {
    let remaining = lap_remaining_bytes(tail_lsn, capacity_bytes);
    if remaining < size {
        tail_lsn + remaining
    } else {
        tail_lsn
    }
}

/// Whether a reader at `lsn` must skip to the next lap without reading (no header fits).
pub fn implicit_wrap(lsn: u64, capacity_bytes: u64) -> bool {
    lap_remaining_bytes(lsn, capacity_bytes) < HEADER_SIZE_BYTES as u64
}

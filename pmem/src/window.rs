//! A sliding read window over the ring, so recovery reads the medium sequentially in large chunks
//! without holding the whole ring in memory.

use crate::medium::Medium;
use crate::record::{HEADER_SIZE_BYTES, MAX_PAYLOAD_BYTES};
use crate::superblock::DATA_OFFSET_BYTES;
use std::io;

/// Bytes read from the medium at a time.
pub const WINDOW_SIZE_BYTES: usize = 4 << 20;

/// Cached bytes of `[start, start + buf.len())` of the ring.
pub struct RingWindow<'m> {
    medium: &'m dyn Medium,
    capacity_bytes: u64,
    start: u64,
    buf: Vec<u8>,
}

impl<'m> RingWindow<'m> {
    /// A window over the ring of `capacity_bytes` on `medium`.
    pub fn new(medium: &'m dyn Medium, capacity_bytes: u64) -> RingWindow<'m> {
        RingWindow { medium, capacity_bytes, start: 0, buf: Vec::new() }
    }

    /// The bytes of the record that may start at ring offset `at`: enough for its header and the
    /// payload its length field claims, cut at the end of the ring (the decoder then reports the
    /// record incomplete).
    /// Only a header whose position field says `expected_lsn` gets its payload loaded, so scanning
    /// garbage never reads the huge lengths it may claim.
    pub fn record_bytes(&mut self, at: u64, expected_lsn: u64) -> io::Result<&[u8]> {
        let header = self.bytes(at, HEADER_SIZE_BYTES)?;
        if header.len() < HEADER_SIZE_BYTES || header[16..24] != expected_lsn.to_le_bytes() {
            return self.bytes(at, HEADER_SIZE_BYTES);
        }
        let claimed = u32::from_le_bytes(header[4..8].try_into().expect("4")) as usize;
        let want = HEADER_SIZE_BYTES + claimed.min(MAX_PAYLOAD_BYTES);
        self.bytes(at, want)
    }

    /// At least `len` bytes from `at` (fewer only at the end of the ring).
    fn bytes(&mut self, at: u64, len: usize) -> io::Result<&[u8]> {
        let end = (at + len as u64).min(self.capacity_bytes);
        if at < self.start || end > self.start + self.buf.len() as u64 {
            let load = ((self.capacity_bytes - at) as usize).min(len.max(WINDOW_SIZE_BYTES));
            self.buf.resize(load, 0);
            self.medium.read_at(DATA_OFFSET_BYTES + at, &mut self.buf)?;
            self.start = at;
        }
        let from = (at - self.start) as usize;
        Ok(&self.buf[from..(end - self.start) as usize])
    }
}

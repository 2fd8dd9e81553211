//! Short byte strings handed out as `Bytes` slices of one shared chunk, so keeping one costs a
//! copy and no allocation of its own. Built for data written in order and dropped in about that
//! order (client ops between ingress and apply, batches between proposal and the checkpoint that
//! discards them): a chunk is freed, or reused in place once every slice of it is gone, soon after
//! its last slice. Strings above `largest_inline_bytes` get an allocation of their own, so one
//! large string never strands a chunk's tail.

use bytes::{Bytes, BytesMut};

/// One writer's chunk.
pub struct ChunkArena {
    /// Bytes `..len()` are being written (none between calls); the rest of the capacity is free.
    chunk: BytesMut,
    chunk_bytes: usize,
    largest_inline_bytes: usize,
}

impl ChunkArena {
    /// An arena of `chunk_bytes` chunks, the first allocated by the first write (a replica that
    /// never writes one holds none); strings longer than
    /// `largest_inline_bytes` (at most the chunk size) are allocated alone.
    pub fn new(chunk_bytes: usize, largest_inline_bytes: usize) -> Self {
        assert!(largest_inline_bytes <= chunk_bytes, "contract violated: arena-inline-fits-chunk");
        ChunkArena { chunk: BytesMut::new(), chunk_bytes, largest_inline_bytes }
    }

    /// `bytes` as owned bytes: a slice of the current chunk, or its own allocation when large.
    pub fn carve(&mut self, bytes: &[u8]) -> Bytes {
        self.write(bytes.len(), |out| out.extend_from_slice(bytes))
    }

    /// Lets `fill` append at most `max_len` bytes and returns what it appended, as `carve` would.
    pub fn write(&mut self, max_len: usize, fill: impl FnOnce(&mut BytesMut)) -> Bytes {
        if max_len > self.largest_inline_bytes {
            let mut alone = BytesMut::with_capacity(max_len);
            fill(&mut alone);
            assert!(alone.len() <= max_len, "contract violated: arena-write-within-bound");
            return alone.freeze();
        }
        if self.chunk.capacity() < max_len {
            // Reclaims the chunk in place when every slice of it is gone, else starts a new one.
            self.chunk.reserve(self.chunk_bytes);
        }
        fill(&mut self.chunk);
        assert!(self.chunk.len() <= max_len, "contract violated: arena-write-within-bound");
        self.chunk.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: usize = 64 << 10;
    const LARGEST: usize = 4 << 10;

    #[test]
    fn carved_slices_keep_their_bytes_while_later_ones_fill_and_replace_the_chunk() {
        let mut arena = ChunkArena::new(CHUNK, LARGEST);
        let held: Vec<Bytes> =
            (0..5_000u32).map(|n| arena.carve(&n.to_le_bytes().repeat(1 + n as usize % 50))).collect();
        for (n, bytes) in (0..5_000u32).zip(&held) {
            assert_eq!(bytes[..], n.to_le_bytes().repeat(1 + n as usize % 50)[..], "string {n}");
        }
    }

    #[test]
    fn a_chunk_whose_slices_are_dropped_is_reused_in_place() {
        let mut arena = ChunkArena::new(CHUNK, LARGEST);
        let first = arena.carve(&[1; 100]).as_ptr();
        for _ in 0..2 * CHUNK / 100 {
            drop(arena.carve(&[2; 100]));
        }
        let later = arena.carve(&[3; 100]).as_ptr() as usize;
        let first = first as usize;
        assert!((first..first + CHUNK).contains(&later), "the chunk was reused, not reallocated");
    }

    #[test]
    fn a_large_string_is_allocated_on_its_own() {
        let mut arena = ChunkArena::new(CHUNK, LARGEST);
        let small = arena.carve(&[1; 10]);
        let large = arena.carve(&vec![9; LARGEST + 1]);
        let next = arena.carve(&[2; 10]);
        assert_eq!(next.as_ptr(), small.as_ptr().wrapping_add(10), "the large string took no chunk space");
        assert_eq!(large.len(), LARGEST + 1);
    }

    #[test]
    fn a_write_returns_exactly_what_it_appended() {
        let mut arena = ChunkArena::new(CHUNK, LARGEST);
        let written = arena.write(100, |out| out.extend_from_slice(b"abc"));
        let next = arena.carve(b"d");
        assert_eq!(&written[..], b"abc");
        assert_eq!(next.as_ptr(), written.as_ptr().wrapping_add(3), "the unused bound was not consumed");
    }

    #[test]
    #[should_panic(expected = "arena-write-within-bound")]
    fn a_write_past_its_bound_is_a_broken_contract() {
        let mut arena = ChunkArena::new(CHUNK, LARGEST);
        arena.write(2, |out| out.extend_from_slice(b"abc"));
    }
}

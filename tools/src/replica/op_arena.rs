//! Where an I/O thread keeps the `op` bytes of the requests it decodes: appended to one shared
//! chunk and handed out as `Bytes` slices of it, so a request costs a copy of its op and no
//! allocation. A chunk holds only op bytes, in arrival order, and the core drops ops in about that
//! order (after apply, once a checkpoint covers them), so little more than the ops still in use is
//! kept alive. A chunk whose ops are all dropped is reused in place.

use bytes::{Bytes, BytesMut};

/// Bytes per chunk.
pub const OP_ARENA_CHUNK_BYTES: usize = 64 << 10;
/// Ops longer than this get an allocation of their own, so one large op never strands a chunk's tail.
pub const OP_ARENA_LARGEST_OP_BYTES: usize = 4 << 10;

/// One I/O thread's op chunk.
pub struct OpArena {
    /// Bytes `..len()` are ops handed out and not yet split off (none between calls); the rest of the capacity is free.
    chunk: BytesMut,
}

impl Default for OpArena {
    fn default() -> Self {
        OpArena::new()
    }
}

impl OpArena {
    /// An arena with its first chunk allocated.
    pub fn new() -> Self {
        OpArena { chunk: BytesMut::with_capacity(OP_ARENA_CHUNK_BYTES) }
    }

    /// `op` as owned bytes: a slice of the current chunk, or its own allocation when large.
    pub fn carve(&mut self, op: &[u8]) -> Bytes {
        if op.len() > OP_ARENA_LARGEST_OP_BYTES {
            return Bytes::copy_from_slice(op);
        }
        if self.chunk.capacity() < op.len() {
            // Reclaims the chunk in place when every op carved from it is gone, else starts a new one.
            self.chunk.reserve(OP_ARENA_CHUNK_BYTES);
        }
        self.chunk.extend_from_slice(op);
        self.chunk.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carved_ops_keep_their_bytes_while_later_ops_fill_and_replace_the_chunk() {
        let mut arena = OpArena::new();
        let ops: Vec<Bytes> =
            (0..5_000u32).map(|n| arena.carve(&n.to_le_bytes().repeat(1 + n as usize % 50))).collect();
        for (n, op) in (0..5_000u32).zip(&ops) {
            assert_eq!(op[..], n.to_le_bytes().repeat(1 + n as usize % 50)[..], "op {n}");
        }
    }

    #[test]
    fn a_chunk_whose_ops_are_dropped_is_reused_in_place() {
        let mut arena = OpArena::new();
        let first = arena.carve(&[1; 100]).as_ptr();
        for _ in 0..2 * OP_ARENA_CHUNK_BYTES / 100 {
            drop(arena.carve(&[2; 100]));
        }
        let later = arena.carve(&[3; 100]).as_ptr() as usize;
        let first = first as usize;
        assert!((first..first + OP_ARENA_CHUNK_BYTES).contains(&later), "the chunk was reused, not reallocated");
    }

    #[test]
    fn a_large_op_is_copied_on_its_own() {
        let mut arena = OpArena::new();
        let small = arena.carve(&[1; 10]);
        let large = arena.carve(&vec![9; OP_ARENA_LARGEST_OP_BYTES + 1]);
        let next = arena.carve(&[2; 10]);
        assert_eq!(next.as_ptr(), small.as_ptr().wrapping_add(10), "the large op took no chunk space");
        assert_eq!(large.len(), OP_ARENA_LARGEST_OP_BYTES + 1);
    }
}

//! Where an I/O thread keeps the `op` bytes of the requests it decodes: an engine `ChunkArena`, so
//! a request costs a copy of its op and no allocation. The core drops ops in about arrival order
//! (once they are encoded into a proposed batch, or redirected), so a chunk is reused soon.

use decree_engine::chunk_arena::ChunkArena;

/// Bytes per chunk.
pub const OP_ARENA_CHUNK_BYTES: usize = 64 << 10;
/// Ops longer than this get an allocation of their own.
pub const OP_ARENA_LARGEST_OP_BYTES: usize = 4 << 10;

/// One I/O thread's op arena.
pub fn op_arena() -> ChunkArena {
    ChunkArena::new(OP_ARENA_CHUNK_BYTES, OP_ARENA_LARGEST_OP_BYTES)
}

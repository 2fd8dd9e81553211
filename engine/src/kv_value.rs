//! The KV store's value: held inline in the map's bucket beside its key up to
//! `INLINE_VALUE_BYTES`, so a put writes the bucket it has just found; with 100,000 keys on each of
//! three replicas sharing one L3, following a pointer to a separate allocation was a large part of
//! what held the store back (docs/benchmarks.md, session 5).

use crate::inline_bytes::InlineBytes;

/// Longest value held inline (the benchmark's 64 B puts fit).
pub const INLINE_VALUE_BYTES: usize = 64;

/// A KV value.
pub type Value = InlineBytes<INLINE_VALUE_BYTES>;

//! The KV store's key: held inline in the map's bucket up to `INLINE_KEY_BYTES`, so a lookup
//! compares bytes it has already loaded (`memcmp` through a pointer to a separate allocation was
//! the leader's top symbol under a 100,000-key workload).

use crate::inline_bytes::InlineBytes;

/// Longest key held inline (the inline form is then no larger than a `Bytes`).
pub const INLINE_KEY_BYTES: usize = 30;

/// A KV key.
pub type Key = InlineBytes<INLINE_KEY_BYTES>;

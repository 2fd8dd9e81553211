//! The KV store's key: short keys live inside the map's own node, so finding one compares bytes
//! the lookup has already loaded instead of following a pointer to a separate allocation (that
//! miss was the leader's top symbol, `memcmp`, under a 100,000-key workload). Longer keys are
//! shared `Bytes` as before. Hashes, compares and serializes exactly as its bytes do.

use bytes::Bytes;
use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

/// Longest key held inline (the inline form is then no larger than a `Bytes`).
pub const INLINE_KEY_BYTES: usize = 30;

/// A KV key.
#[derive(Clone)]
pub enum Key {
    /// `bytes[..len]`.
    Inline {
        /// Bytes used.
        len: u8,
        /// The key, zero-padded.
        bytes: [u8; INLINE_KEY_BYTES],
    },
    /// A key longer than `INLINE_KEY_BYTES`.
    Shared(Bytes),
}

impl Key {
    /// The key `bytes`, copied.
    pub fn copy_from_slice(key: &[u8]) -> Key {
        if key.len() <= INLINE_KEY_BYTES {
            let mut bytes = [0; INLINE_KEY_BYTES];
            bytes[..key.len()].copy_from_slice(key);
            Key::Inline { len: key.len() as u8, bytes }
        } else {
            Key::Shared(Bytes::copy_from_slice(key))
        }
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..*len as usize],
            Key::Shared(bytes) => bytes,
        }
    }
}

impl From<Bytes> for Key {
    fn from(key: Bytes) -> Key {
        if key.len() <= INLINE_KEY_BYTES {
            Key::copy_from_slice(&key)
        } else {
            Key::Shared(key)
        }
    }
}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

crate::byte_string::byte_string_traits!(Key);

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl Hash for Key {
    /// As `[u8]` hashes, so a `&[u8]` finds its `Key` (the `Borrow` contract).
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state)
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;

    fn hash_of(value: &(impl Hash + ?Sized)) -> u64 {
        let mut hasher = DefaultHasher::new();
        value.hash(&mut hasher);
        hasher.finish()
    }

    #[test]
    fn inline_and_shared_keys_hash_compare_and_serialize_as_their_bytes() {
        for len in [0, 1, INLINE_KEY_BYTES - 1, INLINE_KEY_BYTES, INLINE_KEY_BYTES + 1, 200] {
            let bytes: Vec<u8> = (0..len).map(|n| n as u8 ^ 0x5a).collect();
            let key = Key::copy_from_slice(&bytes);
            assert_eq!(matches!(key, Key::Inline { .. }), len <= INLINE_KEY_BYTES, "len {len}");
            assert_eq!(key.as_bytes(), &bytes[..]);
            assert_eq!(hash_of(&key), hash_of(&bytes[..]), "len {len}");
            assert_eq!(Key::from(Bytes::from(bytes.clone())), key);
            let as_bytes = postcard::to_stdvec(&Bytes::from(bytes.clone())).unwrap();
            assert_eq!(postcard::to_stdvec(&key).unwrap(), as_bytes, "len {len}");
        }
        assert!(Key::copy_from_slice(b"a") < Key::copy_from_slice(b"ab"));
        assert_ne!(Key::copy_from_slice(b"a\0"), Key::copy_from_slice(b"a"), "padding is not part of the key");
    }
}

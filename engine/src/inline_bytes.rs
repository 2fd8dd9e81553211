//! A byte string of the KV store, held inline up to `N` bytes and as shared `Bytes` beyond. The
//! map's buckets hold keys (`kv_key`) and values (`kv_value`) this way, so a lookup compares bytes
//! it has already loaded and a put writes the bucket it found, instead of following a pointer to a
//! separate allocation: that miss was the top of the apply's profile under a 100,000-key workload
//! (docs/benchmarks.md, sessions 3 and 5). Only the bytes are observable: it hashes, compares,
//! orders, serializes (as `Bytes` does, so checkpoints keep their format) and prints as they do.

use bytes::Bytes;
use serde::{Serialize, Serializer};
use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

/// A byte string held inline when at most `N` bytes long. The representation is private, so the
/// length always fits.
#[derive(Clone)]
pub struct InlineBytes<const N: usize>(Repr<N>);

#[derive(Clone)]
enum Repr<const N: usize> {
    /// `bytes[..len]`; what follows is left from earlier contents and never read.
    Inline { len: u8, bytes: [u8; N] },
    /// Longer than `N`.
    Shared(Bytes),
}

impl<const N: usize> InlineBytes<N> {
    /// `bytes`, copied.
    pub fn copy_from_slice(bytes: &[u8]) -> Self {
        // An inline length must fit the `u8` that records it (checked when `N` is chosen).
        const { assert!(N <= u8::MAX as usize, "inline capacity above 255 bytes") };
        if bytes.len() <= N {
            let mut inline = [0; N];
            inline[..bytes.len()].copy_from_slice(bytes);
            InlineBytes(Repr::Inline { len: bytes.len() as u8, bytes: inline })
        } else {
            InlineBytes(Repr::Shared(Bytes::copy_from_slice(bytes)))
        }
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..*len as usize],
            Repr::Shared(bytes) => bytes,
        }
    }

    /// The bytes as `Bytes` (for a reply): shared when long, copied when inline.
    pub fn to_bytes(&self) -> Bytes {
        match &self.0 {
            Repr::Inline { .. } => Bytes::copy_from_slice(self.as_bytes()),
            Repr::Shared(bytes) => bytes.clone(),
        }
    }

    /// Replaces the bytes with `bytes`. Short ones are written in place. Long ones of the same
    /// length reuse the shared buffer only when nothing else holds it: `try_into_mut` fails while
    /// a pending Get reply shares it, and the reply keeps the old bytes.
    pub fn set(&mut self, bytes: &[u8]) {
        match &mut self.0 {
            Repr::Inline { len, bytes: inline } if bytes.len() <= N => {
                inline[..bytes.len()].copy_from_slice(bytes);
                *len = bytes.len() as u8;
            }
            Repr::Shared(held) if held.len() == bytes.len() => {
                *held = match std::mem::take(held).try_into_mut() {
                    Ok(mut unique) => {
                        unique.copy_from_slice(bytes);
                        unique.freeze()
                    }
                    Err(_) => Bytes::copy_from_slice(bytes),
                }
            }
            _ => *self = Self::copy_from_slice(bytes),
        }
    }

    /// Whether the bytes are held inline.
    #[cfg(test)]
    pub(crate) fn is_inline(&self) -> bool {
        matches!(self.0, Repr::Inline { .. })
    }
}

impl<const N: usize> From<Bytes> for InlineBytes<N> {
    /// Short ones are copied inline; long ones keep the `Bytes`.
    fn from(bytes: Bytes) -> Self {
        if bytes.len() <= N {
            Self::copy_from_slice(&bytes)
        } else {
            InlineBytes(Repr::Shared(bytes))
        }
    }
}

impl<const N: usize> Borrow<[u8]> for InlineBytes<N> {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl<const N: usize> PartialEq for InlineBytes<N> {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl<const N: usize> Eq for InlineBytes<N> {}

impl<const N: usize> PartialOrd for InlineBytes<N> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<const N: usize> Ord for InlineBytes<N> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl<const N: usize> Hash for InlineBytes<N> {
    /// As `[u8]` hashes, so a `&[u8]` finds its key (the `Borrow` contract).
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state)
    }
}

impl<const N: usize> Serialize for InlineBytes<N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.as_bytes())
    }
}

impl<const N: usize> std::fmt::Debug for InlineBytes<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Bytes::copy_from_slice(self.as_bytes()).fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;

    type Small = InlineBytes<8>;

    fn hash_of(value: &(impl Hash + ?Sized)) -> u64 {
        let mut hasher = DefaultHasher::new();
        value.hash(&mut hasher);
        hasher.finish()
    }

    #[test]
    fn inline_and_shared_strings_hash_compare_and_serialize_as_their_bytes() {
        for len in [0, 1, 7, 8, 9, 200] {
            let bytes: Vec<u8> = (0..len).map(|n| n as u8 ^ 0x5a).collect();
            let held = Small::copy_from_slice(&bytes);
            assert_eq!(held.is_inline(), len <= 8, "len {len}");
            assert_eq!(held.as_bytes(), &bytes[..]);
            assert_eq!(&held.to_bytes()[..], &bytes[..]);
            assert_eq!(hash_of(&held), hash_of(&bytes[..]), "len {len}");
            assert_eq!(Small::from(Bytes::from(bytes.clone())), held);
            let as_bytes = postcard::to_stdvec(&Bytes::from(bytes.clone())).unwrap();
            assert_eq!(postcard::to_stdvec(&held).unwrap(), as_bytes, "len {len}");
        }
        assert!(Small::copy_from_slice(b"a") < Small::copy_from_slice(b"ab"));
        assert_ne!(Small::copy_from_slice(b"a\0"), Small::copy_from_slice(b"a"), "padding is not part of it");
    }

    #[test]
    fn set_moves_between_inline_and_shared_as_the_length_requires() {
        let long = [7u8; 18];
        let mut held = Small::copy_from_slice(b"short");
        for next in [&b"other"[..], &long[..], &long[..5], &[][..], &long[..], &[9u8; 18][..]] {
            held.set(next);
            assert_eq!(held.as_bytes(), next);
            assert_eq!(held.is_inline(), next.len() <= 8);
        }
    }

    #[test]
    fn a_long_string_is_rewritten_in_its_buffer_unless_a_reply_still_holds_it() {
        let (first, second, third) = ([1u8; 100], [2u8; 100], [3u8; 100]);
        let mut held = Small::copy_from_slice(&first);
        let buffer = held.as_bytes().as_ptr();
        held.set(&second);
        assert_eq!(held.as_bytes().as_ptr(), buffer, "rewritten in place, no allocation");
        let reply = held.to_bytes();
        held.set(&third);
        assert_eq!(&reply[..], &second[..], "the pending reply keeps the bytes it read");
        assert_eq!(held.as_bytes(), &third[..]);
    }
}

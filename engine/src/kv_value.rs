//! The KV store's value. A short value lives in the map's bucket beside its key, so a put writes
//! the bucket it has just found instead of following a pointer to a separate allocation: with
//! 100,000 keys on each of three replicas sharing one L3, that extra miss per replica per put was
//! a large part of what held the store back (docs/benchmarks.md, session 5). Longer values are
//! shared `Bytes`. Compares and serializes exactly as its bytes do.

use bytes::Bytes;

/// Longest value held inline (the benchmark's 64 B puts fit).
pub const INLINE_VALUE_BYTES: usize = 64;

/// A KV value. Its representation is private, so `len` always fits `bytes`.
#[derive(Clone)]
pub struct Value(Repr);

#[derive(Clone)]
enum Repr {
    /// `bytes[..len]`; what follows is left from earlier values and never read.
    Inline { len: u8, bytes: [u8; INLINE_VALUE_BYTES] },
    /// A value longer than `INLINE_VALUE_BYTES`.
    Shared(Bytes),
}

impl Value {
    /// The value `bytes`, copied.
    pub fn copy_from_slice(value: &[u8]) -> Value {
        if value.len() <= INLINE_VALUE_BYTES {
            let mut bytes = [0; INLINE_VALUE_BYTES];
            bytes[..value.len()].copy_from_slice(value);
            Value(Repr::Inline { len: value.len() as u8, bytes })
        } else {
            Value(Repr::Shared(Bytes::copy_from_slice(value)))
        }
    }

    /// The value's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..*len as usize],
            Repr::Shared(bytes) => bytes,
        }
    }

    /// The value as `Bytes` for a reply: a long value is shared, a short one copied.
    pub fn to_bytes(&self) -> Bytes {
        match &self.0 {
            Repr::Inline { .. } => Bytes::copy_from_slice(self.as_bytes()),
            Repr::Shared(bytes) => bytes.clone(),
        }
    }

    /// Replaces the held bytes with `value`. A short value is written in place. A long one of the
    /// same length reuses its buffer only when nothing else holds it: `try_into_mut` fails while a
    /// pending Get reply shares it, and the reply keeps the old bytes.
    pub fn set(&mut self, value: &[u8]) {
        match &mut self.0 {
            Repr::Inline { len, bytes } if value.len() <= INLINE_VALUE_BYTES => {
                bytes[..value.len()].copy_from_slice(value);
                *len = value.len() as u8;
            }
            Repr::Shared(held) if held.len() == value.len() => {
                *held = match std::mem::take(held).try_into_mut() {
                    Ok(mut unique) => {
                        unique.copy_from_slice(value);
                        unique.freeze()
                    }
                    Err(_) => Bytes::copy_from_slice(value),
                }
            }
            _ => *self = Value::copy_from_slice(value),
        }
    }

    /// Whether the bytes are held inline.
    #[cfg(test)]
    fn is_inline(&self) -> bool {
        matches!(self.0, Repr::Inline { .. })
    }
}

impl From<Bytes> for Value {
    fn from(value: Bytes) -> Value {
        if value.len() <= INLINE_VALUE_BYTES {
            Value::copy_from_slice(&value)
        } else {
            Value(Repr::Shared(value))
        }
    }
}

crate::byte_string::byte_string_traits!(Value);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_inline_long_ones_shared_and_both_serialize_as_their_bytes() {
        for len in [0, 1, INLINE_VALUE_BYTES - 1, INLINE_VALUE_BYTES, INLINE_VALUE_BYTES + 1, 300] {
            let bytes: Vec<u8> = (0..len).map(|n| n as u8 ^ 0xa5).collect();
            let value = Value::copy_from_slice(&bytes);
            assert_eq!(value.is_inline(), len <= INLINE_VALUE_BYTES, "len {len}");
            assert_eq!(value.as_bytes(), &bytes[..]);
            assert_eq!(&value.to_bytes()[..], &bytes[..]);
            assert_eq!(Value::from(Bytes::from(bytes.clone())), value);
            let as_bytes = postcard::to_stdvec(&Bytes::from(bytes.clone())).unwrap();
            assert_eq!(postcard::to_stdvec(&value).unwrap(), as_bytes, "len {len}");
        }
        assert_ne!(Value::copy_from_slice(b"a\0"), Value::copy_from_slice(b"a"), "padding is not part of the value");
    }

    #[test]
    fn set_moves_between_inline_and_shared_as_the_length_requires() {
        let long = [7u8; INLINE_VALUE_BYTES + 10];
        let mut value = Value::copy_from_slice(b"short");
        for next in [&b"other"[..], &long[..], &long[..5], &[][..], &long[..], &[9u8; INLINE_VALUE_BYTES + 10][..]] {
            value.set(next);
            assert_eq!(value.as_bytes(), next);
            assert_eq!(value.is_inline(), next.len() <= INLINE_VALUE_BYTES);
        }
    }

    #[test]
    fn a_long_value_is_rewritten_in_its_buffer_unless_a_reply_still_holds_it() {
        let (first, second, third) = ([1u8; 100], [2u8; 100], [3u8; 100]);
        let mut value = Value::copy_from_slice(&first);
        let buffer = value.as_bytes().as_ptr();
        value.set(&second);
        assert_eq!(value.as_bytes().as_ptr(), buffer, "rewritten in place, no allocation");
        let reply = value.to_bytes();
        value.set(&third);
        assert_eq!(&reply[..], &second[..], "the pending reply keeps the value it read");
        assert_eq!(value.as_bytes(), &third[..]);
    }
}

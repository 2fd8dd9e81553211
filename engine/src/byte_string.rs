//! The traits a byte-string type of the KV store (`Key`, `Value`) implements by its bytes alone:
//! equality, serialization as `Bytes` (so checkpoints keep their format) and `Debug` as `Bytes`
//! prints. Whatever the type keeps inline or shared, only `as_bytes()` is observable.

/// Implements `PartialEq`, `Eq`, `serde::Serialize` and `Debug` for `$type` through its
/// `as_bytes(&self) -> &[u8]`.
macro_rules! byte_string_traits {
    ($type:ty) => {
        impl PartialEq for $type {
            fn eq(&self, other: &$type) -> bool {
                self.as_bytes() == other.as_bytes()
            }
        }

        impl Eq for $type {}

        impl serde::Serialize for $type {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_bytes(self.as_bytes())
            }
        }

        impl std::fmt::Debug for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                bytes::Bytes::copy_from_slice(self.as_bytes()).fmt(f)
            }
        }
    };
}

pub(crate) use byte_string_traits;

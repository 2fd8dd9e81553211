//! A key-value state machine (get / put / compare-and-set), used by tests, the simulator and the demo.

use crate::state_machine::{Frozen, StateMachine};
use bytes::Bytes;
use imbl::GenericHashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::BuildHasherDefault;
use serde::{Deserialize, Serialize};

/// A key-value operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOp {
    /// Read a key.
    Get {
        /// Key.
        key: Bytes,
    },
    /// Write a key.
    Put {
        /// Key.
        key: Bytes,
        /// New value.
        value: Bytes,
    },
    /// Write `new` only if the key currently holds `expected` (`None`: absent).
    Cas {
        /// Key.
        key: Bytes,
        /// Value required now.
        expected: Option<Bytes>,
        /// Value to write.
        new: Bytes,
    },
}

/// A key-value reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvReply {
    /// The value read (`None`: absent).
    Value(Option<Bytes>),
    /// A put took effect.
    Done,
    /// A compare-and-set's result and the value the key held before it.
    Cas {
        /// Whether the write happened.
        ok: bool,
        /// The value before the operation.
        previous: Option<Bytes>,
    },
    /// The operation bytes did not decode.
    Malformed,
}

impl KvOp {
    /// The key the operation touches.
    pub fn key(&self) -> &Bytes {
        match self {
            KvOp::Get { key } | KvOp::Put { key, .. } | KvOp::Cas { key, .. } => key,
        }
    }

    /// Encodes for a request payload.
    pub fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_stdvec(self).expect("encoding into a Vec cannot fail"))
    }

    /// Decodes a request payload.
    pub fn decode(bytes: &[u8]) -> Result<KvOp, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

impl KvReply {
    /// Encodes for a reply payload.
    pub fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_stdvec(self).expect("encoding into a Vec cannot fail"))
    }

    /// Decodes a reply payload.
    pub fn decode(bytes: &[u8]) -> Result<KvReply, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

/// A persistent hash map (hash array mapped trie) with a fixed hasher: iteration order is a
/// function of the keys alone, so a run replays exactly. Chosen over the ordered map by
/// callgrind: an ordered insert compares whole keys at every level (memcmp was the leader's top
/// symbol), a hashed one compares hash bits.
type Map = GenericHashMap<Bytes, Bytes, BuildHasherDefault<DefaultHasher>, imbl::shared_ptr::DefaultSharedPtr>;

/// The key-value store. The map is persistent (structurally shared), so freezing it for a
/// checkpoint is O(1) and the serialization runs off the replica's thread.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    map: Map,
}

/// The checkpoint: every pair, sorted by key (canonical whatever the map's layout).
fn encode_pairs(map: &Map) -> Bytes {
    let mut pairs: Vec<(&Bytes, &Bytes)> = map.iter().collect();
    pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
    Bytes::from(postcard::to_stdvec(&pairs).expect("encoding into a Vec cannot fail"))
}

impl KvStore {
    /// Applies one decoded operation.
    pub fn apply_op(&mut self, op: KvOp) -> KvReply {
        match op {
            KvOp::Get { key } => KvReply::Value(self.map.get(&key).cloned()),
            KvOp::Put { key, value } => {
                self.map.insert(key, value);
                KvReply::Done
            }
            KvOp::Cas { key, expected, new } => {
                let previous = self.map.get(&key).cloned();
                let ok = previous == expected;
                if ok {
                    self.map.insert(key, new);
                }
                KvReply::Cas { ok, previous }
            }
        }
    }

    /// The value held at `key`.
    pub fn get(&self, key: &[u8]) -> Option<&Bytes> {
        self.map.get(key)
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl StateMachine for KvStore {
    fn execute(&mut self, op: &[u8]) -> Bytes {
        let reply = match KvOp::decode(op) {
            Ok(op) => self.apply_op(op),
            Err(_) => KvReply::Malformed,
        };
        reply.encode()
    }

    fn save_checkpoint(&self) -> Bytes {
        encode_pairs(&self.map)
    }

    fn freeze(&self) -> Frozen {
        let map = self.map.clone();
        Box::new(move || encode_pairs(&map))
    }

    fn load_checkpoint(&mut self, data: &[u8]) -> Result<(), String> {
        let pairs: Vec<(Bytes, Bytes)> =
            postcard::from_bytes(data).map_err(|e| format!("kv checkpoint does not decode: {e}"))?;
        self.map = pairs.into_iter().collect();
        Ok(())
    }
}

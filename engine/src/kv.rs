//! A key-value state machine (get / put / compare-and-set), used by tests, the simulator and the demo.

use crate::kv_key::Key;
use crate::state_machine::{Frozen, StateMachine};
use bytes::Bytes;
use imbl::GenericHashMap;
use serde::{Deserialize, Serialize};

/// A key-value operation. `B` holds its byte strings: owned `Bytes`, or `&[u8]` borrowed from the
/// request while the store executes it (both encode alike).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOp<B = Bytes> {
    /// Read a key.
    Get {
        /// Key.
        key: B,
    },
    /// Write a key.
    Put {
        /// Key.
        key: B,
        /// New value.
        value: B,
    },
    /// Write `new` only if the key currently holds `expected` (`None`: absent).
    Cas {
        /// Key.
        key: B,
        /// Value required now.
        expected: Option<B>,
        /// Value to write.
        new: B,
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

/// `KvReply::Done` encoded: the reply to every put, built once.
const DONE_REPLY: &[u8] = &[1];

impl<B> KvOp<B> {
    /// The key the operation touches.
    pub fn key(&self) -> &B {
        match self {
            KvOp::Get { key } | KvOp::Put { key, .. } | KvOp::Cas { key, .. } => key,
        }
    }

    /// The same operation borrowing its byte strings.
    pub fn as_slices(&self) -> KvOp<&[u8]>
    where
        B: AsRef<[u8]>,
    {
        match self {
            KvOp::Get { key } => KvOp::Get { key: key.as_ref() },
            KvOp::Put { key, value } => KvOp::Put { key: key.as_ref(), value: value.as_ref() },
            KvOp::Cas { key, expected, new } => {
                KvOp::Cas { key: key.as_ref(), expected: expected.as_ref().map(AsRef::as_ref), new: new.as_ref() }
            }
        }
    }
}

impl KvOp {
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

/// A persistent hash map (hash array mapped trie). Chosen over the ordered map by callgrind: an
/// ordered insert compares whole keys at every level (memcmp was the leader's top symbol), a
/// hashed one compares hash bits. foldhash rather than SipHash: hashing was the top callgrind
/// entry once the rest was tuned. The seed is the store's: the replica server draws a random one,
/// so clients (who hold the cluster secret) cannot compute keys that collide; `default()` uses a
/// fixed one, so the simulator and `decree-bench callgrind` repeat exactly (a random seed moved
/// the instruction count by about 1%). The checkpoint lists pairs sorted by key, so replicas with
/// different seeds write the same bytes.
type Map = GenericHashMap<Key, Bytes, foldhash::fast::FixedState, imbl::shared_ptr::DefaultSharedPtr>;

/// The key-value store. The map is persistent (structurally shared), so freezing it for a
/// checkpoint is O(1) and the serialization runs off the replica's thread.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    map: Map,
}

/// The checkpoint: every pair, sorted by key (canonical whatever the map's layout).
fn encode_pairs(map: &Map) -> Bytes {
    let mut pairs: Vec<(&Key, &Bytes)> = map.iter().collect();
    pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
    Bytes::from(postcard::to_stdvec(&pairs).expect("encoding into a Vec cannot fail"))
}

impl KvStore {
    /// An empty store whose map hashes with `seed` (the replica server passes a random one).
    pub fn with_hash_seed(seed: u64) -> Self {
        KvStore { map: Map::with_hasher(foldhash::fast::FixedState::with_seed(seed)) }
    }

    /// Applies one decoded operation.
    pub fn apply_op(&mut self, op: KvOp) -> KvReply {
        self.apply(op.as_slices())
    }

    /// Applies an operation borrowed from its request bytes: only what the store keeps is copied
    /// (a written value, and its key when new).
    pub fn apply(&mut self, op: KvOp<&[u8]>) -> KvReply {
        match op {
            KvOp::Get { key } => KvReply::Value(self.map.get(key).cloned()),
            KvOp::Put { key, value } => {
                self.put(key, value);
                KvReply::Done
            }
            KvOp::Cas { key, expected, new } => {
                let previous = self.map.get(key).cloned();
                let ok = previous.as_deref() == expected;
                if ok {
                    self.put(key, new);
                }
                KvReply::Cas { ok, previous }
            }
        }
    }

    /// Writes `value` at `key`; the key is copied only when it is new.
    fn put(&mut self, key: &[u8], value: &[u8]) {
        match self.map.get_mut(key) {
            Some(held) => *held = overwrite(std::mem::take(held), value),
            None => {
                self.map.insert(Key::copy_from_slice(key), Bytes::copy_from_slice(value));
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

/// `value` in place of `held`. Overwriting a key with a value of the same length (the steady state
/// of fixed-size writes) reuses the held buffer instead of allocating, but only when nothing else
/// holds it: `try_into_mut` fails while a pending Get reply or a frozen checkpoint's map shares
/// it, and those keep the old bytes.
fn overwrite(held: Bytes, value: &[u8]) -> Bytes {
    if held.len() == value.len() {
        if let Ok(mut unique) = held.try_into_mut() {
            unique.copy_from_slice(value);
            return unique.freeze();
        }
    }
    Bytes::copy_from_slice(value)
}

impl StateMachine for KvStore {
    fn execute(&mut self, op: &[u8]) -> Bytes {
        match postcard::from_bytes::<KvOp<&[u8]>>(op) {
            // The common case answers with the prebuilt reply instead of encoding one.
            Ok(KvOp::Put { key, value }) => {
                self.put(key, value);
                Bytes::from_static(DONE_REPLY)
            }
            Ok(op) => self.apply(op).encode(),
            Err(_) => KvReply::Malformed.encode(),
        }
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
        // A new map with this store's hasher (a plain `collect` would take the default seed).
        let mut map = Map::with_hasher(*self.map.hasher());
        map.extend(pairs.into_iter().map(|(key, value)| (Key::from(key), value)));
        self.map = map;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn op_strategy() -> impl Strategy<Value = KvOp> {
        // Short keys (held inline) and long ones (held shared), a few of each so they repeat.
        let key = prop_oneof![(0u8..6).prop_map(|k| vec![k; 1 + k as usize]), (0u8..3).prop_map(|k| vec![k; 40])]
            .prop_map(Bytes::from);
        let value = proptest::collection::vec(any::<u8>(), 0..20).prop_map(Bytes::from);
        prop_oneof![
            key.clone().prop_map(|key| KvOp::Get { key }),
            (key.clone(), value.clone()).prop_map(|(key, value)| KvOp::Put { key, value }),
            (key, proptest::option::of(value.clone()), value).prop_map(|(key, expected, new)| KvOp::Cas {
                key,
                expected,
                new
            }),
        ]
    }

    #[test]
    fn stores_seeded_differently_answer_and_checkpoint_alike_and_a_loaded_store_keeps_its_seed() {
        let (mut a, mut b) = (KvStore::with_hash_seed(1), KvStore::with_hash_seed(2));
        for n in 0..200u32 {
            let put = KvOp::Put { key: Bytes::from(n.to_string()), value: Bytes::from(vec![n as u8; 3]) };
            assert_eq!(a.apply_op(put.clone()), b.apply_op(put));
        }
        assert_eq!(a.save_checkpoint(), b.save_checkpoint(), "the checkpoint does not depend on the seed");
        let mut loaded = KvStore::with_hash_seed(7);
        loaded.load_checkpoint(&a.save_checkpoint()).unwrap();
        assert_eq!(loaded.get(b"42").map(|v| &v[..]), Some(&[42u8; 3][..]));
        use std::hash::BuildHasher;
        let probe = Key::copy_from_slice(b"probe");
        let seeded = foldhash::fast::FixedState::with_seed(7);
        assert_eq!(loaded.map.hasher().hash_one(&probe), seeded.hash_one(&probe), "loading kept the seed");
        assert_ne!(KvStore::default().map.hasher().hash_one(&probe), seeded.hash_one(&probe));
    }

    #[test]
    fn the_built_in_put_reply_is_done_encoded() {
        assert_eq!(&KvReply::Done.encode()[..], DONE_REPLY);
    }

    #[test]
    fn bytes_that_are_no_operation_get_a_malformed_reply() {
        let mut store = KvStore::default();
        assert_eq!(KvReply::decode(&store.execute(&[9, 9, 9])).unwrap(), KvReply::Malformed);
        assert!(store.is_empty());
    }

    fn put(store: &mut KvStore, key: &[u8], value: &[u8]) {
        let op = KvOp::Put { key: Bytes::copy_from_slice(key), value: Bytes::copy_from_slice(value) };
        assert_eq!(store.execute(&op.encode())[..], *DONE_REPLY);
    }

    #[test]
    fn overwriting_with_a_value_of_the_same_length_reuses_its_buffer() {
        let mut store = KvStore::default();
        put(&mut store, b"k", b"first");
        let buffer = store.get(b"k").unwrap().as_ptr();
        put(&mut store, b"k", b"again");
        assert_eq!(store.get(b"k").unwrap().as_ptr(), buffer, "rewritten in place, no allocation");
        assert_eq!(store.get(b"k").unwrap(), &b"again"[..]);
        put(&mut store, b"k", b"longer value");
        assert_eq!(store.get(b"k").unwrap(), &b"longer value"[..]);
    }

    #[test]
    fn a_value_a_reply_still_holds_is_not_rewritten() {
        let get = || KvOp::Get { key: &b"k"[..] };
        let mut store = KvStore::default();
        put(&mut store, b"k", b"first");
        drop(store.apply(get()));
        let buffer = store.get(b"k").unwrap().as_ptr();
        put(&mut store, b"k", b"again");
        assert_eq!(store.get(b"k").unwrap().as_ptr(), buffer, "a reply already dropped shares nothing");
        let KvReply::Value(Some(read)) = store.apply(get()) else { panic!("k is held") };
        put(&mut store, b"k", b"third");
        assert_eq!(read, &b"again"[..], "the pending reply keeps the value it read");
        assert_eq!(store.get(b"k").unwrap(), &b"third"[..]);
    }

    #[test]
    fn a_frozen_checkpoint_keeps_the_values_it_froze() {
        let mut store = KvStore::default();
        put(&mut store, b"k", b"first");
        let frozen = store.freeze();
        put(&mut store, b"k", b"again");
        let mut restored = KvStore::default();
        restored.load_checkpoint(&frozen()).unwrap();
        assert_eq!(restored.get(b"k").unwrap(), &b"first"[..], "the checkpoint serializes the value it froze");
        assert_eq!(store.get(b"k").unwrap(), &b"again"[..]);
    }

    proptest! {
        /// Executing encoded operations (the borrowing path) answers and stores exactly what a
        /// plain ordered map does.
        #[test]
        fn executed_operations_match_a_plain_map(ops in proptest::collection::vec(op_strategy(), 1..200)) {
            let mut store = KvStore::default();
            let mut model: BTreeMap<Bytes, Bytes> = BTreeMap::new();
            for op in ops {
                let expected = match op.clone() {
                    KvOp::Get { key } => KvReply::Value(model.get(&key).cloned()),
                    KvOp::Put { key, value } => {
                        model.insert(key, value);
                        KvReply::Done
                    }
                    KvOp::Cas { key, expected, new } => {
                        let previous = model.get(&key).cloned();
                        let ok = previous == expected;
                        if ok {
                            model.insert(key, new);
                        }
                        KvReply::Cas { ok, previous }
                    }
                };
                prop_assert_eq!(KvReply::decode(&store.execute(&op.encode())).unwrap(), expected);
            }
            let held: BTreeMap<Bytes, Bytes> =
                store.map.iter().map(|(k, v)| (Bytes::copy_from_slice(k.as_bytes()), v.clone())).collect();
            prop_assert_eq!(held, model);
        }
    }
}

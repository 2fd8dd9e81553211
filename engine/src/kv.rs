//! A key-value state machine (get / put / compare-and-set), used by tests, the simulator and the demo.

use crate::kv_map::{Held, KvMap};
use crate::state_machine::{Frozen, StateMachine};
use bytes::Bytes;
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

impl<'a> KvOp<&'a [u8]> {
    /// Decodes a request payload borrowing its byte strings (nothing is copied).
    pub fn decode_borrowed(bytes: &'a [u8]) -> Result<KvOp<&'a [u8]>, postcard::Error> {
        postcard::from_bytes(bytes)
    }

    /// The key an encoded operation names (every variant's first field), read without decoding
    /// the rest; `None` if the bytes do not start like an operation. A hint's worth of checking:
    /// `decode_borrowed` validates the whole operation before it executes.
    pub fn key_of(bytes: &'a [u8]) -> Option<&'a [u8]> {
        postcard::take_from_bytes::<(u32, &[u8])>(bytes).ok().map(|((_variant, key), _rest)| key)
    }
}

impl<B: Serialize> KvOp<B> {
    /// Encodes for a request payload over `out`, reusing its capacity (a load generator's
    /// sender builds every request in one buffer).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.clear();
        *out = postcard::to_extend(self, std::mem::take(out)).expect("encoding into a Vec cannot fail");
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

/// The key-value store. Its map (`kv_map`) hashes with foldhash rather than SipHash: hashing was
/// the top callgrind entry once the rest was tuned. The seed is the store's: the replica server
/// draws a random one, so clients (who hold the cluster secret) cannot compute keys that collide;
/// `default()` uses a fixed one, so the simulator and `decree-bench callgrind` repeat exactly (a
/// random seed moved the instruction count by about 1%). The checkpoint lists pairs sorted by key,
/// so replicas with different seeds write the same bytes. Freezing it for a checkpoint shares the
/// map's shards, and the serialization runs off the replica's thread.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    map: KvMap,
}

/// The checkpoint: every pair, sorted by key (canonical whatever the map's layout), encoded into
/// one buffer sized up front.
///
/// A 100,000-key checkpoint took 18-23 ms of a replica's CPU to serialize: the sort compared keys
/// in the map's scattered buckets (a cache miss on both sides of a compare), postcard's `Vec`
/// flavor copied byte by byte, and the encoder read the buckets in key order one miss at a time.
/// Now each pair is sorted with its key's first 16 bytes beside it (`sort_prefix`), the encoding
/// goes into a slice, and the buckets are read in groups: about 7 ms (docs/benchmarks.md,
/// session 12).
fn encode_pairs(map: &KvMap) -> Bytes {
    let mut pairs: Vec<(u128, Held<'_>, Held<'_>)> =
        map.iter().map(|(key, value)| (sort_prefix(key.as_bytes()), key, value)).collect();
    pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.as_bytes().cmp(b.1.as_bytes())));
    // Varint lengths take at most 10 bytes each. Encoded into a slice (a `memcpy` per byte
    // string), not through postcard's `Vec` flavors, which extend byte by byte.
    let encoded = |(_, key, value): &(u128, Held<'_>, Held<'_>)| 20 + key.as_bytes().len() + value.as_bytes().len();
    let bound = 10 + pairs.iter().map(encoded).sum::<usize>();
    let mut out = vec![0u8; bound];
    let used = postcard::to_slice(&SortedPairs(&pairs), &mut out).expect("the bound covers the encoding").len();
    out.truncate(used);
    Bytes::from(out)
}

/// A key's first 16 bytes as a big-endian number, zero-padded: keys whose prefixes differ order as
/// their bytes do (a shorter key that is a prefix of a longer one compares equal here or lower, and
/// the full compare settles ties).
fn sort_prefix(key: &[u8]) -> u128 {
    let mut prefix = [0u8; 16];
    let len = key.len().min(16);
    prefix[..len].copy_from_slice(&key[..len]);
    u128::from_be_bytes(prefix)
}

/// The sorted pairs, serialized as the `(key, value)` sequence the checkpoint format holds.
struct SortedPairs<'a>(&'a [(u128, Held<'a>, Held<'a>)]);

impl Serialize for SortedPairs<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        // In key order the buckets are scattered: a group's are loaded back to back first, so
        // their cache misses overlap (as the applier's groups do).
        for group in self.0.chunks(8) {
            for (_, key, value) in group {
                std::hint::black_box((key.as_bytes().first(), value.as_bytes().last()));
            }
            for (_, key, value) in group {
                seq.serialize_element(&(key, value))?;
            }
        }
        seq.end()
    }
}

impl KvStore {
    /// An empty store whose map hashes with `seed` (the replica server passes a random one).
    pub fn with_hash_seed(seed: u64) -> Self {
        KvStore { map: KvMap::with_hasher(foldhash::fast::FixedState::with_seed(seed)) }
    }

    /// Applies one decoded operation.
    pub fn apply_op(&mut self, op: KvOp) -> KvReply {
        self.apply(op.as_slices())
    }

    /// Applies an operation borrowed from its request bytes: only what the store keeps is copied
    /// (a written value, and its key when new).
    pub fn apply(&mut self, op: KvOp<&[u8]>) -> KvReply {
        match op {
            KvOp::Get { key } => KvReply::Value(self.map.get(key).map(|held| held.to_bytes())),
            KvOp::Put { key, value } => {
                self.map.put(key, value);
                KvReply::Done
            }
            KvOp::Cas { key, expected, new } => {
                let previous = self.map.get(key).map(|held| held.to_bytes());
                let ok = previous.as_deref() == expected;
                if ok {
                    self.map.put(key, new);
                }
                KvReply::Cas { ok, previous }
            }
        }
    }

    /// A Get's encoded reply, `KvReply::Value` serialized straight from the bucket: no `Bytes`
    /// copy of the value on the way (every read runs this).
    pub fn get_reply(&self, key: &[u8]) -> Bytes {
        /// `KvReply::Value`'s encoding (variant 0, then the optional byte string), borrowed.
        #[derive(Serialize)]
        enum Borrowed<'a> {
            Value(Option<Held<'a>>),
        }
        Bytes::from(postcard::to_stdvec(&Borrowed::Value(self.map.get(key))).expect("encoding into a Vec cannot fail"))
    }

    /// The value held at `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.get(key).map(|held| held.as_bytes())
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
        match KvOp::decode_borrowed(op) {
            // The common case answers with the prebuilt reply instead of encoding one.
            Ok(KvOp::Put { key, value }) => {
                self.map.put(key, value);
                Bytes::from_static(DONE_REPLY)
            }
            Ok(KvOp::Get { key }) => self.get_reply(key),
            Ok(op) => self.apply(op).encode(),
            Err(_) => KvReply::Malformed.encode(),
        }
    }

    fn prefetch(&self, op: &[u8]) {
        if let Some(key) = KvOp::key_of(op) {
            self.map.prefetch(key);
        }
    }

    fn save_checkpoint(&self) -> Bytes {
        encode_pairs(&self.map)
    }

    fn freeze(&mut self) -> Frozen {
        let map = self.map.snapshot();
        Box::new(move || encode_pairs(&map))
    }

    fn load_checkpoint(&mut self, data: &[u8]) -> Result<(), String> {
        // Borrowed from `data`: each key and value is copied once, into the map.
        let pairs: Vec<(&[u8], &[u8])> =
            postcard::from_bytes(data).map_err(|e| format!("kv checkpoint does not decode: {e}"))?;
        // Written sorted by key, each once: anything else is not a checkpoint this store wrote
        // (and would save back to different bytes).
        if let Some(at) = pairs.windows(2).position(|pair| pair[0].0 >= pair[1].0) {
            return Err(format!("kv checkpoint keys are not strictly ascending at pair {}", at + 1));
        }
        // A new map with this store's hasher (a plain `collect` would take the default seed).
        let mut map = KvMap::with_hasher(*self.map.hasher());
        for (key, value) in pairs {
            map.put(key, value);
        }
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
        // Short keys and long ones, a few of each so they repeat.
        let key = prop_oneof![(0u8..6).prop_map(|k| vec![k; 1 + k as usize]), (0u8..3).prop_map(|k| vec![k; 40])]
            .prop_map(Bytes::from);
        // Short values and long ones: pairs on both sides of the bucket's limit.
        let value =
            prop_oneof![proptest::collection::vec(any::<u8>(), 0..20), proptest::collection::vec(any::<u8>(), 60..100)]
                .prop_map(Bytes::from);
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
        assert_eq!(loaded.get(b"42"), Some(&[42u8; 3][..]));
        use std::hash::BuildHasher;
        let probe: &[u8] = b"probe";
        let seeded = foldhash::fast::FixedState::with_seed(7);
        assert_eq!(loaded.map.hasher().hash_one(probe), seeded.hash_one(probe), "loading kept the seed");
        assert_ne!(KvStore::default().map.hasher().hash_one(probe), seeded.hash_one(probe));
    }

    #[test]
    fn an_operation_encoded_into_a_used_buffer_encodes_as_alone() {
        let mut out = vec![0xee; 100];
        let op = KvOp::Put { key: &b"key"[..], value: &b"value"[..] };
        op.encode_into(&mut out);
        assert_eq!(out, KvOp::Put { key: Bytes::from_static(b"key"), value: Bytes::from_static(b"value") }.encode());
    }

    #[test]
    fn a_checkpoint_with_unsorted_or_repeated_keys_is_refused() {
        let encode = |pairs: &[(&[u8], &[u8])]| postcard::to_stdvec(pairs).unwrap();
        let mut store = KvStore::default();
        store.load_checkpoint(&encode(&[(b"a", b"1"), (b"b", b"2")])).unwrap();
        assert_eq!(store.len(), 2);
        for bad in [encode(&[(b"b", b"1"), (b"a", b"2")]), encode(&[(b"a", b"1"), (b"a", b"2")])] {
            let error = store.load_checkpoint(&bad).unwrap_err();
            assert!(error.contains("not strictly ascending at pair 1"), "{error}");
        }
        assert_eq!(store.get(b"b"), Some(&b"2"[..]), "a refused checkpoint leaves the store as it was");
    }

    #[test]
    fn a_get_reply_encodes_as_the_value_reply() {
        let mut store = KvStore::default();
        store.apply_op(KvOp::Put { key: Bytes::from_static(b"k"), value: Bytes::from(vec![7u8; 64]) });
        for key in [&b"k"[..], b"absent"] {
            let expected = KvReply::Value(store.get(key).map(Bytes::copy_from_slice)).encode();
            assert_eq!(store.get_reply(key), expected);
        }
    }

    #[test]
    fn the_key_of_an_encoded_operation_is_its_key() {
        let key = Bytes::from_static(b"some key");
        let value = Bytes::from(vec![3u8; 300]);
        for op in [
            KvOp::Get { key: key.clone() },
            KvOp::Put { key: key.clone(), value: value.clone() },
            KvOp::Cas { key: key.clone(), expected: Some(value.clone()), new: value },
        ] {
            assert_eq!(KvOp::key_of(&op.encode()), Some(&key[..]), "{op:?}");
        }
        assert_eq!(KvOp::key_of(&[0, 200]), None, "a key longer than the bytes");
        assert_eq!(KvOp::key_of(&[]), None);
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

    /// Values too long for a bucket (short ones are written in their bucket).
    fn long(fill: u8) -> Vec<u8> {
        vec![fill; crate::kv_map::PAIR_INLINE_BYTES + 36]
    }

    #[test]
    fn overwriting_a_long_value_with_one_of_the_same_length_reuses_its_buffer() {
        let mut store = KvStore::default();
        put(&mut store, b"k", &long(1));
        let buffer = store.get(b"k").unwrap().as_ptr();
        put(&mut store, b"k", &long(2));
        assert_eq!(store.get(b"k").unwrap().as_ptr(), buffer, "rewritten in place, no allocation");
        assert_eq!(store.get(b"k").unwrap(), &long(2)[..]);
        put(&mut store, b"k", b"short now");
        assert_eq!(store.get(b"k").unwrap(), &b"short now"[..]);
    }

    #[test]
    fn a_value_a_reply_still_holds_is_not_rewritten() {
        let get = || KvOp::Get { key: &b"k"[..] };
        for (first, second, third) in [(long(1), long(2), long(3)), (b"1".to_vec(), b"2".to_vec(), b"3".to_vec())] {
            let mut store = KvStore::default();
            put(&mut store, b"k", &first);
            put(&mut store, b"k", &second);
            let KvReply::Value(Some(read)) = store.apply(get()) else { panic!("k is held") };
            put(&mut store, b"k", &third);
            assert_eq!(read, &second[..], "the pending reply keeps the value it read");
            assert_eq!(store.get(b"k").unwrap(), &third[..]);
        }
    }

    #[test]
    fn a_frozen_checkpoint_keeps_the_values_it_froze() {
        for (first, again) in [(b"first".to_vec(), b"again".to_vec()), (long(1), long(2))] {
            let mut store = KvStore::default();
            put(&mut store, b"k", &first);
            let frozen = store.freeze();
            put(&mut store, b"k", &again);
            put(&mut store, b"new", b"after the freeze");
            let mut restored = KvStore::default();
            restored.load_checkpoint(&frozen()).unwrap();
            assert_eq!(restored.get(b"k").unwrap(), &first[..], "the checkpoint serializes the value it froze");
            assert_eq!(restored.get(b"new"), None);
            assert_eq!(store.get(b"k").unwrap(), &again[..]);
        }
    }

    proptest! {
        /// A checkpoint holds the pairs in key order, byte for byte as a sorted map encodes them.
        /// The keys share long prefixes and may end in zero bytes, so their 16-byte sort prefixes
        /// often tie and the full compare decides.
        #[test]
        fn a_checkpoint_holds_the_pairs_in_key_order(
            pairs in proptest::collection::vec((0usize..24, 0u8..3, proptest::collection::vec(any::<u8>(), 0..100)), 1..80),
        ) {
            let mut store = KvStore::default();
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            for (shared, last, value) in pairs {
                let mut key = vec![b'k'; shared];
                key.push(last);
                put(&mut store, &key, &value);
                model.insert(key, value);
            }
            let expected = postcard::to_stdvec(&model.iter().collect::<Vec<_>>()).unwrap();
            prop_assert_eq!(&store.save_checkpoint()[..], &expected[..]);
            prop_assert_eq!(&store.freeze()()[..], &expected[..]);
        }

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
                store.map.iter().map(|(k, v)| (Bytes::copy_from_slice(k.as_bytes()), v.to_bytes())).collect();
            prop_assert_eq!(held, model);
        }
    }
}

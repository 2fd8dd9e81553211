//! The KV store's map: a flat hash table split into copy-on-write shards.
//!
//! Freezing the map for a checkpoint clones the shard list (one reference count per shard), and
//! the first write to a shard after that copies the shard, so a checkpoint costs one copy of the
//! map spread over the writes that follow, never a stop of the replica's thread. A lookup is the
//! shard pointer (the list stays in cache), the shard's control bytes and the bucket, which holds
//! the key and a short value. It replaced imbl's persistent hash map (HAMT): with 100,000 keys on
//! each of three replicas, the trie's node hops and the separate value allocations missed cache on
//! every level, and applying a put took about 470 ns per replica against about 80 ns here
//! (docs/benchmarks.md, session 5).

use crate::kv_key::Key;
use crate::kv_value::Value;
use foldhash::fast::FixedState;
use hashbrown::HashTable;
use std::hash::BuildHasher;
use std::sync::Arc;

/// Shards in every map: enough that copying one after a checkpoint stays small (about 100 keys at
/// 100,000 keys, 10,000 at 10 million), few enough that the list (8 KiB) stays in cache.
const SHARD_BITS: u32 = 10;
const SHARDS: usize = 1 << SHARD_BITS;
/// The shard is taken from these hash bits: clear of the low bits that place a key in its shard's
/// table and of the top seven hashbrown keeps as the control byte, so one shard's keys still
/// spread over its table.
const SHARD_SHIFT: u32 = 40;

type Shard = HashTable<(Key, Value)>;

/// The map. Clones share every shard until one side writes to it.
#[derive(Clone)]
pub struct KvMap {
    shards: Box<[Option<Arc<Shard>>]>,
    hasher: FixedState,
    len: usize,
}

impl KvMap {
    /// An empty map hashing with `hasher`.
    pub fn with_hasher(hasher: FixedState) -> KvMap {
        KvMap { shards: vec![None; SHARDS].into_boxed_slice(), hasher, len: 0 }
    }

    /// The map's hasher.
    pub fn hasher(&self) -> &FixedState {
        &self.hasher
    }

    /// The value held at `key`.
    pub fn get(&self, key: &[u8]) -> Option<&Value> {
        let hash = self.hasher.hash_one(key);
        let shard = self.shards[shard_index(hash)].as_deref()?;
        shard.find(hash, |(held, _)| held.as_bytes() == key).map(|(_, value)| value)
    }

    /// Writes `value` at `key`; the key is copied only when it is new. Copies the key's shard
    /// first if a frozen checkpoint still shares it.
    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        let hash = self.hasher.hash_one(key);
        let hasher = &self.hasher;
        let shard = Arc::make_mut(self.shards[shard_index(hash)].get_or_insert_with(Default::default));
        match shard.find_mut(hash, |(held, _)| held.as_bytes() == key) {
            Some((_, held)) => held.set(value),
            None => {
                shard.insert_unique(hash, (Key::copy_from_slice(key), Value::copy_from_slice(value)), |(key, _)| {
                    hasher.hash_one(key.as_bytes())
                });
                self.len += 1;
            }
        }
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every pair, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Value)> {
        self.shards.iter().flatten().flat_map(|shard| shard.iter()).map(|(key, value)| (key, value))
    }
}

fn shard_index(hash: u64) -> usize {
    (hash >> SHARD_SHIFT) as usize & (SHARDS - 1)
}

impl Default for KvMap {
    /// The fixed default seed (the simulator and callgrind repeat exactly).
    fn default() -> KvMap {
        KvMap::with_hasher(FixedState::default())
    }
}

impl PartialEq for KvMap {
    /// Same pairs, whatever the seeds and layouts.
    fn eq(&self, other: &KvMap) -> bool {
        self.len == other.len && self.iter().all(|(key, value)| other.get(key.as_bytes()) == Some(value))
    }
}

impl Eq for KvMap {}

impl std::fmt::Debug for KvMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_clone_keeps_its_pairs_while_the_original_is_written() {
        let mut map = KvMap::default();
        for n in 0..5_000u32 {
            map.put(&n.to_be_bytes(), &[1]);
        }
        let frozen = map.clone();
        for n in 0..5_000u32 {
            map.put(&n.to_be_bytes(), &[2]);
        }
        map.put(b"new", b"x");
        assert!(frozen.iter().all(|(_, value)| value.as_bytes() == [1]));
        assert!(map.iter().filter(|(key, _)| key.as_bytes() != b"new").all(|(_, value)| value.as_bytes() == [2]));
        assert_eq!((frozen.len(), map.len()), (5_000, 5_001));
        assert!(frozen.get(b"new").is_none());
    }

    #[test]
    fn keys_spread_over_the_shards() {
        let mut map = KvMap::default();
        for n in 0..(SHARDS * 8) as u32 {
            map.put(&n.to_le_bytes(), b"v");
        }
        let used = map.shards.iter().flatten().count();
        assert!(used > SHARDS * 9 / 10, "{used} of {SHARDS} shards used");
        let largest = map.shards.iter().flatten().map(|shard| shard.len()).max().unwrap();
        assert!(largest < 40, "the fullest shard holds {largest} of about 8");
    }

    #[test]
    fn maps_with_different_seeds_and_the_same_pairs_are_equal() {
        let (mut a, mut b) =
            (KvMap::with_hasher(FixedState::with_seed(1)), KvMap::with_hasher(FixedState::with_seed(2)));
        for n in 0..300u32 {
            a.put(n.to_string().as_bytes(), &[n as u8]);
            b.put(n.to_string().as_bytes(), &[n as u8]);
        }
        assert_eq!(a, b);
        b.put(b"7", b"changed");
        assert_ne!(a, b);
    }

    proptest! {
        /// Puts and clones (taken between puts) hold exactly what a plain ordered map holds.
        #[test]
        fn the_map_holds_what_an_ordered_map_holds(
            writes in proptest::collection::vec((0u16..300, proptest::collection::vec(any::<u8>(), 0..80), any::<bool>()), 1..400)
        ) {
            let mut map = KvMap::default();
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            let mut snapshots = Vec::new();
            for (key, value, snapshot) in writes {
                let key = key.to_string().into_bytes();
                map.put(&key, &value);
                model.insert(key, value);
                if snapshot {
                    snapshots.push((map.clone(), model.clone()));
                }
            }
            snapshots.push((map, model));
            for (map, model) in snapshots {
                let held: BTreeMap<Vec<u8>, Vec<u8>> =
                    map.iter().map(|(key, value)| (key.as_bytes().to_vec(), value.as_bytes().to_vec())).collect();
                prop_assert_eq!(map.len(), model.len());
                prop_assert_eq!(held, model);
            }
        }
    }
}

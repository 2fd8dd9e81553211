//! The KV store's map: a flat hash table split into copy-on-write shards.
//!
//! A snapshot for a checkpoint shares every shard (one reference count per shard), and the first
//! write to a shard after that copies the shard (or takes it back, when the snapshot is gone), so
//! a checkpoint costs one copy of the map spread over the writes that follow, never a stop of the
//! replica's thread. Between snapshots a shard is owned outright and written without touching a
//! reference count: `Arc::make_mut` on every put was a locked instruction per put, which waited for
//! the previous put's cache-missing stores to drain (perf annotate, docs/benchmarks.md, session 12).
//! A lookup is the
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

type Table = HashTable<(Key, Value)>;

/// One shard of the map.
#[derive(Clone)]
enum Shard {
    /// Held by this map alone: written in place.
    Owned(Table),
    /// Shared with a snapshot: copied (or taken back) on the first write.
    Shared(Arc<Table>),
}

impl Shard {
    fn table(&self) -> &Table {
        match self {
            Shard::Owned(table) => table,
            Shard::Shared(table) => table,
        }
    }

    /// The table, made this map's own first if a snapshot shared it.
    fn table_mut(&mut self) -> &mut Table {
        if let Shard::Shared(_) = self {
            let Shard::Shared(shared) = std::mem::replace(self, Shard::Owned(Table::new())) else { unreachable!() };
            *self = Shard::Owned(Arc::unwrap_or_clone(shared));
        }
        match self {
            Shard::Owned(table) => table,
            Shard::Shared(_) => unreachable!("made owned just above"),
        }
    }

    /// Shares the table with a snapshot; returns the snapshot's handle.
    fn share(&mut self) -> Shard {
        if let Shard::Owned(table) = self {
            *self = Shard::Shared(Arc::new(std::mem::take(table)));
        }
        self.clone()
    }
}

/// The map. `snapshot` returns a copy that shares every shard until one side writes to it;
/// `clone` copies the shards this map owns.
#[derive(Clone)]
pub struct KvMap {
    shards: Box<[Shard]>,
    hasher: FixedState,
    len: usize,
}

impl KvMap {
    /// An empty map hashing with `hasher`.
    pub fn with_hasher(hasher: FixedState) -> KvMap {
        KvMap { shards: (0..SHARDS).map(|_| Shard::Owned(Table::new())).collect(), hasher, len: 0 }
    }

    /// A copy of the map as it is now, sharing every shard with this one: O(shards), and each
    /// side copies a shard on its first write to it.
    pub fn snapshot(&mut self) -> KvMap {
        KvMap { shards: self.shards.iter_mut().map(Shard::share).collect(), hasher: self.hasher, len: self.len }
    }

    /// The map's hasher.
    pub fn hasher(&self) -> &FixedState {
        &self.hasher
    }

    /// The value held at `key`.
    pub fn get(&self, key: &[u8]) -> Option<&Value> {
        let hash = self.hasher.hash_one(key);
        let shard = self.shards[shard_index(hash)].table();
        shard.find(hash, |(held, _)| held.as_bytes() == key).map(|(_, value)| value)
    }

    /// Writes `value` at `key`; the key is copied only when it is new. Copies the key's shard
    /// first if a snapshot still shares it.
    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        let hash = self.hasher.hash_one(key);
        let hasher = &self.hasher;
        let shard = self.shards[shard_index(hash)].table_mut();
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
        self.shards.iter().flat_map(|shard| shard.table().iter()).map(|(key, value)| (key, value))
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
    fn a_snapshot_keeps_its_pairs_while_the_original_is_written() {
        let mut map = KvMap::default();
        for n in 0..5_000u32 {
            map.put(&n.to_be_bytes(), &[1]);
        }
        let frozen = map.snapshot();
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
    fn a_written_snapshot_leaves_the_original_alone_and_a_dropped_one_is_taken_back() {
        let mut map = KvMap::default();
        for n in 0..2_000u32 {
            map.put(&n.to_be_bytes(), &[1]);
        }
        let mut written = map.snapshot();
        written.put(&7u32.to_be_bytes(), &[9]);
        assert_eq!(map.get(&7u32.to_be_bytes()).unwrap().as_bytes(), [1]);
        assert_eq!(written.get(&7u32.to_be_bytes()).unwrap().as_bytes(), [9]);
        drop(written);
        // Every shard is still marked shared; the first write takes its table back.
        assert!(map.shards.iter().all(|shard| matches!(shard, Shard::Shared(_))));
        for n in 0..2_000u32 {
            map.put(&n.to_be_bytes(), &[2]);
        }
        let written: Vec<_> = map.shards.iter().filter(|shard| !shard.table().is_empty()).collect();
        assert!(written.iter().all(|shard| matches!(shard, Shard::Owned(_))));
        assert!(map.iter().all(|(_, value)| value.as_bytes() == [2]));
        assert_eq!(map.len(), 2_000);
    }

    #[test]
    fn keys_spread_over_the_shards() {
        let mut map = KvMap::default();
        for n in 0..(SHARDS * 8) as u32 {
            map.put(&n.to_le_bytes(), b"v");
        }
        let used = map.shards.iter().filter(|shard| !shard.table().is_empty()).count();
        assert!(used > SHARDS * 9 / 10, "{used} of {SHARDS} shards used");
        let largest = map.shards.iter().map(|shard| shard.table().len()).max().unwrap();
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
        /// Puts, snapshots and clones (taken between puts) hold exactly what a plain ordered map
        /// holds.
        #[test]
        fn the_map_holds_what_an_ordered_map_holds(
            writes in proptest::collection::vec((0u16..300, proptest::collection::vec(any::<u8>(), 0..80), 0u8..4), 1..400)
        ) {
            let mut map = KvMap::default();
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            let mut snapshots = Vec::new();
            for (key, value, copy) in writes {
                let key = key.to_string().into_bytes();
                map.put(&key, &value);
                model.insert(key, value);
                match copy {
                    1 => snapshots.push((map.snapshot(), model.clone())),
                    2 => snapshots.push((map.clone(), model.clone())),
                    _ => {}
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

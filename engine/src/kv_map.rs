//! The KV store's map: flat hash tables split into copy-on-write shards.
//!
//! A key and its value that together fit `PAIR_INLINE_BYTES` sit side by side in one bucket of
//! 88 bytes, so a lookup compares bytes it has already loaded and a put writes the bucket it found.
//! A longer pair goes to the shard's second table, as two `Bytes`. The apply waits mostly on the
//! map's cache misses (100,000 keys on each of three replicas sharing one L3), so the bucket is kept
//! small: the key and the value each held in an inline-or-shared enum took 112 bytes
//! (docs/benchmarks.md, session 12).
//!
//! A snapshot for a checkpoint shares every shard (one reference count per shard), and the first
//! write to a shard after that copies the shard (or takes it back, when the snapshot is gone), so
//! a checkpoint costs one copy of the map spread over the writes that follow, never a stop of the
//! replica's thread. Between snapshots a shard is owned outright and written without touching a
//! reference count: `Arc::make_mut` on every put was a locked instruction per put, which waited for
//! the previous put's cache-missing stores to drain (perf annotate, docs/benchmarks.md, session 12).
//! It replaced imbl's persistent hash map (HAMT): the trie's node hops and the separate value
//! allocations missed cache on every level, and applying a put took about 470 ns per replica
//! against about 80 ns here (docs/benchmarks.md, session 5).

use bytes::Bytes;
use foldhash::fast::FixedState;
use hashbrown::HashTable;
use prefetch_index::prefetch_index;
use serde::{Serialize, Serializer};
use std::hash::BuildHasher;
use std::sync::Arc;

/// Shards in every map: enough that copying one after a checkpoint stays small (about 100 keys at
/// 100,000 keys, 10,000 at 10 million), few enough that the list stays in cache.
const SHARD_BITS: u32 = 10;
const SHARDS: usize = 1 << SHARD_BITS;
/// The shard is taken from these hash bits: clear of the low bits that place a key in its shard's
/// table and of the top seven hashbrown keeps as the control byte, so one shard's keys still
/// spread over its table.
const SHARD_SHIFT: u32 = 40;
/// Most bytes of key and value held together in a bucket (a 22-byte key beside a 64-byte value).
pub const PAIR_INLINE_BYTES: usize = 86;

/// A key and its value in one bucket: `bytes[..key_len]` is the key, the value follows it.
/// Bytes after the value are left from earlier contents and never read. `repr(C)`: `key_len` is
/// the first byte, which `KvMap::prefetch` relies on to reach every line a bucket spans.
#[repr(C)]
#[derive(Clone)]
struct Pair {
    key_len: u8,
    value_len: u8,
    bytes: [u8; PAIR_INLINE_BYTES],
}

impl Pair {
    fn fits(key: &[u8], value: &[u8]) -> bool {
        key.len() + value.len() <= PAIR_INLINE_BYTES
    }

    /// `key` and `value`, which must fit.
    fn new(key: &[u8], value: &[u8]) -> Pair {
        // The lengths must fit the `u8`s that record them.
        const { assert!(PAIR_INLINE_BYTES <= u8::MAX as usize) };
        let mut pair = Pair { key_len: key.len() as u8, value_len: 0, bytes: [0; PAIR_INLINE_BYTES] };
        pair.bytes[..key.len()].copy_from_slice(key);
        pair.set_value(value);
        pair
    }

    fn key(&self) -> &[u8] {
        &self.bytes[..self.key_len as usize]
    }

    fn value(&self) -> &[u8] {
        let at = self.key_len as usize;
        &self.bytes[at..at + self.value_len as usize]
    }

    /// Writes `value` after the key; it must fit beside it.
    fn set_value(&mut self, value: &[u8]) {
        let at = self.key_len as usize;
        self.bytes[at..at + value.len()].copy_from_slice(value);
        self.value_len = value.len() as u8;
    }
}

/// One shard's pairs: those that fit a bucket, and the longer ones. A key is in one of the two.
#[derive(Clone, Default)]
struct Tables {
    short: HashTable<Pair>,
    long: HashTable<(Bytes, Bytes)>,
}

/// One shard of the map.
#[derive(Clone)]
enum Shard {
    /// Held by this map alone: written in place.
    Owned(Tables),
    /// Shared with a snapshot: copied (or taken back) on the first write.
    Shared(Arc<Tables>),
}

impl Shard {
    fn tables(&self) -> &Tables {
        match self {
            Shard::Owned(tables) => tables,
            Shard::Shared(tables) => tables,
        }
    }

    /// The tables, made this map's own first if a snapshot shared them.
    fn tables_mut(&mut self) -> &mut Tables {
        if let Shard::Shared(_) = self {
            let Shard::Shared(shared) = std::mem::take(self) else { unreachable!() };
            *self = Shard::Owned(Arc::unwrap_or_clone(shared));
        }
        match self {
            Shard::Owned(tables) => tables,
            Shard::Shared(_) => unreachable!("made owned just above"),
        }
    }

    /// Shares the tables with a snapshot; returns the snapshot's handle.
    fn share(&mut self) -> Shard {
        if let Shard::Owned(tables) = self {
            *self = Shard::Shared(Arc::new(std::mem::take(tables)));
        }
        self.clone()
    }
}

impl Default for Shard {
    fn default() -> Shard {
        Shard::Owned(Tables::default())
    }
}

/// Bytes held by the map: a key or a value, in its bucket or in a `Bytes` of its own.
#[derive(Clone, Copy, Debug)]
pub enum Held<'a> {
    /// Inside a bucket.
    Inline(&'a [u8]),
    /// A long pair's own buffer.
    Shared(&'a Bytes),
}

impl<'a> Held<'a> {
    /// The bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        match *self {
            Held::Inline(bytes) => bytes,
            Held::Shared(bytes) => bytes,
        }
    }

    /// The bytes as `Bytes` (for a reply): shared when long, copied when inline.
    pub fn to_bytes(&self) -> Bytes {
        match *self {
            Held::Inline(bytes) => Bytes::copy_from_slice(bytes),
            Held::Shared(bytes) => bytes.clone(),
        }
    }
}

impl PartialEq for Held<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Serialize for Held<'_> {
    /// As a byte string, as `Bytes` serializes (the checkpoint's format).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.as_bytes())
    }
}

/// Replaces a long value. One of the same length is rewritten in its buffer when nothing else
/// holds it: `try_into_mut` fails while a pending Get reply shares it, and the reply keeps the old
/// bytes.
fn rewrite(held: &mut Bytes, value: &[u8]) {
    *held = match std::mem::take(held).try_into_mut() {
        Ok(mut unique) if unique.len() == value.len() => {
            unique.copy_from_slice(value);
            unique.freeze()
        }
        _ => Bytes::copy_from_slice(value),
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
        KvMap { shards: (0..SHARDS).map(|_| Shard::default()).collect(), hasher, len: 0 }
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
    pub fn get(&self, key: &[u8]) -> Option<Held<'_>> {
        let hash = self.hasher.hash_one(key);
        let tables = self.shards[shard_index(hash)].tables();
        if let Some(pair) = tables.short.find(hash, |pair| pair.key() == key) {
            return Some(Held::Inline(pair.value()));
        }
        if tables.long.is_empty() {
            return None;
        }
        tables.long.find(hash, |(held, _)| held == key).map(|(_, value)| Held::Shared(value))
    }

    /// Starts loading `key`'s bucket into the cache, for a put or get of it soon. The bucket is the
    /// first whose control byte matches (almost always the key's; no key compare, which would call
    /// `memcmp`). Only the control bytes are waited for: the bucket's lines are prefetched (its first,
    /// middle and last bytes: 88 bytes span at most three lines, and these touch each), so the core
    /// goes on to the next key's lookup while they load. A demand load of those bytes here held the
    /// core until both misses had resolved (session 15, docs/benchmarks.md). Changes nothing.
    pub fn prefetch(&self, key: &[u8]) {
        let hash = self.hasher.hash_one(key);
        if let Some(pair) = self.shards[shard_index(hash)].tables().short.find(hash, |_| true) {
            prefetch_index(std::slice::from_ref(&pair.key_len), 0);
            prefetch_index(pair.bytes.as_slice(), PAIR_INLINE_BYTES / 2);
            prefetch_index(pair.bytes.as_slice(), PAIR_INLINE_BYTES - 1);
        }
    }

    /// Writes `value` at `key`; the key is copied only when it is new. Copies the key's shard
    /// first if a snapshot still shares it.
    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        let hash = self.hasher.hash_one(key);
        let hasher = &self.hasher;
        let tables = self.shards[shard_index(hash)].tables_mut();
        if Pair::fits(key, value) {
            if let Some(pair) = tables.short.find_mut(hash, |pair| pair.key() == key) {
                return pair.set_value(value);
            }
            // New here, or moving from the long table.
            let moved = !tables.long.is_empty()
                && tables.long.find_entry(hash, |(held, _)| held == key).map(|entry| entry.remove()).is_ok();
            tables.short.insert_unique(hash, Pair::new(key, value), |pair| hasher.hash_one(pair.key()));
            self.len += usize::from(!moved);
        } else {
            if let Some((_, held)) = tables.long.find_mut(hash, |(held, _)| held == key) {
                return rewrite(held, value);
            }
            let moved = tables.short.find_entry(hash, |pair| pair.key() == key).map(|entry| entry.remove()).is_ok();
            let pair = (Bytes::copy_from_slice(key), Bytes::copy_from_slice(value));
            tables.long.insert_unique(hash, pair, |(held, _)| hasher.hash_one(held));
            self.len += usize::from(!moved);
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

    /// Every (key, value), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Held<'_>, Held<'_>)> {
        self.shards.iter().map(Shard::tables).flat_map(|tables| {
            let short = tables.short.iter().map(|pair| (Held::Inline(pair.key()), Held::Inline(pair.value())));
            short.chain(tables.long.iter().map(|(key, value)| (Held::Shared(key), Held::Shared(value))))
        })
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
        let bytes = |held: Held<'_>| Bytes::copy_from_slice(held.as_bytes());
        f.debug_map().entries(self.iter().map(|(key, value)| (bytes(key), bytes(value)))).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn value_at<'a>(map: &'a KvMap, key: &[u8]) -> Option<&'a [u8]> {
        map.get(key).map(|held| held.as_bytes())
    }

    #[test]
    fn the_bytes_prefetch_names_touch_every_line_a_bucket_can_span() {
        assert_eq!(std::mem::offset_of!(Pair, key_len), 0);
        let bytes = std::mem::offset_of!(Pair, bytes);
        let named = [0, bytes + PAIR_INLINE_BYTES / 2, bytes + PAIR_INLINE_BYTES - 1];
        for start in 0..64 {
            let spanned: Vec<usize> = (start..start + std::mem::size_of::<Pair>()).map(|byte| byte / 64).collect();
            let touched: Vec<usize> = named.iter().map(|offset| (start + offset) / 64).collect();
            assert!(spanned.iter().all(|line| touched.contains(line)), "a bucket at {start} bytes into a line");
        }
    }

    #[test]
    fn a_bucket_holds_a_22_byte_key_beside_a_64_byte_value_in_88_bytes() {
        assert_eq!(std::mem::size_of::<Pair>(), 88);
        let mut map = KvMap::default();
        map.put(&[1; 22], &[2; 64]);
        map.put(&[1; 23], &[2; 64]);
        let tables = map.shards.iter().map(Shard::tables);
        let (short, long) = tables.fold((0, 0), |(s, l), t| (s + t.short.len(), l + t.long.len()));
        assert_eq!((short, long), (1, 1), "the 87-byte pair is held long");
    }

    #[test]
    fn a_key_moves_between_the_tables_as_its_value_grows_and_shrinks() {
        let mut map = KvMap::default();
        let long = [7u8; 100];
        let values = [&b"short"[..], &long[..], &long[..5], &[][..], &long[..], &[9u8; 100][..]];
        for (n, next) in values.iter().enumerate() {
            map.put(b"k", next);
            map.put(&(n as u32).to_be_bytes(), next);
            assert_eq!(value_at(&map, b"k"), Some(*next));
            assert_eq!(map.len(), n + 2, "a move neither adds nor drops a key");
            assert_eq!(map.iter().filter(|(key, _)| key.as_bytes() == b"k").count(), 1, "held once");
        }
    }

    #[test]
    fn a_long_value_is_rewritten_in_its_buffer_unless_a_reply_still_holds_it() {
        let (first, second, third) = ([1u8; 100], [2u8; 100], [3u8; 100]);
        let mut map = KvMap::default();
        map.put(b"k", &first);
        let buffer = value_at(&map, b"k").unwrap().as_ptr();
        map.put(b"k", &second);
        assert_eq!(value_at(&map, b"k").unwrap().as_ptr(), buffer, "rewritten in place, no allocation");
        let reply = map.get(b"k").unwrap().to_bytes();
        map.put(b"k", &third);
        assert_eq!(&reply[..], &second[..], "the pending reply keeps the bytes it read");
        assert_eq!(value_at(&map, b"k"), Some(&third[..]));
    }

    #[test]
    fn held_bytes_serialize_as_bytes_do() {
        let long = Bytes::from(vec![5u8; 200]);
        for held in [Held::Inline(b"inline"), Held::Inline(b""), Held::Shared(&long)] {
            let as_bytes = postcard::to_stdvec(&Bytes::copy_from_slice(held.as_bytes())).unwrap();
            assert_eq!(postcard::to_stdvec(&held).unwrap(), as_bytes);
        }
    }

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
        assert_eq!(value_at(&map, &7u32.to_be_bytes()), Some(&[1][..]));
        assert_eq!(value_at(&written, &7u32.to_be_bytes()), Some(&[9][..]));
        drop(written);
        // Every shard is still marked shared; the first write takes its tables back.
        assert!(map.shards.iter().all(|shard| matches!(shard, Shard::Shared(_))));
        for n in 0..2_000u32 {
            map.put(&n.to_be_bytes(), &[2]);
        }
        let written: Vec<_> = map.shards.iter().filter(|shard| !shard.tables().short.is_empty()).collect();
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
        let used = map.shards.iter().filter(|shard| !shard.tables().short.is_empty()).count();
        assert!(used > SHARDS * 9 / 10, "{used} of {SHARDS} shards used");
        let largest = map.shards.iter().map(|shard| shard.tables().short.len()).max().unwrap();
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
        /// holds; values straddle the bucket's limit, so keys move between the two tables.
        #[test]
        fn the_map_holds_what_an_ordered_map_holds(
            writes in proptest::collection::vec((0u16..300, proptest::collection::vec(any::<u8>(), 0..120), 0u8..4), 1..400)
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
                prop_assert_eq!(map.iter().count(), model.len());
                prop_assert_eq!(held, model);
            }
        }
    }
}

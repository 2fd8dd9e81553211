//! A hash table of small entries whose lookup can be started early: `prefetch(key)` asks the
//! cache for the key's entry without waiting for it, so a loop that prefetches a group of keys
//! and then looks them up waits for their misses together, not one after another.
//!
//! It holds the applier's sessions (one entry per client, on every replica) and the leader's
//! requests awaiting their commit. Under load neither stays in cache between a client's requests:
//! at 2048 clients the session lookup's compare was 61% of `Driver::step`'s 9.8% of all samples,
//! and the `awaiting` remove's 71% of its 3% (perf annotate, docs/benchmarks.md, session 15).

use foldhash::fast::RandomState;
use hashbrown::hash_table::{Entry, HashTable};
use prefetch_index::prefetch_index;
use std::hash::{BuildHasher, Hash};

/// Largest entry held: it spans at most two cache lines, which `prefetch` reaches with two
/// prefetches.
const MAX_ENTRY_BYTES: usize = 64;

/// Entries by key. Randomly seeded, so clients cannot pick colliding keys.
pub struct FlatTable<K, V> {
    table: HashTable<(K, V)>,
    hasher: RandomState,
}

impl<K: Hash + Eq + Copy, V> FlatTable<K, V> {
    const ENTRY_FITS: () =
        assert!(std::mem::size_of::<(K, V)>() <= MAX_ENTRY_BYTES, "a FlatTable entry must fit 64 bytes");

    /// The key's entry, to read or fill in.
    pub fn entry(&mut self, key: K) -> Entry<'_, (K, V)> {
        let hasher = &self.hasher;
        self.table.entry(hasher.hash_one(key), |(held, _)| *held == key, |(held, _)| hasher.hash_one(held))
    }

    /// Holds `value` at `key`, replacing what was there.
    pub fn insert(&mut self, key: K, value: V) {
        match self.entry(key) {
            Entry::Occupied(mut held) => held.get_mut().1 = value,
            Entry::Vacant(free) => drop(free.insert((key, value))),
        }
    }

    /// Takes the value at `key` out. A lookup, not `entry`: a miss must not reserve room for an
    /// insert (a follower removes every applied request from its empty table).
    pub fn remove(&mut self, key: K) -> Option<V> {
        let found = self.table.find_entry(self.hasher.hash_one(key), |(held, _)| *held == key).ok()?;
        let ((_, value), _) = found.remove();
        Some(value)
    }

    /// Keeps only the entries for which `keep` says so.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.table.retain(|(key, value)| keep(key, value));
    }

    /// Starts loading `key`'s entry into the cache without waiting for it: the first entry whose
    /// control byte matches (almost always the key's) is prefetched, by its first byte and the
    /// byte just past it, whose lines cover every line an entry of at most 64 bytes spans.
    /// Changes nothing.
    pub fn prefetch(&self, key: K) {
        let () = Self::ENTRY_FITS;
        if let Some(entry) = self.table.find(self.hasher.hash_one(key), |_| true) {
            prefetch_index(std::slice::from_ref(entry), 0);
            prefetch_index(std::slice::from_ref(entry), 1);
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Every (key, value), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.table.iter().map(|(key, value)| (key, value))
    }
}

impl<K, V> Default for FlatTable<K, V> {
    fn default() -> Self {
        FlatTable { table: HashTable::new(), hasher: RandomState::default() }
    }
}

impl<K: Hash + Eq + Copy, V> FromIterator<(K, V)> for FlatTable<K, V> {
    /// A later entry for the same key replaces an earlier one.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(entries: I) -> Self {
        let mut table = FlatTable::default();
        entries.into_iter().for_each(|(key, value)| table.insert(key, value));
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// The cache line size `MAX_ENTRY_BYTES` is set against.
    const LINE_BYTES: usize = 64;

    proptest! {
        /// Inserts, removes, retains and prefetches, against std's map.
        #[test]
        fn the_table_holds_what_a_std_map_holds(
            ops in proptest::collection::vec((0u8..4, 0u16..64, any::<u32>()), 0..400)
        ) {
            let (mut table, mut model) = (FlatTable::<u16, u32>::default(), HashMap::new());
            for (op, key, value) in ops {
                match op {
                    0 => { table.insert(key, value); model.insert(key, value); }
                    1 => prop_assert_eq!(table.remove(key), model.remove(&key)),
                    2 => { table.retain(|_, v| *v % 3 != 0); model.retain(|_, v| *v % 3 != 0); }
                    _ => table.prefetch(key),
                }
                prop_assert_eq!(table.len(), model.len());
            }
            let held: HashMap<u16, u32> = table.iter().map(|(k, v)| (*k, *v)).collect();
            prop_assert_eq!(held, model);
        }
    }

    #[test]
    fn the_lines_of_an_entrys_first_byte_and_the_byte_after_it_hold_all_of_it() {
        for size in 1..=MAX_ENTRY_BYTES {
            for start in 0..LINE_BYTES {
                let prefetched = [start / LINE_BYTES, (start + size) / LINE_BYTES];
                let spanned = (start..start + size).map(|byte| byte / LINE_BYTES);
                assert!(spanned.clone().all(|line| prefetched.contains(&line)), "{size} bytes at {start}");
            }
        }
    }

    #[test]
    fn removing_a_missing_key_allocates_nothing() {
        let mut table = FlatTable::<u64, u64>::default();
        assert_eq!(table.remove(7), None);
        assert_eq!(table.table.capacity(), 0, "a miss reserved room for an insert");
    }

    #[test]
    fn a_later_entry_for_the_same_key_wins_when_built_from_a_list() {
        let table: FlatTable<u64, &str> = [(1, "a"), (2, "b"), (1, "c")].into_iter().collect();
        assert_eq!(table.len(), 2);
        let mut held: Vec<_> = table.iter().map(|(k, v)| (*k, *v)).collect();
        held.sort();
        assert_eq!(held, vec![(1, "c"), (2, "b")]);
    }
}

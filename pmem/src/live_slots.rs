//! The live slots' record locations, sorted by slot in one ring buffer. Appends almost always
//! go to a slot above every live one and discards cut a prefix, so both are a push or a cut at
//! an end, and the buffer's capacity is reused from one checkpoint to the next: an append
//! allocates nothing once the buffer has grown to the most live slots seen (an ordered tree
//! allocated a node every few appends). A slot filled in below the highest one is found by
//! binary search and inserted by shifting the shorter side.

use crate::state::Location;
use decree_engine::types::Slot;
use std::collections::VecDeque;

/// Live slots and where each one's latest record sits, in slot order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveSlots {
    sorted: VecDeque<(Slot, Location)>,
}

impl LiveSlots {
    /// Records `loc` as the latest record of `slot` (superseding an earlier one).
    pub fn insert(&mut self, slot: Slot, loc: Location) {
        match self.sorted.back() {
            Some(&(last, _)) if last >= slot => match self.position(slot) {
                Ok(i) => self.sorted[i].1 = loc,
                Err(i) => self.sorted.insert(i, (slot, loc)),
            },
            _ => self.sorted.push_back((slot, loc)),
        }
    }

    /// Forgets `from` and every slot above it.
    pub fn truncate_from(&mut self, from: Slot) {
        let keep = self.sorted.partition_point(|&(slot, _)| slot < from);
        self.sorted.truncate(keep);
    }

    /// Forgets every slot below `below`.
    pub fn discard_below(&mut self, below: Slot) {
        let drop = self.sorted.partition_point(|&(slot, _)| slot < below);
        self.sorted.drain(..drop);
    }

    /// Where the latest record of `slot` sits.
    pub fn get(&self, slot: Slot) -> Option<&Location> {
        self.position(slot).ok().map(|i| &self.sorted[i].1)
    }

    /// Whether `slot` is live.
    pub fn contains(&self, slot: Slot) -> bool {
        self.position(slot).is_ok()
    }

    /// Live slots and their locations, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (Slot, &Location)> + '_ {
        self.sorted.iter().map(|(slot, loc)| (*slot, loc))
    }

    /// Live slots in order.
    pub fn slots(&self) -> impl Iterator<Item = Slot> + '_ {
        self.sorted.iter().map(|&(slot, _)| slot)
    }

    /// Number of live slots.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Whether no slot is live.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    fn position(&self, slot: Slot) -> Result<usize, usize> {
        self.sorted.binary_search_by_key(&slot, |&(s, _)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use decree_engine::types::Ballot;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn loc(lsn: u64) -> Location {
        Location { lsn, ballot: Ballot { round: 1, leader: 1 }, payload_len: 0 }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(Slot, u64),
        Truncate(Slot),
        Discard(Slot),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u64..40, any::<u64>()).prop_map(|(slot, lsn)| Op::Insert(slot, lsn)),
            1 => (0u64..40).prop_map(Op::Truncate),
            1 => (0u64..40).prop_map(Op::Discard),
        ]
    }

    proptest! {
        /// Inserts anywhere, truncations and discards leave exactly what an ordered map holds.
        #[test]
        fn matches_an_ordered_map(ops in proptest::collection::vec(op(), 0..200)) {
            let mut live = LiveSlots::default();
            let mut model = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(slot, lsn) => {
                        live.insert(slot, loc(lsn));
                        model.insert(slot, loc(lsn));
                    }
                    Op::Truncate(from) => {
                        live.truncate_from(from);
                        drop(model.split_off(&from));
                    }
                    Op::Discard(below) => {
                        live.discard_below(below);
                        model = model.split_off(&below);
                    }
                }
                prop_assert_eq!(live.iter().map(|(s, l)| (s, *l)).collect::<Vec<_>>(), model.clone().into_iter().collect::<Vec<_>>());
                for slot in 0..41 {
                    prop_assert_eq!(live.get(slot), model.get(&slot));
                }
            }
        }
    }

    #[test]
    fn appends_after_a_discard_reuse_the_buffer() {
        let mut live = LiveSlots::default();
        for slot in 0..1000 {
            live.insert(slot, loc(slot));
        }
        live.discard_below(1000);
        let capacity = live.sorted.capacity();
        for slot in 1000..2000 {
            live.insert(slot, loc(slot));
        }
        assert_eq!(live.len(), 1000);
        // A ring buffer is reallocated only to grow, which changes its capacity.
        assert_eq!(live.sorted.capacity(), capacity, "appends after a discard reuse the buffer");
    }
}

//! The acceptor's in-memory log: a contiguous run of slots `base .. end`, each holding the value
//! accepted there and the ballot it was accepted at.

use crate::types::{Ballot, Entry, Slot, Value};
use std::collections::VecDeque;

/// One accepted slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSlot {
    /// Ballot the value was accepted at.
    pub ballot: Ballot,
    /// The value.
    pub value: Value,
}

/// Contiguous accepted slots from `base`. Slots below `base` were discarded after a checkpoint.
#[derive(Clone, Debug, Default)]
pub struct AcceptLog {
    base: Slot,
    slots: VecDeque<LogSlot>,
}

impl AcceptLog {
    /// An empty log starting at `base`.
    pub fn new(base: Slot) -> Self {
        AcceptLog { base, slots: VecDeque::new() }
    }

    /// First slot held.
    pub fn base(&self) -> Slot {
        self.base
    }

    /// One past the last slot held.
    pub fn end(&self) -> Slot {
        self.base + self.slots.len() as u64
    }

    /// The accepted value at `slot`, if held.
    pub fn get(&self, slot: Slot) -> Option<&LogSlot> {
        if slot < self.base {
            return None;
        }
        self.slots.get((slot - self.base) as usize)
    }

    /// Stores `value` at `slot` accepted at `ballot`. `slot` may overwrite a held slot or extend the
    /// log by exactly one; later slots are never dropped (an acceptor must not forget accepts).
    pub fn put(&mut self, slot: Slot, ballot: Ballot, value: Value) {
        assert!(slot >= self.base, "contract violated: log-put-above-base (slot {slot} < base {})", self.base);
        assert!(slot <= self.end(), "contract violated: log-contiguous (slot {slot} > end {})", self.end());
        let cell = LogSlot { ballot, value };
        if slot == self.end() {
            self.slots.push_back(cell);
        } else {
            self.slots[(slot - self.base) as usize] = cell;
        }
    }

    /// Forgets every slot below `slot` (covered by a checkpoint). Past the end, the log restarts
    /// empty at `slot`.
    pub fn discard_below(&mut self, slot: Slot) {
        if slot <= self.base {
            return;
        }
        let drop = ((slot - self.base) as usize).min(self.slots.len());
        self.slots.drain(..drop);
        self.base = slot;
    }

    /// The entries at `from ..` (clamped to the log), ascending.
    pub fn entries_from(&self, from: Slot) -> Vec<Entry> {
        let start = from.max(self.base);
        (start..self.end())
            .map(|slot| {
                let cell = self.get(slot).expect("slot within base..end");
                Entry { slot, ballot: cell.ballot, value: cell.value.clone() }
            })
            .collect()
    }

    /// The values at `start .. start + count` (clamped to the log end).
    pub fn values(&self, start: Slot, count: usize) -> crate::types::Values {
        let end = self.end().min(start + count as u64);
        (start..end).map(|slot| self.get(slot).expect("slot within base..end").value.clone()).collect()
    }
}

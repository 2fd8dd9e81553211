//! The simulated network's fault model: delay (hence reordering), drop, duplicate, and partitions
//! that may be asymmetric. All randomness comes from the run's seeded generator.

use std::collections::BTreeSet;

/// Fault rates of one run.
#[derive(Clone, Debug)]
pub struct NetworkFaults {
    /// Chance per message of being lost, in thousandths.
    pub drop_per_mille: u32,
    /// Chance per message of being delivered twice, in thousandths.
    pub duplicate_per_mille: u32,
    /// Shortest one-way delay.
    pub min_delay_us: u64,
    /// Longest one-way delay (delays are uniform in between, so messages reorder).
    pub max_delay_us: u64,
    /// Chance per message, in thousandths, of a stall: delivery up to `max_stall_us` late, so
    /// stale messages from deposed leaders arrive long after the fact.
    pub stall_per_mille: u32,
    /// Longest stall.
    pub max_stall_us: u64,
}

/// The network's current state.
#[derive(Debug, Default)]
pub struct Network {
    /// Directed links that deliver nothing: (from, to).
    blocked: BTreeSet<(usize, usize)>,
}

/// What happens to one message.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Lost.
    Dropped,
    /// Delivered once after a delay.
    Once(u64),
    /// Delivered twice, after each delay.
    Twice(u64, u64),
}

impl Network {
    /// Decides the fate of a message from `from` to `to` (replica indices; clients pass `None`).
    pub fn route(&self, rng: &mut fastrand::Rng, faults: &NetworkFaults, link: Option<(usize, usize)>) -> Delivery {
        if let Some(link) = link {
            if self.blocked.contains(&link) {
                return Delivery::Dropped;
            }
        }
        if rng.u32(0..1000) < faults.drop_per_mille {
            return Delivery::Dropped;
        }
        let delay = Self::delay(rng, faults);
        if rng.u32(0..1000) < faults.duplicate_per_mille {
            return Delivery::Twice(delay, Self::delay(rng, faults));
        }
        Delivery::Once(delay)
    }

    fn delay(rng: &mut fastrand::Rng, faults: &NetworkFaults) -> u64 {
        let delay = rng.u64(faults.min_delay_us..=faults.max_delay_us);
        if rng.u32(0..1000) < faults.stall_per_mille {
            return delay + rng.u64(0..=faults.max_stall_us);
        }
        delay
    }

    /// Blocks the directed link `from -> to`.
    pub fn block(&mut self, from: usize, to: usize) {
        self.blocked.insert((from, to));
    }

    /// Removes every partition.
    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Whether any link is blocked.
    pub fn partitioned(&self) -> bool {
        !self.blocked.is_empty()
    }
}

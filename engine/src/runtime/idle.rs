//! Adaptive spin-then-park: a consumer that found no work spins a little (cheap when work is about
//! to arrive), then yields (lets a co-located role run on a 2-core machine), then parks until a
//! producer unparks it or its deadline passes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Busy-wait iterations before yielding.
pub const DEFAULT_SPIN_ITERATIONS: u32 = 256;
/// `yield_now` calls before parking.
pub const DEFAULT_YIELD_ITERATIONS: u32 = 16;
/// Fewest CPUs on which idle consumers spin by default. Spinning pays only when the spinner has a
/// CPU to itself; below this a spinning core or persistence thread takes the CPU that the thread
/// holding the next message needs (measured on a 2-vCPU host running 3 replicas: ~1.6M
/// instructions and ~70 context switches per put at 1 client, most of them idle spinning).
pub const SPIN_MIN_CPUS: usize = 4;
/// `yield_now` calls before parking on hosts with fewer than `SPIN_MIN_CPUS` CPUs (which never
/// spin). A yield hands the CPU to any other runnable thread at once, so it takes nothing from the
/// thread holding the next message; while nothing else is runnable it keeps the CPU from going
/// idle. Where an idle vCPU halts at once (a wake-up across vCPUs costs 35-225 us, session 13), the
/// next message then finds its consumer awake. Four interleaved pairs, 256 against none (session
/// 15, docs/benchmarks.md): memory log over shm at 2048 clients 999k against 869k ops/s (medians),
/// file log at 64 clients 168k against 159k, one-client p50 185 against 188 us.
pub const SMALL_HOST_YIELD_ITERATIONS: u32 = 256;

/// Default (spin, yield) iterations for a host with `cpus` CPUs: the defaults above on hosts with
/// at least `SPIN_MIN_CPUS`, otherwise no spinning and `SMALL_HOST_YIELD_ITERATIONS` yields.
pub fn default_budget(cpus: usize) -> (u32, u32) {
    if cpus >= SPIN_MIN_CPUS {
        (DEFAULT_SPIN_ITERATIONS, DEFAULT_YIELD_ITERATIONS)
    } else {
        (0, SMALL_HOST_YIELD_ITERATIONS)
    }
}

/// Per-consumer idle state.
#[derive(Debug)]
pub struct Idler {
    spin_iterations: u32,
    yield_iterations: u32,
    idle_rounds: u32,
}

impl Idler {
    /// An idler that spins `spin_iterations` times and yields `yield_iterations` times before parking.
    pub fn new(spin_iterations: u32, yield_iterations: u32) -> Self {
        Idler { spin_iterations, yield_iterations, idle_rounds: 0 }
    }

    /// Work was found: the next idle period starts by spinning again.
    pub fn reset(&mut self) {
        self.idle_rounds = 0;
    }

    /// No work: wait a little. `sleeping` is the flag producers check before unparking this
    /// thread; `has_work` is re-checked after raising it so a push between the check and the park
    /// is never missed. Parks for at most `max_park`.
    pub fn idle(&mut self, sleeping: &AtomicBool, has_work: impl Fn() -> bool, max_park: Duration) {
        self.idle_rounds = self.idle_rounds.saturating_add(1);
        if self.idle_rounds <= self.spin_iterations {
            std::hint::spin_loop();
        } else if self.idle_rounds <= self.spin_iterations + self.yield_iterations {
            std::thread::yield_now();
        } else {
            sleeping.store(true, Ordering::SeqCst);
            if !has_work() && !max_park.is_zero() {
                std::thread::park_timeout(max_park);
            }
            sleeping.store(false, Ordering::SeqCst);
        }
    }
}

impl Default for Idler {
    fn default() -> Self {
        Idler::new(DEFAULT_SPIN_ITERATIONS, DEFAULT_YIELD_ITERATIONS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_hosts_only_yield_and_large_hosts_spin() {
        assert_eq!(default_budget(2), (0, SMALL_HOST_YIELD_ITERATIONS));
        assert_eq!(default_budget(SPIN_MIN_CPUS), (DEFAULT_SPIN_ITERATIONS, DEFAULT_YIELD_ITERATIONS));
    }
}

//! Cache-line ping-pong between two threads: the floor of any same-host handoff (what the shm
//! transport's one-sided stores cost at best). The two words sit on separate cache lines, like a
//! log region's entry word and ack word.

use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[repr(align(128))]
struct Line(AtomicU64);

/// Spins until `line` holds `round`, yielding now and then: with fewer free cores than spinners
/// the other side must get to run.
fn wait_for(line: &Line, round: u64) {
    let mut spins = 0u32;
    while line.0.load(Ordering::Acquire) != round {
        spins = spins.wrapping_add(1);
        if spins % 4096 == 0 {
            std::thread::yield_now();
        }
        std::hint::spin_loop();
    }
}

/// Round-trip times in nanoseconds of `iterations` ping-pongs. Both threads spin (yielding now
/// and then): on a loaded 2-core machine the tail includes preemption; the median is the line's cost.
pub fn shm_round_trip_ns(iterations: u64) -> Histogram<u64> {
    let lines = Arc::new((Line(AtomicU64::new(0)), Line(AtomicU64::new(0))));
    let peer = lines.clone();
    let echo = std::thread::spawn(move || {
        for round in 1..=iterations {
            wait_for(&peer.0, round);
            peer.1 .0.store(round, Ordering::Release);
        }
    });
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("constant bounds are valid");
    for round in 1..=iterations {
        let began = Instant::now();
        lines.0 .0.store(round, Ordering::Release);
        wait_for(&lines.1, round);
        histogram.saturating_record(began.elapsed().as_nanos() as u64);
    }
    echo.join().expect("shm echo thread panicked");
    histogram
}

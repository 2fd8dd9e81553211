//! Thread wake-up round trip: two threads hand a token back and forth through blocking channels,
//! so each hand-off wakes a sleeping thread (a futex wake, as the runtime's parked roles and the
//! replicas' socket threads are woken). Measured with both threads on one CPU and on two: on a
//! virtual machine whose idle vCPUs halt at once, waking a thread on the other CPU is a trip
//! through the hypervisor, and every hop of a commit between replicas pays one.

use crate::placement::{allowed_cpus, apply, Placement};
use hdrhistogram::Histogram;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// Pins the calling thread to `cpu` (the harness's own placement); false if refused.
fn pin_here(cpu: usize) -> bool {
    apply(Placement::Together { cpu }, &[], &[]).is_ok()
}

/// Round trips in µs of `iterations` hand-offs, the two threads pinned to the `first`-th and
/// the `second`-th of the CPUs this process may run on; None if there is no such CPU or pinning
/// is refused.
pub fn wake_round_trip_us(
    iterations: usize,
    first: usize,
    second: usize,
) -> Option<Histogram<u64>> {
    let cpus = allowed_cpus().ok()?;
    let (a, b) = (*cpus.get(first)?, *cpus.get(second)?);
    let (to_echo, from_main): (SyncSender<u64>, Receiver<u64>) = sync_channel(1);
    let (to_main, from_echo): (SyncSender<u64>, Receiver<u64>) = sync_channel(1);
    let echo = std::thread::spawn(move || {
        if !pin_here(b) {
            return false;
        }
        while let Ok(token) = from_main.recv() {
            if to_main.send(token).is_err() {
                break;
            }
        }
        true
    });
    let measured = std::thread::spawn(move || {
        if !pin_here(a) {
            return None;
        }
        let mut histogram = crate::histogram::new_histogram_us();
        for token in 0..iterations as u64 {
            let began = std::time::Instant::now();
            to_echo.send(token).ok()?;
            from_echo.recv().ok()?;
            histogram.saturating_record(began.elapsed().as_micros() as u64);
        }
        Some(histogram)
    })
    .join()
    .ok()
    .flatten();
    let echoed = echo.join().unwrap_or(false);
    measured.filter(|_| echoed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hand_off_round_trip_is_measured_on_one_cpu_and_refused_past_the_last() {
        let histogram = wake_round_trip_us(200, 0, 0).expect("CPU 0 exists and can be pinned");
        assert_eq!(histogram.len(), 200, "one sample per round trip");
        let cpus = allowed_cpus().map_or(0, |ids| ids.len());
        assert!(wake_round_trip_us(10, 0, cpus).is_none(), "there is no CPU {cpus}");
    }
}

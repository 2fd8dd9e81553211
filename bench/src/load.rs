//! What one load run asks for and what it measured, for any system under test.

use crate::histogram::{merge, new_histogram_us};
use crate::schedule::Arrival;
use hdrhistogram::Histogram;
use std::time::Duration;

/// One load run.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Concurrent outstanding operations (each a client session with one request in flight).
    pub clients: usize,
    /// TCP connections the clients are spread over (decree pipelines several clients per connection).
    pub connections: usize,
    /// Value size of each put.
    pub payload_bytes: usize,
    /// Distinct keys written.
    pub keys: u64,
    /// Unmeasured lead-in.
    pub warmup: Duration,
    /// Measured window.
    pub duration: Duration,
    /// Closed or open loop.
    pub arrival: Arrival,
    /// Print a progress line every second.
    pub progress: bool,
}

/// What a load run measured inside its window.
pub struct LoadOutcome {
    /// Latency from the intended start (coordinated-omission corrected).
    pub corrected: Histogram<u64>,
    /// Latency from the actual send.
    pub uncorrected: Histogram<u64>,
    /// How late the sender was: actual send minus intended start (open loop: the harness's own
    /// lateness plus waiting for a free session; closed loop: ~0).
    pub send_lag: Histogram<u64>,
    /// Operations completed in the window.
    pub ops: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Requests the server answered busy and were resent.
    pub busy_retries: u64,
    /// The window's length.
    pub elapsed_s: f64,
    /// Operations completed in each whole second of the window, in order.
    pub per_second: Vec<u64>,
}

/// One worker's measurements, in µs histograms; merged into a `LoadOutcome` at the end.
pub struct Recorder {
    /// From intended start.
    pub corrected: Histogram<u64>,
    /// From actual send.
    pub uncorrected: Histogram<u64>,
    /// Send minus intended start.
    pub send_lag: Histogram<u64>,
    /// Operations recorded.
    pub ops: u64,
    /// When the measured window starts (ns on the clock `record_ns` is given).
    window_start_ns: u64,
    /// Operations completed in each second since `window_start_ns`.
    per_second: Vec<u64>,
}

impl Recorder {
    /// Empty histograms, for a window starting at 0 ns.
    pub fn new() -> Recorder {
        Recorder::for_window_from(0)
    }

    /// Empty histograms, for a window starting at `window_start_ns`.
    pub fn for_window_from(window_start_ns: u64) -> Recorder {
        Recorder {
            corrected: new_histogram_us(),
            uncorrected: new_histogram_us(),
            send_lag: new_histogram_us(),
            ops: 0,
            window_start_ns,
            per_second: Vec::new(),
        }
    }

    /// Records one operation from its intended start, actual send and completion (ns on one clock).
    pub fn record_ns(&mut self, intended_ns: u64, sent_ns: u64, done_ns: u64) {
        self.ops += 1;
        let second = (done_ns.saturating_sub(self.window_start_ns) / 1_000_000_000) as usize;
        if self.per_second.len() <= second {
            self.per_second.resize(second + 1, 0);
        }
        self.per_second[second] += 1;
        self.corrected
            .saturating_record(done_ns.saturating_sub(intended_ns) / 1_000);
        self.uncorrected
            .saturating_record(done_ns.saturating_sub(sent_ns) / 1_000);
        self.send_lag
            .saturating_record(sent_ns.saturating_sub(intended_ns) / 1_000);
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl LoadOutcome {
    /// Merges the workers' recorders.
    pub fn merge<'a>(
        recorders: impl Iterator<Item = &'a Recorder> + Clone,
        errors: u64,
        busy_retries: u64,
        elapsed_s: f64,
    ) -> LoadOutcome {
        LoadOutcome {
            corrected: merge(recorders.clone().map(|r| &r.corrected)),
            uncorrected: merge(recorders.clone().map(|r| &r.uncorrected)),
            send_lag: merge(recorders.clone().map(|r| &r.send_lag)),
            ops: recorders.clone().map(|r| r.ops).sum(),
            errors,
            busy_retries,
            elapsed_s,
            per_second: (0..elapsed_s as usize)
                .map(|second| {
                    recorders
                        .clone()
                        .filter_map(|r| r.per_second.get(second))
                        .sum()
                })
                .collect(),
        }
    }
}

/// The key of operation `n` (the same sequence for every system): splitmix64 of `n`, so
/// consecutive operations land on scattered keys and every key is reached.
pub fn key_for(n: u64, keys: u64) -> String {
    let mut key = Vec::new();
    write_key(n, keys, &mut key);
    String::from_utf8(key).expect("keys are ASCII")
}

/// `key_for(n, keys)` written over `out`, reusing its capacity (the load generator's sender
/// builds a request per operation without allocating).
pub fn write_key(n: u64, keys: u64, out: &mut Vec<u8>) {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    out.clear();
    out.extend_from_slice(b"bench-");
    write_zero_padded(z % keys.max(1), 8, out);
}

/// `n` in decimal, zero-padded to at least `width` digits (as `{:0width$}` formats it, without
/// the formatting machinery, which was a visible share of the sender's time).
fn write_zero_padded(n: u64, width: usize, out: &mut Vec<u8>) {
    let mut digits = [b'0'; 20];
    let (mut rest, mut at) = (n, digits.len());
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let shown = (digits.len() - at).max(width.min(digits.len()));
    out.extend_from_slice(&digits[digits.len() - shown..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_splits_latency_into_lag_and_service() {
        let (mut a, mut b) = (Recorder::new(), Recorder::new());
        a.record_ns(0, 3_000_000, 4_000_000); // sent 3 ms late, served in 1 ms
        b.record_ns(10_000_000, 10_000_000, 10_500_000); // on time, 0.5 ms
        let outcome = LoadOutcome::merge([&a, &b].into_iter(), 1, 2, 1.0);
        assert_eq!(outcome.ops, 2);
        assert_eq!((outcome.errors, outcome.busy_retries), (1, 2));
        assert_eq!(
            outcome.corrected.max(),
            outcome.corrected.highest_equivalent(4_000)
        );
        assert_eq!(
            outcome.uncorrected.max(),
            outcome.uncorrected.highest_equivalent(1_000)
        );
        assert_eq!(
            outcome.send_lag.max(),
            outcome.send_lag.highest_equivalent(3_000)
        );
        assert_eq!(outcome.send_lag.min(), 0);
    }

    #[test]
    fn operations_are_counted_in_the_whole_second_of_the_window_they_completed_in() {
        let (mut a, mut b) = (
            Recorder::for_window_from(5_000_000_000),
            Recorder::for_window_from(5_000_000_000),
        );
        a.record_ns(5_000_000_000, 5_000_000_000, 5_000_000_001);
        a.record_ns(5_900_000_000, 5_900_000_000, 6_100_000_000);
        b.record_ns(6_000_000_000, 6_000_000_000, 6_999_999_999);
        b.record_ns(7_000_000_000, 7_000_000_000, 7_200_000_000); // in the partial third second
        let outcome = LoadOutcome::merge([&a, &b].into_iter(), 0, 0, 2.5);
        assert_eq!(
            outcome.per_second,
            vec![1, 2],
            "whole seconds only, summed over workers"
        );
    }

    #[test]
    fn a_written_key_is_the_key_and_replaces_what_the_buffer_held() {
        let mut out = b"left over from a longer key".to_vec();
        for n in [0, 1, 77, u64::MAX] {
            write_key(n, 100_000, &mut out);
            assert_eq!(out, key_for(n, 100_000).into_bytes());
        }
    }

    #[test]
    fn zero_padding_formats_as_the_standard_library_does() {
        for n in [0, 7, 42, 12_345_678, 123_456_789, u64::MAX] {
            let mut out = Vec::new();
            write_zero_padded(n, 8, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{n:08}"));
        }
    }

    #[test]
    fn keys_stay_in_range_and_spread() {
        let keys: std::collections::BTreeSet<String> =
            (0..1_000).map(|n| key_for(n, 100)).collect();
        assert!(keys.len() > 90, "{} distinct keys of 100", keys.len());
        assert!(keys
            .iter()
            .all(|k| k["bench-".len()..].parse::<u64>().unwrap() < 100));
    }
}

//! When each operation is *meant* to start. Closed loop: as soon as the previous one finished.
//! Open loop: at a fixed arrival rate, whatever the system does. Latency is measured from the
//! intended start, so a stalled system is charged for the requests it kept from being sent
//! (coordinated omission, Gil Tene's term); the uncorrected latency is kept beside it.

use std::time::{Duration, Instant};

/// How load arrives.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arrival {
    /// Each client sends its next request when its previous one completed.
    Closed,
    /// Requests arrive at `rate_per_s` in total, spread evenly over the senders.
    Open {
        /// Total arrival rate.
        rate_per_s: f64,
    },
}

impl Arrival {
    /// "closed" or "open".
    pub fn name(&self) -> &'static str {
        match self {
            Arrival::Closed => "closed",
            Arrival::Open { .. } => "open",
        }
    }
}

/// The intended send times of one of `senders` open-loop senders sharing a total rate.
#[derive(Clone, Debug)]
pub struct Schedule {
    first: Instant,
    interval_ns: f64,
    next_index: u64,
}

impl Schedule {
    /// Sender `sender` of `senders`, starting at `start`; senders are staggered by a fraction of
    /// an interval so their arrivals interleave instead of bunching.
    pub fn new(start: Instant, rate_per_s: f64, sender: usize, senders: usize) -> Schedule {
        assert!(
            rate_per_s > 0.0 && senders > 0 && sender < senders,
            "schedule: rate > 0 and sender < senders"
        );
        let interval_ns = 1e9 * senders as f64 / rate_per_s;
        let offset_ns = interval_ns * sender as f64 / senders as f64;
        Schedule {
            first: start + Duration::from_nanos(offset_ns as u64),
            interval_ns,
            next_index: 0,
        }
    }

    /// The intended time of the next operation (advances the schedule).
    pub fn next_intended(&mut self) -> Instant {
        let at =
            self.first + Duration::from_nanos((self.interval_ns * self.next_index as f64) as u64);
        self.next_index += 1;
        at
    }
}

/// Longest a pipelined sender blocks for sessions coming back before it looks at the clock again.
pub const MAX_SENDER_WAIT: Duration = Duration::from_millis(1);

/// An open-loop sender stops blocking this long before an intended start and polls the rest: a
/// blocked thread wakes ~7 µs after its deadline here (futex timeout, then an idle vCPU to wake).
pub const SENDER_EARLY_WAKE: Duration = Duration::from_micros(20);

/// How long a pipelined sender may block waiting for freed sessions. With no idle session it can
/// send nothing until one comes back (which wakes it). With one, a closed loop sends at once and
/// an open loop blocks until `SENDER_EARLY_WAKE` before the next intended start, never past it: a
/// sender that overslept an intended start would charge its own lateness to the system measured
/// (at 2,000 ops/s with one session, blocking a whole `MAX_SENDER_WAIT` made the harness 620 µs
/// late at the median).
pub fn sender_wait(idle_session: bool, until_next_intended: Option<Duration>) -> Duration {
    match (idle_session, until_next_intended) {
        (false, _) => MAX_SENDER_WAIT,
        (true, None) => Duration::ZERO,
        (true, Some(until)) => until.saturating_sub(SENDER_EARLY_WAKE).min(MAX_SENDER_WAIT),
    }
}

/// Open loop: timed waits of the calling thread end within ~1 µs of their deadline instead of the
/// default 50 µs timer slack, which would make every intended start late by up to that much.
/// Best effort: on failure the sender keeps the default slack and its lateness shows in send lag.
pub fn precise_timers() {
    let _ = nix::sys::prctl::set_timerslack(1_000);
}

/// Returns at `at`, not ~7 µs after: sleeps until `SENDER_EARLY_WAKE` before it, then polls,
/// yielding the CPU to any runnable thread (the cluster's, on a small host) meanwhile.
pub fn wait_until(at: Instant) {
    let now = Instant::now();
    if at > now + SENDER_EARLY_WAKE {
        std::thread::sleep(at - now - SENDER_EARLY_WAKE);
    }
    while Instant::now() < at {
        std::thread::yield_now();
    }
}

/// Latency in µs from the intended start (corrected) to completion; 0 if `done` precedes it.
pub fn latency_us(from: Instant, done: Instant) -> u64 {
    done.saturating_duration_since(from).as_micros() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_never_blocks_past_an_intended_start() {
        let ms = Duration::from_millis;
        assert_eq!(
            sender_wait(false, None),
            MAX_SENDER_WAIT,
            "all sessions out: wait for one"
        );
        assert_eq!(sender_wait(false, Some(ms(5))), MAX_SENDER_WAIT);
        assert_eq!(
            sender_wait(true, None),
            Duration::ZERO,
            "closed loop: send at once"
        );
        assert_eq!(
            sender_wait(true, Some(Duration::from_micros(450))),
            Duration::from_micros(450) - SENDER_EARLY_WAKE,
            "open loop: until just before the next start"
        );
        assert_eq!(sender_wait(true, Some(ms(7))), MAX_SENDER_WAIT, "capped");
        assert_eq!(
            sender_wait(true, Some(SENDER_EARLY_WAKE)),
            Duration::ZERO,
            "the last stretch is polled"
        );
        assert_eq!(
            sender_wait(true, Some(Duration::ZERO)),
            Duration::ZERO,
            "due now"
        );
    }

    #[test]
    fn waiting_until_an_instant_never_returns_before_it() {
        for micros in [0, 5, 30, 300] {
            let at = Instant::now() + Duration::from_micros(micros);
            wait_until(at);
            assert!(Instant::now() >= at, "{micros} µs");
        }
    }

    #[test]
    fn precise_timers_lower_the_slack_of_this_thread_only() {
        let before = nix::sys::prctl::get_timerslack().unwrap();
        let inside = std::thread::spawn(|| {
            precise_timers();
            nix::sys::prctl::get_timerslack().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(inside, 1_000);
        assert_eq!(nix::sys::prctl::get_timerslack().unwrap(), before);
    }

    #[test]
    fn senders_share_the_rate_and_interleave() {
        let start = Instant::now();
        let mut a = Schedule::new(start, 1_000.0, 0, 2);
        let mut b = Schedule::new(start, 1_000.0, 1, 2);
        let (a0, a1, b0) = (a.next_intended(), a.next_intended(), b.next_intended());
        assert_eq!(a0, start);
        assert_eq!(
            a1 - a0,
            Duration::from_millis(2),
            "each of 2 senders runs at 500/s"
        );
        assert_eq!(
            b0 - start,
            Duration::from_millis(1),
            "the second sender is staggered by half an interval"
        );
    }

    /// A sender that stalls for 100 ms at a 1000/s schedule: measured from the intended time, the
    /// requests that queued up behind the stall are charged for it; from the send time they are not.
    #[test]
    fn a_stall_is_charged_to_the_requests_it_delayed() {
        let start = Instant::now();
        let mut schedule = Schedule::new(start, 1_000.0, 0, 1);
        let service = Duration::from_micros(100);
        let mut free_at = start;
        let (mut corrected, mut uncorrected) = (
            crate::histogram::new_histogram_us(),
            crate::histogram::new_histogram_us(),
        );
        for i in 0..1_000 {
            let intended = schedule.next_intended();
            let sent = intended.max(free_at);
            let stall = if i == 100 {
                Duration::from_millis(100)
            } else {
                Duration::ZERO
            };
            let done = sent + service + stall;
            free_at = done;
            corrected.record(latency_us(intended, done)).unwrap();
            uncorrected.record(latency_us(sent, done)).unwrap();
        }
        // Uncorrected: one slow sample, the p99 looks perfect.
        assert_eq!(uncorrected.value_at_quantile(0.99), 100);
        // Corrected: ~100 requests waited behind the stall, so p90 still sits near the stall.
        assert!(
            corrected.value_at_quantile(0.95) >= 40_000,
            "p95 {}",
            corrected.value_at_quantile(0.95)
        );
        assert!(corrected.max() >= 100_000);
        assert_eq!(
            latency_us(start + Duration::from_millis(1), start),
            0,
            "completion before intent saturates to 0"
        );
    }
}

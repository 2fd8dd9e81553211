//! Exponential back-off with jitter between reconnect attempts.

use std::time::{Duration, Instant};

/// When to try reconnecting next.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
    next_at: Instant,
}

impl Backoff {
    /// Starts at `min`, doubling to at most `max`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            current: min,
            next_at: Instant::now(),
        }
    }

    /// Whether an attempt is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next_at
    }

    /// Records a failed attempt at `now`: the next is due after the current delay (with up to
    /// 25% jitter, so a crowd of leaders does not reconnect in lockstep), which then doubles.
    pub fn failed(&mut self, now: Instant) {
        let jitter = self.current.mul_f64(fastrand::f64() * 0.25);
        self.next_at = now + self.current + jitter;
        self.current = (self.current * 2).min(self.max);
    }

    /// Records a success: the next failure starts again from `min`.
    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(40));
        let t0 = Instant::now();
        assert!(b.due(t0));
        b.failed(t0);
        assert!(!b.due(t0 + Duration::from_millis(9)));
        assert!(b.due(t0 + Duration::from_millis(13)));
        b.failed(t0);
        b.failed(t0);
        b.failed(t0);
        assert!(
            b.due(t0 + Duration::from_millis(51)),
            "capped at 40 ms + 25% jitter"
        );
        assert!(!b.due(t0 + Duration::from_millis(39)));
        b.reset();
        b.failed(t0);
        assert!(b.due(t0 + Duration::from_millis(13)));
    }
}

//! A spare (`Membership::is_spare`) syncs late only while the leader's majority commits without it.
//!
//! When a replica on the commit path fails, the entries a spare deferred stay uncommitted until
//! the spare's late sync acknowledges them, and every commit waits a whole late window (one client
//! on one host: p50 71 us -> 1,325 us with the follower after the leader killed, before this
//! guard). So a spare watches the first write it defers: if that write is durable and its slot is
//! still not committed, twice in a row, the majority needed this replica, and it syncs promptly for
//! `backoff` before it tries again. While the failure lasts, each try costs two late windows. Why
//! twice: a single verdict also fires when the leader simply has not told this replica about a
//! commit yet (the last write before the load pauses is announced with the next heartbeat).

use std::time::{Duration, Instant};

/// Whether this replica may defer its syncs as a spare, judged from how its deferred writes fared.
#[derive(Debug)]
pub struct SpareGuard {
    /// The deferred write being judged: its persist ticket, and the log end when it was handed
    /// over (the write is about slots below it).
    watch: Option<(u64, u64)>,
    /// Prompt syncs until then: the majority needed this replica.
    prompt_until: Option<Instant>,
    /// The last verdict found the watched write's slots uncommitted.
    strike: bool,
    backoff: Duration,
}

impl SpareGuard {
    /// A guard that keeps a needed spare prompt for `backoff` before it defers again.
    pub fn new(backoff: Duration) -> Self {
        SpareGuard { watch: None, prompt_until: None, strike: false, backoff }
    }

    /// Whether a spare may defer its syncs at `now`.
    pub fn may_defer(&self, now: Instant) -> bool {
        self.prompt_until.is_none_or(|until| now >= until)
    }

    /// A spare deferred writes up to `ticket` while its log ended at `log_end`. The first write
    /// deferred since the last verdict is the one judged.
    pub fn deferred(&mut self, ticket: u64, log_end: u64) {
        self.watch.get_or_insert((ticket, log_end));
    }

    /// Writes up to ticket `upto` are durable and every slot below `commit` is chosen. If the
    /// watched write is among them and its slots are not all chosen, for the second verdict in a
    /// row, the leader's majority waited for this replica: returns true, and `may_defer` is false
    /// until `now + backoff`.
    pub fn persisted(&mut self, upto: u64, commit: u64, now: Instant) -> bool {
        let Some((ticket, log_end)) = self.watch else { return false };
        if upto < ticket {
            return false;
        }
        self.watch = None;
        let uncommitted = commit < log_end;
        let needed = uncommitted && self.strike;
        self.strike = uncommitted && !needed;
        if needed {
            self.prompt_until = Some(now + self.backoff);
        }
        needed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spare_whose_deferred_slots_committed_without_it_keeps_deferring() {
        let now = Instant::now();
        let mut guard = SpareGuard::new(Duration::from_secs(1));
        guard.deferred(7, 100);
        guard.deferred(9, 104);
        assert!(!guard.persisted(6, 90, now), "an earlier write is no verdict");
        assert!(!guard.persisted(8, 100, now), "slots below 100 were chosen while ticket 7 waited");
        assert!(guard.may_defer(now));
    }

    #[test]
    fn a_spare_the_majority_waited_for_syncs_promptly_then_tries_again() {
        let now = Instant::now();
        let backoff = Duration::from_secs(1);
        let mut guard = SpareGuard::new(backoff);
        guard.deferred(5, 90);
        assert!(!guard.persisted(5, 89, now), "one open slot is not yet a verdict: the news may be late");
        assert!(guard.may_defer(now));
        guard.deferred(7, 100);
        assert!(guard.persisted(7, 99, now), "slot 99 was still open too when ticket 7 became durable");
        assert!(!guard.may_defer(now));
        assert!(!guard.may_defer(now + backoff / 2));
        assert!(guard.may_defer(now + backoff), "tries deferring again after the backoff");
        guard.deferred(12, 130);
        assert!(!guard.persisted(12, 129, now + backoff), "judged afresh: one strike again first");
    }

    #[test]
    fn a_late_commit_between_two_open_verdicts_clears_the_strike() {
        let now = Instant::now();
        let mut guard = SpareGuard::new(Duration::from_secs(1));
        for (ticket, log_end, commit) in [(1, 10, 9), (2, 20, 20), (3, 30, 29)] {
            guard.deferred(ticket, log_end);
            assert!(!guard.persisted(ticket, commit, now));
        }
        assert!(guard.may_defer(now));
    }
}

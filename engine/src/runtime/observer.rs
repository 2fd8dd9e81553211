//! Metric hooks the core and persistence threads call; tools exports them (Prometheus).

use crate::types::Ballot;

/// Receives runtime events for metrics. Calls must be cheap (atomics), never block.
pub trait Observer: Send + Sync + 'static {
    /// One `Propose` carried `requests` client requests.
    fn on_batch(&self, _requests: usize) {}
    /// `slots` slots were applied (committed and executed here).
    fn on_applied(&self, _slots: u64, _requests: usize) {}
    /// Clients got their replies, each `latencies_us[i]` after its request reached this replica.
    /// Called once per applied slot (or answered read), not per reply, so an observer that
    /// records into shared counters pays once per batch.
    fn on_replies(&self, _latencies_us: &[u64]) {}
    /// Leadership changed.
    fn on_leadership(&self, _leading: bool, _ballot: Ballot) {}
    /// A checkpoint of every slot below `slot` (`bytes` of state) was taken.
    fn on_checkpoint(&self, _slot: u64, _bytes: usize) {}
    /// One group commit persisted `writes` durable writes; the log now holds `log_bytes`.
    fn on_group_commit(&self, _writes: usize, _log_bytes: u64) {}
    /// A client write was answered Busy because the log is nearly full.
    fn on_write_shed(&self) {}
    /// This leader started (true) or stopped (false) awaiting its spares' votes because a follower
    /// on its commit path stalled or answers slower than the spares (`Replica::awaits_spares`).
    fn on_spares_awaited(&self, _awaited: bool) {}
}

/// Ignores everything.
pub struct NoopObserver;

impl Observer for NoopObserver {}

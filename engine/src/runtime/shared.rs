//! Flags and gauges every runtime thread of one replica shares.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Shutdown and failure flags plus the log size gauge.
#[derive(Debug, Default)]
pub struct Shared {
    /// Set to stop: the core thread exits, persistence syncs what was staged and exits.
    pub stop: AtomicBool,
    /// Set when the log failed: the replica must stop voting and exit for repair.
    pub failed: AtomicBool,
    /// Bytes the log holds.
    pub log_bytes: AtomicU64,
    /// Bytes the log can hold (0: unbounded); set once at start.
    pub log_capacity_bytes: AtomicU64,
}

impl Shared {
    /// Whether threads should wind down.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire) || self.failed.load(Ordering::Acquire)
    }
}

//! What one load run asks for and what it measured, for any system under test.

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
    /// Operations completed in the window.
    pub ops: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Requests the server answered busy and were resent.
    pub busy_retries: u64,
    /// The window's length.
    pub elapsed_s: f64,
}

/// The key of operation `n` (the same sequence for every system).
pub fn key_for(n: u64, keys: u64) -> String {
    format!("bench-{:08}", n.wrapping_mul(0x9E37_79B9_7F4A_7C15) % keys.max(1))
}

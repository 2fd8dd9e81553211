//! A replica's simulated storage: writes complete in FIFO order after a random latency; a crash
//! loses every write not yet complete (the torn last record of a real log is one such lost write).

use crate::core::DurableWrite;
use crate::durable::Durable;
use std::collections::VecDeque;

/// Durable state plus the writes still in flight.
#[derive(Debug, Default)]
pub struct SimStorage {
    durable: Durable,
    in_flight: VecDeque<(u64, DurableWrite)>,
    /// When the last queued write completes (FIFO: later writes never finish earlier).
    busy_until_us: u64,
}

impl SimStorage {
    /// Queues a write; returns when it completes.
    pub fn submit(&mut self, ticket: u64, write: DurableWrite, now_us: u64, latency_us: u64) -> u64 {
        self.in_flight.push_back((ticket, write));
        self.busy_until_us = self.busy_until_us.max(now_us) + latency_us;
        self.busy_until_us
    }

    /// Completes the oldest write, which must be `ticket`; returns it.
    pub fn complete(&mut self, ticket: u64) -> DurableWrite {
        let (head, write) = self.in_flight.pop_front().expect("a completion without a queued write");
        assert_eq!(head, ticket, "sim storage completes in FIFO order");
        self.durable.apply(&write).expect("a correct replica writes recoverable state");
        write
    }

    /// A crash: in-flight writes are lost; returns how many.
    pub fn crash(&mut self) -> usize {
        let lost = self.in_flight.len();
        self.in_flight.clear();
        self.busy_until_us = 0;
        lost
    }

    /// What a restart recovers.
    pub fn recover(&self) -> Durable {
        self.durable.clone()
    }
}

//! The persistence thread: group commit. It drains every write the core staged since the last
//! round, stages them all in the log, then makes them durable with ONE sync and reports the highest
//! durable ticket to the core.

use super::event::Event;
use super::idle::Idler;
use super::observer::Observer;
use super::ring::Ring;
use super::shared::Shared;
use super::storage::LogStorage;
use crate::core::DurableWrite;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// One persist command handed from the core thread.
pub type PersistJob = (u64, DurableWrite);

/// Longest park when idle; bounds shutdown latency.
const MAX_PARK: Duration = Duration::from_millis(50);

/// Runs until `shared.stop` is set and the ring is drained, or the log fails.
pub fn run<L: LogStorage, R, O: Observer>(
    mut storage: L,
    jobs: Arc<Ring<PersistJob>>,
    inbox: Arc<Ring<Event<R>>>,
    shared: Arc<Shared>,
    observer: Arc<O>,
    mut idler: Idler,
) {
    jobs.bind_consumer();
    // Persisted is cumulative: keep only the newest unreported ticket and never block on a full
    // inbox (the core may itself be waiting for room in `jobs`).
    let mut unreported: Option<u64> = None;
    loop {
        if let Some(upto) = unreported {
            if inbox.push(Event::Persisted { upto }).is_ok() {
                unreported = None;
            }
        }
        let mut staged = 0usize;
        while let Some((ticket, write)) = jobs.pop() {
            if let Err(error) = storage.stage(ticket, &write) {
                return fail(&shared, error);
            }
            staged += 1;
        }
        if staged == 0 {
            if shared.stop.load(Ordering::Acquire) {
                return;
            }
            let max_park = if unreported.is_some() { Duration::ZERO } else { MAX_PARK };
            idler.idle(&jobs.sleeping, || !jobs.is_empty(), max_park);
            continue;
        }
        idler.reset();
        match storage.sync() {
            Ok(Some(upto)) => unreported = Some(upto),
            Ok(None) => {}
            Err(error) => return fail(&shared, error),
        }
        let log_bytes = storage.size_bytes();
        shared.log_bytes.store(log_bytes, Ordering::Relaxed);
        observer.on_group_commit(staged, log_bytes);
    }
}

fn fail(shared: &Shared, error: super::storage::StorageError) {
    tracing::error!(%error, "persistence failed; this replica stops acknowledging");
    shared.failed.store(true, Ordering::Release);
}

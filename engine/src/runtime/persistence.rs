//! Group commit: a round drains every write the core staged since the last one, stages them all in
//! the log, then makes them durable with ONE sync.
//!
//! Two threads run rounds on the same log, one at a time (the log sits behind a mutex):
//! - the persistence thread, for writes the core hands over through the ring while it has other
//!   work, so syncing overlaps with the core's own;
//! - the core thread itself, when it has nothing else to do and the persistence thread is idle
//!   (`Persister::try_inline`). At low load that takes two thread hand-offs (core -> persistence
//!   -> core) off every commit's path, each a wake-up of an idle CPU.
//!
//! A spare its leader does not await (`Replica::may_sync_late`: the leader's majority does not need
//! its acknowledgements, and its latest accept said so) never persists inline, and its persistence
//! thread waits `spare_sync_delay` after the first write of a round before syncing, so one sync
//! covers every write of that window. On one host, where the replicas share a disk, that takes the
//! third of three syncs per commit off the disk while the two on the commit path run
//! (docs/benchmarks.md, sessions 8 and 9).
//!
//! Tickets stay in order because the core is the ring's only producer: it persists inline only
//! when the ring is empty and it holds the lock, which the persistence thread keeps from the
//! moment it pops a write until that write is durable.

use super::event::Event;
use super::idle::Idler;
use super::observer::Observer;
use super::inbox::Inbox;
use super::ring::Ring;
use super::shared::Shared;
use super::storage::{LogStorage, StorageError};
use crate::core::DurableWrite;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One persist command handed from the core thread.
pub type PersistJob = (u64, DurableWrite);

/// Longest park when idle; bounds shutdown latency.
const MAX_PARK: Duration = Duration::from_millis(50);

/// A replica's log and the ring of writes waiting for the persistence thread.
pub struct Persister<L, O> {
    storage: Mutex<L>,
    jobs: Ring<PersistJob>,
    shared: Arc<Shared>,
    observer: Arc<O>,
    /// How long a spare's persistence thread gathers writes before a sync.
    spare_sync_delay: Duration,
    /// Whether the core's last flush deferred its writes as a spare's (`set_spare`).
    spare: AtomicBool,
    /// Raised while the persistence thread waits out a spare's delay: only `set_spare` wakes it
    /// then, not every write pushed meanwhile (they join the round the delay gathers for).
    delaying: AtomicBool,
}

impl<L: LogStorage, O: Observer> Persister<L, O> {
    /// Wraps `storage`; the ring holds at most `capacity` writes. While the replica is a spare its
    /// syncs wait `spare_sync_delay` (zero: a spare syncs as soon as any replica does).
    pub fn new(storage: L, capacity: usize, shared: Arc<Shared>, observer: Arc<O>, spare_sync_delay: Duration) -> Self {
        Persister {
            storage: Mutex::new(storage),
            jobs: Ring::new(capacity),
            shared,
            observer,
            spare_sync_delay,
            spare: AtomicBool::new(false),
            delaying: AtomicBool::new(false),
        }
    }

    /// The core's latest view of whether this replica may sync late as a spare (set at each
    /// flush). A spare with a delay never persists inline, so its writes go through the delayed
    /// thread; when it stops being one (the leader now awaits its vote), a delay under way ends.
    pub fn set_spare(&self, spare: bool) {
        let deferred = spare && !self.spare_sync_delay.is_zero();
        // Called at every flush: the flag rarely changes, so only a change pays the swap.
        if self.spare.load(Ordering::Relaxed) != deferred
            && self.spare.swap(deferred, Ordering::SeqCst)
            && !deferred
            && self.delaying.load(Ordering::SeqCst)
        {
            self.jobs.unpark_consumer();
        }
    }

    /// Waits out a spare's delay before a round; returns early once `set_spare` says the replica
    /// no longer is one.
    fn wait_spare_delay(&self) {
        if !self.spare.load(Ordering::SeqCst) {
            return;
        }
        let deadline = Instant::now() + self.spare_sync_delay;
        loop {
            // Raised before the flag is read: a `set_spare(false)` after the read sees it and wakes
            // us. Not `jobs.sleeping`, which every push would wake us for: at one client a spare's
            // persistence thread was switched in 1.2 times per commit to park again (session 14).
            self.delaying.store(true, Ordering::SeqCst);
            let now = Instant::now();
            if !self.spare.load(Ordering::SeqCst) || now >= deadline {
                break;
            }
            std::thread::park_timeout(deadline - now);
        }
        self.delaying.store(false, Ordering::SeqCst);
    }

    /// Hands writes to the persistence thread, in order. Never drops one (the core waits for its
    /// ticket): waits for room instead, until the replica stops.
    pub fn hand_over(&self, jobs: &mut Vec<PersistJob>) {
        for job in jobs.drain(..) {
            let shared = &self.shared;
            let _ = self.jobs.push_blocking(job, || shared.stopping());
        }
    }

    /// Persists `jobs` on the calling thread if the persistence thread is idle; returns the highest
    /// ticket now durable. Leaves `jobs` untouched (`None`) when the persistence thread holds
    /// earlier writes or is syncing, or the log failed.
    pub fn try_inline(&self, jobs: &mut Vec<PersistJob>) -> Option<u64> {
        if jobs.is_empty() || !self.jobs.is_empty() || self.spare.load(Ordering::Relaxed) {
            return None;
        }
        // One installed from the leader still has its file to write and sync in `stage` (one the
        // driver took is stored already): never on a thread that serves sockets.
        if jobs.iter().any(|(_, write)| matches!(write, DurableWrite::Checkpoint(_))) {
            return None;
        }
        let mut storage = self.storage.try_lock().ok()?;
        // Checked under the lock, which `fail` always runs under: a write the persistence thread
        // failed to stage just before must not be covered by a later ticket made durable here.
        if self.shared.failed.load(Ordering::Acquire) {
            return None;
        }
        self.commit(&mut storage, jobs.drain(..))
    }

    /// Stages every write in the ring and syncs them as one group (the persistence thread's round).
    fn round(&self) -> Option<u64> {
        let mut storage = self.lock();
        self.commit(&mut storage, std::iter::from_fn(|| self.jobs.pop()))
    }

    /// One group commit of `writes`, in order: stage each, then ONE sync. Returns the highest
    /// ticket now durable; None if there was nothing to stage or the log failed (the replica
    /// then stops acknowledging).
    fn commit(&self, storage: &mut L, writes: impl Iterator<Item = PersistJob>) -> Option<u64> {
        let mut staged = 0usize;
        for (ticket, write) in writes {
            if let Err(error) = storage.stage(ticket, &write) {
                fail(&self.shared, error);
                return None;
            }
            staged += 1;
        }
        if staged == 0 {
            return None;
        }
        let upto = match storage.sync() {
            Ok(upto) => upto,
            Err(error) => {
                fail(&self.shared, error);
                return None;
            }
        };
        let log_bytes = storage.size_bytes();
        self.shared.log_bytes.store(log_bytes, Ordering::Relaxed);
        self.observer.on_group_commit(staged, log_bytes);
        upto
    }

    fn lock(&self) -> MutexGuard<'_, L> {
        // A panic while holding the log leaves nothing half-done that a later round could trip
        // on: stage and sync either completed or returned an error that stopped the replica.
        self.storage.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The persistence thread: runs until `shared.stop` is set and the ring is drained, or the log fails.
pub fn run<L: LogStorage, R, O: Observer>(persister: Arc<Persister<L, O>>, inbox: Arc<Inbox<R>>, mut idler: Idler) {
    let jobs = &persister.jobs;
    let shared = &persister.shared;
    jobs.bind_consumer();
    // Persisted is cumulative: keep only the newest unreported ticket and never block on a full
    // inbox (the core may itself be waiting for room in `jobs`).
    let mut unreported: Option<u64> = None;
    loop {
        if let Some(upto) = unreported {
            // Pushed for the core thread, never run here: a pass may hand this thread more writes
            // and wait for room in its ring, which only this thread drains.
            if inbox.push(Event::Persisted { upto }).is_ok() {
                unreported = None;
            }
        }
        if shared.failed.load(Ordering::Acquire) {
            return;
        }
        if jobs.is_empty() {
            if shared.stop.load(Ordering::Acquire) {
                return;
            }
            let max_park = if unreported.is_some() { Duration::ZERO } else { MAX_PARK };
            idler.idle(&jobs.sleeping, || !jobs.is_empty(), max_park);
            continue;
        }
        idler.reset();
        persister.wait_spare_delay();
        if let Some(upto) = persister.round() {
            unreported = Some(upto);
        }
    }
}

fn fail(shared: &Shared, error: StorageError) {
    tracing::error!(%error, "persistence failed; this replica stops acknowledging");
    shared.failed.store(true, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::DurableWrite;
    use crate::runtime::observer::NoopObserver;

    /// Records the order writes are staged in; every sync makes the last staged ticket durable.
    #[derive(Default)]
    struct OrderLog {
        staged: Vec<u64>,
    }

    impl LogStorage for OrderLog {
        fn stage(&mut self, ticket: u64, _write: &DurableWrite) -> Result<(), StorageError> {
            self.staged.push(ticket);
            Ok(())
        }
        fn sync(&mut self) -> Result<Option<u64>, StorageError> {
            Ok(self.staged.last().copied())
        }
        fn size_bytes(&self) -> u64 {
            0
        }
    }

    fn job(ticket: u64) -> PersistJob {
        (ticket, DurableWrite::Commit(ticket))
    }

    fn persister() -> Persister<OrderLog, NoopObserver> {
        persister_with(Duration::ZERO)
    }

    fn persister_with(spare_sync_delay: Duration) -> Persister<OrderLog, NoopObserver> {
        Persister::new(OrderLog::default(), 8, Arc::new(Shared::default()), Arc::new(NoopObserver), spare_sync_delay)
    }

    #[test]
    fn a_spare_with_a_delay_leaves_its_writes_to_the_delayed_thread() {
        let delay = Duration::from_millis(3);
        let p = persister_with(delay);
        p.set_spare(true);
        let mut jobs = vec![job(1)];
        assert_eq!(p.try_inline(&mut jobs), None, "a spare does not sync on the core's thread");
        p.set_spare(false);
        assert_eq!(p.try_inline(&mut jobs), Some(1), "back on the commit path: inline again");
        let no_delay = persister();
        no_delay.set_spare(true);
        assert_eq!(no_delay.try_inline(&mut vec![job(1)]), Some(1), "without a delay a spare is like any replica");
    }

    #[test]
    fn a_spare_delay_under_way_ends_when_the_leader_awaits_the_replica() {
        let p = Arc::new(persister_with(Duration::from_secs(30)));
        p.set_spare(true);
        let waiter = {
            let p = p.clone();
            std::thread::spawn(move || {
                p.jobs.bind_consumer();
                let started = std::time::Instant::now();
                p.wait_spare_delay();
                started.elapsed()
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !p.delaying.load(Ordering::SeqCst) {
            assert!(std::time::Instant::now() < deadline, "the waiter never entered its delay");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!p.jobs.sleeping.load(Ordering::SeqCst), "so a push does not wake it: its write waits for the round");
        p.set_spare(false);
        let waited = waiter.join().unwrap();
        assert!(waited < Duration::from_secs(10), "the 30 s delay ended early: {waited:?}");
    }

    #[test]
    fn inline_persists_only_behind_an_empty_ring_and_a_free_log() {
        let p = persister();
        let mut jobs = vec![job(1)];
        p.hand_over(&mut jobs);
        jobs.push(job(2));
        assert_eq!(p.try_inline(&mut jobs), None, "ticket 1 is still queued: 2 must not overtake it");
        assert_eq!(jobs.len(), 1, "a refused inline persist leaves its writes to the caller");
        assert_eq!(p.round(), Some(1));
        let held = p.lock();
        assert_eq!(p.try_inline(&mut jobs), None, "the persistence thread is syncing");
        drop(held);
        assert_eq!(p.try_inline(&mut jobs), Some(2));
        assert!(jobs.is_empty());
        assert_eq!(p.lock().staged, vec![1, 2]);
    }

    #[test]
    fn a_checkpoint_is_left_to_the_persistence_thread() {
        let p = persister();
        let checkpoint = crate::types::Checkpoint {
            slot: 1,
            membership: crate::membership::Membership::new(vec![crate::types::ReplicaId(0)]),
            config_slot: None,
            data: bytes::Bytes::from_static(b"state"),
        };
        let mut jobs = vec![job(1), (2, DurableWrite::Checkpoint(checkpoint))];
        assert_eq!(p.try_inline(&mut jobs), None);
        assert_eq!(jobs.len(), 2);
        p.hand_over(&mut jobs);
        assert_eq!(p.round(), Some(2));
    }

    #[test]
    fn a_failed_log_takes_no_more_inline_writes() {
        let p = persister();
        p.shared.failed.store(true, Ordering::Release);
        let mut jobs = vec![job(1)];
        assert_eq!(p.try_inline(&mut jobs), None);
        assert!(p.lock().staged.is_empty());
    }
}

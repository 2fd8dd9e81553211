//! The core's inbox: the ring every thread sends events through, and the core itself.
//!
//! Two ways to run the core:
//! - a dedicated core thread drains the ring; a producer's push wakes it if it parked. On hosts
//!   with CPUs to spare the core thread spins when idle, so the wake-up costs nothing.
//! - run on delivery (the default where idle threads park, i.e. small hosts): a producer posts its
//!   events quietly, then runs the core's pass itself if no other thread is running it. Only
//!   threads the core never waits for may do so: the persistence thread pushes instead (a pass
//!   can wait for room in the persist ring, which that thread alone drains). An idle
//!   replica then serves a message on the thread that received it, with no hand-off. Each hand-off
//!   wakes a parked thread, and that wake-up is the largest cost of a commit at low load on a
//!   2-vCPU virtual machine (docs/benchmarks.md, session 6).
//!
//! One thread at a time runs the core (a mutex); the others' events wait in the ring. Every
//! thread that ran the core looks at the ring again after letting go of it, so an event posted
//! while it held the core is never stranded. The core thread still runs the ticks.

use super::event::Event;
use super::idle::Idler;
use super::ring::Ring;
use super::shared::Shared;
use std::sync::atomic::{fence, Ordering};
use std::sync::{Mutex, OnceLock, TryLockError};
use std::time::Duration;

/// Most passes one `serve` runs before it wakes the core thread to carry on.
const MAX_PASSES_PER_SERVE: usize = 4;

/// One pass of the core over its inbox (`Driver`), as the inbox runs it.
pub trait CorePass: Send {
    /// Drains the inbox, ticks if due, persists. Returns whether it found work, and how long
    /// until the next tick is due.
    fn pass(&mut self) -> (bool, Duration);
}

/// The core's inbox and, once started, the core.
pub struct Inbox<R> {
    ring: Ring<Event<R>>,
    core: OnceLock<Mutex<Option<Box<dyn CorePass>>>>,
    run_on_delivery: bool,
}

// A refused event comes back whole (large, but rare: the inbox is full) so the sender can answer
// its client Busy or leave it to a retransmission, as `Ring::push` does.
#[allow(clippy::result_large_err)]
impl<R> Inbox<R> {
    /// An inbox of `capacity` events; `run_on_delivery` chooses how the core runs (module docs).
    pub fn new(capacity: usize, run_on_delivery: bool) -> Self {
        Inbox { ring: Ring::new(capacity), core: OnceLock::new(), run_on_delivery }
    }

    /// Queues `event` and wakes the core thread (for threads that must not run the core, and tests).
    pub fn push(&self, event: Event<R>) -> Result<(), Event<R>> {
        self.ring.push(event)
    }

    /// `push`, yielding while the inbox is full, until it fits or `give_up()` says stop.
    pub fn push_blocking(&self, event: Event<R>, give_up: impl Fn() -> bool) -> Result<(), Event<R>> {
        self.ring.push_blocking(event, give_up)
    }

    /// Queues `event` for the `serve` the caller owes after its burst of posts. Wakes the core
    /// thread only when producers do not run the core. Gives the event back if the inbox is full.
    pub fn post(&self, event: Event<R>) -> Result<(), Event<R>> {
        if self.run_on_delivery {
            self.ring.push_quiet(event)
        } else {
            self.ring.push(event)
        }
    }

    /// After posting: runs the core here while it is free and events wait, for at most
    /// `MAX_PASSES_PER_SERVE` passes (then the core thread takes over: the caller has its own
    /// sockets to serve). Returns at once if another thread runs it (that thread looks at the ring
    /// again when it lets go).
    pub fn serve(&self) {
        if !self.run_on_delivery || self.ring.is_empty() {
            return;
        }
        let Some(core) = self.core.get() else {
            self.ring.wake(); // not started yet: the core thread finds the events when it starts
            return;
        };
        for _ in 0..MAX_PASSES_PER_SERVE {
            fence(Ordering::SeqCst); // the posts before the look at the lock
            let mut held = match core.try_lock() {
                Ok(held) => held,
                Err(TryLockError::WouldBlock) => return,
                Err(TryLockError::Poisoned(_)) => crash_stop(),
            };
            let Some(pass) = held.as_mut() else { return }; // stopped
            pass.pass();
            drop(held);
            fence(Ordering::SeqCst); // letting go before the look at the ring
            if self.ring.is_empty() {
                return;
            }
        }
        self.ring.wake();
    }

    /// Takes the oldest event (the core's side).
    pub fn pop(&self) -> Option<Event<R>> {
        self.ring.pop()
    }

    /// Whether no event waits.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Hands the inbox its core; `run_core_thread` and `serve` run it from then on.
    pub fn install(&self, core: Box<dyn CorePass>) {
        assert!(self.core.set(Mutex::new(Some(core))).is_ok(), "an inbox serves one core");
    }

    /// The core thread: runs passes until `shared` says stop, parking in between until an event
    /// wakes it or the next tick is due; then drops the core (its transport and buffers).
    pub fn run_core_thread(&self, shared: &Shared, mut idler: Idler) {
        self.ring.bind_consumer();
        let Some(core) = self.core.get() else { return };
        while !shared.stopping() {
            let mut held = core.lock().unwrap_or_else(|_| crash_stop());
            let Some(pass) = held.as_mut() else { return };
            let (worked, until_tick) = pass.pass();
            drop(held);
            fence(Ordering::SeqCst); // letting go before the idler's look at the ring
            if worked {
                idler.reset();
            } else {
                idler.idle(&self.ring.sleeping, || !self.ring.is_empty(), until_tick);
            }
        }
        let stopped = core.lock().unwrap_or_else(|_| crash_stop()).take();
        drop(stopped);
    }
}

/// The core panicked in the middle of a step on some thread: its state can no longer be trusted,
/// so the replica stops dead rather than step it again. Crash-stop is a failure Paxos tolerates:
/// a restart recovers from the durable log.
fn crash_stop() -> ! {
    tracing::error!("the protocol core panicked mid-step; stopping the replica (a restart recovers from its log)");
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    /// Counts the events it drains, then takes `pause` before letting go.
    struct Counter {
        inbox: Arc<Inbox<()>>,
        served: Arc<AtomicU64>,
        pause: Duration,
    }

    impl CorePass for Counter {
        fn pass(&mut self) -> (bool, Duration) {
            let mut worked = false;
            while self.inbox.pop().is_some() {
                self.served.fetch_add(1, Ordering::Relaxed);
                worked = true;
            }
            // Still holding the core after draining: events posted now wait for the look again.
            std::thread::sleep(self.pause);
            (worked, Duration::from_millis(5))
        }
    }

    /// With no core thread at all, every event posted by racing senders is served by one of them:
    /// a sender that finds the core busy leaves its event to the holder, which looks again. Each
    /// round's senders post at once into a slow core, and nothing may be left when they are done.
    #[test]
    fn racing_senders_serve_every_event_with_no_core_thread() {
        const SENDERS: usize = 4;
        const ROUNDS: usize = 200;
        let inbox = Arc::new(Inbox::new(1 << 16, true));
        let served = Arc::new(AtomicU64::new(0));
        inbox.install(Box::new(Counter { inbox: inbox.clone(), served: served.clone(), pause: Duration::from_micros(100) }));
        let barrier = Arc::new(std::sync::Barrier::new(SENDERS));
        let senders: Vec<_> = (0..SENDERS)
            .map(|_| {
                let (inbox, barrier) = (inbox.clone(), barrier.clone());
                std::thread::spawn(move || {
                    for round in 0..ROUNDS {
                        barrier.wait();
                        assert!(inbox.post(Event::Persisted { upto: round as u64 }).is_ok());
                        inbox.serve();
                        if barrier.wait().is_leader() {
                            assert!(inbox.is_empty(), "round {round}: an event was stranded in the inbox");
                        }
                    }
                })
            })
            .collect();
        for sender in senders {
            sender.join().unwrap();
        }
        assert_eq!(served.load(Ordering::Relaxed), (SENDERS * ROUNDS) as u64);
    }

    /// Without run-on-delivery, `serve` leaves the events to the core thread.
    #[test]
    fn serve_does_nothing_when_senders_do_not_run_the_core() {
        let inbox = Arc::new(Inbox::new(16, false));
        let served = Arc::new(AtomicU64::new(0));
        inbox.install(Box::new(Counter { inbox: inbox.clone(), served: served.clone(), pause: Duration::ZERO }));
        assert!(inbox.post(Event::Persisted { upto: 1 }).is_ok());
        inbox.serve();
        assert_eq!(served.load(Ordering::Relaxed), 0);
        assert!(!inbox.is_empty());
    }
}

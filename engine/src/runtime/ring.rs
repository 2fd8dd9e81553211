//! A bounded lock-free multi-producer ring with one consumer thread that parks when idle.

use crossbeam::queue::ArrayQueue;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::thread::Thread;

/// A bounded MPSC ring (crossbeam `ArrayQueue`) that wakes its parked consumer on push.
pub struct Ring<T> {
    queue: ArrayQueue<T>,
    /// Raised by the consumer just before it parks (see `idle::Idler`).
    pub sleeping: AtomicBool,
    consumer: OnceLock<Thread>,
}

impl<T> Ring<T> {
    /// A ring holding at most `capacity` items (allocated once, here).
    pub fn new(capacity: usize) -> Self {
        Ring { queue: ArrayQueue::new(capacity.max(1)), sleeping: AtomicBool::new(false), consumer: OnceLock::new() }
    }

    /// Registers the calling thread as the consumer that `push` wakes.
    pub fn bind_consumer(&self) {
        let _ = self.consumer.set(std::thread::current());
    }

    /// Pushes `item`; gives it back if the ring is full (the caller decides: refuse, drop or retry).
    pub fn push(&self, item: T) -> Result<(), T> {
        self.queue.push(item)?;
        self.wake();
        Ok(())
    }

    /// Pushes without waking the consumer: the producer serves the item itself (`Inbox::post`).
    pub fn push_quiet(&self, item: T) -> Result<(), T> {
        self.queue.push(item)
    }

    /// Wakes the consumer if it is parked, for work it finds outside the ring.
    pub fn wake(&self) {
        if self.sleeping.load(Ordering::SeqCst) {
            self.unpark_consumer();
        }
    }

    /// Wakes the consumer whether or not it says it sleeps (a wait of its own, outside `sleeping`).
    pub fn unpark_consumer(&self) {
        if let Some(consumer) = self.consumer.get() {
            consumer.unpark();
        }
    }

    /// Pushes, yielding while the ring is full, until it fits or `give_up()` says stop.
    pub fn push_blocking(&self, mut item: T, give_up: impl Fn() -> bool) -> Result<(), T> {
        loop {
            match self.push(item) {
                Ok(()) => return Ok(()),
                Err(back) if give_up() => return Err(back),
                Err(back) => {
                    item = back;
                    std::thread::yield_now();
                }
            }
        }
    }

    /// Takes the oldest item.
    pub fn pop(&self) -> Option<T> {
        self.queue.pop()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Items queued now.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Most items it holds.
    pub fn capacity(&self) -> usize {
        self.queue.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn full_ring_gives_the_item_back() {
        let ring = Ring::new(2);
        assert!(ring.push(1).is_ok());
        assert!(ring.push(2).is_ok());
        assert_eq!(ring.push(3), Err(3));
        assert_eq!(ring.pop(), Some(1));
        assert!(ring.push(3).is_ok());
        assert_eq!((ring.pop(), ring.pop(), ring.pop()), (Some(2), Some(3), None));
    }

    #[test]
    fn push_wakes_a_parked_consumer_long_before_its_deadline() {
        let ring = Arc::new(Ring::new(8));
        let consumer_ring = ring.clone();
        let consumer = std::thread::spawn(move || {
            consumer_ring.bind_consumer();
            let mut idler = crate::runtime::idle::Idler::new(0, 0);
            let started = Instant::now();
            loop {
                if let Some(v) = consumer_ring.pop() {
                    return (v, started.elapsed());
                }
                idler.idle(&consumer_ring.sleeping, || !consumer_ring.is_empty(), Duration::from_secs(20));
            }
        });
        std::thread::sleep(Duration::from_millis(50));
        ring.push(7u32).unwrap();
        let (value, waited) = consumer.join().unwrap();
        assert_eq!(value, 7);
        assert!(waited < Duration::from_secs(5), "consumer slept through the push: {waited:?}");
    }
}

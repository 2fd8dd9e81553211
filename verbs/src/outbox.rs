//! The bytes a connection owes its peer, for a thread that must never block on a send.
//!
//! The one-sided transports' thread both writes its control messages and reads its peers'. A
//! blocking write into a full socket stops its reads too, so two replicas writing to each other
//! at once wait on each other until the send timeout, and a leader writing a message larger than
//! the socket's buffer waits for the follower to drain it (docs/benchmarks.md, session 17: 0.3 to
//! 14 s stalls and elections at 4096 clients over shm). So a message the socket does not take at
//! once waits here, in order, and every poll of the link writes more of it; while much waits,
//! new messages are dropped (`OUTBOX_SHED_BYTES`).

use std::time::{Duration, Instant};

/// Past this many bytes waiting, a new message is dropped, not queued: every message the
/// transports carry may be lost (Paxos retransmits), and a leader that queued its resends for a
/// follower behind it sent 129 MB in two seconds, which the follower then had to read through
/// (session 17). The blocking send held the thread instead; this holds the memory to a bound.
pub const OUTBOX_SHED_BYTES: usize = 4 << 20;
/// How long held bytes may go without the socket taking any before the peer counts as stalled
/// (the blocking sends' timeout).
pub const OUTBOX_STALL: Duration = Duration::from_secs(5);

/// Bytes not yet written, oldest first.
#[derive(Default)]
pub struct Outbox {
    buf: Vec<u8>,
    /// `buf[head..]` is unwritten.
    head: usize,
    /// When the socket last took bytes (or the outbox last went from empty to holding some).
    moved_at: Option<Instant>,
}

impl Outbox {
    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.head == self.buf.len()
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.buf.len() - self.head
    }

    /// The bytes to write next.
    pub fn unwritten(&self) -> &[u8] {
        &self.buf[self.head..]
    }

    /// Appends `parts` after everything already waiting, skipping their first `skip` bytes
    /// (already written), at `now`.
    pub fn hold(&mut self, parts: &[&[u8]], mut skip: usize, now: Instant) {
        if self.is_empty() {
            self.moved_at = Some(now); // its clock starts with its first byte
        }
        for part in parts {
            if skip >= part.len() {
                skip -= part.len();
            } else {
                self.buf.extend_from_slice(&part[skip..]);
                skip = 0;
            }
        }
    }

    /// The socket took the next `n` bytes, at `now`.
    pub fn written(&mut self, n: usize, now: Instant) {
        debug_assert!(n <= self.len(), "invariant: wrote no more than was held");
        self.head += n;
        if n > 0 {
            self.moved_at = Some(now);
        }
        if self.is_empty() {
            // Give back the memory of a large message once it is out.
            self.buf.clear();
            self.head = 0;
            if self.buf.capacity() > 1 << 20 {
                self.buf.shrink_to(1 << 20);
            }
        } else if self.head > self.buf.len() / 2 {
            self.buf.drain(..self.head);
            self.head = 0;
        }
    }

    /// Whether bytes have waited at `now` for longer than `OUTBOX_STALL` without the socket taking any.
    pub fn stalled(&self, now: Instant) -> bool {
        !self.is_empty() && self.moved_at.is_some_and(|at| now.duration_since(at) > OUTBOX_STALL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_bytes_come_out_in_order_after_the_written_prefix() {
        let now = Instant::now();
        let mut outbox = Outbox::default();
        outbox.hold(&[b"hdr", b"body-one"], 5, now); // "hdr" and "bo" were written
        outbox.hold(&[b"xy", b"z"], 0, now);
        assert_eq!(outbox.unwritten(), b"dy-onexyz");
        outbox.written(4, now);
        assert_eq!(outbox.unwritten(), b"nexyz");
        outbox.written(5, now);
        assert!(outbox.is_empty());
        assert_eq!(outbox.len(), 0);
    }

    #[test]
    fn bytes_that_do_not_move_for_the_stall_time_are_stalled_and_moving_ones_are_not() {
        let start = Instant::now();
        let mut outbox = Outbox::default();
        assert!(!outbox.stalled(start + OUTBOX_STALL * 2), "an empty outbox never stalls");
        outbox.hold(&[&[7u8; 100]], 0, start);
        assert!(!outbox.stalled(start + OUTBOX_STALL));
        assert!(outbox.stalled(start + OUTBOX_STALL + Duration::from_millis(1)));
        outbox.written(10, start + OUTBOX_STALL);
        assert!(!outbox.stalled(start + OUTBOX_STALL + Duration::from_millis(1)), "progress restarts the clock");
        outbox.written(90, start + OUTBOX_STALL * 3);
        outbox.hold(&[&[1u8; 5]], 0, start + OUTBOX_STALL * 4);
        assert!(!outbox.stalled(start + OUTBOX_STALL * 4 + Duration::from_millis(1)), "refilled: its clock starts anew");
    }

    #[test]
    fn a_drained_large_message_gives_its_memory_back() {
        let now = Instant::now();
        let mut outbox = Outbox::default();
        outbox.hold(&[&vec![0u8; 8 << 20]], 0, now);
        outbox.written(8 << 20, now);
        assert!(outbox.buf.capacity() <= 1 << 20);
    }
}

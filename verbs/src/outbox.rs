//! Bytes a connection owes its peer, for a thread that must never block on a send.
//!
//! The one-sided transports' thread both writes its control messages and reads its peers'. A
//! blocking write into a full socket stops its reads too, so two replicas writing to each other
//! at once wait on each other until the send timeout, and a leader writing a message larger than
//! the socket's buffer waits for the follower to drain it (docs/benchmarks.md, session 17: 0.3 to
//! 14 s stalls and elections at 4096 clients over shm). So a message the socket does not take at
//! once waits here, in order, and every poll of the link writes more of it; while much waits,
//! new messages are dropped (`OUTBOX_SHED_BYTES`). The replica's client sessions keep their
//! unsent answers in one too (tools/src/replica/session.rs).

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
pub struct Outbox {
    buf: Vec<u8>,
    /// `buf[head..]` is unwritten.
    head: usize,
    /// The capacity a drained outbox shrinks back to (a backlog may have grown it).
    keep_bytes: usize,
}

impl Default for Outbox {
    /// Allocates nothing until bytes wait; keeps at most 1 MiB once drained.
    fn default() -> Self {
        Outbox { buf: Vec::new(), head: 0, keep_bytes: 1 << 20 }
    }
}

impl Outbox {
    /// An outbox with `keep_bytes` allocated up front, shrinking back to that once drained.
    pub fn with_capacity(keep_bytes: usize) -> Outbox {
        Outbox { buf: Vec::with_capacity(keep_bytes), head: 0, keep_bytes }
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.head == self.buf.len()
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.buf.len() - self.head
    }

    /// Bytes allocated.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The bytes to write next.
    pub fn unwritten(&self) -> &[u8] {
        &self.buf[self.head..]
    }

    /// Appends `parts` after everything already waiting, skipping their first `skip` bytes
    /// (already written).
    pub fn hold(&mut self, parts: &[&[u8]], mut skip: usize) {
        for part in parts {
            if skip >= part.len() {
                skip -= part.len();
            } else {
                self.buf.extend_from_slice(&part[skip..]);
                skip = 0;
            }
        }
    }

    /// The buffer to encode more bytes onto (after everything waiting).
    pub fn append(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// The socket took the next `n` bytes.
    pub fn written(&mut self, n: usize) {
        assert!(n <= self.len(), "contract: wrote no more than was held");
        self.head += n;
        if self.is_empty() {
            // Give back the memory of a backlog once it is out.
            self.buf.clear();
            self.head = 0;
            self.buf.shrink_to(self.keep_bytes);
        } else if self.head >= self.buf.capacity() / 2 {
            // Written bytes are at least half the buffer: drop them, so appends rarely move bytes.
            self.buf.drain(..self.head);
            self.head = 0;
        }
    }
}

/// When the bytes an outbox holds last moved, to tell a slow peer from a stalled one.
#[derive(Default)]
pub struct StallClock {
    moved_at: Option<Instant>,
}

impl StallClock {
    /// Bytes moved (or began to wait in an empty outbox) at `now`.
    pub fn moved(&mut self, now: Instant) {
        self.moved_at = Some(now);
    }

    /// Whether bytes `waiting` at `now` have gone longer than `OUTBOX_STALL` without moving.
    pub fn stalled(&self, waiting: bool, now: Instant) -> bool {
        waiting && self.moved_at.is_some_and(|at| now.duration_since(at) > OUTBOX_STALL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_bytes_come_out_in_order_after_the_written_prefix() {
        let mut outbox = Outbox::default();
        outbox.hold(&[b"hdr", b"body-one"], 5); // "hdr" and "bo" were written
        outbox.hold(&[b"xy", b"z"], 0);
        assert_eq!(outbox.unwritten(), b"dy-onexyz");
        outbox.written(4);
        assert_eq!(outbox.unwritten(), b"nexyz");
        outbox.append().extend_from_slice(b"!");
        assert_eq!(outbox.unwritten(), b"nexyz!");
        outbox.written(6);
        assert!(outbox.is_empty());
        assert_eq!(outbox.len(), 0);
    }

    #[test]
    fn bytes_that_do_not_move_for_the_stall_time_are_stalled_and_moving_ones_are_not() {
        let start = Instant::now();
        let mut clock = StallClock::default();
        assert!(!clock.stalled(false, start + OUTBOX_STALL * 2), "an empty outbox never stalls");
        clock.moved(start);
        assert!(!clock.stalled(true, start + OUTBOX_STALL));
        assert!(clock.stalled(true, start + OUTBOX_STALL + Duration::from_millis(1)));
        clock.moved(start + OUTBOX_STALL);
        assert!(!clock.stalled(true, start + OUTBOX_STALL + Duration::from_millis(1)), "progress restarts the clock");
        clock.moved(start + OUTBOX_STALL * 4);
        assert!(!clock.stalled(true, start + OUTBOX_STALL * 4 + Duration::from_millis(1)), "refilled: its clock starts anew");
    }

    #[test]
    fn a_drained_large_message_gives_its_memory_back() {
        let mut outbox = Outbox::default();
        outbox.hold(&[&vec![0u8; 8 << 20]], 0);
        outbox.written(8 << 20);
        assert!(outbox.capacity() <= 1 << 20);
        let mut kept = Outbox::with_capacity(4096);
        kept.append().extend_from_slice(&[1u8; 100_000]);
        kept.written(100_000);
        assert!(kept.capacity() <= 4096, "shrinks back to what it was made with");
    }
}

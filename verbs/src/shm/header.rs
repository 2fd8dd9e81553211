//! Layout of a shared region's header page and its permission word (the fence).
//!
//! The permission word holds the granted leader's token (low 63 bits) and a BUSY bit. A leader
//! stores only while it holds BUSY, which it can take only while the word names its token; the
//! follower changes the grant while BUSY is clear, or revokes a BUSY held past a bounded wait (a
//! leader killed mid-write would otherwise hold the region forever). So when `grant` returns, every
//! later write of the previous leader is refused, as RDMA does by moving a queue pair out of the
//! write-permitted state; only the one store a dead or stalled holder had begun may still land.

use crate::mapping::Mapping;
use crate::{LeaderToken, VerbsError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// "DCRSHM01".
pub const MAGIC: u64 = u64::from_le_bytes(*b"DCRSHM01");
/// Bytes before the data area (one page).
pub const HEADER_BYTES: usize = 4096;
const OFF_MAGIC: usize = 0;
const OFF_KEY: usize = 8;
const OFF_DATA_LEN: usize = 16;
const OFF_PERMIT: usize = 24;
const OFF_PERSISTED: usize = 32;
const OFF_IMM_HEAD: usize = 40;
const OFF_IMM_TAIL: usize = 48;
const OFF_DOORBELL: usize = 56;
const OFF_IMM_RING: usize = 64;
/// Immediates the follower has not yet polled, at most.
pub const IMM_SLOTS: usize = 256;
/// The wake sequence (a u32 futex word): bumped by whoever gives the owner work.
const OFF_WAKE: usize = OFF_IMM_RING + IMM_SLOTS * 8;
/// Non-zero while the owner sleeps on the wake word (so wakers skip the syscall otherwise).
const OFF_SLEEPING: usize = OFF_WAKE + 8;
const BUSY: u64 = 1 << 63;
const _: () = assert!(OFF_SLEEPING + 8 <= HEADER_BYTES);

/// Typed view of the header of a mapped region.
pub struct Header<'a> {
    map: &'a Mapping,
}

impl<'a> Header<'a> {
    /// Views `map`'s header (no validation; see `validate`).
    pub fn new(map: &'a Mapping) -> Header<'a> {
        Header { map }
    }

    /// Writes a fresh header: nobody granted, nothing persisted.
    pub fn init(&self, key: u32, data_len: u64) {
        self.word(OFF_KEY).store(u64::from(key), Ordering::Relaxed);
        self.word(OFF_DATA_LEN).store(data_len, Ordering::Relaxed);
        self.word(OFF_PERMIT)
            .store(LeaderToken::NONE.0, Ordering::Relaxed);
        self.word(OFF_PERSISTED).store(0, Ordering::Relaxed);
        self.word(OFF_IMM_HEAD).store(0, Ordering::Relaxed);
        self.word(OFF_IMM_TAIL).store(0, Ordering::Relaxed);
        self.word(OFF_DOORBELL).store(0, Ordering::Relaxed);
        self.map.atomic_u32(OFF_WAKE).store(0, Ordering::Relaxed);
        self.word(OFF_SLEEPING).store(0, Ordering::Relaxed);
        self.word(OFF_MAGIC).store(MAGIC, Ordering::Release);
    }

    /// Checks the magic and that the data area fits the mapping.
    pub fn validate(&self, peer: &str) -> Result<(), VerbsError> {
        let magic = self.word(OFF_MAGIC).load(Ordering::Acquire);
        if magic != MAGIC {
            return Err(VerbsError::Protocol {
                peer: peer.into(),
                what: format!("not a decree shm region (magic {magic:#x})"),
            });
        }
        if HEADER_BYTES as u64 + self.data_len() > self.map.len() as u64 {
            return Err(VerbsError::Protocol {
                peer: peer.into(),
                what: "data area larger than the mapping".into(),
            });
        }
        Ok(())
    }

    fn word(&self, off: usize) -> &'a AtomicU64 {
        self.map.atomic_u64(off)
    }

    /// The region key.
    pub fn key(&self) -> u32 {
        self.word(OFF_KEY).load(Ordering::Relaxed) as u32
    }

    /// Size of the data area.
    pub fn data_len(&self) -> u64 {
        self.word(OFF_DATA_LEN).load(Ordering::Relaxed)
    }

    /// The leader currently granted.
    pub fn granted(&self) -> LeaderToken {
        LeaderToken(self.word(OFF_PERMIT).load(Ordering::Acquire) & !BUSY)
    }

    /// Leader: takes the write permission for `token`, or reports it fenced.
    pub fn begin_write(&self, token: LeaderToken, peer: &str) -> Result<(), VerbsError> {
        assert!(
            token.0 & BUSY == 0 && token != LeaderToken::NONE,
            "invariant: leader token is non-zero and below 2^63"
        );
        self.word(OFF_PERMIT)
            .compare_exchange(token.0, token.0 | BUSY, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(|_| VerbsError::Fenced {
                peer: peer.into(),
                token: token.0,
            })
    }

    /// Leader: releases the permission taken by `begin_write`. If the follower revoked it
    /// meanwhile (`grant` after its wait), the word already names the new leader: left alone.
    pub fn end_write(&self, token: LeaderToken) {
        let _ = self.word(OFF_PERMIT).compare_exchange(
            token.0 | BUSY,
            token.0,
            Ordering::Release,
            Ordering::Relaxed,
        );
    }

    /// Follower: grants the region to `leader`, waiting (bounded) for an in-flight write. A
    /// write still in flight after `wait` belongs to a leader that died mid-write (kill -9) or
    /// stalled: its permission is revoked anyway, or the region could never change hands again.
    /// Returns whether a permission had to be revoked. A revoked writer's last store may still
    /// land; the receiving core judges every message by its ballot, so that is a late message,
    /// not a safety problem.
    pub fn grant(&self, leader: LeaderToken, wait: Duration) -> bool {
        assert!(leader.0 & BUSY == 0, "invariant: leader token below 2^63");
        let deadline = Instant::now() + wait;
        loop {
            let cur = self.word(OFF_PERMIT).load(Ordering::Acquire);
            let revoke = Instant::now() >= deadline;
            if (cur & BUSY == 0 || revoke)
                && self
                    .word(OFF_PERMIT)
                    .compare_exchange(cur, leader.0, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                return cur & BUSY != 0;
            }
            std::hint::spin_loop();
        }
    }

    /// Follower: publishes the persisted prefix end (monotonic).
    pub fn set_persisted(&self, upto: u64) {
        self.word(OFF_PERSISTED).fetch_max(upto, Ordering::Release);
    }

    /// Leader: the persisted prefix end.
    pub fn persisted(&self) -> u64 {
        self.word(OFF_PERSISTED).load(Ordering::Acquire)
    }

    /// Follower: counts a control message sent to a leader, so leaders skip the socket read
    /// (a syscall) on polls where nothing was sent.
    pub fn ring_doorbell(&self) {
        self.word(OFF_DOORBELL).fetch_add(1, Ordering::Release);
    }

    /// Leader: the doorbell count.
    pub fn doorbell(&self) -> u64 {
        self.word(OFF_DOORBELL).load(Ordering::Acquire)
    }

    /// Owner: the wake sequence now. Read it, then look for work, then `sleep(seq)`: a wake in
    /// between changes the sequence, so the sleep returns at once and nothing is missed.
    pub fn wake_seq(&self) -> u32 {
        self.map.atomic_u32(OFF_WAKE).load(Ordering::SeqCst)
    }

    /// Owner: sleeps until woken (or `timeout`) unless the sequence already moved past `seq`.
    pub fn sleep(&self, seq: u32, timeout: Duration) {
        let sleeping = self.word(OFF_SLEEPING);
        sleeping.store(1, Ordering::SeqCst);
        if self.wake_seq() == seq {
            crate::futex::wait(self.map.atomic_u32(OFF_WAKE), seq, timeout);
        }
        sleeping.store(0, Ordering::SeqCst);
    }

    /// Anyone who just gave the owner work (stored a frame, sent a message): bumps the sequence
    /// and wakes the owner if it sleeps.
    pub fn wake(&self) {
        self.map.atomic_u32(OFF_WAKE).fetch_add(1, Ordering::SeqCst);
        if self.word(OFF_SLEEPING).load(Ordering::SeqCst) != 0 {
            crate::futex::wake(self.map.atomic_u32(OFF_WAKE));
        }
    }

    /// Whether the immediate ring is full (the follower is not polling).
    pub fn imm_ring_full(&self) -> bool {
        let head = self.word(OFF_IMM_HEAD).load(Ordering::Relaxed);
        // Wrapping: a revoked writer that resumes late may have moved `head` behind `tail`
        // (see `pop_imm`); that reads as full until the follower resets the ring.
        head.wrapping_sub(self.word(OFF_IMM_TAIL).load(Ordering::Acquire)) >= IMM_SLOTS as u64
    }

    /// Leader (holding BUSY): queues an immediate; false if the ring is full.
    pub fn push_imm(&self, imm: u32) -> bool {
        // Re-checked here, not asserted: after `grant` revoked a stalled holder, that holder may
        // resume and push beside the new one (one writer is the rule, not a guarantee).
        if self.imm_ring_full() {
            return false;
        }
        let head = self.word(OFF_IMM_HEAD).load(Ordering::Relaxed);
        self.word(OFF_IMM_RING + (head as usize % IMM_SLOTS) * 8)
            .store(u64::from(imm), Ordering::Relaxed);
        self.word(OFF_IMM_HEAD).store(head + 1, Ordering::Release);
        true
    }

    /// Follower: takes the oldest queued immediate.
    pub fn pop_imm(&self) -> Option<u32> {
        let tail = self.word(OFF_IMM_TAIL).load(Ordering::Relaxed);
        let head = self.word(OFF_IMM_HEAD).load(Ordering::Acquire);
        if tail == head {
            return None;
        }
        if head.wrapping_sub(tail) > IMM_SLOTS as u64 {
            // Two writers raced (a revoked one resumed): `head` moved backwards. Restart the
            // ring at `head`; frames whose immediates are lost are resent by the protocol.
            self.word(OFF_IMM_TAIL).store(head, Ordering::Release);
            return None;
        }
        let imm = self
            .word(OFF_IMM_RING + (tail as usize % IMM_SLOTS) * 8)
            .load(Ordering::Relaxed) as u32;
        self.word(OFF_IMM_TAIL).store(tail + 1, Ordering::Release);
        Some(imm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::Mapping;

    const OLD: LeaderToken = LeaderToken(1);
    const NEW: LeaderToken = LeaderToken(2);

    #[test]
    fn a_grant_waits_for_nobody_when_no_write_is_in_flight() {
        let map = Mapping::anonymous(HEADER_BYTES).unwrap();
        let header = Header::new(&map);
        header.init(7, 0);
        assert!(!header.grant(OLD, Duration::from_secs(5)), "nothing to revoke");
        header.begin_write(OLD, "test").unwrap();
        header.end_write(OLD);
        assert!(!header.grant(NEW, Duration::from_secs(5)));
        assert_eq!(header.granted(), NEW);
    }

    #[test]
    fn a_writer_that_died_mid_write_is_revoked_and_its_release_does_not_undo_the_grant() {
        let map = Mapping::anonymous(HEADER_BYTES).unwrap();
        let header = Header::new(&map);
        header.init(7, 0);
        header.grant(OLD, Duration::ZERO);
        header.begin_write(OLD, "test").unwrap(); // and never ends it: killed mid-write
        let started = Instant::now();
        assert!(header.grant(NEW, Duration::from_millis(20)), "the stuck permission was revoked");
        assert!(started.elapsed() >= Duration::from_millis(20), "it waited for the writer first");
        assert_eq!(header.granted(), NEW);
        assert!(matches!(header.begin_write(OLD, "test"), Err(VerbsError::Fenced { .. })));
        // A writer that was only stalled finishes later: its release leaves the grant alone.
        header.end_write(OLD);
        assert_eq!(header.granted(), NEW);
        header.begin_write(NEW, "test").unwrap();
        header.end_write(NEW);
    }

    #[test]
    fn a_revoked_writer_moving_the_immediate_head_backwards_restarts_the_ring() {
        let map = Mapping::anonymous(HEADER_BYTES).unwrap();
        let header = Header::new(&map);
        header.init(7, 0);
        for imm in 1..=3 {
            assert!(header.push_imm(imm));
        }
        assert_eq!((header.pop_imm(), header.pop_imm(), header.pop_imm()), (Some(1), Some(2), Some(3)));
        // The stalled writer resumes and stores the head it read before the new leader's pushes.
        header.word(OFF_IMM_HEAD).store(1, Ordering::Release);
        assert!(header.imm_ring_full(), "a head behind the tail is not free space");
        assert_eq!(header.pop_imm(), None, "the follower restarts the ring instead of replaying slots");
        assert!(!header.imm_ring_full());
        assert!(header.push_imm(9));
        assert_eq!(header.pop_imm(), Some(9));
        assert_eq!(header.pop_imm(), None);
    }

    #[test]
    fn a_full_immediate_ring_refuses_a_push() {
        let map = Mapping::anonymous(HEADER_BYTES).unwrap();
        let header = Header::new(&map);
        header.init(7, 0);
        for imm in 0..IMM_SLOTS as u32 {
            assert!(header.push_imm(imm));
        }
        assert!(!header.push_imm(99));
        assert_eq!(header.pop_imm(), Some(0));
    }
}

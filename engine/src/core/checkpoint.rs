//! Checkpoints: the state machine's state at a slot replaces the log below it, and travels in
//! checksummed chunks to replicas whose next slot was discarded. A transfer is driven by the
//! receiver's requests (each acknowledges what it holds), so a cut transfer resumes where it stopped.

use super::{Command, DurableWrite, Replica, Role};
use crate::contract;
use crate::message::{Message, SnapshotChunk, SnapshotRequest};
use crate::types::{Checkpoint, ReplicaId, Slot};

/// A checkpoint being assembled from chunks.
#[derive(Debug)]
pub(crate) struct Incoming {
    /// Who sent the chunks that moved it last.
    from: ReplicaId,
    slot: Slot,
    total_bytes: u64,
    checksum: u32,
    membership: crate::membership::Membership,
    config_slot: Option<Slot>,
    data: Vec<u8>,
    /// When we last asked for the next chunk: a duplicate chunk (a leader restarting a transfer it
    /// thinks was lost) re-asks at most once a heartbeat interval, so duplicates cannot multiply
    /// into parallel request chains.
    requested_ms: u64,
    /// When a chunk last added data: while recent, chunks of any other checkpoint are ignored.
    progressed_ms: u64,
}

impl Replica {
    /// The driver took a checkpoint: store it, then discard the log below it once durable.
    pub(crate) fn on_checkpoint_taken(&mut self, checkpoint: Checkpoint) {
        contract!(
            self,
            checkpoint.slot <= self.applied,
            "checkpoint-covers-only-applied-slots",
            "{} > {}",
            checkpoint.slot,
            self.applied
        );
        if self.checkpoint.as_ref().is_some_and(|held| held.slot >= checkpoint.slot)
            || checkpoint.slot <= self.log.base()
        {
            return;
        }
        let slot = checkpoint.slot;
        let ticket = self.persist(DurableWrite::Checkpoint(checkpoint.clone()));
        self.checkpoint = Some(checkpoint);
        // Keep a tail so a follower a little behind gets entries, not a whole checkpoint.
        let discard = slot.saturating_sub(self.cfg.checkpoint_retain_slots);
        self.pending_discards.push_back((ticket, discard));
    }

    /// Discards log prefixes whose checkpoint write is now durable.
    pub(crate) fn discard_checkpointed(&mut self, upto: u64) {
        while let Some((ticket, slot)) = self.pending_discards.front().copied() {
            if ticket > upto {
                break;
            }
            self.pending_discards.pop_front();
            let held = self.checkpoint.as_ref().map_or(0, |c| c.slot);
            self.log.discard_below(slot.min(held).min(self.applied));
        }
    }

    /// Sends the chunk of our checkpoint at `offset` (from 0 if `slot` is not the one we hold).
    pub(crate) fn send_snapshot_chunk(&mut self, to: ReplicaId, slot: Slot, offset: u64) {
        let Some(checkpoint) = self.checkpoint.as_ref() else {
            return;
        };
        let offset = if checkpoint.slot == slot { offset } else { 0 };
        let total_bytes = checkpoint.data.len() as u64;
        if offset > total_bytes {
            return;
        }
        let end = (offset + self.cfg.snapshot_chunk_bytes as u64).min(total_bytes);
        let chunk = SnapshotChunk {
            ballot: self.promised,
            slot: checkpoint.slot,
            membership: checkpoint.membership.clone(),
            config_slot: checkpoint.config_slot,
            total_bytes,
            checksum: checkpoint.checksum(),
            offset,
            data: checkpoint.data.slice(offset as usize..end as usize),
        };
        self.send(to, Message::Snapshot(chunk));
    }

    /// Asks `from` for its checkpoint (at least `slot`), resuming a partial one.
    pub(crate) fn request_snapshot(&mut self, from: ReplicaId, slot: Slot) {
        let (slot, offset) = match &self.incoming {
            Some(incoming) if incoming.slot >= slot => (incoming.slot, incoming.data.len() as u64),
            _ => (slot, 0),
        };
        self.send(from, Message::SnapshotRequest(SnapshotRequest { ballot: self.promised, slot, offset }));
    }

    pub(crate) fn on_snapshot_request(&mut self, from: ReplicaId, request: SnapshotRequest) {
        let now_ms = self.now_ms;
        if let Role::Leader(leadership) = &mut self.role {
            if let Some(progress) = leadership.progress.get_mut(&from) {
                progress.last_ack_ms = now_ms;
                progress.snapshot_sent_ms = Some(now_ms);
            }
        }
        self.send_snapshot_chunk(from, request.slot, request.offset);
    }

    pub(crate) fn on_snapshot_chunk(&mut self, from: ReplicaId, chunk: SnapshotChunk) {
        if matches!(self.role, Role::Leader(_)) {
            return;
        }
        if chunk.ballot == self.promised && chunk.ballot.owner() == from {
            self.reset_election_timer(); // the leader is alive, just far ahead of us
        }
        if chunk.slot <= self.applied {
            // Already past it: tell a leader where we are so it resumes with entries.
            if self.durability.durable_ballot() == self.promised && chunk.ballot == self.promised {
                let upto = self.durability.durable_horizon();
                self.send(
                    from,
                    Message::Accepted(crate::message::Accepted {
                        ballot: self.promised,
                        upto,
                        round: self.leader_round_seen,
                    }),
                );
            }
            return;
        }
        if chunk.total_bytes > self.cfg.max_snapshot_bytes {
            return; // refuse to buffer it; the log says why through the driver's metrics
        }
        let now_ms = self.now_ms;
        let other = |i: &Incoming| i.slot != chunk.slot || i.checksum != chunk.checksum;
        // Two senders can each drive a transfer of their own checkpoint (the one a candidate asked
        // for, and the one a new leader sends): finish the one that is moving, or each sender's
        // chunks would keep restarting the other's and neither would ever complete. The same
        // sender's other checkpoint replaces the one it was sending (it no longer holds that one).
        let moving_elsewhere =
            |i: &Incoming| other(i) && i.from != from && now_ms < i.progressed_ms + self.cfg.election_timeout_min_ms;
        if self.incoming.as_ref().is_some_and(moving_elsewhere) {
            return;
        }
        let fresh = self.incoming.as_ref().is_none_or(other);
        if fresh {
            if chunk.offset != 0 {
                self.incoming = None;
                self.send(
                    from,
                    Message::SnapshotRequest(SnapshotRequest { ballot: self.promised, slot: chunk.slot, offset: 0 }),
                );
                return;
            }
            self.incoming = Some(Incoming {
                from,
                slot: chunk.slot,
                total_bytes: chunk.total_bytes,
                checksum: chunk.checksum,
                membership: chunk.membership.clone(),
                config_slot: chunk.config_slot,
                data: Vec::new(),
                requested_ms: 0,
                progressed_ms: now_ms,
            });
        }
        let interval_ms = self.cfg.heartbeat_interval_ms;
        let incoming = self.incoming.as_mut().expect("set above");
        let held = incoming.data.len() as u64;
        let chunk_end = chunk.offset + chunk.data.len() as u64;
        let extends = chunk.offset <= held && chunk_end > held;
        if extends {
            incoming.data.extend_from_slice(&chunk.data[(held - chunk.offset) as usize..]);
            incoming.progressed_ms = now_ms;
            incoming.from = from;
        }
        let held = incoming.data.len() as u64;
        if held < incoming.total_bytes {
            if !extends && now_ms < incoming.requested_ms + interval_ms {
                return; // a duplicate: the request for `held` is already on its way
            }
            incoming.requested_ms = now_ms;
            let slot = incoming.slot;
            self.send(from, Message::SnapshotRequest(SnapshotRequest { ballot: self.promised, slot, offset: held }));
            return;
        }
        let incoming = self.incoming.take().expect("set above");
        let checkpoint = Checkpoint {
            slot: incoming.slot,
            membership: incoming.membership,
            config_slot: incoming.config_slot,
            data: bytes::Bytes::from(incoming.data),
        };
        if checkpoint.checksum() != incoming.checksum {
            // Corrupted somewhere: start over.
            self.send(
                from,
                Message::SnapshotRequest(SnapshotRequest { ballot: self.promised, slot: checkpoint.slot, offset: 0 }),
            );
            return;
        }
        self.install_checkpoint(checkpoint);
    }

    /// Replaces everything below `checkpoint.slot` with the checkpoint.
    fn install_checkpoint(&mut self, checkpoint: Checkpoint) {
        contract!(self, checkpoint.slot > self.applied, "install-only-forward");
        if let Role::Candidate(_) = self.role {
            // Its phase 1 covered a suffix and a configuration the checkpoint just superseded.
            self.role = Role::Follower;
            self.reset_election_timer();
        }
        let slot = checkpoint.slot;
        self.log.discard_below(slot);
        self.commit = self.commit.max(slot);
        self.applied = slot;
        self.horizon = self.horizon.max(slot);
        self.membership = checkpoint.membership.clone();
        self.config_slot = checkpoint.config_slot;
        self.out.push(Command::InstallCheckpoint(checkpoint.clone()));
        self.persist(DurableWrite::Checkpoint(checkpoint.clone()));
        self.checkpoint = Some(checkpoint);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::{Command, Input};
    use crate::membership::Membership;
    use crate::message::{Accepted, Message, SnapshotChunk, SnapshotRequest};
    use crate::types::{Checkpoint, ReplicaId};

    const CHUNK: usize = 16;

    /// Chunk offsets sent to replica 2.
    fn chunks_to_2(commands: &[Command]) -> Vec<u64> {
        sent(commands)
            .into_iter()
            .filter_map(|(to, m)| match m {
                Message::Snapshot(chunk) if to == ReplicaId(2) => Some(chunk.offset),
                _ => None,
            })
            .collect()
    }

    /// A leader that applied slots 0..2 and discarded them behind a 10-chunk checkpoint; replica 2
    /// never answered, so it needs the checkpoint.
    fn leader_with_checkpoint() -> super::super::Replica {
        let mut r = leader_of_three_with(|c| {
            c.checkpoint_retain_slots = 0;
            c.snapshot_chunk_bytes = CHUNK;
        });
        let out = step(&mut r, 1_002, Input::Propose(vec![request(7, 1, "a"), request(7, 2, "b")]));
        let _ = persist_all(&mut r, 1_002, &out);
        let accepted = Accepted { ballot: ballot(1, 0), upto: r.status().log_end, round: 0 };
        let _ = deliver(&mut r, 1_003, 1, Message::Accepted(accepted));
        let applied = r.status().applied;
        assert!(applied > 0, "slots were chosen and applied");
        let membership = Membership::new((0..3).map(ReplicaId).collect());
        let checkpoint = Checkpoint { slot: applied, membership, config_slot: None, data: vec![9u8; CHUNK * 10].into() };
        let out = step(&mut r, 1_004, Input::CheckpointTaken(checkpoint));
        let _ = persist_all(&mut r, 1_004, &out);
        assert_eq!(r.log_base(), applied, "the log below the checkpoint is discarded");
        r
    }

    #[test]
    fn a_transfer_the_follower_keeps_driving_is_never_restarted_by_heartbeats() {
        let mut r = leader_with_checkpoint();
        let mut restarts = 0;
        let mut now = 1_005;
        let mut offset = 0u64;
        // The follower asks for one chunk every 15 ms: slower than the 20 ms heartbeats would let
        // a transfer live if stalled heartbeats restarted it, faster than the restart timeout.
        for _ in 0..10 {
            now += 15;
            let out = step(&mut r, now, Input::Tick);
            restarts += chunks_to_2(&out).iter().filter(|o| **o == 0).count();
            let request = SnapshotRequest { ballot: ballot(1, 0), slot: r.status().applied, offset };
            let out = deliver(&mut r, now, 2, Message::SnapshotRequest(request));
            assert_eq!(chunks_to_2(&out), vec![offset], "one chunk per request, at the requested offset");
            offset += CHUNK as u64;
        }
        assert!(restarts <= 1, "the leader restarted a live transfer {restarts} times");
        // Silence for an election timeout (replica 1 keeps the leader in office): the leader
        // assumes the transfer was lost and restarts it.
        let accepted = Accepted { ballot: ballot(1, 0), upto: r.status().log_end, round: 0 };
        let _ = deliver(&mut r, now + 199, 1, Message::Accepted(accepted));
        assert!(r.status().leading);
        let out = step(&mut r, now + 200, Input::Tick);
        assert_eq!(chunks_to_2(&out), vec![0], "a silent transfer restarts from the first chunk");
    }

    /// The chunk at `offset` of a 64-byte checkpoint at `slot` filled with `fill`.
    fn chunk(slot: u64, fill: u8, offset: u64) -> SnapshotChunk {
        SnapshotChunk {
            ballot: ballot(1, 0),
            slot,
            membership: Membership::new((0..3).map(ReplicaId).collect()),
            config_slot: None,
            total_bytes: 64,
            checksum: crc32c::crc32c(&[fill; 64]),
            offset,
            data: vec![fill; 16].into(),
        }
    }

    #[test]
    fn chunks_of_another_checkpoint_do_not_restart_a_transfer_that_is_moving() {
        let mut follower = replica(2, 3);
        // Checkpoint A (slot 5) from replica 1, B (slot 6) from replica 0, interleaved.
        let mut out = Vec::new();
        let mut now = 10;
        for offset in [0, 16, 32] {
            out.extend(deliver(&mut follower, now, 1, Message::Snapshot(chunk(5, 0xA, offset))));
            out.extend(deliver(&mut follower, now + 1, 0, Message::Snapshot(chunk(6, 0xB, offset))));
            now += 5;
        }
        out.extend(deliver(&mut follower, now, 1, Message::Snapshot(chunk(5, 0xA, 48))));
        let asked_b = sent(&out).iter().any(|(_, m)| matches!(m, Message::SnapshotRequest(r) if r.slot == 6));
        assert!(!asked_b, "a chunk of checkpoint B interrupted the transfer of A");
        let installed: Vec<u64> =
            out.iter().filter_map(|c| if let Command::InstallCheckpoint(c) = c { Some(c.slot) } else { None }).collect();
        assert_eq!(installed, vec![5], "A completed despite B's chunks in between");
    }

    #[test]
    fn a_sender_that_replaced_its_checkpoint_mid_transfer_is_followed_to_the_new_one() {
        let mut follower = replica(2, 3);
        let _ = deliver(&mut follower, 10, 0, Message::Snapshot(chunk(5, 0xA, 0)));
        let _ = deliver(&mut follower, 11, 0, Message::Snapshot(chunk(5, 0xA, 16)));
        // Replica 0 took a newer checkpoint: it answers the request for A's next chunk with B's first.
        let out = deliver(&mut follower, 12, 0, Message::Snapshot(chunk(6, 0xB, 0)));
        let asked: Vec<(u64, u64)> = sent(&out)
            .into_iter()
            .filter_map(|(_, m)| if let Message::SnapshotRequest(r) = m { Some((r.slot, r.offset)) } else { None })
            .collect();
        assert_eq!(asked, vec![(6, 16)], "the transfer moved on to B at once instead of waiting to time out");
    }

    #[test]
    fn duplicate_chunks_do_not_multiply_requests() {
        let mut follower = replica(2, 3);
        let chunk = |offset: u64| chunk(5, 1, offset);
        let requests = |commands: &[Command]| {
            sent(commands).into_iter().filter(|(_, m)| matches!(m, Message::SnapshotRequest(_))).count()
        };
        assert_eq!(requests(&deliver(&mut follower, 10, 0, Message::Snapshot(chunk(0)))), 1, "asks for the next chunk");
        assert_eq!(requests(&deliver(&mut follower, 11, 0, Message::Snapshot(chunk(0)))), 0, "a duplicate right after adds no chain");
        assert_eq!(requests(&deliver(&mut follower, 40, 0, Message::Snapshot(chunk(0)))), 1, "a heartbeat later, it re-asks");
        assert_eq!(requests(&deliver(&mut follower, 41, 0, Message::Snapshot(chunk(16)))), 1, "new data always asks on");
    }
}

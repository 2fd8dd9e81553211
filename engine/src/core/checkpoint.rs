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
    slot: Slot,
    total_bytes: u64,
    checksum: u32,
    membership: crate::membership::Membership,
    config_slot: Option<Slot>,
    data: Vec<u8>,
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
                progress.snapshot_in_flight = true;
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
        let fresh = self.incoming.as_ref().is_none_or(|i| i.slot != chunk.slot || i.checksum != chunk.checksum);
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
                slot: chunk.slot,
                total_bytes: chunk.total_bytes,
                checksum: chunk.checksum,
                membership: chunk.membership.clone(),
                config_slot: chunk.config_slot,
                data: Vec::new(),
            });
        }
        let incoming = self.incoming.as_mut().expect("set above");
        let held = incoming.data.len() as u64;
        let chunk_end = chunk.offset + chunk.data.len() as u64;
        if chunk.offset <= held && chunk_end > held {
            incoming.data.extend_from_slice(&chunk.data[(held - chunk.offset) as usize..]);
        }
        let held = incoming.data.len() as u64;
        if held < incoming.total_bytes {
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

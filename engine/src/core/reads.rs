//! Reads that skip the log. Linearizable reads use read-index: the leader notes the slot every
//! earlier-chosen write is below (`read_index`), confirms it still leads by a heartbeat round a
//! majority echoes back after the read arrived, and serves once `read_index` is applied. It assumes
//! nothing about clocks (a lease would assume a drift bound; we chose not to). Fast reads (RSL's)
//! are served by any replica once it has applied the slot the client asks for: bounded staleness,
//! monotonic for a client that carries the slot forward, not linearizable.

use super::{Command, Replica, Role};
use crate::types::Slot;

/// A linearizable read waiting at the leader.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PendingRead {
    pub id: u64,
    pub read_index: Slot,
    /// Heartbeat round a majority must echo.
    pub round: u64,
}

/// Most fast reads a replica queues waiting to catch up.
const MAX_WAITING_FAST_READS: usize = 65_536;

impl Replica {
    pub(crate) fn on_read(&mut self, id: u64) {
        let read_index = self.commit;
        let Role::Leader(leadership) = &mut self.role else {
            let leader = self.fresh_leader_hint();
            self.out.push(Command::ReadRefused { id, leader });
            return;
        };
        // Everything chosen before this read is below the commit index or among the slots this
        // leader re-proposed in phase 1.
        let read_index = read_index.max(leadership.phase1_end);
        #[cfg(feature = "mutations")]
        let round =
            if self.cfg.mutation == super::Mutation::ReadWithoutConfirmation { 0 } else { leadership.read_round + 1 };
        #[cfg(not(feature = "mutations"))]
        let round = leadership.read_round + 1;
        leadership.reads.push_back(PendingRead { id, read_index, round });
        leadership.read_round_due = true;
    }

    pub(crate) fn on_fast_read(&mut self, id: u64, min_slot: Slot) {
        if self.waiting_fast_reads.len() >= MAX_WAITING_FAST_READS {
            let leader = self.fresh_leader_hint();
            self.out.push(Command::ReadRefused { id, leader });
            return;
        }
        self.waiting_fast_reads.push((id, min_slot));
    }

    /// Starts the confirmation round reads arriving in this step wait for.
    pub(crate) fn start_read_round(&mut self) {
        let Role::Leader(leadership) = &mut self.role else {
            return;
        };
        if !leadership.read_round_due {
            return;
        }
        leadership.read_round_due = false;
        leadership.read_round += 1;
        self.broadcast_heartbeat();
    }

    /// Serves every read whose conditions now hold, in arrival order.
    pub(crate) fn serve_reads(&mut self) {
        let applied = self.applied;
        if !self.waiting_fast_reads.is_empty() {
            let mut ready = Vec::new();
            self.waiting_fast_reads.retain(|(id, min_slot)| {
                let now = *min_slot <= applied;
                if now {
                    ready.push(*id);
                }
                !now
            });
            self.out.extend(ready.into_iter().map(|id| Command::ReadReady { id, slot: applied }));
        }
        let quorum = self.membership.quorum();
        let Role::Leader(leadership) = &mut self.role else {
            return;
        };
        if leadership.reads.is_empty() {
            return;
        }
        let mut rounds: Vec<u64> = self
            .membership
            .voters()
            .iter()
            .map(|v| {
                if *v == self.cfg.id {
                    leadership.read_round
                } else {
                    leadership.progress.get(v).map_or(0, |p| p.round)
                }
            })
            .collect();
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        let confirmed = rounds[quorum - 1];
        while let Some(read) = leadership.reads.front() {
            if read.round > confirmed || read.read_index > applied {
                break;
            }
            self.out.push(Command::ReadReady { id: read.id, slot: applied });
            leadership.reads.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::{Command, Input};
    use crate::message::{Accepted, Message};
    use crate::types::ReplicaId;

    fn ready(commands: &[Command]) -> Vec<u64> {
        commands.iter().filter_map(|c| if let Command::ReadReady { id, .. } = c { Some(*id) } else { None }).collect()
    }

    #[test]
    fn a_read_index_read_waits_for_a_majority_to_echo_a_round_sent_after_it() {
        let mut r = leader_of_three();
        let out = step(&mut r, 2_000, Input::Read { id: 7 });
        assert!(ready(&out).is_empty(), "not served before leadership is confirmed");
        let round = sent(&out)
            .iter()
            .find_map(|(_, m)| if let Message::Heartbeat(h) = m { Some(h.round) } else { None })
            .expect("the read starts a heartbeat round");
        let ballot = r.promised;
        let stale = deliver(&mut r, 2_001, 1, Message::Accepted(Accepted { ballot, upto: 0, round: round - 1 }));
        assert!(ready(&stale).is_empty(), "an echo of an older round confirms nothing");
        let out = deliver(&mut r, 2_002, 1, Message::Accepted(Accepted { ballot, upto: 0, round }));
        assert_eq!(ready(&out), vec![7]);
    }

    #[test]
    fn a_fast_read_waits_until_its_slot_is_applied_and_a_follower_refuses_read_index() {
        let mut r = replica(1, 3);
        let out = step(&mut r, 10, Input::FastRead { id: 1, min_slot: 2 });
        assert!(ready(&out).is_empty());
        let values = vec![batch(1, 1, "a"), batch(1, 2, "b")];
        let accept =
            crate::message::Accept { ballot: ballot(1, 0), start: 0, values: values.into(), commit: 2, awaited: true };
        let out = deliver(&mut r, 11, 0, Message::Accept(accept));
        assert!(out.iter().any(|c| matches!(c, Command::ReadReady { id: 1, slot: 2 })));
        let out = step(&mut r, 12, Input::Read { id: 2 });
        assert!(matches!(out[..], [Command::ReadRefused { id: 2, leader: Some(ReplicaId(0)) }]));
    }
}

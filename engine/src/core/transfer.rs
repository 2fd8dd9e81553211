//! Leadership transfer and relinquish: the leader stops proposing, waits until the chosen voter
//! holds everything it proposed, then tells it to campaign at once (`TimeoutNow`). The others
//! promise to it despite having heard from the leader recently, so the hand-over costs about one
//! round trip. If the target does not take over in time, the leader resumes.

use super::{AdminReply, Command, Replica, Role};
use crate::message::{Message, TimeoutNow};
use crate::types::ReplicaId;

/// A hand-over in progress.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Transfer {
    pub to: ReplicaId,
    pub deadline_ms: u64,
    pub told: bool,
}

impl Replica {
    pub(crate) fn on_transfer_leadership(&mut self, to: Option<ReplicaId>) {
        let me = self.id();
        let leader = self.leader();
        let deadline_ms = self.now_ms + self.cfg.election_timeout_max_ms;
        let voters: Vec<ReplicaId> = self.membership.voters().iter().copied().filter(|v| *v != me).collect();
        let Role::Leader(leadership) = &mut self.role else {
            self.out.push(Command::Admin(AdminReply::Refused { reason: "not the leader", leader }));
            return;
        };
        let refuse = |reason| Command::Admin(AdminReply::Refused { reason, leader: None });
        if leadership.transfer.is_some() {
            self.out.push(refuse("a leadership transfer is already in progress"));
            return;
        }
        let target = match to {
            Some(to) if voters.contains(&to) => to,
            Some(_) => {
                self.out.push(refuse("the target is not another voter of the current configuration"));
                return;
            }
            None => match voters.iter().max_by_key(|v| leadership.progress.get(v).map_or(0, |p| p.matched)) {
                Some(best) => *best,
                None => {
                    self.out.push(refuse("no other voter to hand over to"));
                    return;
                }
            },
        };
        leadership.transfer = Some(super::transfer::Transfer { to: target, deadline_ms, told: false });
        self.out.push(Command::Admin(AdminReply::TransferStarted { to: target }));
        self.replicate(target);
        self.advance_transfer();
    }

    /// Tells the target to campaign once it holds everything; gives up after the deadline.
    pub(crate) fn advance_transfer(&mut self) {
        let horizon = self.horizon;
        let now_ms = self.now_ms;
        let Role::Leader(leadership) = &mut self.role else {
            return;
        };
        let Some(transfer) = leadership.transfer.as_mut() else {
            return;
        };
        if now_ms > transfer.deadline_ms {
            leadership.transfer = None; // the target did not take over: keep leading
            self.fill_window();
            return;
        }
        let caught_up = leadership.progress.get(&transfer.to).is_some_and(|p| p.matched >= horizon);
        if caught_up && !transfer.told {
            transfer.told = true;
            let (to, ballot) = (transfer.to, leadership.ballot);
            self.send(to, Message::TimeoutNow(TimeoutNow { ballot }));
        }
    }

    pub(crate) fn on_timeout_now(&mut self, from: ReplicaId, timeout: TimeoutNow) {
        let asked_by_our_leader = timeout.ballot == self.promised && from == timeout.ballot.owner();
        if asked_by_our_leader
            && matches!(self.role, Role::Follower)
            && self.membership.is_voter(self.id())
            && self.candidacy_allowed
        {
            self.start_election_for_transfer();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::{AdminReply, Command, Input};
    use crate::message::{Accepted, Message, Prepare, TimeoutNow};
    use crate::types::ReplicaId;

    #[test]
    fn the_leader_pauses_then_tells_a_caught_up_target_to_campaign() {
        let mut r = leader_of_three();
        let out = step(&mut r, 2_000, Input::Propose(vec![request(1, 1, "x")]));
        persist_all(&mut r, 2_000, &out);
        let out = step(&mut r, 2_001, Input::TransferLeadership { to: Some(ReplicaId(2)) });
        assert!(out.iter().any(|c| matches!(c, Command::Admin(AdminReply::TransferStarted { to: ReplicaId(2) }))));
        assert!(!sent(&out).iter().any(|(_, m)| matches!(m, Message::TimeoutNow(_))), "target not caught up yet");
        let before = r.status().log_end;
        step(&mut r, 2_002, Input::Propose(vec![request(1, 2, "y")]));
        assert_eq!(r.status().log_end, before, "no new proposals during a hand-over");
        let ballot = r.promised;
        let out = deliver(&mut r, 2_003, 2, Message::Accepted(Accepted { ballot, upto: before, round: 0 }));
        assert_eq!(sent(&out), vec![(ReplicaId(2), Message::TimeoutNow(TimeoutNow { ballot }))]);
    }

    /// An empty accept from replica 0 at ballot 1.0: the receiver follows it as its leader.
    fn leader_contact() -> Message {
        let accept = crate::message::Accept {
            ballot: ballot(1, 0),
            start: 0,
            values: Default::default(),
            commit: 0,
            awaited: true,
        };
        Message::Accept(accept)
    }

    #[test]
    fn a_follower_told_to_campaign_asks_others_to_ignore_stickiness() {
        let mut r = replica(1, 3);
        let out = deliver(&mut r, 10, 0, leader_contact());
        persist_all(&mut r, 10, &out);
        let out = deliver(&mut r, 11, 0, Message::TimeoutNow(TimeoutNow { ballot: ballot(1, 0) }));
        let prepares: Vec<Prepare> = sent(&out)
            .into_iter()
            .filter_map(|(_, m)| if let Message::Prepare(p) = m { Some(p) } else { None })
            .collect();
        assert_eq!(prepares.len(), 2);
        assert!(prepares.iter().all(|p| p.transfer && p.ballot > ballot(1, 0)));
        // Another follower that heard from the leader a moment ago still promises.
        let mut other = replica(2, 3);
        let out = deliver(&mut other, 10, 0, leader_contact());
        persist_all(&mut other, 10, &out);
        let out = deliver(&mut other, 12, 1, Message::Prepare(prepares[0].clone()));
        let out = persist_all(&mut other, 12, &out);
        assert!(sent(&out).iter().any(|(to, m)| *to == ReplicaId(1) && matches!(m, Message::Promise(_))));
    }
}

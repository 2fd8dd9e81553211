//! Configuration changes as committed decrees, RSL style: a `Value::Reconfig` at slot `s` is the
//! last slot of the old configuration. The leader proposes nothing past `s` until `s` is chosen;
//! once applied, slots after `s` belong to the new configuration, and a leader that is still a voter
//! runs phase 1 again in it (a leader that was removed steps down). Every slot is thus decided by
//! exactly one configuration, so a change in flight when the leader crashes resolves to the old or
//! the new one, never a mix.

use super::{AdminReply, Command, Replica, Role};
use crate::contract;
use crate::membership::Membership;
use crate::types::{Entry, Slot, Value};

impl Replica {
    pub(crate) fn on_change_membership(&mut self, membership: Membership) {
        let refuse = |reason| Command::Admin(AdminReply::Refused { reason, leader: None });
        if membership.validate().is_err() {
            self.out.push(refuse("malformed configuration"));
            return;
        }
        let leader = self.leader();
        let horizon = self.horizon;
        let Role::Leader(leadership) = &mut self.role else {
            self.out.push(Command::Admin(AdminReply::Refused { reason: "not the leader", leader }));
            return;
        };
        if leadership.reconfig_pending.is_some() {
            self.out.push(refuse("a configuration change is already in flight"));
            return;
        }
        let ballot = leadership.ballot;
        leadership.reconfig_pending = Some(horizon);
        let slot = self.propose_at_horizon(ballot, Value::Reconfig(membership.clone()));
        self.out.push(Command::Admin(AdminReply::ReconfigProposed { slot }));
        #[cfg(feature = "mutations")]
        if self.mutated(super::Mutation::EarlyReconfig) {
            // The bug: switch quorums as soon as the change is proposed, and keep proposing.
            self.membership = membership;
            if let Role::Leader(leadership) = &mut self.role {
                leadership.reconfig_pending = None;
                for member in self.membership.members().filter(|m| *m != self.cfg.id) {
                    leadership
                        .progress
                        .entry(member)
                        .or_insert_with(|| super::leader::Progress::new(slot, self.now_ms));
                }
            }
        }
        self.replicate_all();
    }

    /// The reconfig at `slot` was applied: switch configurations.
    pub(crate) fn on_configuration_applied(&mut self, slot: Slot, membership: Membership) {
        contract!(self, slot < self.commit, "config-switch-only-when-chosen", "slot {slot} commit {}", self.commit);
        self.membership = membership;
        self.config_slot = Some(slot);
        if let Role::Candidate(_) = self.role {
            // Promises were gathered in the old configuration: campaign again later in the new one.
            self.role = Role::Follower;
            self.reset_election_timer();
        }
        if let Role::Leader(_) = self.role {
            if self.membership.is_voter(self.id()) && self.candidacy_allowed {
                // Slots past `slot` need a phase 1 in the new configuration.
                self.start_election();
            } else {
                let ballot = self.promised;
                self.step_down(ballot);
                self.leader_hint = None;
            }
        }
    }

    /// After recovery: the configuration is whatever the committed prefix last set.
    pub(crate) fn adopt_committed_configuration(&mut self) {
        let latest = (self.log.base()..self.commit).rev().find_map(|slot| match &self.log.get(slot)?.value {
            Value::Reconfig(membership) => Some((slot, membership.clone())),
            _ => None,
        });
        if let Some((slot, membership)) = latest {
            self.membership = membership;
            self.config_slot = Some(slot);
        }
    }

    /// The first reconfig among phase-1 results at or after `from`: the new leader's proposals stop there.
    pub(crate) fn first_reconfig<'a>(entries: impl Iterator<Item = (&'a Slot, &'a Entry)>) -> Option<Slot> {
        entries.filter(|(_, e)| matches!(e.value, Value::Reconfig(_))).map(|(slot, _)| *slot).next()
    }
}

//! One operator edit of the configuration (add a voter or learner, promote a learner, remove a
//! member), turned into the whole next `Membership` the core proposes. The edit is applied on the
//! core thread against the leader's configuration in force, so two operators cannot overwrite
//! each other's change with a stale copy.

use crate::membership::{Membership, MembershipError};
use crate::types::ReplicaId;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// An edit of the configuration in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Make a non-member a voter.
    AddVoter(ReplicaId),
    /// Make a non-member a learner (receives the log, never votes).
    AddLearner(ReplicaId),
    /// Make a learner a voter.
    Promote(ReplicaId),
    /// Remove a voter or a learner (the leader included: it steps down once the change applies).
    Remove(ReplicaId),
}

/// Why an edit does not apply to the configuration in force.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum MembershipChangeError {
    /// Adding a replica that is already a voter.
    #[error("replica {0} is already a voter; nothing to add")]
    AlreadyVoter(ReplicaId),
    /// Adding a replica that is already a learner.
    #[error("replica {0} is already a learner; promote it with `decree member promote --id {id}`", id = .0.0)]
    AlreadyLearner(ReplicaId),
    /// Promoting or removing a replica the configuration does not name.
    #[error("replica {0} is not a member; see `decree member list`")]
    NotMember(ReplicaId),
    /// Promoting a voter.
    #[error("replica {0} is already a voter; only learners can be promoted")]
    NotLearner(ReplicaId),
    /// The result is not a valid configuration (e.g. it would have no voter left).
    #[error("the resulting configuration is invalid: {0}")]
    Invalid(#[from] MembershipError),
}

impl MembershipChange {
    /// The replica this edit is about.
    pub fn replica(&self) -> ReplicaId {
        match *self {
            MembershipChange::AddVoter(id) | MembershipChange::AddLearner(id) | MembershipChange::Promote(id) | MembershipChange::Remove(id) => id,
        }
    }

    /// The configuration after this edit of `current`.
    pub fn apply(&self, current: &Membership) -> Result<Membership, MembershipChangeError> {
        let id = self.replica();
        let (mut voters, mut learners) = (current.voters().to_vec(), current.learners().to_vec());
        let is_learner = learners.contains(&id);
        match self {
            MembershipChange::AddVoter(_) | MembershipChange::AddLearner(_) if current.is_voter(id) => {
                return Err(MembershipChangeError::AlreadyVoter(id))
            }
            MembershipChange::AddVoter(_) | MembershipChange::AddLearner(_) if is_learner => return Err(MembershipChangeError::AlreadyLearner(id)),
            MembershipChange::AddVoter(_) => voters.push(id),
            MembershipChange::AddLearner(_) => learners.push(id),
            MembershipChange::Promote(_) if current.is_voter(id) => return Err(MembershipChangeError::NotLearner(id)),
            MembershipChange::Promote(_) | MembershipChange::Remove(_) if !current.is_member(id) => return Err(MembershipChangeError::NotMember(id)),
            MembershipChange::Promote(_) => {
                learners.retain(|l| *l != id);
                voters.push(id);
            }
            MembershipChange::Remove(_) => {
                voters.retain(|v| *v != id);
                learners.retain(|l| *l != id);
            }
        }
        Ok(Membership::try_new(voters, learners)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(voters: &[u32], learners: &[u32]) -> Membership {
        Membership::try_new(voters.iter().copied().map(ReplicaId).collect(), learners.iter().copied().map(ReplicaId).collect()).unwrap()
    }

    #[test]
    fn edits_produce_the_next_configuration() {
        let current = config(&[0, 1, 2], &[4]);
        assert_eq!(MembershipChange::AddVoter(ReplicaId(3)).apply(&current), Ok(config(&[0, 1, 2, 3], &[4])));
        assert_eq!(MembershipChange::AddLearner(ReplicaId(3)).apply(&current), Ok(config(&[0, 1, 2], &[3, 4])));
        assert_eq!(MembershipChange::Promote(ReplicaId(4)).apply(&current), Ok(config(&[0, 1, 2, 4], &[])));
        assert_eq!(MembershipChange::Remove(ReplicaId(0)).apply(&current), Ok(config(&[1, 2], &[4])));
        assert_eq!(MembershipChange::Remove(ReplicaId(4)).apply(&current), Ok(config(&[0, 1, 2], &[])));
    }

    #[test]
    fn impossible_edits_are_refused_with_the_reason() {
        let current = config(&[0, 1], &[4]);
        assert_eq!(MembershipChange::AddVoter(ReplicaId(1)).apply(&current), Err(MembershipChangeError::AlreadyVoter(ReplicaId(1))));
        assert_eq!(MembershipChange::AddVoter(ReplicaId(4)).apply(&current), Err(MembershipChangeError::AlreadyLearner(ReplicaId(4))));
        assert_eq!(MembershipChange::Promote(ReplicaId(0)).apply(&current), Err(MembershipChangeError::NotLearner(ReplicaId(0))));
        assert_eq!(MembershipChange::Promote(ReplicaId(9)).apply(&current), Err(MembershipChangeError::NotMember(ReplicaId(9))));
        assert_eq!(MembershipChange::Remove(ReplicaId(9)).apply(&current), Err(MembershipChangeError::NotMember(ReplicaId(9))));
        let lone = config(&[0], &[4]);
        assert_eq!(MembershipChange::Remove(ReplicaId(0)).apply(&lone), Err(MembershipChangeError::Invalid(MembershipError::NoVoters)));
    }
}

//! Who votes and who only listens. Kept as data, not baked into the core: a committed
//! `Value::Reconfig` replaces it.

use crate::types::ReplicaId;
use serde::{Deserialize, Serialize};

/// Most members (voters plus learners) a configuration may name.
pub const MAX_MEMBERS: usize = 64;

/// A configuration: voting members and non-voting learners (which receive the log).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Membership {
    voters: Vec<ReplicaId>,
    learners: Vec<ReplicaId>,
}

/// Why a proposed configuration is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// No voters.
    #[error("a configuration needs at least one voter")]
    NoVoters,
    /// Too many members.
    #[error("a configuration may name at most {MAX_MEMBERS} members")]
    TooMany,
    /// A replica listed as both voter and learner.
    #[error("replica {0} is listed both as voter and as learner")]
    Overlap(ReplicaId),
}

impl Membership {
    /// Voters only. Panics on an empty set (a programming error; use `try_new` for input).
    pub fn new(voters: Vec<ReplicaId>) -> Self {
        Self::try_new(voters, Vec::new()).expect("contract violated: membership-valid")
    }

    /// Voters and learners, validated; both lists are sorted and deduplicated.
    pub fn try_new(mut voters: Vec<ReplicaId>, mut learners: Vec<ReplicaId>) -> Result<Self, MembershipError> {
        voters.sort();
        voters.dedup();
        learners.sort();
        learners.dedup();
        if voters.is_empty() {
            return Err(MembershipError::NoVoters);
        }
        if voters.len() + learners.len() > MAX_MEMBERS {
            return Err(MembershipError::TooMany);
        }
        if let Some(both) = learners.iter().find(|l| voters.binary_search(l).is_ok()) {
            return Err(MembershipError::Overlap(*both));
        }
        Ok(Membership { voters, learners })
    }

    /// Checks a decoded configuration (from the wire or a file) is well formed.
    pub fn validate(&self) -> Result<(), MembershipError> {
        Self::try_new(self.voters.clone(), self.learners.clone()).map(|_| ())
    }

    /// The voters, ascending.
    pub fn voters(&self) -> &[ReplicaId] {
        &self.voters
    }

    /// The learners, ascending.
    pub fn learners(&self) -> &[ReplicaId] {
        &self.learners
    }

    /// Voters then learners: everyone the leader replicates to.
    pub fn members(&self) -> impl Iterator<Item = ReplicaId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }

    /// Whether `id` votes.
    pub fn is_voter(&self, id: ReplicaId) -> bool {
        self.voters.binary_search(&id).is_ok()
    }

    /// Whether `id` is a voter or a learner.
    pub fn is_member(&self, id: ReplicaId) -> bool {
        self.is_voter(id) || self.learners.binary_search(&id).is_ok()
    }

    /// Votes needed for a decision: a strict majority of the voters.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// Whether `id`, following `leader`, is a spare: a member whose acknowledgement the leader
    /// does not need for a majority when every replica is up. The leader votes for its own
    /// entries, and the voters after it in id order (wrapping) complete the majority; the other
    /// voters and every learner are spares. A spare may delay its syncs (group commit over a
    /// longer window): commits do not wait for it unless a replica on the commit path fails, and
    /// on a host whose replicas share a disk, one sync fewer per commit is in flight.
    pub fn is_spare(&self, leader: ReplicaId, id: ReplicaId) -> bool {
        if id == leader || !self.is_member(id) {
            return false;
        }
        let Ok(position) = self.voters.binary_search(&id) else { return true };
        // Votes the leader still needs from followers: a leader outside the voters (being removed)
        // needs a whole majority.
        let needed = if self.is_voter(leader) { self.quorum() - 1 } else { self.quorum() };
        // Voters strictly after the leader in ring order; `partition_point` places a non-voter
        // leader among them too.
        let after_leader = self.voters.partition_point(|v| *v <= leader);
        let distance = (position + self.voters.len() - after_leader) % self.voters.len();
        distance >= needed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_is_a_strict_majority_of_voters_only() {
        let m = Membership::try_new(vec![ReplicaId(1), ReplicaId(2), ReplicaId(3), ReplicaId(4)], vec![ReplicaId(5)])
            .unwrap();
        assert_eq!(m.quorum(), 3);
        assert!(m.is_member(ReplicaId(5)) && !m.is_voter(ReplicaId(5)));
    }

    fn spares(m: &Membership, leader: u32) -> Vec<u32> {
        (0..10).filter(|id| m.is_spare(ReplicaId(leader), ReplicaId(*id))).collect()
    }

    #[test]
    fn the_voters_after_the_leader_complete_its_majority_and_the_rest_are_spares() {
        let three = Membership::new(vec![ReplicaId(0), ReplicaId(1), ReplicaId(2)]);
        assert_eq!(spares(&three, 0), vec![2]);
        assert_eq!(spares(&three, 1), vec![0], "ring order wraps");
        assert_eq!(spares(&three, 2), vec![1]);
        let five = Membership::try_new((1..=5).map(ReplicaId).collect(), vec![ReplicaId(7)]).unwrap();
        assert_eq!(spares(&five, 4), vec![2, 3, 7], "4 needs 5 and 1; the learner never counts");
        let two = Membership::new(vec![ReplicaId(3), ReplicaId(8)]);
        assert_eq!(spares(&two, 3), Vec::<u32>::new(), "two voters: every vote is needed");
        assert_eq!(spares(&three, 6), vec![2], "a leader outside the voters needs a whole majority: 0 and 1 (after 6, wrapping)");
    }

    #[test]
    fn malformed_configurations_are_refused() {
        assert_eq!(Membership::try_new(vec![], vec![ReplicaId(1)]), Err(MembershipError::NoVoters));
        assert_eq!(
            Membership::try_new(vec![ReplicaId(1)], vec![ReplicaId(1)]),
            Err(MembershipError::Overlap(ReplicaId(1)))
        );
        let many = (0..65).map(ReplicaId).collect();
        assert_eq!(Membership::try_new(many, vec![]), Err(MembershipError::TooMany));
    }
}

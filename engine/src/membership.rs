//! Who votes. Kept as data, not baked into the core, so configuration changes can replace it.

use crate::types::ReplicaId;

/// The voting members of a group and the quorum they need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    voters: Vec<ReplicaId>,
}

impl Membership {
    /// A membership of the given voters (deduplicated, sorted). Panics on an empty set.
    pub fn new(mut voters: Vec<ReplicaId>) -> Self {
        voters.sort();
        voters.dedup();
        assert!(!voters.is_empty(), "contract violated: membership-nonempty");
        Membership { voters }
    }

    /// The voters, ascending.
    pub fn voters(&self) -> &[ReplicaId] {
        &self.voters
    }

    /// Whether `id` votes.
    pub fn is_voter(&self, id: ReplicaId) -> bool {
        self.voters.binary_search(&id).is_ok()
    }

    /// Votes needed for a decision: a strict majority.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }
}

//! The application's side of replication: a deterministic state machine fed committed commands,
//! with RSL's callbacks in Rust form.

use crate::membership::Membership;
use bytes::Bytes;

/// Serialization deferred to another thread: produces `save_checkpoint`'s bytes for a frozen state.
pub type Frozen = Box<dyn FnOnce() -> Bytes + Send + 'static>;

/// A deterministic state machine. Every replica executes the same committed commands in the same
/// order, so every replica's state (and every reply) is the same.
pub trait StateMachine {
    /// Executes one committed operation and returns its reply. Must be deterministic: no clocks,
    /// randomness or I/O that could differ between replicas.
    fn execute(&mut self, op: &[u8]) -> Bytes;

    /// A hint that `op` executes soon, before the few operations ahead of it have: a state
    /// machine whose state misses the cache may load what `op` will touch, so that the misses of
    /// several operations overlap. Must not change the state; the default does nothing.
    fn prefetch(&self, _op: &[u8]) {}

    /// Serializes the whole state (RSL's SaveState). Called between two `execute`s; an
    /// implementation with a large state should copy-on-write so the caller is not stalled.
    fn save_checkpoint(&self) -> Bytes;

    /// Freezes the current state and returns the work that serializes it, to run on another
    /// thread so a checkpoint does not stall the replica. A state machine with a persistent
    /// (structurally shared) representation shares its state here (and may note that it did, so
    /// it knows what to copy on a later write); the default serializes now.
    fn freeze(&mut self) -> Frozen {
        let bytes = self.save_checkpoint();
        Box::new(move || bytes)
    }

    /// Replaces the state with a checkpoint produced by `save_checkpoint` (RSL's LoadState).
    fn load_checkpoint(&mut self, data: &[u8]) -> Result<(), String>;

    /// This replica became (`true`) or stopped being (`false`) the primary (RSL's NotifyStatus).
    fn on_primary_change(&mut self, _primary: bool) {}

    /// A configuration change was applied (RSL's NotifyConfigurationChanged).
    fn on_configuration_change(&mut self, _membership: &Membership) {}

    /// Whether this replica may campaign to become primary (RSL's CanBecomePrimary veto).
    fn can_become_primary(&self) -> bool {
        true
    }
}

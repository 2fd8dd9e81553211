//! The application's side of replication: a deterministic state machine fed committed commands.

use bytes::Bytes;

/// A deterministic state machine. Every replica executes the same committed commands in the same
/// order, so every replica's state (and every reply) is the same.
pub trait StateMachine {
    /// Executes one committed operation and returns its reply. Must be deterministic: no clocks,
    /// randomness or I/O that could differ between replicas.
    fn execute(&mut self, op: &[u8]) -> Bytes;
}

//! The log seam: the persistence thread stages the core's durable writes and syncs them as a group.

use crate::core::DurableWrite;
use crate::types::Checkpoint;
use std::sync::Arc;
use thiserror::Error;

/// A log failure. After one, the replica must stop acknowledging: it exits for repair.
#[derive(Debug, Error)]
#[error("log storage failed: {detail} (the replica stops voting; inspect the log device, then restart)")]
pub struct StorageError {
    /// What failed, naming the resource.
    pub detail: String,
}

/// A replica's persistent log as the runtime drives it.
pub trait LogStorage: Send + 'static {
    /// Stages `write` (persist ticket `ticket`); durable only after a later `sync`.
    fn stage(&mut self, ticket: u64, write: &DurableWrite) -> Result<(), StorageError>;
    /// Persists everything staged (one group commit); returns the highest ticket now durable,
    /// if a new one became durable.
    fn sync(&mut self) -> Result<Option<u64>, StorageError>;
    /// Bytes the log holds, for metrics, status and the checkpoint policy.
    fn size_bytes(&self) -> u64;
    /// Bytes the log can hold (None: unbounded). The driver checkpoints once the log is half
    /// full, so a burst of large batches cannot fill it between slot-count checkpoints.
    fn capacity_bytes(&self) -> Option<u64> {
        None
    }
    /// Where the checkpoint helper thread stores a checkpoint it took, before handing it to the
    /// core (None: `stage` stores checkpoints itself). Storing one is a multi-megabyte write and
    /// fsync; on the persistence thread it held every group commit behind it for that long
    /// (`commits_go_on_while_a_checkpoint_is_being_stored`).
    fn checkpoint_writer(&self) -> Option<Arc<dyn CheckpointWriter>> {
        None
    }
}

/// Stores checkpoints durably, from any thread. `stage` of a `DurableWrite::Checkpoint` must then
/// find it stored (and not store it again); stores never go back to an older slot, so a store
/// that lost a race to a newer checkpoint (one installed from the leader) changes nothing.
pub trait CheckpointWriter: Send + Sync {
    /// Makes `checkpoint` durable, unless one at its slot or later already is.
    fn store(&self, checkpoint: &Checkpoint) -> Result<(), StorageError>;
}

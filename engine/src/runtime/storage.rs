//! The log seam: the persistence thread stages the core's durable writes and syncs them as a group.

use crate::core::DurableWrite;
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
}

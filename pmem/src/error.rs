//! The crate-boundary error: what happened, to which resource, and what to do about it.

use std::io;

/// Errors the persistent log reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O call on the log's medium failed. The log is now failed: nothing written after the
    /// last successful persist counts as durable. Replace or repair the device, then reopen
    /// (recovery reads back what really reached the media).
    #[error("{resource}: {op} failed: {source}; the log stopped acknowledging, fix the device and reopen")]
    Io {
        /// Path or name of the medium.
        resource: String,
        /// What was being done (write, persist, read, open, map).
        op: &'static str,
        /// The OS error (EIO, ENOSPC, ...).
        #[source]
        source: io::Error,
    },
    /// A previous I/O error put the log in the failed state; it refuses every operation.
    #[error("{resource}: log failed earlier ({reason}); it never reports durability again, reopen to recover")]
    Failed {
        /// Path or name of the medium.
        resource: String,
        /// The first error, as text.
        reason: String,
    },
    /// A record that was durable is damaged: acknowledged data is lost, so this replica must not
    /// vote as if it had it. Restore the replica from a peer (state transfer).
    #[error("{resource}: corrupt record at byte offset {offset} (lsn {lsn}): {detail}; restore this replica from a peer")]
    Corrupt {
        /// Path or name of the medium.
        resource: String,
        /// Byte offset in the medium (file offset) of the damaged record.
        offset: u64,
        /// Logical position of the damaged record.
        lsn: u64,
        /// What is wrong.
        detail: String,
    },
    /// The ring has no room for the record; discard a prefix (after a checkpoint) to free space,
    /// or create the log with a larger capacity.
    #[error("{resource}: log full: need {needed_bytes} bytes, {free_bytes} free of {capacity_bytes}; discard a prefix after a checkpoint")]
    Full {
        /// Path or name of the medium.
        resource: String,
        /// Bytes the append needs.
        needed_bytes: u64,
        /// Bytes free in the ring.
        free_bytes: u64,
        /// Ring capacity.
        capacity_bytes: u64,
    },
    /// The medium holds no valid superblock (never formatted, or both copies damaged).
    #[error("{resource}: no valid log superblock ({detail}); create the log first or restore from a peer")]
    NotFormatted {
        /// Path or name of the medium.
        resource: String,
        /// Why each copy was rejected.
        detail: String,
    },
    /// The caller asked for something the log cannot do (bad size, slot already discarded, ...).
    #[error("{resource}: {detail}")]
    Invalid {
        /// Path or name of the medium.
        resource: String,
        /// What was wrong with the request.
        detail: String,
    },
    /// Another open handle (usually another process) holds the log's exclusive lock.
    #[error("{resource}: log is in use (exclusive lock held by another process); stop that replica first")]
    Locked {
        /// Path or name of the medium.
        resource: String,
    },
    /// The chosen backend cannot run here (e.g. MAP_SYNC unsupported: not a DAX filesystem).
    #[error("{resource}: backend {backend} unavailable: {detail}")]
    Unsupported {
        /// Path or name of the medium.
        resource: String,
        /// The backend asked for.
        backend: &'static str,
        /// Why it cannot run and what to use instead.
        detail: String,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

//! decree-pmem: the persistent log every replica appends to.
//!
//! A [`Log`] is a ring of checksummed [`record`]s on a [`Medium`]: a DAX mapping persisted with
//! cache-line flushes (`dax`, no syscall per append), an ordinary file with group commit
//! (`file`), volatile anonymous memory for benchmarks (`memory`, persist a no-op, a restart loses
//! everything), or the simulator's memory that loses, tears and flips bits (`sim`). [`open`] picks the
//! backend from a [`Config`] (auto-detecting DAX) and logs which one runs and why.
//!
//! Driving loop (the engine's driver):
//! 1. for each `Command::Persist { ticket, write }`: `end = log.stage(&write, encode)`,
//!    `tickets.staged(ticket, end)`;
//! 2. once per batch: `durable = log.sync()?` (one persist for the whole group);
//! 3. `if let Some(upto) = tickets.completed(durable) { core.step(Persisted { upto }) }`.
//! 4. on `Err`: the log is failed; stop acknowledging and voting, log the error, exit for repair.
//!
//! After a restart, `open` recovers and `Log::recovered_writes` hands the live state back as the
//! core's `DurableWrite`s (promise, entries, commit).
//!
//! The log is record-structured: re-accepting a slot at a higher ballot appends a new record that
//! supersedes the old one on read and recovery; later slots are never forgotten by it.

pub mod config;
pub mod dax;
pub mod error;
pub mod faulty;
pub mod file;
pub mod file_direct;
pub mod file_mmap;
pub mod file_uring;
pub mod flush;
pub mod live_slots;
pub mod lock;
pub mod log;
pub mod mapping;
pub mod medium;
pub mod meminfo;
pub mod memory;
pub mod payloads;
#[cfg(feature = "rdma-check")]
pub mod rdma_check;
pub mod record;
pub mod recovery;
pub mod ring;
pub mod sim;
pub mod state;
pub mod superblock;
pub mod testdata;
pub mod tickets;
pub mod window;

pub use config::{open, Backend, Config, FileStrategy};
pub use error::{Error, Result};
pub use log::{Log, StoredEntry};
pub use medium::{BackendKind, Medium};
pub use memory::MemoryMedium;
pub use state::HardState;
pub use tickets::Tickets;

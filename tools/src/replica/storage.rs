//! Adapter from decree-pmem's `Log` to the runtime's `LogStorage`, plus recovery of the core's
//! `Durable` state from the log's records (pmem returns slots and payloads; values are postcard).

use super::checkpoint_file;
use super::checkpoint_store::CheckpointStore;
use decree_engine::core::DurableWrite;
use decree_engine::durable::Durable;
use decree_engine::runtime::{CheckpointWriter, LogStorage, StorageError};
use decree_engine::types::{Entry, Value};
use decree_pmem::{Log, Medium, Tickets};
use std::sync::Arc;

/// The replica's log as the persistence thread drives it.
pub struct PmemStorage {
    log: Log<Box<dyn Medium>>,
    tickets: Tickets,
    /// Where checkpoints are stored durably; `None` on a volatile log, which never reads one back
    /// (so none is written: no fsyncs on the benchmark backend).
    checkpoints: Option<Arc<CheckpointStore>>,
}

fn storage_error(what: &str, error: impl std::fmt::Display) -> StorageError {
    StorageError { detail: format!("{what}: {error}") }
}

impl PmemStorage {
    /// Opens (or creates) the log and rebuilds the core's durable state from it. On the volatile
    /// `memory` backend the log is always new and empty, and a checkpoint file left by an earlier
    /// run is ignored: the replica starts empty, as if never started.
    pub fn open(config: &decree_pmem::Config) -> Result<(PmemStorage, Durable), StorageError> {
        let log = decree_pmem::open(config).map_err(|e| storage_error("opening the log", e))?;
        let checkpoint_path = checkpoint_file::path_for(&config.path);
        let mut durable = Durable::default();
        let recovered_checkpoint = if log.backend().is_volatile() {
            if checkpoint_path.exists() {
                tracing::warn!(path = %checkpoint_path.display(), "volatile log: the checkpoint of an earlier run is ignored (the replica starts empty)");
            }
            None
        } else {
            checkpoint_file::load(&checkpoint_path).map_err(|e| storage_error("recovery", e))?
        };
        // The checkpoint first: entries it covers are then ignored, as the log discarded them.
        let stored_slot = recovered_checkpoint.as_ref().map(|checkpoint| checkpoint.slot);
        if let Some(checkpoint) = recovered_checkpoint {
            tracing::info!(slot = checkpoint.slot, bytes = checkpoint.data.len(), "checkpoint recovered");
            durable.apply(&DurableWrite::Checkpoint(checkpoint)).map_err(|e| storage_error("recovery", e))?;
        }
        let hard = log.hard_state();
        durable.apply(&DurableWrite::Promise(hard.promise)).map_err(|e| storage_error("recovery", e))?;
        let slots: Vec<_> = log.slots().collect();
        let mut entries = Vec::with_capacity(slots.len());
        for (slot, _) in slots {
            let stored = log.read(slot).map_err(|e| storage_error("reading a recovered slot", e))?;
            let Some(stored) = stored else { continue };
            let value: Value = postcard::from_bytes(&stored.payload)
                .map_err(|e| storage_error(&format!("decoding the value of slot {slot}"), e))?;
            entries.push(Entry { slot, ballot: stored.ballot, value });
        }
        let recovered_slots = entries.len();
        durable.apply(&DurableWrite::Entries(entries.into())).map_err(|e| storage_error("recovery", e))?;
        durable.apply(&DurableWrite::Commit(hard.commit)).map_err(|e| storage_error("recovery", e))?;
        durable.validate().map_err(|e| storage_error("recovery", e))?;
        tracing::info!(slots = recovered_slots, promised = %durable.promised(), commit = durable.commit(), backend = %log.backend().label(), "log recovered");
        let checkpoints =
            (!log.backend().is_volatile()).then(|| Arc::new(CheckpointStore::new(checkpoint_path, stored_slot)));
        Ok((PmemStorage { log, tickets: Tickets::default(), checkpoints }, durable))
    }
}

impl LogStorage for PmemStorage {
    fn stage(&mut self, ticket: u64, write: &DurableWrite) -> Result<(), StorageError> {
        if let (DurableWrite::Checkpoint(checkpoint), Some(checkpoints)) = (write, &self.checkpoints) {
            // Durable beside the log before the log discards the entries it covers. One the
            // driver took is stored already (`checkpoint_writer`); one installed from the leader
            // is stored here.
            checkpoints.store(checkpoint)?;
        }
        // `out` is the log's scratch, reused across batches: postcard extends it in place (the
        // take and the assignment move the Vec, they allocate nothing).
        let mut encode = |value: &Value, out: &mut Vec<u8>| {
            *out = postcard::to_extend(value, std::mem::take(out)).expect("encoding into a Vec cannot fail");
        };
        let end = self.log.stage(write, &mut encode).map_err(|e| storage_error("staging", e))?;
        self.tickets.staged(ticket, end);
        Ok(())
    }

    fn sync(&mut self) -> Result<Option<u64>, StorageError> {
        let durable = self.log.sync().map_err(|e| storage_error("group commit", e))?;
        Ok(self.tickets.completed(durable))
    }

    fn size_bytes(&self) -> u64 {
        self.log.capacity_bytes() - self.log.free_bytes()
    }

    fn capacity_bytes(&self) -> Option<u64> {
        Some(self.log.capacity_bytes())
    }

    fn checkpoint_writer(&self) -> Option<Arc<dyn CheckpointWriter>> {
        self.checkpoints.clone().map(|store| store as Arc<dyn CheckpointWriter>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::checkpoint_file::tests::checkpoint;
    use decree_engine::types::{Ballot, ReplicaId};

    fn memory_config(dir: &std::path::Path) -> decree_pmem::Config {
        decree_pmem::Config { path: dir.join("log"), size_bytes: 4 << 20, backend: decree_pmem::Backend::Memory }
    }

    #[test]
    fn the_memory_backend_serves_writes_and_a_restart_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let (mut storage, durable) = PmemStorage::open(&memory_config(dir.path())).unwrap();
        assert_eq!((durable.entry_count(), durable.promised()), (0, Ballot::ZERO));
        let ballot = Ballot::new(2, ReplicaId(1));
        storage.stage(1, &DurableWrite::Promise(ballot)).unwrap();
        let entries = (0..10).map(|slot| Entry { slot, ballot, value: Value::Noop }).collect();
        storage.stage(2, &DurableWrite::Entries(entries)).unwrap();
        storage.stage(3, &DurableWrite::Commit(10)).unwrap();
        storage.stage(4, &DurableWrite::Checkpoint(checkpoint(5, b"state"))).unwrap();
        assert_eq!(storage.sync().unwrap(), Some(4), "every staged ticket completes at sync");
        assert!(storage.size_bytes() > 0);
        assert!(storage.log.read(7).unwrap().is_some(), "an entry above the checkpoint reads back");
        drop(storage);
        let (_, durable) = PmemStorage::open(&memory_config(dir.path())).unwrap();
        assert_eq!((durable.entry_count(), durable.promised(), durable.commit()), (0, Ballot::ZERO, 0));
        assert!(durable.checkpoint().is_none(), "the earlier run's checkpoint file is ignored");
    }
}

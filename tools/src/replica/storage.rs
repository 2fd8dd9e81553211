//! Adapter from decree-pmem's `Log` to the runtime's `LogStorage`, plus recovery of the core's
//! `Durable` state from the log's records (pmem returns slots and payloads; values are postcard).

use decree_engine::core::DurableWrite;
use decree_engine::durable::Durable;
use decree_engine::runtime::{LogStorage, StorageError};
use decree_engine::types::{Entry, Value};
use decree_pmem::{Log, Medium, Tickets};
use super::checkpoint_file;

/// The replica's log as the persistence thread drives it.
pub struct PmemStorage {
    log: Log<Box<dyn Medium>>,
    tickets: Tickets,
    checkpoint_path: std::path::PathBuf,
}

fn storage_error(what: &str, error: impl std::fmt::Display) -> StorageError {
    StorageError { detail: format!("{what}: {error}") }
}

impl PmemStorage {
    /// Opens (or creates) the log and rebuilds the core's durable state from it.
    pub fn open(config: &decree_pmem::Config) -> Result<(PmemStorage, Durable), StorageError> {
        let log = decree_pmem::open(config).map_err(|e| storage_error("opening the log", e))?;
        let checkpoint_path = checkpoint_file::path_for(&config.path);
        let mut durable = Durable::default();
        // The checkpoint first: entries it covers are then ignored, as the log discarded them.
        if let Some(checkpoint) = checkpoint_file::load(&checkpoint_path).map_err(|e| storage_error("recovery", e))? {
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
        durable.apply(&DurableWrite::Entries(entries)).map_err(|e| storage_error("recovery", e))?;
        durable.apply(&DurableWrite::Commit(hard.commit)).map_err(|e| storage_error("recovery", e))?;
        durable.validate().map_err(|e| storage_error("recovery", e))?;
        tracing::info!(slots = recovered_slots, promised = %durable.promised(), commit = durable.commit(), backend = log.backend().name(), "log recovered");
        Ok((PmemStorage { log, tickets: Tickets::default(), checkpoint_path }, durable))
    }
}

impl LogStorage for PmemStorage {
    fn stage(&mut self, ticket: u64, write: &DurableWrite) -> Result<(), StorageError> {
        if let DurableWrite::Checkpoint(checkpoint) = write {
            // Durable beside the log before the log discards the entries it covers.
            checkpoint_file::store(&self.checkpoint_path, checkpoint).map_err(|e| storage_error("storing a checkpoint", e))?;
        }
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
}

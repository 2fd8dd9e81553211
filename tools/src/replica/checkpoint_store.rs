//! The replica's checkpoint file as the runtime stores into it: from the checkpoint helper thread
//! (off the commit path) and from the persistence thread (checkpoints installed from the leader),
//! one store at a time and never back to an older slot.

use super::checkpoint_file;
use decree_engine::runtime::{CheckpointWriter, StorageError};
use decree_engine::types::{Checkpoint, Slot};
use std::path::PathBuf;
use std::sync::Mutex;

/// The checkpoint file beside the log and the slot it holds durably.
pub struct CheckpointStore {
    path: PathBuf,
    /// The slot of the checkpoint the file holds (None: no file yet). Locked for a whole store,
    /// so two stores cannot interleave their temp files or let an older one win.
    stored: Mutex<Option<Slot>>,
}

impl CheckpointStore {
    /// The file at `path`, holding the checkpoint at `stored` (what recovery read from it).
    pub fn new(path: PathBuf, stored: Option<Slot>) -> CheckpointStore {
        CheckpointStore { path, stored: Mutex::new(stored) }
    }
}

impl CheckpointWriter for CheckpointStore {
    fn store(&self, checkpoint: &Checkpoint) -> Result<(), StorageError> {
        let mut stored = self.stored.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if stored.is_some_and(|slot| slot >= checkpoint.slot) {
            return Ok(());
        }
        checkpoint_file::store(&self.path, checkpoint)
            .map_err(|e| StorageError { detail: format!("storing a checkpoint: {e}") })?;
        *stored = Some(checkpoint.slot);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::checkpoint_file::tests::checkpoint;

    #[test]
    fn a_store_never_goes_back_to_an_older_slot_nor_repeats_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = checkpoint_file::path_for(&dir.path().join("log"));
        let store = CheckpointStore::new(path.clone(), None);
        store.store(&checkpoint(10, b"ten")).unwrap();
        assert_eq!(checkpoint_file::load(&path).unwrap(), Some(checkpoint(10, b"ten")));
        store.store(&checkpoint(7, b"seven")).unwrap();
        let held = checkpoint_file::load(&path).unwrap().unwrap().slot;
        assert_eq!(held, 10, "an older checkpoint lost the race: kept out");
        std::fs::remove_file(&path).unwrap();
        store.store(&checkpoint(10, b"ten")).unwrap();
        assert!(!path.exists(), "the slot the file holds is not written again");
        store.store(&checkpoint(12, b"twelve")).unwrap();
        assert_eq!(checkpoint_file::load(&path).unwrap().unwrap().slot, 12);
        let recovered = CheckpointStore::new(path.clone(), Some(12));
        recovered.store(&checkpoint(11, b"eleven")).unwrap();
        assert_eq!(checkpoint_file::load(&path).unwrap().unwrap().slot, 12, "recovery's slot counts as stored");
    }
}

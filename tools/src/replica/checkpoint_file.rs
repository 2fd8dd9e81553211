//! The checkpoint beside the log: decree-pmem's log only drops the entries a checkpoint covers;
//! the checkpoint's bytes live in this file, written atomically (temp file, fsync, rename,
//! directory fsync) *before* the log discards anything, so a crash leaves the old or the new
//! checkpoint, never neither.
//!
//! Format: magic "DCKP" u32, version u16, reserved u16, payload length u64, crc32c u32, then the
//! postcard-encoded `Checkpoint`.

use decree_engine::types::Checkpoint;
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: u32 = 0x4443_4b50;
const VERSION: u16 = 1;
const HEADER_BYTES: usize = 20;

/// `<log path>.checkpoint`.
pub fn path_for(log_path: &Path) -> PathBuf {
    let mut name = log_path.as_os_str().to_owned();
    name.push(".checkpoint");
    PathBuf::from(name)
}

/// Writes `checkpoint` to `path` atomically and durably.
pub fn store(path: &Path, checkpoint: &Checkpoint) -> Result<(), String> {
    let payload = postcard::to_stdvec(checkpoint).expect("encoding into a Vec cannot fail");
    let mut bytes = Vec::with_capacity(HEADER_BYTES + payload.len());
    bytes.extend_from_slice(&MAGIC.to_le_bytes());
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    bytes.extend_from_slice(&0u16.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    let shown = path.display();
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut file = std::fs::File::create(&tmp).map_err(|e| format!("creating {}: {e}", tmp.display()))?;
    file.write_all(&bytes).and_then(|()| file.sync_all()).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("renaming to {shown}: {e}"))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| format!("fsync of {}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Reads the checkpoint at `path`: `Ok(None)` if there is none, `Err` if it is damaged.
pub fn load(path: &Path) -> Result<Option<Checkpoint>, String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    let damaged = |what: &str| format!("checkpoint {} is damaged ({what}); restore it from a peer's copy or wipe this replica's data dir to rejoin", path.display());
    if bytes.len() < HEADER_BYTES {
        return Err(damaged("truncated header"));
    }
    let field = |at: usize, len: usize| &bytes[at..at + len];
    if u32::from_le_bytes(field(0, 4).try_into().expect("4")) != MAGIC {
        return Err(damaged("bad magic"));
    }
    if u16::from_le_bytes(field(4, 2).try_into().expect("2")) != VERSION {
        return Err(damaged("unknown version"));
    }
    let len = u64::from_le_bytes(field(8, 8).try_into().expect("8")) as usize;
    let crc = u32::from_le_bytes(field(16, 4).try_into().expect("4"));
    let payload = bytes.get(HEADER_BYTES..).filter(|p| p.len() == len).ok_or_else(|| damaged("length mismatch"))?;
    if crc32c::crc32c(payload) != crc {
        return Err(damaged("checksum mismatch"));
    }
    postcard::from_bytes(payload).map(Some).map_err(|e| damaged(&format!("does not decode: {e}")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::Bytes;
    use decree_engine::membership::Membership;
    use decree_engine::types::{ReplicaId, Slot};

    /// A one-voter checkpoint at `slot` holding `data`, for the replica's storage tests.
    pub(crate) fn checkpoint(slot: Slot, data: &'static [u8]) -> Checkpoint {
        let membership = Membership::new(vec![ReplicaId(0)]);
        Checkpoint { slot, membership, config_slot: None, data: Bytes::from_static(data) }
    }

    #[test]
    fn stores_loads_and_detects_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("log"));
        assert_eq!(load(&path).unwrap(), None);
        let checkpoint = checkpoint(42, b"state");
        store(&path, &checkpoint).unwrap();
        assert_eq!(load(&path).unwrap(), Some(checkpoint));
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(load(&path).unwrap_err().contains("checksum mismatch"));
    }
}

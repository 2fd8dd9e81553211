//! Helpers shared by the integration tests.
#![allow(dead_code)]

use decree_engine::types::Ballot;
use std::path::PathBuf;

/// A fresh, unique scratch directory under the system temp dir, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("decree-pmem-{tag}-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn ballot(round: u64) -> Ballot {
    Ballot { round, leader: (round % 3) as u32 }
}

/// Deterministic payload for (slot, round) cut or padded to `len` bytes.
pub fn payload(slot: u64, round: u64, len: usize) -> Vec<u8> {
    let mut v = decree_pmem::testdata::value(slot, round);
    v.resize(len, (slot ^ round) as u8);
    v
}

/// Whether the system temp dir's filesystem takes O_DIRECT (tmpfs before Linux 6.6 does not).
pub fn direct_io_works() -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let scratch = Scratch::new("direct-probe");
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(scratch.path("probe"))
        .is_ok()
}

/// The backend the `file` choice (and auto without DAX) runs on in the temp dir.
pub fn plain_file_kind() -> decree_pmem::BackendKind {
    if direct_io_works() {
        decree_pmem::BackendKind::FileDirect
    } else {
        decree_pmem::BackendKind::FilePwrite
    }
}

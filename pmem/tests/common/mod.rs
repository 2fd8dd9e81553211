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

/// Deterministic payload for (slot, round), so a reader can verify contents without a copy.
pub fn payload(slot: u64, round: u64, len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(slot.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ round);
    (0..len).map(|_| rng.u8(..)).collect()
}

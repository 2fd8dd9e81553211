//! The simulator's medium: memory with an explicit durable image. A crash keeps only what was
//! persisted, may tear the last unpersisted write at 8-byte granularity, and bits flip on request.

use crate::file_direct::BLOCK_BYTES;
use crate::medium::{free_tail_bytes, BackendKind, Medium};
use crate::memory::MemoryMedium;
use std::io;

/// Bytes a store is atomic at; a torn write keeps some of these words and loses the rest.
pub const TEAR_GRANULE_BYTES: usize = 8;

/// In-memory persistent medium with fault injection.
#[derive(Clone, Debug)]
pub struct SimMedium {
    /// What reads see (includes unpersisted writes).
    volatile: MemoryMedium,
    /// What survives a crash.
    durable: Vec<u8>,
    /// Writes since the last persist, in order.
    pending: Vec<(u64, usize)>,
    persist_count: u64,
}

impl SimMedium {
    /// A zeroed medium of `size_bytes`.
    pub fn new(size_bytes: u64) -> SimMedium {
        let volatile = MemoryMedium::new(size_bytes, "sim");
        let durable = vec![0; volatile.bytes().len()];
        SimMedium { volatile, durable, pending: Vec::new(), persist_count: 0 }
    }

    /// The medium after a power loss: unpersisted writes are gone, except that with
    /// `tear_seed` the last unpersisted write survives partially, as a random subset of its
    /// 8-byte words (stores reach media in any order).
    pub fn crash(&self, tear_seed: Option<u64>) -> SimMedium {
        let mut image = self.durable.clone();
        if let (Some(seed), Some(&(offset, len))) = (tear_seed, self.pending.last()) {
            let mut rng = fastrand::Rng::with_seed(seed);
            let start = offset as usize;
            for word in (start..start + len).step_by(TEAR_GRANULE_BYTES) {
                if rng.bool() {
                    let end = (word + TEAR_GRANULE_BYTES).min(start + len);
                    image[word..end].copy_from_slice(&self.volatile.bytes()[word..end]);
                }
            }
        }
        SimMedium { volatile: MemoryMedium::from_image(image.clone(), "sim"), durable: image, pending: Vec::new(), persist_count: 0 }
    }

    /// Flips bit `bit` (0..8) of the byte at `offset`, in both the durable and visible image
    /// (a media error on data already at rest).
    pub fn flip_bit(&mut self, offset: u64, bit: u8) {
        let at = offset as usize;
        self.volatile.bytes_mut()[at] ^= 1 << (bit % 8);
        self.durable[at] ^= 1 << (bit % 8);
    }

    /// Number of successful persists so far (lets tests prove group commit batches).
    pub fn persist_count(&self) -> u64 {
        self.persist_count
    }

    /// The bytes that would survive a crash now.
    pub fn durable_image(&self) -> &[u8] {
        &self.durable
    }
}

impl Medium for SimMedium {
    fn size_bytes(&self) -> u64 {
        self.volatile.size_bytes()
    }

    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.volatile.write_at(offset, bytes)?;
        self.pending.push((offset, bytes.len()));
        Ok(())
    }

    /// Zeroes the free rest of the last block, as the direct file medium does, so that the
    /// simulator's crashes check the log never needs those bytes.
    fn write_at_end(&mut self, offset: u64, bytes: &[u8], free_after: u64) -> io::Result<()> {
        self.write_at(offset, bytes)?;
        let zeroed = free_tail_bytes(offset, bytes.len(), free_after, BLOCK_BYTES as u64) as usize;
        if zeroed > 0 {
            self.write_at(offset + bytes.len() as u64, &[0; BLOCK_BYTES][..zeroed])?;
        }
        Ok(())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.volatile.read_at(offset, buf)
    }

    fn persist(&mut self) -> io::Result<()> {
        for (offset, len) in self.pending.drain(..) {
            let at = offset as usize;
            self.durable[at..at + len].copy_from_slice(&self.volatile.bytes()[at..at + len]);
        }
        self.persist_count += 1;
        Ok(())
    }

    fn resource(&self) -> &str {
        "sim"
    }

    fn kind(&self) -> BackendKind {
        BackendKind::Sim
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_persisted_and_drops_the_rest() {
        let mut m = SimMedium::new(64);
        m.write_at(0, &[1; 8]).unwrap();
        m.persist().unwrap();
        m.write_at(8, &[2; 8]).unwrap();
        let after = m.crash(None);
        let mut buf = [0u8; 16];
        after.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf[..8], &[1; 8]);
        assert_eq!(&buf[8..], &[0; 8]);
    }

    #[test]
    fn torn_write_keeps_whole_words_only() {
        let mut m = SimMedium::new(256);
        m.write_at(0, &[0xFF; 256]).unwrap();
        let mut saw_partial = false;
        for seed in 0..32 {
            let img = m.crash(Some(seed));
            for word in img.durable_image().chunks(TEAR_GRANULE_BYTES) {
                assert!(word.iter().all(|&b| b == word[0]), "a word was split");
            }
            let kept = img.durable_image().iter().filter(|&&b| b == 0xFF).count();
            saw_partial |= kept > 0 && kept < 256;
        }
        assert!(saw_partial, "some seed must tear the write partially");
    }
}

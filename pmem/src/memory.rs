//! The `memory` backend: the log's ring in anonymous memory, where persist is a no-op.
//!
//! VOLATILE: a restart (or a crash) loses every write, so a replica on it starts empty and has
//! forgotten its promises and votes. For benchmarks only, to measure the protocol without the
//! storage floor. Records, ring and recovery are the same code as on every other backend.
//! The simulator's medium keeps its visible image in one of these.

use crate::error::{Error, Result};
use crate::medium::{check_range, BackendKind, Medium};
use std::io;

/// The host's physical memory (`MemTotal` in /proc/meminfo), if it can be read.
fn physical_memory_bytes() -> Option<u64> {
    crate::meminfo::field("MemTotal:")?.checked_mul(1024)
}

/// Bytes in memory with bounds-checked access; `persist` does nothing.
#[derive(Clone, Debug)]
pub struct MemoryMedium {
    /// A zeroed allocation this large is anonymous memory from the allocator (pages are touched,
    /// and so committed, only when written).
    bytes: Vec<u8>,
    resource: &'static str,
}

impl MemoryMedium {
    /// A zeroed medium of `size_bytes` for a configured log: more than the host's memory is
    /// refused with an error naming the setting (the allocation would abort the process, or the
    /// kernel would kill it once the log filled).
    pub fn for_config(size_bytes: u64, resource: &'static str) -> Result<MemoryMedium> {
        let host = physical_memory_bytes();
        if usize::try_from(size_bytes).is_err() || host.is_some_and(|total| size_bytes > total) {
            let host = host.map_or(String::new(), |total| format!(" ({} MiB)", total >> 20));
            let detail = format!(
                "a memory log of {} MiB is more than this host's memory{host}; lower the log size (`[log] size_mib`)",
                size_bytes >> 20
            );
            return Err(Error::Invalid { resource: resource.into(), detail });
        }
        Ok(MemoryMedium::new(size_bytes, resource))
    }

    /// A zeroed medium of `size_bytes`, named `resource` in errors.
    pub fn new(size_bytes: u64, resource: &'static str) -> MemoryMedium {
        let size = usize::try_from(size_bytes).expect("memory medium size fits in the address space");
        MemoryMedium { bytes: vec![0; size], resource }
    }

    /// A medium holding exactly `image`.
    pub fn from_image(image: Vec<u8>, resource: &'static str) -> MemoryMedium {
        MemoryMedium { bytes: image, resource }
    }

    /// Every byte, as reads see them.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Every byte, writable (fault injection).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
}

impl Medium for MemoryMedium {
    fn size_bytes(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        check_range(self.resource, self.size_bytes(), offset, bytes.len())?;
        let at = offset as usize;
        self.bytes[at..at + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(self.resource, self.size_bytes(), offset, buf.len())?;
        let at = offset as usize;
        buf.copy_from_slice(&self.bytes[at..at + buf.len()]);
        Ok(())
    }

    /// Nothing to do: nothing here survives the process anyway.
    fn persist(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn resource(&self) -> &str {
        self.resource
    }

    fn kind(&self) -> BackendKind {
        BackendKind::Memory
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Log;
    use decree_engine::types::Ballot;

    #[test]
    fn a_configured_size_beyond_the_host_memory_is_an_error_naming_the_setting() {
        let refused = MemoryMedium::for_config(1 << 60, "memory").expect_err("an exbibyte is refused");
        assert!(matches!(&refused, Error::Invalid { detail, .. } if detail.contains("size_mib")), "{refused}");
        assert_eq!(MemoryMedium::for_config(1 << 20, "memory").expect("a mebibyte fits").bytes().len(), 1 << 20);
    }

    #[test]
    fn reads_back_what_was_written_and_refuses_out_of_range() {
        let mut m = MemoryMedium::new(64, "memory");
        m.write_at(8, &[7; 8]).unwrap();
        let mut buf = [0u8; 16];
        m.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf[..8], &[0; 8]);
        assert_eq!(&buf[8..], &[7; 8]);
        assert!(m.write_at(60, &[1; 8]).is_err());
        assert!(m.read_at(u64::MAX, &mut buf).is_err());
        assert_eq!(m.kind().name(), "memory");
        assert!(m.kind().is_volatile());
    }

    #[test]
    fn a_log_on_memory_appends_syncs_and_reads_back() {
        let mut log = Log::create(MemoryMedium::new(1 << 20, "memory")).unwrap();
        let ballot = Ballot { round: 3, leader: 1 };
        for slot in 0..100u64 {
            log.append_entry(slot, ballot, &slot.to_le_bytes()).unwrap();
        }
        let end = log.sync().unwrap();
        assert!(end > 0 && log.durable_lsn() == end, "persist is a no-op but durability still advances");
        for slot in 0..100u64 {
            let stored = log.read(slot).unwrap().expect("appended slot reads back");
            assert_eq!((stored.ballot, stored.payload), (ballot, slot.to_le_bytes().to_vec()));
        }
    }
}

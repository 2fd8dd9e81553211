//! The `file` backend through a shared mapping: stores into the page cache, msync over the dirty
//! pages to persist a group.

use crate::file::LogFile;
use crate::mapping::{MapMode, Mapping};
use crate::medium::{BackendKind, Medium};
use std::io;

/// mmap + msync medium.
pub struct MmapMedium {
    file: LogFile,
    map: Mapping,
    /// Byte range written since the last msync (start, end).
    dirty: Option<(usize, usize)>,
}

impl MmapMedium {
    /// Maps an opened (fully allocated, so stores never SIGBUS on ENOSPC) log file.
    pub fn new(file: LogFile) -> io::Result<MmapMedium> {
        let map = Mapping::map(&file.file, file.size_bytes as usize, MapMode::Shared)?;
        Ok(MmapMedium { file, map, dirty: None })
    }
}

impl Medium for MmapMedium {
    fn size_bytes(&self) -> u64 {
        self.file.size_bytes
    }

    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let start = offset as usize;
        self.map.copy_in(start, bytes)?;
        let end = start + bytes.len();
        self.dirty = Some(match self.dirty {
            Some((s, e)) => (s.min(start), e.max(end)),
            None => (start, end),
        });
        Ok(())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.map.copy_out(offset as usize, buf)
    }

    fn persist(&mut self) -> io::Result<()> {
        if let Some((start, end)) = self.dirty {
            self.map.msync(start, end - start)?;
            self.dirty = None;
        }
        Ok(())
    }

    fn resource(&self) -> &str {
        &self.file.resource
    }

    fn kind(&self) -> BackendKind {
        BackendKind::FileMmap
    }
}

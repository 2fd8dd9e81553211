//! The byte medium a log lives on: a DAX mapping, a file, volatile memory (benchmarks), or the
//! simulator's memory.

use std::io;

/// Which backend a medium is, for log lines and benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// MAP_SYNC mapping of a file on a DAX filesystem; persisted with cache-line flush + sfence.
    FsDax,
    /// Mapping of a device-DAX node (/dev/daxX.Y); registrable as an RDMA memory region.
    DevDax,
    /// Ordinary file, O_DIRECT block writes + fdatasync (no page cache).
    FileDirect,
    /// Ordinary file, pwrite + fdatasync.
    FilePwrite,
    /// Ordinary file, io_uring write + fdatasync (linked).
    FileUring,
    /// Ordinary file, shared mapping + msync.
    FileMmap,
    /// Anonymous memory, persist a no-op: VOLATILE, a restart loses every write (benchmarks only).
    Memory,
    /// In-memory simulated persistent medium with crash, tear and bit-flip faults.
    Sim,
}

impl BackendKind {
    /// Short name for config files and log lines.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::FsDax => "dax",
            BackendKind::DevDax => "devdax",
            BackendKind::FileDirect => "file-direct",
            BackendKind::FilePwrite => "file-pwrite",
            BackendKind::FileUring => "file-uring",
            BackendKind::FileMmap => "file-mmap",
            BackendKind::Memory => "memory",
            BackendKind::Sim => "sim",
        }
    }

    /// Whether nothing written survives a restart of the process (the `memory` backend).
    pub fn is_volatile(self) -> bool {
        self == BackendKind::Memory
    }

    /// The name, marked "(volatile)" where a restart loses every write: for reports and status.
    pub fn label(self) -> String {
        if self.is_volatile() {
            format!("{} (volatile)", self.name())
        } else {
            self.name().to_string()
        }
    }
}

/// Random-access bytes with an explicit persist barrier. Writes are volatile until `persist`
/// returns Ok; after an error from either call, nothing written since the last successful
/// persist may be assumed durable.
pub trait Medium: Send {
    /// Total addressable bytes.
    fn size_bytes(&self) -> u64;
    /// Stores `bytes` at `offset` (not yet durable).
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()>;
    /// `write_at` for a write the caller's free space follows: the `free_after` bytes after it
    /// hold nothing the caller reads again, so the medium may zero them (up to `free_tail_bytes`
    /// of them). A block medium then writes a last, partly filled block without reading its old
    /// content first. The log's appends end this way: past its tail lies free ring space.
    fn write_at_end(&mut self, offset: u64, bytes: &[u8], free_after: u64) -> io::Result<()> {
        let _ = free_after;
        self.write_at(offset, bytes)
    }
    /// Reads `buf.len()` bytes at `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Makes every earlier `write_at` durable.
    fn persist(&mut self) -> io::Result<()>;
    /// The resource name used in errors and log lines (usually a path).
    fn resource(&self) -> &str;
    /// Which backend this is.
    fn kind(&self) -> BackendKind;
}

impl Medium for Box<dyn Medium> {
    fn size_bytes(&self) -> u64 {
        (**self).size_bytes()
    }
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        (**self).write_at(offset, bytes)
    }
    fn write_at_end(&mut self, offset: u64, bytes: &[u8], free_after: u64) -> io::Result<()> {
        (**self).write_at_end(offset, bytes, free_after)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(offset, buf)
    }
    fn persist(&mut self) -> io::Result<()> {
        (**self).persist()
    }
    fn resource(&self) -> &str {
        (**self).resource()
    }
    fn kind(&self) -> BackendKind {
        (**self).kind()
    }
}

/// Bytes after a write of `len` bytes at `offset` that a `write_at_end` with `free_after` free
/// bytes zeroes on a medium of `block_bytes` blocks: the rest of the write's last block, when
/// all of it is free; otherwise none.
pub fn free_tail_bytes(offset: u64, len: usize, free_after: u64, block_bytes: u64) -> u64 {
    let end = offset + len as u64;
    let rest = end.next_multiple_of(block_bytes) - end;
    if rest <= free_after {
        rest
    } else {
        0
    }
}

/// Fails with an error unless `offset..offset+len` lies inside `size_bytes`.
pub fn check_range(resource: &str, size_bytes: u64, offset: u64, len: usize) -> io::Result<()> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size_bytes => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{resource}: range {offset}+{len} outside {size_bytes} bytes"),
        )),
    }
}

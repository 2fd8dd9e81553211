//! A shared memory mapping of a file or device: the one place that calls mmap/munmap/msync and
//! copies through raw pointers. Bounds are checked before every copy.

use crate::flush::{flush_range, FlushInstr};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// A live `MAP_SHARED` mapping, unmapped on drop.
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned by exactly one Mapping value; moving it to another thread moves
// the only handle. Access goes through &self / &mut self, so Rust's aliasing rules still hold.
unsafe impl Send for Mapping {}

/// How to map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapMode {
    /// MAP_SHARED_VALIDATE | MAP_SYNC: the kernel guarantees that once stores are flushed from the
    /// CPU caches, they are durable without msync/fsync (fails with EOPNOTSUPP on non-DAX files).
    Sync,
    /// Plain MAP_SHARED: stores become durable only after msync.
    Shared,
}

impl Mapping {
    /// Maps `len` bytes of `file` from offset 0, read-write.
    pub fn map(file: &File, len: usize, mode: MapMode) -> io::Result<Mapping> {
        let flags = match mode {
            MapMode::Sync => libc::MAP_SHARED_VALIDATE | libc::MAP_SYNC,
            MapMode::Shared => libc::MAP_SHARED,
        };
        // SAFETY: a fresh mapping at a kernel-chosen address cannot alias any Rust object; fd is
        // a valid open descriptor for the duration of the call; the result is checked.
        let ptr = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, file.as_raw_fd(), 0)
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr: ptr.cast(), len })
    }

    /// Mapped bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Start address (for RDMA memory registration and alignment checks).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    fn check(&self, offset: usize, len: usize) -> io::Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(io::Error::new(io::ErrorKind::InvalidInput, "range outside mapping")),
        }
    }

    /// Copies `bytes` into the mapping at `offset`.
    pub fn copy_in(&mut self, offset: usize, bytes: &[u8]) -> io::Result<()> {
        self.check(offset, bytes.len())?;
        // SAFETY: the range is inside the live mapping (checked above) and `bytes` is a Rust
        // slice, which cannot overlap memory we mapped privately for this object.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(offset), bytes.len()) };
        Ok(())
    }

    /// Copies mapping bytes at `offset` into `buf`.
    pub fn copy_out(&self, offset: usize, buf: &mut [u8]) -> io::Result<()> {
        self.check(offset, buf.len())?;
        // SAFETY: the range is inside the live mapping (checked above); `buf` is a distinct slice.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(offset), buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Writes back the cache lines of `offset..offset+len` with `instr` (order them with
    /// `flush::fence`).
    pub fn write_back(&self, offset: usize, len: usize, instr: FlushInstr) -> io::Result<()> {
        self.check(offset, len)?;
        // SAFETY: the range is inside the live mapping (checked above), which outlives the call.
        unsafe { flush_range(instr, self.ptr.add(offset), len) };
        Ok(())
    }

    /// msync(MS_SYNC) over the pages covering `offset..offset+len`.
    pub fn msync(&self, offset: usize, len: usize) -> io::Result<()> {
        self.check(offset, len)?;
        let page = 4096;
        let start = offset / page * page;
        let end = (offset + len).div_ceil(page) * page;
        let end = end.min(self.len.div_ceil(page) * page);
        // SAFETY: start is page-aligned and start..end lies within the mapping's pages.
        let rc = unsafe { libc::msync(self.ptr.add(start).cast(), end - start, libc::MS_SYNC) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned; no reference into the mapping outlives
        // self (copies only hand out values, and as_ptr users must not outlive the medium).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

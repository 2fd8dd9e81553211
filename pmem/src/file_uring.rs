//! The `file` backend through io_uring: the group's writes and one fdatasync are submitted as a
//! linked chain in a single io_uring_enter, reads are plain preads.

use crate::file::LogFile;
use crate::medium::{check_range, BackendKind, Medium};
use io_uring::{opcode, squeue, types, IoUring};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

const RING_ENTRIES: u32 = 64;

/// io_uring write + fdatasync medium.
pub struct UringMedium {
    file: LogFile,
    ring: IoUring,
    /// Writes staged until persist (the buffers must outlive the submission).
    pending: Vec<(u64, Vec<u8>)>,
}

impl UringMedium {
    /// Sets up a ring for an opened log file (fails where io_uring is disabled).
    pub fn new(file: LogFile) -> io::Result<UringMedium> {
        Ok(UringMedium { file, ring: IoUring::new(RING_ENTRIES)?, pending: Vec::new() })
    }

    fn submit_chain(&mut self) -> io::Result<()> {
        let fd = types::Fd(self.file.file.as_raw_fd());
        let writes = std::mem::take(&mut self.pending);
        for chunk in writes.chunks(RING_ENTRIES as usize - 1) {
            for (i, (offset, buf)) in chunk.iter().enumerate() {
                let sqe = opcode::Write::new(fd, buf.as_ptr(), buf.len() as u32).offset(*offset).build().flags(squeue::Flags::IO_LINK).user_data(i as u64);
                // SAFETY: `buf` lives in `writes` until every completion of this chain was reaped
                // below; the queue has room (chunk < RING_ENTRIES).
                unsafe { self.ring.submission().push(&sqe).map_err(|_| io::Error::other("io_uring queue full"))? };
            }
            let sync = opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build().user_data(u64::MAX);
            // SAFETY: the fsync entry references no memory.
            unsafe { self.ring.submission().push(&sync).map_err(|_| io::Error::other("io_uring queue full"))? };
            let expected = chunk.len() + 1;
            self.ring.submit_and_wait(expected)?;
            let mut first_error = None;
            let mut reaped = 0;
            while reaped < expected {
                let Some(cqe) = self.ring.completion().next() else {
                    self.ring.submit_and_wait(expected - reaped)?;
                    continue;
                };
                reaped += 1;
                let short_write = cqe.user_data() != u64::MAX
                    && cqe.result() >= 0
                    && cqe.result() as usize != chunk[cqe.user_data() as usize].1.len();
                // Entries after a failed link complete with ECANCELED: report the root cause.
                let cancelled = first_error.as_ref().is_some_and(|e: &io::Error| e.raw_os_error() == Some(libc::ECANCELED));
                if cqe.result() < 0 && (first_error.is_none() || cancelled) {
                    first_error = Some(io::Error::from_raw_os_error(-cqe.result()));
                } else if short_write && (first_error.is_none() || cancelled) {
                    first_error = Some(io::Error::new(io::ErrorKind::WriteZero, "io_uring short write"));
                }
            }
            if let Some(e) = first_error {
                return Err(e);
            }
        }
        Ok(())
    }
}

impl Medium for UringMedium {
    fn size_bytes(&self) -> u64 {
        self.file.size_bytes
    }

    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        check_range(&self.file.resource, self.file.size_bytes, offset, bytes.len())?;
        self.pending.push((offset, bytes.to_vec()));
        Ok(())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(&self.file.resource, self.file.size_bytes, offset, buf.len())?;
        // Staged writes are not on the file yet; the log never reads what it has not synced
        // except from its own staging buffer, and the superblock is persisted right away.
        self.file.file.read_exact_at(buf, offset)
    }

    fn persist(&mut self) -> io::Result<()> {
        self.submit_chain()
    }

    fn resource(&self) -> &str {
        &self.file.resource
    }

    fn kind(&self) -> BackendKind {
        BackendKind::FileUring
    }
}

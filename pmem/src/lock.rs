//! An exclusive advisory lock on the log's file or device, so two processes never append to the
//! same log (their records would interleave into garbage). Released when the file is closed,
//! including when the process is killed.

use crate::error::{Error, Result};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Takes the exclusive lock on `file` without waiting.
pub fn lock_exclusive(file: &File, resource: &str) -> Result<()> {
    // SAFETY: flock only reads the descriptor number, which `file` keeps open for the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(());
    }
    let source = io::Error::last_os_error();
    if source.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Err(Error::Locked { resource: resource.to_string() });
    }
    Err(Error::Io { resource: resource.to_string(), op: "flock", source })
}

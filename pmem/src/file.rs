//! The `file` backend for ordinary filesystems: pwrite + fdatasync, one fdatasync per group.
//! Also the shared file opening: space is preallocated by writing zeros once, so later
//! fdatasyncs flush data only (no extent conversion metadata) and appends never hit ENOSPC.

use crate::error::{Error, Result};
use crate::lock::lock_exclusive;
use crate::medium::{check_range, BackendKind, Medium};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// An open, fully allocated log file.
pub struct LogFile {
    /// The file.
    pub file: File,
    /// Its size.
    pub size_bytes: u64,
    /// Whether this call created it: it sits under a temporary name until `publish` (format it
    /// first, so a crash during the first start never leaves an unformatted file at `path`).
    pub created: bool,
    /// Path as text, for errors.
    pub resource: String,
}

impl LogFile {
    /// A second handle on the same open file (a dup, sharing its lock), so a backend can be tried
    /// on the copy and, if it refuses, another one built from the original.
    pub fn try_clone(&self) -> Result<LogFile> {
        let file =
            self.file.try_clone().map_err(|source| Error::Io { resource: self.resource.clone(), op: "dup", source })?;
        Ok(LogFile { file, size_bytes: self.size_bytes, created: self.created, resource: self.resource.clone() })
    }
}

/// Opens `path`, or creates `size_bytes` of zeros under a temporary name beside it (fsynced);
/// call `publish` once it is formatted.
pub fn open_or_create(path: &Path, size_bytes: u64) -> Result<LogFile> {
    let resource = path.display().to_string();
    let io_err = |op| {
        let resource = resource.clone();
        move |source| Error::Io { resource, op, source }
    };
    match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => {
            lock_exclusive(&file, &resource)?;
            let size_bytes = file.metadata().map_err(io_err("stat"))?.len();
            return Ok(LogFile { file, size_bytes, created: false, resource });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("open")(e)),
    }
    let tmp = creating_path(path);
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&tmp).map_err(io_err("create"))?;
    lock_exclusive(&file, &resource)?;
    if let Err(e) = fill_zeros(&file, size_bytes).and_then(|()| file.sync_all()) {
        // Leave nothing half-made behind (e.g. ENOSPC on a small filesystem).
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err("preallocate")(e));
    }
    Ok(LogFile { file, size_bytes, created: true, resource })
}

/// Moves a created and formatted log file to `path` (rename + directory fsync): from here on a
/// restart finds a valid log there.
pub fn publish(path: &Path) -> Result<()> {
    let io_err = |op| move |source| Error::Io { resource: path.display().to_string(), op, source };
    std::fs::rename(creating_path(path), path).map_err(io_err("rename new file"))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("fsync directory"))?;
    }
    Ok(())
}

fn creating_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".creating");
    name.into()
}

fn fill_zeros(file: &File, size_bytes: u64) -> io::Result<()> {
    let chunk = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    while offset < size_bytes {
        let len = (size_bytes - offset).min(chunk.len() as u64) as usize;
        file.write_all_at(&chunk[..len], offset)?;
        offset += len as u64;
    }
    Ok(())
}

/// pwrite + fdatasync medium.
pub struct PwriteMedium {
    file: LogFile,
}

impl PwriteMedium {
    /// Uses an opened log file.
    pub fn new(file: LogFile) -> PwriteMedium {
        PwriteMedium { file }
    }
}

impl Medium for PwriteMedium {
    fn size_bytes(&self) -> u64 {
        self.file.size_bytes
    }

    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        check_range(&self.file.resource, self.file.size_bytes, offset, bytes.len())?;
        self.file.file.write_all_at(bytes, offset)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(&self.file.resource, self.file.size_bytes, offset, buf.len())?;
        self.file.file.read_exact_at(buf, offset)
    }

    fn persist(&mut self) -> io::Result<()> {
        self.file.file.sync_data()
    }

    fn resource(&self) -> &str {
        &self.file.resource
    }

    fn kind(&self) -> BackendKind {
        BackendKind::FilePwrite
    }
}

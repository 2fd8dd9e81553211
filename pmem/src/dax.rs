//! The `dax` backend: persistent memory mapped straight into the process. Appends are stores
//! plus cache-line write-back (clwb/clflushopt/clflush) as they are written; persist is one
//! sfence. No syscall per append.
//!
//! Two variants: a file on a DAX filesystem mapped MAP_SHARED_VALIDATE | MAP_SYNC (the kernel
//! keeps metadata durable, so flushed stores are durable), and a device-DAX node (/dev/daxX.Y)
//! mapped whole in 2 MiB units. Only the device-DAX mapping can be registered as an RDMA memory
//! region (fsdax pages cannot be long-term pinned), so a follower's RDMA-target log lives there.

use crate::error::{Error, Result};
use crate::file::LogFile;
use crate::flush::{detect, fence, FlushInstr};
use crate::mapping::{MapMode, Mapping};
use crate::medium::{check_range, BackendKind, Medium};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// Device-DAX mappings are made and sized in units of the device alignment (2 MiB by default).
pub const DEVDAX_ALIGN_BYTES: u64 = 2 << 20;

/// A DAX-mapped medium.
pub struct DaxMedium {
    map: Mapping,
    _file: File,
    resource: String,
    kind: BackendKind,
    flush: FlushInstr,
}

impl DaxMedium {
    /// Maps a log file with MAP_SYNC; `Error::Unsupported` if the filesystem is not DAX.
    pub fn fsdax(file: LogFile) -> Result<DaxMedium> {
        let map = Mapping::map(&file.file, file.size_bytes as usize, MapMode::Sync).map_err(|e| {
            if e.raw_os_error() == Some(libc::EOPNOTSUPP) || e.raw_os_error() == Some(libc::EINVAL) {
                Error::Unsupported {
                    resource: file.resource.clone(),
                    backend: "dax",
                    detail: format!("mmap MAP_SYNC refused ({e}): not on a filesystem mounted with -o dax; use the file backend"),
                }
            } else {
                Error::Io { resource: file.resource.clone(), op: "mmap MAP_SYNC", source: e }
            }
        })?;
        Ok(DaxMedium { map, _file: file.file, resource: file.resource, kind: BackendKind::FsDax, flush: detect() })
    }

    /// Maps a whole device-DAX node (/dev/daxX.Y), rounded down to 2 MiB.
    pub fn devdax(path: &Path) -> Result<DaxMedium> {
        let resource = path.display().to_string();
        let io_err = |op| {
            let resource = resource.clone();
            move |source| Error::Io { resource, op, source }
        };
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(io_err("open device-DAX"))?;
        let meta = file.metadata().map_err(io_err("stat"))?;
        crate::lock::lock_exclusive(&file, &resource)?;
        if !meta.file_type().is_char_device() {
            return Err(Error::Unsupported {
                resource,
                backend: "devdax",
                detail: "not a character device; create one with `ndctl create-namespace -m devdax`".into(),
            });
        }
        let size_bytes = devdax_size_bytes(meta.rdev()).map_err(io_err("read device-DAX size from sysfs"))?;
        let map_len = size_bytes / DEVDAX_ALIGN_BYTES * DEVDAX_ALIGN_BYTES;
        // Device DAX honors MAP_SYNC too; fall back to MAP_SHARED, which is equally durable there
        // (no filesystem metadata), only stricter kernels refuse the flag.
        let map = Mapping::map(&file, map_len as usize, MapMode::Sync)
            .or_else(|_| Mapping::map(&file, map_len as usize, MapMode::Shared))
            .map_err(io_err("mmap device-DAX"))?;
        if map.as_ptr() as u64 % DEVDAX_ALIGN_BYTES != 0 {
            return Err(Error::Unsupported {
                resource,
                backend: "devdax",
                detail: format!("kernel mapped at {:p}, not 2 MiB aligned", map.as_ptr()),
            });
        }
        Ok(DaxMedium { map, _file: file, resource, kind: BackendKind::DevDax, flush: detect() })
    }

    /// The mapping (address, length): what an RDMA transport registers as the log region.
    pub fn region(&self) -> (*mut u8, usize) {
        (self.map.as_ptr(), self.map.len())
    }

    /// The flush instruction in use.
    pub fn flush_instr(&self) -> FlushInstr {
        self.flush
    }
}

/// Size of the device-DAX node with device number `rdev`, from sysfs.
fn devdax_size_bytes(rdev: u64) -> io::Result<u64> {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let text = std::fs::read_to_string(format!("/sys/dev/char/{major}:{minor}/size"))?;
    text.trim().parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("sysfs size: {e}")))
}

impl Medium for DaxMedium {
    fn size_bytes(&self) -> u64 {
        self.map.len() as u64
    }

    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        check_range(&self.resource, self.size_bytes(), offset, bytes.len())?;
        // Write back as we go (clwb does not wait); persist's sfence then orders it all.
        self.map.copy_in(offset as usize, bytes)?;
        self.map.write_back(offset as usize, bytes.len(), self.flush)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.map.copy_out(offset as usize, buf)
    }

    fn persist(&mut self) -> io::Result<()> {
        fence();
        Ok(())
    }

    fn resource(&self) -> &str {
        &self.resource
    }

    fn kind(&self) -> BackendKind {
        self.kind
    }
}

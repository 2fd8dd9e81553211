//! Memory regions: anonymous, memfd or file-backed shared mappings, with bounds-checked copies.
//! The only place in the crate (besides rdma's FFI) that touches raw pointers.

use crate::VerbsError;
use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

/// A mapped byte region. Shared mappings may be written by other processes at any time: read
/// through [`Mapping::read_at`] (copies) or atomics, never through long-lived references.
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    _fd: Option<OwnedFd>,
    persistent: bool,
}

// SAFETY: the mapping is plain memory owned by this value; concurrent access goes through
// copies and atomics whose races are with other processes by design (one-sided writes).
unsafe impl Send for Mapping {}
// SAFETY: as above; no method hands out `&mut` to the bytes.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// A private anonymous mapping of `len` zero bytes (page-aligned, so registrable for RDMA).
    pub fn anonymous(len: usize) -> Result<Mapping, VerbsError> {
        Self::map(
            len,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            None,
            "anonymous memory",
        )
    }

    /// Creates a shared file at `path` (e.g. under /dev/shm) of `len` bytes, maps it, and has
    /// `init` write its first contents before anyone else can open it: the file is made and
    /// initialized under a staging name, then renamed over `path`. A process opening `path`
    /// thus finds the whole region or none, never a short or half-written one, and an older file
    /// there is replaced rather than truncated under the processes that still map it (a write to
    /// a mapping cut short by a truncate is a SIGBUS). The file is 0600: only this user's
    /// processes can map it.
    pub fn create_shared(
        path: &Path,
        len: usize,
        init: impl FnOnce(&Mapping),
    ) -> Result<Mapping, VerbsError> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut staging = path.as_os_str().to_owned();
        staging.push(format!(".new-{}", std::process::id()));
        let staging = Path::new(&staging);
        let name = staging.display().to_string();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .truncate(true)
            .open(staging)
            .map_err(|e| VerbsError::os("open", &name, e))?;
        let made = file
            .set_len(len as u64)
            .map_err(|e| VerbsError::os("ftruncate", &name, e))
            .and_then(|()| Self::map(len, libc::MAP_SHARED, Some(file.into()), &name))
            .inspect(|map| init(map))
            .and_then(|map| {
                std::fs::rename(staging, path)
                    .map(|()| map)
                    .map_err(|e| VerbsError::os("rename", &name, e))
            });
        if made.is_err() {
            let _ = std::fs::remove_file(staging);
        }
        made
    }

    /// Maps an existing shared file of at least `min_len` bytes; returns its whole length.
    pub fn open_shared(path: &Path, min_len: usize) -> Result<Mapping, VerbsError> {
        let name = path.display().to_string();
        let file = open_rw(path, &name)?;
        let len = file
            .metadata()
            .map_err(|e| VerbsError::os("stat", &name, e))?
            .len() as usize;
        if len < min_len {
            return Err(VerbsError::Protocol {
                peer: name,
                what: format!(
                    "shared region is {len} bytes, smaller than its {min_len}-byte header"
                ),
            });
        }
        Self::map(len, libc::MAP_SHARED, Some(file.into()), &name)
    }

    /// Maps the first `len` bytes of a device-DAX namespace (/dev/daxN.M: `len` a multiple of
    /// its 2 MiB alignment) and marks the mapping persistent. Unlike fsdax files, device-DAX memory can be
    /// registered for RDMA, so a follower's RDMA-target log on pmem lives there.
    pub fn open_device(path: &Path, len: usize) -> Result<Mapping, VerbsError> {
        let name = path.display().to_string();
        let file = open_rw(path, &name)?;
        let mut map = Self::map(len, libc::MAP_SHARED, Some(file.into()), &name)?;
        map.persistent = true;
        Ok(map)
    }

    fn map(len: usize, flags: i32, fd: Option<OwnedFd>, name: &str) -> Result<Mapping, VerbsError> {
        if len == 0 {
            return Err(VerbsError::Config(format!(
                "{name}: a region needs at least one byte"
            )));
        }
        let raw_fd = fd.as_ref().map_or(-1, |f| f.as_raw_fd());
        // SAFETY: a fresh mapping at an address the kernel picks; the fd (if any) stays open for
        // the mapping's life in `_fd`; the result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                raw_fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(VerbsError::os(
                "mmap",
                name,
                std::io::Error::last_os_error(),
            ));
        }
        let ptr = NonNull::new(p.cast::<u8>()).expect("mmap returned null without MAP_FAILED");
        Ok(Mapping {
            ptr,
            len,
            _fd: fd,
            persistent: false,
        })
    }

    /// Whether the memory is persistent (a device-DAX namespace mapped by `open_device`): only
    /// then does a completed RDMA READ after a WRITE say the bytes are durable.
    pub fn is_persistent(&self) -> bool {
        self.persistent
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a mapping has at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Start address (for RDMA registration).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Copies `bytes` in at `offset`. Panics on a range outside the mapping: callers check bounds
    /// with typed errors first, so reaching past the end here is a broken invariant.
    pub fn write_at(&self, offset: usize, bytes: &[u8]) {
        assert!(
            offset
                .checked_add(bytes.len())
                .is_some_and(|e| e <= self.len),
            "invariant: mapping write in bounds"
        );
        // SAFETY: the range is inside the mapping (asserted); `bytes` cannot overlap a mapping we
        // only expose by copy.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.as_ptr().add(offset),
                bytes.len(),
            )
        }
    }

    /// Copies bytes out from `offset`. Panics on a range outside the mapping (see `write_at`).
    pub fn read_at(&self, offset: usize, out: &mut [u8]) {
        assert!(
            offset.checked_add(out.len()).is_some_and(|e| e <= self.len),
            "invariant: mapping read in bounds"
        );
        // SAFETY: the range is inside the mapping (asserted); `out` is a distinct Rust buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(offset),
                out.as_mut_ptr(),
                out.len(),
            )
        }
    }

    /// Copies bytes out from `offset`, refusing a range outside the mapping with a typed error.
    pub fn copy_out(&self, offset: u64, out: &mut [u8]) -> Result<(), VerbsError> {
        crate::transport::check_bounds("local region", offset, out.len(), self.len as u64)?;
        self.read_at(offset as usize, out);
        Ok(())
    }

    /// The 8-byte-aligned word at `offset` as an atomic shared with the other processes.
    pub fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        assert!(
            offset % 8 == 0 && offset + 8 <= self.len,
            "invariant: atomic word aligned and in bounds"
        );
        // SAFETY: aligned (mmap returns page-aligned memory, offset % 8 == 0), in bounds, and
        // living as long as `self`; AtomicU64 has the layout of u64.
        unsafe { &*self.ptr.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    /// The 4-byte-aligned word at `offset` as an atomic shared with the other processes (a futex).
    pub fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        assert!(
            offset % 4 == 0 && offset + 4 <= self.len,
            "invariant: atomic word aligned and in bounds"
        );
        // SAFETY: aligned (mmap returns page-aligned memory, offset % 4 == 0), in bounds, and
        // living as long as `self`; AtomicU32 has the layout of u32.
        unsafe { &*self.ptr.as_ptr().add(offset).cast::<AtomicU32>() }
    }
}

fn open_rw(path: &Path, name: &str) -> Result<std::fs::File, VerbsError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| VerbsError::os("open", name, e))
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped; no references outlive `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn shared_file_is_seen_by_a_second_mapping() {
        let dir = std::env::temp_dir().join(format!("decree-map-{}", std::process::id()));
        let a = Mapping::create_shared(&dir, 8192, |_| {}).unwrap();
        let b = Mapping::open_shared(&dir, 4096).unwrap();
        a.write_at(100, b"hello");
        let mut got = [0u8; 5];
        b.read_at(100, &mut got);
        assert_eq!(&got, b"hello");
        a.atomic_u64(8).store(7, Ordering::Release);
        assert_eq!(b.atomic_u64(8).load(Ordering::Acquire), 7);
        assert!(
            Mapping::open_shared(&dir, 1 << 20).is_err(),
            "too-small file must be refused"
        );
        std::fs::remove_file(dir).unwrap();
    }

    #[test]
    fn a_shared_file_appears_only_once_initialized_and_replaces_an_older_one_untouched() {
        let path = std::env::temp_dir().join(format!("decree-map-publish-{}", std::process::id()));
        let old = Mapping::create_shared(&path, 8192, |map| map.write_at(0, b"old")).unwrap();
        let new = Mapping::create_shared(&path, 16384, |map| {
            // While `init` runs, `path` still names the old, whole region.
            let seen = Mapping::open_shared(&path, 8192).unwrap();
            assert_eq!(seen.len(), 8192);
            map.write_at(0, b"new");
        })
        .unwrap();
        let opened = Mapping::open_shared(&path, 4096).unwrap();
        let (mut at_path, mut in_old) = ([0u8; 3], [0u8; 3]);
        opened.read_at(0, &mut at_path);
        old.read_at(0, &mut in_old);
        assert_eq!((opened.len(), &at_path), (16384, b"new"));
        assert_eq!(&in_old, b"old", "the old region's mappers keep their bytes");
        new.write_at(8, b"x");
        let staging = format!("{}.new-{}", path.display(), std::process::id());
        assert!(!Path::new(&staging).exists(), "the staging name is renamed away");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    #[should_panic(expected = "invariant: mapping write in bounds")]
    fn write_past_end_is_an_invariant_panic() {
        Mapping::anonymous(4096).unwrap().write_at(4090, &[0u8; 10]);
    }
}

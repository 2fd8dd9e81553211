//! Choosing and opening a backend from configuration, with auto-detection and a log line that
//! says which backend runs and why.

use crate::dax::DaxMedium;
use crate::error::{Error, Result};
use crate::file::{open_or_create, publish, LogFile, PwriteMedium};
use crate::file_direct::DirectMedium;
use crate::file_mmap::MmapMedium;
use crate::file_uring::UringMedium;
use crate::log::Log;
use crate::medium::Medium;
use crate::memory::MemoryMedium;
use std::path::PathBuf;

/// How the `file` backend persists a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileStrategy {
    /// O_DIRECT where the filesystem takes it (`DirectMedium`), else pwrite: the default.
    DirectOrPwrite,
    /// O_DIRECT block writes + fdatasync; fails where the filesystem refuses O_DIRECT (tmpfs).
    Direct,
    /// pwrite + fdatasync through the page cache.
    Pwrite,
    /// io_uring write + fdatasync, linked in one submission.
    Uring,
    /// Shared mapping + msync.
    Mmap,
}

/// Which backend to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// /dev/dax* -> devdax; else dax if MAP_SYNC works on the file; else file.
    Auto,
    /// MAP_SYNC on a file in a DAX filesystem; fails if unsupported.
    Dax,
    /// A device-DAX node.
    DevDax,
    /// An ordinary file with the given strategy.
    File(FileStrategy),
    /// Anonymous memory, persist a no-op: VOLATILE, a restart starts with an empty log (the
    /// replica has forgotten its promises and votes). Benchmarks only.
    Memory,
}

/// What start-up logs at WARN when the log runs on the `memory` backend.
pub const MEMORY_WARNING: &str = "log backend memory is volatile: a restart loses every write; for benchmarks only";

impl Backend {
    /// Every config name and the backend it selects: `parse` and `NAMES` both read this one table.
    const BY_NAME: [(&'static str, Backend); 9] = [
        ("auto", Backend::Auto),
        ("dax", Backend::Dax),
        ("devdax", Backend::DevDax),
        ("file", Backend::File(FileStrategy::DirectOrPwrite)),
        ("file-direct", Backend::File(FileStrategy::Direct)),
        ("file-pwrite", Backend::File(FileStrategy::Pwrite)),
        ("file-uring", Backend::File(FileStrategy::Uring)),
        ("file-mmap", Backend::File(FileStrategy::Mmap)),
        ("memory", Backend::Memory),
    ];

    /// Every name `parse` accepts, for error messages and command-line help.
    pub const NAMES: [&'static str; 9] = {
        let mut names = [""; 9];
        let mut i = 0;
        while i < names.len() {
            names[i] = Self::BY_NAME[i].0;
            i += 1;
        }
        names
    };

    /// Whether a log on this backend keeps nothing across a restart (`memory`).
    pub fn is_volatile(self) -> bool {
        self == Backend::Memory
    }

    /// Parses a config string: one of `NAMES`.
    pub fn parse(text: &str) -> Option<Backend> {
        Self::BY_NAME.iter().find(|(name, _)| *name == text).map(|(_, backend)| *backend)
    }
}

/// Where the log lives and how big it is.
#[derive(Clone, Debug)]
pub struct Config {
    /// A file path, or a /dev/daxX.Y node.
    pub path: PathBuf,
    /// Size of a file created on first start (ignored for existing files and device-DAX).
    pub size_bytes: u64,
    /// Backend choice.
    pub backend: Backend,
}

/// Opens (recovering) or creates the log `config` describes. The `memory` backend always creates
/// an empty log (and touches no file at `path`).
pub fn open(config: &Config) -> Result<Log<Box<dyn Medium>>> {
    let path = &config.path;
    let is_devdax = path.to_str().is_some_and(|p| p.starts_with("/dev/dax"));
    let (medium, created, why): (Box<dyn Medium>, bool, String) = match config.backend {
        Backend::Memory => {
            // Nothing from an earlier run exists to recover and no file to publish: formatted
            // every time.
            tracing::warn!(size_bytes = config.size_bytes, "{MEMORY_WARNING}");
            let medium: Box<dyn Medium> = Box::new(MemoryMedium::for_config(config.size_bytes, "memory")?);
            tracing::info!(backend = medium.kind().name(), why = "configured memory (volatile)", "pmem backend selected");
            return Log::create(medium);
        }
        Backend::DevDax => (Box::new(DaxMedium::devdax(path)?), false, "configured devdax".into()),
        Backend::Auto if is_devdax => (Box::new(DaxMedium::devdax(path)?), false, "auto: path is a device-DAX node".into()),
        Backend::Dax => {
            let file = open_or_create(path, config.size_bytes)?;
            let created = file.created;
            (Box::new(DaxMedium::fsdax(file)?), created, "configured dax (MAP_SYNC accepted)".into())
        }
        Backend::Auto => {
            let file = open_or_create(path, config.size_bytes)?;
            let created = file.created;
            match DaxMedium::fsdax(file.try_clone()?) {
                Ok(dax) => (Box::new(dax), created, "auto: MAP_SYNC accepted, the file is on a DAX filesystem".into()),
                Err(Error::Unsupported { detail, .. }) => {
                    let (medium, how) = direct_or_pwrite(file)?;
                    (medium, created, format!("auto: {detail}; {how}"))
                }
                Err(e) => return Err(e),
            }
        }
        Backend::File(strategy) => {
            let file = open_or_create(path, config.size_bytes)?;
            let created = file.created;
            let (medium, how) = file_medium(file, strategy)?;
            (medium, created, format!("configured file ({strategy:?}): {how}"))
        }
    };
    tracing::info!(backend = medium.kind().name(), resource = medium.resource(), why, "pmem backend selected");
    if created {
        let log = Log::create(medium)?;
        publish(path)?;
        return Ok(log);
    }
    match Log::open(medium) {
        Err(Error::NotFormatted { resource, detail }) if is_devdax => format_blank_devdax(path, resource, detail),
        other => other,
    }
}

/// A device-DAX node has no "created" moment: format it only when its superblock page is all
/// zeros, never over damaged superblocks (that would erase a replica's acknowledged log).
fn format_blank_devdax(path: &std::path::Path, resource: String, detail: String) -> Result<Log<Box<dyn Medium>>> {
    let medium = DaxMedium::devdax(path)?;
    let mut page = vec![0u8; crate::superblock::DATA_OFFSET_BYTES as usize];
    medium.read_at(0, &mut page).map_err(|source| Error::Io { resource: resource.clone(), op: "read", source })?;
    if page.iter().any(|&b| b != 0) {
        return Err(Error::NotFormatted {
            resource,
            detail: format!("{detail}; the first 4 KiB are not blank, so it is not formatted automatically: zero them to start afresh"),
        });
    }
    Log::create(Box::new(medium) as Box<dyn Medium>)
}

/// A direct-write medium on `file` if its filesystem takes O_DIRECT, else pwrite; and which, why.
fn direct_or_pwrite(file: LogFile) -> Result<(Box<dyn Medium>, String)> {
    match DirectMedium::new(file.try_clone()?) {
        Ok(direct) => Ok((Box::new(direct), medium_how(FileStrategy::Direct).into())),
        Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
            Ok((Box::new(PwriteMedium::new(file)), format!("{e}; {}", medium_how(FileStrategy::Pwrite))))
        }
        Err(source) => Err(Error::Io { resource: file.resource, op: "open for direct writes", source }),
    }
}

/// The medium for `strategy` on `file`, and how it persists.
fn file_medium(file: LogFile, strategy: FileStrategy) -> Result<(Box<dyn Medium>, String)> {
    let resource = file.resource.clone();
    let medium: Box<dyn Medium> = match strategy {
        FileStrategy::DirectOrPwrite => return direct_or_pwrite(file),
        FileStrategy::Direct => {
            Box::new(DirectMedium::new(file).map_err(|source| Error::Io { resource, op: "open for direct writes", source })?)
        }
        FileStrategy::Pwrite => Box::new(PwriteMedium::new(file)),
        FileStrategy::Uring => Box::new(UringMedium::new(file).map_err(|source| Error::Io { resource, op: "io_uring setup", source })?),
        FileStrategy::Mmap => Box::new(MmapMedium::new(file).map_err(|source| Error::Io { resource, op: "mmap", source })?),
    };
    Ok((medium, medium_how(strategy).into()))
}

fn medium_how(strategy: FileStrategy) -> &'static str {
    match strategy {
        FileStrategy::DirectOrPwrite | FileStrategy::Direct => "O_DIRECT block writes + fdatasync group commit",
        FileStrategy::Pwrite => "pwrite + fdatasync group commit",
        FileStrategy::Uring => "io_uring writes + linked fdatasync",
        FileStrategy::Mmap => "shared mapping + msync",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use decree_engine::types::Ballot;

    #[test]
    fn every_listed_name_parses_and_garbage_does_not() {
        for name in Backend::NAMES {
            assert!(Backend::parse(name).is_some(), "{name} is listed but does not parse");
        }
        assert_eq!(Backend::parse("memory"), Some(Backend::Memory));
        assert!(Backend::Memory.is_volatile() && !Backend::parse("file").unwrap().is_volatile());
        assert_eq!(Backend::parse("floppy"), None);
    }

    #[test]
    fn the_memory_backend_serves_and_a_reopen_starts_empty() {
        let dir = std::env::temp_dir().join(format!("decree-pmem-memory-{}", std::process::id()));
        let config = Config { path: dir.join("log"), size_bytes: 4 << 20, backend: Backend::Memory };
        let mut log = open(&config).unwrap();
        assert_eq!(log.backend(), crate::BackendKind::Memory);
        let ballot = Ballot { round: 1, leader: 0 };
        log.append_promise(ballot).unwrap();
        log.append_entry(0, ballot, b"x").unwrap();
        log.sync().unwrap();
        assert_eq!(log.read(0).unwrap().unwrap().payload, b"x");
        assert!(!config.path.exists() && !dir.exists(), "the memory backend creates no file");
        drop(log);
        let again = open(&config).unwrap();
        assert_eq!(again.slots().count(), 0, "a restart on the memory backend starts empty");
        assert_eq!(again.hard_state().promise, Ballot::ZERO);
    }
}

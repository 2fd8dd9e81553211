//! Choosing and opening a backend from configuration, with auto-detection and a log line that
//! says which backend runs and why.

use crate::dax::DaxMedium;
use crate::error::{Error, Result};
use crate::file::{open_or_create, publish, LogFile, PwriteMedium};
use crate::file_mmap::MmapMedium;
use crate::file_uring::UringMedium;
use crate::log::Log;
use crate::medium::Medium;
use std::path::PathBuf;

/// How the `file` backend persists a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileStrategy {
    /// pwrite + fdatasync: the default, measured fastest here (see the crate README).
    Pwrite,
    /// io_uring write + fdatasync, linked in one submission.
    Uring,
    /// Shared mapping + msync.
    Mmap,
}

/// Which backend to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// /dev/dax* -> devdax; else dax if MAP_SYNC works on the file; else file (pwrite).
    Auto,
    /// MAP_SYNC on a file in a DAX filesystem; fails if unsupported.
    Dax,
    /// A device-DAX node.
    DevDax,
    /// An ordinary file with the given strategy.
    File(FileStrategy),
}

impl Backend {
    /// Parses a config string: auto, dax, devdax, file, file-pwrite, file-uring, file-mmap.
    pub fn parse(text: &str) -> Option<Backend> {
        Some(match text {
            "auto" => Backend::Auto,
            "dax" => Backend::Dax,
            "devdax" => Backend::DevDax,
            "file" | "file-pwrite" => Backend::File(FileStrategy::Pwrite),
            "file-uring" => Backend::File(FileStrategy::Uring),
            "file-mmap" => Backend::File(FileStrategy::Mmap),
            _ => return None,
        })
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

/// Opens (recovering) or creates the log `config` describes.
pub fn open(config: &Config) -> Result<Log<Box<dyn Medium>>> {
    let path = &config.path;
    let is_devdax = path.to_str().is_some_and(|p| p.starts_with("/dev/dax"));
    let (medium, created, why): (Box<dyn Medium>, bool, String) = match config.backend {
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
            let dup = file.file.try_clone().map_err(|source| Error::Io { resource: file.resource.clone(), op: "dup", source })?;
            let copy = LogFile { file: dup, size_bytes: file.size_bytes, created, resource: file.resource.clone() };
            match DaxMedium::fsdax(copy) {
                Ok(dax) => (Box::new(dax), created, "auto: MAP_SYNC accepted, the file is on a DAX filesystem".into()),
                Err(Error::Unsupported { detail, .. }) => (
                    Box::new(PwriteMedium::new(file)),
                    created,
                    format!("auto: {detail}; pwrite + fdatasync group commit"),
                ),
                Err(e) => return Err(e),
            }
        }
        Backend::File(strategy) => {
            let file = open_or_create(path, config.size_bytes)?;
            let created = file.created;
            (file_medium(file, strategy)?, created, format!("configured file ({strategy:?})"))
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

fn file_medium(file: LogFile, strategy: FileStrategy) -> Result<Box<dyn Medium>> {
    let resource = file.resource.clone();
    Ok(match strategy {
        FileStrategy::Pwrite => Box::new(PwriteMedium::new(file)),
        FileStrategy::Uring => Box::new(UringMedium::new(file).map_err(|source| Error::Io { resource, op: "io_uring setup", source })?),
        FileStrategy::Mmap => Box::new(MmapMedium::new(file).map_err(|source| Error::Io { resource, op: "mmap", source })?),
    })
}

//! Disk faults: EIO or ENOSPC on a write or a persist fails the log for good. It never reports
//! durability past the failure, never retries the persist, and recovery finds only what was
//! really persisted. A real small filesystem that fills is tested too.

mod common;

use common::{ballot, Scratch};
use decree_pmem::faulty::{FaultPlan, FaultyMedium};
use decree_pmem::sim::SimMedium;
use decree_pmem::superblock::DATA_OFFSET_BYTES;
use decree_pmem::{open, Backend, Config, Error, FileStrategy, Log};

fn fault_case(errno: i32, on_persist: bool) {
    let sim = SimMedium::new(DATA_OFFSET_BYTES + (1 << 16));
    let mut log = Log::create(FaultyMedium::new(sim, FaultPlan::default())).unwrap();
    log.append_entry(0, ballot(1), b"safe").unwrap();
    let durable = log.sync().unwrap();

    let plan = if on_persist {
        FaultPlan { fail_persist_from: Some(0), errno, ..FaultPlan::default() }
    } else {
        FaultPlan { fail_write_from: Some(0), errno, ..FaultPlan::default() }
    };
    log.medium_mut().set_plan(plan);
    log.append_entry(1, ballot(1), b"doomed").unwrap();
    match log.sync() {
        Err(Error::Io { source, .. }) => assert_eq!(source.raw_os_error(), Some(errno)),
        other => panic!("expected an I/O error, got {other:?}"),
    }
    assert_eq!(log.durable_lsn(), durable, "durability must not advance past a failure");
    assert!(log.failure().is_some());

    // The device "recovers": the log must still refuse, never retrying the flush.
    log.medium_mut().set_plan(FaultPlan::default());
    assert!(matches!(log.sync(), Err(Error::Failed { .. })));
    assert!(matches!(log.append_entry(2, ballot(1), b"later"), Err(Error::Failed { .. })));
    assert!(matches!(log.read(0), Err(Error::Failed { .. })));
    assert_eq!(log.durable_lsn(), durable);

    let recovered = Log::open(log.into_medium().into_inner().crash(None)).unwrap();
    assert_eq!(recovered.slots().map(|(s, _)| s).collect::<Vec<_>>(), vec![0]);
    assert_eq!(recovered.read(0).unwrap().unwrap().payload, b"safe");
}

#[test]
fn eio_on_write_fails_the_log() {
    fault_case(libc::EIO, false);
}

#[test]
fn eio_on_persist_fails_the_log() {
    fault_case(libc::EIO, true);
}

#[test]
fn enospc_on_write_fails_the_log() {
    fault_case(libc::ENOSPC, false);
}

#[test]
fn enospc_on_persist_fails_the_log() {
    fault_case(libc::ENOSPC, true);
}

#[test]
fn failed_superblock_update_during_discard_fails_the_log() {
    let sim = SimMedium::new(DATA_OFFSET_BYTES + 4096);
    let mut log = Log::create(FaultyMedium::new(sim, FaultPlan::default())).unwrap();
    log.append_promise(ballot(3)).unwrap();
    for slot in 0..10 {
        log.append_entry(slot, ballot(3), &[7; 50]).unwrap();
    }
    log.sync().unwrap();
    // discard_prefix persists twice: the carried-forward records, then the superblock.
    log.medium_mut().set_plan(FaultPlan { fail_persist_from: Some(1), errno: libc::EIO, ..FaultPlan::default() });
    assert!(matches!(log.discard_prefix(5), Err(Error::Io { .. })));
    assert!(log.failure().is_some());
    let recovered = Log::open(log.into_medium().into_inner().crash(None)).unwrap();
    assert_eq!(recovered.hard_state().promise, ballot(3), "the promise survives a failed discard");
    assert!(recovered.slots().map(|(s, _)| s).eq(5..10), "live slots survive a failed discard");
}

/// Mounts a tmpfs of `size` at `dir` (root only); unmounts on drop.
struct TinyFs(std::path::PathBuf);

impl TinyFs {
    fn mount(dir: &std::path::Path, size: &str) -> Option<TinyFs> {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| TinyFs(dir.to_path_buf()))
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_filesystem_too_small_for_the_log_is_a_typed_enospc() {
    if effective_uid() != 0 {
        eprintln!("not root: cannot mount a tmpfs; skipping");
        return;
    }
    let scratch = Scratch::new("tinyfs");
    let fs = TinyFs::mount(&scratch.0, "256k").expect("mount a 256 KiB tmpfs (root)");
    let path = fs.0.join("log");
    let config = Config { path: path.clone(), size_bytes: 1 << 20, backend: Backend::File(FileStrategy::Pwrite) };
    match open(&config) {
        Err(Error::Io { source, resource, op }) => {
            assert_eq!(source.raw_os_error(), Some(libc::ENOSPC), "{op}");
            assert_eq!(resource, path.display().to_string());
        }
        other => panic!("expected ENOSPC, got {:?}", other.map(|l| l.capacity_bytes())),
    }
    assert!(std::fs::read_dir(&fs.0).unwrap().next().is_none(), "no half-made log file left behind");
    // A log that fits is created, and appends never hit ENOSPC because the space is preallocated.
    let config = Config { size_bytes: 128 << 10, ..config };
    let mut log = open(&config).unwrap();
    let filler = fs.0.join("filler");
    let _ = std::fs::write(&filler, vec![1u8; 512 << 10]); // fills the filesystem
    for slot in 0..500 {
        log.append_entry(slot, ballot(1), &[3; 100]).unwrap();
        if slot % 100 == 99 {
            log.sync().unwrap();
            log.discard_prefix(slot - 10).unwrap();
        }
    }
    log.sync().unwrap();
    assert!(log.failure().is_none());
}

fn effective_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2)?.parse().ok()))
        .unwrap_or(u32::MAX)
}

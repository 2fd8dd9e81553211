//! `make bench-pmem`: durable append latency (append + sync, one record at a time) for 64 B,
//! 512 B and 4 KiB payloads per backend, beside the raw cost of the medium measured in the same
//! run (pwrite + fdatasync on the same filesystem; one cache-line write-back + sfence on a
//! mapping), and group-commit throughput (many 64 B appends per sync).
//!
//! Env: BENCH_DIR (default: the system temp dir) where file logs go; BENCH_DAX_DIR, a directory on
//! a filesystem mounted with -o dax (adds the dax backend); BENCH_SAMPLES (default 3000).

use decree_engine::types::Ballot;
use decree_pmem::flush::{detect, fence};
use decree_pmem::mapping::{MapMode, Mapping};
use decree_pmem::sim::SimMedium;
use decree_pmem::superblock::DATA_OFFSET_BYTES;
use decree_pmem::{open, Backend, Config, FileStrategy, Log, Medium};
use hdrhistogram::Histogram;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

const LOG_SIZE_BYTES: u64 = 256 << 20;
const PAYLOAD_SIZES_BYTES: [usize; 3] = [64, 512, 4096];
const GROUP_SIZES: [usize; 3] = [1024, 8192, 65536];
const BALLOT: Ballot = Ballot { round: 1, leader: 0 };

fn main() {
    let dir = std::env::var_os("BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from).join(format!("decree-pmem-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let samples: usize = std::env::var("BENCH_SAMPLES").ok().and_then(|s| s.parse().ok()).unwrap_or(3000);
    let fs_type = std::process::Command::new("stat").args(["-f", "-c", "%T"]).arg(&dir).output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    println!("decree-pmem bench: {samples} samples per row, files in {} ({fs_type}), flush instruction {}", dir.display(), detect().name());
    println!();
    println!("raw cost of the medium (same run)");
    let raw_fsync = raw_fdatasync(&dir, samples);
    print_row("raw pwrite 64 B + fdatasync", &raw_fsync);
    let raw_flush = raw_cacheline_flush(&dir, samples * 10);
    print_row(&format!("raw 64 B store + {} + sfence", detect().name()), &raw_flush);
    println!();
    println!("durable append (append + sync per record); ratio = p50 / raw fdatasync p50");
    let mut backends: Vec<(String, Backend, PathBuf)> = vec![
        ("file-direct".into(), Backend::File(FileStrategy::Direct), dir.clone()),
        ("file-pwrite".into(), Backend::File(FileStrategy::Pwrite), dir.clone()),
        ("file-uring".into(), Backend::File(FileStrategy::Uring), dir.clone()),
        ("file-mmap".into(), Backend::File(FileStrategy::Mmap), dir.clone()),
    ];
    if let Some(dax_dir) = std::env::var_os("BENCH_DAX_DIR") {
        backends.push(("dax".into(), Backend::Dax, PathBuf::from(dax_dir)));
    }
    let raw_p50 = raw_fsync.value_at_quantile(0.5) as f64;
    for (name, backend, at) in &backends {
        for size in PAYLOAD_SIZES_BYTES {
            let mut log = fresh_log(at, name, *backend);
            let h = durable_append_latency(&mut log, size, samples);
            print_row_ratio(&format!("{name} {size} B"), &h, raw_p50);
        }
    }
    for size in PAYLOAD_SIZES_BYTES {
        let mut log = Log::create(Box::new(SimMedium::new(DATA_OFFSET_BYTES + (64 << 20))) as Box<dyn Medium>).expect("sim log");
        let h = durable_append_latency(&mut log, size, samples);
        print_row(&format!("sim {size} B (software cost, no media)"), &h);
    }
    println!();
    println!("group commit: durable 64 B appends per second (one sync per group; target >= 1,000,000/s)");
    for (name, backend, at) in &backends {
        for group in GROUP_SIZES {
            let mut log = fresh_log(at, name, *backend);
            let (rate, syncs) = group_commit_rate(&mut log, group);
            println!("  {:<28} group {:>6}: {:>12.0} appends/s ({syncs} syncs)", name, group, rate);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn fresh_log(dir: &Path, name: &str, backend: Backend) -> Log<Box<dyn Medium>> {
    let path = dir.join(format!("bench-{name}-{}.log", fastrand::u32(..)));
    let _ = std::fs::remove_file(&path);
    let log = open(&Config { path: path.clone(), size_bytes: LOG_SIZE_BYTES, backend }).unwrap_or_else(|e| panic!("{name}: {e}"));
    // The file stays open through the log; unlink so the bench leaves nothing behind.
    let _ = std::fs::remove_file(&path);
    log
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("histogram bounds")
}

/// pwrite of 64 bytes + fdatasync on a preallocated file on the same filesystem.
fn raw_fdatasync(dir: &Path, samples: usize) -> Histogram<u64> {
    let path = dir.join("raw-fdatasync");
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).expect("raw file");
    file.write_all_at(&vec![0u8; 1 << 20], 0).expect("preallocate");
    file.sync_all().expect("fsync");
    let mut h = histogram();
    // Warm up (first writes to the file's blocks cost more), then measure.
    for i in 0..samples + samples / 4 {
        let t = Instant::now();
        file.write_all_at(&[i as u8; 64], (i as u64 * 64) % (1 << 20)).expect("pwrite");
        file.sync_data().expect("fdatasync");
        if i >= samples / 4 {
            h.record(t.elapsed().as_nanos() as u64).expect("record");
        }
    }
    let _ = std::fs::remove_file(&path);
    h
}

/// A 64-byte store to a shared file mapping + write-back of its line + sfence (on a non-DAX
/// mapping this is the instruction cost, not a media write).
fn raw_cacheline_flush(dir: &Path, samples: usize) -> Histogram<u64> {
    let path = dir.join("raw-flush");
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).expect("raw file");
    file.set_len(1 << 20).expect("size");
    let mut map = Mapping::map(&file, 1 << 20, MapMode::Shared).expect("map");
    let instr = detect();
    let mut h = histogram();
    for i in 0..samples {
        let at = (i * 64) % (1 << 20);
        let t = Instant::now();
        map.copy_in(at, &[i as u8; 64]).expect("store");
        map.write_back(at, 64, instr).expect("write back");
        fence();
        h.record(t.elapsed().as_nanos() as u64).expect("record");
    }
    let _ = std::fs::remove_file(&path);
    h
}

fn durable_append_latency(log: &mut Log<Box<dyn Medium>>, size: usize, samples: usize) -> Histogram<u64> {
    let payload = vec![0xA5u8; size];
    let mut h = histogram();
    for slot in 0..samples as u64 {
        let t = Instant::now();
        log.append_entry(slot, BALLOT, &payload).expect("append");
        log.sync().expect("sync");
        h.record(t.elapsed().as_nanos() as u64).expect("record");
        if log.free_bytes() < (1 << 20) {
            log.discard_prefix(slot + 1).expect("discard");
        }
    }
    h
}

/// Appends 64 B records in groups of `group`, syncing each group, for about a second.
fn group_commit_rate(log: &mut Log<Box<dyn Medium>>, group: usize) -> (f64, u64) {
    let payload = [0x5Au8; 64];
    let started = Instant::now();
    let (mut slot, mut syncs) = (0u64, 0u64);
    while started.elapsed().as_millis() < 1000 || syncs < 3 {
        for _ in 0..group {
            log.append_entry(slot, BALLOT, &payload).expect("append");
            slot += 1;
        }
        log.sync().expect("sync");
        syncs += 1;
        if log.free_bytes() < (32 << 20) {
            log.discard_prefix(slot).expect("discard");
        }
    }
    (slot as f64 / started.elapsed().as_secs_f64(), syncs)
}

fn print_row(name: &str, h: &Histogram<u64>) {
    println!(
        "  {:<44} p50 {:>9.2} us  p99 {:>9.2} us  p99.9 {:>9.2} us",
        name,
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
        h.value_at_quantile(0.999) as f64 / 1e3
    );
}

fn print_row_ratio(name: &str, h: &Histogram<u64>, raw_p50_ns: f64) {
    print_row(name, h);
    println!("  {:<44} ratio {:.2}x of raw fdatasync p50", "", h.value_at_quantile(0.5) as f64 / raw_p50_ns);
}

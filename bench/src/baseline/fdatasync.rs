//! Raw fdatasync on the log's filesystem: a 4 KiB pwrite into a preallocated, already-synced
//! file, then fdatasync, like a log append into its preallocated file (no metadata to flush).
//! Measured alone (the "one raw fdatasync") and with one writer per replica syncing at
//! once, as the replicas of a local cluster do on one disk: on some virtual disks the two differ
//! by 100x (an idle queue completes a lone flush on a timer tick).

use crate::histogram::{merge, new_histogram_us};
use hdrhistogram::Histogram;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

const BLOCK_BYTES: usize = 4096;
const FILE_BYTES: u64 = 4 << 20;

/// Latency in µs of `iterations` 4 KiB write + fdatasync per writer, `writers` threads at once,
/// each on its own file in `dir` (files are removed after).
pub fn fdatasync_us(
    dir: &Path,
    iterations: usize,
    writers: usize,
) -> std::io::Result<Histogram<u64>> {
    std::fs::create_dir_all(dir)?;
    let paths: Vec<PathBuf> = (0..writers.max(1))
        .map(|w| {
            dir.join(format!(
                ".decree-bench-fdatasync-{}-{w}",
                std::process::id()
            ))
        })
        .collect();
    let threads: Vec<_> = paths
        .iter()
        .cloned()
        .map(|path| std::thread::spawn(move || measure(&path, iterations)))
        .collect();
    let results: Vec<std::io::Result<Histogram<u64>>> = threads
        .into_iter()
        .map(|t| t.join().expect("fdatasync thread panicked"))
        .collect();
    for path in &paths {
        let _ = std::fs::remove_file(path);
    }
    let parts = results.into_iter().collect::<std::io::Result<Vec<_>>>()?;
    Ok(merge(parts.iter()))
}

fn measure(path: &Path, iterations: usize) -> std::io::Result<Histogram<u64>> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(true)
        .open(path)?;
    let block = vec![0x5au8; BLOCK_BYTES];
    for _ in 0..FILE_BYTES / BLOCK_BYTES as u64 {
        file.write_all(&block)?;
    }
    file.sync_all()?;
    let mut histogram = new_histogram_us();
    for i in 0..iterations as u64 {
        file.seek(SeekFrom::Start((i * BLOCK_BYTES as u64) % FILE_BYTES))?;
        let began = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        histogram.saturating_record(began.elapsed().as_micros() as u64);
    }
    Ok(histogram)
}

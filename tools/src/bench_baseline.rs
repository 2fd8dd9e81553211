//! The physical limits a benchmark prints beside its result, measured in the same run: a raw
//! loopback TCP ping-pong (what one network hop costs here) and a 4 KiB write + fdatasync in the
//! log's directory (what one log group commit costs here). `decree bench` and `decree-bench` both
//! measure them with these functions, so their baselines mean the same thing. A 3-replica commit
//! needs at least client->leader and leader->follower round trips plus one sync.

use hdrhistogram::Histogram;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Largest latency recorded exactly (60 s); longer ones saturate.
pub const MAX_LATENCY_US: u64 = 60_000_000;

/// An empty latency histogram in microseconds, 3 significant digits.
pub fn new_histogram_us() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant bounds are valid")
}

/// Merges per-thread histograms into one (all must come from `new_histogram_us`).
pub fn merge<'a>(parts: impl IntoIterator<Item = &'a Histogram<u64>>) -> Histogram<u64> {
    let mut all = new_histogram_us();
    for part in parts {
        all.add(part).expect("histograms from new_histogram_us share bounds");
    }
    all
}

/// Round-trip times in µs for `iterations` loopback ping-pongs of `payload_bytes` each way
/// (TCP_NODELAY, blocking sockets, one echo thread).
pub fn tcp_round_trip_us(iterations: usize, payload_bytes: usize) -> std::io::Result<Histogram<u64>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let size = payload_bytes.max(1);
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        let mut buf = vec![0u8; size];
        while stream.read_exact(&mut buf).is_ok() {
            stream.write_all(&buf)?;
        }
        Ok(())
    });
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut histogram = new_histogram_us();
    let mut buf = vec![7u8; size];
    for _ in 0..iterations {
        let began = Instant::now();
        stream.write_all(&buf)?;
        stream.read_exact(&mut buf)?;
        histogram.saturating_record(began.elapsed().as_micros() as u64);
    }
    drop(stream);
    echo.join().expect("echo thread panicked")?;
    Ok(histogram)
}

const SYNC_BLOCK_BYTES: usize = 4096;
const SYNC_FILE_BYTES: u64 = 4 << 20;

/// Latency in µs of `iterations` 4 KiB write + fdatasync per writer, `writers` threads at once,
/// each on its own preallocated, already-synced file in `dir` (like a log append into its
/// preallocated file: no metadata to flush; files are removed after). Measured alone (the "one
/// raw fdatasync") and with one writer per replica syncing at once, as the replicas of a local
/// cluster do on one disk: on some virtual disks the two differ by 100x.
pub fn fdatasync_us(dir: &Path, iterations: usize, writers: usize) -> std::io::Result<Histogram<u64>> {
    let parts = on_probe_files(dir, writers.max(1), |path| sync_writes(path, iterations))?;
    Ok(merge(parts.iter()))
}

/// Latency in µs until both of two writers, released together, have each done one 4 KiB write +
/// fdatasync on their own file, `iterations` times. That is the storage part of a commit that
/// needs two replicas durable (a majority of three) when both log to this disk: the floor of a
/// one-client commit on a single-disk host is two round trips plus this, not plus one lone sync.
pub fn fdatasync_pair_us(dir: &Path, iterations: usize) -> std::io::Result<Histogram<u64>> {
    let barrier = std::sync::Barrier::new(2);
    let spans = on_probe_files(dir, 2, |path| {
        let (mut file, block) = prepared_file(path)?;
        let mut spans = Vec::with_capacity(iterations);
        for i in 0..iterations as u64 {
            barrier.wait();
            let began = Instant::now();
            write_and_sync(&mut file, &block, i)?;
            spans.push((began, Instant::now()));
        }
        Ok(spans)
    })?;
    let mut histogram = new_histogram_us();
    for ((a_began, a_done), (b_began, b_done)) in spans[0].iter().zip(&spans[1]) {
        histogram.saturating_record(a_done.max(b_done).duration_since(*a_began.min(b_began)).as_micros() as u64);
    }
    Ok(histogram)
}

/// Runs `work` on `writers` threads at once, each given its own probe file path in `dir`, and
/// removes the files after (whatever the outcome).
fn on_probe_files<T: Send>(
    dir: &Path,
    writers: usize,
    work: impl Fn(&Path) -> std::io::Result<T> + Sync,
) -> std::io::Result<Vec<T>> {
    std::fs::create_dir_all(dir)?;
    let paths: Vec<PathBuf> =
        (0..writers).map(|w| dir.join(format!(".decree-bench-fdatasync-{}-{w}", std::process::id()))).collect();
    let results: Vec<std::io::Result<T>> = std::thread::scope(|scope| {
        let threads: Vec<_> = paths.iter().map(|path| scope.spawn(|| work(path))).collect();
        threads.into_iter().map(|t| t.join().expect("fdatasync thread panicked")).collect()
    });
    for path in &paths {
        let _ = std::fs::remove_file(path);
    }
    results.into_iter().collect()
}

/// A preallocated, already-synced file at `path` and the block written into it.
fn prepared_file(path: &Path) -> std::io::Result<(std::fs::File, Vec<u8>)> {
    let mut file = std::fs::OpenOptions::new().create(true).read(true).write(true).truncate(true).open(path)?;
    let block = vec![0x5au8; SYNC_BLOCK_BYTES];
    for _ in 0..SYNC_FILE_BYTES / SYNC_BLOCK_BYTES as u64 {
        file.write_all(&block)?;
    }
    file.sync_all()?;
    Ok((file, block))
}

/// Write number `i`: `block` over the file's next 4 KiB (wrapping), then fdatasync.
fn write_and_sync(file: &mut std::fs::File, block: &[u8], i: u64) -> std::io::Result<()> {
    file.seek(SeekFrom::Start((i * SYNC_BLOCK_BYTES as u64) % SYNC_FILE_BYTES))?;
    file.write_all(block)?;
    file.sync_data()
}

fn sync_writes(path: &Path, iterations: usize) -> std::io::Result<Histogram<u64>> {
    let (mut file, block) = prepared_file(path)?;
    time_each(iterations, |i| write_and_sync(&mut file, &block, i))
}

/// Latency in µs of each of `iterations` calls `op(i)`.
fn time_each(iterations: usize, mut op: impl FnMut(u64) -> std::io::Result<()>) -> std::io::Result<Histogram<u64>> {
    let mut histogram = new_histogram_us();
    for i in 0..iterations as u64 {
        let began = Instant::now();
        op(i)?;
        histogram.saturating_record(began.elapsed().as_micros() as u64);
    }
    Ok(histogram)
}

/// Latency in µs of `iterations` 4 KiB O_DIRECT writes + fdatasync on one preallocated file in
/// `dir`, through the log's own direct medium: what the `file` backend persists with wherever the
/// filesystem takes O_DIRECT (the page cache's writeback is not in it). `None` where the
/// filesystem refuses O_DIRECT (the log then uses pwrite, which `fdatasync_us` measures).
pub fn direct_fdatasync_us(dir: &Path, iterations: usize) -> std::io::Result<Option<Histogram<u64>>> {
    use decree_pmem::file::LogFile;
    use decree_pmem::file_direct::{DirectMedium, BLOCK_BYTES};
    use decree_pmem::Medium;
    let mut parts = on_probe_files(dir, 1, |path| {
        let (file, block) = prepared_file(path)?;
        let log_file =
            LogFile { file, size_bytes: SYNC_FILE_BYTES, created: false, resource: path.display().to_string() };
        let mut medium = match DirectMedium::new(log_file) {
            Ok(medium) => medium,
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported => return Ok(None),
            Err(e) => return Err(e),
        };
        time_each(iterations, |i| {
            medium.write_at((i * BLOCK_BYTES as u64) % SYNC_FILE_BYTES, &block)?;
            medium.persist()
        })
        .map(Some)
    })?;
    Ok(parts.pop().flatten())
}

/// Median and p99 in microseconds.
pub struct Baseline {
    /// Loopback TCP round trip (1 byte each way).
    pub tcp_rtt_us: (u64, u64),
    /// 4 KiB write + fdatasync, one writer.
    pub fdatasync_us: (u64, u64),
}

fn quantiles(h: &Histogram<u64>) -> (u64, u64) {
    (h.value_at_quantile(0.5), h.value_at_quantile(0.99))
}

/// Measures both baselines (about a second on an ordinary disk).
pub fn measure(dir: &Path) -> std::io::Result<Baseline> {
    Ok(Baseline { tcp_rtt_us: quantiles(&tcp_round_trip_us(2_000, 1)?), fdatasync_us: quantiles(&fdatasync_us(dir, 200, 1)?) })
}

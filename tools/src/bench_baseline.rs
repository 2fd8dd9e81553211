//! The physical limits `decree bench` prints beside its result, measured in the same run: a raw
//! loopback TCP ping-pong (what one network hop costs here) and a 4 KiB write + fdatasync in the
//! cluster's directory (what one log group commit costs here). A 3-replica commit needs at least
//! client->leader and leader->follower round trips plus one sync.

use hdrhistogram::Histogram;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Instant;

/// Median and p99 in microseconds.
pub struct Baseline {
    /// Loopback TCP round trip (1 byte each way).
    pub tcp_rtt_us: (u64, u64),
    /// 4 KiB pwrite + fdatasync.
    pub fdatasync_us: (u64, u64),
}

fn quantiles(h: &Histogram<u64>) -> (u64, u64) {
    (h.value_at_quantile(0.5), h.value_at_quantile(0.99))
}

fn tcp_rtt(iterations: usize) -> std::io::Result<Histogram<u64>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        let mut byte = [0u8; 1];
        while stream.read_exact(&mut byte).is_ok() {
            stream.write_all(&byte)?;
        }
        Ok(())
    });
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut histogram = Histogram::<u64>::new(3).expect("valid sigfig");
    let mut byte = [7u8; 1];
    for _ in 0..iterations {
        let began = Instant::now();
        stream.write_all(&byte)?;
        stream.read_exact(&mut byte)?;
        histogram.saturating_record(began.elapsed().as_micros() as u64);
    }
    drop(stream);
    let _ = echo.join();
    Ok(histogram)
}

fn fdatasync(dir: &Path, iterations: usize) -> std::io::Result<Histogram<u64>> {
    let path = dir.join(format!(".bench-baseline-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new().create(true).write(true).truncate(true).open(&path)?;
    let block = vec![0x5au8; 4096];
    let mut histogram = Histogram::<u64>::new(3).expect("valid sigfig");
    for _ in 0..iterations {
        let began = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        histogram.saturating_record(began.elapsed().as_micros() as u64);
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(histogram)
}

/// Measures both baselines (about a second on an ordinary disk).
pub fn measure(dir: &Path) -> std::io::Result<Baseline> {
    Ok(Baseline { tcp_rtt_us: quantiles(&tcp_rtt(2_000)?), fdatasync_us: quantiles(&fdatasync(dir, 200)?) })
}

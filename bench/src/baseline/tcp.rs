//! Raw TCP ping-pong on loopback: what one network round trip costs here, with the payload size
//! the benchmark sends (TCP_NODELAY, blocking sockets, one echo thread).

use crate::histogram::new_histogram_us;
use hdrhistogram::Histogram;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

/// Round-trip times in µs for `iterations` ping-pongs of `payload_bytes` each way.
pub fn tcp_round_trip_us(
    iterations: usize,
    payload_bytes: usize,
) -> std::io::Result<Histogram<u64>> {
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

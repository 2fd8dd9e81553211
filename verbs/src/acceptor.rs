//! The TCP side channel both ways: followers accepting leaders, leaders dialling followers
//! (shared by the tcp and rdma transports; the accept loop by shm too).

use crate::conn::Conn;
use crate::control::{TAG_HELLO, TAG_WELCOME};
use crate::{Gate, VerbsError};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Binds a non-blocking listener; returns it and the address it got (port 0 picks one).
pub fn listen(bind: SocketAddr) -> Result<(TcpListener, SocketAddr), VerbsError> {
    let listener =
        TcpListener::bind(bind).map_err(|e| VerbsError::os("bind", bind.to_string(), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| VerbsError::os("getsockname", bind.to_string(), e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| VerbsError::os("set_nonblocking", addr.to_string(), e))?;
    Ok((listener, addr))
}

/// A non-blocking listener (TCP or Unix) `accept_until` can drive.
pub trait Accept {
    /// What one accept yields (stream and peer address).
    type Connection;
    /// One non-blocking accept.
    fn accept_one(&self) -> std::io::Result<Self::Connection>;
}

impl Accept for TcpListener {
    type Connection = (TcpStream, SocketAddr);
    fn accept_one(&self) -> std::io::Result<Self::Connection> {
        self.accept()
    }
}

impl Accept for std::os::unix::net::UnixListener {
    type Connection = (
        std::os::unix::net::UnixStream,
        std::os::unix::net::SocketAddr,
    );
    fn accept_one(&self) -> std::io::Result<Self::Connection> {
        self.accept()
    }
}

/// Accepts on the non-blocking `listener` until `stop`, handing each connection to `admit`.
pub fn accept_until<L: Accept>(
    listener: &L,
    stop: &AtomicBool,
    what: &str,
    mut admit: impl FnMut(L::Connection),
) {
    let mut failures = 0u64;
    while !stop.load(Ordering::Relaxed) {
        match listener.accept_one() {
            Ok(connection) => admit(connection),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(e) => {
                // Usually passing (out of descriptors, a connection aborted before accept):
                // back off and keep admitting; say so at 1, 2, 4, 8... failures.
                failures += 1;
                if failures.is_power_of_two() {
                    tracing::warn!(error = %e, failures, "{what} accept failed; retrying");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Makes a connected stream blocking, TCP_NODELAY, with bounded reads and writes.
pub fn prepare(
    stream: &TcpStream,
    peer: &str,
    read_timeout: Duration,
    write_timeout: Duration,
) -> Result<(), VerbsError> {
    stream
        .set_nonblocking(false)
        .map_err(|e| VerbsError::os("set_nonblocking", peer, e))?;
    stream
        .set_nodelay(true)
        .map_err(|e| VerbsError::os("setsockopt(TCP_NODELAY)", peer, e))?;
    stream
        .set_read_timeout(Some(read_timeout))
        .map_err(|e| VerbsError::os("setsockopt(SO_RCVTIMEO)", peer, e))?;
    stream
        .set_write_timeout(Some(write_timeout))
        .map_err(|e| VerbsError::os("setsockopt(SO_SNDTIMEO)", peer, e))
}

/// Bound on each step of a handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Leader: connects to `addr`, passes `gate`, sends `hello`, and returns the connection and the
/// welcome's body.
pub fn dial(
    addr: SocketAddr,
    hello: &[u8],
    gate: &Gate,
) -> Result<(Conn<TcpStream>, Vec<u8>), VerbsError> {
    let peer = addr.to_string();
    let stream = TcpStream::connect_timeout(&addr, HANDSHAKE_TIMEOUT).map_err(|e| {
        VerbsError::Disconnected {
            peer: peer.clone(),
            reason: format!("connect: {e}"),
        }
    })?;
    prepare(&stream, &peer, HANDSHAKE_TIMEOUT, HANDSHAKE_TIMEOUT)?;
    let mut stream = stream;
    gate.connect(&mut stream, &peer)?;
    let mut conn = Conn::new(stream, peer);
    conn.send(TAG_HELLO, &[hello])?;
    let welcome = conn.recv_tagged(TAG_WELCOME, "welcome")?;
    Ok((conn, welcome))
}

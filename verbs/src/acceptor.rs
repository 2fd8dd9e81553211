//! The TCP side channel both ways: followers accepting leaders, leaders dialling followers
//! (shared by the tcp and rdma transports).

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

/// Accepts on the non-blocking `listener` until `stop`, handing each connection to `admit`.
pub fn accept_until(
    listener: &TcpListener,
    stop: &AtomicBool,
    what: &str,
    mut admit: impl FnMut(TcpStream, SocketAddr),
) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, from)) => admit(stream, from),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(e) => {
                tracing::error!(error = %e, "{what} accept failed; no more leaders will be admitted");
                return;
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
    gate.connect(&mut stream)
        .map_err(|reason| VerbsError::Unauthenticated {
            peer: peer.clone(),
            reason,
        })?;
    let mut conn = Conn::new(stream, peer);
    conn.send(TAG_HELLO, &[hello])?;
    let welcome = conn.recv_tagged(TAG_WELCOME, "welcome")?;
    Ok((conn, welcome))
}

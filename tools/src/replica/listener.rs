//! Accepts connections, authenticates each with the cluster secret on a short-lived thread, then
//! hands the connection, a client's or another replica's, to one of the client I/O threads
//! (`io_thread.rs`, round robin). A connection that fails authentication is logged and closed: it never
//! reaches the protocol.

use super::io_thread::{self, IoShared, NewConn};
use super::Context;
use crate::auth::{self, Peer};
use decree_engine::runtime::Role;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Time a new connection has to authenticate.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most connections served at once (clients across all I/O threads, peers, handshakes); beyond
/// it new ones are closed.
pub const MAX_CONNECTIONS: usize = 1_024;
/// Longest wait for a connection before the accept loop checks for shutdown.
const ACCEPT_POLL: Duration = Duration::from_millis(100);

/// A connection's place under `MAX_CONNECTIONS`; freed when dropped with the connection.
pub struct ConnSlot(Arc<Context>);

impl ConnSlot {
    /// The slot of a connection already counted in `ctx.connections`.
    pub fn new(ctx: Arc<Context>) -> Self {
        ConnSlot(ctx)
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Starts the client I/O threads (`[placement] io_threads`, or the host's default).
pub fn start_io_threads(ctx: &Arc<Context>) -> std::io::Result<Vec<Arc<IoShared>>> {
    let threads = ctx
        .io_threads
        .unwrap_or_else(|| io_thread::default_io_threads(decree_engine::runtime::placement::available_cpus()));
    let io = (0..threads).map(|n| io_thread::start(ctx.clone(), n, threads)).collect::<std::io::Result<Vec<_>>>()?;
    tracing::info!(threads, "client I/O threads started");
    Ok(io)
}

/// Accepts clients (handed to the I/O threads `io`) and peers until `ctx.stop`.
pub fn serve(listener: TcpListener, ctx: Arc<Context>, io: Vec<Arc<IoShared>>) {
    listener.set_nonblocking(true).expect("a listening socket can be made non-blocking");
    let (mut poll, mut events) = match Poll::new() {
        Ok(poll) => (poll, Events::with_capacity(4)),
        Err(error) => {
            tracing::error!(%error, "cannot create the accept poller; this replica serves no clients");
            return;
        }
    };
    let fd = listener.as_raw_fd();
    poll.registry()
        .register(&mut SourceFd(&fd), Token(0), Interest::READABLE)
        .expect("a listening socket can be polled");
    let mut next_io = 0usize;
    while !ctx.stop.load(Ordering::Acquire) {
        if let Err(error) = poll.poll(&mut events, Some(ACCEPT_POLL)) {
            if error.kind() != ErrorKind::Interrupted {
                tracing::warn!(%error, "accept poll failed");
                std::thread::sleep(Duration::from_millis(50));
            }
            continue;
        }
        loop {
            match listener.accept() {
                Ok((stream, remote)) => {
                    next_io = (next_io + 1) % io.len();
                    admit(stream, remote, &ctx, &io[next_io]);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    std::thread::sleep(Duration::from_millis(50));
                    break;
                }
            }
        }
    }
}

/// Applies the connection cap, then authenticates on a short-lived thread.
fn admit(stream: TcpStream, remote: SocketAddr, ctx: &Arc<Context>, io: &Arc<IoShared>) {
    if ctx.connections.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
        ctx.connections.fetch_sub(1, Ordering::AcqRel);
        tracing::warn!(%remote, limit = MAX_CONNECTIONS, "connection refused: too many open connections");
        return;
    }
    let slot = ConnSlot(ctx.clone());
    let (ctx, io) = (ctx.clone(), io.clone());
    let spawned = std::thread::Builder::new().name("decree-conn".into()).spawn(move || {
        ctx.placement.pin_current(Role::Io);
        handle(stream, remote, slot, &ctx, &io);
    });
    if let Err(error) = spawned {
        tracing::warn!(%error, "connection dropped: cannot start its handshake thread");
    }
}

fn handle(mut stream: TcpStream, remote: SocketAddr, slot: ConnSlot, ctx: &Context, io: &IoShared) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
    let peer = match auth::accept(&mut stream, &ctx.key) {
        Ok(peer) => peer,
        Err(error) => {
            tracing::warn!(%remote, %error, "connection refused: authentication failed");
            return;
        }
    };
    let _ = stream.set_read_timeout(None);
    match peer {
        Peer::Client => {
            if io.hand_over(NewConn { stream, remote, slot, peer: None }).is_err() {
                tracing::warn!(%remote, "client dropped: its I/O thread's intake is full");
            }
        }
        Peer::Replica(id) if ctx.members.contains_key(&id) && id != ctx.id => {
            if io.hand_over(NewConn { stream, remote, slot, peer: Some(id) }).is_err() {
                tracing::warn!(%remote, peer = id, "peer dropped: its I/O thread's intake is full");
            }
        }
        Peer::Replica(id) => {
            tracing::warn!(%remote, peer = id, "connection refused: replica id is not a member of this group")
        }
    }
}

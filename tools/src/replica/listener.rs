//! Accepts connections, authenticates each with the cluster secret, then hands it to a peer reader
//! or a client session. A connection that fails authentication is logged and closed: it never
//! reaches the protocol.

use super::{session, Context};
use crate::auth::{self, Peer};
use decree_engine::codec::{decode_frame, frame_len, FRAME_HEADER_BYTES};
use decree_engine::runtime::{Event, Role};
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Time a new connection has to authenticate.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most connections served at once (each holds a thread or two); beyond it new ones are closed.
pub const MAX_CONNECTIONS: usize = 1_024;

/// Decrements the open-connection count when a connection thread ends.
struct Slot<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Accepts until `ctx.stop`.
pub fn serve(listener: TcpListener, ctx: Arc<Context>) {
    listener.set_nonblocking(true).expect("a listening socket can be made non-blocking");
    while !ctx.stop.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((stream, remote)) => {
                if ctx.connections.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                    ctx.connections.fetch_sub(1, Ordering::AcqRel);
                    tracing::warn!(%remote, limit = MAX_CONNECTIONS, "connection refused: too many open connections");
                    drop(stream);
                    continue;
                }
                let ctx = ctx.clone();
                let spawned = std::thread::Builder::new().name("decree-conn".into()).spawn({
                    let ctx = ctx.clone();
                    move || {
                        ctx.placement.pin_current(Role::Io);
                        handle(stream, remote.to_string(), ctx);
                    }
                });
                if let Err(error) = spawned {
                    ctx.connections.fetch_sub(1, Ordering::AcqRel);
                    tracing::warn!(%error, "connection dropped: cannot start its thread");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(2)),
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn handle(mut stream: TcpStream, remote: String, ctx: Arc<Context>) {
    let counter = ctx.clone();
    let _slot = Slot(&counter.connections);
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
        Peer::Client => session::serve(stream, remote, ctx),
        Peer::Replica(id) if ctx.members.contains_key(&id) && id != ctx.id => {
            tracing::info!(%remote, peer = id, "peer connected");
            read_peer(stream, id, &ctx);
        }
        Peer::Replica(id) => tracing::warn!(%remote, peer = id, "connection refused: replica id is not a member of this group"),
    }
}

/// Reads framed envelopes from replica `peer` into the core thread's inbox.
fn read_peer(stream: TcpStream, peer: u32, ctx: &Context) {
    let mut reader = std::io::BufReader::with_capacity(256 << 10, stream);
    let mut buf = vec![0u8; FRAME_HEADER_BYTES];
    loop {
        buf.resize(FRAME_HEADER_BYTES, 0);
        if reader.read_exact(&mut buf).is_err() {
            break;
        }
        let total = match frame_len(&buf) {
            Ok(total) => total,
            Err(error) => {
                tracing::warn!(peer, %error, "bad frame from peer; closing");
                break;
            }
        };
        buf.resize(total, 0);
        if reader.read_exact(&mut buf[FRAME_HEADER_BYTES..]).is_err() {
            break;
        }
        let envelope = match decode_frame(&buf) {
            Ok((envelope, _)) => envelope,
            Err(error) => {
                tracing::warn!(peer, %error, "bad frame from peer; closing");
                break;
            }
        };
        if envelope.from.0 != peer || envelope.to.0 != ctx.id {
            tracing::warn!(peer, from = %envelope.from, to = %envelope.to, "peer sent a misaddressed envelope; closing");
            break;
        }
        // A full inbox drops the message: the sender retransmits on its next heartbeat.
        let _ = ctx.inbox.push(Event::Peer(envelope));
    }
    tracing::info!(peer, "peer disconnected");
}

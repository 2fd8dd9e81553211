//! The `tcp` replica transport: one writer thread per peer dials it, authenticates, and streams
//! framed engine envelopes (`decree_engine::codec`); the core thread writes an idle link's socket
//! itself; inbound peer connections are read by the
//! listener (`listener.rs`) after authentication.

use crate::auth::{self, Peer};
use decree_engine::codec::encode_frame;
use decree_engine::message::Envelope;
use decree_engine::runtime::idle::Idler;
use decree_engine::runtime::{Placement, PeerTransport, Ring, Role};
use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use nix::sys::socket::{send, MsgFlags};
use std::time::Duration;

/// Messages queued per peer before new ones are dropped (Paxos retransmits).
pub(crate) const PEER_QUEUE_MESSAGES: usize = 8_192;
/// Back-off between connection attempts.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);
/// Longest park of an idle writer; bounds shutdown latency.
const MAX_PARK: Duration = Duration::from_millis(100);
/// A write blocked this long means the peer has stopped reading or the path is lossy enough that
/// TCP has backed off to multi-second retransmissions: a fresh connection recovers faster (its
/// retransmission timer starts small), and the messages stuck in the old one are retransmitted
/// by Paxos anyway.
const WRITE_STALL: Duration = Duration::from_secs(2);

/// One peer's outbound path: a queue for the writer thread, and the socket itself, which the core
/// thread writes directly when the writer has nothing queued (`TcpPeers::send`).
struct PeerLink {
    queue: Ring<Envelope>,
    socket: Mutex<LinkSocket>,
    /// Mirrors `!socket.leftover.is_empty()`, so the idle writer can see it without the lock.
    has_leftover: AtomicBool,
}

/// Guarded by the link's lock. Whoever holds it is the only one writing the socket, so bytes go
/// out in order: `leftover` first, then the queue.
struct LinkSocket {
    stream: Option<TcpStream>,
    /// The unsent tail of a frame the core wrote without blocking; the writer sends it first.
    leftover: Vec<u8>,
}

/// Sends to peers: directly from the calling (core) thread when the link is idle, through
/// per-peer writer threads otherwise.
pub struct TcpPeers {
    /// The engine's ring rather than a crossbeam channel: its consumer parks at once when empty,
    /// where a channel's `recv` spins and yields first (on the 2-vCPU bench host: 50 -> 37
    /// context switches per put at 1 client, docs/benchmarks.md "After tuning").
    links: HashMap<u32, Arc<PeerLink>>,
    /// The core's encode buffer for direct writes.
    frame: Vec<u8>,
    dropped: u64,
}

impl TcpPeers {
    /// Starts one writer per peer in `peers` (id, address).
    pub fn start(self_id: u32, peers: Vec<(u32, SocketAddr)>, key: Arc<Vec<u8>>, placement: Placement, stop: Arc<AtomicBool>) -> TcpPeers {
        let mut links = HashMap::new();
        for (id, addr) in peers {
            let link = Arc::new(PeerLink {
                queue: Ring::new(PEER_QUEUE_MESSAGES),
                socket: Mutex::new(LinkSocket { stream: None, leftover: Vec::new() }),
                has_leftover: AtomicBool::new(false),
            });
            links.insert(id, link.clone());
            let (key, placement, stop) = (key.clone(), placement.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("decree-peer-{id}"))
                .spawn(move || {
                    placement.pin_current(Role::Io);
                    writer(self_id, id, addr, &key, &link, &stop);
                })
                .expect("spawning a peer writer thread");
        }
        TcpPeers { links, frame: Vec::with_capacity(64 << 10), dropped: 0 }
    }
}

/// Writes `envelope` on the calling thread if the link's writer has nothing queued or unsent and
/// is not writing: at low load that saves the hand-off to the writer thread (a wake-up of an idle
/// CPU) on every message. Never blocks: what the socket does not take at once becomes the
/// writer's leftover. False when the link is busy or down: the caller queues the envelope.
/// `frame` is the caller's encode buffer.
fn try_direct(link: &PeerLink, envelope: &Envelope, frame: &mut Vec<u8>) -> bool {
    if !link.queue.is_empty() {
        return false;
    }
    let Ok(mut socket) = link.socket.try_lock() else { return false };
    let LinkSocket { stream: Some(stream), leftover } = &mut *socket else { return false };
    if !leftover.is_empty() {
        return false;
    }
    frame.clear();
    encode_frame(envelope, frame);
    // A full socket buffer or a broken connection sends nothing here: the writer sends the
    // frame, or finds the connection broken and redials.
    let sent = send(stream.as_raw_fd(), frame, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL).unwrap_or(0);
    if sent < frame.len() {
        leftover.extend_from_slice(&frame[sent..]);
        link.has_leftover.store(true, Ordering::SeqCst);
        drop(socket);
        link.queue.wake();
    }
    true
}

impl PeerTransport for TcpPeers {
    fn send(&mut self, envelope: Envelope) {
        let Some(link) = self.links.get(&envelope.to.0) else { return };
        if try_direct(link, &envelope, &mut self.frame) {
            return;
        }
        if link.queue.push(envelope).is_err() {
            self.dropped += 1;
            if self.dropped.is_power_of_two() {
                tracing::warn!(dropped = self.dropped, "peer queue full; dropping messages (retransmitted on heartbeat)");
            }
        }
    }
}

fn dial(self_id: u32, addr: SocketAddr, key: &[u8]) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
    auth::connect(&mut stream, key, Peer::Replica(self_id)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(None).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(WRITE_STALL)).map_err(|e| e.to_string())?;
    Ok(stream)
}

fn writer(self_id: u32, peer: u32, addr: SocketAddr, key: &[u8], link: &PeerLink, stop: &AtomicBool) {
    let queue = &link.queue;
    queue.bind_consumer();
    // Park as soon as the queue is empty: the core thread unparks this writer on its next push.
    let mut idler = Idler::new(0, 0);
    let mut buf = Vec::with_capacity(64 << 10);
    let mut last_error = String::new();
    let has_work = || !queue.is_empty() || link.has_leftover.load(Ordering::SeqCst);
    while !stop.load(Ordering::Acquire) {
        let stream = match dial(self_id, addr, key) {
            Ok(stream) => {
                tracing::info!(peer, %addr, "connected to peer");
                last_error.clear();
                stream
            }
            Err(error) => {
                if error != last_error {
                    tracing::warn!(peer, %addr, %error, "cannot reach peer; retrying");
                    last_error = error;
                }
                // Messages queued while the peer is unreachable are stale: drop them.
                while queue.pop().is_some() {}
                std::thread::sleep(RECONNECT_BACKOFF);
                continue;
            }
        };
        lock(link).stream = Some(stream);
        while !stop.load(Ordering::Acquire) {
            if !has_work() {
                idler.idle(&queue.sleeping, has_work, MAX_PARK);
                continue;
            }
            idler.reset();
            // Held while writing: the core sees the link busy and queues instead.
            let mut socket = lock(link);
            buf.clear();
            buf.append(&mut socket.leftover);
            link.has_leftover.store(false, Ordering::Release);
            while buf.len() < (1 << 20) {
                let Some(next) = queue.pop() else { break };
                encode_frame(&next, &mut buf);
            }
            let Some(stream) = socket.stream.as_mut() else { break };
            if let Err(error) = stream.write_all(&buf) {
                tracing::warn!(peer, %addr, %error, "peer connection lost; reconnecting");
                // Under the same lock: a timed-out write may have left half a frame on a live
                // connection, and nothing may be written after it.
                drop_connection(link, &mut socket);
                break;
            }
        }
        drop_connection(link, &mut lock(link));
    }
}

/// Forgets the link's connection; whatever was unsent belongs to it (Paxos retransmits).
fn drop_connection(link: &PeerLink, socket: &mut LinkSocket) {
    socket.stream = None;
    socket.leftover.clear();
    link.has_leftover.store(false, Ordering::Release);
}

/// The link's lock; a panic elsewhere while holding it leaves nothing a writer could misread.
fn lock(link: &PeerLink) -> MutexGuard<'_, LinkSocket> {
    link.socket.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use decree_engine::codec::{decode_frame, frame_len, FRAME_HEADER_BYTES};
    use decree_engine::membership::Membership;
    use decree_engine::message::{Message, SnapshotChunk};
    use decree_engine::types::{Ballot, ReplicaId};
    use std::io::Read;
    use std::net::TcpListener;

    fn chunk(sequence: u64, bytes: usize) -> Envelope {
        let msg = Message::Snapshot(SnapshotChunk {
            ballot: Ballot::ZERO,
            slot: 1,
            membership: Membership::new(vec![ReplicaId(1), ReplicaId(2)]),
            config_slot: None,
            total_bytes: 1 << 40,
            checksum: 0,
            offset: sequence,
            data: bytes::Bytes::from(vec![7u8; bytes]),
        });
        Envelope { from: ReplicaId(1), to: ReplicaId(2), msg }
    }

    /// Frames written by the core thread and by the writer thread (after a full socket buffer
    /// left a partial frame behind) arrive whole and in the order they were sent.
    #[test]
    fn direct_and_queued_frames_arrive_whole_and_in_order() {
        let key = Arc::new(b"peer-link-test-key".to_vec());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut peers = TcpPeers::start(1, vec![(2, addr)], key.clone(), Placement::default(), stop.clone());
        let (mut stream, _) = listener.accept().unwrap();
        assert_eq!(auth::accept(&mut stream, &key).unwrap(), Peer::Replica(1));
        let link = peers.links[&2].clone();
        while lock(&link).stream.is_none() {
            std::thread::sleep(Duration::from_millis(1));
        }
        // 600 frames of 64 KiB: far more than the socket buffers hold while nobody reads, and
        // fewer than the writer's queue holds, so none is dropped.
        const FRAMES: u64 = 600;
        for sequence in 0..FRAMES {
            peers.send(chunk(sequence, 64 << 10));
        }
        assert!(!link.queue.is_empty() || link.has_leftover.load(Ordering::SeqCst), "the socket never filled: the test did not reach the writer's path");
        for expected in 0..FRAMES {
            let chunk = read_chunk(&mut stream);
            assert_eq!(chunk.offset, expected, "frames reordered");
            assert_eq!(chunk.data.len(), 64 << 10);
        }
        // Once the writer has drained and let go of the socket, a frame goes out from the sending
        // thread again.
        while !link.queue.is_empty() || link.has_leftover.load(Ordering::SeqCst) || link.socket.try_lock().is_err() {
            std::thread::sleep(Duration::from_millis(1));
        }
        peers.send(chunk(FRAMES, 8));
        assert!(link.queue.is_empty(), "an idle link's frame was queued for the writer");
        assert_eq!(read_chunk(&mut stream).offset, FRAMES);
        stop.store(true, Ordering::Release);
        link.queue.wake();
    }

    fn read_chunk(stream: &mut std::net::TcpStream) -> SnapshotChunk {
        let mut buf = vec![0u8; FRAME_HEADER_BYTES];
        stream.read_exact(&mut buf).unwrap();
        buf.resize(frame_len(&buf).unwrap(), 0);
        stream.read_exact(&mut buf[FRAME_HEADER_BYTES..]).unwrap();
        match decode_frame(&buf).unwrap().0.msg {
            Message::Snapshot(chunk) => chunk,
            other => panic!("unexpected message {other:?}"),
        }
    }
}

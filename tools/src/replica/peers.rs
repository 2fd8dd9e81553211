//! The `tcp` replica transport: one writer thread per peer dials it, authenticates, and streams
//! framed engine envelopes (`decree_engine::codec`); inbound peer connections are read by the
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
use std::sync::Arc;
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

/// Sends to peers through per-peer writer threads.
pub struct TcpPeers {
    /// The engine's ring rather than a crossbeam channel: its consumer parks at once when empty,
    /// where a channel's `recv` spins and yields first (on the 2-vCPU bench host: 50 -> 37
    /// context switches per put at 1 client, docs/benchmarks.md "After tuning").
    queues: HashMap<u32, Arc<Ring<Envelope>>>,
    dropped: u64,
}

impl TcpPeers {
    /// Starts one writer per peer in `peers` (id, address).
    pub fn start(self_id: u32, peers: Vec<(u32, SocketAddr)>, key: Arc<Vec<u8>>, placement: Placement, stop: Arc<AtomicBool>) -> TcpPeers {
        let mut queues = HashMap::new();
        for (id, addr) in peers {
            let queue = Arc::new(Ring::new(PEER_QUEUE_MESSAGES));
            queues.insert(id, queue.clone());
            let (key, placement, stop) = (key.clone(), placement.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("decree-peer-{id}"))
                .spawn(move || {
                    placement.pin_current(Role::Io);
                    writer(self_id, id, addr, &key, &queue, &stop);
                })
                .expect("spawning a peer writer thread");
        }
        TcpPeers { queues, dropped: 0 }
    }
}

impl PeerTransport for TcpPeers {
    fn send(&mut self, envelope: Envelope) {
        let Some(queue) = self.queues.get(&envelope.to.0) else { return };
        if queue.push(envelope).is_err() {
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

fn writer(self_id: u32, peer: u32, addr: SocketAddr, key: &[u8], queue: &Ring<Envelope>, stop: &AtomicBool) {
    queue.bind_consumer();
    // Park as soon as the queue is empty: the core thread unparks this writer on its next push.
    let mut idler = Idler::new(0, 0);
    let mut buf = Vec::with_capacity(64 << 10);
    let mut last_error = String::new();
    while !stop.load(Ordering::Acquire) {
        let mut stream = match dial(self_id, addr, key) {
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
        while !stop.load(Ordering::Acquire) {
            let Some(first) = queue.pop() else {
                idler.idle(&queue.sleeping, || !queue.is_empty(), MAX_PARK);
                continue;
            };
            idler.reset();
            buf.clear();
            encode_frame(&first, &mut buf);
            while buf.len() < (1 << 20) {
                let Some(next) = queue.pop() else { break };
                encode_frame(&next, &mut buf);
            }
            if let Err(error) = stream.write_all(&buf) {
                tracing::warn!(peer, %addr, %error, "peer connection lost; reconnecting");
                break;
            }
        }
    }
}

//! The follower's side: an acceptor thread and a receiver thread per leader.

use crate::acceptor::{accept_until, listen, prepare};
use crate::conn::{Conn, Fields};
use crate::control::*;
use crate::mapping::Mapping;
use crate::transport::check_bounds;
use crate::{FollowerEvent, FollowerLink, LeaderToken, RemoteRegion, VerbsError};
use crossbeam::channel::{bounded, Receiver, Sender};
use decree_engine::message::Envelope;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

type Writer = Arc<Mutex<Conn<TcpStream>>>;

/// Follower events buffered between the receiver threads and `poll`.
const EVENT_QUEUE: usize = 1 << 16;

struct Shared {
    region: Mapping,
    key: u32,
    /// The fence. Receivers hold it shared while they check and apply a write; `grant` takes it
    /// exclusively, so no write of a revoked leader is mid-apply once `grant` returns.
    fence: RwLock<LeaderToken>,
    writers: Mutex<HashMap<LeaderToken, Writer>>,
    events: Sender<Result<FollowerEvent, VerbsError>>,
    stop: AtomicBool,
}

/// A follower's TCP endpoint.
pub struct TcpFollower {
    shared: Arc<Shared>,
    events: Receiver<Result<FollowerEvent, VerbsError>>,
    addr: SocketAddr,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl TcpFollower {
    /// Accepts leaders on `bind` into a fresh region of `len` bytes.
    pub fn listen(bind: SocketAddr, len: usize) -> Result<TcpFollower, VerbsError> {
        let (listener, addr) = listen(bind)?;
        // Bounded: a follower that stops polling stalls its receivers, which stalls the TCP
        // stream, so the leader's writes time out instead of this queue growing without end.
        let (tx, rx) = bounded(EVENT_QUEUE);
        let shared = Arc::new(Shared {
            region: Mapping::anonymous(len)?,
            key: fastrand::u32(1..),
            fence: RwLock::new(LeaderToken::NONE),
            writers: Mutex::new(HashMap::new()),
            events: tx,
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name("tcp-accept".into())
            .spawn(move || accept_loop(&listener, &s))
            .map_err(|e| VerbsError::os("spawn", "tcp accept thread", e))?;
        Ok(TcpFollower {
            shared,
            events: rx,
            addr,
            acceptor: Some(acceptor),
        })
    }

    /// Where leaders connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    accept_until(listener, &shared.stop, "tcp", |(stream, from)| {
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("tcp-recv-{from}"))
            .spawn(move || {
                if let Err(e) = serve(stream, from, &s) {
                    if !s.stop.load(Ordering::Relaxed) {
                        let _ = s.events.send(Err(e));
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot spawn a tcp receiver thread");
        }
    });
}

/// One leader's connection: handshake, then apply writes and forward messages until it ends.
fn serve(stream: TcpStream, from: SocketAddr, shared: &Shared) -> Result<(), VerbsError> {
    let peer = from.to_string();
    // Reads wake periodically so a stopped follower's threads exit.
    prepare(
        &stream,
        &peer,
        Duration::from_millis(200),
        Duration::from_secs(5),
    )?;
    let write_half = stream
        .try_clone()
        .map_err(|e| VerbsError::os("dup", &peer, e))?;
    let mut reader = Conn::new(stream, peer.clone());
    let writer: Writer = Arc::new(Mutex::new(Conn::new(write_half, peer.clone())));
    let (tag, body) = recv(&mut reader, shared)?;
    if tag != TAG_HELLO {
        return Err(VerbsError::Protocol {
            peer,
            what: format!("expected hello, got tag {tag}"),
        });
    }
    let token = LeaderToken(Fields::new(&body, &peer).u64()?);
    let len = shared.region.len() as u64;
    writer.lock().unwrap().send(
        TAG_WELCOME,
        &[&shared.key.to_le_bytes(), &len.to_le_bytes()],
    )?;
    shared.writers.lock().unwrap().insert(token, writer.clone());
    let result = (|| loop {
        let (tag, body) = recv(&mut reader, shared)?;
        match tag {
            TAG_WRITE => apply(&body, token, &peer, shared, &writer)?,
            TAG_CONTROL => {
                let envelope = decode_control(&peer, &body)?;
                let _ = shared.events.send(Ok(FollowerEvent::Message {
                    from: token,
                    envelope,
                }));
            }
            _ => {
                return Err(VerbsError::Protocol {
                    peer: peer.clone(),
                    what: format!("unexpected message tag {tag}"),
                })
            }
        }
    })();
    shared.writers.lock().unwrap().remove(&token);
    result
}

fn recv(reader: &mut Conn<TcpStream>, shared: &Shared) -> Result<(u8, Vec<u8>), VerbsError> {
    loop {
        // Checked per message too: a busy leader never lets the read time out.
        if shared.stop.load(Ordering::Relaxed) {
            return Err(VerbsError::Disconnected {
                peer: reader.peer().to_string(),
                reason: "follower shut down".into(),
            });
        }
        match reader.recv() {
            Err(VerbsError::Timeout { .. }) if !shared.stop.load(Ordering::Relaxed) => continue,
            other => return other,
        }
    }
}

/// Checks and applies one write, then acknowledges it (or says why not).
fn apply(
    body: &[u8],
    token: LeaderToken,
    peer: &str,
    shared: &Shared,
    writer: &Writer,
) -> Result<(), VerbsError> {
    let mut f = Fields::new(body, peer);
    let (id, key, offset, has_imm, imm) = (f.u64()?, f.u32()?, f.u64()?, f.u8()?, f.u32()?);
    let bytes = f.rest();
    let nack = |reason: u8, detail: u64| {
        writer.lock().unwrap().send(
            TAG_NACK,
            &[&id.to_le_bytes(), &[reason], &detail.to_le_bytes()],
        )
    };
    if key != shared.key {
        return nack(NACK_WRONG_KEY, u64::from(shared.key));
    }
    if check_bounds(peer, offset, bytes.len(), shared.region.len() as u64).is_err() {
        return nack(NACK_OUT_OF_BOUNDS, shared.region.len() as u64);
    }
    {
        let granted = shared.fence.read().unwrap();
        if *granted != token || token == LeaderToken::NONE {
            drop(granted);
            return nack(NACK_FENCED, token.0);
        }
        shared.region.write_at(offset as usize, bytes);
    }
    let _ = shared.events.send(Ok(FollowerEvent::Landed {
        from: token,
        offset,
        len: bytes.len() as u64,
    }));
    if has_imm != 0 {
        let _ = shared
            .events
            .send(Ok(FollowerEvent::Imm { from: token, imm }));
    }
    writer
        .lock()
        .unwrap()
        .send(TAG_COMPLETE, &[&id.to_le_bytes()])
}

impl TcpFollower {
    fn writer(&self, to: LeaderToken) -> Result<Writer, VerbsError> {
        self.shared
            .writers
            .lock()
            .unwrap()
            .get(&to)
            .cloned()
            .ok_or_else(|| VerbsError::Disconnected {
                peer: format!("leader {:#x}", to.0),
                reason: "not connected".into(),
            })
    }
}

impl FollowerLink for TcpFollower {
    fn local(&self) -> RemoteRegion {
        RemoteRegion {
            key: self.shared.key,
            len: self.shared.region.len() as u64,
        }
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), VerbsError> {
        self.shared.region.copy_out(offset, out)
    }

    fn grant(&mut self, leader: LeaderToken) -> Result<(), VerbsError> {
        *self.shared.fence.write().unwrap() = leader;
        Ok(())
    }

    fn granted(&self) -> LeaderToken {
        *self.shared.fence.read().unwrap()
    }

    fn send(&mut self, to: LeaderToken, envelope: &Envelope) -> Result<(), VerbsError> {
        let body = encode_control(envelope);
        self.writer(to)?.lock().unwrap().send(TAG_CONTROL, &[&body])
    }

    fn ack_persisted(&mut self, to: LeaderToken, upto: u64) -> Result<(), VerbsError> {
        self.writer(to)?
            .lock()
            .unwrap()
            .send(TAG_PERSISTED, &[&upto.to_le_bytes()])
    }

    fn poll(&mut self, out: &mut Vec<FollowerEvent>) -> Result<(), VerbsError> {
        while let Ok(ev) = self.events.try_recv() {
            out.push(ev?);
        }
        Ok(())
    }
}

impl Drop for TcpFollower {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for (_, w) in self.shared.writers.lock().unwrap().drain() {
            let _ = w
                .lock()
                .unwrap()
                .stream()
                .shutdown(std::net::Shutdown::Both);
        }
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

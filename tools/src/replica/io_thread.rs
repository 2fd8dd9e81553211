//! A client I/O thread (role `io`): serves many authenticated client connections with readiness
//! polling (mio, edge-triggered). Per readable socket it reads into the connection's `Session`,
//! decodes frames and pushes events into the core thread's inbox; the core answers through this
//! thread's answer ring (`IoShared::answer`), and the thread encodes the answers into each
//! connection's write buffer and writes them out. No lock, and no allocation on the request path
//! apart from each request's `op` bytes (see tools/tests/no_alloc.rs).

use super::listener::{ConnSlot, MAX_CONNECTIONS};
use super::op_arena::op_arena;
use super::peer_conn::PeerConn;
use decree_engine::chunk_arena::ChunkArena;
use super::session::{self, ConnResponder, Session};
use super::Context;
use decree_engine::runtime::{Response, Ring, Role};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Answers queued from the core thread to one I/O thread. Every client holds at most a few
/// requests in flight; a full ring drops the answer and the client retries after its timeout.
pub const ANSWER_RING_ENTRIES: usize = 16_384;
/// Readiness events taken per poll.
const EVENTS_PER_POLL: usize = 1_024;
/// Longest sleep in `poll`: how soon an idle thread notices shutdown.
const IDLE_POLL: Duration = Duration::from_millis(100);
const WAKER: Token = Token(usize::MAX);
/// Tokens of peer connections start here (client connections' tokens are their slot index).
const PEER_TOKENS: usize = 1 << 30;

/// Names one connection of one I/O thread; the generation keeps an answer for a closed
/// connection from reaching a newer one in the same slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnKey {
    index: u32,
    generation: u32,
}

impl ConnKey {
    /// Slot `index` in its `generation`-th use.
    pub fn new(index: u32, generation: u32) -> Self {
        ConnKey { index, generation }
    }
}

/// One answer from the core thread.
pub struct Answer {
    /// The connection it is for.
    pub conn: ConnKey,
    /// The request it answers.
    pub request_id: u64,
    /// The answer.
    pub response: Response,
}

/// An authenticated connection handed to an I/O thread: a client, or a replica (`peer`).
pub struct NewConn {
    /// The socket (blocking or not; the I/O thread makes it non-blocking).
    pub stream: std::net::TcpStream,
    /// The client's address, for logs.
    pub remote: SocketAddr,
    /// Its place under the connection cap, freed when the connection closes.
    pub slot: ConnSlot,
    /// The replica it authenticated as; None for a client.
    pub peer: Option<u32>,
}

/// What an I/O thread shares with the listener (new connections) and the core thread (answers).
pub struct IoShared {
    answers: Ring<Answer>,
    intake: Ring<NewConn>,
    waker: Waker,
    /// Raised while the thread may sleep in `poll`; a producer that lowers it wakes the thread.
    sleeping: AtomicBool,
    /// Answers dropped because their client had `WRITE_BACKLOG_LIMIT_BYTES` unsent.
    dropped_answers: AtomicU64,
}

impl IoShared {
    /// Rings and a waker registered with `registry` (the I/O thread's poll).
    pub fn new(registry: &mio::Registry) -> std::io::Result<Self> {
        Ok(IoShared {
            answers: Ring::new(ANSWER_RING_ENTRIES),
            intake: Ring::new(MAX_CONNECTIONS),
            waker: Waker::new(registry, WAKER)?,
            sleeping: AtomicBool::new(false),
            dropped_answers: AtomicU64::new(0),
        })
    }

    /// The oldest queued answer (the I/O thread's side of `answer`).
    pub fn next_answer(&self) -> Option<Answer> {
        self.answers.pop()
    }

    /// Queues an answer for `conn`; drops it if the ring is full.
    pub fn answer(&self, conn: ConnKey, request_id: u64, response: Response) {
        if self.answers.push(Answer { conn, request_id, response }).is_ok() {
            self.wake();
        }
    }

    /// Hands a new connection to this thread; gives it back if the intake is full.
    pub fn hand_over(&self, conn: NewConn) -> Result<(), NewConn> {
        self.intake.push(conn)?;
        self.wake();
        Ok(())
    }

    /// Answers dropped so far because their client did not read.
    pub fn dropped_answers(&self) -> u64 {
        self.dropped_answers.load(Ordering::Relaxed)
    }

    /// One `eventfd` write per sleep, not per answer: the first producer to see the flag takes it.
    fn wake(&self) {
        if self.sleeping.load(Ordering::SeqCst) && self.sleeping.swap(false, Ordering::SeqCst) {
            let _ = self.waker.wake();
        }
    }
}

/// Default number of client I/O threads for a host with `cpus` CPUs: one per four CPUs, at least
/// one (on the 2-vCPU host three replicas already share two CPUs).
pub fn default_io_threads(cpus: usize) -> usize {
    (cpus / 4).max(1)
}

/// Starts I/O thread `number` of `count`; returns its handle for the listener.
pub fn start(ctx: Arc<Context>, number: usize, count: usize) -> std::io::Result<Arc<IoShared>> {
    let poll = Poll::new()?;
    let shared = Arc::new(IoShared::new(poll.registry())?);
    let thread_shared = shared.clone();
    std::thread::Builder::new().name(format!("decree-io-{number}")).spawn(move || {
        // The placement names one CPU for the I/O role: several I/O threads pinned there would
        // only take turns on it, so they are left to the scheduler.
        if count == 1 {
            ctx.placement.pin_current(Role::Io);
        }
        IoThread::new(poll, thread_shared, ctx).run();
    })?;
    Ok(shared)
}

struct Conn {
    stream: TcpStream,
    remote: SocketAddr,
    session: Session,
    responder: ConnResponder,
    /// Refused a frame: send what is queued (the error frame last), then close.
    closing: bool,
    /// Listed in `IoThread::dirty` (has new bytes to write this round).
    dirty: bool,
    _slot: ConnSlot,
}

struct IoThread {
    poll: Poll,
    shared: Arc<IoShared>,
    ctx: Arc<Context>,
    /// Connection slots (index = mio token); `generations[i]` counts the lives of slot i.
    conns: Vec<Option<Conn>>,
    generations: Vec<u32>,
    free: Vec<usize>,
    dirty: Vec<usize>,
    /// Holds the op bytes of every request this thread decodes.
    ops: ChunkArena,
    /// Inbound replica connections (token = `PEER_TOKENS` + index).
    peers: Vec<Option<PeerConn>>,
}

impl IoThread {
    fn new(poll: Poll, shared: Arc<IoShared>, ctx: Arc<Context>) -> Self {
        IoThread {
            poll,
            shared,
            ctx,
            conns: Vec::with_capacity(MAX_CONNECTIONS),
            generations: Vec::with_capacity(MAX_CONNECTIONS),
            free: Vec::with_capacity(MAX_CONNECTIONS),
            dirty: Vec::with_capacity(MAX_CONNECTIONS),
            ops: op_arena(),
            peers: Vec::new(),
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        while !self.ctx.stop.load(Ordering::Acquire) {
            self.shared.sleeping.store(true, Ordering::SeqCst);
            // Re-checked after raising the flag: a push before it was raised did not wake us.
            let pending = !self.shared.answers.is_empty() || !self.shared.intake.is_empty();
            if pending {
                // Not going to block: producers need not pay an eventfd write to wake us.
                self.shared.sleeping.store(false, Ordering::SeqCst);
            }
            let timeout = if pending { Duration::ZERO } else { IDLE_POLL };
            let polled = self.poll.poll(&mut events, Some(timeout));
            self.shared.sleeping.store(false, Ordering::SeqCst);
            if let Err(error) = polled {
                if error.kind() != ErrorKind::Interrupted {
                    tracing::error!(%error, "client I/O poll failed; this I/O thread stops");
                    break;
                }
            }
            for event in events.iter() {
                let token = event.token();
                if token == WAKER {
                    continue;
                }
                if token.0 >= PEER_TOKENS {
                    self.read_peer(token.0 - PEER_TOKENS, event.is_read_closed());
                    continue;
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.read(token.0, event.is_read_closed());
                }
                if event.is_writable() {
                    self.flush(token.0);
                }
            }
            self.take_new_connections();
            // The requests just read: run the core here if it is free (`Inbox::serve`); its
            // answers to this thread's clients are then taken below, in the same round.
            self.ctx.inbox.serve();
            self.take_answers();
            while let Some(index) = self.dirty.pop() {
                if let Some(conn) = self.conns[index].as_mut() {
                    conn.dirty = false;
                    self.flush(index);
                }
            }
        }
        let open = self.conns.iter().filter(|c| c.is_some()).count();
        tracing::debug!(open, "client I/O thread stopping");
    }

    fn take_new_connections(&mut self) {
        while let Some(new) = self.shared.intake.pop() {
            if let Err(error) = new.stream.set_nonblocking(true) {
                tracing::warn!(remote = %new.remote, %error, "client dropped: cannot make its socket non-blocking");
                continue;
            }
            if let Some(peer) = new.peer {
                self.add_peer(new.stream, new.remote, peer, new.slot);
                continue;
            }
            let index = match self.free.pop() {
                Some(index) => index,
                None => {
                    self.conns.push(None);
                    self.generations.push(0);
                    self.conns.len() - 1
                }
            };
            let mut stream = TcpStream::from_std(new.stream);
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(error) = self.poll.registry().register(&mut stream, Token(index), interest) {
                tracing::warn!(remote = %new.remote, %error, "client dropped: cannot register its socket");
                self.free.push(index);
                continue;
            }
            let key = ConnKey { index: index as u32, generation: self.generations[index] };
            let responder = ConnResponder::new(self.shared.clone(), key);
            self.conns[index] = Some(Conn {
                stream,
                remote: new.remote,
                session: Session::new(),
                responder,
                closing: false,
                dirty: false,
                _slot: new.slot,
            });
            // Bytes may have arrived before registration; edge-triggered readiness would not say so.
            self.read(index, false);
        }
    }

    /// Registers an inbound replica connection and reads what it already sent.
    fn add_peer(&mut self, stream: std::net::TcpStream, remote: SocketAddr, peer: u32, slot: ConnSlot) {
        let index = self.peers.iter().position(Option::is_none).unwrap_or_else(|| {
            self.peers.push(None);
            self.peers.len() - 1
        });
        let mut stream = TcpStream::from_std(stream);
        if let Err(error) = self.poll.registry().register(&mut stream, Token(PEER_TOKENS + index), Interest::READABLE) {
            tracing::warn!(%remote, peer, %error, "peer dropped: cannot register its socket");
            return;
        }
        tracing::info!(%remote, peer, "peer connected");
        self.peers[index] = Some(PeerConn::new(stream, peer, slot));
        self.read_peer(index, false);
    }

    fn read_peer(&mut self, index: usize, peer_closed: bool) {
        let Some(conn) = self.peers.get_mut(index).and_then(Option::as_mut) else { return };
        if let Err(why) = conn.read(self.ctx.id, &self.ctx.inbox, peer_closed) {
            tracing::info!(peer = conn.peer, %why, "peer connection closed");
            let mut conn = self.peers[index].take().expect("checked above");
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
    }

    fn take_answers(&mut self) {
        // Bounded: at most what the ring held when we started, so producers cannot keep us here.
        for _ in 0..self.shared.answers.capacity() {
            let Some(answer) = self.shared.next_answer() else { break };
            let index = answer.conn.index as usize;
            let live = self.generations.get(index) == Some(&answer.conn.generation);
            let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut).filter(|_| live) else {
                continue; // the connection closed; its answer has nowhere to go
            };
            if !conn.session.push_response(answer.request_id, &answer.response, &self.ctx.members) {
                self.shared.dropped_answers.fetch_add(1, Ordering::Relaxed);
            } else if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(index);
            }
        }
    }

    /// Reads until the socket is drained, dispatching every complete frame.
    /// `peer_closed`: the event also reported the peer's FIN, which edge-triggered readiness
    /// will not report again, so the socket is read to its end instead of stopping at a short read.
    fn read(&mut self, index: usize, peer_closed: bool) {
        let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else { return };
        if conn.closing {
            return;
        }
        let mut open = true;
        let mut drained = false;
        while !drained {
            let space = conn.session.read_space();
            let space_bytes = space.len();
            match conn.stream.read(space) {
                Ok(0) => {
                    open = false;
                    break;
                }
                Ok(bytes) => {
                    conn.session.received(bytes);
                    // A short read took everything queued: bytes arriving later raise a new edge,
                    // so the read that would only say WouldBlock (one syscall per request) is skipped.
                    drained = bytes < space_bytes && !peer_closed;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    open = false;
                    break;
                }
            }
            while let Some(frame) = conn.session.next_frame(&mut self.ops) {
                match frame {
                    Ok(frame) => {
                        if let Some((request_id, response)) =
                            session::dispatch(frame, &conn.responder, &self.ctx.inbox, &self.ctx.members)
                        {
                            conn.session.push_response(request_id, &response, &self.ctx.members);
                        }
                    }
                    Err(error) => {
                        if let Some(code) = error.code() {
                            tracing::warn!(remote = %conn.remote, %error, "refusing client frame; closing the connection");
                            conn.session.push_error(code, &error.to_string());
                        }
                        conn.closing = true;
                        break;
                    }
                }
            }
            if conn.closing {
                break;
            }
        }
        if !open {
            self.close(index);
        } else {
            self.flush(index);
        }
    }

    /// Writes unsent bytes until done or the socket would block (a writable event resumes it).
    fn flush(&mut self, index: usize) {
        let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else { return };
        while !conn.session.unsent().is_empty() {
            match conn.stream.write(conn.session.unsent()) {
                Ok(bytes) => conn.session.sent(bytes),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close(index);
                    return;
                }
            }
        }
        if conn.closing {
            self.close(index);
        }
    }

    fn close(&mut self, index: usize) {
        let Some(mut conn) = self.conns[index].take() else { return };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        if conn.session.dropped() > 0 {
            tracing::warn!(remote = %conn.remote, dropped = conn.session.dropped(), "client did not read its answers; the overflow was dropped");
        }
        self.generations[index] = self.generations[index].wrapping_add(1);
        self.free.push(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{self, ClientFrame, ErrorCode, ServerFrame};
    use bytes::Bytes;
    use decree_engine::runtime::{Event, Responder};
    use std::net::{TcpListener, TcpStream};
    use std::time::Instant;

    /// An I/O thread with a stand-in core thread that answers every request with `reply_bytes`.
    fn serving(reply_bytes: usize) -> (Arc<Context>, Arc<IoShared>, TcpListener) {
        let ctx = Context::for_test(1, 1 << 16, 0);
        let io = start(ctx.clone(), 0, 1).unwrap();
        let core_ctx = ctx.clone();
        std::thread::spawn(move || {
            let payload = Bytes::from(vec![1u8; reply_bytes]);
            while !core_ctx.stop.load(Ordering::Acquire) {
                match core_ctx.inbox.pop() {
                    Some(Event::Request { request, request_id, reply_to }) => {
                        reply_to.respond(request_id, Response::Reply { seq: request.seq, payload: payload.clone() })
                    }
                    Some(_) => {}
                    None => std::thread::sleep(Duration::from_micros(50)),
                }
            }
        });
        (ctx, io, TcpListener::bind("127.0.0.1:0").unwrap())
    }

    fn connect(ctx: &Arc<Context>, io: &IoShared, listener: &TcpListener) -> TcpStream {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, remote) = listener.accept().unwrap();
        ctx.connections.fetch_add(1, Ordering::AcqRel);
        let slot = ConnSlot::new(ctx.clone());
        assert!(io.hand_over(NewConn { stream: server, remote, slot, peer: None }).is_ok());
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        client
    }

    fn request(id: u64) -> Vec<u8> {
        let mut out = Vec::new();
        wire::encode(
            &ClientFrame::Request { request_id: id, client: 9, seq: id, op: Bytes::from_static(b"op") },
            &mut out,
        );
        out
    }

    fn round_trips(client: &mut TcpStream, ids: std::ops::Range<u64>) {
        for id in ids {
            client.write_all(&request(id)).unwrap();
            let frame: ServerFrame = wire::read_frame(client, &mut Vec::new()).unwrap();
            assert!(matches!(frame, ServerFrame::Reply { request_id, .. } if request_id == id), "{frame:?}");
        }
    }

    #[test]
    fn pipelined_requests_are_answered_in_order_and_a_closed_connection_frees_its_slot() {
        let (ctx, io, listener) = serving(8);
        let mut client = connect(&ctx, &io, &listener);
        let mut burst = Vec::new();
        (0..500).for_each(|id| burst.extend(request(id)));
        client.write_all(&burst).unwrap();
        for id in 0..500 {
            let frame: ServerFrame = wire::read_frame(&mut client, &mut Vec::new()).unwrap();
            assert!(matches!(frame, ServerFrame::Reply { request_id, .. } if request_id == id), "{frame:?}");
        }
        drop(client);
        let deadline = Instant::now() + Duration::from_secs(5);
        while ctx.connections.load(Ordering::Acquire) != 0 {
            assert!(Instant::now() < deadline, "the closed connection still holds its slot");
            std::thread::sleep(Duration::from_millis(5));
        }
        ctx.stop.store(true, Ordering::Release);
    }

    #[test]
    fn a_client_that_does_not_read_and_a_refused_frame_leave_other_clients_served() {
        let (ctx, io, listener) = serving(64 << 10);
        let mut good = connect(&ctx, &io, &listener);
        round_trips(&mut good, 0..10);
        // 32 MiB of answers to a client that never reads: socket buffers fill, then its backlog.
        let mut deaf = connect(&ctx, &io, &listener);
        let mut burst = Vec::new();
        (0..512).for_each(|id| burst.extend(request(id)));
        deaf.write_all(&burst).unwrap();
        let mut garbage = connect(&ctx, &io, &listener);
        garbage.write_all(b"this is not a decree frame at all").unwrap();
        let refusal: ServerFrame = wire::read_frame(&mut garbage, &mut Vec::new()).unwrap();
        assert!(matches!(refusal, ServerFrame::Error { code: ErrorCode::Malformed, .. }), "{refusal:?}");
        let mut rest = [0u8; 1];
        assert_eq!(garbage.read(&mut rest).unwrap_or(0), 0, "connection left open after a refused frame");
        let deadline = Instant::now() + Duration::from_secs(5);
        while io.dropped_answers() == 0 {
            assert!(Instant::now() < deadline, "the deaf client's backlog never overflowed");
            std::thread::sleep(Duration::from_millis(5));
        }
        let started = Instant::now();
        round_trips(&mut good, 10..110);
        assert!(started.elapsed() < Duration::from_secs(3), "a deaf client slowed others: {:?}", started.elapsed());
        // The deaf client still gets the start of its answers once it reads.
        let first: ServerFrame = wire::read_frame(&mut deaf, &mut Vec::new()).unwrap();
        assert!(matches!(first, ServerFrame::Reply { request_id: 0, .. }), "{first:?}");
        ctx.stop.store(true, Ordering::Release);
    }
}

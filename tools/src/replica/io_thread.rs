//! A client I/O thread (role `io`): serves many authenticated client connections with readiness
//! polling (mio, edge-triggered). Per readable socket it reads into the connection's `Session`,
//! decodes frames and pushes events into the core thread's inbox; the core answers through this
//! thread's answer ring (`IoShared::answer`), and the thread encodes the answers into each
//! connection's write buffer and writes them out. No lock, and no allocation on the request path
//! apart from each request's `op` bytes (see tools/tests/no_alloc.rs).

use super::listener::{ConnSlot, MAX_CONNECTIONS};
use super::session::{self, ConnResponder, Session};
use super::Context;
use decree_engine::runtime::{Response, Ring, Role};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// An authenticated client connection handed to an I/O thread.
pub struct NewConn {
    /// The socket (blocking or not; the I/O thread makes it non-blocking).
    pub stream: std::net::TcpStream,
    /// The client's address, for logs.
    pub remote: SocketAddr,
    /// Its place under the connection cap, freed when the connection closes.
    pub slot: ConnSlot,
}

/// What an I/O thread shares with the listener (new connections) and the core thread (answers).
pub struct IoShared {
    answers: Ring<Answer>,
    intake: Ring<NewConn>,
    waker: Waker,
    /// Raised while the thread may sleep in `poll`; a producer that lowers it wakes the thread.
    sleeping: AtomicBool,
}

impl IoShared {
    /// Rings and a waker registered with `registry` (the I/O thread's poll).
    pub fn new(registry: &mio::Registry) -> std::io::Result<Self> {
        Ok(IoShared {
            answers: Ring::new(ANSWER_RING_ENTRIES),
            intake: Ring::new(MAX_CONNECTIONS),
            waker: Waker::new(registry, WAKER)?,
            sleeping: AtomicBool::new(false),
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

/// Starts one I/O thread; returns its handle for the listener.
pub fn start(ctx: Arc<Context>, number: usize) -> std::io::Result<Arc<IoShared>> {
    let poll = Poll::new()?;
    let shared = Arc::new(IoShared::new(poll.registry())?);
    let thread_shared = shared.clone();
    std::thread::Builder::new().name(format!("decree-io-{number}")).spawn(move || {
        ctx.placement.pin_current(Role::Io);
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
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        while !self.ctx.stop.load(Ordering::Acquire) {
            self.shared.sleeping.store(true, Ordering::SeqCst);
            // Re-checked after raising the flag: a push before it was raised did not wake us.
            let pending = !self.shared.answers.is_empty() || !self.shared.intake.is_empty();
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
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.read(token.0);
                }
                if event.is_writable() {
                    self.flush(token.0);
                }
            }
            self.take_new_connections();
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
            self.read(index);
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
            if conn.session.push_response(answer.request_id, &answer.response, &self.ctx.members) && !conn.dirty {
                conn.dirty = true;
                self.dirty.push(index);
            }
        }
    }

    /// Reads until the socket is drained, dispatching every complete frame.
    fn read(&mut self, index: usize) {
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
                    drained = bytes < space_bytes;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    open = false;
                    break;
                }
            }
            while let Some(frame) = conn.session.next_frame() {
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

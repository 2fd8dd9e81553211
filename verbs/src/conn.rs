//! A message connection over a stream socket (TCP or Unix): `[tag u8][len u32 LE][body]`.
//! Writes are either blocking and vectored (`send`, bounded by a send timeout) or queued
//! (`queue`, for poll loops: what the socket does not take at once waits in an `Outbox` that
//! `flush` writes); reads are either non-blocking (`try_recv`, for poll loops) or blocking
//! (`recv`, for receiver threads).

use crate::control::TAG_CONTROL;
use crate::outbox::{Outbox, StallClock, OUTBOX_SHED_BYTES, OUTBOX_STALL};
use crate::VerbsError;
use decree_engine::codec::encode_frame;
use decree_engine::message::Envelope;
use nix::errno::Errno;
use nix::sys::socket::{recv, sendmsg, MsgFlags};
use std::io::{IoSlice, Read, Write};
use std::os::fd::AsRawFd;
use std::time::Instant;

/// Header bytes in front of every message.
pub const MSG_HEADER_BYTES: usize = 5;
/// Most slices one writev accepts (Linux's UIO_MAXIOV).
const IOV_MAX: usize = 1024;
/// Largest body accepted: a log write of up to 64 MiB plus its own header.
pub const MAX_BODY_BYTES: usize = (64 << 20) + 64;
/// The receive buffer's size, and what it shrinks back to after a larger message.
const RECV_BUFFER_BYTES: usize = 64 << 10;
/// Most body parts `send` writes without allocating (more go through `send_many`).
const SEND_PARTS: usize = 8;

/// One side of a connection.
pub struct Conn<S> {
    stream: S,
    peer: String,
    /// Received bytes live at `head..tail`; the rest is room for the next read. Allocated once
    /// (zeroed), so a poll that reads the socket neither allocates nor clears a buffer.
    inbuf: Vec<u8>,
    head: usize,
    tail: usize,
    /// An engine frame being sent (`send_control`), kept between sends.
    frame: Vec<u8>,
    /// Queued bytes the socket has not taken yet (`queue`, `flush`).
    outbox: Outbox,
    /// When those bytes last moved.
    clock: StallClock,
    /// Messages `queue` dropped because too much already waited.
    shed: u64,
}

impl<S: Read + Write + AsRawFd> Conn<S> {
    /// Wraps a connected, blocking stream.
    pub fn new(stream: S, peer: String) -> Conn<S> {
        Conn {
            stream,
            peer,
            inbuf: vec![0; RECV_BUFFER_BYTES],
            head: 0,
            tail: 0,
            frame: Vec::new(),
            outbox: Outbox::default(),
            clock: StallClock::default(),
            shed: 0,
        }
    }

    /// The peer's name.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The underlying stream.
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// Sends one message whose body is the concatenation of `parts`, in one vectored write
    /// where the kernel allows. Up to `SEND_PARTS` parts, nothing is allocated.
    pub fn send(&mut self, tag: u8, parts: &[&[u8]]) -> Result<(), VerbsError> {
        if parts.len() > SEND_PARTS {
            return self.send_many(&[(tag, parts)]);
        }
        let header = header(tag, parts);
        let mut all: [&[u8]; SEND_PARTS + 1] = [&[]; SEND_PARTS + 1];
        all[0] = &header;
        all[1..=parts.len()].copy_from_slice(parts);
        self.write_all::<{ SEND_PARTS + 1 }>(&all[..=parts.len()])
    }

    /// Sends `envelope` as one control message (`TAG_CONTROL`), framed in a buffer this
    /// connection keeps (no allocation per message once warm).
    pub fn send_control(&mut self, envelope: &Envelope) -> Result<(), VerbsError> {
        self.with_frame(envelope, |conn, frame| conn.send(TAG_CONTROL, &[frame]))
    }

    /// Like `send_control`, but never blocks: see `queue`.
    pub fn queue_control(&mut self, envelope: &Envelope) -> Result<(), VerbsError> {
        self.with_frame(envelope, |conn, frame| conn.queue(TAG_CONTROL, &[frame]))
    }

    /// Runs `write` with `envelope` framed in the buffer this connection keeps.
    fn with_frame<R>(&mut self, envelope: &Envelope, write: impl FnOnce(&mut Self, &[u8]) -> R) -> R {
        let mut frame = std::mem::take(&mut self.frame);
        frame.clear();
        encode_frame(envelope, &mut frame);
        let written = write(self, &frame);
        self.frame = frame;
        written
    }

    /// Sends one message without blocking: what the socket does not take now waits, after
    /// anything already waiting, for `flush`. While more than `OUTBOX_SHED_BYTES` wait, the
    /// message is dropped instead (counted, and logged at 1, 2, 4, ... drops): only for messages
    /// the protocol retransmits. Fails when the peer took nothing for `OUTBOX_STALL`: give the
    /// link up. Do not mix with `send` on one connection (`send` would overtake what waits).
    pub fn queue(&mut self, tag: u8, parts: &[&[u8]]) -> Result<(), VerbsError> {
        assert!(parts.len() <= SEND_PARTS, "invariant: at most SEND_PARTS parts in a queued message");
        let header = header(tag, parts);
        let mut slots: [&[u8]; SEND_PARTS + 1] = [&[]; SEND_PARTS + 1];
        slots[0] = &header;
        slots[1..=parts.len()].copy_from_slice(parts);
        let all = &slots[..=parts.len()];
        let total: usize = all.iter().map(|p| p.len()).sum();
        if self.outbox.len() > OUTBOX_SHED_BYTES {
            self.shed += 1;
            if self.shed.is_power_of_two() {
                let waiting = self.outbox.len();
                tracing::warn!(peer = %self.peer, waiting, shed = self.shed, "peer reads its control messages slower than they come; dropping new ones (retransmitted)");
            }
            return self.flush().map(|_| ());
        }
        if !self.outbox.is_empty() {
            // Behind what already waits, then as much of it all as the socket takes.
            self.outbox.hold(all, 0);
            return self.flush().map(|_| ());
        }
        let written = self.write_now(all)?;
        if written < total {
            self.outbox.hold(all, written);
            self.clock.moved(Instant::now()); // its clock starts with its first waiting byte
        }
        Ok(())
    }

    /// Writes as much of what `queue` left waiting as the socket takes now. Returns whether
    /// nothing waits any more.
    pub fn flush(&mut self) -> Result<bool, VerbsError> {
        if self.outbox.is_empty() {
            return Ok(true);
        }
        let n = self.write_now(&[self.outbox.unwritten()])?;
        self.outbox.written(n);
        let now = Instant::now();
        if n > 0 {
            self.clock.moved(now);
        }
        if self.clock.stalled(!self.outbox.is_empty(), now) {
            let what = format!("it took none of {} waiting bytes for {} s", self.outbox.len(), OUTBOX_STALL.as_secs());
            return Err(self.stalled(what));
        }
        Ok(self.outbox.is_empty())
    }

    /// Bytes `queue` holds that the socket has not taken yet.
    pub fn queued_bytes(&self) -> usize {
        self.outbox.len()
    }

    /// Messages `queue` dropped so far.
    pub fn shed(&self) -> u64 {
        self.shed
    }

    /// One non-blocking vectored write of `all` (its first `SEND_PARTS + 1` slices: the rest
    /// wait like any unwritten byte); how much the socket took.
    fn write_now(&self, all: &[&[u8]]) -> Result<usize, VerbsError> {
        let mut slices = [IoSlice::new(&[]); SEND_PARTS + 1];
        let n = unwritten(all, 0, &mut slices);
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        loop {
            match sendmsg::<()>(self.stream.as_raw_fd(), &slices[..n], &[], flags, None) {
                Ok(n) => return Ok(n),
                Err(Errno::EAGAIN) => return Ok(0),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(self.gone(e.desc())),
            }
        }
    }

    fn stalled(&self, what: String) -> VerbsError {
        VerbsError::Stalled { peer: self.peer.clone(), what }
    }

    /// Sends several messages in as few vectored writes as the kernel allows (batching).
    pub fn send_many(&mut self, messages: &[(u8, &[&[u8]])]) -> Result<(), VerbsError> {
        let headers: Vec<[u8; MSG_HEADER_BYTES]> = messages
            .iter()
            .map(|(tag, parts)| header(*tag, parts))
            .collect();
        let mut all: Vec<&[u8]> = Vec::new();
        for (header, (_, parts)) in headers.iter().zip(messages) {
            all.push(header);
            all.extend(parts.iter().copied().filter(|p| !p.is_empty()));
        }
        self.write_all::<IOV_MAX>(&all)
    }

    /// Writes every byte of `all`, at most `N` slices per writev (the slice array is on the
    /// stack).
    fn write_all<const N: usize>(&mut self, all: &[&[u8]]) -> Result<(), VerbsError> {
        let total: usize = all.iter().map(|p| p.len()).sum();
        let mut written = 0;
        let mut slices = [IoSlice::new(&[]); N];
        while written < total {
            let n = unwritten(all, written, &mut slices);
            match self.stream.write_vectored(&slices[..n]) {
                Ok(0) => return Err(self.gone("connection closed while sending")),
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(e, "send")),
            }
        }
        Ok(())
    }

    /// The next whole message if one has arrived, without blocking.
    pub fn try_recv(&mut self) -> Result<Option<(u8, Vec<u8>)>, VerbsError> {
        let mut body = Vec::new();
        Ok(self.try_recv_into(&mut body)?.map(|tag| (tag, body)))
    }

    /// Like `try_recv`, but the body replaces `body`'s contents (its capacity is reused, so a
    /// poll loop that keeps one buffer allocates nothing per message).
    pub fn try_recv_into(&mut self, body: &mut Vec<u8>) -> Result<Option<u8>, VerbsError> {
        // The previous body was used by now: one rare large message (up to the 64 MiB bound)
        // must not keep its buffer for the connection's life.
        if body.capacity() > RECV_BUFFER_BYTES {
            body.clear();
            body.shrink_to(RECV_BUFFER_BYTES);
        }
        loop {
            if let Some(tag) = self.take_message(body)? {
                return Ok(Some(tag));
            }
            self.make_room();
            let room = &mut self.inbuf[self.tail..];
            match recv(self.stream.as_raw_fd(), room, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => return Err(self.gone("peer closed the connection")),
                Ok(n) => self.tail += n,
                Err(Errno::EAGAIN) => return Ok(None),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(self.gone(e.desc())),
            }
        }
    }

    /// Blocks for the next whole message.
    pub fn recv(&mut self) -> Result<(u8, Vec<u8>), VerbsError> {
        let mut body = Vec::new();
        loop {
            if let Some(tag) = self.take_message(&mut body)? {
                return Ok((tag, body));
            }
            self.make_room();
            match self.stream.read(&mut self.inbuf[self.tail..]) {
                Ok(0) => return Err(self.gone("peer closed the connection")),
                Ok(n) => self.tail += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(e, "receive")),
            }
        }
    }

    /// Blocks for the next message, which must carry `tag` (`name` is for the error).
    pub fn recv_tagged(&mut self, tag: u8, name: &str) -> Result<Vec<u8>, VerbsError> {
        let (got, body) = self.recv()?;
        if got != tag {
            return Err(VerbsError::Protocol {
                peer: self.peer.clone(),
                what: format!("expected {name}, got message tag {got}"),
            });
        }
        Ok(body)
    }

    /// Moves the next whole message's body into `body` and returns its tag, if it has arrived.
    fn take_message(&mut self, body: &mut Vec<u8>) -> Result<Option<u8>, VerbsError> {
        let held = &self.inbuf[self.head..self.tail];
        if held.len() < MSG_HEADER_BYTES {
            return Ok(None);
        }
        let len = u32::from_le_bytes(held[1..5].try_into().unwrap()) as usize;
        if len > MAX_BODY_BYTES {
            return Err(VerbsError::Protocol {
                peer: self.peer.clone(),
                what: format!("message of {len} bytes exceeds the {MAX_BODY_BYTES}-byte limit"),
            });
        }
        if held.len() < MSG_HEADER_BYTES + len {
            return Ok(None);
        }
        let tag = held[0];
        body.clear();
        body.extend_from_slice(&held[MSG_HEADER_BYTES..MSG_HEADER_BYTES + len]);
        self.head += MSG_HEADER_BYTES + len;
        if self.head == self.tail {
            (self.head, self.tail) = (0, 0);
            if self.inbuf.len() > RECV_BUFFER_BYTES {
                // Grown by a large message: give the memory back once it is drained.
                self.inbuf.truncate(RECV_BUFFER_BYTES);
                self.inbuf.shrink_to_fit();
            }
        }
        Ok(Some(tag))
    }

    /// Leaves free space after the received bytes for the next read: the partial message moves
    /// to the front when the end is reached, and the buffer grows only for a message larger
    /// than it, straight to that message's size (its header, already held and checked against
    /// the limit by `take_message`, says how large).
    fn make_room(&mut self) {
        if self.tail == self.inbuf.len() {
            if self.head > 0 {
                self.inbuf.copy_within(self.head..self.tail, 0);
                (self.head, self.tail) = (0, self.tail - self.head);
            } else {
                let most = MSG_HEADER_BYTES + MAX_BODY_BYTES;
                assert!(
                    self.tail < most,
                    "invariant: take_message accepts a full-size message before the buffer is full"
                );
                // A full buffer at offset 0 holds at least a header (it is larger than one).
                let len = u32::from_le_bytes(self.inbuf[1..5].try_into().unwrap()) as usize;
                self.inbuf.resize((MSG_HEADER_BYTES + len).min(most), 0);
            }
        }
    }

    /// A socket timeout (SO_SNDTIMEO / SO_RCVTIMEO ran out) is a `Timeout`; anything else ends
    /// the connection.
    fn io_error(&self, e: std::io::Error, what: &str) -> VerbsError {
        match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => VerbsError::Timeout {
                peer: self.peer.clone(),
                what: what.into(),
                timeout_ms: 0,
            },
            _ => self.gone(&e.to_string()),
        }
    }

    fn gone(&self, reason: &str) -> VerbsError {
        VerbsError::Disconnected {
            peer: self.peer.clone(),
            reason: reason.to_string(),
        }
    }
}

/// The header of a message whose body is the concatenation of `parts`.
fn header(tag: u8, parts: &[&[u8]]) -> [u8; MSG_HEADER_BYTES] {
    let body_len: usize = parts.iter().map(|p| p.len()).sum();
    assert!(
        body_len <= MAX_BODY_BYTES,
        "invariant: message body within MAX_BODY_BYTES"
    );
    let mut header = [0u8; MSG_HEADER_BYTES];
    header[0] = tag;
    header[1..5].copy_from_slice(&(body_len as u32).to_le_bytes());
    header
}

/// Fills `out` with the parts of `all` not yet written (`skip` bytes are), as many as fit;
/// returns how many it filled.
fn unwritten<'a>(all: &[&'a [u8]], mut skip: usize, out: &mut [IoSlice<'a>]) -> usize {
    let mut n = 0;
    for part in all {
        if skip >= part.len() {
            skip -= part.len();
        } else {
            out[n] = IoSlice::new(&part[skip..]);
            skip = 0;
            n += 1;
            if n == out.len() {
                break; // the rest go in the next call
            }
        }
    }
    n
}

/// Reads fixed-layout little-endian fields out of a message body, with typed errors.
pub struct Fields<'a> {
    body: &'a [u8],
    at: usize,
    peer: &'a str,
}

impl<'a> Fields<'a> {
    /// Starts reading `body` received from `peer`.
    pub fn new(body: &'a [u8], peer: &'a str) -> Fields<'a> {
        Fields { body, at: 0, peer }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], VerbsError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.body.len())
            .ok_or_else(|| VerbsError::Protocol {
                peer: self.peer.to_string(),
                what: format!("message body of {} bytes is too short", self.body.len()),
            })?;
        let s = &self.body[self.at..end];
        self.at = end;
        Ok(s)
    }

    /// Next u8.
    pub fn u8(&mut self) -> Result<u8, VerbsError> {
        Ok(self.take(1)?[0])
    }

    /// Next u32.
    pub fn u32(&mut self) -> Result<u32, VerbsError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    /// Next u64.
    pub fn u64(&mut self) -> Result<u64, VerbsError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    /// The rest of the body.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.body[self.at..];
        self.at = self.body.len();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn messages_cross_and_oversize_is_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut a = Conn::new(a, "a".into());
        let mut b = Conn::new(b, "b".into());
        assert!(b.try_recv().unwrap().is_none());
        a.send(7, &[b"he", b"", b"llo"]).unwrap();
        let (tag, body) = b.recv().unwrap();
        assert_eq!((tag, body.as_slice()), (7, &b"hello"[..]));
        let mut raw = a.stream;
        raw.write_all(&[1, 0xff, 0xff, 0xff, 0xff]).unwrap();
        assert!(matches!(b.try_recv(), Err(VerbsError::Protocol { .. })));
        drop(raw);
        let (_, c) = UnixStream::pair().unwrap();
        let mut c = Conn::new(c, "c".into());
        assert!(matches!(c.try_recv(), Err(VerbsError::Disconnected { .. })));
    }

    /// Body `i`: a length and bytes that tell messages apart.
    fn body_of(i: usize) -> Vec<u8> {
        vec![i as u8; (i * 37) % 3001]
    }

    #[test]
    fn many_messages_cross_the_buffer_end_in_order_and_a_reused_body_keeps_its_capacity() {
        let (a, b) = UnixStream::pair().unwrap();
        let sender = std::thread::spawn(move || {
            let mut a = Conn::new(a, "a".into());
            for i in 0..5_000 {
                let body = body_of(i);
                let (x, y) = body.split_at(body.len() / 2);
                a.send(i as u8, &[x, y]).unwrap();
            }
        });
        let mut b = Conn::new(b, "b".into());
        let mut body = Vec::with_capacity(4096);
        let mut i = 0;
        while i < 5_000 {
            match b.try_recv_into(&mut body).unwrap() {
                Some(tag) => {
                    assert_eq!((tag, &body), (i as u8, &body_of(i)), "message {i}");
                    i += 1;
                }
                None => std::thread::yield_now(),
            }
        }
        sender.join().unwrap();
        assert_eq!(
            body.capacity(),
            4096,
            "the body buffer was reused, never regrown"
        );
        assert_eq!(
            b.inbuf.len(),
            RECV_BUFFER_BYTES,
            "small messages never grow the buffer"
        );
    }

    #[test]
    fn a_message_larger_than_the_buffer_grows_it_and_it_shrinks_back_once_drained() {
        let (a, b) = UnixStream::pair().unwrap();
        let big: Vec<u8> = (0..(5 * RECV_BUFFER_BYTES / 2))
            .map(|i| (i % 251) as u8)
            .collect();
        let expected = big.clone();
        let sender = std::thread::spawn(move || {
            let mut a = Conn::new(a, "a".into());
            let parts: Vec<&[u8]> = big.chunks(big.len() / (SEND_PARTS + 3)).collect();
            a.send(9, &parts).unwrap(); // more parts than `send` takes on the stack
            a.send(10, &[b"after"]).unwrap();
        });
        let mut b = Conn::new(b, "b".into());
        let (tag, body) = b.recv().unwrap();
        assert_eq!(tag, 9);
        assert!(body == expected, "large body intact");
        assert_eq!(b.recv().unwrap(), (10, b"after".to_vec()));
        sender.join().unwrap();
        assert_eq!(b.inbuf.len(), RECV_BUFFER_BYTES, "shrunk back once drained");
    }

    #[test]
    fn a_reused_body_buffer_gives_back_a_large_message_s_capacity_at_the_next_receive() {
        let (a, b) = UnixStream::pair().unwrap();
        let sender = std::thread::spawn(move || {
            let mut a = Conn::new(a, "a".into());
            a.send(9, &[&vec![7u8; 3 * RECV_BUFFER_BYTES]]).unwrap();
            a.send(10, &[b"small"]).unwrap();
        });
        let mut b = Conn::new(b, "b".into());
        let mut body = Vec::new();
        let mut next = |body: &mut Vec<u8>| loop {
            if let Some(tag) = b.try_recv_into(body).unwrap() {
                return tag;
            }
        };
        assert_eq!(next(&mut body), 9);
        assert!(body.capacity() >= 3 * RECV_BUFFER_BYTES);
        assert_eq!(next(&mut body), 10);
        assert_eq!(body, b"small");
        assert!(
            body.capacity() <= RECV_BUFFER_BYTES,
            "the large capacity was given back"
        );
        sender.join().unwrap();
    }

    #[test]
    fn fields_refuse_short_bodies() {
        let mut f = Fields::new(&[1, 2, 3], "p");
        assert_eq!(f.u8().unwrap(), 1);
        assert!(matches!(f.u32(), Err(VerbsError::Protocol { .. })));
    }

    #[test]
    fn queued_messages_wait_in_order_past_a_full_socket_and_new_ones_are_shed_while_much_waits() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut a = Conn::new(a, "a".into());
        let mut b = Conn::new(b, "b".into());
        let big = vec![0x5a; 6 << 20]; // more than the socket holds, and than the shed mark
        a.queue(1, &[b"first"]).unwrap();
        a.queue(2, &[&big]).unwrap();
        let waiting = a.queued_bytes();
        assert!(waiting > OUTBOX_SHED_BYTES, "the socket took the whole 6 MiB at once: {waiting}");
        a.queue(3, &[b"shed"]).unwrap(); // neither blocks nor waits: dropped
        assert_eq!(a.shed(), 1);
        let mut got = Vec::new();
        while got.len() < 2 {
            a.flush().unwrap();
            if let Some((tag, body)) = b.try_recv().unwrap() {
                got.push((tag, body.len()));
            }
        }
        assert!(a.flush().unwrap(), "all written once the peer read");
        a.queue(4, &[b"after"]).unwrap();
        let (tag, body) = b.recv().unwrap();
        assert_eq!(got, vec![(1, 5), (2, 6 << 20)]);
        assert_eq!((tag, body.as_slice()), (4, &b"after"[..]), "the shed message never arrives");
    }
}

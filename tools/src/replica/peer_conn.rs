//! An inbound connection from another replica, read by a client I/O thread beside its clients:
//! whole frames are decoded and posted to the core's inbox, and the I/O thread then runs the core
//! if it is free (`Inbox::serve`). On the leader that puts a peer's acknowledgement and the
//! client's answer on the same thread, so a commit's reply needs no hand-off between threads.

use super::listener::ConnSlot;
use super::session::ConnResponder;
use decree_engine::codec::{decode_frame, frame_len, FRAME_HEADER_BYTES};
use decree_engine::runtime::{Event, Inbox};
use mio::net::TcpStream;
use std::io::{ErrorKind, Read};

/// Read buffer of a peer connection; grows to hold one whole frame when a larger one arrives.
const PEER_READ_BYTES: usize = 256 << 10;

/// A replica's inbound connection.
pub struct PeerConn {
    /// The non-blocking socket, registered with the I/O thread's poll.
    pub stream: TcpStream,
    /// The replica it authenticated as.
    pub peer: u32,
    buf: Vec<u8>,
    filled: usize,
    _slot: ConnSlot,
}

impl PeerConn {
    /// Wraps an authenticated connection from replica `peer`.
    pub fn new(stream: TcpStream, peer: u32, slot: ConnSlot) -> Self {
        PeerConn { stream, peer, buf: vec![0; PEER_READ_BYTES], filled: 0, _slot: slot }
    }

    /// Reads until the socket would block, posting every whole frame to `inbox` (a full inbox
    /// drops the message: the sender retransmits on its next heartbeat). `peer_closed`: the
    /// readiness event also reported the peer's FIN, which an edge-triggered poll will not report
    /// again, so the socket is read to its end. Err: close the connection, for the reason given.
    pub fn read(&mut self, self_id: u32, inbox: &Inbox<ConnResponder>, peer_closed: bool) -> Result<(), String> {
        loop {
            let space = self.buf.len() - self.filled;
            match self.stream.read(&mut self.buf[self.filled..]) {
                Ok(0) => return Err("peer disconnected".into()),
                Ok(bytes) => {
                    self.filled += bytes;
                    self.post_frames(self_id, inbox)?;
                    // A short read took everything queued: bytes arriving later raise a new edge,
                    // so the read that would only say WouldBlock (a syscall per message) is skipped.
                    if bytes < space && !peer_closed {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Posts the whole frames buffered, keeps the partial one at the front of the buffer, and
    /// makes room for all of it.
    fn post_frames(&mut self, self_id: u32, inbox: &Inbox<ConnResponder>) -> Result<(), String> {
        let mut at = 0;
        let mut next_len = None;
        while self.filled - at >= FRAME_HEADER_BYTES {
            let total = frame_len(&self.buf[at..self.filled]).map_err(|e| format!("bad frame: {e}"))?;
            if self.filled - at < total {
                next_len = Some(total);
                break;
            }
            let (envelope, _) = decode_frame(&self.buf[at..at + total]).map_err(|e| format!("bad frame: {e}"))?;
            if envelope.from.0 != self.peer || envelope.to.0 != self_id {
                return Err(format!("misaddressed envelope from {} to {}", envelope.from, envelope.to));
            }
            let _ = inbox.post(Event::Peer(envelope));
            at += total;
        }
        self.buf.copy_within(at..self.filled, 0);
        self.filled -= at;
        if let Some(total) = next_len.filter(|&total| total > self.buf.len()) {
            self.buf.resize(total, 0);
        } else if next_len.is_none() && self.buf.len() > PEER_READ_BYTES && self.filled <= PEER_READ_BYTES {
            // A large frame is through: give its room back.
            self.buf.truncate(PEER_READ_BYTES);
            self.buf.shrink_to_fit();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::Context;
    use decree_engine::codec::encode_frame;
    use decree_engine::membership::Membership;
    use decree_engine::message::{Envelope, Heartbeat, Message, SnapshotChunk};
    use decree_engine::types::{Ballot, ReplicaId};
    use std::io::Write;
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    const ME: u32 = 1;
    const PEER: u32 = 2;

    fn heartbeat(from: u32, to: u32, round: u64) -> Envelope {
        let msg = Message::Heartbeat(Heartbeat { ballot: Ballot::ZERO, commit: 0, round });
        Envelope { from: ReplicaId(from), to: ReplicaId(to), msg }
    }

    fn big_chunk(bytes: usize) -> Envelope {
        let msg = Message::Snapshot(SnapshotChunk {
            ballot: Ballot::ZERO,
            slot: 1,
            membership: Membership::new(vec![ReplicaId(ME), ReplicaId(PEER)]),
            config_slot: None,
            total_bytes: bytes as u64,
            checksum: 0,
            offset: 0,
            data: bytes::Bytes::from(vec![3u8; bytes]),
        });
        Envelope { from: ReplicaId(PEER), to: ReplicaId(ME), msg }
    }

    /// A peer connection over loopback, the sending end, and the inbox it posts to.
    fn connected() -> (PeerConn, std::net::TcpStream, Arc<Context>) {
        let ctx = Context::for_test(ME, 1 << 10, 1);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let sender = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (receiver, _) = listener.accept().unwrap();
        receiver.set_nonblocking(true).unwrap();
        let conn = PeerConn::new(TcpStream::from_std(receiver), PEER, ConnSlot::new(ctx.clone()));
        (conn, sender, ctx)
    }

    /// Reads until `count` envelopes were posted (or fails after 5 s); returns them.
    fn read_posted(conn: &mut PeerConn, ctx: &Context, count: usize) -> Vec<Envelope> {
        let mut posted = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while posted.len() < count {
            conn.read(ME, &ctx.inbox, false).unwrap();
            while let Some(event) = ctx.inbox.pop() {
                let Event::Peer(envelope) = event else { panic!("not a peer event") };
                posted.push(envelope);
            }
            assert!(Instant::now() < deadline, "{} of {count} envelopes posted", posted.len());
            std::thread::sleep(Duration::from_millis(1));
        }
        posted
    }

    #[test]
    fn frames_split_across_reads_and_larger_than_the_buffer_arrive_whole_in_order() {
        let (mut conn, mut sender, ctx) = connected();
        let mut bytes = Vec::new();
        encode_frame(&heartbeat(PEER, ME, 1), &mut bytes);
        encode_frame(&big_chunk(3 * PEER_READ_BYTES), &mut bytes);
        encode_frame(&heartbeat(PEER, ME, 2), &mut bytes);
        // Dribbled in pieces that cut headers and payloads, with reads in between.
        for piece in bytes.chunks(7_001) {
            sender.write_all(piece).unwrap();
            conn.read(ME, &ctx.inbox, false).unwrap();
        }
        let posted = read_posted(&mut conn, &ctx, 3);
        assert_eq!(posted[0], heartbeat(PEER, ME, 1));
        assert_eq!(posted[1], big_chunk(3 * PEER_READ_BYTES));
        assert_eq!(posted[2], heartbeat(PEER, ME, 2));
        assert_eq!(conn.buf.len(), PEER_READ_BYTES, "the large frame's room was given back");
    }

    #[test]
    fn a_misaddressed_envelope_or_garbage_closes_the_connection() {
        let (mut conn, mut sender, ctx) = connected();
        let mut bytes = Vec::new();
        encode_frame(&heartbeat(3, ME, 1), &mut bytes);
        sender.write_all(&bytes).unwrap();
        let why = wait_for_error(&mut conn, &ctx);
        assert!(why.contains("misaddressed"), "{why}");
        assert!(ctx.inbox.is_empty());

        let (mut conn, mut sender, ctx) = connected();
        sender.write_all(&[0xAB; 64]).unwrap();
        let why = wait_for_error(&mut conn, &ctx);
        assert!(why.contains("bad frame"), "{why}");

        let (mut conn, sender, ctx) = connected();
        drop(sender);
        assert_eq!(wait_for_error(&mut conn, &ctx), "peer disconnected");
    }

    fn wait_for_error(conn: &mut PeerConn, ctx: &Context) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Err(why) = conn.read(ME, &ctx.inbox, false) {
                return why;
            }
            assert!(Instant::now() < deadline, "the connection was never refused");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

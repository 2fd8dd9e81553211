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
    /// drops the message: the sender retransmits on its next heartbeat). Err: close the
    /// connection, for the reason given.
    pub fn read(&mut self, self_id: u32, inbox: &Inbox<ConnResponder>) -> Result<(), String> {
        loop {
            match self.stream.read(&mut self.buf[self.filled..]) {
                Ok(0) => return Err("peer disconnected".into()),
                Ok(bytes) => {
                    self.filled += bytes;
                    self.post_frames(self_id, inbox)?;
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

//! One authenticated client connection as a state machine without a socket: bytes read go into
//! its read buffer, frames are decoded from there and turned into core-thread events; responses
//! are encoded straight into its write buffer, which the I/O thread (`io_thread.rs`) drains into
//! the socket. Both buffers are allocated when the connection arrives and reused until it closes.
//! A refused frame (malformed, oversize, unknown version) gets an error frame and the connection
//! is closed; other connections are untouched.

use super::io_thread::{ConnKey, IoShared};
use decree_engine::chunk_arena::ChunkArena;
use decree_verbs::outbox::Outbox;
use super::reply_frame;
use crate::wire::{self, ClientFrame, ErrorCode, StatusView, WireError, CLIENT_HEADER_BYTES};
use decree_engine::runtime::{Event, Inbox, MembershipChange, Responder, Response};
use decree_engine::types::{ClientId, ReplicaId, Request};
use std::collections::HashMap;
use std::sync::Arc;

/// Read buffer per connection; a larger frame (up to the 1 MiB payload limit) grows it once.
pub const READ_BUFFER_BYTES: usize = 64 << 10;
/// Write buffer capacity allocated per connection.
pub const WRITE_BUFFER_BYTES: usize = 64 << 10;
/// Unsent bytes at which further responses to the connection are dropped: a client that does not
/// read loses its own overflow (it retries after its attempt timeout), nobody else's.
pub const WRITE_BACKLOG_LIMIT_BYTES: usize = 1 << 20;

/// Routes core-thread responses to one connection: into its I/O thread's answer ring, then wakes
/// that thread if it sleeps. Lock-free; a full ring drops the answer (the client retries).
#[derive(Clone)]
pub struct ConnResponder {
    io: Arc<IoShared>,
    conn: ConnKey,
}

impl ConnResponder {
    /// Answers for connection `conn` of the I/O thread sharing `io`.
    pub fn new(io: Arc<IoShared>, conn: ConnKey) -> Self {
        ConnResponder { io, conn }
    }
}

impl Responder for ConnResponder {
    fn respond(&self, request_id: u64, response: Response) {
        self.io.answer(self.conn, request_id, response);
    }
}

/// A connection's buffers and framing state.
pub struct Session {
    /// Always `len() == capacity`; bytes `read_start..read_end` are received, not yet decoded.
    read: Vec<u8>,
    read_start: usize,
    read_end: usize,
    /// Encoded answers not yet sent.
    write: Outbox,
    /// Responses dropped because the client did not read.
    dropped: u64,
}

impl Default for Session {
    fn default() -> Self {
        Session::new()
    }
}

impl Session {
    /// A session with its buffers allocated.
    pub fn new() -> Self {
        Session {
            read: vec![0; READ_BUFFER_BYTES],
            read_start: 0,
            read_end: 0,
            write: Outbox::with_capacity(WRITE_BUFFER_BYTES),
            dropped: 0,
        }
    }

    /// Free space to read socket bytes into (never empty); report what was read with `received`.
    pub fn read_space(&mut self) -> &mut [u8] {
        if self.read_start == self.read_end {
            (self.read_start, self.read_end) = (0, 0);
            // A large frame grew the buffer; once it is consumed, give the memory back.
            if self.read.len() > READ_BUFFER_BYTES {
                self.read.truncate(READ_BUFFER_BYTES);
                self.read.shrink_to_fit();
            }
        } else if self.read_end == self.read.len() {
            self.compact_read();
        }
        assert!(self.read_end < self.read.len(), "invariant: a session always has read space");
        &mut self.read[self.read_end..]
    }

    /// `bytes` were read into the start of `read_space()`.
    pub fn received(&mut self, bytes: usize) {
        assert!(self.read_end + bytes <= self.read.len(), "contract: received more than read_space offered");
        self.read_end += bytes;
    }

    fn compact_read(&mut self) {
        self.read.copy_within(self.read_start..self.read_end, 0);
        (self.read_start, self.read_end) = (0, self.read_end - self.read_start);
    }

    /// The next complete frame, if one has arrived, its op bytes carved from `ops`. An `Err` means
    /// the connection must be closed after an error frame; the header is checked before the buffer
    /// grows for a large payload.
    pub fn next_frame(&mut self, ops: &mut ChunkArena) -> Option<Result<ClientFrame, WireError>> {
        let available = self.read_end - self.read_start;
        if available < CLIENT_HEADER_BYTES {
            return None;
        }
        let header: &[u8; CLIENT_HEADER_BYTES] =
            self.read[self.read_start..self.read_start + CLIENT_HEADER_BYTES].try_into().expect("header bytes");
        let (payload_bytes, crc) = match wire::decode_header(header) {
            Ok(parsed) => parsed,
            Err(error) => return Some(Err(error)),
        };
        let total = CLIENT_HEADER_BYTES + payload_bytes;
        if available < total {
            if self.read_start + total > self.read.len() {
                self.compact_read();
                if total > self.read.len() {
                    self.read.resize(total, 0);
                }
            }
            return None;
        }
        let payload = &self.read[self.read_start + CLIENT_HEADER_BYTES..self.read_start + total];
        let frame =
            wire::decode_payload::<ClientFrame<&[u8]>>(payload, crc).map(|frame| frame.map_op(|op| ops.carve(op)));
        self.read_start += total;
        Some(frame)
    }

    /// Encodes the answer to `request_id`; false (and counted) when the client's unsent backlog is
    /// at its limit and the answer is dropped.
    pub fn push_response(&mut self, request_id: u64, response: &Response, members: &HashMap<u32, String>) -> bool {
        if self.unsent().len() >= WRITE_BACKLOG_LIMIT_BYTES {
            self.dropped += 1;
            return false;
        }
        reply_frame::encode_response(request_id, response, members, self.write.append());
        true
    }

    /// Encodes an error frame refusing the last frame.
    pub fn push_error(&mut self, code: ErrorCode, message: &str) {
        reply_frame::encode_error(code, message, self.write.append());
    }

    /// Encoded bytes not yet written to the socket.
    pub fn unsent(&self) -> &[u8] {
        self.write.unwritten()
    }

    /// `bytes` of `unsent()` reached the socket. A backlog grew the buffer (up to the 1 MiB
    /// limit); drained, it shrinks back.
    pub fn sent(&mut self, bytes: usize) {
        self.write.written(bytes);
    }

    /// Responses dropped so far because the client did not read.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// Turns a decoded frame into a core-thread event. Returns an answer to send at once instead
/// (the inbox is full, or the request is refused here), else None.
pub fn dispatch(
    frame: ClientFrame,
    reply_to: &ConnResponder,
    inbox: &Inbox<ConnResponder>,
    members: &HashMap<u32, String>,
) -> Option<(u64, Response)> {
    let (request_id, event) = match frame {
        ClientFrame::Request { request_id, client, seq, op } => {
            let request = Request { client: ClientId(client), seq, op };
            (request_id, Event::Request { request, request_id, reply_to: reply_to.clone() })
        }
        ClientFrame::TransferLeadership { request_id, to } => {
            (request_id, Event::TransferLeadership { to: to.map(ReplicaId), request_id, reply_to: reply_to.clone() })
        }
        ClientFrame::StaleRead { request_id, client, seq, op, min_slot } => {
            let request = Request { client: ClientId(client), seq, op };
            (request_id, Event::FastRead { request, min_slot, request_id, reply_to: reply_to.clone() })
        }
        ClientFrame::ChangeMembership { request_id, change } => {
            let id = change.replica();
            // The leader must be able to reach a replica it adds: its address comes from this config.
            if !matches!(change, MembershipChange::Remove(_)) && !members.contains_key(&id.0) {
                let detail = format!(
                    "replica {id} has no address in this replica's [[members]]; add it to every replica's config and restart them"
                );
                return Some((request_id, Response::Admin { ok: false, detail, leader: None, slot: None }));
            }
            (request_id, Event::ChangeMembership { change, request_id, reply_to: reply_to.clone() })
        }
        ClientFrame::Checkpoint { request_id } => {
            (request_id, Event::Checkpoint { request_id, reply_to: reply_to.clone() })
        }
        ClientFrame::Status { request_id } => (request_id, Event::Status { request_id, reply_to: reply_to.clone() }),
    };
    match inbox.post(event) {
        Ok(()) => None,
        Err(_) => Some((request_id, Response::Busy)),
    }
}

/// A replica's status as clients see it.
pub fn status_view(status: &decree_engine::runtime::NodeStatus) -> StatusView {
    StatusView {
        id: status.core.id.0,
        leading: status.core.leading,
        leader: status.core.leader.map(|l| l.0),
        ballot: status.core.promised.to_string(),
        commit: status.core.commit,
        applied: status.core.applied,
        log_end: status.core.log_end,
        executed: status.executed,
        log_bytes: status.log_bytes,
        voters: status.core.membership.voters().iter().map(|v| v.0).collect(),
        learners: status.core.membership.learners().iter().map(|l| l.0).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::op_arena::op_arena;
    use bytes::Bytes;

    fn request(request_id: u64, op: &'static [u8]) -> Vec<u8> {
        let mut out = Vec::new();
        wire::encode(
            &ClientFrame::Request { request_id, client: 1, seq: request_id, op: Bytes::from_static(op) },
            &mut out,
        );
        out
    }

    fn feed(session: &mut Session, mut bytes: &[u8], chunk: usize) -> Vec<Result<ClientFrame, WireError>> {
        let mut frames = Vec::new();
        let mut ops = op_arena();
        while !bytes.is_empty() {
            let space = session.read_space();
            let n = chunk.min(space.len()).min(bytes.len());
            space[..n].copy_from_slice(&bytes[..n]);
            session.received(n);
            bytes = &bytes[n..];
            while let Some(frame) = session.next_frame(&mut ops) {
                let refused = frame.is_err();
                frames.push(frame);
                if refused {
                    return frames; // the connection closes after a refused frame
                }
            }
        }
        frames
    }

    #[test]
    fn frames_split_anywhere_decode_in_order() {
        let mut stream = Vec::new();
        for id in 0..50 {
            stream.extend(request(id, b"some operation bytes"));
        }
        for chunk in [1, 7, 16, 4096] {
            let frames = feed(&mut Session::new(), &stream, chunk);
            let ids: Vec<u64> = frames
                .into_iter()
                .map(|f| match f.unwrap() {
                    ClientFrame::Request { request_id, .. } => request_id,
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(ids, (0..50).collect::<Vec<_>>(), "chunk {chunk}");
        }
    }

    #[test]
    fn a_frame_larger_than_the_buffer_grows_it_and_decodes() {
        let op = vec![7u8; 3 * READ_BUFFER_BYTES];
        let mut stream = Vec::new();
        wire::encode(
            &ClientFrame::Request { request_id: 1, client: 1, seq: 1, op: Bytes::from(op.clone()) },
            &mut stream,
        );
        stream.extend(request(2, b"after"));
        let mut session = Session::new();
        let frames = feed(&mut session, &stream, 10_000);
        assert!(matches!(&frames[0], Ok(ClientFrame::Request { op: got, .. }) if got[..] == op[..]));
        assert!(matches!(&frames[1], Ok(ClientFrame::Request { request_id: 2, .. })));
        // The large frame grew the buffer; everything is consumed, so reads use the normal size again.
        assert!(!session.read_space().is_empty());
        assert_eq!(session.read.len(), READ_BUFFER_BYTES);
    }

    #[test]
    fn an_oversize_header_is_refused_before_the_buffer_grows() {
        let mut frame = request(1, b"x");
        frame[8..12].copy_from_slice(&(64u32 << 20).to_le_bytes());
        let mut session = Session::new();
        let frames = feed(&mut session, &frame[..CLIENT_HEADER_BYTES], 64);
        assert!(matches!(frames[0], Err(WireError::Oversize(_))));
        assert_eq!(session.read.len(), READ_BUFFER_BYTES);
    }

    #[test]
    fn a_client_that_does_not_read_loses_answers_past_the_backlog_limit() {
        let mut session = Session::new();
        let payload = Response::Reply { seq: 1, payload: Bytes::from(vec![0u8; 1000]) };
        let members = HashMap::new();
        let mut accepted = 0;
        for id in 0..5_000 {
            accepted += u64::from(session.push_response(id, &payload, &members));
        }
        assert!(session.unsent().len() >= WRITE_BACKLOG_LIMIT_BYTES);
        assert!(session.unsent().len() < WRITE_BACKLOG_LIMIT_BYTES + 1100);
        assert_eq!(accepted + session.dropped(), 5_000);
        assert!(session.dropped() > 0);
        // Once it reads, answers flow again.
        let all = session.unsent().len();
        session.sent(all);
        assert!(session.write.capacity() <= WRITE_BUFFER_BYTES, "the drained backlog's memory is given back");
        assert!(session.push_response(9, &payload, &members));
    }
}

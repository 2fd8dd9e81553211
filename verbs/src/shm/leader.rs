//! The leader's side of an shm link: stores into the follower's mapping under the fence.

use super::header::{Header, HEADER_BYTES};
use super::socket_path;
use crate::conn::Conn;
use crate::control::{decode_control, TAG_CONTROL, TAG_HELLO};
use crate::durability::log_mode;
use crate::mapping::Mapping;
use crate::transport::{check_bounds, check_key};
use crate::{
    Durability, Gate, LeaderEvent, LeaderLink, LeaderToken, RemoteRegion, VerbsError, Write,
    WriteId,
};
use decree_engine::message::Envelope;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// A leader's connection to one follower's shared region.
pub struct ShmLeader {
    peer: String,
    token: LeaderToken,
    map: Mapping,
    conn: Conn<UnixStream>,
    durability: Durability,
    next_id: u64,
    done: Vec<LeaderEvent>,
    persisted_seen: u64,
    doorbell_seen: u64,
    polls: u64,
    /// A control message's body as received (reused).
    body: Vec<u8>,
}

impl ShmLeader {
    /// Maps the follower's region at `path` and introduces itself as `token` over the socket.
    /// `ReadAfterWrite` is refused: it is an RDMA mode.
    pub fn connect(
        path: &Path,
        token: LeaderToken,
        durability: Durability,
    ) -> Result<ShmLeader, VerbsError> {
        ShmLeader::connect_gated(path, token, durability, &Gate::default())
    }

    /// Like `connect`, proving the cluster secret to a gated follower first (`gate`).
    pub fn connect_gated(
        path: &Path,
        token: LeaderToken,
        durability: Durability,
        gate: &Gate,
    ) -> Result<ShmLeader, VerbsError> {
        if durability == Durability::ReadAfterWrite {
            return Err(VerbsError::Config(
                "shm supports follower-persists or volatile durability, not read-after-write"
                    .into(),
            ));
        }
        let peer = path.display().to_string();
        let map = Mapping::open_shared(path, HEADER_BYTES)?;
        Header::new(&map).validate(&peer)?;
        let sock = socket_path(path);
        let stream = UnixStream::connect(&sock)
            .map_err(|e| VerbsError::os("connect", sock.display().to_string(), e))?;
        let timeout = Some(Duration::from_secs(5));
        stream
            .set_write_timeout(timeout)
            .and_then(|_| stream.set_read_timeout(timeout))
            .map_err(|e| VerbsError::os("setsockopt", &peer, e))?;
        let mut stream = stream;
        gate.connect(&mut stream, &peer)?;
        let mut conn = Conn::new(stream, peer.clone());
        // The header already says the key and size: no reply to wait for, so a follower that
        // polls on the same thread as this connect cannot deadlock it.
        conn.send(TAG_HELLO, &[&token.0.to_le_bytes()])?;
        log_mode("shm", &peer, durability);
        Ok(ShmLeader {
            peer,
            token,
            map,
            conn,
            durability,
            next_id: 0,
            done: Vec::new(),
            persisted_seen: 0,
            doorbell_seen: 0,
            polls: 0,
            body: Vec::with_capacity(crate::control::CONTROL_BYTES_EXPECTED),
        })
    }

    fn store(&self, w: &Write<'_>) -> Result<(), VerbsError> {
        let header = Header::new(&self.map);
        check_key(&self.peer, w.key, header.key())?;
        check_bounds(&self.peer, w.offset, w.bytes.len(), header.data_len())?;
        header.begin_write(self.token, &self.peer)?;
        let ring_full = || VerbsError::QueueFull {
            what: "shm immediate ring (follower not polling)",
            capacity: super::header::IMM_SLOTS,
        };
        if w.imm.is_some() && header.imm_ring_full() {
            header.end_write(self.token);
            return Err(ring_full());
        }
        self.map.write_at(HEADER_BYTES + w.offset as usize, w.bytes);
        let queued = w.imm.is_none_or(|imm| header.push_imm(imm));
        header.end_write(self.token);
        if !queued {
            return Err(ring_full());
        }
        if w.imm.is_some() {
            header.wake(); // the follower learns of it from the immediate: wake it to look
        }
        Ok(())
    }
}

impl LeaderLink for ShmLeader {
    fn peer(&self) -> &str {
        &self.peer
    }

    fn remote(&self) -> RemoteRegion {
        let h = Header::new(&self.map);
        RemoteRegion {
            key: h.key(),
            len: h.data_len(),
        }
    }

    fn durability(&self) -> Durability {
        self.durability
    }

    fn post_write(&mut self, write: &Write<'_>) -> Result<WriteId, VerbsError> {
        self.store(write)?;
        let id = WriteId(self.next_id);
        self.next_id += 1;
        self.done.push(LeaderEvent::Completed {
            id,
            durable: self.durability.completion_is_durable(),
        });
        Ok(id)
    }

    fn send(&mut self, envelope: &Envelope) -> Result<(), VerbsError> {
        // Queued, not blocking: this thread also reads the follower's messages, and the
        // follower may be blocked on us (module docs of `outbox`).
        self.conn.queue_control(envelope)?;
        Header::new(&self.map).wake();
        Ok(())
    }

    fn queued_bytes(&self) -> usize {
        self.conn.queued_bytes()
    }

    fn poll(&mut self, out: &mut Vec<LeaderEvent>) -> Result<(), VerbsError> {
        let waiting = self.conn.queued_bytes();
        if waiting > 0 {
            self.conn.flush()?;
            if self.conn.queued_bytes() < waiting {
                Header::new(&self.map).wake(); // more of a message to read
            }
        }
        out.append(&mut self.done);
        let upto = Header::new(&self.map).persisted();
        if upto > self.persisted_seen {
            self.persisted_seen = upto;
            out.push(LeaderEvent::Persisted { upto });
        }
        // Read the socket when the follower rang (it sent something), and every 256th poll
        // anyway to notice a follower that went away.
        let doorbell = Header::new(&self.map).doorbell();
        self.polls += 1;
        if doorbell == self.doorbell_seen && self.polls % 256 != 0 {
            return Ok(());
        }
        self.doorbell_seen = doorbell;
        while let Some(tag) = self.conn.try_recv_into(&mut self.body)? {
            if tag != TAG_CONTROL {
                return Err(VerbsError::Protocol {
                    peer: self.peer.clone(),
                    what: format!("unexpected message tag {tag}"),
                });
            }
            out.push(LeaderEvent::Message(decode_control(
                &self.peer, &self.body,
            )?));
        }
        Ok(())
    }
}

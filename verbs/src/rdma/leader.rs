//! The leader's side: RDMA WRITE / WRITE_WITH_IMM into one follower's region.

use super::ffi::{Completion, Context, Cq, Pd, Qp, QpEndpoint, Registered, Source, ACCESS_LOCAL};
use super::handshake::{put_endpoint, Welcome};
use super::RdmaConfig;
use crate::acceptor::dial;
use crate::conn::{Conn, Fields};
use crate::control::{decode_control, TAG_ADOPTED, TAG_CONTROL, TAG_PERSISTED};
use crate::durability::log_mode;
use crate::mapping::Mapping;
use crate::transport::{check_bounds, check_key};
use crate::{
    Durability, LeaderEvent, LeaderLink, LeaderToken, RemoteRegion, VerbsError, Write, WriteId,
};
use decree_engine::message::Envelope;
use rdma_sys::ibv_wc_status;
use std::collections::VecDeque;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

/// wr_id bit marking the READ of read-after-write.
const WR_READ: u64 = 1 << 62;
/// wr_id bit marking a zero-length flush write (selective signaling's tail).
const WR_FLUSH: u64 = 1 << 61;

struct Outstanding {
    id: u64,
    posted: Instant,
    /// Local checks (key, bounds) passed, so a remote access error means "fenced".
    checked: bool,
}

/// The mode that can actually hold: a READ after a WRITE proves durability only when the
/// follower's region is persistent memory; over DRAM it proves arrival, so the follower must
/// persist and acknowledge instead. Detected from the follower's welcome and logged.
fn effective_durability(configured: Durability, remote_persistent: bool, peer: &str) -> Durability {
    if configured == Durability::ReadAfterWrite && !remote_persistent {
        tracing::warn!(
            peer,
            "read-after-write configured, but the follower's region is not persistent memory: using follower-persists"
        );
        return Durability::FollowerPersists;
    }
    configured
}

/// A leader's RC connection to one follower.
pub struct RdmaLeader {
    peer: String,
    token: LeaderToken,
    cfg: RdmaConfig,
    remote: Welcome,
    qp: Qp,
    cq: Arc<Cq>,
    staging: Registered,
    scratch: Registered,
    conn: Conn<TcpStream>,
    next_id: u64,
    outstanding: VecDeque<Outstanding>,
    /// The last posted write went unsignaled and nothing signaled follows it yet.
    tail_unsignaled: bool,
    broken: Option<String>,
    /// The follower's polling thread adopted this connection (`TAG_ADOPTED`): before that, a
    /// one-sided write is refused here as fenced and goes as a control message instead.
    adopted: bool,
    ready: Vec<LeaderEvent>,
    polls: u64,
    /// Completions of one CQ poll (cleared and refilled).
    completions: Vec<Completion>,
    /// A control message's body as received (reused).
    body: Vec<u8>,
    _pd: Arc<Pd>,
}

impl RdmaLeader {
    /// Connects to the follower whose side channel is at `addr`, as leader `token`.
    pub fn connect(
        addr: SocketAddr,
        token: LeaderToken,
        mut cfg: RdmaConfig,
    ) -> Result<RdmaLeader, VerbsError> {
        assert!(
            cfg.max_outstanding > 0 && cfg.signal_every > 0,
            "invariant: positive queue depth and signal interval"
        );
        let peer = addr.to_string();
        let ctx = Context::open(&cfg.device)?;
        let pd = Pd::new(&ctx)?;
        let depth = cfg.max_outstanding as u32 * 2 + 2; // a READ per write in read-after-write, plus a flush
        let cq = Cq::new(&ctx, depth as i32 * 2)?;
        let qp = Qp::new(&pd, &cq, depth, 1, cfg.max_inline)?;
        let staging = Registered::new(
            &pd,
            Mapping::anonymous(cfg.max_outstanding * cfg.staging_slot_bytes)?,
            ACCESS_LOCAL,
        )?;
        // Where the READs of read-after-write land; their bytes are never looked at.
        let scratch = Registered::new(&pd, Mapping::anonymous(4096)?, ACCESS_LOCAL)?;
        let (lid, mtu) = ctx.port()?;
        let local = QpEndpoint {
            qpn: qp.qpn(),
            psn: fastrand::u32(..0x00ff_ffff),
            lid,
            gid: ctx.gid(cfg.gid_index)?,
        };

        let mut hello = token.0.to_le_bytes().to_vec();
        put_endpoint(&mut hello, &local);
        let (conn, body) = dial(addr, &hello, &cfg.gate)?;
        let remote = Welcome::decode(&body, &peer)?;
        qp.connect(local.psn, &remote.qp, cfg.gid_index, mtu, 0)?;
        cfg.durability = effective_durability(cfg.durability, remote.persistent, &peer);
        log_mode("rdma", &peer, cfg.durability);
        if cfg.durability != Durability::Volatile {
            tracing::info!(peer = %peer, "RDMA FLUSH is not offered by this verbs API; using {}", cfg.durability);
        }
        let max_outstanding = cfg.max_outstanding;
        Ok(RdmaLeader {
            peer,
            token,
            cfg,
            remote,
            qp,
            cq,
            staging,
            scratch,
            conn,
            next_id: 0,
            outstanding: VecDeque::with_capacity(max_outstanding),
            tail_unsignaled: false,
            broken: None,
            ready: Vec::with_capacity(max_outstanding),
            adopted: false,
            polls: 0,
            completions: Vec::with_capacity(super::ffi::COMPLETIONS_PER_POLL),
            body: Vec::with_capacity(crate::control::CONTROL_BYTES_EXPECTED),
            _pd: pd,
        })
    }

    /// Whether the follower adopted this connection: one-sided writes are posted only after
    /// (`poll` takes the follower's word in).
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// Posts without the local key and bounds checks, so a test can show the follower's NIC
    /// refusing a forged key. Not for production use.
    #[doc(hidden)]
    pub fn post_write_unchecked(&mut self, write: &Write<'_>) -> Result<WriteId, VerbsError> {
        self.post(write, false)
    }

    fn post(&mut self, w: &Write<'_>, checked: bool) -> Result<WriteId, VerbsError> {
        if let Some(reason) = &self.broken {
            return Err(VerbsError::Disconnected {
                peer: self.peer.clone(),
                reason: reason.clone(),
            });
        }
        if self.outstanding.len() >= self.cfg.max_outstanding {
            return Err(VerbsError::QueueFull {
                what: "rdma send queue",
                capacity: self.cfg.max_outstanding,
            });
        }
        let slot_bytes = self.cfg.staging_slot_bytes;
        if w.bytes.len() > slot_bytes {
            return Err(VerbsError::Config(format!("write of {} bytes exceeds the {slot_bytes}-byte staging slot: raise staging_slot_bytes or split the write", w.bytes.len())));
        }
        let id = self.next_id;
        let inline = !w.bytes.is_empty() && w.bytes.len() <= self.qp.max_inline as usize;
        let src = if inline {
            Source::Inline(w.bytes)
        } else {
            // Slot `id % max` is free: fewer than `max` writes are outstanding and they retire in order.
            let at = (id as usize % self.cfg.max_outstanding) * slot_bytes;
            self.staging.map().write_at(at, w.bytes);
            Source::Registered(&self.staging, at, w.bytes.len())
        };
        let raw = self.cfg.durability == Durability::ReadAfterWrite;
        let signaled = !raw && (id + 1) % u64::from(self.cfg.signal_every) == 0;
        self.qp
            .post_write(id, src, self.remote.addr + w.offset, w.key, w.imm, signaled)?;
        if raw {
            let len = w.bytes.len().clamp(1, 8);
            let at = w.offset.min(self.remote.len.saturating_sub(len as u64));
            self.qp.post_read(
                id | WR_READ,
                &self.scratch,
                0,
                len,
                self.remote.addr + at,
                w.key,
            )?;
        }
        self.tail_unsignaled = !signaled && !raw;
        self.next_id += 1;
        self.outstanding.push_back(Outstanding {
            id,
            posted: Instant::now(),
            checked,
        });
        Ok(WriteId(id))
    }

    /// Posts a zero-length signaled write so unsignaled writes at the tail complete.
    fn flush_tail(&mut self) -> Result<(), VerbsError> {
        let last = self.next_id - 1;
        self.qp.post_write(
            last | WR_FLUSH,
            Source::Nothing,
            self.remote.addr,
            self.remote.rkey,
            None,
            true,
        )?;
        self.tail_unsignaled = false;
        Ok(())
    }

    fn retire(&mut self, wc: &Completion) {
        let upto = wc.wr_id & !(WR_READ | WR_FLUSH);
        let ok = wc.status == ibv_wc_status::IBV_WC_SUCCESS;
        let durable = self.cfg.durability.completion_is_durable();
        if !ok && self.broken.is_none() {
            self.broken = Some(format!("work request failed: {}", wc.status_text()));
        }
        while self.outstanding.front().is_some_and(|o| o.id <= upto) {
            let o = self.outstanding.pop_front().unwrap();
            let id = WriteId(o.id);
            if ok {
                self.ready.push(LeaderEvent::Completed { id, durable });
            } else {
                self.ready.push(LeaderEvent::Failed {
                    id,
                    error: self.completion_error(wc, o.checked),
                });
            }
        }
    }

    fn completion_error(&self, wc: &Completion, checked: bool) -> VerbsError {
        let peer = self.peer.clone();
        match wc.status {
            // Key and range were checked here, so the follower's NIC refused the QP itself: its
            // access flags no longer permit remote writes (rxe reports that as an invalid request).
            ibv_wc_status::IBV_WC_REM_ACCESS_ERR | ibv_wc_status::IBV_WC_REM_INV_REQ_ERR
                if checked =>
            {
                VerbsError::Fenced {
                    peer,
                    token: self.token.0,
                }
            }
            ibv_wc_status::IBV_WC_REM_ACCESS_ERR => VerbsError::Protocol {
                peer,
                what: "follower's NIC refused the write (remote access error: wrong key or range)"
                    .into(),
            },
            ibv_wc_status::IBV_WC_RETRY_EXC_ERR => VerbsError::Disconnected {
                peer,
                reason: "transport retries exhausted: the follower is unreachable".into(),
            },
            _ => VerbsError::Disconnected {
                peer,
                reason: format!("work request failed: {}", wc.status_text()),
            },
        }
    }
}

impl LeaderLink for RdmaLeader {
    fn peer(&self) -> &str {
        &self.peer
    }

    fn remote(&self) -> RemoteRegion {
        RemoteRegion {
            key: self.remote.rkey,
            len: self.remote.len,
        }
    }

    fn durability(&self) -> Durability {
        self.cfg.durability
    }

    fn post_write(&mut self, w: &Write<'_>) -> Result<WriteId, VerbsError> {
        if !self.adopted {
            return Err(VerbsError::Fenced {
                peer: self.peer.clone(),
                token: self.token.0,
            });
        }
        check_key(&self.peer, w.key, self.remote.rkey)?;
        check_bounds(&self.peer, w.offset, w.bytes.len(), self.remote.len)?;
        self.post(w, true)
    }

    fn send(&mut self, envelope: &Envelope) -> Result<(), VerbsError> {
        // Queued, not blocking: this thread also reads the follower's messages (`outbox`).
        self.conn.queue_control(envelope)
    }

    fn queued_bytes(&self) -> usize {
        self.conn.queued_bytes()
    }

    fn poll(&mut self, out: &mut Vec<LeaderEvent>) -> Result<(), VerbsError> {
        self.conn.flush()?;
        if self.tail_unsignaled && self.broken.is_none() {
            self.flush_tail()?;
        }
        let mut completions = std::mem::take(&mut self.completions);
        completions.clear();
        let polled = self.cq.poll(&mut completions);
        for wc in &completions {
            self.retire(wc);
        }
        self.completions = completions;
        polled?;
        if let Some(oldest) = self.outstanding.front() {
            if oldest.posted.elapsed() > self.cfg.write_timeout {
                let timeout_ms = self.cfg.write_timeout.as_millis() as u64;
                let _ = self.qp.break_connection();
                self.broken = Some(format!("write {} timed out", oldest.id));
                for o in self.outstanding.drain(..) {
                    self.ready.push(LeaderEvent::Failed {
                        id: WriteId(o.id),
                        error: VerbsError::Timeout {
                            peer: self.peer.clone(),
                            what: format!("rdma write {}", o.id),
                            timeout_ms,
                        },
                    });
                }
            }
        }
        out.append(&mut self.ready);
        // The side channel costs a syscall: while writes are in flight, read it every 16th poll.
        self.polls += 1;
        if !self.outstanding.is_empty() && self.polls % 16 != 0 {
            return Ok(());
        }
        while let Some(tag) = self.conn.try_recv_into(&mut self.body)? {
            match tag {
                TAG_CONTROL => out.push(LeaderEvent::Message(decode_control(
                    &self.peer, &self.body,
                )?)),
                TAG_PERSISTED => out.push(LeaderEvent::Persisted {
                    upto: Fields::new(&self.body, &self.peer).u64()?,
                }),
                TAG_ADOPTED => self.adopted = true,
                _ => {
                    return Err(VerbsError::Protocol {
                        peer: self.peer.clone(),
                        what: format!("unexpected message tag {tag}"),
                    })
                }
            }
        }
        Ok(())
    }
}

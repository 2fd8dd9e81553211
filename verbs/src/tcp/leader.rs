//! The leader's side: writes and control messages on one connection, reconnecting with back-off.

use super::Backoff;
use crate::acceptor;
use crate::conn::{Conn, Fields};
use crate::control::*;
use crate::durability::log_mode;
use crate::transport::{check_bounds, check_key};
use crate::{
    Durability, LeaderEvent, LeaderLink, LeaderToken, RemoteRegion, VerbsError, Write, WriteId,
};
use decree_engine::message::Envelope;
use std::collections::VecDeque;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Settings of a TCP leader link.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// Remote durability mode (follower-persists or volatile).
    pub durability: Durability,
    /// A write not acknowledged within this fails, and the connection is dropped and redialled.
    pub write_timeout: Duration,
    /// Writes in flight at most.
    pub max_outstanding: usize,
    /// First reconnect delay; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
}

impl Default for TcpConfig {
    fn default() -> TcpConfig {
        TcpConfig {
            durability: Durability::FollowerPersists,
            write_timeout: Duration::from_secs(2),
            max_outstanding: 1024,
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_secs(1),
        }
    }
}

/// A leader's connection to one follower over TCP.
pub struct TcpLeader {
    addr: SocketAddr,
    peer: String,
    token: LeaderToken,
    cfg: TcpConfig,
    conn: Option<Conn<TcpStream>>,
    remote: RemoteRegion,
    next_id: u64,
    outstanding: VecDeque<(u64, Instant)>,
    backoff: Backoff,
    ready: Vec<LeaderEvent>,
}

fn dial(
    addr: SocketAddr,
    token: LeaderToken,
) -> Result<(Conn<TcpStream>, RemoteRegion), VerbsError> {
    let peer = addr.to_string();
    let (conn, body) = acceptor::dial(addr, &token.0.to_le_bytes(), &crate::Gate::default())?;
    let mut f = Fields::new(&body, &peer);
    let remote = RemoteRegion {
        key: f.u32()?,
        len: f.u64()?,
    };
    Ok((conn, remote))
}

/// The fixed part of a WRITE message: id, key, offset, imm flag, imm.
fn write_head(id: u64, w: &Write<'_>) -> [u8; 25] {
    let mut head = [0u8; 25];
    head[0..8].copy_from_slice(&id.to_le_bytes());
    head[8..12].copy_from_slice(&w.key.to_le_bytes());
    head[12..20].copy_from_slice(&w.offset.to_le_bytes());
    head[20] = u8::from(w.imm.is_some());
    head[21..25].copy_from_slice(&w.imm.unwrap_or(0).to_le_bytes());
    head
}

impl TcpLeader {
    /// Connects to the follower at `addr` as leader `token`.
    pub fn connect(
        addr: SocketAddr,
        token: LeaderToken,
        cfg: TcpConfig,
    ) -> Result<TcpLeader, VerbsError> {
        if cfg.durability == Durability::ReadAfterWrite {
            return Err(VerbsError::Config(
                "tcp supports follower-persists or volatile durability, not read-after-write"
                    .into(),
            ));
        }
        let (conn, remote) = dial(addr, token)?;
        let peer = addr.to_string();
        log_mode("tcp", &peer, cfg.durability);
        let backoff = Backoff::new(cfg.backoff_min, cfg.backoff_max);
        Ok(TcpLeader {
            addr,
            peer,
            token,
            cfg,
            conn: Some(conn),
            remote,
            next_id: 0,
            outstanding: VecDeque::new(),
            backoff,
            ready: Vec::new(),
        })
    }

    /// Whether the connection is up (it is redialled from `poll` when not).
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Drops the connection: every outstanding write fails with `why`.
    fn lose(&mut self, why: impl Fn() -> VerbsError) {
        if let Some(c) = self.conn.take() {
            let _ = c.stream().shutdown(std::net::Shutdown::Both);
        }
        for (id, _) in self.outstanding.drain(..) {
            self.ready.push(LeaderEvent::Failed {
                id: WriteId(id),
                error: why(),
            });
        }
        self.backoff.failed(Instant::now());
    }

    fn redial(&mut self) {
        let now = Instant::now();
        if self.conn.is_some() || !self.backoff.due(now) {
            return;
        }
        match dial(self.addr, self.token) {
            Ok((conn, remote)) => {
                if remote != self.remote {
                    tracing::warn!(peer = %self.peer, "follower's region changed across the reconnect (restarted?)");
                    self.remote = remote;
                }
                tracing::info!(peer = %self.peer, "tcp link reconnected");
                self.conn = Some(conn);
                self.backoff.reset();
            }
            Err(e) => {
                tracing::debug!(peer = %self.peer, error = %e, "reconnect failed");
                self.backoff.failed(now);
            }
        }
    }

    fn nack_error(&self, reason: u8, detail: u64) -> VerbsError {
        let peer = self.peer.clone();
        match reason {
            NACK_FENCED => VerbsError::Fenced {
                peer,
                token: self.token.0,
            },
            NACK_WRONG_KEY => VerbsError::WrongKey {
                peer,
                given: self.remote.key,
                expected: detail as u32,
            },
            NACK_OUT_OF_BOUNDS => VerbsError::OutOfBounds {
                peer,
                offset: 0,
                len: 0,
                region_len: detail,
            },
            _ => VerbsError::Protocol {
                peer,
                what: format!("unknown nack reason {reason}"),
            },
        }
    }

    fn handle(
        &mut self,
        tag: u8,
        body: &[u8],
        out: &mut Vec<LeaderEvent>,
    ) -> Result<(), VerbsError> {
        let mut f = Fields::new(body, &self.peer);
        match tag {
            TAG_COMPLETE | TAG_NACK => {
                let id = f.u64()?;
                let Some(pos) = self.outstanding.iter().position(|(o, _)| *o == id) else {
                    return Err(VerbsError::Protocol {
                        peer: self.peer.clone(),
                        what: format!("acknowledgement of unknown write {id}"),
                    });
                };
                self.outstanding.remove(pos);
                out.push(if tag == TAG_COMPLETE {
                    LeaderEvent::Completed {
                        id: WriteId(id),
                        durable: self.cfg.durability.completion_is_durable(),
                    }
                } else {
                    let (reason, detail) = (f.u8()?, f.u64()?);
                    LeaderEvent::Failed {
                        id: WriteId(id),
                        error: self.nack_error(reason, detail),
                    }
                });
            }
            TAG_PERSISTED => out.push(LeaderEvent::Persisted { upto: f.u64()? }),
            TAG_CONTROL => out.push(LeaderEvent::Message(decode_control(&self.peer, body)?)),
            _ => {
                return Err(VerbsError::Protocol {
                    peer: self.peer.clone(),
                    what: format!("unexpected message tag {tag}"),
                })
            }
        }
        Ok(())
    }

    fn conn(&mut self) -> Result<&mut Conn<TcpStream>, VerbsError> {
        let peer = self.peer.clone();
        self.conn.as_mut().ok_or(VerbsError::Disconnected {
            peer,
            reason: "reconnecting".into(),
        })
    }
}

impl LeaderLink for TcpLeader {
    fn peer(&self) -> &str {
        &self.peer
    }

    fn remote(&self) -> RemoteRegion {
        self.remote
    }

    fn durability(&self) -> Durability {
        self.cfg.durability
    }

    fn post_write(&mut self, w: &Write<'_>) -> Result<WriteId, VerbsError> {
        let mut ids = Vec::with_capacity(1);
        self.post_batch(std::slice::from_ref(w), &mut ids)?;
        Ok(ids[0])
    }

    fn post_batch(
        &mut self,
        writes: &[Write<'_>],
        ids: &mut Vec<WriteId>,
    ) -> Result<(), VerbsError> {
        // Check every write first: a batch goes on the wire whole or not at all.
        for w in writes {
            check_key(&self.peer, w.key, self.remote.key)?;
            check_bounds(&self.peer, w.offset, w.bytes.len(), self.remote.len)?;
        }
        if self.outstanding.len() + writes.len() > self.cfg.max_outstanding {
            return Err(VerbsError::QueueFull {
                what: "tcp write window",
                capacity: self.cfg.max_outstanding,
            });
        }
        let heads: Vec<[u8; 25]> = writes
            .iter()
            .enumerate()
            .map(|(i, w)| write_head(self.next_id + i as u64, w))
            .collect();
        let parts: Vec<[&[u8]; 2]> = heads
            .iter()
            .zip(writes)
            .map(|(h, w)| [&h[..], w.bytes])
            .collect();
        let messages: Vec<(u8, &[&[u8]])> = parts.iter().map(|p| (TAG_WRITE, &p[..])).collect();
        if let Err(e) = self.conn()?.send_many(&messages) {
            let peer = self.peer.clone();
            self.lose(|| VerbsError::Disconnected {
                peer: peer.clone(),
                reason: "connection lost".into(),
            });
            return Err(e);
        }
        let now = Instant::now();
        for _ in writes {
            self.outstanding.push_back((self.next_id, now));
            ids.push(WriteId(self.next_id));
            self.next_id += 1;
        }
        Ok(())
    }

    fn send(&mut self, envelope: &Envelope) -> Result<(), VerbsError> {
        let body = encode_control(envelope);
        let r = self.conn()?.send(TAG_CONTROL, &[&body]);
        if r.is_err() {
            let peer = self.peer.clone();
            self.lose(|| VerbsError::Disconnected {
                peer: peer.clone(),
                reason: "connection lost".into(),
            });
        }
        r
    }

    fn poll(&mut self, out: &mut Vec<LeaderEvent>) -> Result<(), VerbsError> {
        self.redial();
        let mut result = Ok(());
        while let Some(conn) = self.conn.as_mut() {
            match conn.try_recv() {
                Ok(None) => break,
                Ok(Some((tag, body))) => {
                    if let Err(e) = self.handle(tag, &body, out) {
                        let peer = self.peer.clone();
                        self.lose(|| VerbsError::Disconnected {
                            peer: peer.clone(),
                            reason: "dropped after a protocol error".into(),
                        });
                        result = Err(e);
                    }
                }
                Err(e) => {
                    let peer = self.peer.clone();
                    self.lose(|| VerbsError::Disconnected {
                        peer: peer.clone(),
                        reason: "connection lost".into(),
                    });
                    result = Err(e);
                }
            }
        }
        if let Some((id, posted)) = self.outstanding.front().copied() {
            if posted.elapsed() > self.cfg.write_timeout {
                let (peer, timeout_ms) =
                    (self.peer.clone(), self.cfg.write_timeout.as_millis() as u64);
                tracing::warn!(%peer, id, "write not acknowledged in time; redialling");
                self.lose(|| VerbsError::Timeout {
                    peer: peer.clone(),
                    what: "tcp write".into(),
                    timeout_ms,
                });
            }
        }
        out.append(&mut self.ready);
        result
    }
}

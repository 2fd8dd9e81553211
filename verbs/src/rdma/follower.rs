//! The follower's side: a registered region, one RC QP per connected leader, and the fence.

use super::ffi::{Context, Cq, Pd, Qp, QpEndpoint, Registered, ACCESS_REMOTE_RW};
use super::handshake::{get_endpoint, Welcome};
use super::RdmaConfig;
use crate::acceptor::{accept_until, listen, prepare, HANDSHAKE_TIMEOUT};
use crate::conn::{Conn, Fields};
use crate::control::{
    decode_control, encode_control, TAG_CONTROL, TAG_HELLO, TAG_PERSISTED, TAG_WELCOME,
};
use crate::mapping::Mapping;
use crate::{FollowerEvent, FollowerLink, LeaderToken, RemoteRegion, VerbsError};
use decree_engine::message::Envelope;
use rdma_sys::ibv_wc_opcode;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Receives kept posted per QP for WRITE_WITH_IMM.
const RECV_DEPTH: u32 = 128;

struct Peer {
    token: LeaderToken,
    qp: Qp,
    conn: Conn<TcpStream>,
}

struct Shared {
    cfg: RdmaConfig,
    ctx: Arc<Context>,
    pd: Arc<Pd>,
    cq: Arc<Cq>,
    region: Registered,
    /// The fence: the granted leader, and every connected leader's QP. One lock, so a QP is
    /// created with the access its leader should have and a grant sees every QP.
    state: Mutex<(LeaderToken, Vec<Peer>)>,
}

/// A follower's RDMA endpoint.
pub struct RdmaFollower {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

fn access_for(token: LeaderToken, granted: LeaderToken) -> u32 {
    if token == granted && token != LeaderToken::NONE {
        ACCESS_REMOTE_RW
    } else {
        0
    }
}

impl RdmaFollower {
    /// Registers `region` on `cfg.device` and accepts leaders on the TCP side channel `bind`.
    pub fn listen(
        bind: SocketAddr,
        cfg: RdmaConfig,
        region: Mapping,
    ) -> Result<RdmaFollower, VerbsError> {
        let ctx = Context::open(&cfg.device)?;
        ctx.gid(cfg.gid_index)?; // fail now, not per connection
        let pd = Pd::new(&ctx)?;
        let cq = Cq::new(&ctx, 4096)?;
        let region = Registered::new(&pd, region, ACCESS_REMOTE_RW)?;
        let (listener, addr) = listen(bind)?;
        let shared = Arc::new(Shared {
            cfg,
            ctx,
            pd,
            cq,
            region,
            state: Mutex::new((LeaderToken::NONE, Vec::new())),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::Builder::new()
                .name("rdma-accept".into())
                .spawn(move || {
                    accept_until(&listener, &stop, "rdma", |(stream, from)| {
                        if let Err(e) = admit(stream, from, &shared) {
                            tracing::warn!(%from, error = %e, "rdma leader handshake failed");
                        }
                    })
                })
                .map_err(|e| VerbsError::os("spawn", "rdma accept thread", e))?
        };
        tracing::info!(device = %shared.cfg.device, %addr, len = shared.region.map().len(), rkey = shared.region.mr().rkey(), "rdma follower listening");
        Ok(RdmaFollower {
            shared,
            addr,
            stop,
            acceptor: Some(acceptor),
        })
    }

    /// The side channel's address (for leaders to connect to).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Leaders connected so far.
    pub fn connected(&self) -> usize {
        self.shared.state.lock().unwrap().1.len()
    }
}

/// Handshake with one leader: its hello (token + QP), our QP toward it, our welcome.
fn admit(stream: TcpStream, from: SocketAddr, shared: &Shared) -> Result<(), VerbsError> {
    let peer = from.to_string();
    prepare(&stream, &peer, HANDSHAKE_TIMEOUT, HANDSHAKE_TIMEOUT)?;
    let mut stream = stream;
    shared.cfg.gate.accept(&mut stream, &peer)?;
    let mut conn = Conn::new(stream, peer.clone());
    let body = conn.recv_tagged(TAG_HELLO, "hello")?;
    let mut f = Fields::new(&body, &peer);
    let token = LeaderToken(f.u64()?);
    let remote = get_endpoint(&mut f)?;
    let cfg = &shared.cfg;
    let qp = Qp::new(&shared.pd, &shared.cq, 16, RECV_DEPTH, 0)?;
    let (lid, mtu) = shared.ctx.port()?;
    let local = QpEndpoint {
        qpn: qp.qpn(),
        psn: fastrand::u32(..0x00ff_ffff),
        lid,
        gid: shared.ctx.gid(cfg.gid_index)?,
    };
    let mut state = shared.state.lock().unwrap();
    qp.connect(
        local.psn,
        &remote,
        cfg.gid_index,
        mtu,
        access_for(token, state.0),
    )?;
    // Receives for WRITE_WITH_IMM; a QP in RESET refuses them, so after connect, before welcome.
    for i in 0..RECV_DEPTH {
        qp.post_recv(u64::from(i))?;
    }
    let welcome = Welcome {
        addr: shared.region.mr().addr(),
        rkey: shared.region.mr().rkey(),
        len: shared.region.map().len() as u64,
        qp: local,
        persistent: shared.region.map().is_persistent(),
    };
    conn.send(TAG_WELCOME, &[&welcome.encode()])?;
    tracing::info!(%peer, token = token.0, qpn = local.qpn, "rdma leader admitted");
    state.1.push(Peer { token, qp, conn });
    Ok(())
}

impl FollowerLink for RdmaFollower {
    fn local(&self) -> RemoteRegion {
        RemoteRegion {
            key: self.shared.region.mr().rkey(),
            len: self.shared.region.map().len() as u64,
        }
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), VerbsError> {
        self.shared.region.map().copy_out(offset, out)
    }

    fn grant(&mut self, leader: LeaderToken) -> Result<(), VerbsError> {
        let mut state = self.shared.state.lock().unwrap();
        // Revoke first, then grant: never two writers at once. A QP that cannot take its new
        // access (e.g. already in the error state after a refused write) is dropped; its leader
        // reconnects. A revoked QP that refuses the change is broken instead (QP reset fencing).
        let mut dead = Vec::new();
        for (i, p) in state
            .1
            .iter()
            .enumerate()
            .filter(|(_, p)| p.token != leader)
        {
            if let Err(e) = p.qp.set_access(0) {
                tracing::warn!(token = p.token.0, error = %e, "revoking access failed; breaking the QP instead");
                if p.qp.break_connection().is_err() {
                    dead.push(i);
                }
            }
        }
        for (i, p) in state
            .1
            .iter()
            .enumerate()
            .filter(|(_, p)| p.token == leader)
        {
            if let Err(e) = p.qp.set_access(ACCESS_REMOTE_RW) {
                tracing::warn!(token = p.token.0, error = %e, "granting access failed (QP in error); dropping it, the leader must reconnect");
                dead.push(i);
            }
        }
        dead.sort_unstable();
        for i in dead.into_iter().rev() {
            state.1.swap_remove(i);
        }
        state.0 = leader;
        Ok(())
    }

    fn granted(&self) -> LeaderToken {
        self.shared.state.lock().unwrap().0
    }

    fn send(&mut self, to: LeaderToken, envelope: &Envelope) -> Result<(), VerbsError> {
        let body = encode_control(envelope);
        self.with_conn(to, |c| c.send(TAG_CONTROL, &[&body]))
    }

    fn ack_persisted(&mut self, to: LeaderToken, upto: u64) -> Result<(), VerbsError> {
        self.with_conn(to, |c| c.send(TAG_PERSISTED, &[&upto.to_le_bytes()]))
    }

    fn poll(&mut self, out: &mut Vec<FollowerEvent>) -> Result<(), VerbsError> {
        let mut wcs = Vec::new();
        self.shared.cq.poll(&mut wcs)?;
        let mut state = self.shared.state.lock().unwrap();
        for wc in wcs {
            let Some(p) = state.1.iter().find(|p| p.qp.qpn() == wc.qp_num) else {
                continue;
            };
            if wc.status != rdma_sys::ibv_wc_status::IBV_WC_SUCCESS {
                tracing::debug!(token = p.token.0, status = %wc.status_text(), "receive flushed");
                continue;
            }
            if wc.opcode == ibv_wc_opcode::IBV_WC_RECV_RDMA_WITH_IMM {
                if let Some(imm) = wc.imm {
                    out.push(FollowerEvent::Imm { from: p.token, imm });
                }
                p.qp.post_recv(wc.wr_id)?;
            }
        }
        let mut i = 0;
        while i < state.1.len() {
            let from = state.1[i].token;
            match state.1[i].conn.try_recv() {
                Ok(None) => i += 1,
                Ok(Some((TAG_CONTROL, body))) => {
                    match decode_control(state.1[i].conn.peer(), &body) {
                        Ok(envelope) => out.push(FollowerEvent::Message { from, envelope }),
                        Err(e) => {
                            state.1.swap_remove(i);
                            return Err(e);
                        }
                    }
                }
                Ok(Some((tag, _))) => {
                    let peer = state.1.swap_remove(i).conn.peer().to_string();
                    return Err(VerbsError::Protocol {
                        peer,
                        what: format!("unexpected message tag {tag}"),
                    });
                }
                Err(e) => {
                    state.1.swap_remove(i);
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

impl RdmaFollower {
    fn with_conn(
        &self,
        to: LeaderToken,
        f: impl FnOnce(&mut Conn<TcpStream>) -> Result<(), VerbsError>,
    ) -> Result<(), VerbsError> {
        let mut state = self.shared.state.lock().unwrap();
        let p =
            state
                .1
                .iter_mut()
                .find(|p| p.token == to)
                .ok_or_else(|| VerbsError::Disconnected {
                    peer: format!("leader {:#x}", to.0),
                    reason: "not connected".into(),
                })?;
        f(&mut p.conn)
    }
}

impl Drop for RdmaFollower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

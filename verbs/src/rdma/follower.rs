//! The follower's side: a registered region, one RC QP per connected leader, and the fence.
//!
//! Two threads, no lock. The acceptor thread runs each leader's handshake (gate, hello, a QP
//! connected with no remote access, receives posted, the welcome) and queues the leader; the
//! owner (whoever calls `poll`, `grant`, `send`) adopts queued leaders into its [`Fence`], which
//! alone ever gives a QP write access. The welcome goes out from the acceptor, not the owner: a
//! leader's `connect` waits for it, and a replica dials its peers from the thread that polls its
//! own follower, so two replicas dialling each other would each wait on the other's poll. A
//! leader that writes before its QP is adopted is refused (its QP breaks) and reconnects.

use super::ffi::{Completion, Context, Cq, Pd, Qp, QpEndpoint, Registered, ACCESS_REMOTE_RW};
use super::handshake::{get_endpoint, Welcome};
use super::RdmaConfig;
use crate::acceptor::{accept_until, listen, prepare, HANDSHAKE_TIMEOUT};
use crate::conn::{Conn, Fields};
use crate::control::{
    decode_control, TAG_ADOPTED, TAG_CONTROL, TAG_HELLO, TAG_PERSISTED, TAG_WELCOME,
};
use crate::fence::{Fence, Writer};
use crate::mapping::Mapping;
use crate::{FollowerEvent, FollowerLink, LeaderToken, RemoteRegion, VerbsError};
use crossbeam::queue::ArrayQueue;
use decree_engine::message::Envelope;
use rdma_sys::ibv_wc_opcode;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Receives kept posted per QP for WRITE_WITH_IMM.
const RECV_DEPTH: u32 = 128;
/// Leaders handshaken but not yet adopted (the owner adopts at its next poll); past this the
/// acceptor refuses new ones before welcoming them.
const ADMITTED_MAX: usize = 16;
/// Connected leaders held without the list growing.
const PEERS_EXPECTED: usize = 8;

/// One connected leader.
struct Peer {
    token: LeaderToken,
    qp: Qp,
    conn: Conn<TcpStream>,
}

impl Writer for Peer {
    fn token(&self) -> LeaderToken {
        self.token
    }

    fn set_writable(&self, writable: bool) -> Result<(), VerbsError> {
        self.qp
            .set_access(if writable { ACCESS_REMOTE_RW } else { 0 })
    }

    fn break_connection(&self) -> Result<(), VerbsError> {
        self.qp.break_connection()
    }
}

/// What the acceptor thread needs, and the queue it hands leaders over on.
struct Acceptor {
    cfg: RdmaConfig,
    ctx: Arc<Context>,
    pd: Arc<Pd>,
    cq: Arc<Cq>,
    /// The welcome every leader gets, but for its QP endpoint.
    welcome: Welcome,
    admitted: ArrayQueue<Peer>,
}

/// A follower's RDMA endpoint.
pub struct RdmaFollower {
    /// Dropped before the region: no QP outlives the registration it was given.
    fence: Fence<Peer>,
    shared: Arc<Acceptor>,
    region: Registered,
    cq: Arc<Cq>,
    /// Completions of one CQ poll (cleared and refilled; never grows past one poll's worth).
    completions: Vec<Completion>,
    /// A control message's body as received (reused).
    body: Vec<u8>,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl RdmaFollower {
    /// Registers `region` on `cfg.device` and accepts leaders on the TCP side channel `bind`.
    pub fn listen(
        bind: SocketAddr,
        cfg: RdmaConfig,
        region: Mapping,
    ) -> Result<RdmaFollower, VerbsError> {
        let ctx = Context::open(&cfg.device)?;
        let gid = ctx.gid(cfg.gid_index)?; // fail now, not per connection
        let pd = Pd::new(&ctx)?;
        let cq = Cq::new(&ctx, 4096)?;
        let region = Registered::new(&pd, region, ACCESS_REMOTE_RW)?;
        let (listener, addr) = listen(bind)?;
        let welcome = Welcome {
            addr: region.mr().addr(),
            rkey: region.mr().rkey(),
            len: region.map().len() as u64,
            qp: QpEndpoint {
                qpn: 0,
                psn: 0,
                lid: 0,
                gid,
            },
            persistent: region.map().is_persistent(),
        };
        tracing::info!(device = %cfg.device, %addr, len = welcome.len, rkey = welcome.rkey, "rdma follower listening");
        let shared = Arc::new(Acceptor {
            cfg,
            ctx,
            pd,
            cq: cq.clone(),
            welcome,
            admitted: ArrayQueue::new(ADMITTED_MAX),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::Builder::new()
                .name("rdma-accept".into())
                .spawn(move || {
                    accept_until(&listener, &stop, "rdma", |(stream, from)| {
                        if let Err(e) = handshake(stream, from, &shared) {
                            tracing::warn!(%from, error = %e, "rdma leader handshake failed");
                        }
                    })
                })
                .map_err(|e| VerbsError::os("spawn", "rdma accept thread", e))?
        };
        Ok(RdmaFollower {
            fence: Fence::with_capacity(PEERS_EXPECTED),
            shared,
            region,
            cq,
            completions: Vec::with_capacity(super::ffi::COMPLETIONS_PER_POLL),
            body: Vec::with_capacity(crate::control::CONTROL_BYTES_EXPECTED),
            addr,
            stop,
            acceptor: Some(acceptor),
        })
    }

    /// The side channel's address (for leaders to connect to).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Leaders connected so far: adopted, or welcomed and waiting for the next poll to adopt them.
    pub fn connected(&self) -> usize {
        self.fence.writers().len() + self.shared.admitted.len()
    }

    /// Takes in the leaders the acceptor thread has welcomed since the last call, each with the
    /// write access its token has now.
    fn adopt(&mut self) {
        while let Some(peer) = self.shared.admitted.pop() {
            let (token, qpn, name) = (peer.token, peer.qp.qpn(), peer.conn.peer().to_owned());
            match self.fence.adopt(peer) {
                Ok(()) => {
                    // Its access is set: tell the leader, which posts no one-sided write before.
                    let adopted = self.fence.writers().len() - 1;
                    match self.fence.writers_mut()[adopted]
                        .conn
                        .send(TAG_ADOPTED, &[&[] as &[u8]])
                    {
                        Ok(()) => {
                            tracing::info!(peer = %name, token = token.0, qpn, "rdma leader admitted")
                        }
                        Err(e) => {
                            tracing::warn!(peer = %name, token = token.0, error = %e, "rdma leader dropped at admission: telling it so failed; it must reconnect");
                            drop(self.fence.remove(adopted));
                        }
                    }
                }
                Err((_, e)) => {
                    tracing::warn!(peer = %name, token = token.0, error = %e, "rdma leader dropped at admission: its QP cannot take its access (it wrote before it was admitted?); it must reconnect")
                }
            }
        }
    }

    /// Leader `to`'s side channel (adopting connections queued since the last poll first, so a
    /// send right after a connect finds its leader).
    fn leader_conn(&mut self, to: LeaderToken) -> Result<&mut Conn<TcpStream>, VerbsError> {
        self.adopt();
        let peer = self
            .fence
            .writers_mut()
            .iter_mut()
            .find(|p| p.token == to)
            .ok_or_else(|| VerbsError::Disconnected {
                peer: format!("leader {:#x}", to.0),
                reason: "not connected".into(),
            })?;
        Ok(&mut peer.conn)
    }
}

/// Handshake part one, on the acceptor thread: a leader's hello (token + QP), our QP toward it
/// with no remote access, receives posted, our welcome; then it is queued for the owner.
fn handshake(stream: TcpStream, from: SocketAddr, shared: &Acceptor) -> Result<(), VerbsError> {
    let peer = from.to_string();
    prepare(&stream, &peer, HANDSHAKE_TIMEOUT, HANDSHAKE_TIMEOUT)?;
    let mut stream = stream;
    shared.cfg.gate.accept(&mut stream, &peer)?;
    let mut conn = Conn::new(stream, peer.clone());
    let body = conn.recv_tagged(TAG_HELLO, "hello")?;
    let mut f = Fields::new(&body, &peer);
    let token = LeaderToken(f.u64()?);
    let remote = get_endpoint(&mut f)?;
    // Only this thread pushes, so room seen now is still there at the push below.
    if shared.admitted.is_full() {
        return Err(VerbsError::QueueFull {
            what: "rdma leaders awaiting adoption (is the follower polling?)",
            capacity: ADMITTED_MAX,
        });
    }
    let qp = Qp::new(&shared.pd, &shared.cq, 16, RECV_DEPTH, 0)?;
    let (lid, mtu) = shared.ctx.port()?;
    let local = QpEndpoint {
        qpn: qp.qpn(),
        psn: fastrand::u32(..0x00ff_ffff),
        lid,
        gid: shared.welcome.qp.gid,
    };
    // No remote access: only the owner's fence ever allows a write, so a leader that is not the
    // granted one can never write, whenever this runs.
    qp.connect(local.psn, &remote, shared.cfg.gid_index, mtu, 0)?;
    // Receives for WRITE_WITH_IMM; a QP in RESET refuses them, so after connect, before welcome.
    for i in 0..RECV_DEPTH {
        qp.post_recv(u64::from(i))?;
    }
    let welcome = Welcome {
        qp: local,
        ..shared.welcome
    };
    conn.send(TAG_WELCOME, &[&welcome.encode()])?;
    tracing::debug!(%peer, token = token.0, qpn = local.qpn, "rdma leader welcomed; awaiting adoption");
    if shared.admitted.push(Peer { token, qp, conn }).is_err() {
        unreachable!("invariant: the admitted queue had room (checked above; one producer)");
    }
    Ok(())
}

impl FollowerLink for RdmaFollower {
    fn local(&self) -> RemoteRegion {
        RemoteRegion {
            key: self.region.mr().rkey(),
            len: self.region.map().len() as u64,
        }
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), VerbsError> {
        self.region.map().copy_out(offset, out)
    }

    fn grant(&mut self, leader: LeaderToken) -> Result<(), VerbsError> {
        self.adopt();
        self.fence.grant(leader);
        Ok(())
    }

    fn granted(&self) -> LeaderToken {
        self.fence.granted()
    }

    fn send(&mut self, to: LeaderToken, envelope: &Envelope) -> Result<(), VerbsError> {
        self.leader_conn(to)?.send_control(envelope)
    }

    fn ack_persisted(&mut self, to: LeaderToken, upto: u64) -> Result<(), VerbsError> {
        self.leader_conn(to)?.send(TAG_PERSISTED, &[&upto.to_le_bytes()])
    }

    fn poll(&mut self, out: &mut Vec<FollowerEvent>) -> Result<(), VerbsError> {
        self.adopt();
        self.completions.clear();
        self.cq.poll(&mut self.completions)?;
        for wc in &self.completions {
            // A flushed receive of a QP dropped at adoption belongs to no adopted peer.
            let Some(p) = self
                .fence
                .writers()
                .iter()
                .find(|p| p.qp.qpn() == wc.qp_num)
            else {
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
        while i < self.fence.writers().len() {
            let p = &mut self.fence.writers_mut()[i];
            let from = p.token;
            match p.conn.try_recv_into(&mut self.body) {
                Ok(None) => i += 1,
                Ok(Some(TAG_CONTROL)) => match decode_control(p.conn.peer(), &self.body) {
                    Ok(envelope) => out.push(FollowerEvent::Message { from, envelope }),
                    Err(e) => {
                        self.fence.remove(i);
                        return Err(e);
                    }
                },
                Ok(Some(tag)) => {
                    let peer = self.fence.remove(i).conn.peer().to_string();
                    return Err(VerbsError::Protocol {
                        peer,
                        what: format!("unexpected message tag {tag}"),
                    });
                }
                Err(e) => {
                    self.fence.remove(i);
                    return Err(e);
                }
            }
        }
        Ok(())
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

//! `shm`: processes on one host. The follower's region is a shared file (under /dev/shm, or a DAX
//! file); the leader maps it and stores straight into it, so the follower's CPU takes no part in a
//! write. A permission word in the header fences deposed leaders (see `header`). Immediates and
//! the persisted horizon also travel through the header; control messages ride a Unix socket
//! beside the region (`<region>.sock`).

pub mod header;
mod leader;

pub use leader::ShmLeader;

use crate::acceptor::accept_until;
use crate::conn::{Conn, Fields};
use crate::control::{decode_control, TAG_CONTROL, TAG_HELLO};
use crate::mapping::Mapping;
use crate::transport::check_bounds;
use crate::Gate;
use crate::{FollowerEvent, FollowerLink, LeaderToken, RemoteRegion, VerbsError, Wake};
use decree_engine::message::Envelope;
use header::{Header, HEADER_BYTES};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long `grant` waits for a write in flight before revoking its permission: a frame store
/// takes microseconds, so this is a writer that died (kill -9) or was descheduled mid-write. Kept
/// short: the grant runs on the polling thread.
pub const GRANT_WAIT: Duration = Duration::from_millis(50);

/// The control socket that sits beside a region file.
pub fn socket_path(region: &Path) -> PathBuf {
    let mut s = region.as_os_str().to_owned();
    s.push(".sock");
    PathBuf::from(s)
}

/// The follower's side: owns the shared region and the control socket.
pub struct ShmFollower {
    path: PathBuf,
    map: Arc<Mapping>,
    /// Control connections that passed the gate, from the acceptor thread.
    admitted: crossbeam::channel::Receiver<Conn<UnixStream>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<std::thread::JoinHandle<()>>,
    leaders: Vec<(LeaderToken, Conn<UnixStream>)>,
    pending: Vec<Conn<UnixStream>>,
    /// A control message's body as received (reused).
    body: Vec<u8>,
}

impl ShmFollower {
    /// Creates a region of `data_len` bytes at `path` (plus a header page) and its socket; any
    /// process that can open the socket may introduce itself as a leader.
    pub fn create(path: &Path, data_len: usize) -> Result<ShmFollower, VerbsError> {
        ShmFollower::create_gated(path, data_len, Gate::default())
    }

    /// Like `create`, but a control connection is admitted only after `gate` accepts it. The
    /// handshake runs on an acceptor thread, so two replicas dialling each other's regions from
    /// their polling threads never wait on each other. The region file is created 0600: the
    /// memory itself is guarded by the OS user boundary, the fence by the gate.
    pub fn create_gated(
        path: &Path,
        data_len: usize,
        gate: Gate,
    ) -> Result<ShmFollower, VerbsError> {
        // Published with its header written: a leader dialling meanwhile finds no region, or this one.
        let init = |map: &Mapping| Header::new(map).init(fastrand::u32(1..), data_len as u64);
        let map = Arc::new(Mapping::create_shared(path, HEADER_BYTES + data_len, init)?);
        let sock = socket_path(path);
        let _ = std::fs::remove_file(&sock);
        let listener = UnixListener::bind(&sock)
            .map_err(|e| VerbsError::os("bind", sock.display().to_string(), e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| VerbsError::os("set_nonblocking", sock.display().to_string(), e))?;
        let (admit, admitted) = crossbeam::channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("shm-accept".into())
                .spawn(move || accept_leaders(&listener, &gate, &stop, &admit))
                .map_err(|e| VerbsError::os("spawn", "shm accept thread", e))?
        };
        Ok(ShmFollower {
            path: path.to_path_buf(),
            map,
            admitted,
            stop,
            acceptor: Some(acceptor),
            leaders: Vec::new(),
            pending: Vec::new(),
            body: Vec::with_capacity(crate::control::CONTROL_BYTES_EXPECTED),
        })
    }

    fn header(&self) -> Header<'_> {
        Header::new(&self.map)
    }

    fn accept(&mut self) {
        self.pending.extend(self.admitted.try_iter());
    }

    fn conn(&mut self, to: LeaderToken) -> Result<&mut Conn<UnixStream>, VerbsError> {
        self.leaders
            .iter_mut()
            .find(|(t, _)| *t == to)
            .map(|(_, c)| c)
            .ok_or_else(|| VerbsError::Disconnected {
                peer: format!("leader {:#x}", to.0),
                reason: "not connected".into(),
            })
    }
}

impl FollowerLink for ShmFollower {
    fn local(&self) -> RemoteRegion {
        RemoteRegion {
            key: self.header().key(),
            len: self.header().data_len(),
        }
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), VerbsError> {
        check_bounds("local region", offset, out.len(), self.header().data_len())?;
        self.map.read_at(HEADER_BYTES + offset as usize, out);
        Ok(())
    }

    fn grant(&mut self, leader: LeaderToken) -> Result<(), VerbsError> {
        let previous = self.granted();
        if self.header().grant(leader, GRANT_WAIT) {
            tracing::warn!(
                previous = previous.0,
                leader = leader.0,
                "revoked a write permission held past the grant wait (its leader died or stalled mid-write)"
            );
        }
        Ok(())
    }

    fn granted(&self) -> LeaderToken {
        self.header().granted()
    }

    fn send(&mut self, to: LeaderToken, envelope: &Envelope) -> Result<(), VerbsError> {
        self.conn(to)?.send_control(envelope)?;
        self.header().ring_doorbell();
        Ok(())
    }

    fn ack_persisted(&mut self, _to: LeaderToken, upto: u64) -> Result<(), VerbsError> {
        if upto > self.header().data_len() {
            return Err(VerbsError::Config(format!(
                "persisted horizon {upto} past the region end"
            )));
        }
        self.header().set_persisted(upto);
        Ok(())
    }

    fn wake_seq(&self) -> Option<u32> {
        Some(self.header().wake_seq())
    }

    fn sleep(&self, seq: u32, timeout: Duration) {
        self.header().sleep(seq, timeout);
    }

    fn waker(&self) -> Option<Arc<dyn Wake>> {
        Some(Arc::new(RegionWaker(self.map.clone())))
    }

    fn poll(&mut self, out: &mut Vec<FollowerEvent>) -> Result<(), VerbsError> {
        self.accept();
        let mut i = 0;
        while i < self.pending.len() {
            match self.pending[i].try_recv_into(&mut self.body) {
                Ok(None) => i += 1,
                Ok(Some(TAG_HELLO)) => {
                    let token = LeaderToken(Fields::new(&self.body, "shm leader").u64()?);
                    let c = self.pending.swap_remove(i);
                    self.leaders.push((token, c));
                }
                Ok(Some(tag)) => {
                    tracing::warn!(
                        tag,
                        "shm control connection did not start with hello; dropped"
                    );
                    self.pending.swap_remove(i);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "dropping half-open shm control connection");
                    self.pending.swap_remove(i);
                }
            }
        }
        let mut i = 0;
        while i < self.leaders.len() {
            let from = self.leaders[i].0;
            match self.leaders[i].1.try_recv_into(&mut self.body) {
                Ok(None) => i += 1,
                Ok(Some(TAG_CONTROL)) => match decode_control("shm leader", &self.body) {
                    Ok(envelope) => out.push(FollowerEvent::Message { from, envelope }),
                    Err(e) => {
                        self.leaders.swap_remove(i);
                        return Err(e);
                    }
                },
                Ok(Some(tag)) => {
                    self.leaders.swap_remove(i);
                    return Err(VerbsError::Protocol {
                        peer: format!("leader {:#x}", from.0),
                        what: format!("unexpected message tag {tag}"),
                    });
                }
                Err(e) => {
                    self.leaders.swap_remove(i);
                    return Err(e);
                }
            }
        }
        let from = self.granted();
        while let Some(imm) = self.header().pop_imm() {
            out.push(FollowerEvent::Imm { from, imm });
        }
        Ok(())
    }
}

/// Wakes the owner of a region from another thread of its process.
struct RegionWaker(Arc<Mapping>);

impl Wake for RegionWaker {
    fn wake(&self) {
        Header::new(&self.0).wake();
    }
}

/// The acceptor thread: admits control connections that pass `gate`, until `stop`.
fn accept_leaders(
    listener: &UnixListener,
    gate: &Gate,
    stop: &AtomicBool,
    admit: &crossbeam::channel::Sender<Conn<UnixStream>>,
) {
    accept_until(listener, stop, "shm control", |(mut stream, _)| {
        let timeout = Some(Duration::from_secs(5));
        let prepared = stream
            .set_nonblocking(false)
            .and_then(|_| stream.set_read_timeout(timeout))
            .and_then(|_| stream.set_write_timeout(timeout));
        if let Err(e) = prepared {
            tracing::warn!(error = %e, "shm control connection dropped: cannot set timeouts");
            return;
        }
        if let Err(reason) = gate.accept(&mut stream, "shm leader") {
            tracing::warn!(%reason, "shm control connection refused: cluster-secret handshake failed");
            return;
        }
        // A closed receiver means the follower is being dropped; `stop` ends the loop next.
        let _ = admit.send(Conn::new(stream, "shm leader".into()));
    });
}

impl Drop for ShmFollower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let _ = std::fs::remove_file(socket_path(&self.path));
    }
}

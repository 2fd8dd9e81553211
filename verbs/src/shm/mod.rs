//! `shm`: processes on one host. The follower's region is a shared file (under /dev/shm, or a DAX
//! file); the leader maps it and stores straight into it, so the follower's CPU takes no part in a
//! write. A permission word in the header fences deposed leaders (see `header`). Immediates and
//! the persisted horizon also travel through the header; control messages ride a Unix socket
//! beside the region (`<region>.sock`).

pub mod header;
mod leader;

pub use leader::ShmLeader;

use crate::conn::{Conn, Fields};
use crate::control::{decode_control, encode_control, TAG_CONTROL, TAG_HELLO};
use crate::mapping::Mapping;
use crate::transport::check_bounds;
use crate::{FollowerEvent, FollowerLink, LeaderToken, RemoteRegion, VerbsError};
use decree_engine::message::Envelope;
use header::{Header, HEADER_BYTES};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long `grant` waits for a write in flight before reporting the holder stuck.
pub const GRANT_WAIT: Duration = Duration::from_secs(1);

/// The control socket that sits beside a region file.
pub fn socket_path(region: &Path) -> PathBuf {
    let mut s = region.as_os_str().to_owned();
    s.push(".sock");
    PathBuf::from(s)
}

/// The follower's side: owns the shared region and the control socket.
pub struct ShmFollower {
    path: PathBuf,
    map: Mapping,
    listener: UnixListener,
    leaders: Vec<(LeaderToken, Conn<UnixStream>)>,
    pending: Vec<Conn<UnixStream>>,
}

impl ShmFollower {
    /// Creates a region of `data_len` bytes at `path` (plus a header page) and its socket.
    pub fn create(path: &Path, data_len: usize) -> Result<ShmFollower, VerbsError> {
        let map = Mapping::create_shared(path, HEADER_BYTES + data_len)?;
        Header::new(&map).init(fastrand::u32(1..), data_len as u64);
        let sock = socket_path(path);
        let _ = std::fs::remove_file(&sock);
        let listener = UnixListener::bind(&sock)
            .map_err(|e| VerbsError::os("bind", sock.display().to_string(), e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| VerbsError::os("set_nonblocking", sock.display().to_string(), e))?;
        Ok(ShmFollower {
            path: path.to_path_buf(),
            map,
            listener,
            leaders: Vec::new(),
            pending: Vec::new(),
        })
    }

    fn header(&self) -> Header<'_> {
        Header::new(&self.map)
    }

    fn accept(&mut self) -> Result<(), VerbsError> {
        loop {
            match self.listener.accept() {
                Ok((s, _)) => {
                    s.set_write_timeout(Some(Duration::from_secs(5)))
                        .map_err(|e| VerbsError::os("setsockopt", "shm control socket", e))?;
                    self.pending.push(Conn::new(s, "shm leader".into()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(VerbsError::os("accept", self.path.display().to_string(), e)),
            }
        }
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
        self.header().grant(leader, GRANT_WAIT)
    }

    fn granted(&self) -> LeaderToken {
        self.header().granted()
    }

    fn send(&mut self, to: LeaderToken, envelope: &Envelope) -> Result<(), VerbsError> {
        let body = encode_control(envelope);
        self.conn(to)?.send(TAG_CONTROL, &[&body])?;
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

    fn poll(&mut self, out: &mut Vec<FollowerEvent>) -> Result<(), VerbsError> {
        self.accept()?;
        let mut i = 0;
        while i < self.pending.len() {
            match self.pending[i].try_recv() {
                Ok(None) => i += 1,
                Ok(Some((TAG_HELLO, body))) => {
                    let token = LeaderToken(Fields::new(&body, "shm leader").u64()?);
                    let c = self.pending.swap_remove(i);
                    self.leaders.push((token, c));
                }
                Ok(Some((tag, _))) => {
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
            match self.leaders[i].1.try_recv() {
                Ok(None) => i += 1,
                Ok(Some((TAG_CONTROL, body))) => match decode_control("shm leader", &body) {
                    Ok(envelope) => out.push(FollowerEvent::Message { from, envelope }),
                    Err(e) => {
                        self.leaders.swap_remove(i);
                        return Err(e);
                    }
                },
                Ok(Some((tag, _))) => {
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

impl Drop for ShmFollower {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(socket_path(&self.path));
    }
}

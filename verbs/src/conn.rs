//! A message connection over a stream socket (TCP or Unix): `[tag u8][len u32 LE][body]`.
//! Writes are blocking and vectored (bounded by a send timeout); reads are either non-blocking
//! (`try_recv`, for poll loops) or blocking (`recv`, for receiver threads).

use crate::VerbsError;
use nix::errno::Errno;
use nix::sys::socket::{recv, MsgFlags};
use std::io::{IoSlice, Read, Write};
use std::os::fd::AsRawFd;

/// Header bytes in front of every message.
pub const MSG_HEADER_BYTES: usize = 5;
/// Most slices one writev accepts (Linux's UIO_MAXIOV).
const IOV_MAX: usize = 1024;
/// Largest body accepted: a log write of up to 64 MiB plus its own header.
pub const MAX_BODY_BYTES: usize = (64 << 20) + 64;

/// One side of a connection.
pub struct Conn<S> {
    stream: S,
    peer: String,
    inbuf: Vec<u8>,
}

impl<S: Read + Write + AsRawFd> Conn<S> {
    /// Wraps a connected, blocking stream.
    pub fn new(stream: S, peer: String) -> Conn<S> {
        Conn {
            stream,
            peer,
            inbuf: Vec::new(),
        }
    }

    /// The peer's name.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The underlying stream.
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// Sends one message whose body is the concatenation of `parts`, in one vectored write
    /// where the kernel allows.
    pub fn send(&mut self, tag: u8, parts: &[&[u8]]) -> Result<(), VerbsError> {
        self.send_many(&[(tag, parts)])
    }

    /// Sends several messages in as few vectored writes as the kernel allows (batching).
    pub fn send_many(&mut self, messages: &[(u8, &[&[u8]])]) -> Result<(), VerbsError> {
        let headers: Vec<[u8; MSG_HEADER_BYTES]> = messages
            .iter()
            .map(|(tag, parts)| {
                let body_len: usize = parts.iter().map(|p| p.len()).sum();
                assert!(
                    body_len <= MAX_BODY_BYTES,
                    "invariant: message body within MAX_BODY_BYTES"
                );
                let mut header = [0u8; MSG_HEADER_BYTES];
                header[0] = *tag;
                header[1..5].copy_from_slice(&(body_len as u32).to_le_bytes());
                header
            })
            .collect();
        let mut all: Vec<&[u8]> = Vec::new();
        for (header, (_, parts)) in headers.iter().zip(messages) {
            all.push(header);
            all.extend(parts.iter().copied().filter(|p| !p.is_empty()));
        }
        let total: usize = all.iter().map(|p| p.len()).sum();
        let mut written = 0;
        while written < total {
            match self.stream.write_vectored(&unwritten(&all, written)) {
                Ok(0) => return Err(self.gone("connection closed while sending")),
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(e, "send")),
            }
        }
        Ok(())
    }

    /// The next whole message if one has arrived, without blocking.
    pub fn try_recv(&mut self) -> Result<Option<(u8, Vec<u8>)>, VerbsError> {
        loop {
            if let Some(m) = self.take_message()? {
                return Ok(Some(m));
            }
            let mut chunk = [0u8; 64 * 1024];
            match recv(self.stream.as_raw_fd(), &mut chunk, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => return Err(self.gone("peer closed the connection")),
                Ok(n) => self.inbuf.extend_from_slice(&chunk[..n]),
                Err(Errno::EAGAIN) => return Ok(None),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(self.gone(e.desc())),
            }
        }
    }

    /// Blocks for the next whole message.
    pub fn recv(&mut self) -> Result<(u8, Vec<u8>), VerbsError> {
        loop {
            if let Some(m) = self.take_message()? {
                return Ok(m);
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(self.gone("peer closed the connection")),
                Ok(n) => self.inbuf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(e, "receive")),
            }
        }
    }

    /// Blocks for the next message, which must carry `tag` (`name` is for the error).
    pub fn recv_tagged(&mut self, tag: u8, name: &str) -> Result<Vec<u8>, VerbsError> {
        let (got, body) = self.recv()?;
        if got != tag {
            return Err(VerbsError::Protocol {
                peer: self.peer.clone(),
                what: format!("expected {name}, got message tag {got}"),
            });
        }
        Ok(body)
    }

    fn take_message(&mut self) -> Result<Option<(u8, Vec<u8>)>, VerbsError> {
        if self.inbuf.len() < MSG_HEADER_BYTES {
            return Ok(None);
        }
        let len = u32::from_le_bytes(self.inbuf[1..5].try_into().unwrap()) as usize;
        if len > MAX_BODY_BYTES {
            return Err(VerbsError::Protocol {
                peer: self.peer.clone(),
                what: format!("message of {len} bytes exceeds the {MAX_BODY_BYTES}-byte limit"),
            });
        }
        if self.inbuf.len() < MSG_HEADER_BYTES + len {
            return Ok(None);
        }
        let tag = self.inbuf[0];
        let body = self.inbuf[MSG_HEADER_BYTES..MSG_HEADER_BYTES + len].to_vec();
        self.inbuf.drain(..MSG_HEADER_BYTES + len);
        Ok(Some((tag, body)))
    }

    /// A socket timeout (SO_SNDTIMEO / SO_RCVTIMEO ran out) is a `Timeout`; anything else ends
    /// the connection.
    fn io_error(&self, e: std::io::Error, what: &str) -> VerbsError {
        match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => VerbsError::Timeout {
                peer: self.peer.clone(),
                what: what.into(),
                timeout_ms: 0,
            },
            _ => self.gone(&e.to_string()),
        }
    }

    fn gone(&self, reason: &str) -> VerbsError {
        VerbsError::Disconnected {
            peer: self.peer.clone(),
            reason: reason.to_string(),
        }
    }
}

/// The parts of `all` not yet written, as slices for one `writev`.
fn unwritten<'a>(all: &[&'a [u8]], mut skip: usize) -> Vec<IoSlice<'a>> {
    let mut out = Vec::with_capacity(all.len().min(IOV_MAX));
    for part in all {
        if skip >= part.len() {
            skip -= part.len();
        } else {
            out.push(IoSlice::new(&part[skip..]));
            skip = 0;
            if out.len() == IOV_MAX {
                break; // writev takes at most IOV_MAX slices; the rest go in the next call
            }
        }
    }
    out
}

/// Reads fixed-layout little-endian fields out of a message body, with typed errors.
pub struct Fields<'a> {
    body: &'a [u8],
    at: usize,
    peer: &'a str,
}

impl<'a> Fields<'a> {
    /// Starts reading `body` received from `peer`.
    pub fn new(body: &'a [u8], peer: &'a str) -> Fields<'a> {
        Fields { body, at: 0, peer }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], VerbsError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.body.len())
            .ok_or_else(|| VerbsError::Protocol {
                peer: self.peer.to_string(),
                what: format!("message body of {} bytes is too short", self.body.len()),
            })?;
        let s = &self.body[self.at..end];
        self.at = end;
        Ok(s)
    }

    /// Next u8.
    pub fn u8(&mut self) -> Result<u8, VerbsError> {
        Ok(self.take(1)?[0])
    }

    /// Next u32.
    pub fn u32(&mut self) -> Result<u32, VerbsError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    /// Next u64.
    pub fn u64(&mut self) -> Result<u64, VerbsError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    /// The rest of the body.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.body[self.at..];
        self.at = self.body.len();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn messages_cross_and_oversize_is_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut a = Conn::new(a, "a".into());
        let mut b = Conn::new(b, "b".into());
        assert!(b.try_recv().unwrap().is_none());
        a.send(7, &[b"he", b"", b"llo"]).unwrap();
        let (tag, body) = b.recv().unwrap();
        assert_eq!((tag, body.as_slice()), (7, &b"hello"[..]));
        let mut raw = a.stream;
        raw.write_all(&[1, 0xff, 0xff, 0xff, 0xff]).unwrap();
        assert!(matches!(b.try_recv(), Err(VerbsError::Protocol { .. })));
        drop(raw);
        let (_, c) = UnixStream::pair().unwrap();
        let mut c = Conn::new(c, "c".into());
        assert!(matches!(c.try_recv(), Err(VerbsError::Disconnected { .. })));
    }

    #[test]
    fn fields_refuse_short_bodies() {
        let mut f = Fields::new(&[1, 2, 3], "p");
        assert_eq!(f.u8().unwrap(), 1);
        assert!(matches!(f.u32(), Err(VerbsError::Protocol { .. })));
    }
}

//! The Rust client library: connects to any replica, authenticates, follows leader redirects, and
//! retries with the same (client id, seq) so a retried write executes at most once.
//!
//! ```no_run
//! # use decree_tools::client::{Client, ClientConfig};
//! let config = ClientConfig::new(vec!["127.0.0.1:7400".into()], b"secret bytes, 16+ long".to_vec());
//! let mut client = Client::new(config);
//! client.put(b"k", b"v").unwrap();
//! assert_eq!(client.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
//! ```

use crate::auth::{self, AuthError, Peer};
use crate::secret::random_u64;
use crate::wire::{self, ClientFrame, ServerFrame, StatusView, WireError};
use bytes::Bytes;
use decree_engine::kv::{KvOp, KvReply};
use std::io::BufReader;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Replica addresses (any subset; redirects add the leader's).
    pub addrs: Vec<String>,
    /// The cluster secret.
    pub secret: Vec<u8>,
    /// How long one attempt waits for its reply before trying another replica.
    pub attempt_timeout_ms: u64,
    /// How long an operation may take in total, retries included.
    pub deadline_ms: u64,
}

impl ClientConfig {
    /// Defaults: 1 s per attempt, 15 s per operation.
    pub fn new(addrs: Vec<String>, secret: Vec<u8>) -> Self {
        ClientConfig { addrs, secret, attempt_timeout_ms: 1_000, deadline_ms: 15_000 }
    }
}

/// Why an operation failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// No replica answered within the deadline.
    #[error("no reply within {deadline_ms} ms (last problem: {last})")]
    Timeout {
        /// The deadline.
        deadline_ms: u64,
        /// The last error seen.
        last: String,
    },
    /// The cluster refused our secret.
    #[error("authentication failed: {0}")]
    Auth(#[from] AuthError),
    /// The replica refused a frame.
    #[error("replica refused the request: {0}")]
    Refused(String),
    /// The reply did not decode.
    #[error("unexpected reply: {0}")]
    Unexpected(String),
}

struct Connection {
    addr: String,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

/// One client session (one outstanding operation at a time).
pub struct Client {
    config: ClientConfig,
    client_id: u64,
    seq: u64,
    next_request_id: u64,
    target: usize,
    conn: Option<Connection>,
    buf: Vec<u8>,
    /// Attempts that were retried (timeouts, redirects, busy, broken connections).
    pub retries: u64,
}

fn resolve(addr: &str) -> std::io::Result<SocketAddr> {
    addr.to_socket_addrs()?.next().ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))
}

/// Opens an authenticated connection to `addr`.
pub fn dial(addr: &str, secret: &[u8], timeout: Duration) -> Result<TcpStream, ClientError> {
    let io = |e: std::io::Error| ClientError::Unexpected(format!("{addr}: {e}"));
    let mut stream = TcpStream::connect_timeout(&resolve(addr).map_err(io)?, timeout).map_err(io)?;
    stream.set_nodelay(true).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    auth::connect(&mut stream, secret, Peer::Client)?;
    Ok(stream)
}

impl Client {
    /// A new session with a random client id.
    pub fn new(config: ClientConfig) -> Self {
        assert!(!config.addrs.is_empty(), "a client needs at least one replica address");
        let target = (random_u64() % config.addrs.len() as u64) as usize;
        Client { config, client_id: random_u64(), seq: 0, next_request_id: 1, target, conn: None, buf: Vec::new(), retries: 0 }
    }

    /// This session's id.
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// Writes `value` under `key`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), ClientError> {
        match self.execute(&KvOp::Put { key: Bytes::copy_from_slice(key), value: Bytes::copy_from_slice(value) })? {
            KvReply::Done => Ok(()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Reads `key` (linearizable: the read goes through the log).
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>, ClientError> {
        match self.execute(&KvOp::Get { key: Bytes::copy_from_slice(key) })? {
            KvReply::Value(value) => Ok(value),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Sets `key` to `new` if it holds `expected` (`None`: absent); returns (ok, previous).
    pub fn cas(&mut self, key: &[u8], expected: Option<&[u8]>, new: &[u8]) -> Result<(bool, Option<Bytes>), ClientError> {
        let op = KvOp::Cas { key: Bytes::copy_from_slice(key), expected: expected.map(Bytes::copy_from_slice), new: Bytes::copy_from_slice(new) };
        match self.execute(&op)? {
            KvReply::Cas { ok, previous } => Ok((ok, previous)),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Executes one operation exactly once, retrying (same seq) across replicas until the deadline.
    pub fn execute(&mut self, op: &KvOp) -> Result<KvReply, ClientError> {
        self.seq += 1;
        let payload = self.call(op.encode())?;
        KvReply::decode(&payload).map_err(|e| ClientError::Unexpected(e.to_string()))
    }

    fn call(&mut self, op: Bytes) -> Result<Bytes, ClientError> {
        let deadline = Instant::now() + Duration::from_millis(self.config.deadline_ms);
        let mut last = String::from("no attempt");
        while Instant::now() < deadline {
            match self.attempt(&op) {
                Ok(Attempt::Done(payload)) => return Ok(payload),
                Ok(Attempt::Redirect(addr)) => {
                    last = format!("redirected to {addr:?}");
                    self.follow(addr);
                    std::thread::sleep(Duration::from_millis(2));
                }
                Ok(Attempt::Busy) => {
                    last = "replica busy".into();
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(ClientError::Auth(e)) => return Err(ClientError::Auth(e)),
                Err(ClientError::Refused(e)) => return Err(ClientError::Refused(e)),
                Err(e) => {
                    last = e.to_string();
                    self.conn = None;
                    self.target = (self.target + 1) % self.config.addrs.len();
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            self.retries += 1;
        }
        Err(ClientError::Timeout { deadline_ms: self.config.deadline_ms, last })
    }

    fn follow(&mut self, leader_addr: Option<String>) {
        match leader_addr {
            Some(addr) => {
                let index = match self.config.addrs.iter().position(|a| *a == addr) {
                    Some(index) => index,
                    None => {
                        self.config.addrs.push(addr);
                        self.config.addrs.len() - 1
                    }
                };
                if index != self.target {
                    self.conn = None;
                    self.target = index;
                }
            }
            None => {
                self.conn = None;
                self.target = (self.target + 1) % self.config.addrs.len();
            }
        }
    }

    fn connection(&mut self) -> Result<&mut Connection, ClientError> {
        if self.conn.is_none() {
            let addr = self.config.addrs[self.target].clone();
            let stream = dial(&addr, &self.config.secret, Duration::from_millis(self.config.attempt_timeout_ms))?;
            let writer = stream.try_clone().map_err(|e| ClientError::Unexpected(e.to_string()))?;
            self.conn = Some(Connection { addr, reader: BufReader::new(stream), writer });
        }
        Ok(self.conn.as_mut().expect("just set"))
    }

    fn attempt(&mut self, op: &Bytes) -> Result<Attempt, ClientError> {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let frame = ClientFrame::Request { request_id, client: self.client_id, seq: self.seq, op: op.clone() };
        let mut buf = std::mem::take(&mut self.buf);
        let result = (|| {
            let conn = self.connection()?;
            let addr = conn.addr.clone();
            wire::write_frame(&mut conn.writer, &frame).map_err(|e| ClientError::Unexpected(format!("{addr}: {e}")))?;
            loop {
                match read_reply(&mut conn.reader, &mut buf, &addr)? {
                    ServerFrame::Reply { request_id: id, payload, .. } if id == request_id => return Ok(Attempt::Done(payload)),
                    ServerFrame::Redirect { request_id: id, leader_addr, .. } if id == request_id => return Ok(Attempt::Redirect(leader_addr)),
                    ServerFrame::Busy { request_id: id } if id == request_id => return Ok(Attempt::Busy),
                    ServerFrame::Error { code, message } => return Err(ClientError::Refused(format!("{code:?}: {message}"))),
                    _ => continue, // a late answer to an earlier attempt
                }
            }
        })();
        self.buf = buf;
        result
    }

    /// Asks one replica for its status.
    pub fn status(addr: &str, secret: &[u8], timeout: Duration) -> Result<StatusView, ClientError> {
        let stream = dial(addr, secret, timeout)?;
        let mut writer = stream.try_clone().map_err(|e| ClientError::Unexpected(e.to_string()))?;
        wire::write_frame(&mut writer, &ClientFrame::Status { request_id: 1 }).map_err(|e| ClientError::Unexpected(e.to_string()))?;
        let mut reader = BufReader::new(stream);
        match read_reply(&mut reader, &mut Vec::new(), addr)? {
            ServerFrame::Status { status, .. } => Ok(status),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }
}

enum Attempt {
    Done(Bytes),
    Redirect(Option<String>),
    Busy,
}

fn read_reply(reader: &mut BufReader<TcpStream>, buf: &mut Vec<u8>, addr: &str) -> Result<ServerFrame, ClientError> {
    wire::read_frame::<ServerFrame>(reader, buf).map_err(|e| match e {
        WireError::Io(io) => ClientError::Unexpected(format!("{addr}: {io}")),
        other => ClientError::Unexpected(format!("{addr}: bad reply frame: {other}")),
    })
}

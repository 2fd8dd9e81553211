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
use decree_engine::runtime::MembershipChange;
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
    match auth::connect(&mut stream, secret, Peer::Client) {
        Ok(()) => Ok(stream),
        // A slow or dying replica is worth a retry elsewhere; a refused secret is not.
        Err(AuthError::Io(e)) => Err(io(e)),
        Err(e) => Err(ClientError::Auth(e)),
    }
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

    /// Reads `key` (linearizable: served by the leader's read index, without a log slot).
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
        let payload = self.call(op.encode(), None)?;
        KvReply::decode(&payload).map_err(|e| ClientError::Unexpected(e.to_string()))
    }

    /// Runs `op` (as a stale read at the connected replica when `min_slot` is set) until answered.
    fn call(&mut self, op: Bytes, min_slot: Option<u64>) -> Result<Bytes, ClientError> {
        let deadline = Instant::now() + Duration::from_millis(self.config.deadline_ms);
        let mut last = String::from("no attempt");
        while Instant::now() < deadline {
            match self.attempt(&op, min_slot) {
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

    fn attempt(&mut self, op: &Bytes, min_slot: Option<u64>) -> Result<Attempt, ClientError> {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let (client, seq, op) = (self.client_id, self.seq, op.clone());
        let frame = match min_slot {
            Some(min_slot) => ClientFrame::StaleRead { request_id, client, seq, op, min_slot },
            None => ClientFrame::Request { request_id, client, seq, op },
        };
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
                    ServerFrame::Admin { request_id: id, detail, .. } if id == request_id => return Err(ClientError::Refused(detail)),
                    ServerFrame::Error { code, message } => return Err(ClientError::Refused(format!("{code:?}: {message}"))),
                    _ => continue, // a late answer to an earlier attempt
                }
            }
        })();
        self.buf = buf;
        result
    }

    /// Asks the leader to hand leadership to replica `to` (None: the most caught-up voter);
    /// returns the leader's answer.
    pub fn transfer_leadership(&mut self, to: Option<u32>) -> Result<String, ClientError> {
        self.admin(|request_id| ClientFrame::TransferLeadership { request_id, to }).map(|answer| answer.detail)
    }

    /// Asks the leader to edit the configuration; returns the slot the change was proposed at (it
    /// takes effect once that slot is applied).
    pub fn change_membership(&mut self, change: MembershipChange) -> Result<AdminAnswer, ClientError> {
        self.admin(|request_id| ClientFrame::ChangeMembership { request_id, change })
    }

    /// Sends an administrative frame to the leader: follows a refusal that names the leader,
    /// retries while no leader is known (an election) or the leader is busy, until the deadline.
    fn admin(&mut self, frame: impl Fn(u64) -> ClientFrame) -> Result<AdminAnswer, ClientError> {
        let deadline = Instant::now() + Duration::from_millis(self.config.deadline_ms);
        let mut last = String::from("no attempt");
        while Instant::now() < deadline {
            let request_id = self.next_request_id;
            self.next_request_id += 1;
            let mut buf = std::mem::take(&mut self.buf);
            let frame = frame(request_id);
            let answer = (|| {
                let conn = self.connection()?;
                let addr = conn.addr.clone();
                wire::write_frame(&mut conn.writer, &frame).map_err(|e| ClientError::Unexpected(format!("{addr}: {e}")))?;
                read_admin_answer(&mut conn.reader, &mut buf, &addr, request_id)
            })();
            self.buf = buf;
            match answer {
                Ok(Some(answer)) if answer.ok => return Ok(answer),
                Ok(Some(answer)) if answer.leader_addr.is_some() => {
                    last = answer.detail;
                    self.follow(answer.leader_addr);
                }
                // No leader known here (an election is running): ask the next replica shortly.
                Ok(Some(answer)) if answer.detail == NOT_THE_LEADER => {
                    last = answer.detail;
                    self.follow(None);
                    std::thread::sleep(Duration::from_millis(50));
                }
                // Refused by the leader itself: final.
                Ok(Some(answer)) => return Err(ClientError::Refused(answer.detail)),
                Ok(None) => {
                    last = "busy".into();
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e @ (ClientError::Auth(_) | ClientError::Refused(_))) => return Err(e),
                Err(e) => {
                    last = e.to_string();
                    self.follow(None);
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        Err(ClientError::Timeout { deadline_ms: self.config.deadline_ms, last })
    }

    /// Reads `key` at whichever replica this session is connected to, once it has applied
    /// `min_slot` slots: bounded staleness, served by followers and learners too.
    pub fn stale_get(&mut self, key: &[u8], min_slot: u64) -> Result<Option<Bytes>, ClientError> {
        self.seq += 1;
        let payload = self.call(KvOp::Get { key: Bytes::copy_from_slice(key) }.encode(), Some(min_slot))?;
        match KvReply::decode(&payload).map_err(|e| ClientError::Unexpected(e.to_string()))? {
            KvReply::Value(value) => Ok(value),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Asks the replica at `addr` to checkpoint its state now; returns the checkpoint's slot.
    pub fn checkpoint(addr: &str, secret: &[u8], timeout: Duration) -> Result<AdminAnswer, ClientError> {
        let stream = dial(addr, secret, timeout)?;
        let mut writer = stream.try_clone().map_err(|e| ClientError::Unexpected(e.to_string()))?;
        wire::write_frame(&mut writer, &ClientFrame::<Bytes>::Checkpoint { request_id: 1 }).map_err(|e| ClientError::Unexpected(e.to_string()))?;
        match read_admin_answer(&mut BufReader::new(stream), &mut Vec::new(), addr, 1)? {
            Some(answer) if answer.ok => Ok(answer),
            Some(answer) => Err(ClientError::Refused(answer.detail)),
            None => Err(ClientError::Refused(format!("{addr} is busy; retry"))),
        }
    }

    /// Asks one replica for its status.
    pub fn status(addr: &str, secret: &[u8], timeout: Duration) -> Result<StatusView, ClientError> {
        let stream = dial(addr, secret, timeout)?;
        let mut writer = stream.try_clone().map_err(|e| ClientError::Unexpected(e.to_string()))?;
        wire::write_frame(&mut writer, &ClientFrame::<Bytes>::Status { request_id: 1 }).map_err(|e| ClientError::Unexpected(e.to_string()))?;
        let mut reader = BufReader::new(stream);
        match read_reply(&mut reader, &mut Vec::new(), addr)? {
            ServerFrame::Status { status, .. } => Ok(status),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }
}

/// The core's refusal reason when a replica does not lead.
const NOT_THE_LEADER: &str = "not the leader";

/// A replica's answer to an administrative request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminAnswer {
    /// Whether it was accepted.
    pub ok: bool,
    /// What happened.
    pub detail: String,
    /// The slot it concerns (proposed configuration change, checkpoint), if any.
    pub slot: Option<u64>,
    /// When refused by a non-leader: the leader's address, if known.
    pub leader_addr: Option<String>,
}

/// Reads until the answer to `request_id` (None: the replica was busy).
fn read_admin_answer(reader: &mut BufReader<TcpStream>, buf: &mut Vec<u8>, addr: &str, request_id: u64) -> Result<Option<AdminAnswer>, ClientError> {
    loop {
        match read_reply(reader, buf, addr)? {
            ServerFrame::Admin { request_id: id, ok, detail, leader_addr, slot } if id == request_id => {
                return Ok(Some(AdminAnswer { ok, detail, slot, leader_addr }))
            }
            ServerFrame::Busy { request_id: id } if id == request_id => return Ok(None),
            ServerFrame::Error { code, message } => return Err(ClientError::Refused(format!("{code:?}: {message}"))),
            _ => continue, // a late answer to an earlier request
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    const KEY: &[u8] = b"client-test-secret-0123456789";

    /// A fake replica: the first connection swallows its request (a lost reply), the second answers.
    /// Returns the (client, seq) of every request it saw.
    fn flaky_replica(listener: TcpListener) -> std::thread::JoinHandle<Vec<(u64, u64)>> {
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            for attempt in 0..2 {
                let (mut stream, _) = listener.accept().unwrap();
                assert_eq!(auth::accept(&mut stream, KEY).unwrap(), Peer::Client);
                let frame: ClientFrame = wire::read_frame(&mut stream, &mut Vec::new()).unwrap();
                let ClientFrame::Request { request_id, client, seq, .. } = frame else { panic!("{frame:?}") };
                seen.push((client, seq));
                if attempt == 1 {
                    let reply = ServerFrame::Reply { request_id, seq, payload: KvReply::Done.encode() };
                    wire::write_frame(&mut stream, &reply).unwrap();
                } else {
                    // Swallow the request; wait until the client gives up on this connection.
                    let mut rest = Vec::new();
                    let _ = std::io::Read::read_to_end(&mut stream, &mut rest);
                }
            }
            seen
        })
    }

    #[test]
    fn a_retry_after_a_lost_reply_reuses_the_same_client_and_seq() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let replica = flaky_replica(listener);
        let mut config = ClientConfig::new(vec![addr], KEY.to_vec());
        config.attempt_timeout_ms = 200;
        let mut client = Client::new(config);
        client.put(b"k", b"v").unwrap();
        let seen = replica.join().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0], seen[1], "the retry must carry the same (client, seq)");
        assert_eq!(seen[0], (client.client_id(), 1));
        assert!(client.retries >= 1);
    }

    #[test]
    fn an_admin_refusal_naming_the_leader_is_followed_and_the_slot_returned() {
        let (follower, leader) = (TcpListener::bind("127.0.0.1:0").unwrap(), TcpListener::bind("127.0.0.1:0").unwrap());
        let leader_addr = leader.local_addr().unwrap().to_string();
        let follower_addr = follower.local_addr().unwrap().to_string();
        let answer = |listener: TcpListener, ok: bool, leader_addr: Option<String>| {
            std::thread::spawn(move || {
                let (mut stream, _) = listener.accept().unwrap();
                auth::accept(&mut stream, KEY).unwrap();
                let frame: ClientFrame = wire::read_frame(&mut stream, &mut Vec::new()).unwrap();
                let ClientFrame::ChangeMembership { request_id, change } = frame else { panic!("{frame:?}") };
                let slot = ok.then_some(41);
                let detail = if ok { "proposed".into() } else { NOT_THE_LEADER.into() };
                wire::write_frame(&mut stream, &ServerFrame::<Bytes>::Admin { request_id, ok, detail, leader_addr, slot }).unwrap();
                change
            })
        };
        let follower = answer(follower, false, Some(leader_addr));
        let leader = answer(leader, true, None);
        let mut client = Client::new(ClientConfig::new(vec![follower_addr], KEY.to_vec()));
        let change = MembershipChange::AddVoter(decree_engine::types::ReplicaId(3));
        assert_eq!(client.change_membership(change).unwrap().slot, Some(41));
        assert_eq!(follower.join().unwrap(), change);
        assert_eq!(leader.join().unwrap(), change, "the leader got the same edit");
    }

    #[test]
    fn a_redirect_is_followed_to_the_named_leader() {
        let (follower, leader) = (TcpListener::bind("127.0.0.1:0").unwrap(), TcpListener::bind("127.0.0.1:0").unwrap());
        let leader_addr = leader.local_addr().unwrap().to_string();
        let follower_addr = follower.local_addr().unwrap().to_string();
        let redirect_to = leader_addr.clone();
        let follower = std::thread::spawn(move || {
            let (mut stream, _) = follower.accept().unwrap();
            auth::accept(&mut stream, KEY).unwrap();
            let ClientFrame::<Bytes>::Request { request_id, .. } = wire::read_frame(&mut stream, &mut Vec::new()).unwrap() else { panic!() };
            let redirect = ServerFrame::<Bytes>::Redirect { request_id, leader: Some(1), leader_addr: Some(redirect_to) };
            wire::write_frame(&mut stream, &redirect).unwrap();
        });
        let leader = std::thread::spawn(move || {
            let (mut stream, _) = leader.accept().unwrap();
            auth::accept(&mut stream, KEY).unwrap();
            let ClientFrame::<Bytes>::Request { request_id, seq, .. } = wire::read_frame(&mut stream, &mut Vec::new()).unwrap() else { panic!() };
            let reply = ServerFrame::Reply { request_id, seq, payload: KvReply::Value(Some(Bytes::from_static(b"v"))).encode() };
            wire::write_frame(&mut stream, &reply).unwrap();
        });
        let mut client = Client::new(ClientConfig::new(vec![follower_addr], KEY.to_vec()));
        assert_eq!(client.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
        follower.join().unwrap();
        leader.join().unwrap();
    }
}

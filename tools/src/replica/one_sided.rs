//! The `shm` and `rdma` replica transports, over `decree-verbs` links. Every replica owns one
//! mailbox region (a shared file, or memory registered with the NIC) and holds a leader link to
//! each peer's mailbox. Accept messages, the log replication itself, travel as one-sided writes:
//! the sender stores the checksummed frame into the receiver's mailbox and names its offset in
//! the immediate; the receiver's CPU takes no part until it polls. Everything else (prepare,
//! promise, accepted, heartbeats, snapshot chunks) rides the link's control channel.
//!
//! Fencing: a replica grants its mailbox to the replica whose ballot it acknowledges (when it
//! sends a Promise or Accepted to that ballot's owner), so a deposed leader's one-sided writes are
//! refused by the region (shm) or the NIC (rdma) while the new one's land. The core checks ballots
//! as well: the fence is a second line, not the safety argument.
//!
//! The mailbox is a ring without credits: a sender that laps a slow receiver overwrites frames it
//! has not read, which the receiver sees as a checksum mismatch and drops. Paxos retransmits lost
//! messages, exactly as it does when a TCP peer queue overflows. Durability is the engine's: an
//! Accepted is sent only after the follower's log write is durable, whatever carried the Accept.

use super::peers::PEER_QUEUE_MESSAGES;
use crate::auth::{self, Peer};
use decree_engine::codec::{decode_frame, encode_frame, frame_len, FRAME_HEADER_BYTES};
use decree_engine::message::{Envelope, Message};
use decree_engine::runtime::idle::Idler;
use decree_engine::runtime::{Event, PeerTransport, Ring};
use decree_verbs::handshake::Stream;
use decree_verbs::{FollowerEvent, FollowerLink, Gate, Handshake, LeaderEvent, LeaderLink, LeaderToken, VerbsError, Write};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest park of an idle transport thread. Mailboxes and links have no wake-up of their own,
/// so this bounds the latency a message waits when the thread was asleep.
const MAX_PARK: Duration = Duration::from_micros(200);
/// Between attempts to reach a peer's mailbox.
const REDIAL: Duration = Duration::from_millis(200);
/// Frames start at multiples of this, so the immediate can carry offset / 8 in 32 bits.
const ALIGN: usize = 8;

/// The fence token of replica `id` (zero is nobody).
pub fn token_of(id: u32) -> LeaderToken {
    LeaderToken(u64::from(id) + 1)
}

/// The cluster-secret handshake on a mailbox's side channel (the same HMAC challenge-response as
/// every TCP connection to a replica).
pub struct SecretGate {
    /// The cluster secret.
    pub key: Arc<Vec<u8>>,
    /// This replica's id (what it proves itself as when dialling).
    pub id: u32,
}

impl Handshake for SecretGate {
    fn connect(&self, stream: &mut dyn Stream) -> Result<(), String> {
        auth::connect(&mut { stream }, &self.key, Peer::Replica(self.id)).map_err(|e| e.to_string())
    }

    fn accept(&self, stream: &mut dyn Stream) -> Result<(), String> {
        match auth::accept(&mut { stream }, &self.key).map_err(|e| e.to_string())? {
            Peer::Replica(_) => Ok(()),
            Peer::Client => Err("a client may not write into a replica's mailbox".into()),
        }
    }
}

/// Gates a mailbox with the cluster secret.
pub fn secret_gate(key: Arc<Vec<u8>>, id: u32) -> Gate {
    Gate(Some(Arc::new(SecretGate { key, id })))
}

/// Opens a leader link to peer `id`'s mailbox.
pub type Dial = Box<dyn FnMut(u32) -> Result<Box<dyn LeaderLink + Send>, VerbsError> + Send>;

/// Sends to peers through the transport thread; dropping it (when the core thread ends) waits for
/// the transport thread, which stops on the replica's stop flag.
pub struct OneSidedPeers {
    queue: Arc<Ring<Envelope>>,
    dropped: u64,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for OneSidedPeers {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl PeerTransport for OneSidedPeers {
    fn send(&mut self, envelope: Envelope) {
        if self.queue.push(envelope).is_err() {
            self.dropped += 1;
            if self.dropped.is_power_of_two() {
                tracing::warn!(dropped = self.dropped, "transport queue full; dropping messages (retransmitted on heartbeat)");
            }
        }
    }
}

/// One peer's outbound link.
struct Outbound {
    link: Option<Box<dyn LeaderLink + Send>>,
    /// Where the next one-sided frame goes in its mailbox.
    cursor: u64,
    next_dial: Instant,
    last_error: String,
}

/// The transport thread's state.
struct Transport<R> {
    id: u32,
    transport: &'static str,
    mailbox: Box<dyn FollowerLink + Send>,
    dial: Dial,
    peers: BTreeMap<u32, Outbound>,
    inbox: Arc<Ring<Event<R>>>,
    frame: Vec<u8>,
    /// Frames that failed their checksum or addressing (lapped or garbage), for the log.
    dropped_frames: u64,
    /// Accepts stored one-sided into peers' mailboxes.
    written: u64,
    /// Accepts sent on the control channel instead (fenced, immediate queue full, too big).
    fallbacks: u64,
    /// Frames read out of our own mailbox.
    received: u64,
}

/// Starts the transport thread for replica `id`: `mailbox` is its own region, `dial` reaches a
/// peer's. Messages from peers go into `inbox`.
pub fn start<R: Send + 'static>(
    id: u32,
    transport: &'static str,
    peers: Vec<u32>,
    mailbox: Box<dyn FollowerLink + Send>,
    dial: Dial,
    inbox: Arc<Ring<Event<R>>>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<OneSidedPeers> {
    let queue = Arc::new(Ring::new(PEER_QUEUE_MESSAGES));
    let now = Instant::now();
    let peers = peers
        .into_iter()
        .map(|p| (p, Outbound { link: None, cursor: 0, next_dial: now, last_error: String::new() }))
        .collect();
    let mut state = Transport { id, transport, mailbox, dial, peers, inbox, frame: Vec::with_capacity(64 << 10), dropped_frames: 0, written: 0, fallbacks: 0, received: 0 };
    let consumer = queue.clone();
    let thread = std::thread::Builder::new().name(format!("decree-{transport}")).spawn(move || {
        consumer.bind_consumer();
        // Spin a little before parking: links and the mailbox are polled, not signalled.
        let mut idler = Idler::new(64, 0);
        while !stop.load(Ordering::Acquire) {
            if state.turn(&consumer) {
                idler.reset();
            } else {
                idler.idle(&consumer.sleeping, || !consumer.is_empty(), MAX_PARK);
            }
        }
        let Transport { written, fallbacks, received, dropped_frames, .. } = state;
        tracing::info!(transport, written, fallbacks, received, dropped_frames, "one-sided transport stopped: accepts written one-sided, sent as control messages, frames read from our mailbox, frames dropped");
    })?;
    Ok(OneSidedPeers { queue, dropped: 0, thread: Some(thread) })
}

impl<R> Transport<R> {
    /// One pass: send what the core queued, take in what arrived, redial lost peers. Returns
    /// whether anything happened.
    fn turn(&mut self, queue: &Ring<Envelope>) -> bool {
        let mut busy = false;
        while let Some(envelope) = queue.pop() {
            busy = true;
            self.send(envelope);
        }
        busy |= self.poll_mailbox();
        busy |= self.poll_links();
        self.redial();
        busy
    }

    fn send(&mut self, envelope: Envelope) {
        let to = envelope.to.0;
        // Acknowledging a ballot: its owner's one-sided writes must land from now on.
        let acknowledged = match &envelope.msg {
            Message::Promise(p) => Some(p.ballot.owner().0),
            Message::Accepted(a) => Some(a.ballot.owner().0),
            _ => None,
        };
        if acknowledged == Some(to) && self.mailbox.granted() != token_of(to) {
            if let Err(error) = self.mailbox.grant(token_of(to)) {
                tracing::warn!(peer = to, %error, "granting the mailbox to the acknowledged leader failed");
            }
        }
        let Some(out) = self.peers.get_mut(&to) else { return };
        let Some(link) = out.link.as_mut() else { return }; // unreachable: Paxos retransmits
        let result = if matches!(envelope.msg, Message::Accept(_)) {
            write_frame(link.as_mut(), &mut out.cursor, &envelope, &mut self.frame).map(|one_sided| {
                if one_sided {
                    self.written += 1;
                } else {
                    self.fallbacks += 1;
                }
            })
        } else {
            link.send(&envelope)
        };
        if let Err(error) = result {
            tracing::warn!(peer = to, transport = self.transport, %error, "link to peer lost; redialling");
            out.link = None;
            out.next_dial = Instant::now() + REDIAL;
        }
    }

    /// Frames that landed in our mailbox, and control messages from peers.
    fn poll_mailbox(&mut self) -> bool {
        let mut events = Vec::new();
        if let Err(error) = self.mailbox.poll(&mut events) {
            tracing::warn!(%error, "mailbox poll failed (that peer's control connection was closed)");
        }
        let busy = !events.is_empty();
        for event in events {
            let envelope = match event {
                FollowerEvent::Message { envelope, .. } => Some(envelope),
                FollowerEvent::Imm { imm, .. } => self.read_frame(u64::from(imm) * ALIGN as u64),
                FollowerEvent::Landed { .. } => None,
            };
            if let Some(envelope) = envelope {
                self.deliver(envelope);
            }
        }
        busy
    }

    /// Reads and checks the frame at `offset` of our mailbox; None if it was lapped or garbage.
    fn read_frame(&mut self, offset: u64) -> Option<Envelope> {
        let region = self.mailbox.local().len;
        let mut header = [0u8; FRAME_HEADER_BYTES];
        let decoded = self
            .mailbox
            .read(offset, &mut header)
            .map_err(|e| e.to_string())
            .and_then(|_| frame_len(&header).map_err(|e| e.to_string()))
            .and_then(|total| {
                if offset + total as u64 > region {
                    return Err(format!("a {total}-byte frame at {offset} runs past the {region}-byte mailbox"));
                }
                self.frame.resize(total, 0);
                self.mailbox.read(offset, &mut self.frame).map_err(|e| e.to_string())?;
                decode_frame(&self.frame).map(|(envelope, _)| envelope).map_err(|e| e.to_string())
            });
        match decoded {
            Ok(envelope) => {
                self.received += 1;
                Some(envelope)
            }
            Err(error) => {
                self.dropped_frames += 1;
                if self.dropped_frames.is_power_of_two() {
                    tracing::warn!(dropped = self.dropped_frames, %error, "mailbox frame dropped (lapped by its sender, or garbage)");
                }
                None
            }
        }
    }

    fn deliver(&mut self, envelope: Envelope) {
        if envelope.to.0 != self.id || !self.peers.contains_key(&envelope.from.0) {
            tracing::warn!(from = %envelope.from, to = %envelope.to, "misaddressed message on the {} transport; dropped", self.transport);
            return;
        }
        // A full inbox drops the message: the sender retransmits on its next heartbeat.
        let _ = self.inbox.push(Event::Peer(envelope));
    }

    /// Control messages peers sent back over our links, and write failures.
    fn poll_links(&mut self) -> bool {
        let mut busy = false;
        let mut events = Vec::new();
        let mut arrived = Vec::new();
        for (peer, out) in self.peers.iter_mut() {
            let Some(link) = out.link.as_mut() else { continue };
            events.clear();
            let failed = match link.poll(&mut events) {
                Ok(()) => events.iter().find_map(|e| match e {
                    LeaderEvent::Failed { error, .. } => Some(error.to_string()),
                    _ => None,
                }),
                Err(error) => Some(error.to_string()),
            };
            for event in events.drain(..) {
                if let LeaderEvent::Message(envelope) = event {
                    busy = true;
                    arrived.push(envelope);
                }
            }
            if let Some(error) = failed {
                // Fenced by a replica that now follows someone else, or the peer went away: a
                // fresh link learns its current region and grant.
                tracing::info!(peer, transport = self.transport, %error, "one-sided write failed; redialling");
                out.link = None;
                out.next_dial = Instant::now() + REDIAL;
            }
        }
        for envelope in arrived {
            self.deliver(envelope);
        }
        busy
    }

    fn redial(&mut self) {
        let now = Instant::now();
        for (peer, out) in self.peers.iter_mut() {
            if out.link.is_some() || now < out.next_dial {
                continue;
            }
            match (self.dial)(*peer) {
                Ok(link) => {
                    tracing::info!(peer, transport = self.transport, region_bytes = link.remote().len, "linked to peer's mailbox");
                    out.link = Some(link);
                    out.cursor = 0;
                    out.last_error.clear();
                }
                Err(error) => {
                    let error = error.to_string();
                    if error != out.last_error {
                        tracing::warn!(peer, transport = self.transport, %error, "cannot reach peer's mailbox; retrying");
                        out.last_error = error;
                    }
                    out.next_dial = now + REDIAL;
                }
            }
        }
    }
}

/// Stores `envelope` into the link's mailbox at `cursor` (wrapping to the start when it does not
/// fit), the offset in the immediate. A refused write (fenced: the receiver follows another
/// leader; or its immediate queue is full) falls back to the control channel, which the
/// receiver's core judges by ballot as it would any message. Returns whether it went one-sided.
fn write_frame(link: &mut dyn LeaderLink, cursor: &mut u64, envelope: &Envelope, frame: &mut Vec<u8>) -> Result<bool, VerbsError> {
    frame.clear();
    encode_frame(envelope, frame);
    frame.resize(frame.len().next_multiple_of(ALIGN), 0);
    let region = link.remote();
    let len = frame.len() as u64;
    if len > region.len / 4 {
        return link.send(envelope).map(|_| false); // too big to share the ring with others in flight
    }
    if *cursor + len > region.len {
        *cursor = 0;
    }
    let write = Write { key: region.key, offset: *cursor, bytes: frame, imm: Some((*cursor / ALIGN as u64) as u32) };
    match link.post_write(&write) {
        Ok(_) => {
            *cursor += len;
            Ok(true)
        }
        Err(VerbsError::Fenced { .. } | VerbsError::QueueFull { .. }) => link.send(envelope).map(|_| false),
        Err(error) => Err(error),
    }
}

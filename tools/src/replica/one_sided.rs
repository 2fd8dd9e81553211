//! The `shm` and `rdma` replica transports: a thread that drives `decree_verbs::mailbox` (Accepts
//! as one-sided writes into each peer's mailbox, the rest on control channels, fencing by grant)
//! between the core thread's rings, redialling lost peers, with every side channel gated by the
//! cluster secret.

use super::peers::PEER_QUEUE_MESSAGES;
use crate::auth::{self, Peer};
use decree_engine::message::Envelope;
use decree_engine::runtime::idle::Idler;
use decree_engine::runtime::{Event, Inbox, PeerTransport, Placement, Ring, Role};
use decree_verbs::handshake::Stream;
use decree_verbs::mailbox::{MailboxStats, Mailboxes};
use decree_verbs::{FollowerLink, Gate, Handshake, LeaderLink, VerbsError};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use decree_verbs::mailbox::token_of;

/// Longest park of an idle transport thread whose mailbox cannot sleep (rdma: completions are
/// polled), so this bounds the latency a message waits when the thread was asleep.
const MAX_PARK: Duration = Duration::from_micros(200);
/// Longest sleep of a transport whose mailbox can sleep (shm): peers and the core thread wake it,
/// so this only bounds how late a redial or a shutdown is noticed.
const MAX_SLEEP: Duration = Duration::from_millis(10);
/// Longest sleep while a control message is only partly written: the peer's socket takes more
/// as the peer reads, and nothing signals that (each write that moved wakes the peer to read).
const SENDING_SLEEP: Duration = Duration::from_millis(1);
/// A turn longer than this is logged: a follower's election timeout is 150-300 ms.
const SLOW_TURN: Duration = Duration::from_millis(50);
/// Between attempts to reach a peer's mailbox.
const REDIAL: Duration = Duration::from_millis(200);

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
    /// Wakes the transport thread when its mailbox can sleep (shm).
    waker: Option<Arc<dyn decree_verbs::Wake>>,
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
        let pushed = self.queue.push(envelope);
        if let (Ok(()), Some(waker)) = (&pushed, &self.waker) {
            // After the push: the transport thread reads its wake sequence before it looks at
            // the queue, so either it sees the message or the sequence moved and it does not sleep.
            waker.wake();
        }
        if pushed.is_err() {
            self.dropped += 1;
            if self.dropped.is_power_of_two() {
                tracing::warn!(dropped = self.dropped, "transport queue full; dropping messages (retransmitted on heartbeat)");
            }
        }
    }
}

/// The transport thread's state: the mailboxes, and when each unlinked peer is dialled next.
struct Transport<R> {
    transport: &'static str,
    mailboxes: Mailboxes<dyn FollowerLink + Send, dyn LeaderLink + Send>,
    dial: Dial,
    next_dial: BTreeMap<u32, (Instant, String)>,
    inbox: Arc<Inbox<R>>,
}

/// Starts the transport thread for replica `id`: `mailbox` is its own region, `dial` reaches a
/// peer's. Messages from peers go into `inbox`.
pub fn start<R: Send + 'static>(
    id: u32,
    transport: &'static str,
    peers: Vec<u32>,
    (mailbox, dial): (Box<dyn FollowerLink + Send>, Dial),
    inbox: Arc<Inbox<R>>,
    placement: Placement,
    stop: Arc<AtomicBool>,
) -> std::io::Result<OneSidedPeers> {
    let queue = Arc::new(Ring::new(PEER_QUEUE_MESSAGES));
    let mailboxes = Mailboxes::new(id, mailbox, peers);
    let waker = mailboxes.waker();
    let mut state = Transport { transport, mailboxes, dial, next_dial: BTreeMap::new(), inbox };
    let consumer = queue.clone();
    let thread = std::thread::Builder::new().name(format!("decree-{transport}")).spawn(move || {
        placement.pin_current(Role::Io); // the replication role: with the socket threads
        consumer.bind_consumer();
        // Spin a little before parking: links and the mailbox are polled, not signalled.
        let mut idler = Idler::new(64, 0);
        while !stop.load(Ordering::Acquire) {
            match state.mailboxes.wake_seq() {
                // shm: sleep on the mailbox's futex; peers' stores and the core thread's sends
                // (through `OneSidedPeers::send`) wake it. The sequence is read before the pass,
                // so work arriving during it makes the sleep return at once.
                Some(seq) => {
                    if !state.turn(&consumer) {
                        let longest = if state.mailboxes.sending() { SENDING_SLEEP } else { MAX_SLEEP };
                        state.mailboxes.sleep(seq, longest);
                    }
                }
                None if state.turn(&consumer) => idler.reset(),
                None => {
                    let longest = if state.mailboxes.sending() { SENDING_SLEEP } else { MAX_PARK };
                    idler.idle(&consumer.sleeping, || !consumer.is_empty(), longest)
                }
            }
        }
        let MailboxStats { written, fallbacks, received, dropped_frames, unlinked } = state.mailboxes.stats();
        tracing::info!(transport, written, fallbacks, received, dropped_frames, unlinked, "one-sided transport stopped: accepts written one-sided, sent as control messages, frames read from our mailbox, frames dropped, messages with no link");
    })?;
    Ok(OneSidedPeers { queue, dropped: 0, thread: Some(thread), waker })
}

impl<R> Transport<R> {
    /// One pass: send what the core queued, take in what arrived, redial lost peers. Returns
    /// whether anything happened.
    fn turn(&mut self, queue: &Ring<Envelope>) -> bool {
        let started = Instant::now();
        let mut busy = false;
        let mut sent = 0;
        while let Some(envelope) = queue.pop() {
            busy = true;
            sent += 1;
            if let Err(error) = self.mailboxes.send(&envelope) {
                self.lost(envelope.to.0, error.to_string());
            }
        }
        let sending = started.elapsed();
        let inbox = &self.inbox;
        // A full inbox drops the message: the sender retransmits on its next heartbeat.
        let mut received = 0;
        let polled = self.mailboxes.poll(&mut |envelope| {
            received += 1;
            let _ = inbox.post(Event::Peer(envelope));
        });
        let polling = started.elapsed() - sending;
        if polled.busy {
            inbox.serve();
        }
        let took = started.elapsed();
        if took > SLOW_TURN {
            // Peers hear nothing from this replica meanwhile, and it reads none of theirs.
            let (sending_ms, polling_ms) = (sending.as_millis(), polling.as_millis());
            let core_ms = (took - sending - polling).as_millis();
            tracing::warn!(transport = self.transport, took_ms = took.as_millis(), sending_ms, sent, polling_ms, received, core_ms, "slow transport turn");
        }
        for (peer, error) in polled.lost {
            self.lost(peer, error);
        }
        self.redial();
        busy | polled.busy
    }

    fn lost(&mut self, peer: u32, error: String) {
        tracing::info!(peer, transport = self.transport, %error, "link to peer's mailbox lost; redialling");
        self.next_dial.insert(peer, (Instant::now() + REDIAL, String::new()));
    }

    fn redial(&mut self) {
        // Called on every pass of the transport thread: nothing to do (the usual case) costs nothing.
        if self.mailboxes.unlinked().next().is_none() {
            return;
        }
        let now = Instant::now();
        let due: Vec<u32> = self.mailboxes.unlinked().filter(|p| self.next_dial.get(p).is_none_or(|(at, _)| now >= *at)).collect();
        for peer in due {
            match (self.dial)(peer) {
                Ok(link) => {
                    tracing::info!(peer, transport = self.transport, region_bytes = link.remote().len, "linked to peer's mailbox");
                    self.mailboxes.attach(peer, link);
                    self.next_dial.remove(&peer);
                }
                Err(error) => {
                    let error = error.to_string();
                    let last = self.next_dial.get(&peer).map(|(_, e)| e.as_str()).unwrap_or_default();
                    if error != last {
                        tracing::warn!(peer, transport = self.transport, %error, "cannot reach peer's mailbox; retrying");
                    }
                    self.next_dial.insert(peer, (now + REDIAL, error));
                }
            }
        }
    }
}

//! Replica messages over one-sided links: every replica owns one mailbox region (its
//! [`FollowerLink`]) and holds a [`LeaderLink`] to each peer's. Accept messages, the log
//! replication itself, are stored one-sided into the receiver's mailbox as checksummed frames
//! (`decree_engine::codec`), the frame's offset / 8 in the immediate; the receiver's CPU takes no
//! part until it polls. Everything else rides the link's control channel.
//!
//! Fencing: a replica grants its mailbox to the replica whose ballot it acknowledges (when it
//! sends a Promise or Accepted to that ballot's owner), so a deposed leader's one-sided writes are
//! refused by the region (shm) or the NIC (rdma). The engine's core checks ballots as well: the
//! fence is a second line, not the safety argument.
//!
//! The mailbox is a ring without credits: a sender that laps a slow receiver overwrites frames not
//! yet read, which the receiver sees as a checksum mismatch and drops. Paxos retransmits lost
//! messages. Durability is the engine's: an Accepted is sent only once the follower's log write
//! is durable, whatever carried the Accept.
//!
//! No clock and no thread here: the replica server drives it from its transport thread, the
//! simulation (`tests/sim_cluster.rs`) from its seeded loop over `sim` links.

use crate::{FollowerEvent, FollowerLink, LeaderEvent, LeaderLink, LeaderToken, VerbsError, Write};
use decree_engine::codec::{decode_frame, encode_frame, frame_len, FRAME_HEADER_BYTES};
use decree_engine::message::{Envelope, Message};
use std::collections::BTreeMap;

/// Frames start at multiples of this, so the immediate can carry offset / 8 in 32 bits.
const ALIGN: usize = 8;

/// The fence token of replica `id` (zero is nobody).
pub fn token_of(id: u32) -> LeaderToken {
    LeaderToken(u64::from(id) + 1)
}

/// Counters for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MailboxStats {
    /// Accepts stored one-sided into peers' mailboxes.
    pub written: u64,
    /// Accepts sent on the control channel instead (fenced, immediate queue full, too big).
    pub fallbacks: u64,
    /// Frames read out of our own mailbox.
    pub received: u64,
    /// Frames that failed their checksum or addressing (lapped or garbage).
    pub dropped_frames: u64,
    /// Messages dropped because no link to their receiver was up.
    pub unlinked: u64,
}

/// One peer's outbound link.
struct Outbound<L: ?Sized> {
    link: Option<Box<L>>,
    /// Where the next one-sided frame goes in its mailbox.
    cursor: u64,
}

/// A replica's mailbox and its links to its peers' mailboxes.
pub struct Mailboxes<F: FollowerLink + ?Sized, L: LeaderLink + ?Sized> {
    id: u32,
    mailbox: Box<F>,
    peers: BTreeMap<u32, Outbound<L>>,
    frame: Vec<u8>,
    events: Vec<FollowerEvent>,
    link_events: Vec<LeaderEvent>,
    stats: MailboxStats,
    /// Grants that failed, for a warning at 1, 2, 4, 8... of them rather than at every message.
    failed_grants: u64,
}

/// What `poll` found.
#[derive(Debug, Default)]
pub struct Polled {
    /// Something arrived or completed.
    pub busy: bool,
    /// Peers whose link broke (write failed or the connection dropped): attach a fresh one.
    pub lost: Vec<(u32, String)>,
}

impl<F: FollowerLink + ?Sized, L: LeaderLink + ?Sized> Mailboxes<F, L> {
    /// Replica `id` with its own `mailbox`, talking to `peers` (links attached later).
    pub fn new(id: u32, mailbox: Box<F>, peers: impl IntoIterator<Item = u32>) -> Self {
        let peers = peers
            .into_iter()
            .map(|p| {
                (
                    p,
                    Outbound {
                        link: None,
                        cursor: 0,
                    },
                )
            })
            .collect();
        Mailboxes {
            id,
            mailbox,
            peers,
            frame: Vec::with_capacity(64 << 10),
            events: Vec::new(),
            link_events: Vec::new(),
            stats: MailboxStats::default(),
            failed_grants: 0,
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> MailboxStats {
        self.stats
    }

    /// Our mailbox's wake sequence, if it can sleep (read it before `poll`, pass it to `sleep`).
    pub fn wake_seq(&self) -> Option<u32> {
        self.mailbox.wake_seq()
    }

    /// Sleeps until a peer stores or sends into our mailbox (or a `waker` handle rings), or
    /// `timeout`.
    pub fn sleep(&self, seq: u32, timeout: std::time::Duration) {
        self.mailbox.sleep(seq, timeout);
    }

    /// Whether some link holds control bytes its peer's socket has not taken yet (poll again
    /// soon rather than sleep).
    pub fn sending(&self) -> bool {
        self.peers.values().any(|out| out.link.as_ref().is_some_and(|link| link.queued_bytes() > 0))
    }

    /// Interrupts `sleep` from another thread.
    pub fn waker(&self) -> Option<std::sync::Arc<dyn crate::Wake>> {
        self.mailbox.waker()
    }

    /// Peers without a link.
    pub fn unlinked(&self) -> impl Iterator<Item = u32> + '_ {
        self.peers
            .iter()
            .filter(|(_, o)| o.link.is_none())
            .map(|(p, _)| *p)
    }

    /// Uses `link` to reach `peer`'s mailbox (a fresh link writes from the mailbox's start).
    pub fn attach(&mut self, peer: u32, link: Box<L>) {
        if let Some(out) = self.peers.get_mut(&peer) {
            out.link = Some(link);
            out.cursor = 0;
        }
    }

    /// Sends `envelope` to its receiver. An error means the link broke (it is detached; attach
    /// a fresh one); the message is lost, which Paxos tolerates.
    pub fn send(&mut self, envelope: &Envelope) -> Result<(), VerbsError> {
        let to = envelope.to.0;
        // Acknowledging a ballot: its owner's one-sided writes must land from now on.
        let acknowledged = match &envelope.msg {
            Message::Promise(p) => Some(p.ballot.owner().0),
            Message::Accepted(a) => Some(a.ballot.owner().0),
            _ => None,
        };
        if acknowledged == Some(to) && self.mailbox.granted() != token_of(to) {
            // The message still goes: until the grant lands, the leader's stores are refused and
            // it falls back to control messages. It is not this link's failure either.
            if let Err(error) = self.mailbox.grant(token_of(to)) {
                self.failed_grants += 1;
                if self.failed_grants.is_power_of_two() {
                    tracing::warn!(peer = to, %error, failed = self.failed_grants, "granting the mailbox to the acknowledged leader failed");
                }
            }
        }
        let Some(out) = self.peers.get_mut(&to) else {
            return Ok(()); // not a peer: nothing to send it on
        };
        let Some(link) = out.link.as_mut() else {
            self.stats.unlinked += 1;
            return Ok(());
        };
        let result = if matches!(envelope.msg, Message::Accept(_)) {
            write_frame(link.as_mut(), &mut out.cursor, envelope, &mut self.frame).map(
                |one_sided| {
                    if one_sided {
                        self.stats.written += 1;
                    } else {
                        self.stats.fallbacks += 1;
                    }
                },
            )
        } else {
            link.send(envelope)
        };
        if result.is_err() {
            out.link = None;
        }
        result
    }

    /// Takes in what arrived (frames in our mailbox, control messages) and hands each message
    /// addressed to us by a peer to `deliver`; notes links that broke.
    pub fn poll(&mut self, deliver: &mut impl FnMut(Envelope)) -> Polled {
        let mut polled = Polled::default();
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        if let Err(error) = self.mailbox.poll(&mut events) {
            // One peer's control connection closed; the others' events are still good.
            tracing::debug!(%error, "mailbox poll");
        }
        polled.busy |= !events.is_empty();
        for event in events.drain(..) {
            let envelope = match event {
                FollowerEvent::Message { envelope, .. } => Some(envelope),
                FollowerEvent::Imm { imm, .. } => self.read_frame(u64::from(imm) * ALIGN as u64),
                FollowerEvent::Landed { .. } => None,
            };
            if let Some(envelope) = envelope.filter(|e| self.addressed_to_us(e)) {
                deliver(envelope);
            }
        }
        self.events = events;
        let mut link_events = std::mem::take(&mut self.link_events);
        for (peer, out) in self.peers.iter_mut() {
            let Some(link) = out.link.as_mut() else {
                continue;
            };
            link_events.clear();
            let failed = match link.poll(&mut link_events) {
                Ok(()) => link_events.iter().find_map(|e| match e {
                    LeaderEvent::Failed { error, .. } => Some(error.to_string()),
                    _ => None,
                }),
                Err(error) => Some(error.to_string()),
            };
            for event in link_events.drain(..) {
                if let LeaderEvent::Message(envelope) = event {
                    polled.busy = true;
                    if envelope.to.0 == self.id && envelope.from.0 == *peer {
                        deliver(envelope);
                    }
                }
            }
            if let Some(error) = failed {
                // Fenced by a replica that now follows someone else, or the peer went away: a
                // fresh link learns its current region and grant.
                out.link = None;
                polled.lost.push((*peer, error));
            }
        }
        self.link_events = link_events;
        polled
    }

    fn addressed_to_us(&mut self, envelope: &Envelope) -> bool {
        let ok = envelope.to.0 == self.id && self.peers.contains_key(&envelope.from.0);
        if !ok {
            self.stats.dropped_frames += 1;
            tracing::warn!(from = %envelope.from, to = %envelope.to, "misaddressed message in the mailbox; dropped");
        }
        ok
    }

    /// Reads and checks the frame at `offset` of our mailbox; None if it was lapped or garbage.
    fn read_frame(&mut self, offset: u64) -> Option<Envelope> {
        let region = self.mailbox.local().len;
        let mut header = [0u8; FRAME_HEADER_BYTES];
        let frame = &mut self.frame;
        let mailbox = &self.mailbox;
        let decoded = mailbox
            .read(offset, &mut header)
            .map_err(|e| e.to_string())
            .and_then(|_| frame_len(&header).map_err(|e| e.to_string()))
            .and_then(|total| {
                if offset + total as u64 > region {
                    return Err(format!(
                        "a {total}-byte frame at {offset} runs past the {region}-byte mailbox"
                    ));
                }
                frame.resize(total, 0);
                mailbox.read(offset, frame).map_err(|e| e.to_string())?;
                decode_frame(frame)
                    .map(|(envelope, _)| envelope)
                    .map_err(|e| e.to_string())
            });
        match decoded {
            Ok(envelope) => {
                self.stats.received += 1;
                Some(envelope)
            }
            Err(error) => {
                self.stats.dropped_frames += 1;
                if self.stats.dropped_frames.is_power_of_two() {
                    tracing::warn!(dropped = self.stats.dropped_frames, %error, "mailbox frame dropped (lapped by its sender, or garbage)");
                }
                None
            }
        }
    }
}

/// Stores `envelope` into the link's mailbox at `cursor` (wrapping to the start when it does not
/// fit), the offset in the immediate. A refused write (fenced: the receiver follows another
/// leader; or its immediate queue is full) falls back to the control channel, which the
/// receiver's core judges by ballot as it would any message. Returns whether it went one-sided.
fn write_frame<L: LeaderLink + ?Sized>(
    link: &mut L,
    cursor: &mut u64,
    envelope: &Envelope,
    frame: &mut Vec<u8>,
) -> Result<bool, VerbsError> {
    frame.clear();
    encode_frame(envelope, frame);
    frame.resize(frame.len().next_multiple_of(ALIGN), 0);
    let region = link.remote();
    let len = frame.len() as u64;
    if len > region.len / 4 {
        // Too big to share the ring with others in flight.
        return link.send(envelope).map(|_| false);
    }
    if *cursor + len > region.len {
        *cursor = 0;
    }
    let write = Write {
        key: region.key,
        offset: *cursor,
        bytes: frame,
        imm: Some((*cursor / ALIGN as u64) as u32),
    };
    match link.post_write(&write) {
        Ok(_) => {
            *cursor += len;
            Ok(true)
        }
        Err(VerbsError::Fenced { .. } | VerbsError::QueueFull { .. }) => {
            link.send(envelope).map(|_| false)
        }
        Err(error) => Err(error),
    }
}

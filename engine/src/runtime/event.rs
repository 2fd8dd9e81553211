//! What reaches the protocol core thread, and what it answers clients with.

use super::membership_change::MembershipChange;
use crate::core::Status;
use crate::message::Envelope;
use crate::types::Slot;
use crate::types::{ReplicaId, Request};
use bytes::Bytes;

/// One item of the core thread's inbox. `R` is how to answer the client that sent it. A peer
/// message sets its size (160 bytes); boxing it would make it smaller but cost an allocation per
/// message, one per put at one client, on a request path kept free of them.
pub enum Event<R> {
    /// A message from another replica (already authenticated and decoded by the transport).
    Peer(Envelope),
    /// A checkpoint frozen on the core thread finished serializing on a helper thread.
    CheckpointReady(crate::types::Checkpoint),
    /// A client request; `request_id` is echoed in the response.
    Request {
        /// The request.
        request: Request,
        /// Client-chosen id echoed back.
        request_id: u64,
        /// Where the response goes.
        reply_to: R,
    },
    /// A client asks for this replica's status.
    Status {
        /// Client-chosen id echoed back.
        request_id: u64,
        /// Where the response goes.
        reply_to: R,
    },
    /// An operator asks this replica (the leader) to hand leadership to `to` (None: the most
    /// caught-up voter).
    TransferLeadership {
        /// The voter to hand over to.
        to: Option<ReplicaId>,
        /// Client-chosen id echoed back.
        request_id: u64,
        /// Where the response goes.
        reply_to: R,
    },
    /// A read-only request served by this replica once it has applied `min_slot` slots (RSL's
    /// bounded-staleness fast read; any replica, learners included, may serve it).
    FastRead {
        /// The request (its op must be read-only).
        request: Request,
        /// Serve only once this many slots are applied here.
        min_slot: Slot,
        /// Client-chosen id echoed back.
        request_id: u64,
        /// Where the response goes.
        reply_to: R,
    },
    /// An operator asks the leader to edit the configuration; answered by `Response::Admin` with
    /// the slot the change was proposed at.
    ChangeMembership {
        /// The edit.
        change: MembershipChange,
        /// Client-chosen id echoed back.
        request_id: u64,
        /// Where the response goes.
        reply_to: R,
    },
    /// An operator asks this replica to checkpoint its state machine now (the periodic policy's
    /// code path); answered by `Response::Admin` with the checkpoint's slot.
    Checkpoint {
        /// Client-chosen id echoed back.
        request_id: u64,
        /// Where the response goes.
        reply_to: R,
    },
    /// The persistence thread made every ticket up to `upto` durable.
    Persisted {
        /// Highest durable ticket.
        upto: u64,
    },
}

/// What the core thread tells a client. The status is boxed: every answer crosses a ring by copy,
/// one per client request (120 bytes before, 56 now).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// The request executed (or had executed: a retry gets the cached reply).
    Reply {
        /// The request's sequence number.
        seq: u64,
        /// State machine reply bytes.
        payload: Bytes,
    },
    /// This replica does not lead; try `leader` (if known).
    Redirect {
        /// The leader this replica believes in.
        leader: Option<ReplicaId>,
    },
    /// The inbox was full; retry after a short back-off.
    Busy,
    /// Answer to `Event::Status`.
    Status(Box<NodeStatus>),
    /// Answer to an administrative event.
    Admin {
        /// Whether the core accepted it.
        ok: bool,
        /// What happened, for the operator.
        detail: String,
        /// The leader to ask instead, when refused by a non-leader.
        leader: Option<ReplicaId>,
        /// The slot it concerns (a proposed configuration change, a checkpoint), if any.
        slot: Option<Slot>,
    },
}

/// A replica's status as `decree status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// The core's view.
    pub core: Status,
    /// Requests executed by the state machine (duplicates excluded).
    pub executed: u64,
    /// Bytes the log holds (staged included).
    pub log_bytes: u64,
}

/// Delivers responses to one client connection. Must not block the core thread.
pub trait Responder: Send + 'static {
    /// Sends `response` for the request named `request_id`.
    fn respond(&self, request_id: u64, response: Response);
}

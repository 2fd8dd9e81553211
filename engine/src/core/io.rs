//! The seam between the pure core and its driver: what goes in (`Input`) and what comes out
//! (`Command`). The driver executes commands in the order given and feeds completions back.

use crate::membership::Membership;
use crate::message::{Envelope, Message};
use crate::types::{Ballot, Checkpoint, ClientId, ReplicaId, Request, Slot, Value};

/// Something the driver tells the core. `now_ms` travels beside it in `Replica::step`.
#[derive(Clone, Debug)]
pub enum Input {
    /// Time passed; the core checks its election and heartbeat deadlines.
    Tick,
    /// A message from another replica.
    Receive(Envelope),
    /// Client requests that reached this replica (the ingress batches them).
    Propose(Vec<Request>),
    /// An administrator asks to replace the configuration (add, remove, replace members, promote
    /// learners). Only the leader proposes it; the answer comes as `Command::Admin`.
    ChangeMembership(Membership),
    /// A linearizable read at the leader (read-index): answered by `ReadReady` once leadership is
    /// confirmed by a majority after the read arrived and everything chosen before it is applied.
    Read {
        /// The driver's id for the read.
        id: u64,
    },
    /// A bounded-staleness read at any replica (RSL's fast read): answered by `ReadReady` once this
    /// replica has applied at least `min_slot` slots (e.g. the slot of the client's last write).
    FastRead {
        /// The driver's id for the read.
        id: u64,
        /// Serve only once this many slots are applied here.
        min_slot: Slot,
    },
    /// Hand leadership to `to` (or, with `None`, to the most caught-up voter), with no
    /// unavailability beyond about one round trip. Answered with `Command::Admin`.
    TransferLeadership {
        /// The voter to hand over to.
        to: Option<ReplicaId>,
    },
    /// The state machine took a checkpoint of every slot below `checkpoint.slot`. The core stores
    /// it (a `Persist`), then discards the log below it and serves it to replicas that lag behind.
    CheckpointTaken(Checkpoint),
    /// Every persist command with `ticket <= upto` is durable (storages complete in FIFO order).
    Persisted {
        /// Highest durable ticket.
        upto: u64,
    },
}

/// Something the core asks the driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Make `write` durable, then report `Input::Persisted { upto: ticket }`. Tickets rise by one
    /// per command; the storage completes them in order.
    Persist {
        /// Sequence number of this write.
        ticket: u64,
        /// What to write.
        write: DurableWrite,
    },
    /// Send a message. Messages that acknowledge state are only emitted once it is durable.
    Send(Envelope),
    /// Apply the chosen value of `slot` to the state machine. Emitted once per slot, in slot order,
    /// never past the commit index.
    Apply {
        /// The slot being applied.
        slot: Slot,
        /// Its chosen value.
        value: Value,
    },
    /// These requests reached a replica that is not the leader; tell their clients where to go.
    Redirect {
        /// The refused requests' (client, seq).
        requests: Vec<(ClientId, u64)>,
        /// The leader this replica believes in, if any.
        leader: Option<ReplicaId>,
    },
    /// The answer to an administrative input.
    Admin(AdminReply),
    /// Read `id` may now be served from the state machine, which reflects every slot below `slot`.
    ReadReady {
        /// The read.
        id: u64,
        /// Slots applied when it is served (a client passes it as `min_slot` later for monotonic reads).
        slot: Slot,
    },
    /// Read `id` cannot be served here.
    ReadRefused {
        /// The read.
        id: u64,
        /// The leader to ask instead, if known.
        leader: Option<ReplicaId>,
    },
    /// Replace the state machine's state with this checkpoint (received from a peer); later
    /// `Apply` commands continue from `checkpoint.slot`.
    InstallCheckpoint(Checkpoint),
    /// This replica became leader (`true`) or stopped being leader (`false`).
    LeadershipChanged {
        /// Whether it now leads.
        leading: bool,
        /// The ballot it leads, or the ballot it saw that deposed it.
        ballot: Ballot,
    },
}

/// Answers to administrative inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminReply {
    /// The configuration change was proposed at `slot`; it takes effect once that slot commits.
    ReconfigProposed {
        /// Slot of the `Value::Reconfig`.
        slot: Slot,
    },
    /// Leadership is being handed to `to`.
    TransferStarted {
        /// The voter taking over.
        to: ReplicaId,
    },
    /// The change was refused.
    Refused {
        /// Why.
        reason: &'static str,
        /// The leader to ask instead, if this replica is not it.
        leader: Option<ReplicaId>,
    },
}

/// The durable state changes the core orders. Recovery rebuilds a `Durable` from them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DurableWrite {
    /// The acceptor promised this ballot: never accept below it again, even after a restart.
    Promise(Ballot),
    /// Accepted entries (a later entry for the same slot at a higher ballot supersedes an earlier).
    Entries(crate::types::Entries),
    /// Every slot below this is chosen. Written lazily; a lower value after restart is still safe.
    Commit(Slot),
    /// A checkpoint: store it; entries below its slot may then be discarded.
    Checkpoint(Checkpoint),
}

impl Command {
    /// Shorthand for a send.
    pub fn send(from: ReplicaId, to: ReplicaId, msg: Message) -> Command {
        Command::Send(Envelope { from, to, msg })
    }
}

//! Helpers for the handler tests: build replicas, run steps, pick messages out of the commands.

use super::{Command, CoreConfig, DurableWrite, Input, Replica};
use crate::message::{Envelope, Message};
use crate::types::{Ballot, ClientId, ReplicaId, Request, Value};
use bytes::Bytes;

/// A replica of a group of `n` voters (ids 0..n).
pub fn replica(id: u32, n: u32) -> Replica {
    let voters = (0..n).map(ReplicaId).collect();
    Replica::new(CoreConfig::new(ReplicaId(id), voters))
}

/// Runs one step and returns the commands.
pub fn step(replica: &mut Replica, now_ms: u64, input: Input) -> Vec<Command> {
    let mut out = Vec::new();
    replica.step(now_ms, input, &mut out);
    out
}

/// Delivers `msg` from `from`.
pub fn deliver(replica: &mut Replica, now_ms: u64, from: u32, msg: Message) -> Vec<Command> {
    let to = replica.id();
    step(replica, now_ms, Input::Receive(Envelope { from: ReplicaId(from), to, msg }))
}

/// The messages sent, with their receivers.
pub fn sent(commands: &[Command]) -> Vec<(ReplicaId, Message)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Send(envelope) => Some((envelope.to, envelope.msg.clone())),
            _ => None,
        })
        .collect()
}

/// The persist commands: (ticket, write).
pub fn persists(commands: &[Command]) -> Vec<(u64, DurableWrite)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Persist { ticket, write } => Some((*ticket, write.clone())),
            _ => None,
        })
        .collect()
}

/// Completes every persist in `commands`.
pub fn persist_all(replica: &mut Replica, now_ms: u64, commands: &[Command]) -> Vec<Command> {
    match persists(commands).last() {
        Some((ticket, _)) => step(replica, now_ms, Input::Persisted { upto: *ticket }),
        None => Vec::new(),
    }
}

/// A batch of one request.
pub fn batch(client: u64, seq: u64, op: &str) -> Value {
    Value::Batch(crate::batch::Batch::from_requests(&[request(client, seq, op)]))
}

/// One request.
pub fn request(client: u64, seq: u64, op: &str) -> Request {
    Request { client: ClientId(client), seq, op: Bytes::from(op.to_string()) }
}

/// Ballot `round` of replica `id`.
pub fn ballot(round: u64, id: u32) -> Ballot {
    Ballot::new(round, ReplicaId(id))
}

/// Makes replica 0 of a 3-group the leader at round 1 with empty logs; returns it.
pub fn leader_of_three() -> Replica {
    leader_of_three_with(|_| {})
}

/// `leader_of_three` with its configuration edited first.
pub fn leader_of_three_with(edit: impl FnOnce(&mut CoreConfig)) -> Replica {
    let mut config = CoreConfig::new(ReplicaId(0), (0..3).map(ReplicaId).collect());
    edit(&mut config);
    let mut r = Replica::new(config);
    step(&mut r, 0, Input::Tick); // arms the election timer
    let out = step(&mut r, 1_000, Input::Tick);
    assert!(sent(&out).iter().any(|(_, m)| matches!(m, Message::Prepare(_))), "election started");
    let out = persist_all(&mut r, 1_000, &out);
    assert!(out.is_empty() || !r.status().leading);
    let promise = crate::message::Promise { ballot: ballot(1, 0), commit: 0, log_base: 0, entries: vec![] };
    let out = deliver(&mut r, 1_001, 1, Message::Promise(promise));
    assert!(r.status().leading, "replica 0 leads after a majority of promises");
    let _ = persist_all(&mut r, 1_001, &out);
    r
}

/// A prepare for `ballot` from slot 0 (not a transfer).
pub fn prepare(ballot: Ballot) -> Message {
    Message::Prepare(crate::message::Prepare { ballot, from_slot: 0, transfer: false })
}

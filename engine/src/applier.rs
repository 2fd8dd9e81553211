//! Applies committed slots to a state machine exactly once per (client, seq): a retried request
//! that already executed gets the cached reply instead of executing again.

use crate::batch::RequestRef;
use crate::flat_table::FlatTable;
use crate::membership::Membership;
use crate::state_machine::StateMachine;
use crate::types::{Checkpoint, ClientId, Slot, Value};
use bytes::Bytes;
use hashbrown::hash_table::Entry;
use serde::{Deserialize, Serialize};

/// Requests whose state the state machine is asked to load (`StateMachine::prefetch`), and whose
/// clients' sessions are prefetched, before any of them executes. Looked up back to back, their
/// cache misses overlap: the out-of-order core keeps several loads in flight. Spread between whole
/// requests (a lookup four requests ahead), about one was in flight, and a follower's cycles per op
/// did not move; grouped by 8 they fell by 10-35% (session 12, docs/benchmarks.md).
const PREFETCH_GROUP: usize = 8;

/// What applying one request produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Executed now; this is its reply.
    Executed(Bytes),
    /// Executed before (a retry); this is the cached reply.
    Duplicate(Bytes),
    /// Older than the client's latest executed request: the client has moved on.
    Stale,
}

/// One request's result, for replying to its client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The client.
    pub client: ClientId,
    /// Its sequence number.
    pub seq: u64,
    /// What happened.
    pub outcome: Outcome,
}

/// A state machine plus the session table that suppresses duplicates. The session table is part of
/// the replicated state: every replica builds the same one from the same log.
pub struct Applier<S> {
    state_machine: S,
    /// Hashed, not ordered: one probe per request (the ordered map's walk missed the cache under a
    /// large state). Nothing iterates it except a checkpoint, which sorts.
    sessions: FlatTable<ClientId, (u64, Bytes)>,
    next_slot: Slot,
    executed_count: u64,
    membership: Membership,
    config_slot: Option<Slot>,
}

/// What a checkpoint's data holds: the session table and the state machine's own serialization.
#[derive(Serialize, Deserialize)]
struct Image {
    sessions: Vec<(ClientId, u64, Bytes)>,
    state: Bytes,
}

impl<S: StateMachine> Applier<S> {
    /// Wraps `state_machine`, expecting slot 0 next, in the initial configuration `membership`.
    pub fn new(state_machine: S, membership: Membership) -> Self {
        Applier {
            state_machine,
            sessions: FlatTable::default(),
            next_slot: 0,
            executed_count: 0,
            membership,
            config_slot: None,
        }
    }

    /// Rebuilds an applier from a checkpoint; `Err` if its data does not decode.
    pub fn from_checkpoint(state_machine: S, checkpoint: &Checkpoint) -> Result<Self, String> {
        let mut applier = Applier::new(state_machine, checkpoint.membership.clone());
        applier.install(checkpoint)?;
        Ok(applier)
    }

    /// Replaces the applied state with `checkpoint` (received from a peer); later applies continue
    /// from its slot.
    pub fn install(&mut self, checkpoint: &Checkpoint) -> Result<(), String> {
        let image: Image = postcard::from_bytes(&checkpoint.data)
            .map_err(|e| format!("checkpoint at slot {} does not decode: {e}", checkpoint.slot))?;
        self.state_machine.load_checkpoint(&image.state)?;
        self.sessions = image.sessions.into_iter().map(|(client, seq, reply)| (client, (seq, reply))).collect();
        self.next_slot = checkpoint.slot;
        self.membership = checkpoint.membership.clone();
        self.config_slot = checkpoint.config_slot;
        Ok(())
    }

    /// A checkpoint of everything applied so far (state, sessions, configuration).
    pub fn checkpoint(&mut self) -> Checkpoint {
        self.freeze_checkpoint().finish()
    }

    /// Freezes a checkpoint of everything applied so far; `finish` (on any thread) serializes it.
    pub fn freeze_checkpoint(&mut self) -> FrozenCheckpoint {
        FrozenCheckpoint {
            slot: self.next_slot,
            membership: self.membership.clone(),
            config_slot: self.config_slot,
            sessions: self.sessions.iter().map(|(client, (seq, reply))| (*client, *seq, reply.clone())).collect(),
            state: self.state_machine.freeze(),
        }
    }

    /// Applies the chosen value of `slot`; slots must come in order, each once.
    pub fn apply(&mut self, slot: Slot, value: &Value, results: &mut Vec<Applied>) {
        assert_eq!(slot, self.next_slot, "contract violated: apply-in-slot-order");
        self.next_slot += 1;
        if let Value::Reconfig(membership) = value {
            self.membership = membership.clone();
            self.config_slot = Some(slot);
            self.state_machine.on_configuration_change(membership);
        }
        let Value::Batch(requests) = value else {
            return;
        };
        // Decoded a group at a time, so the loads run back to back; then the group executes.
        let (mut requests, mut buffer) = (requests.iter(), [None; PREFETCH_GROUP]);
        loop {
            let decoded = buffer.iter_mut().zip(requests.by_ref()).map(|(slot, request)| *slot = Some(request)).count();
            if decoded == 0 {
                return;
            }
            let group = buffer[..decoded].iter().flatten();
            group.clone().for_each(|request| {
                self.sessions.prefetch(request.client);
                self.state_machine.prefetch(request.op);
            });
            group.for_each(|request| self.apply_request(*request, results));
        }
    }

    /// Executes one request unless it already ran (a retry) or is older than its client's latest.
    fn apply_request(&mut self, request: RequestRef<'_>, results: &mut Vec<Applied>) {
        // A client's entry: (client, (its latest executed seq, that request's reply)).
        let outcome = match self.sessions.entry(request.client) {
            Entry::Occupied(held) if held.get().1.0 == request.seq => Outcome::Duplicate(held.get().1.1.clone()),
            Entry::Occupied(held) if held.get().1.0 > request.seq => Outcome::Stale,
            session => {
                let reply = self.state_machine.execute(request.op);
                self.executed_count += 1;
                let latest = (request.seq, reply.clone());
                match session {
                    Entry::Occupied(mut held) => held.get_mut().1 = latest,
                    Entry::Vacant(free) => drop(free.insert((request.client, latest))),
                }
                Outcome::Executed(reply)
            }
        };
        results.push(Applied { client: request.client, seq: request.seq, outcome });
    }

    /// The next slot expected.
    pub fn next_slot(&self) -> Slot {
        self.next_slot
    }

    /// Requests executed (duplicates excluded).
    pub fn executed_count(&self) -> u64 {
        self.executed_count
    }

    /// The wrapped state machine.
    pub fn state_machine(&self) -> &S {
        &self.state_machine
    }

    /// The wrapped state machine, for callbacks.
    pub fn state_machine_mut(&mut self) -> &mut S {
        &mut self.state_machine
    }
}

/// A checkpoint whose state is frozen but not yet serialized.
pub struct FrozenCheckpoint {
    slot: Slot,
    membership: Membership,
    config_slot: Option<Slot>,
    sessions: Vec<(ClientId, u64, Bytes)>,
    state: crate::state_machine::Frozen,
}

impl FrozenCheckpoint {
    /// The slot the checkpoint covers (every slot below it).
    pub fn slot(&self) -> Slot {
        self.slot
    }

    /// Serializes: the expensive part, safe to run on another thread.
    pub fn finish(mut self) -> Checkpoint {
        // Sorted by client, so replicas with the same state write the same bytes.
        self.sessions.sort_unstable_by_key(|(client, _, _)| *client);
        let image = Image { sessions: self.sessions, state: (self.state)() };
        let data = postcard::to_stdvec(&image).expect("encoding into a Vec cannot fail");
        Checkpoint {
            slot: self.slot,
            membership: self.membership,
            config_slot: self.config_slot,
            data: Bytes::from(data),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Batch;
    use crate::kv::{KvOp, KvReply, KvStore};
    use crate::types::Request;

    fn put(client: u64, seq: u64, value: &'static str) -> Request {
        let op = KvOp::Put { key: Bytes::from_static(b"k"), value: Bytes::from_static(value.as_bytes()) };
        Request { client: ClientId(client), seq, op: op.encode() }
    }

    #[test]
    fn replicas_that_applied_the_same_slots_write_the_same_checkpoint_bytes() {
        let batch: Vec<Request> = (0..200).map(|client| put(client * 7919 % 1000, 1, "v")).collect();
        let value = Value::Batch(Batch::from_requests(&batch));
        let checkpoint = || {
            let mut applier = Applier::new(KvStore::default(), Membership::new(vec![crate::types::ReplicaId(0)]));
            applier.apply(0, &value, &mut Vec::new());
            applier.checkpoint()
        };
        // Each session table is seeded differently, so only the sort makes these equal.
        assert_eq!(checkpoint().data, checkpoint().data);
        let restored = Applier::from_checkpoint(KvStore::default(), &checkpoint()).unwrap();
        assert_eq!(restored.sessions.len(), 200);
    }

    #[test]
    fn a_retried_request_executes_once_and_gets_the_cached_reply() {
        let mut applier = Applier::new(KvStore::default(), Membership::new(vec![crate::types::ReplicaId(0)]));
        let mut out = Vec::new();
        applier.apply(0, &Value::Batch(Batch::from_requests(&[put(1, 1, "a")])), &mut out);
        applier.apply(1, &Value::Batch(Batch::from_requests(&[put(2, 1, "b"), put(1, 1, "a")])), &mut out);
        assert_eq!(applier.executed_count(), 2);
        assert_eq!(out[2].outcome, Outcome::Duplicate(KvReply::Done.encode()));
        // The retry did not overwrite b with a again.
        let mut probe = applier.state_machine().clone();
        let got = probe.apply_op(KvOp::Get { key: Bytes::from_static(b"k") });
        assert_eq!(got, KvReply::Value(Some(Bytes::from_static(b"b"))));
    }

    #[test]
    fn a_request_older_than_the_clients_latest_is_stale() {
        let mut applier = Applier::new(KvStore::default(), Membership::new(vec![crate::types::ReplicaId(0)]));
        let mut out = Vec::new();
        applier.apply(0, &Value::Batch(Batch::from_requests(&[put(1, 2, "new"), put(1, 1, "old")])), &mut out);
        assert_eq!(out[1].outcome, Outcome::Stale);
        assert_eq!(applier.executed_count(), 1);
    }

    /// Records the order of `prefetch` and `execute` calls (op = one byte, its request's number).
    #[derive(Default)]
    struct CallLog {
        calls: std::cell::RefCell<Vec<(&'static str, u8)>>,
    }

    impl StateMachine for CallLog {
        fn execute(&mut self, op: &[u8]) -> Bytes {
            self.calls.get_mut().push(("execute", op[0]));
            Bytes::new()
        }
        fn prefetch(&self, op: &[u8]) {
            self.calls.borrow_mut().push(("prefetch", op[0]));
        }
        fn save_checkpoint(&self) -> Bytes {
            Bytes::new()
        }
        fn load_checkpoint(&mut self, _: &[u8]) -> Result<(), String> {
            Ok(())
        }
    }

    #[test]
    fn every_request_is_prefetched_once_a_group_ahead_of_its_execution() {
        let requests: Vec<Request> =
            (0..20u8).map(|n| Request { client: ClientId(n as u64), seq: 1, op: Bytes::from(vec![n]) }).collect();
        let mut applier = Applier::new(CallLog::default(), Membership::new(vec![crate::types::ReplicaId(0)]));
        applier.apply(0, &Value::Batch(Batch::from_requests(&requests)), &mut Vec::new());
        let calls = applier.state_machine().calls.borrow().clone();
        let expected: Vec<(&str, u8)> = (0..20u8)
            .collect::<Vec<_>>()
            .chunks(PREFETCH_GROUP)
            .flat_map(|group| {
                let prefetches = group.iter().map(|&n| ("prefetch", n));
                prefetches.chain(group.iter().map(|&n| ("execute", n))).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(calls, expected);
    }

    #[test]
    #[should_panic(expected = "apply-in-slot-order")]
    fn slots_out_of_order_break_a_contract() {
        let mut applier = Applier::new(KvStore::default(), Membership::new(vec![crate::types::ReplicaId(0)]));
        applier.apply(1, &Value::Noop, &mut Vec::new());
    }
}

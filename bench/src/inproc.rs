//! A fixed, deterministic workload for instruction counting: three `decree_engine::core::Replica`s
//! in one thread, messages framed with the engine's codec (as the tcp transport does) through an
//! in-memory FIFO network, storage that completes every persist at once, and a `KvStore` applier
//! per replica. `clients` sessions keep one put in flight each; the leader proposes whatever
//! arrived since its last step as one batch. No clock, thread or random source outside the seeded
//! core, so the instruction count is the same on every machine for the same build.

use bytes::Bytes;
use decree_engine::applier::{Applier, Outcome};
use decree_engine::codec::{decode_frame, encode_frame};
use decree_engine::core::{Command, CoreConfig, Input, Replica};
use decree_engine::kv::{KvOp, KvStore};
use decree_engine::membership::Membership;
use decree_engine::types::{ClientId, ReplicaId, Request};
use std::collections::VecDeque;

/// The workload's shape.
#[derive(Clone, Copy, Debug)]
pub struct InprocSpec {
    /// Committed puts to run after the leader is elected.
    pub ops: u64,
    /// Sessions with one put in flight each (the batch size the leader sees).
    pub clients: usize,
    /// Value size.
    pub payload_bytes: usize,
    /// The core's batch limit (requests per proposed value).
    pub max_batch_requests: usize,
}

/// What a run did (for a sanity check that it ran what was asked).
#[derive(Debug, PartialEq, Eq)]
pub struct InprocOutcome {
    /// Puts the leader applied and answered.
    pub committed: u64,
    /// Messages that went through the codec.
    pub messages: u64,
    /// Core steps taken.
    pub steps: u64,
}

const REPLICAS: u32 = 3;
/// Keys the puts cycle through: few, so the puts measured (past the first N) overwrite keys, as
/// a long-running store's puts mostly do (10,000 until the KV store's overwrite path was tuned:
/// then every measured put created a key).
const DISTINCT_KEYS: u64 = 1_000;
/// Bound on core steps per committed op, so a stuck run fails instead of spinning.
const MAX_STEPS_PER_OP: u64 = 1_000;

struct Node {
    core: Replica,
    applier: Applier<KvStore>,
}

/// Runs the workload; panics (naming the invariant) if the cluster stops making progress.
pub fn run(spec: InprocSpec) -> InprocOutcome {
    let voters: Vec<ReplicaId> = (0..REPLICAS).map(ReplicaId).collect();
    let mut nodes: Vec<Node> = voters
        .iter()
        .map(|id| {
            let mut config = CoreConfig::new(*id, voters.clone());
            config.max_batch_requests = spec.max_batch_requests;
            Node {
                core: Replica::new(config),
                applier: Applier::new(KvStore::default(), Membership::new(voters.clone())),
            }
        })
        .collect();
    let mut inbox: VecDeque<(usize, Input)> = VecDeque::new();
    let (mut commands, mut applied, mut wire) = (Vec::new(), Vec::new(), Vec::new());
    let mut outcome = InprocOutcome {
        committed: 0,
        messages: 0,
        steps: 0,
    };
    let mut leader: Option<usize> = None;
    let mut seqs = vec![0u64; spec.clients];
    let mut proposals: Vec<Request> = Vec::new();
    // Client-side encoding is not the cluster's cost: encode the operations once, up front.
    let value = Bytes::from(vec![b'x'; spec.payload_bytes]);
    let ops: Vec<Bytes> = (0..DISTINCT_KEYS)
        .map(|k| {
            KvOp::Put {
                key: Bytes::from(format!("key-{k:06}").into_bytes()),
                value: value.clone(),
            }
            .encode()
        })
        .collect();
    let mut issued = 0u64;
    let mut now_ms = 0u64;
    let step_bound = (spec.ops + 1_000) * MAX_STEPS_PER_OP;
    let next_request = |client: usize, seqs: &mut Vec<u64>, issued: &mut u64| {
        seqs[client] += 1;
        *issued += 1;
        Request {
            client: ClientId(client as u64 + 1),
            seq: seqs[client],
            op: ops[(*issued % DISTINCT_KEYS) as usize].clone(),
        }
    };
    while outcome.committed < spec.ops {
        let Some((node, input)) = inbox.pop_front() else {
            if let (Some(l), false) = (leader, proposals.is_empty()) {
                inbox.push_back((l, Input::Propose(std::mem::take(&mut proposals))));
            } else {
                // Quiet: let time pass (elections, heartbeats, commit propagation).
                now_ms += 5;
                inbox.extend((0..nodes.len()).map(|n| (n, Input::Tick)));
            }
            continue;
        };
        outcome.steps += 1;
        assert!(
            outcome.steps < step_bound,
            "inproc-progress: {} steps for {} committed ops",
            outcome.steps,
            outcome.committed
        );
        nodes[node].core.step(now_ms, input, &mut commands);
        if proposals.capacity() == 0 {
            // The leader hands back the buffer of the proposal it took, as the runtime's driver reuses it.
            proposals = nodes[node].core.take_request_buffer();
        }
        let mut persist_upto = None;
        for command in commands.drain(..) {
            match command {
                Command::Persist { ticket, .. } => persist_upto = Some(ticket),
                Command::Send(envelope) => {
                    wire.clear();
                    encode_frame(&envelope, &mut wire);
                    let (received, _) =
                        decode_frame(&wire).expect("inproc-codec: a frame we encoded decodes");
                    outcome.messages += 1;
                    inbox.push_back((received.to.0 as usize, Input::Receive(received)));
                }
                Command::Apply { slot, value } => {
                    nodes[node].applier.apply(slot, &value, &mut applied);
                    for result in applied.drain(..) {
                        if Some(node) != leader || matches!(result.outcome, Outcome::Stale) {
                            continue;
                        }
                        outcome.committed += 1;
                        let client = result.client.0 as usize - 1;
                        if issued < spec.ops + spec.clients as u64 && result.seq == seqs[client] {
                            proposals.push(next_request(client, &mut seqs, &mut issued));
                        }
                    }
                }
                Command::LeadershipChanged { leading: true, .. } => {
                    leader = Some(node);
                    // Every session's request goes to the new leader (the first time: the first puts).
                    proposals = (0..spec.clients)
                        .map(|c| next_request(c, &mut seqs, &mut issued))
                        .collect();
                }
                _ => {}
            }
        }
        if let Some(upto) = persist_upto {
            inbox.push_back((node, Input::Persisted { upto }));
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_the_requested_operations_deterministically() {
        let spec = InprocSpec {
            ops: 500,
            clients: 16,
            payload_bytes: 64,
            max_batch_requests: 1024,
        };
        let (a, b) = (run(spec), run(spec));
        assert!(a.committed >= 500);
        assert!(a.messages > 0);
        assert_eq!(a, b, "same spec, same run");
    }
}

//! A linearizability checker: Wing & Gong's search with Lowe's memoization (the algorithm behind
//! Porcupine and Knossos' "wgl"). Written here because the available crates either need their own
//! actor framework (stateright) or search without memoization, which cannot finish histories of
//! hundreds of concurrent operations.

use std::collections::HashSet;
use std::hash::Hash;

/// A sequential specification: the state an object starts in and what each operation returns.
pub trait Model {
    /// The object's state.
    type State: Clone + Eq + Hash;
    /// An operation's input.
    type Op;
    /// An operation's output.
    type Out: PartialEq;
    /// The initial state.
    fn init() -> Self::State;
    /// Runs `op` on `state` sequentially: its output and the next state.
    fn step(state: &Self::State, op: &Self::Op) -> (Self::Out, Self::State);
}

/// One completed operation in a concurrent history, with real-time bounds.
#[derive(Clone, Debug)]
pub struct Operation<Op, Out> {
    /// When the client invoked it.
    pub call_time: u64,
    /// When the client saw the response (strictly after `call_time`).
    pub return_time: u64,
    /// What was invoked.
    pub op: Op,
    /// What came back.
    pub out: Out,
}

/// Why a history is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotLinearizable {
    /// Length of the longest prefix of operations (by call order) that could be linearized.
    pub operations: usize,
}

const NONE: usize = usize::MAX;

struct Node {
    prev: usize,
    next: usize,
    op: usize,
    is_call: bool,
    partner: usize,
}

/// Checks that `history` is linearizable with respect to `M`.
pub fn check<M: Model>(history: &[Operation<M::Op, M::Out>]) -> Result<(), NotLinearizable> {
    if history.is_empty() {
        return Ok(());
    }
    // Event list: calls and returns by time; a call at the same instant as a return goes first,
    // so touching operations count as concurrent (the permissive reading).
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(history.len() * 2);
    for (index, operation) in history.iter().enumerate() {
        assert!(operation.call_time <= operation.return_time, "operation returns before its call");
        events.push((operation.call_time, true, index));
        events.push((operation.return_time, false, index));
    }
    events.sort_by_key(|(time, is_call, index)| (*time, !*is_call, *index));
    // Node 0 is the head sentinel.
    let mut nodes: Vec<Node> = vec![Node { prev: NONE, next: 1, op: NONE, is_call: false, partner: NONE }];
    let mut call_node = vec![NONE; history.len()];
    for (position, (_, is_call, op)) in events.iter().enumerate() {
        let id = position + 1;
        let next = if position + 1 < events.len() { id + 1 } else { NONE };
        nodes.push(Node { prev: id - 1, next, op: *op, is_call: *is_call, partner: NONE });
        if *is_call {
            call_node[*op] = id;
        } else {
            let call = call_node[*op];
            nodes[call].partner = id;
            nodes[id].partner = call;
        }
    }
    let words = history.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, M::State)> = HashSet::new();
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut state = M::init();
    let mut entry = nodes[0].next;
    let mut best = 0;
    while nodes[0].next != NONE {
        let node = &nodes[entry];
        if node.is_call {
            let operation = &history[node.op];
            let (out, next_state) = M::step(&state, &operation.op);
            if out == operation.out {
                let mut candidate = linearized.clone();
                candidate[node.op / 64] |= 1 << (node.op % 64);
                if cache.insert((candidate.clone(), next_state.clone())) {
                    stack.push((entry, std::mem::replace(&mut state, next_state)));
                    linearized = candidate;
                    best = best.max(stack.len());
                    lift(&mut nodes, entry);
                    entry = nodes[0].next;
                    continue;
                }
            }
            entry = nodes[entry].next;
        } else {
            // A return with its call not yet linearized: undo the last choice.
            let Some((call, saved)) = stack.pop() else {
                return Err(NotLinearizable { operations: best });
            };
            state = saved;
            let op = nodes[call].op;
            linearized[op / 64] &= !(1 << (op % 64));
            unlift(&mut nodes, call);
            entry = nodes[call].next;
        }
    }
    Ok(())
}

/// Removes a call and its return from the list (their own links are kept for `unlift`).
fn lift(nodes: &mut [Node], call: usize) {
    let ret = nodes[call].partner;
    for id in [call, ret] {
        let (prev, next) = (nodes[id].prev, nodes[id].next);
        nodes[prev].next = next;
        if next != NONE {
            nodes[next].prev = prev;
        }
    }
}

/// Puts back what `lift` removed, in reverse order.
fn unlift(nodes: &mut [Node], call: usize) {
    let ret = nodes[call].partner;
    for id in [ret, call] {
        let (prev, next) = (nodes[id].prev, nodes[id].next);
        nodes[prev].next = id;
        if next != NONE {
            nodes[next].prev = id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{KvOp, KvReply};
    use crate::sim::kv_model::KvRegister;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn key() -> Bytes {
        Bytes::from_static(b"k")
    }
    fn put(v: &'static str) -> KvOp {
        KvOp::Put { key: key(), value: Bytes::from_static(v.as_bytes()) }
    }
    fn get() -> KvOp {
        KvOp::Get { key: key() }
    }
    fn read(v: Option<&'static str>) -> KvReply {
        KvReply::Value(v.map(|v| Bytes::from_static(v.as_bytes())))
    }
    fn op(call: u64, ret: u64, op: KvOp, out: KvReply) -> Operation<KvOp, KvReply> {
        Operation { call_time: call, return_time: ret, op, out }
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_rejected() {
        let history = vec![op(0, 10, put("1"), KvReply::Done), op(20, 30, get(), read(None))];
        assert!(check::<KvRegister>(&history).is_err());
    }

    #[test]
    fn reads_that_disagree_on_the_order_of_two_writes_are_rejected() {
        // Two concurrent writes; one reader sees 1 then 2, another (after both reads began) sees 2 then 1.
        let history = vec![
            op(0, 100, put("1"), KvReply::Done),
            op(0, 100, put("2"), KvReply::Done),
            op(10, 20, get(), read(Some("1"))),
            op(30, 40, get(), read(Some("2"))),
            op(50, 60, get(), read(Some("1"))),
        ];
        // 1,2,1 needs the register to go back to 1 with no third write: not linearizable.
        assert!(check::<KvRegister>(&history).is_err());
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        let history = vec![
            op(0, 100, put("1"), KvReply::Done),
            op(5, 50, get(), read(Some("1"))),
            op(60, 70, get(), read(Some("1"))),
            op(0, 10, get(), read(None)),
        ];
        assert!(check::<KvRegister>(&history).is_ok());
    }

    #[test]
    fn a_failed_cas_must_report_the_value_it_saw() {
        let cas = KvOp::Cas { key: key(), expected: None, new: Bytes::from_static(b"2") };
        let lying = KvReply::Cas { ok: false, previous: None };
        let history = vec![op(0, 10, cas, lying)];
        assert!(check::<KvRegister>(&history).is_err(), "cas(None) on an absent key must succeed");
    }

    proptest! {
        /// Any history produced by a sequential execution whose operations are then stretched over
        /// overlapping real-time intervals (each still covering its true instant) is linearizable.
        #[test]
        fn histories_of_a_real_sequential_execution_are_accepted(
            ops in prop::collection::vec((0u8..3, 0u8..4, 0u64..50, 0u64..50), 1..60)
        ) {
            let mut state: Option<Bytes> = None;
            let mut history = Vec::new();
            for (index, (kind, value, before, after)) in ops.into_iter().enumerate() {
                let instant = 100 + index as u64 * 10;
                let value = Bytes::from(vec![b'0' + value]);
                let op = match kind {
                    0 => KvOp::Get { key: key() },
                    1 => KvOp::Put { key: key(), value },
                    _ => KvOp::Cas { key: key(), expected: state.clone(), new: value },
                };
                let (out, next) = KvRegister::step(&state, &op);
                state = next;
                history.push(Operation { call_time: instant - before, return_time: instant + after, op, out });
            }
            prop_assert!(check::<KvRegister>(&history).is_ok());
        }
    }
}

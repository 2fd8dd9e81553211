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

//! The key-value store's sequential specification, one register per key, for the checker.

use super::linearizability::Model;
use crate::kv::{KvOp, KvReply};
use bytes::Bytes;

/// One key of the KV store viewed as a register (histories are checked per key).
pub struct KvRegister;

impl Model for KvRegister {
    type State = Option<Bytes>;
    type Op = KvOp;
    type Out = KvReply;

    fn init() -> Self::State {
        None
    }

    fn step(state: &Self::State, op: &KvOp) -> (KvReply, Self::State) {
        match op {
            KvOp::Get { .. } => (KvReply::Value(state.clone()), state.clone()),
            KvOp::Put { value, .. } => (KvReply::Done, Some(value.clone())),
            KvOp::Cas { expected, new, .. } => {
                let ok = state == expected;
                let next = if ok { Some(new.clone()) } else { state.clone() };
                (KvReply::Cas { ok, previous: state.clone() }, next)
            }
        }
    }
}

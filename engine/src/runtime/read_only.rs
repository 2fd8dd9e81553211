//! Read-only operations served without the log: the driver asks the core for a read-index
//! (`Input::Read`: leadership confirmed by a majority after the read arrived, everything chosen
//! before it applied) and then runs the query against the applied state. Cheaper than a log
//! round (no persist, no replication of the operation) and still linearizable.

use crate::kv::{KvOp, KvStore};
use bytes::Bytes;

/// A state machine whose read-only operations the runtime may serve by read-index.
pub trait ReadOnly {
    /// Whether `op` only reads; only those skip the log.
    fn is_read_only(op: &[u8]) -> bool;
    /// Runs a read-only `op` against the current state and returns its reply.
    fn query(&mut self, op: &[u8]) -> Bytes;
}

impl ReadOnly for KvStore {
    fn is_read_only(op: &[u8]) -> bool {
        // Borrowing decode: asked of every request on the core thread, so it must not copy.
        matches!(KvOp::decode_borrowed(op), Ok(KvOp::Get { .. }))
    }

    fn query(&mut self, op: &[u8]) -> Bytes {
        match KvOp::decode_borrowed(op) {
            // A Get leaves the store unchanged.
            Ok(KvOp::Get { key }) => self.get_reply(key),
            _ => unreachable!("contract violated: query-only-read-only-ops"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_gets_are_read_only() {
        let key = Bytes::from_static(b"k");
        assert!(KvStore::is_read_only(&KvOp::Get { key: key.clone() }.encode()));
        assert!(!KvStore::is_read_only(&KvOp::Put { key: key.clone(), value: Bytes::from_static(b"v") }.encode()));
        let cas = KvOp::Cas { key, expected: None, new: Bytes::from_static(b"v") };
        assert!(!KvStore::is_read_only(&cas.encode()));
        assert!(!KvStore::is_read_only(&[0xff, 0xff]), "bytes that do not decode go through the log");
    }
}

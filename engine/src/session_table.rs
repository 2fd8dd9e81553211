//! The applier's session table: each client's latest executed request and its reply.
//!
//! A flat hash table, so that the applier can start loading a client's entry a group of requests
//! before it executes them (`prefetch`), as it does for the state machine's keys. Under load the
//! table (one entry per client, on every replica) falls out of cache between a client's requests,
//! and its lookup was most of the replica loop's own time (perf annotate, docs/benchmarks.md,
//! session 15).

use crate::types::ClientId;
use bytes::Bytes;
use foldhash::fast::RandomState;
use hashbrown::hash_table::{Entry, HashTable};
use prefetch_index::prefetch_index;
use std::hash::BuildHasher;

/// One client's latest executed request.
///
/// `repr(C)` with the reply between the two numbers: an entry spans at most two cache lines, one
/// holding `client` and the other `seq`, so prefetching those two fields loads all of it.
#[repr(C)]
#[derive(Clone, Debug)]
pub struct Session {
    /// The client.
    pub client: ClientId,
    /// Its reply.
    pub reply: Bytes,
    /// The request's sequence number.
    pub seq: u64,
}

/// Sessions by client. Randomly seeded, so clients cannot pick colliding ids.
#[derive(Default)]
pub struct SessionTable {
    table: HashTable<Session>,
    hasher: RandomState,
}

impl SessionTable {
    /// The client's entry, to read or fill in.
    pub fn entry(&mut self, client: ClientId) -> Entry<'_, Session> {
        let hasher = &self.hasher;
        self.table.entry(hasher.hash_one(client), |held| held.client == client, |held| hasher.hash_one(held.client))
    }

    /// Starts loading `client`'s entry into the cache without waiting for it: the first entry whose
    /// control byte matches (almost always the client's) is prefetched. Changes nothing.
    pub fn prefetch(&self, client: ClientId) {
        if let Some(held) = self.table.find(self.hasher.hash_one(client), |_| true) {
            prefetch_index(std::slice::from_ref(&held.client), 0);
            prefetch_index(std::slice::from_ref(&held.seq), 0);
        }
    }

    /// Number of clients held.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no client is held.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Session> {
        self.table.iter()
    }
}

impl FromIterator<Session> for SessionTable {
    fn from_iter<I: IntoIterator<Item = Session>>(sessions: I) -> SessionTable {
        let mut table = SessionTable::default();
        for session in sessions {
            match table.entry(session.client) {
                Entry::Occupied(mut held) => *held.get_mut() = session,
                Entry::Vacant(free) => drop(free.insert(session)),
            }
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(client: u64, seq: u64) -> Session {
        Session { client: ClientId(client), reply: Bytes::from(format!("reply {seq}")), seq }
    }

    #[test]
    fn each_client_has_one_entry_and_the_last_one_built_wins() {
        let table: SessionTable = [session(1, 1), session(2, 5), session(1, 3)].into_iter().collect();
        assert_eq!(table.len(), 2);
        let mut held: Vec<_> = table.iter().map(|s| (s.client, s.seq, s.reply.clone())).collect();
        held.sort_by_key(|(client, _, _)| *client);
        assert_eq!(held, vec![(ClientId(1), 3, Bytes::from("reply 3")), (ClientId(2), 5, Bytes::from("reply 5"))]);
    }

    #[test]
    fn prefetching_a_client_changes_nothing_whether_or_not_it_is_held() {
        let mut table: SessionTable = (0..1000).map(|client| session(client, client + 1)).collect();
        (0..2000).for_each(|client| table.prefetch(ClientId(client)));
        assert_eq!(table.len(), 1000);
        let Entry::Occupied(held) = table.entry(ClientId(7)) else { panic!("client 7 was inserted") };
        assert_eq!(held.get().seq, 8);
        assert!(matches!(table.entry(ClientId(1500)), Entry::Vacant(_)));
    }
}

//! Learning chosen entries by pulling them: a replica that cannot campaign (not a voter in the
//! configuration it knows) and hears no leader asks its peers for what they know is chosen. This
//! is how a replica learns of a configuration change that made it a voter after the leader that
//! committed it stepped down or crashed, and how a removed replica learns it was removed.

use super::Replica;
use crate::message::{Chosen, Fetch, Message};
use crate::types::{Entry, ReplicaId};

impl Replica {
    /// Asks every member it knows for chosen entries past its commit index.
    pub(crate) fn fetch_chosen(&mut self) {
        self.reset_election_timer();
        let fetch = Fetch { ballot: self.promised, from_slot: self.commit };
        let me = self.id();
        let peers: Vec<ReplicaId> = self.membership.members().filter(|m| *m != me).collect();
        for peer in peers {
            self.send(peer, Message::Fetch(fetch.clone()));
        }
    }

    pub(crate) fn on_fetch(&mut self, from: ReplicaId, fetch: Fetch) {
        if fetch.from_slot < self.log.base() && fetch.from_slot < self.commit {
            // What it lacks was discarded here: it gets the checkpoint instead.
            self.send_snapshot_chunk(from, 0, 0);
            return;
        }
        let start = fetch.from_slot.max(self.log.base());
        if start >= self.commit {
            return; // it knows nothing more than the requester
        }
        let count = ((self.commit - start) as usize).min(self.cfg.max_values_per_accept);
        let entries: Vec<Entry> = self.log.entries_from(start).into_iter().take(count).collect();
        let chosen = Chosen { ballot: self.promised, start, entries, commit: self.commit };
        self.send(from, Message::Chosen(chosen));
    }

    /// Stores entries a peer knows are chosen and advances the commit index over them.
    pub(crate) fn on_chosen(&mut self, from: ReplicaId, chosen: Chosen) {
        if chosen.start > self.commit || chosen.entries.is_empty() {
            return; // would leave a hole; a later fetch starts from our commit index
        }
        let end = chosen.start + chosen.entries.len() as u64;
        if end <= self.commit {
            return;
        }
        for entry in chosen.entries {
            if entry.slot < self.commit {
                continue;
            }
            if let Some(cell) = self.log.get(entry.slot) {
                if cell.value == entry.value && cell.ballot >= entry.ballot {
                    continue; // already held, at the same or a higher ballot
                }
            }
            self.log.put(entry.slot, entry.ballot, entry.value.clone());
            self.unpersisted.push(entry);
        }
        // The horizon covers only what is chosen or accepted at the promised ballot: chosen is fine.
        self.horizon = self.horizon.max(end);
        self.commit = self.commit.max(end);
        if end < chosen.commit {
            // More is chosen than one answer carries: keep pulling from the same peer.
            let fetch = Fetch { ballot: self.promised, from_slot: end };
            self.send(from, Message::Fetch(fetch));
        }
    }
}

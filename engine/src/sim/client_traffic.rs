//! The simulated clients' side of the world: issuing operations, retrying, following redirects,
//! and recording completed operations for the linearizability check.

use super::world::*;
use crate::kv::{KvOp, KvReply};
use crate::sim::client::{next_op, Completed, InFlight, ReadMode};
use crate::types::{ClientId, Request};

impl World {
    pub(super) fn respond(&mut self, client: ClientId, seq: u64, response: Response) {
        let client = client.0 as usize;
        self.transmit(None, |_| Event::ClientResponse { client, seq, response: response.clone() });
    }

    pub(super) fn start_op(&mut self, client: usize) {
        let c = &mut self.clients[client];
        if c.done || c.current.is_some() {
            return;
        }
        if let Some(left) = c.heal_ops_left {
            if left == 0 {
                c.done = true;
                return;
            }
        }
        c.seq += 1;
        let seq = c.seq;
        let op = next_op(&mut self.rng, client, seq, self.config.keys, &self.written);
        if let KvOp::Put { value, .. } | KvOp::Cas { new: value, .. } = &op {
            self.written.push(value.clone());
        }
        let mode = match (&op, self.rng.u32(0..3)) {
            (KvOp::Get { .. }, 1) => ReadMode::Index,
            (KvOp::Get { .. }, 2) => ReadMode::Fast { min_slot: self.clients[client].seen_slot },
            _ => ReadMode::Log,
        };
        if let ReadMode::Fast { .. } = mode {
            // A fast read may go to any replica.
            self.clients[client].target = self.rng.usize(0..self.nodes.len());
        }
        self.clients[client].current = Some(InFlight { op, call_us: self.now_us, mode });
        self.send_request(client);
    }

    pub(super) fn send_request(&mut self, client: usize) {
        let c = &mut self.clients[client];
        let Some(in_flight) = &c.current else { return };
        c.generation += 1;
        let generation = c.generation;
        let node = c.target;
        let seq = c.seq;
        match (&in_flight.op, in_flight.mode) {
            (KvOp::Get { key }, mode) if mode != ReadMode::Log => {
                let key = key.clone();
                self.transmit(None, |_| Event::ClientRead { node, client, seq, key: key.clone(), mode });
            }
            _ => {
                let request = Request { client: ClientId(client as u64), seq, op: in_flight.op.encode() };
                self.transmit(None, |_| Event::ClientRequest { node, request: request.clone() });
            }
        }
        self.after(self.config.client_timeout_ms * 1_000, Event::ClientTimeout { client, generation });
    }

    pub(super) fn on_client_response(&mut self, client: usize, seq: u64, response: Response) {
        let c = &mut self.clients[client];
        if c.seq != seq || c.current.is_none() {
            return; // an old or duplicated reply
        }
        match response {
            Response::Reply(_, slot) | Response::ReadValue(_, slot) => {
                c.redirects_in_a_row = 0;
                c.seen_slot = c.seen_slot.max(slot);
                let in_flight = c.current.take().expect("checked above");
                let reply = match response {
                    Response::Reply(bytes, _) => KvReply::decode(&bytes).unwrap_or(KvReply::Malformed),
                    Response::ReadValue(value, _) => KvReply::Value(value),
                    Response::Redirect(_) => unreachable!("matched above"),
                };
                if !matches!(in_flight.mode, ReadMode::Fast { .. }) {
                    // Fast reads are not linearizable by design; they were checked when served.
                    self.history.push(Completed {
                        call_us: in_flight.call_us,
                        return_us: self.now_us,
                        op: in_flight.op,
                        reply,
                    });
                }
                self.report.operations += 1;
                if let Some(left) = c.heal_ops_left.as_mut() {
                    *left -= 1;
                }
                c.generation += 1; // cancels the pending timeout
                let think = self.rng.u64(0..10_000);
                self.after(think, Event::ClientNext { client });
            }
            Response::Redirect(leader) => {
                // Follow hints, but after a few in a row walk the replicas in turn: hints from
                // lagging or removed replicas can point in a circle.
                c.redirects_in_a_row += 1;
                c.target = match leader {
                    Some(leader)
                        if (leader.0 as usize) < self.nodes.len()
                            && leader.0 as usize != c.target
                            && c.redirects_in_a_row <= 3 =>
                    {
                        leader.0 as usize
                    }
                    _ => (c.target + 1) % self.nodes.len(),
                };
                c.generation += 1;
                let generation = c.generation;
                self.report.retries += 1;
                let backoff = self.rng.u64(1_000..10_000);
                self.after(backoff, Event::ClientSend { client, generation });
            }
        }
    }
}

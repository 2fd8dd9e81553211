//! `sim`: a deterministic, in-process transport for the simulator. One seed drives every fault:
//! lost writes and messages, delays, partitions, duplicated and missing completions. Time is a
//! tick counter that advances by one on every `poll` of any endpoint, so a run is a function of
//! the seed and the order of calls.

use crate::transport::{check_bounds, check_key};
use crate::{
    Durability, FollowerEvent, FollowerLink, LeaderEvent, LeaderLink, LeaderToken, RemoteRegion,
    VerbsError, Write, WriteId,
};
use decree_engine::message::Envelope;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;

/// Fault rates (probabilities in 0..=1) and delays (ticks).
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed.
    pub seed: u64,
    /// A write or message is lost in flight.
    pub loss: f64,
    /// A completion is never delivered although the write landed.
    pub missing_completion: f64,
    /// A completion is delivered twice.
    pub duplicate_completion: f64,
    /// Fewest ticks in flight.
    pub delay_min: u64,
    /// Most ticks in flight.
    pub delay_max: u64,
    /// A write without an outcome after this many ticks fails with `Timeout`.
    pub write_timeout_ticks: u64,
    /// The durability mode links report.
    pub durability: Durability,
}

impl SimConfig {
    /// No faults, one-tick delays.
    pub fn reliable(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            loss: 0.0,
            missing_completion: 0.0,
            duplicate_completion: 0.0,
            delay_min: 1,
            delay_max: 1,
            write_timeout_ticks: 1000,
            durability: Durability::FollowerPersists,
        }
    }
}

/// Node ids in the simulated network.
pub type Node = u32;

enum Delivery {
    Write {
        leader: usize,
        id: u64,
        offset: u64,
        bytes: Vec<u8>,
        imm: Option<u32>,
        key: u32,
    },
    ToFollower {
        envelope: Envelope,
        token: LeaderToken,
    },
    ToLeader {
        leader: usize,
        event: LeaderEvent,
    },
}

struct Region {
    bytes: Vec<u8>,
    key: u32,
    granted: LeaderToken,
    events: Vec<FollowerEvent>,
}

struct LeaderState {
    node: Node,
    follower: Node,
    token: LeaderToken,
    events: Vec<LeaderEvent>,
    outstanding: BTreeMap<u64, u64>,
}

struct World {
    cfg: SimConfig,
    rng: fastrand::Rng,
    now: u64,
    seq: u64,
    regions: BTreeMap<Node, Region>,
    leaders: Vec<LeaderState>,
    flight: BTreeMap<(u64, u64), (Node, Node, Delivery)>,
    cut: HashSet<(Node, Node)>,
}

impl World {
    fn send(&mut self, from: Node, to: Node, d: Delivery) {
        if self.cut.contains(&(from, to)) || self.rng.f64() < self.cfg.loss {
            return;
        }
        let at = self.now + self.rng.u64(self.cfg.delay_min..=self.cfg.delay_max);
        self.seq += 1;
        self.flight.insert((at, self.seq), (from, to, d));
    }

    fn tick(&mut self) {
        self.now += 1;
        while let Some(entry) = self.flight.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let (from, to, d) = entry.remove();
            if !self.cut.contains(&(from, to)) {
                self.deliver(from, to, d);
            }
        }
        let now = self.now;
        for l in &mut self.leaders {
            let timeout = self.cfg.write_timeout_ticks;
            let expired: Vec<u64> = l
                .outstanding
                .iter()
                .filter(|(_, &at)| now - at > timeout)
                .map(|(&id, _)| id)
                .collect();
            for id in expired {
                l.outstanding.remove(&id);
                l.events.push(LeaderEvent::Failed {
                    id: WriteId(id),
                    error: VerbsError::Timeout {
                        peer: format!("sim node {}", l.follower),
                        what: format!("write {id}"),
                        timeout_ms: timeout,
                    },
                });
            }
        }
    }

    fn deliver(&mut self, from: Node, to: Node, d: Delivery) {
        match d {
            Delivery::Write {
                leader,
                id,
                offset,
                bytes,
                imm,
                key,
            } => {
                let token = self.leaders[leader].token;
                let region = self
                    .regions
                    .get_mut(&to)
                    .expect("invariant: writes go to existing regions");
                let expected = region.key;
                // Err(true): wrong key; Err(false): fenced.
                let outcome = if key != expected {
                    Err(true)
                } else if region.granted != token {
                    Err(false)
                } else {
                    region.bytes[offset as usize..offset as usize + bytes.len()]
                        .copy_from_slice(&bytes);
                    region.events.push(FollowerEvent::Landed {
                        from: token,
                        offset,
                        len: bytes.len() as u64,
                    });
                    if let Some(imm) = imm {
                        region.events.push(FollowerEvent::Imm { from: token, imm });
                    }
                    Ok(())
                };
                let durable = self.cfg.durability.completion_is_durable();
                if self.rng.f64() < self.cfg.missing_completion {
                    return;
                }
                let copies = if self.rng.f64() < self.cfg.duplicate_completion {
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    let peer = format!("sim node {to}");
                    let event = match outcome {
                        Ok(()) => LeaderEvent::Completed {
                            id: WriteId(id),
                            durable,
                        },
                        Err(true) => LeaderEvent::Failed {
                            id: WriteId(id),
                            error: VerbsError::WrongKey {
                                peer,
                                given: key,
                                expected,
                            },
                        },
                        Err(false) => LeaderEvent::Failed {
                            id: WriteId(id),
                            error: VerbsError::Fenced {
                                peer,
                                token: token.0,
                            },
                        },
                    };
                    self.send(to, from, Delivery::ToLeader { leader, event });
                }
            }
            Delivery::ToFollower { envelope, token } => {
                if let Some(r) = self.regions.get_mut(&to) {
                    r.events.push(FollowerEvent::Message {
                        from: token,
                        envelope,
                    });
                }
            }
            Delivery::ToLeader { leader, event } => {
                let l = &mut self.leaders[leader];
                if let LeaderEvent::Completed { id, .. } | LeaderEvent::Failed { id, .. } = &event {
                    l.outstanding.remove(&id.0);
                }
                l.events.push(event);
            }
        }
    }
}

/// The simulated network: create endpoints from it, cut and heal links.
#[derive(Clone)]
pub struct SimNet {
    world: Rc<RefCell<World>>,
}

impl SimNet {
    /// A network driven by `cfg`.
    pub fn new(cfg: SimConfig) -> SimNet {
        let rng = fastrand::Rng::with_seed(cfg.seed);
        SimNet {
            world: Rc::new(RefCell::new(World {
                cfg,
                rng,
                now: 0,
                seq: 0,
                regions: BTreeMap::new(),
                leaders: Vec::new(),
                flight: BTreeMap::new(),
                cut: HashSet::new(),
            })),
        }
    }

    /// A follower with a zeroed region of `len` bytes at `node`.
    pub fn follower(&self, node: Node, len: usize) -> SimFollower {
        let mut w = self.world.borrow_mut();
        let key = w.rng.u32(1..);
        w.regions.insert(
            node,
            Region {
                bytes: vec![0; len],
                key,
                granted: LeaderToken::NONE,
                events: Vec::new(),
            },
        );
        SimFollower {
            net: self.clone(),
            node,
        }
    }

    /// A leader link from `node` to the follower at `follower`, as `token`.
    pub fn leader(&self, node: Node, follower: Node, token: LeaderToken) -> SimLeader {
        let mut w = self.world.borrow_mut();
        assert!(
            w.regions.contains_key(&follower),
            "invariant: connect to an existing sim follower"
        );
        w.leaders.push(LeaderState {
            node,
            follower,
            token,
            events: Vec::new(),
            outstanding: BTreeMap::new(),
        });
        SimLeader {
            net: self.clone(),
            index: w.leaders.len() - 1,
            next_id: 0,
            peer: format!("sim node {follower}"),
        }
    }

    /// Cuts both directions between `a` and `b` (in-flight traffic is lost too).
    pub fn partition(&self, a: Node, b: Node) {
        let mut w = self.world.borrow_mut();
        w.cut.insert((a, b));
        w.cut.insert((b, a));
    }

    /// Heals a partition.
    pub fn heal(&self, a: Node, b: Node) {
        let mut w = self.world.borrow_mut();
        w.cut.remove(&(a, b));
        w.cut.remove(&(b, a));
    }

    /// The current tick.
    pub fn now(&self) -> u64 {
        self.world.borrow().now
    }
}

/// A simulated leader link.
pub struct SimLeader {
    net: SimNet,
    index: usize,
    next_id: u64,
    peer: String,
}

impl LeaderLink for SimLeader {
    fn peer(&self) -> &str {
        &self.peer
    }

    fn remote(&self) -> RemoteRegion {
        let w = self.net.world.borrow();
        let r = &w.regions[&w.leaders[self.index].follower];
        RemoteRegion {
            key: r.key,
            len: r.bytes.len() as u64,
        }
    }

    fn durability(&self) -> Durability {
        self.net.world.borrow().cfg.durability
    }

    fn post_write(&mut self, write: &Write<'_>) -> Result<WriteId, VerbsError> {
        let remote = self.remote();
        check_key(&self.peer, write.key, remote.key)?;
        check_bounds(&self.peer, write.offset, write.bytes.len(), remote.len)?;
        let id = self.next_id;
        self.next_id += 1;
        let mut w = self.net.world.borrow_mut();
        let now = w.now;
        let (node, follower) = (w.leaders[self.index].node, w.leaders[self.index].follower);
        w.leaders[self.index].outstanding.insert(id, now);
        let d = Delivery::Write {
            leader: self.index,
            id,
            offset: write.offset,
            bytes: write.bytes.to_vec(),
            imm: write.imm,
            key: write.key,
        };
        w.send(node, follower, d);
        Ok(WriteId(id))
    }

    fn send(&mut self, envelope: &Envelope) -> Result<(), VerbsError> {
        let mut w = self.net.world.borrow_mut();
        let l = &w.leaders[self.index];
        let (node, follower, token) = (l.node, l.follower, l.token);
        w.send(
            node,
            follower,
            Delivery::ToFollower {
                envelope: envelope.clone(),
                token,
            },
        );
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<LeaderEvent>) -> Result<(), VerbsError> {
        let mut w = self.net.world.borrow_mut();
        w.tick();
        out.append(&mut w.leaders[self.index].events);
        Ok(())
    }
}

/// A simulated follower.
pub struct SimFollower {
    net: SimNet,
    node: Node,
}

impl SimFollower {
    fn leader_index(w: &World, node: Node, to: LeaderToken) -> Result<usize, VerbsError> {
        w.leaders
            .iter()
            .position(|l| l.follower == node && l.token == to)
            .ok_or_else(|| VerbsError::Disconnected {
                peer: format!("leader {:#x}", to.0),
                reason: "not connected".into(),
            })
    }
}

impl SimFollower {
    fn to_leader(&self, to: LeaderToken, event: LeaderEvent) -> Result<(), VerbsError> {
        let mut w = self.net.world.borrow_mut();
        let leader = Self::leader_index(&w, self.node, to)?;
        let dest = w.leaders[leader].node;
        w.send(self.node, dest, Delivery::ToLeader { leader, event });
        Ok(())
    }
}

impl FollowerLink for SimFollower {
    fn local(&self) -> RemoteRegion {
        let w = self.net.world.borrow();
        let r = &w.regions[&self.node];
        RemoteRegion {
            key: r.key,
            len: r.bytes.len() as u64,
        }
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), VerbsError> {
        let w = self.net.world.borrow();
        let r = &w.regions[&self.node];
        check_bounds("local region", offset, out.len(), r.bytes.len() as u64)?;
        out.copy_from_slice(&r.bytes[offset as usize..offset as usize + out.len()]);
        Ok(())
    }

    fn grant(&mut self, leader: LeaderToken) -> Result<(), VerbsError> {
        self.net
            .world
            .borrow_mut()
            .regions
            .get_mut(&self.node)
            .unwrap()
            .granted = leader;
        Ok(())
    }

    fn granted(&self) -> LeaderToken {
        self.net.world.borrow().regions[&self.node].granted
    }

    fn send(&mut self, to: LeaderToken, envelope: &Envelope) -> Result<(), VerbsError> {
        self.to_leader(to, LeaderEvent::Message(envelope.clone()))
    }

    fn ack_persisted(&mut self, to: LeaderToken, upto: u64) -> Result<(), VerbsError> {
        self.to_leader(to, LeaderEvent::Persisted { upto })
    }

    fn poll(&mut self, out: &mut Vec<FollowerEvent>) -> Result<(), VerbsError> {
        let mut w = self.net.world.borrow_mut();
        w.tick();
        out.append(&mut w.regions.get_mut(&self.node).unwrap().events);
        Ok(())
    }
}

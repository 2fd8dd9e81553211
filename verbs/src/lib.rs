//! decree-verbs: how a leader's log bytes reach its followers.
//!
//! The seam is one-sided: a leader *writes* bytes into a follower's registered log region at a
//! remote offset under the region's key, optionally with 32 bits of immediate data, and learns from
//! a completion that the write finished. Small control messages (the engine's `Envelope`s, framed
//! with `decree_engine::codec`) ride alongside. Transports are byte-level: what the bytes mean (the
//! record format with its checksum and validity marker) belongs to the log (`decree-pmem`).
//!
//! The driving loop, leader side: `post_write` / `send` as the core's commands say, then `poll`
//! and feed each [`LeaderEvent`] back to the core. A write counts toward a commit quorum only when
//! its completion says `durable` under the link's [`Durability`] mode, or when the follower's
//! `Persisted` acknowledgement covers it.
//!
//! Follower side: `grant` the current leader (fencing: every other leader's writes are refused
//! from then on), `poll` for immediates, landed writes and messages, persist what landed, and
//! `ack_persisted`.
//!
//! Implementations: [`sim`] (deterministic, fault-injecting), [`shm`] (same host, the leader stores
//! straight into the follower's shared mapping), [`tcp`] (a receiver thread applies writes) and
//! `rdma` (feature `rdma`: RC queue pairs, RDMA WRITE / WRITE_WITH_IMM over rdma-sys).

pub mod acceptor;
pub mod conn;
pub mod control;
pub mod durability;
pub mod error;
pub mod fence;
pub mod futex;
pub mod handshake;
pub mod mailbox;
pub mod mapping;
pub mod outbox;
#[cfg(feature = "rdma")]
pub mod rdma;
pub mod shm;
pub mod sim;
pub mod tcp;
pub mod transport;

pub use durability::Durability;
pub use error::VerbsError;
pub use handshake::{Gate, Handshake};
pub use transport::{
    FollowerEvent, FollowerLink, LeaderEvent, LeaderLink, LeaderToken, RemoteRegion, Wake, Write,
    WriteId,
};

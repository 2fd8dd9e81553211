//! The thread-per-core runtime: the real-world twin of the simulator's driver (`sim::world`).
//!
//! Roles, each a pinned thread (see [`placement`]):
//!
//! ```text
//!  I/O threads (client + peer sockets) --Event--> [inbox ring] --> protocol core: its thread, or
//!                                                   the thread that delivered, if free ([`inbox`])
//!                                                                   | step(now_ms, input)
//!        peers <-- PeerTransport::send  <-- Send ------------------+
//!        log   <-- [persist ring] <-- Persist ---------------------+
//!              persistence thread: drain ring, stage all, ONE sync, Event::Persisted{upto}
//!        clients <-- Responder::respond <-- Apply (applier) / Redirect
//! ```
//!
//! The core thread also batches: every client request drained from the inbox in one pass goes into
//! a single `Input::Propose`. Rings are bounded lock-free queues (crossbeam `ArrayQueue`); a
//! consumer spins briefly, then yields, then parks until a producer unparks it or its next tick is
//! due ([`idle`]). On small hosts, where consumers park at once, the thread that delivers an event
//! runs the core itself when no other thread is running it ([`inbox`]), and the core persists inline
//! when the persistence thread is idle ([`persistence`]): at low load a commit then crosses no
//! thread hand-off. Sockets, files and wire formats live outside the engine (tools/ implements
//! [`PeerTransport`], [`LogStorage`] and [`Responder`]), so this module stays free of them.

mod background;
pub mod driver;
pub mod event;
pub mod idle;
pub mod inbox;
pub mod membership_change;
pub mod node;
pub mod observer;
pub mod persistence;
pub mod placement;
pub mod read_only;
pub mod ring;
pub mod shared;
pub mod storage;
pub mod transport;

pub use event::{Event, NodeStatus, Responder, Response};
pub use inbox::Inbox;
pub use membership_change::{MembershipChange, MembershipChangeError};
pub use node::{Node, NodeConfig};
pub use observer::{NoopObserver, Observer};
pub use placement::{Placement, Role};
pub use read_only::ReadOnly;
pub use ring::Ring;
pub use storage::{CheckpointWriter, LogStorage, StorageError};
pub use transport::PeerTransport;

#[cfg(test)]
mod tests;

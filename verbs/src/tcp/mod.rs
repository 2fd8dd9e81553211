//! `tcp`: commodity networks. A receiver thread per leader connection applies writes into the
//! follower's local region (after the same key, bounds and fence checks an RDMA NIC makes) and
//! acknowledges each; control messages share the connection. TCP_NODELAY, vectored writes, and
//! reconnect with exponential back-off on the leader side.

mod backoff;
mod follower;
mod leader;

pub use backoff::Backoff;
pub use follower::TcpFollower;
pub use leader::{TcpConfig, TcpLeader};

//! `rdma`: RC queue pairs over libibverbs (rdma-sys). The leader RDMA-WRITEs log bytes straight
//! into the follower's registered region; the follower's CPU sees only immediates (if any).
//! Connection set-up (QP numbers, GIDs, the region's address and rkey) and control messages use
//! a TCP side channel. Fencing is Mu's: only the granted leader's QP has remote-write access.

pub mod config;
pub mod ffi;
mod follower;
pub mod handshake;
mod leader;

pub use config::RdmaConfig;
pub use follower::RdmaFollower;
pub use leader::RdmaLeader;

//! Settings of an RDMA endpoint.

use crate::Durability;
use std::time::Duration;

/// How an RDMA leader or follower uses its device.
#[derive(Clone, Debug)]
pub struct RdmaConfig {
    /// Device name (`rxe0`, `mlx5_0`).
    pub device: String,
    /// GID index; on rxe, 1 is the IPv4-mapped RoCE v2 GID.
    pub gid_index: u8,
    /// Leader: the remote durability mode.
    pub durability: Durability,
    /// Leader: writes in flight at most (also the number of staging slots).
    pub max_outstanding: usize,
    /// Leader: largest write that is not inline; each staging slot has this size.
    pub staging_slot_bytes: usize,
    /// Leader: a write not completed within this is failed and the link is broken.
    pub write_timeout: Duration,
    /// Leader: request a completion on every n-th write only (selective signaling); an idle
    /// link's tail is flushed with a zero-length signaled write at the next poll.
    pub signal_every: u32,
    /// Largest payload posted inline (copied into the work request).
    pub max_inline: u32,
    /// Both sides: the side channel's cluster-secret handshake (open by default).
    pub gate: crate::Gate,
}

impl RdmaConfig {
    /// Defaults for `device`.
    pub fn new(device: &str) -> RdmaConfig {
        RdmaConfig {
            device: device.into(),
            gid_index: 1,
            durability: Durability::FollowerPersists,
            max_outstanding: 64,
            staging_slot_bytes: 256 << 10,
            write_timeout: Duration::from_secs(2),
            signal_every: 1,
            max_inline: 128,
            gate: crate::Gate::default(),
        }
    }
}

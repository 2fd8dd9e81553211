//! Remote durability modes (DESIGN layer 5): when does a landed write count toward a quorum?

use std::fmt;

/// How a leader learns that bytes it wrote are durable at the follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Durability {
    /// The follower persists what landed (clwb + sfence, or fdatasync) and acknowledges with
    /// `Persisted { upto }`. Available on every transport; the default.
    FollowerPersists,
    /// RDMA only: an RDMA READ after the WRITE; its completion flushes the PCIe path on ADR
    /// platforms with DDIO off. The write's completion is reported after the READ's.
    ReadAfterWrite,
    /// Memory-only quorum (Mu-style): a landed write counts at once. NOT durable across power loss
    /// of a majority; for benchmarks and for deployments that accept that, named as such.
    Volatile,
}

impl Durability {
    /// Whether a write completion by itself counts toward a quorum in this mode.
    pub fn completion_is_durable(self) -> bool {
        matches!(self, Durability::ReadAfterWrite | Durability::Volatile)
    }

    /// Parses a configuration value: `follower-persists`, `read-after-write` or `volatile`.
    pub fn parse(text: &str) -> Option<Durability> {
        match text {
            "follower-persists" => Some(Durability::FollowerPersists),
            "read-after-write" => Some(Durability::ReadAfterWrite),
            "volatile" => Some(Durability::Volatile),
            _ => None,
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Durability::FollowerPersists => "follower-persists",
            Durability::ReadAfterWrite => "read-after-write",
            Durability::Volatile => "volatile (memory-only quorum, NOT durable)",
        })
    }
}

/// Logs the mode a link runs with, once, at connect (the design requires it be visible).
pub fn log_mode(transport: &str, peer: &str, mode: Durability) {
    if mode == Durability::Volatile {
        tracing::warn!(transport, peer, durability = %mode, "remote durability: VOLATILE, a memory-only quorum");
    } else {
        tracing::info!(transport, peer, durability = %mode, "remote durability");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_and_volatile_is_named() {
        for m in [
            Durability::FollowerPersists,
            Durability::ReadAfterWrite,
            Durability::Volatile,
        ] {
            let name = m.to_string();
            let key = name.split(' ').next().unwrap();
            assert_eq!(Durability::parse(key), Some(m));
        }
        assert!(Durability::Volatile.to_string().contains("NOT durable"));
        assert!(!Durability::FollowerPersists.completion_is_durable());
        assert_eq!(Durability::parse("fast"), None);
    }
}

//! Which CPU runs which role. On a 2-core machine roles share cores; with isolated cores the
//! protocol core and persistence get their own.

use std::fmt;

/// A thread role of the runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The protocol core thread: steps the core, batches client requests, applies, replies.
    Core,
    /// The persistence thread: group commit of the log.
    Persistence,
    /// Socket threads: client ingress and replication (peer) I/O.
    Io,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Core => "core",
            Role::Persistence => "persistence",
            Role::Io => "io",
        })
    }
}

/// CPU ids per role; `None` leaves the thread to the OS scheduler.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// CPU of the protocol core thread.
    pub core_cpu: Option<usize>,
    /// CPU of the persistence thread.
    pub persistence_cpu: Option<usize>,
    /// CPU of the socket threads.
    pub io_cpu: Option<usize>,
}

impl Placement {
    /// A default for `cpus` CPUs: core on the last CPU, persistence and I/O on the one before
    /// (sharing one CPU when there is only one).
    pub fn for_cpus(cpus: usize) -> Self {
        match cpus {
            0 | 1 => Placement { core_cpu: Some(0), persistence_cpu: Some(0), io_cpu: Some(0) },
            2 => Placement { core_cpu: Some(1), persistence_cpu: Some(0), io_cpu: Some(0) },
            n => Placement { core_cpu: Some(n - 1), persistence_cpu: Some(n - 2), io_cpu: Some(n - 3) },
        }
    }

    /// The CPU assigned to `role`.
    pub fn cpu(&self, role: Role) -> Option<usize> {
        match role {
            Role::Core => self.core_cpu,
            Role::Persistence => self.persistence_cpu,
            Role::Io => self.io_cpu,
        }
    }

    /// Checks every CPU id exists on this host; names the role that does not fit.
    pub fn validate(&self, cpus: usize) -> Result<(), String> {
        for role in [Role::Core, Role::Persistence, Role::Io] {
            if let Some(cpu) = self.cpu(role) {
                if cpu >= cpus {
                    return Err(format!("placement: {role} role on cpu {cpu}, but this host has cpus 0..{cpus}"));
                }
            }
        }
        Ok(())
    }

    /// Pins the calling thread to `role`'s CPU (if any); logs and carries on if the OS refuses.
    pub fn pin_current(&self, role: Role) {
        let Some(cpu) = self.cpu(role) else { return };
        let pinned = core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
        if pinned {
            tracing::debug!(%role, cpu, "thread pinned");
        } else {
            tracing::warn!(%role, cpu, "could not pin thread (cpuset or container limits?); running unpinned");
        }
    }
}

/// CPUs the OS lets this process use.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_cpus_share_roles_and_validation_names_the_role() {
        let p = Placement::for_cpus(2);
        assert_eq!(p.cpu(Role::Core), Some(1));
        assert_eq!(p.cpu(Role::Io), Some(0));
        assert!(p.validate(2).is_ok());
        let err = Placement { core_cpu: Some(5), ..p }.validate(2).unwrap_err();
        assert!(err.contains("core role on cpu 5"), "{err}");
    }
}

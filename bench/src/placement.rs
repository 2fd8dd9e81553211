//! Where a point's processes run: spread over the CPUs by the OS, or together on one CPU.
//!
//! On a host whose idle vCPUs halt at once, waking a thread on the other CPU is a trip through the
//! hypervisor (40-225 us on the session 13 host, 7-9 us on the same CPU). At low load a commit is
//! a chain of such wake-ups (client, leader, follower, leader, client), so the replicas and the load
//! generator commit faster on one CPU; at high load they need both. The peer (etcd) always runs as
//! it ships, unpinned.

use crate::error::BenchError;
use crate::histogram::LatencySummary;
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// `--placement`: how the harness places the decree cluster and its load generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PlacementMode {
    /// Together for points of at most `TOGETHER_MAX_CLIENTS` clients when a cross-CPU wake-up
    /// costs `EXPENSIVE_WAKE_RATIO` times a same-CPU one here; spread otherwise.
    Auto,
    /// The OS places every thread.
    Spread,
    /// Every point on one CPU.
    Together,
}

/// Auto places points of at most this many clients together. Measured on the session 13 host
/// (docs/benchmarks.md, session 14): together was faster at 1-256 clients, slower at 1024-4096.
pub const TOGETHER_MAX_CLIENTS: usize = 256;

/// Auto co-locates only where waking a thread on another CPU costs this many times waking one on
/// the same CPU (7x on the session 13 host; about 1x where idle CPUs poll before they halt).
pub const EXPENSIVE_WAKE_RATIO: u64 = 3;

/// Where one point ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Wherever the OS put the threads (within the harness's own CPU set).
    Spread,
    /// The replicas and the load generator on this one CPU.
    Together {
        /// The CPU.
        cpu: usize,
    },
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Placement::Spread => f.write_str("spread"),
            Placement::Together { cpu } => write!(f, "cpu {cpu}"),
        }
    }
}

/// Whether waking across CPUs costs enough more than on one CPU that co-locating pays.
pub fn wake_is_expensive(same: Option<&LatencySummary>, across: Option<&LatencySummary>) -> bool {
    match (same, across) {
        (Some(same), Some(across)) => across.p50_us >= EXPENSIVE_WAKE_RATIO * same.p50_us.max(1),
        _ => false,
    }
}

/// The placement of a point of `clients` clients under `mode`; `cpu` is where together runs
/// (None: this host offers one CPU or fewer to the harness, so there is nothing to choose).
pub fn choose(mode: PlacementMode, clients: usize, expensive_wake: bool, cpu: Option<usize>) -> Placement {
    let together = match mode {
        PlacementMode::Spread => false,
        PlacementMode::Together => true,
        PlacementMode::Auto => expensive_wake && clients <= TOGETHER_MAX_CLIENTS,
    };
    match cpu {
        Some(cpu) if together => Placement::Together { cpu },
        _ => Placement::Spread,
    }
}

/// The CPU the harness co-locates on: of the CPUs it may use, the one that has taken the most
/// block-device interrupts (so a log write's completion wakes a thread on its own CPU), else the
/// last. None when it may use fewer than two CPUs.
pub fn together_cpu(allowed: &[usize]) -> Option<usize> {
    if allowed.len() < 2 {
        return None;
    }
    let interrupts = std::fs::read_to_string("/proc/interrupts").unwrap_or_default();
    let busiest = block_interrupts_per_cpu(&interrupts)
        .into_iter()
        .enumerate()
        .filter(|(cpu, count)| allowed.contains(cpu) && *count > 0)
        .max_by_key(|(_, count)| *count)
        .map(|(cpu, _)| cpu);
    busiest.or(allowed.last().copied())
}

/// Interrupts per CPU from block-device queues (virtio-blk `virtioN-req.K`, NVMe `nvmeNqK`) in a
/// `/proc/interrupts` text; empty when it names none.
pub fn block_interrupts_per_cpu(text: &str) -> Vec<u64> {
    let mut lines = text.lines();
    let cpus = lines.next().map_or(0, |header| header.split_whitespace().count());
    let mut totals = vec![0u64; cpus];
    for line in lines {
        let name = line.split_whitespace().last().unwrap_or("");
        let is_block_queue =
            (name.starts_with("virtio") && name.contains("-req")) || (name.starts_with("nvme") && name.contains('q'));
        if !is_block_queue {
            continue;
        }
        let counts = line.split_whitespace().skip(1).take(cpus).map_while(|field| field.parse::<u64>().ok());
        for (total, count) in totals.iter_mut().zip(counts) {
            *total += count;
        }
    }
    if totals.iter().all(|&count| count == 0) {
        totals.clear();
    }
    totals
}

/// The CPUs this process may run on (the set `taskset` or a cpuset gave the harness).
pub fn allowed_cpus() -> Result<Vec<usize>, BenchError> {
    let set = sched_getaffinity(Pid::from_raw(0))
        .map_err(|e| BenchError::Placement(format!("reading this process's CPU set: {e}")))?;
    Ok((0..CpuSet::count()).filter(|&cpu| set.is_set(cpu).unwrap_or(false)).collect())
}

/// Applies a placement: every thread of `pids` and the calling thread (whose load-generator
/// threads, spawned after this, inherit it) may run on `placement`'s CPU, or on all of `allowed`.
pub fn apply(placement: Placement, allowed: &[usize], pids: &[i32]) -> Result<(), BenchError> {
    let cpus = match placement {
        Placement::Spread => allowed.to_vec(),
        Placement::Together { cpu } => vec![cpu],
    };
    let mut set = CpuSet::new();
    for &cpu in &cpus {
        set.set(cpu).map_err(|e| BenchError::Placement(format!("cpu {cpu}: {e}")))?;
    }
    for &pid in pids {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map_err(|e| BenchError::Placement(format!("listing the threads of replica process {pid}: {e}")))?;
        for tid in tasks.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
            match sched_setaffinity(Pid::from_raw(tid), &set) {
                // A thread that ended since the listing needs no placing.
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => {
                    return Err(BenchError::Placement(format!(
                        "placing thread {tid} of process {pid} on {cpus:?}: {e}"
                    )))
                }
            }
        }
    }
    sched_setaffinity(Pid::from_raw(0), &set)
        .map_err(|e| BenchError::Placement(format!("placing the load generator on {cpus:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(p50_us: u64) -> LatencySummary {
        LatencySummary {
            count: 1,
            p50_us,
            p90_us: p50_us,
            p99_us: p50_us,
            p999_us: p50_us,
            max_us: p50_us,
            mean_us: p50_us as f64,
        }
    }

    #[test]
    fn auto_co_locates_only_low_loads_on_hosts_with_expensive_wake_ups() {
        let expensive = wake_is_expensive(Some(&summary(8)), Some(&summary(61)));
        assert!(expensive);
        assert!(!wake_is_expensive(Some(&summary(8)), Some(&summary(12))), "a polling host");
        assert!(!wake_is_expensive(Some(&summary(8)), None), "one CPU: nothing to compare");
        assert_eq!(choose(PlacementMode::Auto, 1, expensive, Some(1)), Placement::Together { cpu: 1 });
        assert_eq!(
            choose(PlacementMode::Auto, TOGETHER_MAX_CLIENTS, expensive, Some(1)),
            Placement::Together { cpu: 1 }
        );
        assert_eq!(choose(PlacementMode::Auto, TOGETHER_MAX_CLIENTS + 1, expensive, Some(1)), Placement::Spread);
        assert_eq!(choose(PlacementMode::Auto, 1, false, Some(1)), Placement::Spread);
        assert_eq!(choose(PlacementMode::Together, 4096, false, Some(0)), Placement::Together { cpu: 0 });
        assert_eq!(choose(PlacementMode::Together, 1, true, None), Placement::Spread, "one CPU allowed");
        assert_eq!(choose(PlacementMode::Spread, 1, true, Some(1)), Placement::Spread);
    }

    #[test]
    fn block_interrupts_are_summed_per_cpu_from_disk_queues_only() {
        let text = "           CPU0       CPU1\n\
                    \x20 34:        151          0 PCI-MSIX-0000:00:05.0   1-edge      virtio4-input\n\
                    \x20 36:          3    8784800 PCI-MSIX-0000:00:02.0   1-edge      virtio1-req.0\n\
                    \x20 40:         10         20 PCI-MSIX-0000:00:04.0   0-edge      nvme0q1\n\
                    NMI:          0          0   Non-maskable interrupts\n";
        assert_eq!(block_interrupts_per_cpu(text), vec![13, 8_784_820]);
        let no_disk = "           CPU0       CPU1\n  34:        151          0 PCI-MSIX   1-edge      virtio4-input\n";
        assert!(block_interrupts_per_cpu(no_disk).is_empty());
        assert!(block_interrupts_per_cpu("").is_empty());
    }

    #[test]
    fn placing_this_thread_moves_it_and_spreading_gives_every_cpu_back() {
        let allowed = allowed_cpus().unwrap();
        let cpu = *allowed.last().unwrap();
        // On a thread of its own, so the test runner's thread keeps its CPU set.
        std::thread::spawn(move || {
            apply(Placement::Together { cpu }, &allowed, &[]).unwrap();
            assert_eq!(allowed_cpus().unwrap(), vec![cpu]);
            apply(Placement::Spread, &allowed, &[]).unwrap();
            assert_eq!(allowed_cpus().unwrap(), allowed);
        })
        .join()
        .unwrap();
        let err = apply(Placement::Spread, &[0], &[i32::MAX]).unwrap_err().to_string();
        assert!(err.contains("listing the threads"), "{err}");
    }
}

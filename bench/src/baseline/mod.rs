//! The physical limits printed beside every result, measured in the same run.

mod shm;
mod wake;

/// Shared with `decree bench`, so both print the same baselines.
pub use decree_tools::bench_baseline::{
    direct_fdatasync_us, fdatasync_pair_us, fdatasync_us, tcp_round_trip_us,
};
pub use shm::shm_round_trip_ns;
pub use wake::wake_round_trip_us;

use crate::error::BenchError;
use crate::histogram::LatencySummary;
use serde::Serialize;
use std::path::Path;

/// Iteration counts of one baseline pass.
#[derive(Clone, Copy, Debug)]
pub struct BaselineIterations {
    /// TCP ping-pongs.
    pub tcp: usize,
    /// Cache-line ping-pongs.
    pub shm: u64,
    /// write + fdatasync calls.
    pub fdatasync: usize,
    /// Thread wake-up round trips, on one CPU and across two.
    pub wake: usize,
}

impl Default for BaselineIterations {
    fn default() -> Self {
        BaselineIterations {
            tcp: 5_000,
            shm: 200_000,
            fdatasync: 300,
            wake: 2_000,
        }
    }
}

/// The baselines of one run.
#[derive(Clone, Debug, Serialize)]
pub struct Baselines {
    /// Loopback TCP round trip with the benchmark's payload each way.
    pub tcp_round_trip: LatencySummary,
    /// Cross-thread cache-line round trip, nanoseconds (p50, p99).
    pub shm_round_trip_ns: (u64, u64),
    /// Two threads waking each other in turn on one CPU (None: cannot pin here).
    pub wake_round_trip_same_cpu: Option<LatencySummary>,
    /// The same with the two threads on two CPUs (None: one CPU, or cannot pin): what each hop
    /// between replicas pays at least, when the receiver's CPU has gone idle.
    pub wake_round_trip_across_cpus: Option<LatencySummary>,
    /// 4 KiB write + fdatasync in the log's directory, one writer.
    pub fdatasync: LatencySummary,
    /// The same with one writer per replica syncing at once (as a local cluster's replicas do).
    pub fdatasync_concurrent: LatencySummary,
    /// Writers in the concurrent measurement.
    pub fdatasync_writers: usize,
    /// Two writers released together, until both have synced: two replicas durable at once, as
    /// a 3-replica commit needs when every replica logs to this one disk.
    pub fdatasync_pair: LatencySummary,
    /// 4 KiB O_DIRECT write + fdatasync through the log's direct medium, one writer: the `file`
    /// backend's own primitive where the filesystem takes O_DIRECT (None: it refuses it).
    pub fdatasync_direct: Option<LatencySummary>,
    /// The directory fdatasync was measured in.
    pub fdatasync_dir: String,
    /// Floor of a durable commit's latency: TCP round trip p50 + one lone fdatasync p50.
    pub commit_floor_p50_us: u64,
    /// The same with the concurrent fdatasync p50 (the stricter floor when that one is lower).
    pub commit_floor_concurrent_p50_us: u64,
    /// The floor of a one-client commit of replicas sharing this host: two TCP round trips
    /// (client to leader, leader to follower) plus the pair fdatasync p50.
    pub commit_floor_this_host_p50_us: u64,
}

/// Measures them in `log_dir` with `payload_bytes` TCP messages and `writers` concurrent syncers.
pub fn measure(
    log_dir: &Path,
    payload_bytes: usize,
    writers: usize,
    iterations: BaselineIterations,
) -> Result<Baselines, BenchError> {
    let tcp = tcp_round_trip_us(iterations.tcp, payload_bytes).map_err(|source| {
        BenchError::Baseline {
            name: "tcp",
            source,
        }
    })?;
    let sync =
        fdatasync_us(log_dir, iterations.fdatasync, 1).map_err(|source| BenchError::Baseline {
            name: "fdatasync",
            source,
        })?;
    let concurrent = fdatasync_us(log_dir, iterations.fdatasync, writers).map_err(|source| {
        BenchError::Baseline {
            name: "fdatasync (concurrent)",
            source,
        }
    })?;
    let pair = fdatasync_pair_us(log_dir, iterations.fdatasync).map_err(|source| {
        BenchError::Baseline {
            name: "fdatasync (pair)",
            source,
        }
    })?;
    let direct = direct_fdatasync_us(log_dir, iterations.fdatasync).map_err(|source| {
        BenchError::Baseline {
            name: "fdatasync (O_DIRECT)",
            source,
        }
    })?;
    let wake_same = wake_round_trip_us(iterations.wake, 0, 0);
    let wake_across = wake_round_trip_us(iterations.wake, 0, 1);
    let shm = shm_round_trip_ns(iterations.shm);
    let shm_ns = (shm.value_at_quantile(0.5), shm.value_at_quantile(0.99));
    let (tcp, sync, concurrent, pair) = (
        LatencySummary::of(&tcp),
        LatencySummary::of(&sync),
        LatencySummary::of(&concurrent),
        LatencySummary::of(&pair),
    );
    Ok(Baselines {
        commit_floor_p50_us: tcp.p50_us + sync.p50_us,
        commit_floor_concurrent_p50_us: tcp.p50_us + concurrent.p50_us,
        commit_floor_this_host_p50_us: 2 * tcp.p50_us + pair.p50_us,
        fdatasync_pair: pair,
        fdatasync_concurrent: concurrent,
        fdatasync_writers: writers,
        tcp_round_trip: tcp,
        shm_round_trip_ns: shm_ns,
        wake_round_trip_same_cpu: wake_same.as_ref().map(LatencySummary::of),
        wake_round_trip_across_cpus: wake_across.as_ref().map(LatencySummary::of),
        fdatasync: sync,
        fdatasync_direct: direct.as_ref().map(LatencySummary::of),
        fdatasync_dir: log_dir.display().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_baseline_pass_measures_something_and_sums_the_floor() {
        let dir =
            std::env::temp_dir().join(format!("decree-bench-baseline-test-{}", std::process::id()));
        let b = measure(
            &dir,
            64,
            3,
            BaselineIterations {
                tcp: 50,
                shm: 1_000,
                fdatasync: 5,
                wake: 20,
            },
        )
        .unwrap();
        assert_eq!(b.tcp_round_trip.count, 50);
        assert_eq!(b.fdatasync.count, 5);
        if let Some(direct) = &b.fdatasync_direct {
            assert_eq!(direct.count, 5, "one sample per direct write + sync");
        }
        assert_eq!(b.fdatasync_concurrent.count, 15, "3 writers x 5 syncs");
        assert_eq!(b.fdatasync_pair.count, 5, "one sample per pair of syncs");
        assert_eq!(
            b.commit_floor_this_host_p50_us,
            2 * b.tcp_round_trip.p50_us + b.fdatasync_pair.p50_us
        );
        assert!(
            dir.read_dir().unwrap().next().is_none(),
            "the probe files are removed"
        );
        assert!(b.shm_round_trip_ns.0 > 0 && b.shm_round_trip_ns.0 <= b.shm_round_trip_ns.1);
        let same = b.wake_round_trip_same_cpu.as_ref().expect("CPU 0 can be pinned");
        assert_eq!(same.count, 20, "one sample per wake-up round trip");
        assert_eq!(
            b.commit_floor_p50_us,
            b.tcp_round_trip.p50_us + b.fdatasync.p50_us
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! The result of a benchmark run as data: rows per system and client count, the baselines, the
//! decree/etcd ratios and the target checks. Serialized as the JSON report.

use crate::baseline::Baselines;
use crate::histogram::LatencySummary;
use crate::load::LoadOutcome;
use crate::placement::Placement;
use serde::Serialize;

/// One measured (system, client count) point.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// "decree" or "etcd".
    pub system: String,
    /// "closed" or "open".
    pub mode: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Value size.
    pub payload_bytes: usize,
    /// Operations completed in the window.
    pub ops: u64,
    /// Failed operations.
    pub errors: u64,
    /// Busy answers resent.
    pub busy_retries: u64,
    /// Committed operations per second.
    pub ops_per_s: f64,
    /// Payload megabytes (10^6) per second.
    pub mb_per_s: f64,
    /// Latency from the intended start (coordinated-omission corrected).
    pub latency: LatencySummary,
    /// Latency from the actual send.
    pub latency_uncorrected: LatencySummary,
    /// Actual send minus intended start (the harness's lateness plus waits for a free session).
    pub send_lag: LatencySummary,
    /// CDF points (µs, fraction) of the corrected latency, for plots.
    #[serde(skip)]
    pub cdf: Vec<(f64, f64)>,
    /// Per-replica cost from `perf stat` over the window (with --perf-stat).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub perf: Vec<ReplicaCost>,
    /// Throughput of each whole second of the window (None: under two seconds).
    pub per_second: Option<PerSecond>,
    /// Where the replicas and the load generator ran (the peer: always spread).
    pub placement: Placement,
}

/// Throughput second by second over one point: how steady the host stayed while it was measured.
/// On the 2-vCPU development host the same build swings 2x from second to second (docs/
/// benchmarks.md, session 10), so a point's p50 depends on the seconds it happened to get.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PerSecond {
    /// Slowest second, ops/s.
    pub min: u64,
    /// Median second, ops/s.
    pub median: u64,
    /// Fastest second, ops/s.
    pub max: u64,
}

/// The host's speed changed during a point when its fastest second beat its slowest by this much.
pub const UNSTEADY_SWING: f64 = 1.5;

impl PerSecond {
    /// From per-second counts; None for fewer than two seconds.
    pub fn of(counts: &[u64]) -> Option<PerSecond> {
        if counts.len() < 2 {
            return None;
        }
        let mut sorted = counts.to_vec();
        sorted.sort_unstable();
        Some(PerSecond {
            min: sorted[0],
            median: sorted[sorted.len() / 2],
            max: sorted[sorted.len() - 1],
        })
    }

    /// Fastest second over slowest.
    pub fn swing(&self) -> f64 {
        self.max as f64 / self.min.max(1) as f64
    }

    /// The swing, when it reaches `UNSTEADY_SWING`: the host's speed changed during the point,
    /// so its p50 depends on which seconds it got.
    pub fn unsteady_swing(&self) -> Option<f64> {
        Some(self.swing()).filter(|swing| *swing >= UNSTEADY_SWING)
    }
}

/// One replica process's cost per committed operation over a measured window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplicaCost {
    /// Replica id.
    pub replica: u32,
    /// Led when the run started.
    pub leader: bool,
    /// Instructions (user + kernel) per committed operation.
    pub instructions_per_op: f64,
    /// Cycles per committed operation.
    pub cycles_per_op: f64,
    /// Context switches per committed operation.
    pub context_switches_per_op: f64,
    /// CPUs this process kept busy on average.
    pub cpus_used: f64,
}

impl ReplicaCost {
    /// Divides `counters` by the window's operations and length.
    pub fn new(counters: &crate::perf_stat::Counters, ops: u64, window_s: f64) -> ReplicaCost {
        let per_op = |v: u64| v as f64 / ops.max(1) as f64;
        ReplicaCost {
            replica: counters.replica,
            leader: counters.leader,
            instructions_per_op: per_op(counters.instructions),
            cycles_per_op: per_op(counters.cycles),
            context_switches_per_op: per_op(counters.context_switches),
            cpus_used: counters.task_clock_ms / 1e3 / window_s,
        }
    }
}

impl Row {
    /// Summarizes a load outcome.
    pub fn new(
        system: &str,
        mode: &str,
        clients: usize,
        payload_bytes: usize,
        outcome: &LoadOutcome,
    ) -> Row {
        let ops_per_s = outcome.ops as f64 / outcome.elapsed_s;
        Row {
            system: system.into(),
            mode: mode.into(),
            clients,
            payload_bytes,
            ops: outcome.ops,
            errors: outcome.errors,
            busy_retries: outcome.busy_retries,
            ops_per_s,
            mb_per_s: ops_per_s * payload_bytes as f64 / 1e6,
            latency: LatencySummary::of(&outcome.corrected),
            latency_uncorrected: LatencySummary::of(&outcome.uncorrected),
            send_lag: LatencySummary::of(&outcome.send_lag),
            cdf: crate::histogram::cdf_points(&outcome.corrected),
            perf: Vec::new(),
            per_second: PerSecond::of(&outcome.per_second),
            placement: Placement::Spread,
        }
    }
}

#[cfg(test)]
impl Row {
    /// A closed-loop row of 64 B puts at `ops_per_s` with median `p50_us` (p99 twice that), for tests.
    pub(crate) fn for_test(system: &str, clients: usize, ops_per_s: f64, p50_us: u64) -> Row {
        Row {
            system: system.into(),
            mode: "closed".into(),
            clients,
            payload_bytes: 64,
            ops: ops_per_s as u64,
            errors: 0,
            busy_retries: 0,
            ops_per_s,
            mb_per_s: ops_per_s * 64.0 / 1e6,
            latency: LatencySummary {
                count: 1,
                p50_us,
                p90_us: p50_us,
                p99_us: 2 * p50_us,
                p999_us: 2 * p50_us,
                max_us: 3 * p50_us,
                mean_us: p50_us as f64,
            },
            latency_uncorrected: LatencySummary::default(),
            send_lag: LatencySummary::default(),
            cdf: Vec::new(),
            perf: Vec::new(),
            per_second: None,
            placement: Placement::Spread,
        }
    }
}

/// decree against etcd at one client count.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Ratio {
    /// Client count.
    pub clients: usize,
    /// decree ops/s ÷ etcd ops/s (higher is better for decree).
    pub throughput_ratio: f64,
    /// decree p50 ÷ etcd p50 (lower is better for decree).
    pub p50_latency_ratio: f64,
    /// decree p99 ÷ etcd p99.
    pub p99_latency_ratio: f64,
}

/// One of the targets, checked against this run.
#[derive(Clone, Debug, Serialize)]
pub struct TargetCheck {
    /// What is required.
    pub target: String,
    /// What this run measured.
    pub measured: String,
    /// Met, missed, or not measured in this run.
    pub verdict: Verdict,
}

/// Outcome of a target check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Measured and met.
    Met,
    /// Measured and missed.
    Missed,
    /// Not measured by this run (or not supported yet).
    NotMeasured,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Host facts: CPUs, load average at start and end.
    pub host: HostInfo,
    /// Cluster settings.
    pub cluster: ClusterInfo,
    /// Baselines measured in this run, the OS placing the threads.
    pub baselines: Baselines,
    /// The same measured on the one CPU where points placed together ran (None: none was).
    pub baselines_together: Option<TogetherBaselines>,
    /// Every measured point.
    pub rows: Vec<Row>,
    /// decree/etcd where both ran.
    pub ratios: Vec<Ratio>,
    /// The targets.
    pub targets: Vec<TargetCheck>,
    /// Why the peer did not run, if it did not.
    pub peer_skipped: Option<String>,
}

/// Baselines measured with the harness on the one CPU that points placed together ran on: the
/// round trip and the syncs such a point's commits pay there, so its bound is from the same place.
#[derive(Clone, Debug, Serialize)]
pub struct TogetherBaselines {
    /// The CPU.
    pub cpu: usize,
    /// What was measured on it.
    pub baselines: Baselines,
}

impl Report {
    /// The baselines measured where `placement` runs: the together set for a point on one CPU.
    pub fn baselines_for(&self, placement: Placement) -> &Baselines {
        baselines_for(&self.baselines, self.baselines_together.as_ref(), placement)
    }
}

/// `spread` or, for a point placed together on the CPU `together` was measured on, `together`'s.
pub fn baselines_for<'a>(
    spread: &'a Baselines,
    together: Option<&'a TogetherBaselines>,
    placement: Placement,
) -> &'a Baselines {
    match (placement, together) {
        (Placement::Together { cpu }, Some(together)) if together.cpu == cpu => &together.baselines,
        _ => spread,
    }
}

/// Facts about the machine the numbers come from.
#[derive(Clone, Debug, Serialize)]
pub struct HostInfo {
    /// Online CPUs.
    pub cpus: usize,
    /// 1-minute load average before the run.
    pub load_before: f64,
    /// 1-minute load average after the run.
    pub load_after: f64,
    /// How an idle CPU waits (`cpu_idle`): on a virtual machine whose idle vCPUs halt at once,
    /// every wake-up of one is a trip through the hypervisor, and the hops of a commit pay it.
    pub cpu_idle: String,
}

/// What the decree cluster ran with.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterInfo {
    /// Replicas.
    pub replicas: u32,
    /// Transport between replicas.
    pub transport: String,
    /// Log backend.
    pub log_backend: String,
    /// Whether the log backend keeps nothing across a restart (`memory`): no durability cost in
    /// these numbers.
    pub log_volatile: bool,
    /// Filesystem type of the data dir (from /proc/mounts).
    pub data_dir_fs: String,
    /// Leader batch limits and pipeline window, as the replicas were configured.
    pub batching: decree_tools::config::BatchingSection,
}

impl ClusterInfo {
    /// The backend as the report prints it: "memory (volatile)" for a volatile one.
    pub fn log_label(&self) -> String {
        if self.log_volatile {
            format!("{} (volatile)", self.log_backend)
        } else {
            self.log_backend.clone()
        }
    }
}

/// How this host's idle CPUs wait: the cpuidle driver, and for the haltpoll driver of a KVM
/// guest, how long an idle vCPU polls before it halts.
pub fn cpu_idle() -> String {
    let read = |path: &str| std::fs::read_to_string(path).ok().map(|s| s.trim().to_string());
    describe_cpu_idle(
        read("/sys/devices/system/cpu/cpuidle/current_driver").as_deref(),
        read("/sys/module/haltpoll/parameters/guest_halt_poll_ns").as_deref(),
    )
}

/// `cpu_idle` from the two sysfs values (None: not present on this kernel).
pub fn describe_cpu_idle(driver: Option<&str>, halt_poll_ns: Option<&str>) -> String {
    match (driver, halt_poll_ns) {
        (Some("haltpoll"), Some("0")) => {
            "haltpoll, guest_halt_poll_ns 0: an idle vCPU halts at once".into()
        }
        (Some("haltpoll"), Some(ns)) => format!("haltpoll, polls {ns} ns before halting"),
        (Some(driver), _) => driver.to_string(),
        (None, _) => "unknown".into(),
    }
}

/// The 1-minute load average (0 if unreadable).
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The filesystem type holding `path` (longest mount-point prefix in /proc/mounts).
pub fn filesystem_type(path: &std::path::Path) -> String {
    let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, point, fs) = (fields.next()?, fields.next()?, fields.next()?);
            absolute
                .starts_with(point)
                .then(|| (point.len(), fs.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fs)| fs)
        .unwrap_or_else(|| "unknown".into())
}

/// decree/etcd ratios at every client count where both systems have a row.
pub fn ratios(rows: &[Row]) -> Vec<Ratio> {
    rows.iter()
        .filter(|r| r.system == "decree")
        .filter_map(|d| {
            let e = rows
                .iter()
                .find(|e| e.system == "etcd" && e.clients == d.clients && e.mode == d.mode)?;
            let div = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
            Some(Ratio {
                clients: d.clients,
                throughput_ratio: div(d.ops_per_s, e.ops_per_s),
                p50_latency_ratio: div(d.latency.p50_us as f64, e.latency.p50_us as f64),
                p99_latency_ratio: div(d.latency.p99_us as f64, e.latency.p99_us as f64),
            })
        })
        .collect()
}

/// The low-load bound is the (a raw fdatasync after a buffered 4 KiB write); where the file
/// log writes O_DIRECT, say what its own primitive costs here too, so the bound can be read both ways.
fn direct_note(baselines: &Baselines, p50_us: u64) -> String {
    match &baselines.fdatasync_direct {
        Some(direct) => {
            let bound = 2 * (baselines.tcp_round_trip.p50_us + direct.p50_us);
            format!(
                "; the file log's own O_DIRECT write + fdatasync p50 is {} us here: against 2 x (TCP RTT + that) = {} us, p50 is {:.2}x",
                direct.p50_us,
                bound,
                p50_us as f64 / bound.max(1) as f64
            )
        }
        None => String::new(),
    }
}

/// For a point placed together: the bound the OS-placed baselines would give. The verdict keeps
/// the one measured where the point ran, whose round trip is a same-CPU one like the point's.
fn spread_note(spread: &Baselines, row: &Row) -> String {
    if row.placement == Placement::Spread {
        return String::new();
    }
    let bound = 2 * spread.commit_floor_p50_us.min(spread.commit_floor_concurrent_p50_us);
    format!(
        "; with the baselines spread by the OS (TCP RTT {} us, fdatasync {} us) the bound would be {} us and p50 {:.2}x it; the verdict uses the ones measured where the point ran",
        spread.tcp_round_trip.p50_us,
        spread.fdatasync.p50_us,
        bound,
        row.latency.p50_us as f64 / bound.max(1) as f64
    )
}

/// How the low-load check names where its point ran, and so which baselines bound it.
fn placement_note(placement: Placement) -> String {
    match placement {
        Placement::Spread => "threads spread by the OS".into(),
        Placement::Together { cpu } => format!("on cpu {cpu} with the load generator; baselines measured there"),
    }
}

/// "; the host's speed changed 1.6x during this point (...)" when the row's seconds swung that
/// much: its p50 then depends on which seconds it got.
fn steadiness_note(row: &Row) -> String {
    match &row.per_second {
        Some(spread) => spread.unsteady_swing().map_or(String::new(), |swing| {
            format!(
                "; the host's speed changed {swing:.1}x during this point ({} to {} ops/s second by second)",
                spread.min, spread.max
            )
        }),
        None => String::new(),
    }
}

/// Checks the targets against this run's rows: the first three are for a durable log (3
/// replicas, 64 B) and are not measured on a volatile one; the last is for the in-memory log over
/// shm and is measured only by such a run.
pub fn check_targets(
    rows: &[Row],
    ratios: &[Ratio],
    spread: &Baselines,
    together: Option<&TogetherBaselines>,
    cluster: &ClusterInfo,
) -> Vec<TargetCheck> {
    let decree: Vec<&Row> = rows.iter().filter(|r| r.system == "decree").collect();
    let best = decree.iter().map(|r| r.ops_per_s).fold(0.0, f64::max);
    let verdict = |ok: bool| if ok { Verdict::Met } else { Verdict::Missed };
    let in_memory = TargetCheck {
        target: "in-memory log over shm >= 1,000,000 ops/s".into(),
        measured: format!(
            "not this run (transport {}, log {}): run --transport shm --log-backend memory",
            cluster.transport,
            cluster.log_label()
        ),
        verdict: Verdict::NotMeasured,
    };
    if cluster.log_volatile {
        let durable_only = |target: &str| TargetCheck {
            target: target.into(),
            measured: format!(
                "not measured: this run's log is {}, the target is for a durable log",
                cluster.log_label()
            ),
            verdict: Verdict::NotMeasured,
        };
        let in_memory = if cluster.transport == "shm" && !decree.is_empty() {
            TargetCheck {
                measured: format!("{best:.0} ops/s (best client count)"),
                verdict: verdict(best >= 1_000_000.0),
                ..in_memory
            }
        } else {
            in_memory
        };
        return vec![
            durable_only(">= 300,000 committed ops/s"),
            durable_only(">= 20x etcd throughput at equal clients"),
            durable_only("p50 at low load <= 2 x (TCP RTT p50 + fdatasync p50)"),
            in_memory,
        ];
    }
    let mut checks = vec![TargetCheck {
        target: ">= 300,000 committed ops/s".into(),
        measured: format!("{best:.0} ops/s (best client count)"),
        verdict: if decree.is_empty() {
            Verdict::NotMeasured
        } else {
            verdict(best >= 300_000.0)
        },
    }];
    checks.push(
        match ratios
            .iter()
            .map(|r| r.throughput_ratio)
            .filter(|r| r.is_finite())
            .reduce(f64::max)
        {
            Some(ratio) => TargetCheck {
                target: ">= 20x etcd throughput at equal clients".into(),
                measured: format!("{ratio:.1}x (best)"),
                verdict: verdict(ratio >= 20.0),
            },
            None => TargetCheck {
                target: ">= 20x etcd throughput at equal clients".into(),
                measured: "etcd not run".into(),
                verdict: Verdict::NotMeasured,
            },
        },
    );
    let low_load = decree
        .iter()
        .filter(|r| r.mode == "closed")
        .min_by_key(|r| r.clients);
    checks.push(match low_load {
        Some(row) => {
            // Measured where the point ran: on one CPU the round trip is a same-CPU one.
            let baselines = baselines_for(spread, together, row.placement);
            // The stricter of the lone and the concurrent fdatasync floors.
            let floor = baselines.commit_floor_p50_us.min(baselines.commit_floor_concurrent_p50_us);
            let bound = 2 * floor;
            TargetCheck {
                target: "p50 at low load <= 2 x (TCP RTT p50 + fdatasync p50)".into(),
                measured: format!(
                    "p50 {} us at {} client(s) ({}); floor {} us (RTT + lone fdatasync {} us, RTT + concurrent {} us), bound {} us; \
                     a one-client commit on this host cannot beat {} us (2 round trips + two replicas' syncs at once)",
                    row.latency.p50_us, row.clients, placement_note(row.placement), floor, baselines.commit_floor_p50_us, baselines.commit_floor_concurrent_p50_us, bound,
                    baselines.commit_floor_this_host_p50_us
                ) + &direct_note(baselines, row.latency.p50_us)
                    + &spread_note(spread, row)
                    + &steadiness_note(row),
                verdict: verdict(row.latency.p50_us <= bound),
            }
        }
        None => TargetCheck { target: "p50 at low load within 2x of the floor".into(), measured: "no closed-loop decree row".into(), verdict: Verdict::NotMeasured },
    });
    checks.push(in_memory);
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(system: &str, clients: usize, ops_per_s: f64, p50_us: u64) -> Row {
        Row::for_test(system, clients, ops_per_s, p50_us)
    }

    fn cluster(transport: &str, log_backend: &str) -> ClusterInfo {
        ClusterInfo {
            replicas: 3,
            transport: transport.into(),
            log_backend: log_backend.into(),
            log_volatile: log_backend == "memory",
            data_dir_fs: "ext4".into(),
            batching: decree_tools::config::BatchingSection::default(),
        }
    }

    fn baselines(tcp_p50: u64, sync_p50: u64) -> Baselines {
        let s = |p50_us| LatencySummary {
            p50_us,
            ..LatencySummary::default()
        };
        Baselines {
            tcp_round_trip: s(tcp_p50),
            shm_round_trip_ns: (100, 200),
            wake_round_trip_same_cpu: None,
            wake_round_trip_across_cpus: None,
            fdatasync: s(sync_p50),
            fdatasync_concurrent: s(sync_p50 * 2),
            fdatasync_writers: 3,
            fdatasync_pair: s(sync_p50 * 2),
            fdatasync_direct: None,
            fdatasync_dir: ".".into(),
            commit_floor_p50_us: tcp_p50 + sync_p50,
            commit_floor_concurrent_p50_us: tcp_p50 + 2 * sync_p50,
            commit_floor_this_host_p50_us: 2 * tcp_p50 + 2 * sync_p50,
        }
    }

    #[test]
    fn ratios_pair_rows_by_client_count() {
        let rows = vec![
            row("decree", 1, 1_000.0, 500),
            row("etcd", 1, 100.0, 2_000),
            row("decree", 8, 10_000.0, 800),
        ];
        let ratios = ratios(&rows);
        assert_eq!(ratios.len(), 1, "clients=8 has no etcd row");
        assert_eq!(ratios[0].clients, 1);
        assert!((ratios[0].throughput_ratio - 10.0).abs() < 1e-9);
        assert!((ratios[0].p50_latency_ratio - 0.25).abs() < 1e-9);
    }

    #[test]
    fn targets_use_the_best_row_and_the_lowest_load_row() {
        let rows = vec![
            row("decree", 1, 1_000.0, 500),
            row("decree", 64, 310_000.0, 9_000),
            row("etcd", 64, 20_000.0, 3_000),
        ];
        let checks = check_targets(&rows, &ratios(&rows), &baselines(50, 200), None, &cluster("tcp", "file"));
        assert_eq!(checks[0].verdict, Verdict::Met, "{:?}", checks[0]);
        assert_eq!(
            checks[1].verdict,
            Verdict::Missed,
            "15.5x < 20x: {:?}",
            checks[1]
        );
        assert_eq!(
            checks[2].verdict,
            Verdict::Met,
            "500 <= 2*(50+200): {:?}",
            checks[2]
        );
        assert_eq!(checks[3].verdict, Verdict::NotMeasured);
        let checks = check_targets(&rows[..1], &[], &baselines(50, 200), None, &cluster("shm", "file"));
        assert_eq!(checks[0].verdict, Verdict::Missed);
        assert_eq!(checks[1].verdict, Verdict::NotMeasured);
        assert_eq!(checks[3].verdict, Verdict::NotMeasured, "a durable log is not the in-memory target");
    }

    #[test]
    fn the_low_load_line_also_reads_the_bound_with_the_direct_write_baseline() {
        let rows = vec![row("decree", 1, 1_000.0, 480)];
        let mut with_direct = baselines(50, 200);
        let plain = check_targets(&rows, &[], &with_direct, None, &cluster("tcp", "file"));
        assert!(!plain[2].measured.contains("O_DIRECT"), "{:?}", plain[2]);
        with_direct.fdatasync_direct = Some(LatencySummary {
            p50_us: 150,
            ..LatencySummary::default()
        });
        let checks = check_targets(&rows, &[], &with_direct, None, &cluster("tcp", "file"));
        assert_eq!(checks[2].verdict, Verdict::Met, "the verdict stays on the issue's bound 2*(50+200)");
        assert!(
            checks[2].measured.contains("= 400 us, p50 is 1.20x"),
            "480 against 2*(50+150): {:?}",
            checks[2]
        );
    }

    #[test]
    fn a_point_placed_together_is_bounded_by_the_baselines_measured_on_its_cpu() {
        let mut rows = vec![row("decree", 1, 1_000.0, 300)];
        // Spread: 2 x (60 + 100) = 320 admits 300; on cpu 1 alone: 2 x (16 + 100) = 232 does not.
        let spread = baselines(60, 100);
        let on_cpu_1 = TogetherBaselines { cpu: 1, baselines: baselines(16, 100) };
        let checks = check_targets(&rows, &[], &spread, Some(&on_cpu_1), &cluster("tcp", "file"));
        assert_eq!(checks[2].verdict, Verdict::Met, "a spread point keeps the spread bound: {:?}", checks[2]);
        assert!(checks[2].measured.contains("spread by the OS"), "{:?}", checks[2]);
        rows[0].placement = Placement::Together { cpu: 1 };
        let checks = check_targets(&rows, &[], &spread, Some(&on_cpu_1), &cluster("tcp", "file"));
        assert_eq!(checks[2].verdict, Verdict::Missed, "{:?}", checks[2]);
        assert!(checks[2].measured.contains("bound 232 us"), "{:?}", checks[2]);
        assert!(checks[2].measured.contains("on cpu 1 with the load generator"), "{:?}", checks[2]);
        assert!(checks[2].measured.contains("the bound would be 320 us and p50 0.94x it"), "{:?}", checks[2]);
        rows[0].placement = Placement::Together { cpu: 0 };
        assert!(
            std::ptr::eq(baselines_for(&spread, Some(&on_cpu_1), rows[0].placement), &spread),
            "baselines from another CPU do not bound it"
        );
    }

    #[test]
    fn the_low_load_line_says_when_the_host_changed_speed_during_the_point() {
        let mut rows = vec![row("decree", 1, 1_000.0, 480)];
        rows[0].per_second = PerSecond::of(&[20_000, 21_000, 20_500]);
        let steady = check_targets(&rows, &[], &baselines(50, 200), None, &cluster("tcp", "file"));
        assert!(!steady[2].measured.contains("changed"), "{:?}", steady[2]);
        rows[0].per_second = PerSecond::of(&[11_000, 20_000, 21_000]);
        let unsteady = check_targets(&rows, &[], &baselines(50, 200), None, &cluster("tcp", "file"));
        assert!(
            unsteady[2].measured.contains("changed 1.9x during this point (11000 to 21000 ops/s"),
            "{:?}",
            unsteady[2]
        );
        assert_eq!(unsteady[2].verdict, steady[2].verdict, "the note informs, the verdict stays");
    }

    #[test]
    fn a_volatile_log_measures_only_the_in_memory_target() {
        let rows = vec![row("decree", 64, 310_000.0, 9_000)];
        let checks = check_targets(&rows, &[], &baselines(50, 200), None, &cluster("shm", "memory"));
        assert!(checks[..3].iter().all(|c| c.verdict == Verdict::NotMeasured), "{checks:?}");
        assert!(checks[0].measured.contains("memory (volatile)"), "{:?}", checks[0]);
        assert_eq!(checks[3].verdict, Verdict::Missed, "310k < 1M: {:?}", checks[3]);
        let rows = vec![row("decree", 64, 1_200_000.0, 50)];
        let checks = check_targets(&rows, &[], &baselines(50, 200), None, &cluster("shm", "memory"));
        assert_eq!(checks[3].verdict, Verdict::Met);
        let checks = check_targets(&rows, &[], &baselines(50, 200), None, &cluster("tcp", "memory"));
        assert_eq!(checks[3].verdict, Verdict::NotMeasured, "tcp is not the shm target");
    }

    #[test]
    fn json_report_has_the_documented_fields() {
        let rows = vec![row("decree", 1, 1_000.0, 500)];
        let report = Report {
            host: HostInfo {
                cpus: 2,
                load_before: 1.0,
                load_after: 1.5,
                cpu_idle: "none".into(),
            },
            cluster: cluster("shm", "memory"),
            baselines: baselines(50, 200),
            baselines_together: None,
            ratios: ratios(&rows),
            targets: check_targets(&rows, &[], &baselines(50, 200), None, &cluster("shm", "memory")),
            rows,
            peer_skipped: Some("etcd not installed".into()),
        };
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        let row = &json["rows"][0];
        for field in ["system", "mode", "clients", "ops_per_s", "mb_per_s"] {
            assert!(!row[field].is_null(), "row.{field} missing in {row}");
        }
        for field in ["p50_us", "p90_us", "p99_us", "p999_us", "max_us"] {
            assert!(row["latency"][field].is_u64(), "latency.{field} missing");
        }
        assert!(row.get("cdf").is_none(), "CDF points stay out of the JSON");
        assert_eq!(json["baselines"]["commit_floor_p50_us"], 250);
        assert_eq!(json["targets"][3]["verdict"], "missed");
        assert_eq!(json["cluster"]["transport"], "shm");
        assert_eq!(json["rows"][0]["placement"], "spread");
        assert_eq!(json["cluster"]["log_backend"], "memory");
        assert_eq!(json["cluster"]["log_volatile"], true);
        assert_eq!(json["host"]["cpu_idle"], "none");
        assert!(
            row.get("perf").is_none(),
            "no perf block without --perf-stat"
        );
    }

    #[test]
    fn cpu_idle_says_when_an_idle_vcpu_halts_without_polling() {
        let halts = describe_cpu_idle(Some("haltpoll"), Some("0"));
        assert!(halts.contains("halts at once"), "{halts}");
        assert_eq!(
            describe_cpu_idle(Some("haltpoll"), Some("200000")),
            "haltpoll, polls 200000 ns before halting"
        );
        assert_eq!(describe_cpu_idle(Some("intel_idle"), None), "intel_idle");
        assert_eq!(describe_cpu_idle(None, None), "unknown");
    }

    #[test]
    fn replica_cost_divides_by_ops_and_window() {
        let counters = crate::perf_stat::Counters {
            replica: 0,
            leader: true,
            instructions: 5_000_000,
            cycles: 4_000_000,
            context_switches: 2_000,
            task_clock_ms: 1_500.0,
        };
        let cost = ReplicaCost::new(&counters, 1_000, 2.0);
        assert_eq!(
            (
                cost.instructions_per_op,
                cost.cycles_per_op,
                cost.context_switches_per_op
            ),
            (5_000.0, 4_000.0, 2.0)
        );
        assert!((cost.cpus_used - 0.75).abs() < 1e-9);
    }
}

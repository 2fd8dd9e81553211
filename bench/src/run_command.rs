//! `decree-bench run`: cluster up, baselines, decree at each client count, cluster down, etcd at
//! each client count, then the table, the JSON report and the plots.

use crate::baseline::{self, BaselineIterations};
use crate::cli::RunArgs;
use crate::decree_cluster::{find_decree_bin, ClusterSpec, DecreeCluster};
use crate::error::BenchError;
use crate::etcd_cluster::{find_etcd, EtcdCluster};
use crate::load::LoadSpec;
use crate::placement::{self, Placement};
use crate::report::{self, ClusterInfo, HostInfo, Report, Row, TogetherBaselines};
use crate::table;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn load_spec(args: &RunArgs, clients: usize) -> LoadSpec {
    LoadSpec {
        clients,
        connections: args.connections,
        payload_bytes: args.payload_bytes,
        keys: args.keys,
        warmup: args.warmup(),
        duration: Duration::from_secs(args.duration_s),
        arrival: args.arrival(),
        progress: !args.no_progress,
    }
}

fn say(args: &RunArgs, line: String) {
    if !args.no_progress {
        eprintln!("{line}");
    }
}

/// What the decree half of a run measured.
struct DecreeRun {
    baselines: baseline::Baselines,
    together: Option<TogetherBaselines>,
    rows: Vec<Row>,
    fs: String,
}

fn run_decree(args: &RunArgs, run_dir: &Path) -> Result<DecreeRun, BenchError> {
    let bin = find_decree_bin(args.decree_bin.as_deref())?;
    let spec = ClusterSpec {
        replicas: args.replicas,
        transport: args.transport.clone(),
        log_backend: args.log_backend.clone(),
        log_size_mib: args.log_size_mib,
        checkpoint_every_slots: args.checkpoint_every_slots,
        batching: args.batching(),
        base_port: args.base_port,
    };
    let dir = run_dir.join("decree");
    say(
        args,
        format!(
            "== decree: starting {} replicas (transport {}, log {}) under {}",
            args.replicas,
            args.transport,
            args.log_backend,
            dir.display()
        ),
    );
    let cluster = DecreeCluster::start(&bin, &dir, &spec)?;
    say(args, format!("== leader at {}", cluster.leader_addr));
    let fs = report::filesystem_type(cluster.dir());
    say(
        args,
        format!("== baselines in {} ({fs})", cluster.dir().display()),
    );
    let baselines = baseline::measure(
        cluster.dir(),
        args.payload_bytes,
        args.replicas as usize,
        BaselineIterations::default(),
    )?;
    let allowed = placement::allowed_cpus()?;
    let expensive_wake = placement::wake_is_expensive(
        baselines.wake_round_trip_same_cpu.as_ref(),
        baselines.wake_round_trip_across_cpus.as_ref(),
    );
    let cpu = placement::together_cpu(&allowed);
    let placements: Vec<Placement> = args
        .clients
        .iter()
        .map(|&clients| placement::choose(args.placement, clients, expensive_wake, cpu))
        .collect();
    let together = match placements.iter().find(|p| matches!(p, Placement::Together { .. })) {
        Some(&Placement::Together { cpu }) => {
            say(args, format!("== baselines again on cpu {cpu}, where points placed together run"));
            Some(measure_together(args, &cluster, cpu, &allowed)?)
        }
        _ => None,
    };
    let perf = args.perf_stat && crate::perf_stat::available();
    if args.perf_stat && !perf {
        eprintln!("decree-bench: --perf-stat: `perf stat` does not run here (install linux-perf; check kernel.perf_event_paranoid); continuing without");
    }
    let pids: Vec<i32> = cluster.processes().iter().map(|p| p.pid).collect();
    let mut rows = Vec::new();
    for (&clients, &placed) in args.clients.iter().zip(&placements) {
        let label = format!("decree {clients} clients");
        let spec = load_spec(args, clients);
        placement::apply(placed, &allowed, &pids)?;
        let counting = perf.then(|| {
            crate::perf_stat::spawn(
                cluster.processes(),
                spec.warmup,
                spec.duration,
                cluster.dir().to_path_buf(),
            )
        });
        let outcome =
            crate::decree_load::run(&cluster.leader_addr, &cluster.secret, &spec, &label)?;
        let mut row = Row::new(
            "decree",
            args.arrival().name(),
            clients,
            args.payload_bytes,
            &outcome,
        );
        match counting.map(|handle| handle.join().expect("perf thread panicked")) {
            Some(Ok(counters)) => {
                row.perf = counters
                    .iter()
                    .map(|c| report::ReplicaCost::new(c, outcome.ops, outcome.elapsed_s))
                    .collect()
            }
            Some(Err(e)) => eprintln!("decree-bench: perf stat: {e}"),
            None => {}
        }
        row.placement = placed;
        say(args, table::row_line(&row));
        rows.push(row);
    }
    // The peer runs unpinned, as it ships.
    placement::apply(Placement::Spread, &allowed, &pids)?;
    Ok(DecreeRun { baselines, together, rows, fs })
}

/// The baselines again with the harness on `cpu` alone (the TCP ping-pong's and the syncs'
/// threads inherit it), then spread again. The cache-line and wake-up ping-pongs are the spread
/// set's business: two spinners on one CPU only measure the scheduler's time slice.
fn measure_together(
    args: &RunArgs,
    cluster: &DecreeCluster,
    cpu: usize,
    allowed: &[usize],
) -> Result<TogetherBaselines, BenchError> {
    placement::apply(Placement::Together { cpu }, allowed, &[])?;
    let iterations = BaselineIterations { shm: 1_000, wake: 200, ..BaselineIterations::default() };
    let measured = baseline::measure(cluster.dir(), args.payload_bytes, args.replicas as usize, iterations);
    placement::apply(Placement::Spread, allowed, &[])?;
    Ok(TogetherBaselines { cpu, baselines: measured? })
}

fn run_etcd(args: &RunArgs, run_dir: &Path) -> Result<Vec<Row>, BenchError> {
    let bin = find_etcd().ok_or_else(|| {
        BenchError::Etcd("etcd is not installed (`make bench-peers` installs it)".into())
    })?;
    let dir = run_dir.join("etcd");
    say(
        args,
        format!("== etcd: starting 3 members under {}", dir.display()),
    );
    let cluster = EtcdCluster::start(&bin, &dir, 3, args.base_port + 200)?;
    let leader = cluster.leader_url()?;
    let mut rows = Vec::new();
    for &clients in &args.clients {
        let label = format!("etcd {clients} clients");
        let outcome = crate::etcd_load::run(&leader, &load_spec(args, clients), &label)?;
        let row = Row::new(
            "etcd",
            args.arrival().name(),
            clients,
            args.payload_bytes,
            &outcome,
        );
        say(args, table::row_line(&row));
        rows.push(row);
    }
    Ok(rows)
}

/// Writes the JSON report and the plots into `out`.
pub fn write_outputs(report: &Report, out: &Path) -> Result<(), BenchError> {
    let err = |path: &Path, e: &dyn std::fmt::Display| BenchError::Output {
        path: path.display().to_string(),
        detail: e.to_string(),
    };
    std::fs::create_dir_all(out).map_err(|e| err(out, &e))?;
    let json_path = out.join("report.json");
    let json = serde_json::to_string_pretty(report).map_err(|e| err(&json_path, &e))?;
    std::fs::write(&json_path, json).map_err(|e| err(&json_path, &e))?;
    crate::plot::latency_cdf(&report.rows, &out.join("latency-cdf.svg"))?;
    crate::plot::throughput_vs_clients(&report.rows, &out.join("throughput-vs-clients.svg"))
}

/// Runs the whole benchmark, writes its outputs into `--out` and prints the report.
pub fn run(args: &RunArgs) -> Result<Report, BenchError> {
    let report = measure(args)?;
    write_outputs(&report, &args.out)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("a report serializes"));
    } else {
        print_table(&report, &args.out);
    }
    Ok(report)
}

/// Prints `report` as a table and where `write_outputs` put it.
pub fn print_table(report: &Report, out: &Path) {
    print!("{}", table::render(report));
    println!("wrote {0}/report.json, {0}/latency-cdf.svg, {0}/throughput-vs-clients.svg", out.display());
}

/// `run-<pid>` under `data_dir`, or `run-<pid>-<k>` for the first `k` not taken: a directory
/// kept by `DECREE_KEEP_LOGS` (an earlier run of a series, or an earlier process with the same
/// pid) is never reused, which the cluster would refuse.
fn fresh_run_dir(data_dir: &Path, pid: u32) -> PathBuf {
    let first = data_dir.join(format!("run-{pid}"));
    if !first.exists() {
        return first;
    }
    (1u32..).map(|k| data_dir.join(format!("run-{pid}-{k}"))).find(|dir| !dir.exists()).expect("some suffix is free")
}

/// Runs the whole benchmark (a fresh cluster, baselines and peer) and returns its report.
pub fn measure(args: &RunArgs) -> Result<Report, BenchError> {
    args.validate()?;
    let load_before = report::load_average();
    let run_dir = fresh_run_dir(&args.data_dir, std::process::id());
    let DecreeRun { baselines, together, mut rows, fs } = run_decree(args, &run_dir)?;
    let mut peer_skipped = None;
    if args.peer == "etcd" {
        match run_etcd(args, &run_dir) {
            Ok(etcd_rows) => rows.extend(etcd_rows),
            Err(e) => {
                eprintln!("decree-bench: peer skipped: {e}");
                peer_skipped = Some(e.to_string());
            }
        }
    } else {
        peer_skipped = Some("--peer none".into());
    }
    let _ = std::fs::remove_dir(&run_dir);
    let ratios = report::ratios(&rows);
    let cluster = ClusterInfo {
        replicas: args.replicas,
        transport: args.transport.clone(),
        log_backend: args.log_backend.clone(),
        log_volatile: decree_pmem::Backend::parse(&args.log_backend)
            .is_some_and(decree_pmem::Backend::is_volatile),
        data_dir_fs: fs,
        batching: args.batching(),
    };
    let targets = report::check_targets(&rows, &ratios, &baselines, together.as_ref(), &cluster);
    Ok(Report {
        host: HostInfo {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            load_before,
            load_after: report::load_average(),
            cpu_idle: report::cpu_idle(),
        },
        cluster,
        baselines,
        baselines_together: together,
        rows,
        ratios,
        targets,
        peer_skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_run_directory_is_never_reused() {
        let data = std::env::temp_dir().join(format!("decree-bench-fresh-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).unwrap();
        assert_eq!(fresh_run_dir(&data, 7), data.join("run-7"));
        std::fs::create_dir(data.join("run-7")).unwrap();
        assert_eq!(fresh_run_dir(&data, 7), data.join("run-7-1"));
        std::fs::create_dir(data.join("run-7-1")).unwrap();
        assert_eq!(fresh_run_dir(&data, 7), data.join("run-7-2"));
        std::fs::remove_dir_all(&data).unwrap();
    }
}

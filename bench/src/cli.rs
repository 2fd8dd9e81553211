//! The command line: subcommands, their flags, and the validation that turns bad input into a
//! clear error before anything starts.

use crate::error::BenchError;
use crate::schedule::Arrival;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// Log backends the replica server accepts (decree-tools' list).
pub const LOG_BACKENDS: [&str; decree_tools::config::LOG_BACKENDS.len()] = decree_tools::config::LOG_BACKENDS;
/// Largest value size accepted (the client frame limit leaves room for the key).
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;

/// decree's benchmark harness.
#[derive(Parser, Debug)]
#[command(
    name = "decree-bench",
    version,
    about = "Latency/throughput of a local decree cluster beside raw baselines and etcd"
)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: BenchCommand,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Start a local cluster, measure baselines, run the load at each client count, then etcd.
    Run(Box<RunArgs>),
    /// Only the raw baselines (tcp and shm round trips, fdatasync) in a directory.
    Baselines(BaselineArgs),
    /// Instructions per committed operation of a fixed in-process workload, under callgrind.
    Callgrind(CallgrindArgs),
    /// Where a one-client put's time goes: hops, log writes and syncs, replica CPU, from a
    /// `perf script` dump of syscall tracepoints (`make trace-commit` records one and runs this).
    CommitTrace(CommitTraceArgs),
    /// The in-process workload callgrind runs (also runnable alone: prints its wall-clock rate).
    #[command(hide = true)]
    Inproc(WorkloadArgs),
}

/// `decree-bench run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Replicas in the decree cluster.
    #[arg(long, default_value_t = 3)]
    pub replicas: u32,
    /// Transport between replicas: tcp, shm (replicas on this host), or rdma (a build with
    /// `--features decree-tools/rdma` and an RDMA device).
    #[arg(long, default_value = "tcp")]
    pub transport: String,
    /// Log backend: auto, dax, devdax, file, file-direct, file-pwrite, file-uring, file-mmap, or memory
    /// (volatile: no durability at all, for measuring the protocol without storage).
    #[arg(long, default_value = "file")]
    pub log_backend: String,
    /// Size of each replica's log file.
    #[arg(long, default_value_t = 256)]
    pub log_size_mib: u64,
    /// Leader batch limit: most client requests in one slot.
    #[arg(long, default_value_t = 1024)]
    pub batch_requests: usize,
    /// Leader batch limit: most request bytes in one slot.
    #[arg(long, default_value_t = 1 << 20)]
    pub batch_bytes: usize,
    /// Slots the leader keeps in flight beyond its commit index (the pipeline window).
    #[arg(long, default_value_t = 64)]
    pub window_slots: u64,
    /// Checkpoint every this many applied slots (0: never).
    #[arg(long, default_value_t = 10_000)]
    pub checkpoint_every_slots: u64,
    /// Value size of each put.
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: usize,
    /// Client counts to measure, comma-separated (each client has one put in flight).
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64,256")]
    pub clients: Vec<usize>,
    /// TCP connections the decree clients are spread over (pipelined). One by default: each
    /// connection costs the load generator two threads, and on a 2-CPU host every thread it adds
    /// takes CPU from the cluster it measures (tcp + file log, 64 / 256 / 1024 clients: 226-261k /
    /// 389-464k / 618-711k ops/s over one connection against 114-148k / 326-341k / 483-571k over
    /// four; docs/benchmarks.md, session 5).
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Measured seconds per point.
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
    /// Unmeasured warm-up seconds per point.
    #[arg(long, default_value_t = 2)]
    pub warmup_s: u64,
    /// Open loop: total arrival rate in ops/s (omit for closed loop).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Distinct keys written.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Peer system to run with the same workload: etcd or none.
    #[arg(long, default_value = "etcd")]
    pub peer: String,
    /// Parent directory for the clusters' data (on the filesystem you want measured; not tmpfs).
    #[arg(long, default_value = ".decree-data/bench")]
    pub data_dir: PathBuf,
    /// decree replicas listen on base_port.., metrics on base_port+1000..; etcd on base_port+200..
    #[arg(long, default_value_t = 17_400)]
    pub base_port: u16,
    /// Where the JSON report and SVG plots go.
    #[arg(long, default_value = "target-bench/results")]
    pub out: PathBuf,
    /// The decree binary (default: beside this one).
    #[arg(long)]
    pub decree_bin: Option<PathBuf>,
    /// Print the JSON report on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// No once-a-second progress lines.
    #[arg(long)]
    pub no_progress: bool,
    /// Count each replica's instructions, cycles and context switches per op with `perf stat`.
    #[arg(long)]
    pub perf_stat: bool,
    /// Where the replicas and the load generator run: auto (on one CPU for points of at most 256
    /// clients where waking a thread across CPUs costs 3x waking one on the same CPU, as on hosts
    /// whose idle vCPUs halt; spread otherwise), spread (the OS places them), or together (one
    /// CPU for every point). The peer always runs unpinned.
    #[arg(long, value_enum, default_value_t = crate::placement::PlacementMode::Auto)]
    pub placement: crate::placement::PlacementMode,
    /// Whole runs to make, each with a fresh cluster, baselines and peer, then a summary: every
    /// point's min / median / max and how many runs met each target. A host whose speed swings
    /// between minutes gives a verdict per run, not per build. Each run's outputs go to
    /// `<out>/run-N/`, the summary to `<out>/series.json`.
    #[arg(long, default_value_t = 1)]
    pub runs: u32,
}

/// `decree-bench baselines`.
#[derive(Args, Debug, Clone)]
pub struct BaselineArgs {
    /// Directory on the log's filesystem (fdatasync is measured there).
    #[arg(long, default_value = ".decree-data/bench")]
    pub data_dir: PathBuf,
    /// TCP ping-pong message size.
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `decree-bench commit-trace`.
#[derive(Args, Debug, Clone)]
pub struct CommitTraceArgs {
    /// The output of `perf script -F comm,pid,tid,time,event,trace` for a trace recorded during
    /// `decree-bench run --clients 1` with the sendto/recvfrom/pwritev/fdatasync tracepoints.
    #[arg(long)]
    pub perf_script: PathBuf,
}

/// The in-process workload's shape, shared by `callgrind` and `inproc`.
#[derive(Args, Debug, Clone)]
pub struct WorkloadArgs {
    /// Committed operations (callgrind: in the smaller run; the larger runs twice as many).
    #[arg(long, default_value_t = 20_000)]
    pub ops: u64,
    /// Sessions with one put in flight (the leader's batch size).
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Value size.
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: usize,
    /// The core's batch limit, requests per proposed value.
    #[arg(long, default_value_t = 1024)]
    pub max_batch_requests: usize,
}

impl WorkloadArgs {
    /// Checks every flag.
    pub fn validate(&self) -> Result<(), BenchError> {
        in_range("ops", self.ops, 1..=10_000_000)?;
        in_range("clients", self.clients, 1..=65_536)?;
        if self.max_batch_requests == 0 {
            return Err(invalid("max-batch-requests", "must be at least 1"));
        }
        check_payload(self.payload_bytes)
    }

    /// The workload these flags describe.
    pub fn spec(&self) -> crate::inproc::InprocSpec {
        crate::inproc::InprocSpec {
            ops: self.ops,
            clients: self.clients,
            payload_bytes: self.payload_bytes,
            max_batch_requests: self.max_batch_requests,
        }
    }
}

/// `decree-bench callgrind`.
#[derive(Args, Debug, Clone)]
pub struct CallgrindArgs {
    /// The workload.
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// Functions to list.
    #[arg(long, default_value_t = 15)]
    pub top: usize,
    /// Where callgrind's output files are kept.
    #[arg(long, default_value = "target-bench/callgrind")]
    pub out: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn invalid(flag: &'static str, detail: impl Into<String>) -> BenchError {
    BenchError::InvalidArgument {
        flag,
        detail: detail.into(),
    }
}

fn check_payload(payload_bytes: usize) -> Result<(), BenchError> {
    in_range("payload-bytes", payload_bytes, 1..=MAX_PAYLOAD_BYTES)
}

/// Refuses `value` outside `range`, naming the flag and the range.
fn in_range<T: PartialOrd + std::fmt::Display>(
    flag: &'static str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<(), BenchError> {
    if range.contains(&value) {
        return Ok(());
    }
    let (low, high) = range.into_inner();
    Err(invalid(flag, format!("{value}: must be {low}..={high}")))
}

impl RunArgs {
    /// The replicas' `[batching]` section these flags ask for.
    pub fn batching(&self) -> decree_tools::config::BatchingSection {
        decree_tools::config::BatchingSection {
            max_requests: self.batch_requests,
            max_bytes: self.batch_bytes,
            window_slots: self.window_slots,
        }
    }

    /// Checks every flag; the error names the flag and what it accepts.
    pub fn validate(&self) -> Result<(), BenchError> {
        in_range("replicas", self.replicas, 1..=9)?;
        let served = decree_tools::config::TRANSPORTS;
        if !served.contains(&self.transport.as_str()) {
            // The only transport a build may lack is rdma (behind decree-tools' feature).
            let detail = if self.transport == "rdma" {
                format!(
                    "{:?} needs a build with `--features decree-tools/rdma` (this one serves {})",
                    self.transport,
                    served.join(", ")
                )
            } else {
                format!("{:?}: use one of {}", self.transport, served.join(", "))
            };
            return Err(invalid("transport", detail));
        }
        if !LOG_BACKENDS.contains(&self.log_backend.as_str()) {
            return Err(invalid(
                "log-backend",
                format!(
                    "{:?}: use one of {}",
                    self.log_backend,
                    LOG_BACKENDS.join(", ")
                ),
            ));
        }
        if self.log_size_mib == 0 {
            return Err(invalid("log-size-mib", "must be at least 1"));
        }
        check_payload(self.payload_bytes)?;
        if self.clients.is_empty() {
            return Err(invalid("clients", "give at least one client count"));
        }
        if let Some(bad) = self.clients.iter().find(|&&c| c == 0 || c > 100_000) {
            return Err(invalid(
                "clients",
                format!("{bad}: each count must be 1..=100000"),
            ));
        }
        in_range("connections", self.connections, 1..=256)?;
        in_range("duration-s", self.duration_s, 1..=3_600)?;
        in_range("runs", self.runs, 1..=1_000)?;
        in_range("warmup-s", self.warmup_s, 0..=600)?;
        if let Some(rate) = self.rate {
            if !rate.is_finite() || rate <= 0.0 {
                return Err(invalid(
                    "rate",
                    format!("{rate}: must be a positive number of ops/s"),
                ));
            }
        }
        if self.keys == 0 {
            return Err(invalid("keys", "must be at least 1"));
        }
        if !["etcd", "none"].contains(&self.peer.as_str()) {
            return Err(invalid(
                "peer",
                format!("{:?}: use etcd or none", self.peer),
            ));
        }
        if self.base_port < 1024 || self.base_port as u32 + 1000 + self.replicas > 65_535 {
            return Err(invalid(
                "base-port",
                format!(
                    "{}: must be >= 1024 and leave room for base+1000+replicas",
                    self.base_port
                ),
            ));
        }
        Ok(())
    }

    /// The arrival process the flags ask for.
    pub fn arrival(&self) -> Arrival {
        match self.rate {
            Some(rate_per_s) => Arrival::Open { rate_per_s },
            None => Arrival::Closed,
        }
    }

    /// Warm-up as a duration.
    pub fn warmup(&self) -> Duration {
        Duration::from_secs(self.warmup_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from([&["decree-bench", "run"], args].concat()).unwrap();
        match cli.command {
            BenchCommand::Run(run) => *run,
            other => panic!("{other:?}"),
        }
    }

    fn error_of(args: &[&str]) -> String {
        parse(args).validate().unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_valid_and_closed_loop() {
        let args = parse(&[]);
        args.validate().unwrap();
        assert_eq!(args.clients, vec![1, 4, 16, 64, 256]);
        assert_eq!(args.arrival(), Arrival::Closed);
        assert_eq!(
            parse(&["--rate", "5000"]).arrival(),
            Arrival::Open { rate_per_s: 5000.0 }
        );
    }

    #[test]
    fn a_series_needs_one_to_a_thousand_runs() {
        assert_eq!(parse(&[]).runs, 1);
        parse(&["--runs", "5"]).validate().unwrap();
        assert!(error_of(&["--runs", "0"]).contains("runs"));
        assert!(error_of(&["--runs", "1001"]).contains("runs"));
    }

    #[test]
    fn shm_and_the_memory_log_are_accepted() {
        parse(&["--transport", "shm"]).validate().unwrap();
        parse(&["--transport", "shm", "--log-backend", "memory"])
            .validate()
            .unwrap();
        parse(&["--log-backend", "memory"]).validate().unwrap();
    }

    #[test]
    fn rdma_is_accepted_only_in_an_rdma_build() {
        let rdma = parse(&["--transport", "rdma"]).validate();
        if decree_tools::config::TRANSPORTS.contains(&"rdma") {
            rdma.unwrap();
        } else {
            let error = rdma.unwrap_err().to_string();
            assert!(error.contains("--transport") && error.contains("--features decree-tools/rdma"), "{error}");
        }
    }

    #[test]
    fn bad_values_name_their_flag() {
        let transport = error_of(&["--transport", "carrier-pigeon"]);
        assert!(transport.contains("--transport") && transport.contains("tcp, shm"), "{transport}");
        let backend = error_of(&["--log-backend", "floppy"]);
        assert!(backend.contains("--log-backend") && backend.contains("memory"), "{backend}");
        assert!(error_of(&["--clients", "1,0"]).contains("--clients: 0"));
        assert!(error_of(&["--payload-bytes", "0"]).contains("--payload-bytes"));
        assert!(error_of(&["--rate=-5"]).contains("--rate"));
        assert!(error_of(&["--rate", "NaN"]).contains("--rate"));
        assert!(error_of(&["--duration-s", "0"]).contains("--duration-s"));
        assert!(error_of(&["--peer", "zookeeper"]).contains("--peer"));
        assert!(error_of(&["--replicas", "0"]).contains("--replicas"));
        assert!(error_of(&["--base-port", "65000"]).contains("--base-port"));
    }

    #[test]
    fn placement_defaults_to_auto_and_takes_only_its_three_modes() {
        use crate::placement::PlacementMode;
        assert_eq!(parse(&[]).placement, PlacementMode::Auto);
        assert_eq!(parse(&["--placement", "together"]).placement, PlacementMode::Together);
        assert_eq!(parse(&["--placement", "spread"]).placement, PlacementMode::Spread);
        let refused = Cli::try_parse_from(["decree-bench", "run", "--placement", "cpu1"]).unwrap_err();
        assert!(refused.to_string().contains("auto, spread, together"), "{refused}");
    }

    #[test]
    fn clap_refuses_malformed_numbers() {
        assert!(Cli::try_parse_from(["decree-bench", "run", "--clients", "four"]).is_err());
        assert!(Cli::try_parse_from(["decree-bench", "run", "--duration-s", "-1"]).is_err());
    }

    #[test]
    fn callgrind_args_validate() {
        let cli = Cli::try_parse_from(["decree-bench", "callgrind", "--ops", "0"]).unwrap();
        let BenchCommand::Callgrind(args) = cli.command else {
            panic!()
        };
        assert!(args
            .workload
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--ops"));
    }
}

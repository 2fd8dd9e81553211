//! The harness's error type: what went wrong and what to do about it.

use thiserror::Error;

/// Why a benchmark could not run.
#[derive(Debug, Error)]
pub enum BenchError {
    /// A command-line value is out of range or inconsistent.
    #[error("invalid argument --{flag}: {detail}")]
    InvalidArgument {
        /// The flag, without dashes.
        flag: &'static str,
        /// What is wrong and what is accepted.
        detail: String,
    },
    /// The `decree` binary could not be found or run.
    #[error("decree binary: {0} (build it with `cargo build --release -p decree-tools` or pass --decree-bin)")]
    DecreeBinary(String),
    /// The local decree cluster did not start or stop.
    #[error("decree cluster: {0}")]
    Cluster(String),
    /// The load generator failed (connection lost, leader changed, nothing completed).
    #[error("load: {0}")]
    Load(String),
    /// The etcd peer could not be started or driven.
    #[error("etcd: {0}")]
    Etcd(String),
    /// A baseline measurement failed.
    #[error("baseline {name}: {source}")]
    Baseline {
        /// Which baseline.
        name: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Writing the JSON report or the plots failed.
    #[error("output {path}: {detail}")]
    Output {
        /// The file.
        path: String,
        /// Why.
        detail: String,
    },
    /// A `perf script` trace could not be read or held nothing to follow.
    #[error("commit trace: {0}")]
    Trace(String),
    /// The cluster or the load generator could not be placed on the CPUs asked for.
    #[error("placement: {0}")]
    Placement(String),
    /// valgrind is missing or its output did not parse.
    #[error("callgrind: {0}")]
    Callgrind(String),
}

//! decree-bench: the benchmark harness. It starts a local decree cluster (through the `decree`
//! binary), drives it with closed- or open-loop load over the client protocol, measures the raw
//! limits of the medium in the same run (loopback TCP and cache-line round trips, one fdatasync
//! on the log's filesystem), runs the same workload against a 3-node etcd, and prints a table,
//! a JSON report and SVG plots. `callgrind` counts instructions per committed operation of a
//! deterministic in-process workload, the stable cost figure on a noisy machine.

pub mod baseline;
pub mod callgrind;
pub mod commit_trace;
pub mod cli;
pub mod decree_cluster;
pub mod decree_load;
pub mod error;
pub mod etcd_cluster;
pub mod etcd_load;
pub mod histogram;
pub mod inproc;
pub mod load;
pub mod perf_stat;
pub mod placement;
pub mod plot;
pub mod progress;
pub mod report;
pub mod run_command;
pub mod schedule;
pub mod series;
pub mod table;

//! The `decree` command line.

mod admin_command;
mod bench_command;
mod checkpoint_command;
mod cluster_command;
mod doctor_command;
mod kv_command;
mod member_command;
mod replica_command;
mod sim_command;
mod status_command;
mod target_args;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// decree: a kernel-bypass multi-Paxos replication appliance.
#[derive(Parser)]
#[command(name = "decree", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run the deterministic simulator over many seeds, or replay one.
    Sim(sim_command::SimArgs),
    /// Run one replica server (foreground) from a TOML config.
    Replica(replica_command::ReplicaArgs),
    /// Start or stop a local cluster on loopback.
    Cluster(cluster_command::ClusterArgs),
    /// Write a key.
    Put(kv_command::PutArgs),
    /// Read a key (linearizable; --stale: bounded staleness at any replica).
    Get(kv_command::GetArgs),
    /// Compare-and-set a key.
    Cas(kv_command::CasArgs),
    /// Show leader, ballot, commit index and per-replica lag.
    Status(status_command::StatusArgs),
    /// Closed-loop load against a cluster: latency percentiles and throughput.
    Bench(bench_command::BenchArgs),
    /// Hand leadership to another voter (no election timeout); same as `leader transfer`.
    TransferLeadership(admin_command::TransferArgs),
    /// Leadership: `leader transfer [--to ID]`.
    Leader(admin_command::LeaderArgs),
    /// Configuration changes: `member add | promote | remove | list`.
    Member(member_command::MemberArgs),
    /// Ask replicas to checkpoint their state now and print the slot.
    Checkpoint(checkpoint_command::CheckpointArgs),
    /// Check this host for RDMA, persistent memory, CPU and memory-limit readiness.
    Doctor(doctor_command::DoctorArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DECREE_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Commands::Sim(args) => sim_command::run(args),
        Commands::Replica(args) => replica_command::run(args),
        Commands::Cluster(args) => cluster_command::run(args),
        Commands::Put(args) => kv_command::put(args),
        Commands::Get(args) => kv_command::get(args),
        Commands::Cas(args) => kv_command::cas(args),
        Commands::Status(args) => status_command::run(args),
        Commands::Bench(args) => bench_command::run(args),
        Commands::Doctor(args) => doctor_command::run(args),
        Commands::TransferLeadership(args) => admin_command::transfer(args),
        Commands::Leader(args) => admin_command::leader(args),
        Commands::Member(args) => member_command::run(args),
        Commands::Checkpoint(args) => checkpoint_command::run(args),
    }
}

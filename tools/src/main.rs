//! The `decree` command line.

mod sim_command;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Commands::Sim(args) => sim_command::run(args),
    }
}

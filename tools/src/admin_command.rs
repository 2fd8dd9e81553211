//! `decree leader transfer` (also spelled `decree transfer-leadership`): hand leadership to another
//! voter without waiting for an election timeout (before restarting the leader's host, or to move
//! the leader next to its clients).

use crate::target_args::TargetArgs;
use clap::{Args, Subcommand};
use decree_tools::client::Client;
use std::process::ExitCode;

/// `decree leader ...`.
#[derive(Args, Debug)]
pub struct LeaderArgs {
    #[command(subcommand)]
    command: LeaderCommand,
}

#[derive(Subcommand, Debug)]
enum LeaderCommand {
    /// Hand leadership to another voter (no election timeout).
    Transfer(TransferArgs),
}

/// Runs `decree leader ...`.
pub fn leader(args: LeaderArgs) -> ExitCode {
    match args.command {
        LeaderCommand::Transfer(transfer_args) => transfer(transfer_args),
    }
}

/// Arguments of `decree leader transfer` / `decree transfer-leadership`.
#[derive(Args, Debug)]
pub struct TransferArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Replica id to hand leadership to (default: the most caught-up voter).
    #[arg(long)]
    to: Option<u32>,
}

/// Sends the request to the leader; exits 1 if it refused.
pub fn transfer(args: TransferArgs) -> ExitCode {
    let mut client = match args.target.config_for("leader transfer") {
        Ok(config) => Client::new(config),
        Err(code) => return code,
    };
    match client.transfer_leadership(args.to) {
        Ok(detail) => {
            println!("{detail}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("decree leader transfer: {e}");
            ExitCode::FAILURE
        }
    }
}

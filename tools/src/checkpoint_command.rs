//! `decree checkpoint`: ask replicas to checkpoint their state machine now (the same code path as
//! the periodic `checkpoint_every_slots` policy), so their logs can discard below it.

use crate::target_args::TargetArgs;
use clap::Args;
use decree_tools::client::Client;
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `decree checkpoint`.
#[derive(Args, Debug)]
pub struct CheckpointArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Only the replica with this id (default: every replica reachable).
    #[arg(long)]
    id: Option<u32>,
}

/// Prints each replica's checkpoint slot; exits 1 if one refused or none matched.
pub fn run(args: CheckpointArgs) -> ExitCode {
    let config = match args.target.config_for("checkpoint") {
        Ok(config) => config,
        Err(code) => return code,
    };
    let timeout = Duration::from_millis(config.deadline_ms.min(5_000));
    let (mut asked, mut failed) = (0, false);
    for addr in &config.addrs {
        // The id is learned from the replica itself, so --addrs works without a cluster.toml.
        let id = match Client::status(addr, &config.secret, timeout) {
            Ok(status) => status.id,
            Err(e) => {
                eprintln!("{addr}: unreachable: {e}");
                failed |= args.id.is_none();
                continue;
            }
        };
        if args.id.is_some_and(|wanted| wanted != id) {
            continue;
        }
        asked += 1;
        match Client::checkpoint(addr, &config.secret, timeout) {
            Ok(answer) => println!("r{id} {addr}: slot {} ({})", answer.slot.unwrap_or(0), answer.detail),
            Err(e) => {
                eprintln!("r{id} {addr}: {e}");
                failed = true;
            }
        }
    }
    if asked == 0 {
        eprintln!("decree checkpoint: no reachable replica{}", args.id.map(|id| format!(" has id {id}")).unwrap_or_default());
        return ExitCode::FAILURE;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

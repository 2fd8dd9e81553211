//! `decree replica --config replica.toml`: runs one replica in the foreground.

use clap::Args;
use decree_tools::config::ReplicaConfig;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `decree replica`.
#[derive(Args, Debug)]
pub struct ReplicaArgs {
    /// The replica's TOML configuration.
    #[arg(long)]
    config: PathBuf,
}

/// Loads the config and serves until SIGTERM.
pub fn run(args: ReplicaArgs) -> ExitCode {
    let config = match ReplicaConfig::load(&args.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("decree replica: {error}");
            return ExitCode::from(2);
        }
    };
    match decree_tools::replica::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "replica stopped");
            eprintln!("decree replica: {error}");
            ExitCode::FAILURE
        }
    }
}

//! `decree put / get / cas`: one key-value operation against a cluster.

use crate::target_args::TargetArgs;
use clap::Args;
use decree_tools::client::Client;
use std::process::ExitCode;

/// Arguments of `decree put`.
#[derive(Args, Debug)]
pub struct PutArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Key.
    key: String,
    /// Value.
    value: String,
}

/// Arguments of `decree get`.
#[derive(Args, Debug)]
pub struct GetArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Key.
    key: String,
    /// Bounded staleness: served by whichever replica is asked (follower or learner too), without
    /// a round to the leader; it may miss writes that replica has not applied yet.
    #[arg(long)]
    stale: bool,
    /// With --stale: wait until the replica has applied this many slots (e.g. `decree status`'s
    /// applied column after your last write), so the read is no older than that.
    #[arg(long, requires = "stale", default_value_t = 0)]
    min_slot: u64,
}

/// Arguments of `decree cas`.
#[derive(Args, Debug)]
pub struct CasArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Key.
    key: String,
    /// Value the key must hold now (omit with --absent).
    #[arg(long, required_unless_present = "absent")]
    expect: Option<String>,
    /// The key must be absent now.
    #[arg(long, conflicts_with = "expect")]
    absent: bool,
    /// New value.
    new: String,
}

fn client(target: &TargetArgs, command: &str) -> Result<Client, ExitCode> {
    target.config_for(command).map(Client::new)
}

fn failed(error: impl std::fmt::Display) -> ExitCode {
    eprintln!("decree: {error}");
    ExitCode::FAILURE
}

/// `decree put KEY VALUE`.
pub fn put(args: PutArgs) -> ExitCode {
    let mut client = match client(&args.target, "put") {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client.put(args.key.as_bytes(), args.value.as_bytes()) {
        Ok(()) => {
            println!("OK");
            ExitCode::SUCCESS
        }
        Err(e) => failed(e),
    }
}

/// `decree get KEY`: prints the value, or exits 1 with "(absent)".
pub fn get(args: GetArgs) -> ExitCode {
    let mut client = match client(&args.target, "get") {
        Ok(c) => c,
        Err(code) => return code,
    };
    let value = if args.stale { client.stale_get(args.key.as_bytes(), args.min_slot) } else { client.get(args.key.as_bytes()) };
    match value {
        Ok(Some(value)) => {
            println!("{}", String::from_utf8_lossy(&value));
            ExitCode::SUCCESS
        }
        Ok(None) => {
            println!("(absent)");
            ExitCode::from(1)
        }
        Err(e) => failed(e),
    }
}

/// `decree cas KEY --expect OLD NEW`: exits 0 if swapped, 1 if not (printing the current value).
pub fn cas(args: CasArgs) -> ExitCode {
    let mut client = match client(&args.target, "cas") {
        Ok(c) => c,
        Err(code) => return code,
    };
    let expected = if args.absent { None } else { args.expect.as_deref().map(str::as_bytes) };
    match client.cas(args.key.as_bytes(), expected, args.new.as_bytes()) {
        Ok((true, _)) => {
            println!("OK");
            ExitCode::SUCCESS
        }
        Ok((false, previous)) => {
            let shown = previous.map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_else(|| "(absent)".into());
            println!("FAILED: current value is {shown}");
            ExitCode::from(1)
        }
        Err(e) => failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        get: GetArgs,
    }

    #[test]
    fn min_slot_only_bounds_a_stale_read() {
        assert!(Cli::try_parse_from(["get", "k", "--min-slot", "5"]).is_err(), "--min-slot without --stale must be refused");
        let cli = Cli::try_parse_from(["get", "k", "--stale", "--min-slot", "5"]).unwrap();
        assert!(cli.get.stale);
        assert_eq!(cli.get.min_slot, 5);
        assert_eq!(Cli::try_parse_from(["get", "k", "--stale"]).unwrap().get.min_slot, 0);
    }
}

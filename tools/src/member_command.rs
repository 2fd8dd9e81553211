//! `decree member add | promote | remove | list`: edit the configuration as a committed decree
//! (the leader proposes it; it takes effect once applied) and show voters, learners and spares.

use crate::target_args::TargetArgs;
use clap::{Args, Subcommand};
use decree_engine::runtime::MembershipChange;
use decree_engine::types::ReplicaId;
use decree_tools::client::{Client, ClientConfig};
use decree_tools::wire::StatusView;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// `decree member ...`.
#[derive(Args, Debug)]
pub struct MemberArgs {
    #[command(subcommand)]
    command: MemberCommand,
}

#[derive(Subcommand, Debug)]
enum MemberCommand {
    /// Make a replica (a spare from the pool) a voter, or a learner with --learner.
    Add(ChangeArgs),
    /// Make a learner a voter.
    Promote(ChangeArgs),
    /// Remove a voter or a learner (the leader included: it steps down, another is elected).
    Remove(ChangeArgs),
    /// Show the configuration in force: voters, learners, and spares (reachable non-members).
    List(ListArgs),
}

/// Arguments of `decree member add | promote | remove`.
#[derive(Args, Debug)]
pub struct ChangeArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// The replica's id (it must have an address in the replicas' [[members]]).
    #[arg(long)]
    id: u32,
    /// With `add`: as a learner (receives the log, never votes).
    #[arg(long)]
    learner: bool,
    /// Return once proposed instead of waiting until the change is applied.
    #[arg(long)]
    no_wait: bool,
}

/// Arguments of `decree member list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs the subcommand: exit 0 done, 1 refused or not applied in time, 2 bad arguments.
pub fn run(args: MemberArgs) -> ExitCode {
    let (target, change, no_wait) = match args.command {
        MemberCommand::List(list) => return list_members(list),
        MemberCommand::Add(a) if a.learner => (a.target, MembershipChange::AddLearner(ReplicaId(a.id)), a.no_wait),
        MemberCommand::Add(a) => (a.target, MembershipChange::AddVoter(ReplicaId(a.id)), a.no_wait),
        MemberCommand::Promote(a) | MemberCommand::Remove(a) if a.learner => {
            eprintln!("decree member: --learner only goes with `add`");
            return ExitCode::from(2);
        }
        MemberCommand::Promote(a) => (a.target, MembershipChange::Promote(ReplicaId(a.id)), a.no_wait),
        MemberCommand::Remove(a) => (a.target, MembershipChange::Remove(ReplicaId(a.id)), a.no_wait),
    };
    let config = match target.config_for("member") {
        Ok(config) => config,
        Err(code) => return code,
    };
    let answer = match Client::new(config.clone()).change_membership(change) {
        Ok(answer) => answer,
        Err(e) => {
            eprintln!("decree member: {e}");
            return ExitCode::FAILURE;
        }
    };
    let slot = answer.slot.expect("a proposed change names its slot");
    println!("{}", answer.detail);
    if no_wait {
        return ExitCode::SUCCESS;
    }
    match wait_applied(&config, slot) {
        Some(view) => {
            println!("applied: voters {}  learners {}", names(&view.voters), names(&view.learners));
            ExitCode::SUCCESS
        }
        None => {
            eprintln!("decree member: slot {slot} not applied within {} ms; check `decree member list`", config.deadline_ms);
            ExitCode::FAILURE
        }
    }
}

/// Waits until some replica has applied `slot`; returns its view.
fn wait_applied(config: &ClientConfig, slot: u64) -> Option<StatusView> {
    let deadline = Instant::now() + Duration::from_millis(config.deadline_ms);
    while Instant::now() < deadline {
        if let Some(view) = views(config).into_iter().flatten().find(|v| v.applied > slot) {
            return Some(view);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn views(config: &ClientConfig) -> Vec<Option<StatusView>> {
    config.addrs.iter().map(|addr| Client::status(addr, &config.secret, Duration::from_millis(500)).ok()).collect()
}

fn names(ids: &[u32]) -> String {
    if ids.is_empty() {
        return "-".into();
    }
    ids.iter().map(|id| format!("r{id}")).collect::<Vec<_>>().join(" ")
}

/// The configuration a listing shows: the leader's, else the most advanced replica's.
pub fn authoritative(views: &[Option<StatusView>]) -> Option<&StatusView> {
    let reachable = || views.iter().flatten();
    reachable().find(|v| v.leading).or_else(|| reachable().max_by_key(|v| v.applied))
}

fn list_members(args: ListArgs) -> ExitCode {
    let config = match args.target.config_for("member") {
        Ok(config) => config,
        Err(code) => return code,
    };
    let views = views(&config);
    let Some(view) = authoritative(&views) else {
        eprintln!("decree member list: no replica reachable at {:?}", config.addrs);
        return ExitCode::FAILURE;
    };
    let members: Vec<u32> = view.voters.iter().chain(&view.learners).copied().collect();
    let spares: Vec<u32> = views.iter().flatten().map(|v| v.id).filter(|id| !members.contains(id)).collect();
    // A spare that does not answer cannot be told apart from a member that is down: named by address.
    let unreachable: Vec<&String> = config.addrs.iter().zip(&views).filter(|(_, v)| v.is_none()).map(|(addr, _)| addr).collect();
    let mut out = String::new();
    if args.json {
        let json = serde_json::json!({"from": view.id, "applied": view.applied, "voters": view.voters, "learners": view.learners,
            "spares": spares, "unreachable": unreachable});
        let _ = writeln!(out, "{json}");
    } else {
        let _ = writeln!(out, "voters:   {}", names(&view.voters));
        let _ = writeln!(out, "learners: {}", names(&view.learners));
        let _ = writeln!(out, "spares:   {}", names(&spares));
        if !unreachable.is_empty() {
            let _ = writeln!(out, "unreachable: {}", unreachable.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(" "));
        }
        let _ = writeln!(out, "(as applied by r{} at slot {})", view.id, view.applied);
    }
    // One write, errors ignored: a closed pipe must not panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        member: MemberArgs,
    }

    fn view(id: u32, leading: bool, applied: u64, voters: &[u32]) -> Option<StatusView> {
        Some(StatusView {
            id,
            leading,
            leader: None,
            ballot: String::new(),
            commit: applied,
            applied,
            log_end: applied,
            executed: 0,
            log_bytes: 0,
            voters: voters.to_vec(),
            learners: Vec::new(),
        })
    }

    #[test]
    fn the_listing_trusts_the_leader_then_the_most_advanced_replica() {
        let views = vec![view(0, false, 90, &[0, 1, 2]), None, view(2, true, 80, &[0, 2, 3])];
        assert_eq!(authoritative(&views).unwrap().id, 2);
        let views = vec![view(0, false, 70, &[0, 1, 2]), view(1, false, 95, &[0, 1]), None];
        assert_eq!(authoritative(&views).unwrap().id, 1);
        assert!(authoritative(&[None, None]).is_none());
    }

    #[test]
    fn arguments_are_validated_before_any_network_use() {
        assert!(Cli::try_parse_from(["m", "add"]).is_err(), "--id is required");
        assert!(Cli::try_parse_from(["m", "add", "--id", "-1"]).is_err(), "ids are unsigned");
        assert!(Cli::try_parse_from(["m", "add", "--id", "3", "--learner"]).is_ok());
        let cli = Cli::try_parse_from(["m", "remove", "--id", "3", "--learner"]).unwrap();
        assert_eq!(run(cli.member), ExitCode::from(2), "--learner with remove is refused");
    }
}

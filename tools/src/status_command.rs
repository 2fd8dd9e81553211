//! `decree status`: every replica's view (leader, ballot, commit, applied) and its lag behind the
//! most advanced commit index.

use crate::target_args::TargetArgs;
use clap::Args;
use decree_tools::client::Client;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `decree status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// leader | follower (a voter) | learner | spare (in no configuration), as this replica sees it.
fn role(s: &decree_tools::wire::StatusView) -> &'static str {
    if s.leading {
        "leader"
    } else if s.voters.contains(&s.id) {
        "follower"
    } else if s.learners.contains(&s.id) {
        "learner"
    } else {
        "spare"
    }
}

/// Queries every replica; exits 1 if no replica reports a leader.
pub fn run(args: StatusArgs) -> ExitCode {
    let config = match args.target.config_for("status") {
        Ok(config) => config,
        Err(code) => return code,
    };
    let views: Vec<_> = config
        .addrs
        .iter()
        .map(|addr| (addr.clone(), Client::status(addr, &config.secret, Duration::from_millis(1_000))))
        .collect();
    let max_commit = views.iter().filter_map(|(_, v)| v.as_ref().ok().map(|s| s.commit)).max().unwrap_or(0);
    let mut out = String::new();
    let leader = views.iter().find_map(|(_, v)| v.as_ref().ok().filter(|s| s.leading).map(|s| s.id));
    if args.json {
        let rows: Vec<serde_json::Value> = views
            .iter()
            .map(|(addr, view)| match view {
                Ok(s) => serde_json::json!({"addr": addr, "id": s.id, "leading": s.leading, "leader": s.leader, "ballot": s.ballot,
                    "commit": s.commit, "applied": s.applied, "log_end": s.log_end, "lag": max_commit - s.commit,
                    "executed": s.executed, "log_bytes": s.log_bytes, "role": role(s), "voters": s.voters, "learners": s.learners}),
                Err(e) => serde_json::json!({"addr": addr, "error": e.to_string()}),
            })
            .collect();
        let _ = writeln!(out, "{}", serde_json::json!({"leader": leader, "commit": max_commit, "replicas": rows}));
    } else {
        let leader_name = leader.map(|l| format!("r{l}")).unwrap_or_else(|| "none".into());
        let _ = writeln!(out, "leader: {leader_name}   commit: {max_commit}");
        let _ = writeln!(
            out,
            "{:<4} {:<22} {:<8} {:<10} {:>10} {:>10} {:>10} {:>6} {:>12}",
            "id", "addr", "role", "ballot", "commit", "applied", "log_end", "lag", "log_bytes"
        );
        for (addr, view) in &views {
            let _ = match view {
                Ok(s) => writeln!(
                    out,
                    "r{:<3} {:<22} {:<8} {:<10} {:>10} {:>10} {:>10} {:>6} {:>12}",
                    s.id,
                    addr,
                    role(s),
                    s.ballot,
                    s.commit,
                    s.applied,
                    s.log_end,
                    max_commit - s.commit,
                    s.log_bytes
                ),
                Err(e) => writeln!(out, "?    {addr:<22} unreachable: {e}"),
            };
        }
    }
    // One write, errors ignored: `decree status | head -1` must not panic on a closed pipe.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
    if leader.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

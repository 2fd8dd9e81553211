//! `decree cluster up / down`: a local cluster on loopback with embedded defaults (tcp between
//! replicas, file log under the data dir, a generated secret). `up` on an existing directory
//! restarts the replicas that are not running, which recover from their logs.

use clap::{Args, Subcommand};
use decree_tools::client::Client;
use decree_tools::cluster_file::ClusterFile;
use decree_tools::config::{Member, ReplicaConfig};
use decree_tools::secret::{generate_secret, read_secret};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// `decree cluster ...`.
#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Start (or restart the stopped replicas of) a local cluster.
    Up(UpArgs),
    /// Stop a local cluster gracefully (SIGTERM, then SIGKILL after a grace period).
    Down(DownArgs),
}

/// Arguments of `decree cluster up`.
#[derive(Args, Debug)]
pub struct UpArgs {
    /// Number of replicas in the initial configuration (all voters).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=64))]
    replicas: u32,
    /// Extra replicas started outside the configuration (ids after the voters'), ready for
    /// `decree member add`.
    #[arg(long, default_value_t = 0)]
    spares: u32,
    /// Directory for configs, secret, logs and pid files.
    #[arg(long, default_value = ".decree-data")]
    dir: PathBuf,
    /// Replica i listens on 127.0.0.1:(base_port + i).
    #[arg(long, default_value_t = 7400)]
    base_port: u16,
    /// Replica i serves metrics on 127.0.0.1:(metrics_base_port + i).
    #[arg(long, default_value_t = 9400)]
    metrics_base_port: u16,
    /// Size of each replica's log file.
    #[arg(long, default_value_t = 256)]
    log_size_mib: u64,
    /// Checkpoint every this many applied slots and discard the log below (0: not by count; a
    /// half-full log is checkpointed either way).
    #[arg(long, default_value_t = 10_000)]
    checkpoint_every_slots: u64,
    /// Between replicas: tcp (framed messages) or shm (one-sided stores into each other's
    /// mailbox files under --dir).
    #[arg(long, default_value = "tcp", value_parser = ["tcp", "shm"])]
    transport: String,
    /// Wait this long for a leader before giving up.
    #[arg(long, default_value_t = 15)]
    wait_s: u64,
}

/// Arguments of `decree cluster down`.
#[derive(Args, Debug)]
pub struct DownArgs {
    /// The cluster's directory.
    #[arg(long, default_value = ".decree-data")]
    dir: PathBuf,
    /// Also delete the directory (logs included).
    #[arg(long)]
    purge: bool,
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(long, default_value_t = 10)]
    grace_s: u64,
}

/// Runs the subcommand.
pub fn run(args: ClusterArgs) -> ExitCode {
    let result = match args.command {
        ClusterCommand::Up(up_args) => up(up_args),
        ClusterCommand::Down(down_args) => down(down_args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("decree cluster: {e}");
            ExitCode::FAILURE
        }
    }
}

fn pid_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("replica-{id}.pid"))
}

/// The pid in `path` if that process is alive and is a decree replica.
fn running_pid(path: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat.rsplit(')').next()?.split_whitespace().next()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    // Right after spawn the kernel may still be exec'ing the child: its cmdline reads empty then.
    let is_replica = cmdline.is_empty() || String::from_utf8_lossy(&cmdline).contains("replica");
    (state != "Z" && is_replica).then_some(pid)
}

fn write_configs(args: &UpArgs) -> Result<ClusterFile, String> {
    let dir = &args.dir;
    let pool = args.replicas + args.spares;
    if pool as usize > decree_engine::membership::MAX_MEMBERS {
        return Err(format!("--replicas + --spares is {pool}; a configuration names at most {} members", decree_engine::membership::MAX_MEMBERS));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let secret = dir.join("secret");
    if !secret.exists() {
        generate_secret(&secret).map_err(|e| format!("writing {}: {e}", secret.display()))?;
    }
    let members: Vec<Member> = (0..pool).map(|id| Member { id, addr: format!("127.0.0.1:{}", args.base_port as u32 + id) }).collect();
    let metrics: Vec<String> = (0..pool).map(|id| format!("127.0.0.1:{}", args.metrics_base_port as u32 + id)).collect();
    for id in 0..pool {
        let mut config = ReplicaConfig::local(id, members.clone(), format!("r{id}").into(), "secret".into(), Some(metrics[id as usize].clone()));
        config.initial_voters = Some((0..args.replicas).collect());
        config.log.size_mib = args.log_size_mib;
        config.log.checkpoint_every_slots = args.checkpoint_every_slots;
        config.transport.kind = args.transport.clone();
        let text = toml::to_string_pretty(&config).map_err(|e| e.to_string())?;
        let path = dir.join(format!("replica-{id}.toml"));
        std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    let file = ClusterFile { secret_file: "secret".into(), members, metrics };
    let text = toml::to_string_pretty(&file).map_err(|e| e.to_string())?;
    std::fs::write(ClusterFile::path(dir), text).map_err(|e| format!("writing cluster.toml: {e}"))?;
    Ok(file)
}

fn spawn_replica(dir: &Path, id: u32) -> Result<i32, String> {
    let exe = std::env::current_exe().map_err(|e| format!("locating the decree binary: {e}"))?;
    let log_path = dir.join(format!("replica-{id}.log"));
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    let child = Command::new(exe)
        .arg("replica")
        .arg("--config")
        .arg(dir.join(format!("replica-{id}.toml")))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0) // survives the terminal's Ctrl-C; stopped by `cluster down`
        .spawn()
        .map_err(|e| format!("starting replica {id}: {e}"))?;
    let pid = child.id() as i32;
    std::fs::write(pid_path(dir, id), format!("{pid}\n")).map_err(|e| e.to_string())?;
    Ok(pid)
}

fn up(args: UpArgs) -> Result<(), String> {
    let file = if ClusterFile::path(&args.dir).exists() {
        ClusterFile::load(&args.dir)?
    } else {
        write_configs(&args)?;
        ClusterFile::load(&args.dir)?
    };
    let mut started = Vec::new();
    for member in &file.members {
        match running_pid(&pid_path(&args.dir, member.id)) {
            Some(pid) => println!("replica r{} already running (pid {pid})", member.id),
            None => {
                let pid = spawn_replica(&args.dir, member.id)?;
                started.push((member.id, pid));
                println!("replica r{} started on {} (pid {pid}, log {})", member.id, member.addr, args.dir.join(format!("replica-{}.log", member.id)).display());
            }
        }
    }
    let secret = read_secret(&file.secret_file).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(args.wait_s);
    while Instant::now() < deadline {
        let leader = file.members.iter().find_map(|m| {
            Client::status(&m.addr, &secret, Duration::from_millis(300)).ok().filter(|s| s.leading).map(|s| s.id)
        });
        if let Some(leader) = leader {
            println!("cluster up: {} replica processes, leader r{leader}; try `decree status --cluster {}`", file.members.len(), args.dir.display());
            return Ok(());
        }
        // A replica that exited (port taken, bad log) will not come back by waiting: say why now.
        if let Some(dead) = file.members.iter().find(|m| running_pid(&pid_path(&args.dir, m.id)).is_none()) {
            let log_path = args.dir.join(format!("replica-{}.log", dead.id));
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(3).collect();
            // Leave nothing half-started behind: the replicas this call started are stopped.
            stop_started(&args.dir, &started);
            return Err(format!(
                "replica r{} exited during start-up; last lines of {}:\n{}",
                dead.id,
                log_path.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("no leader elected within {} s; see {}/replica-*.log", args.wait_s, args.dir.display()))
}

/// Stops replicas `up` started when start-up fails, so no orphan keeps a port or a log locked.
fn stop_started(dir: &std::path::Path, started: &[(u32, i32)]) {
    for (id, pid) in started {
        if running_pid(&pid_path(dir, *id)).is_some() {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            eprintln!("stopped replica r{id} (pid {pid}) started by this failed `cluster up`");
        }
        let _ = std::fs::remove_file(pid_path(dir, *id));
    }
}

fn down(args: DownArgs) -> Result<(), String> {
    let file = ClusterFile::load(&args.dir)?;
    let mut running = Vec::new();
    for member in &file.members {
        if let Some(pid) = running_pid(&pid_path(&args.dir, member.id)) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            running.push((member.id, pid));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(args.grace_s);
    for (id, pid) in running {
        while running_pid(&pid_path(&args.dir, id)).is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if running_pid(&pid_path(&args.dir, id)).is_some() {
            eprintln!("replica r{id} (pid {pid}) ignored SIGTERM for {} s; sending SIGKILL", args.grace_s);
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        } else {
            println!("replica r{id} stopped");
        }
        let _ = std::fs::remove_file(pid_path(&args.dir, id));
    }
    if args.purge {
        std::fs::remove_dir_all(&args.dir).map_err(|e| format!("removing {}: {e}", args.dir.display()))?;
        println!("removed {}", args.dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        up: UpArgs,
    }

    fn up_args(extra: &[&str]) -> Result<UpArgs, clap::Error> {
        Cli::try_parse_from([&["up"][..], extra].concat()).map(|cli| cli.up)
    }

    #[test]
    fn spares_join_the_pool_but_not_the_initial_configuration() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("cluster");
        let args = up_args(&["--replicas", "3", "--spares", "2", "--dir", dir.to_str().unwrap()]).unwrap();
        let file = write_configs(&args).unwrap();
        assert_eq!(file.members.len(), 5, "cluster.toml lists every process");
        let config = ReplicaConfig::load(&dir.join("replica-4.toml")).unwrap();
        let membership = config.core_config().membership;
        assert_eq!(membership.voters().len(), 3);
        assert!(!membership.is_member(decree_engine::types::ReplicaId(4)), "replica 4 starts as a spare");
    }

    #[test]
    fn impossible_cluster_sizes_are_refused() {
        assert!(up_args(&["--replicas", "0"]).is_err(), "no voter");
        let args = up_args(&["--replicas", "60", "--spares", "5", "--dir", "/nonexistent-decree-test"]).unwrap();
        let err = write_configs(&args).unwrap_err();
        assert!(err.contains("at most 64"), "{err}");
    }
}

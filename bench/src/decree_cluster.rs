//! A local decree cluster for one benchmark: the harness writes the replicas' configs through
//! decree-tools' public config types (so it can pick the transport and log backend), then `decree cluster up`
//! starts them (it keeps an existing cluster.toml) and `decree cluster down --purge` stops them.

use crate::error::BenchError;
use decree_tools::client::Client;
use decree_tools::cluster_file::ClusterFile;
use decree_tools::config::{Member, ReplicaConfig};
use decree_tools::secret::{generate_secret, read_secret};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// What the harness may set on the cluster (only what the server's config supports).
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// Number of replicas.
    pub replicas: u32,
    /// Transport between replicas (validated by decree-tools' config).
    pub transport: String,
    /// Log backend name (validated by decree-tools' config).
    pub log_backend: String,
    /// Size of each replica's log file.
    pub log_size_mib: u64,
    /// Checkpoint period in applied slots (0: never).
    pub checkpoint_every_slots: u64,
    /// Leader batching and pipeline window (validated by decree-tools' config).
    pub batching: decree_tools::config::BatchingSection,
    /// Replica i listens on base_port + i; metrics on base_port + 1000 + i.
    pub base_port: u16,
}

/// A running cluster; stopped and purged on drop.
pub struct DecreeCluster {
    bin: PathBuf,
    dir: PathBuf,
    /// The leader's client address.
    pub leader_addr: String,
    /// Every replica's address.
    pub addrs: Vec<String>,
    /// The cluster secret.
    pub secret: Vec<u8>,
}

/// The `decree` binary: `explicit`, else beside this executable (same cargo target dir).
pub fn find_decree_bin(explicit: Option<&Path>) -> Result<PathBuf, BenchError> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => std::env::current_exe()
            .map_err(|e| BenchError::DecreeBinary(e.to_string()))?
            .with_file_name("decree"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(BenchError::DecreeBinary(format!(
            "{} not found",
            path.display()
        )))
    }
}

fn write_configs(spec: &ClusterSpec, dir: &Path) -> Result<(), BenchError> {
    let io = |what: &str, e: &dyn std::fmt::Display| {
        BenchError::Cluster(format!("{what} in {}: {e}", dir.display()))
    };
    std::fs::create_dir_all(dir).map_err(|e| io("creating the directory", &e))?;
    generate_secret(&dir.join("secret")).map_err(|e| io("writing the secret", &e))?;
    let members: Vec<Member> = (0..spec.replicas)
        .map(|id| Member {
            id,
            addr: format!("127.0.0.1:{}", spec.base_port as u32 + id),
        })
        .collect();
    let metrics: Vec<String> = (0..spec.replicas)
        .map(|id| format!("127.0.0.1:{}", spec.base_port as u32 + 1000 + id))
        .collect();
    for id in 0..spec.replicas {
        let mut config = ReplicaConfig::local(
            id,
            members.clone(),
            format!("r{id}").into(),
            "secret".into(),
            Some(metrics[id as usize].clone()),
        );
        config.transport.kind = spec.transport.clone();
        config.log.backend = spec.log_backend.clone();
        config.log.size_mib = spec.log_size_mib;
        config.log.checkpoint_every_slots = spec.checkpoint_every_slots;
        config.batching = spec.batching.clone();
        config.validate().map_err(|(field, detail)| {
            BenchError::Cluster(format!("replica config {field}: {detail}"))
        })?;
        let text = toml::to_string_pretty(&config).map_err(|e| io("encoding a config", &e))?;
        std::fs::write(dir.join(format!("replica-{id}.toml")), text)
            .map_err(|e| io("writing a config", &e))?;
    }
    let file = ClusterFile {
        secret_file: "secret".into(),
        members,
        metrics,
    };
    let text = toml::to_string_pretty(&file).map_err(|e| io("encoding cluster.toml", &e))?;
    std::fs::write(ClusterFile::path(dir), text).map_err(|e| io("writing cluster.toml", &e))
}

fn run_decree(bin: &Path, args: &[&str]) -> Result<(), BenchError> {
    let output = Command::new(bin)
        .args(args)
        .output()
        .map_err(|e| BenchError::DecreeBinary(format!("running {}: {e}", bin.display())))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(BenchError::Cluster(format!(
            "`decree {}` failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}

impl DecreeCluster {
    /// Writes configs under `dir` (which must not hold a cluster yet), starts the replicas and
    /// waits for a leader.
    pub fn start(bin: &Path, dir: &Path, spec: &ClusterSpec) -> Result<DecreeCluster, BenchError> {
        if ClusterFile::path(dir).exists() {
            return Err(BenchError::Cluster(format!(
                "{} already holds a cluster; stop it with `decree cluster down --dir {} --purge` or pick another --data-dir",
                dir.display(),
                dir.display()
            )));
        }
        write_configs(spec, dir)?;
        let dir_text = dir.display().to_string();
        // From here on, drop stops whatever did start.
        let mut cluster = DecreeCluster {
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            leader_addr: String::new(),
            addrs: Vec::new(),
            secret: Vec::new(),
        };
        run_decree(
            bin,
            &[
                "cluster",
                "up",
                "--dir",
                &dir_text,
                "--replicas",
                &spec.replicas.to_string(),
            ],
        )?;
        let file = ClusterFile::load(dir).map_err(BenchError::Cluster)?;
        cluster.secret =
            read_secret(&file.secret_file).map_err(|e| BenchError::Cluster(e.to_string()))?;
        cluster.addrs = file.addrs();
        cluster.leader_addr = cluster.find_leader(Duration::from_secs(15))?;
        Ok(cluster)
    }

    /// The address of the replica that reports it leads.
    pub fn find_leader(&self, wait: Duration) -> Result<String, BenchError> {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            for addr in &self.addrs {
                if Client::status(addr, &self.secret, Duration::from_millis(500))
                    .map(|s| s.leading)
                    .unwrap_or(false)
                {
                    return Ok(addr.clone());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(BenchError::Cluster(format!(
            "no leader within {} s; see {}/replica-*.log",
            wait.as_secs(),
            self.dir.display()
        )))
    }

    /// Every replica's id and pid (from `decree cluster up`'s pid files), and whether it leads.
    pub fn processes(&self) -> Vec<crate::perf_stat::Target> {
        (0..self.addrs.len() as u32)
            .filter_map(|replica| {
                let text = std::fs::read_to_string(self.dir.join(format!("replica-{replica}.pid")))
                    .ok()?;
                let pid = text.trim().parse().ok()?;
                Some(crate::perf_stat::Target {
                    replica,
                    pid,
                    leader: self.addrs[replica as usize] == self.leader_addr,
                })
            })
            .collect()
    }

    /// The directory the replicas keep their logs in (where fdatasync is measured).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for DecreeCluster {
    fn drop(&mut self) {
        let dir = self.dir.display().to_string();
        // DECREE_KEEP_LOGS (as for the cluster tests) keeps the replicas' logs and data to read.
        let keep = std::env::var_os("DECREE_KEEP_LOGS").is_some();
        let args: &[&str] = if keep { &["cluster", "down", "--dir", &dir] } else { &["cluster", "down", "--dir", &dir, "--purge"] };
        if let Err(e) = run_decree(&self.bin, args) {
            eprintln!("decree-bench: stopping the cluster: {e}");
        }
        if keep {
            eprintln!("decree-bench: replica logs kept in {dir} (DECREE_KEEP_LOGS)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(batching: decree_tools::config::BatchingSection) -> ClusterSpec {
        ClusterSpec {
            replicas: 3,
            transport: "tcp".into(),
            log_backend: "file".into(),
            log_size_mib: 16,
            checkpoint_every_slots: 0,
            batching,
            base_port: 17_400,
        }
    }

    #[test]
    fn batch_limits_reach_every_replica_config_and_bad_ones_are_refused() {
        let dir = std::env::temp_dir().join(format!("decree-bench-batching-{}", std::process::id()));
        let batching = decree_tools::config::BatchingSection { max_requests: 8, max_bytes: 512, window_slots: 4 };
        write_configs(&spec(batching.clone()), &dir).unwrap();
        let config = ReplicaConfig::load(&dir.join("replica-2.toml")).unwrap();
        assert_eq!(config.core_config().max_batch_requests, 8);
        assert_eq!(config.core_config().window_slots, 4);
        let bad = decree_tools::config::BatchingSection { max_bytes: 0, ..batching };
        let err = write_configs(&spec(bad), &dir).unwrap_err().to_string();
        assert!(err.contains("batching.max_bytes"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

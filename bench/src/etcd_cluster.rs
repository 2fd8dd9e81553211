//! A 3-node etcd cluster on loopback for the side-by-side run: Debian's etcd-server, one data dir
//! per member under the benchmark's data dir, fsync on (etcd's default; nothing turns it off).

use crate::error::BenchError;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The etcd binary on PATH (or the Debian location), if installed.
pub fn find_etcd() -> Option<PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("etcd"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    candidates
        .into_iter()
        .chain([PathBuf::from("/usr/bin/etcd")])
        .find(|p| p.is_file())
}

/// Running etcd members; killed (by their own pids) and their data removed on drop.
pub struct EtcdCluster {
    children: Vec<Child>,
    dir: PathBuf,
    /// Client URLs, one per member.
    pub client_urls: Vec<String>,
}

impl EtcdCluster {
    /// Starts `members` etcd processes under `dir` with client ports from `base_port` and peer
    /// ports from `base_port + 100`, and waits until the cluster answers /health.
    pub fn start(
        bin: &Path,
        dir: &Path,
        members: u16,
        base_port: u16,
    ) -> Result<EtcdCluster, BenchError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| BenchError::Etcd(format!("creating {}: {e}", dir.display())))?;
        let peer_url = |i: u16| format!("http://127.0.0.1:{}", base_port + 100 + i);
        let client_url = |i: u16| format!("http://127.0.0.1:{}", base_port + i);
        let initial: Vec<String> = (0..members)
            .map(|i| format!("e{i}={}", peer_url(i)))
            .collect();
        let mut cluster = EtcdCluster {
            children: Vec::new(),
            dir: dir.to_path_buf(),
            client_urls: (0..members).map(client_url).collect(),
        };
        for i in 0..members {
            let log_path = dir.join(format!("e{i}.log"));
            let log = std::fs::File::create(&log_path)
                .map_err(|e| BenchError::Etcd(format!("{}: {e}", log_path.display())))?;
            let err = log
                .try_clone()
                .map_err(|e| BenchError::Etcd(e.to_string()))?;
            let child = Command::new(bin)
                .args(["--name", &format!("e{i}")])
                .args([
                    "--data-dir",
                    &dir.join(format!("e{i}.etcd")).display().to_string(),
                ])
                .args([
                    "--listen-client-urls",
                    &client_url(i),
                    "--advertise-client-urls",
                    &client_url(i),
                ])
                .args([
                    "--listen-peer-urls",
                    &peer_url(i),
                    "--initial-advertise-peer-urls",
                    &peer_url(i),
                ])
                .args([
                    "--initial-cluster",
                    &initial.join(","),
                    "--initial-cluster-state",
                    "new",
                ])
                .args([
                    "--initial-cluster-token",
                    "decree-bench",
                    "--log-outputs",
                    "stderr",
                ])
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(err)
                .spawn()
                .map_err(|e| BenchError::Etcd(format!("starting {}: {e}", bin.display())))?;
            cluster.children.push(child);
        }
        cluster.wait_healthy(Duration::from_secs(20))?;
        Ok(cluster)
    }

    fn wait_healthy(&mut self, wait: Duration) -> Result<(), BenchError> {
        let deadline = Instant::now() + wait;
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_millis(500))
            .build();
        while Instant::now() < deadline {
            for (i, child) in self.children.iter_mut().enumerate() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(BenchError::Etcd(format!(
                        "member e{i} exited ({status}); see {}/e{i}.log",
                        self.dir.display()
                    )));
                }
            }
            let healthy = self.client_urls.iter().all(|url| {
                agent
                    .get(&format!("{url}/health"))
                    .call()
                    .ok()
                    .and_then(|r| r.into_string().ok())
                    .is_some_and(|body| body.contains("true"))
            });
            if healthy {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(BenchError::Etcd(format!(
            "not healthy within {} s; see {}/e*.log",
            wait.as_secs(),
            self.dir.display()
        )))
    }

    /// The client URL of the current leader (asked through /v3/maintenance/status).
    pub fn leader_url(&self) -> Result<String, BenchError> {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(2))
            .build();
        for url in &self.client_urls {
            let body = agent
                .post(&format!("{url}/v3/maintenance/status"))
                .send_string("{}")
                .map_err(|e| e.to_string())
                .and_then(|r| r.into_string().map_err(|e| e.to_string()))
                .map_err(|e| BenchError::Etcd(format!("{url}/v3/maintenance/status: {e}")))?;
            let status: serde_json::Value = serde_json::from_str(&body)
                .map_err(|e| BenchError::Etcd(format!("status reply {body:?}: {e}")))?;
            if status["leader"].is_string() && status["leader"] == status["header"]["member_id"] {
                return Ok(url.clone());
            }
        }
        Err(BenchError::Etcd("no member reports itself leader".into()))
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

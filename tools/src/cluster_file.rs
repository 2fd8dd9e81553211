//! `cluster.toml`: what a client needs to reach a cluster (members and the secret file), written by
//! `decree cluster up` and read by put/get/cas/status/bench.

use crate::config::Member;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Client-side view of a cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// File holding the cluster secret (relative to this file's directory).
    pub secret_file: PathBuf,
    /// The replicas.
    pub members: Vec<Member>,
    /// Their metrics endpoints, by member order.
    #[serde(default)]
    pub metrics: Vec<String>,
}

impl ClusterFile {
    /// `dir/cluster.toml`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("cluster.toml")
    }

    /// Loads `dir/cluster.toml`, resolving the secret path.
    pub fn load(dir: &Path) -> Result<ClusterFile, String> {
        let path = Self::path(dir);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e} (start a cluster with `decree cluster up --dir {}`)", path.display(), dir.display()))?;
        let mut file: ClusterFile = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        file.secret_file = dir.join(&file.secret_file);
        Ok(file)
    }

    /// Member addresses.
    pub fn addrs(&self) -> Vec<String> {
        self.members.iter().map(|m| m.addr.clone()).collect()
    }
}

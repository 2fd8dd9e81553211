//! How client commands find a cluster: `--cluster DIR` (from `decree cluster up`), or explicit
//! `--addrs` plus `--secret-file`.

use clap::Args;
use decree_tools::client::ClientConfig;
use decree_tools::cluster_file::ClusterFile;
use decree_tools::secret::read_secret;
use std::path::PathBuf;
use std::process::ExitCode;

/// Cluster selection shared by put/get/cas/status/bench.
#[derive(Args, Debug, Clone)]
pub struct TargetArgs {
    /// Directory of a local cluster (holds cluster.toml).
    #[arg(long, default_value = ".decree-data")]
    pub cluster: PathBuf,
    /// Replica addresses (comma-separated), instead of --cluster.
    #[arg(long, value_delimiter = ',', requires = "secret_file")]
    pub addrs: Vec<String>,
    /// File holding the cluster secret, with --addrs.
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// Per-operation deadline, retries included.
    #[arg(long, default_value_t = 15_000)]
    pub deadline_ms: u64,
}

impl TargetArgs {
    /// The client configuration these arguments name.
    pub fn client_config(&self) -> Result<ClientConfig, String> {
        let (addrs, secret_path) = if self.addrs.is_empty() {
            let file = ClusterFile::load(&self.cluster)?;
            (file.addrs(), file.secret_file)
        } else {
            (self.addrs.clone(), self.secret_file.clone().expect("clap requires it"))
        };
        let secret = read_secret(&secret_path).map_err(|e| e.to_string())?;
        let mut config = ClientConfig::new(addrs, secret);
        config.deadline_ms = self.deadline_ms;
        Ok(config)
    }

    /// `client_config`, or the exit code 2 after telling the user why (`decree COMMAND: ...`).
    pub fn config_for(&self, command: &str) -> Result<ClientConfig, ExitCode> {
        self.client_config().map_err(|e| {
            eprintln!("decree {command}: {e}");
            ExitCode::from(2)
        })
    }
}

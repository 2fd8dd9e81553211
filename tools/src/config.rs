//! `replica.toml`: one replica's configuration, parsed with serde and validated with errors that
//! name the field and the fix. Relative paths are resolved against the config file's directory.

use decree_engine::core::CoreConfig;
use decree_engine::membership::Membership;
use decree_engine::runtime::{NodeConfig, Placement};
use decree_engine::types::ReplicaId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// A configuration problem.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, or an unknown / missing / mistyped field.
    #[error("config {path}: {detail}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message (names the field and line).
        detail: String,
    },
    /// Parsed, but inconsistent.
    #[error("config {path}: {field}: {detail}")]
    Invalid {
        /// The file.
        path: String,
        /// The offending field.
        field: &'static str,
        /// What is wrong and what to do.
        detail: String,
    },
}

/// One member of the group.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Replica id.
    pub id: u32,
    /// host:port it listens on (clients and replicas alike).
    pub addr: String,
}

/// Log settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// auto | dax | devdax | file | file-direct | file-pwrite | file-uring | file-mmap | memory (volatile:
    /// a restart starts with an empty log; benchmarks only).
    #[serde(default = "default_backend")]
    pub backend: String,
    /// Log file or /dev/daxX.Y (default: `<data_dir>/log`).
    pub path: Option<PathBuf>,
    /// Size of a log file created on first start.
    #[serde(default = "default_log_size_mib")]
    pub size_mib: u64,
    /// Checkpoint the state machine every this many applied slots, then discard the log below it
    /// (0: not by count); once checkpoints reach 1 MiB, only when the log holds four times the
    /// last one's bytes. The runtime also checkpoints whenever the log is half full.
    #[serde(default = "default_checkpoint_every_slots")]
    pub checkpoint_every_slots: u64,
    /// A spare (the leader's majority does not need its acknowledgements: with 3 voters, one of
    /// the two followers) is sent to about once per this window, rounded up to a millisecond, and
    /// its log syncs wait this long to group more writes, while the commit path keeps up.
    /// Default: 1000 when every member is on a loopback address and the log is durable (replicas
    /// sharing one host's two CPUs and disk, where a third message and sync per commit slow the two
    /// a commit waits for), 0 otherwise (every follower is sent every proposal, and the leader
    /// commits with the faster of them).
    #[serde(default)]
    pub spare_sync_delay_us: Option<u64>,
}

/// Transport between replicas.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportSection {
    /// `tcp` (framed messages on the replica's own port), `shm` (replicas on one host: one-sided
    /// stores into each other's mailbox files) or `rdma` (one-sided RDMA writes; a build with the
    /// `rdma` feature).
    #[serde(default = "default_transport")]
    pub kind: String,
    /// shm: directory holding every replica's mailbox (`r<id>.mailbox`), the same for all of
    /// them (default: the parent of `data_dir`, which `decree cluster up` shares).
    pub shm_dir: Option<PathBuf>,
    /// shm and rdma: size of this replica's mailbox.
    #[serde(default = "default_mailbox_mib")]
    pub mailbox_mib: u64,
    /// rdma: device name (`rxe0`, `mlx5_0`).
    #[serde(default = "default_rdma_device")]
    pub rdma_device: String,
    /// rdma: GID index (on rxe, 1 is the IPv4-mapped RoCE v2 GID).
    #[serde(default = "default_rdma_gid_index")]
    pub rdma_gid_index: u8,
    /// rdma: a replica's queue-pair side channel listens on its member port plus this.
    #[serde(default = "default_rdma_port_offset")]
    pub rdma_port_offset: u16,
}

/// Log backends the server accepts (`log.backend`).
pub const LOG_BACKENDS: [&str; decree_pmem::Backend::NAMES.len()] = decree_pmem::Backend::NAMES;

/// Transports this build serves.
pub const TRANSPORTS: &[&str] = if cfg!(feature = "rdma") { &["tcp", "shm", "rdma"] } else { &["tcp", "shm"] };
/// Largest mailbox accepted.
const MAX_MAILBOX_MIB: u64 = 1_024;

/// Protocol timers.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsSection {
    /// Leader heartbeat period.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_interval_ms: u64,
    /// Election timeout lower bound.
    #[serde(default = "default_election_min_ms")]
    pub election_timeout_min_ms: u64,
    /// Election timeout upper bound.
    #[serde(default = "default_election_max_ms")]
    pub election_timeout_max_ms: u64,
    /// Core tick period.
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
}

/// Most `[log] spare_sync_delay_us` accepted: a spare's data is then at most about twice that
/// behind the leader's (sent once per window, synced a window later).
const MAX_SPARE_SYNC_DELAY_US: u64 = 10_000;
/// `[log] spare_sync_delay_us` when every member is on loopback and the log is durable. 5 ms, not
/// 1: with the replicas on one CPU (decree-bench's placement at low load) each spare sync's two
/// device kicks take CPU from the commit path; 1-client p50 228-262 against 259-324 us and 16
/// clients 37.5-46.1k against 32.6-36.1k ops/s in four interleaved pairs (docs/benchmarks.md,
/// session 14); at 1024-4096 clients, spread, within the host's noise.
const ONE_HOST_SPARE_SYNC_DELAY_US: u64 = 5_000;
/// Most `[placement] spin_iterations` accepted.
const MAX_SPIN_ITERATIONS: u32 = 100_000;
/// Most `[placement] yield_iterations` accepted.
const MAX_YIELD_ITERATIONS: u32 = 1_000;
/// Most `[placement] io_threads` accepted.
const MAX_IO_THREADS: usize = 64;

/// Which CPU runs which role (omit for the default placement for this host's CPU count).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementSection {
    /// CPU of the protocol core thread.
    pub core_cpu: Option<usize>,
    /// CPU of the persistence thread.
    pub persistence_cpu: Option<usize>,
    /// CPU of socket threads.
    pub io_cpu: Option<usize>,
    /// Busy-wait iterations before an idle role yields, then parks (default: 256 on hosts with 4
    /// or more CPUs, else 0).
    pub spin_iterations: Option<u32>,
    /// `yield_now` calls after spinning, before an idle role parks (default: 16 on hosts with 4
    /// or more CPUs, else 256).
    pub yield_iterations: Option<u32>,
    /// Client I/O threads, each multiplexing many connections (default: one per four CPUs, at
    /// least one).
    pub io_threads: Option<usize>,
    /// Whether a thread that receives a message runs the protocol core itself when the core is
    /// free, instead of waking the core thread (default: yes on hosts with fewer than 4 CPUs,
    /// where idle threads park and each wake-up costs microseconds).
    pub run_core_on_delivery: Option<bool>,
    /// `false`: do not pin at all.
    #[serde(default = "default_true")]
    pub pin: bool,
}

impl Default for PlacementSection {
    fn default() -> Self {
        PlacementSection {
            core_cpu: None,
            persistence_cpu: None,
            io_cpu: None,
            spin_iterations: None,
            yield_iterations: None,
            io_threads: None,
            run_core_on_delivery: None,
            pin: true,
        }
    }
}

/// A replica's whole configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaConfig {
    /// This replica's id (must be one of `members`).
    pub id: u32,
    /// Directory for the log and state.
    pub data_dir: PathBuf,
    /// File holding the cluster secret.
    pub secret_file: PathBuf,
    /// Listen address (default: this member's `addr`).
    pub listen: Option<String>,
    /// Prometheus endpoint address (omit to disable).
    pub metrics: Option<String>,
    /// Voters of the initial configuration (default: every entry of `members`). Entries of
    /// `members` named in neither list are spares: reachable, and addable with `decree member add`.
    /// Every replica must name the same initial configuration; committed changes replace it.
    pub initial_voters: Option<Vec<u32>>,
    /// Learners of the initial configuration (receive the log, never vote).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub initial_learners: Vec<u32>,
    /// Every replica this one may ever talk to (the pool): id and address.
    pub members: Vec<Member>,
    /// Log settings.
    #[serde(default = "default_log")]
    pub log: LogSection,
    /// Transport settings.
    #[serde(default = "default_transport_section")]
    pub transport: TransportSection,
    /// Timers.
    #[serde(default = "default_timeouts")]
    pub timeouts: TimeoutsSection,
    /// Core placement.
    #[serde(default)]
    pub placement: PlacementSection,
    /// Leader batching and pipelining.
    #[serde(default)]
    pub batching: BatchingSection,
}

/// Most `[batching] max_requests` accepted.
const MAX_BATCH_REQUESTS: usize = 65_536;
/// Most `[batching] max_bytes` accepted (64 values of this size must fit one 64 MiB frame).
const MAX_BATCH_BYTES: usize = 1 << 20;
/// Most `[batching] window_slots` accepted.
const MAX_WINDOW_SLOTS: u64 = 65_536;

/// How the leader groups client requests into slots and how many slots it keeps in flight.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchingSection {
    /// Most client requests in one slot.
    #[serde(default = "default_batch_requests")]
    pub max_requests: usize,
    /// Most request bytes in one slot.
    #[serde(default = "default_batch_bytes")]
    pub max_bytes: usize,
    /// Slots a leader keeps in flight beyond its commit index (the pipeline window).
    #[serde(default = "default_window_slots")]
    pub window_slots: u64,
}

impl Default for BatchingSection {
    fn default() -> Self {
        BatchingSection { max_requests: default_batch_requests(), max_bytes: default_batch_bytes(), window_slots: default_window_slots() }
    }
}

fn default_batch_requests() -> usize {
    CoreConfig::new(ReplicaId(0), vec![ReplicaId(0)]).max_batch_requests
}
fn default_batch_bytes() -> usize {
    CoreConfig::new(ReplicaId(0), vec![ReplicaId(0)]).max_batch_bytes
}
fn default_window_slots() -> u64 {
    CoreConfig::new(ReplicaId(0), vec![ReplicaId(0)]).window_slots
}

fn default_backend() -> String {
    "file".into()
}
fn default_log_size_mib() -> u64 {
    256
}
fn default_checkpoint_every_slots() -> u64 {
    10_000
}
fn default_transport() -> String {
    "tcp".into()
}
fn default_mailbox_mib() -> u64 {
    16
}
fn default_rdma_device() -> String {
    "rxe0".into()
}
fn default_rdma_gid_index() -> u8 {
    1
}
fn default_rdma_port_offset() -> u16 {
    1_000
}
fn default_heartbeat_ms() -> u64 {
    20
}
fn default_election_min_ms() -> u64 {
    150
}
fn default_election_max_ms() -> u64 {
    300
}
fn default_tick_ms() -> u64 {
    5
}
fn default_true() -> bool {
    true
}
fn default_log() -> LogSection {
    LogSection {
        backend: default_backend(),
        path: None,
        size_mib: default_log_size_mib(),
        checkpoint_every_slots: default_checkpoint_every_slots(),
        spare_sync_delay_us: None,
    }
}
fn default_transport_section() -> TransportSection {
    TransportSection {
        kind: default_transport(),
        shm_dir: None,
        mailbox_mib: default_mailbox_mib(),
        rdma_device: default_rdma_device(),
        rdma_gid_index: default_rdma_gid_index(),
        rdma_port_offset: default_rdma_port_offset(),
    }
}
fn default_timeouts() -> TimeoutsSection {
    TimeoutsSection {
        heartbeat_interval_ms: default_heartbeat_ms(),
        election_timeout_min_ms: default_election_min_ms(),
        election_timeout_max_ms: default_election_max_ms(),
        tick_ms: default_tick_ms(),
    }
}

impl ReplicaConfig {
    /// A config with embedded defaults (used by `decree cluster up`).
    pub fn local(id: u32, members: Vec<Member>, data_dir: PathBuf, secret_file: PathBuf, metrics: Option<String>) -> Self {
        ReplicaConfig {
            id,
            data_dir,
            secret_file,
            listen: None,
            metrics,
            initial_voters: None,
            initial_learners: Vec::new(),
            members,
            log: default_log(),
            transport: default_transport_section(),
            // Several replicas share this host's CPUs: looser timers than a dedicated deployment, so
            // a briefly starved replica does not depose a healthy leader.
            timeouts: TimeoutsSection { heartbeat_interval_ms: 30, election_timeout_min_ms: 300, election_timeout_max_ms: 600, tick_ms: 5 },
            // Pinning every replica's core thread to the same CPU would serialize them: let the OS place them.
            placement: PlacementSection { pin: false, ..PlacementSection::default() },
            batching: BatchingSection::default(),
        }
    }

    /// Reads, parses, resolves relative paths and validates `path`.
    pub fn load(path: &Path) -> Result<ReplicaConfig, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
        let mut config: ReplicaConfig =
            toml::from_str(&text).map_err(|e| ConfigError::Parse { path: shown.clone(), detail: e.to_string() })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.data_dir = base.join(&config.data_dir);
        config.secret_file = base.join(&config.secret_file);
        if let Some(log_path) = config.log.path.take() {
            config.log.path = Some(base.join(log_path));
        }
        if let Some(shm_dir) = config.transport.shm_dir.take() {
            config.transport.shm_dir = Some(base.join(shm_dir));
        }
        config.validate().map_err(|(field, detail)| ConfigError::Invalid { path: shown, field, detail })?;
        Ok(config)
    }

    /// Checks consistency; returns (field, what to fix).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.members.is_empty() {
            return Err(("members", "at least one [[members]] entry is required".into()));
        }
        let mut ids = BTreeSet::new();
        for member in &self.members {
            if !ids.insert(member.id) {
                return Err(("members", format!("replica id {} appears twice", member.id)));
            }
            if member.addr.parse::<SocketAddr>().is_err() {
                return Err(("members.addr", format!("{:?} (replica {}) is not host:port with a numeric IP", member.addr, member.id)));
            }
        }
        if !ids.contains(&self.id) {
            return Err(("id", format!("{} is not among the members' ids {ids:?}", self.id)));
        }
        self.initial_membership().map_err(|detail| ("initial_voters", detail))?;
        if let Some(listen) = &self.listen {
            listen.parse::<SocketAddr>().map_err(|_| ("listen", format!("{listen:?} is not host:port")))?;
        }
        if let Some(metrics) = &self.metrics {
            metrics.parse::<SocketAddr>().map_err(|_| ("metrics", format!("{metrics:?} is not host:port")))?;
        }
        if decree_pmem::Backend::parse(&self.log.backend).is_none() {
            return Err(("log.backend", format!("{:?}: use one of {}", self.log.backend, LOG_BACKENDS.join(", "))));
        }
        if self.log.size_mib < 1 {
            return Err(("log.size_mib", "must be at least 1".into()));
        }
        if self.log.spare_sync_delay_us.is_some_and(|us| us > MAX_SPARE_SYNC_DELAY_US) {
            return Err(("log.spare_sync_delay_us", format!("must be at most {MAX_SPARE_SYNC_DELAY_US}")));
        }
        if !TRANSPORTS.contains(&self.transport.kind.as_str()) {
            let rdma = if cfg!(feature = "rdma") { "" } else { " (rdma needs a build with `--features rdma`)" };
            return Err(("transport.kind", format!("{:?}: this build serves {}{rdma}", self.transport.kind, TRANSPORTS.join(", "))));
        }
        if !(1..=MAX_MAILBOX_MIB).contains(&self.transport.mailbox_mib) {
            return Err(("transport.mailbox_mib", format!("must be in 1..={MAX_MAILBOX_MIB}")));
        }
        if self.transport.kind == "rdma" {
            for member in &self.members {
                let port = member.addr.parse::<SocketAddr>().map(|a| a.port()).unwrap_or(0);
                if self.transport.rdma_port_offset == 0 || port.checked_add(self.transport.rdma_port_offset).is_none() {
                    return Err(("transport.rdma_port_offset", format!("must be > 0 and keep replica {}'s port {port} plus it below 65536", member.id)));
                }
            }
        }
        if self.timeouts.tick_ms == 0 || self.timeouts.tick_ms > self.timeouts.heartbeat_interval_ms {
            return Err(("timeouts.tick_ms", "must be in 1..=heartbeat_interval_ms".into()));
        }
        if !(1..=MAX_BATCH_REQUESTS).contains(&self.batching.max_requests) {
            return Err(("batching.max_requests", format!("must be in 1..={MAX_BATCH_REQUESTS}")));
        }
        if !(1..=MAX_BATCH_BYTES).contains(&self.batching.max_bytes) {
            return Err(("batching.max_bytes", format!("must be in 1..={MAX_BATCH_BYTES}")));
        }
        if !(1..=MAX_WINDOW_SLOTS).contains(&self.batching.window_slots) {
            return Err(("batching.window_slots", format!("must be in 1..={MAX_WINDOW_SLOTS}")));
        }
        self.core_config().validate().map_err(|detail| ("timeouts", detail))?;
        // Bounded so an idle role still parks within about a millisecond of running dry.
        if self.placement.spin_iterations.is_some_and(|n| n > MAX_SPIN_ITERATIONS) {
            return Err(("placement.spin_iterations", format!("must be at most {MAX_SPIN_ITERATIONS}")));
        }
        if self.placement.io_threads.is_some_and(|n| !(1..=MAX_IO_THREADS).contains(&n)) {
            return Err(("placement.io_threads", format!("must be 1..={MAX_IO_THREADS}")));
        }
        if self.placement.yield_iterations.is_some_and(|n| n > MAX_YIELD_ITERATIONS) {
            return Err(("placement.yield_iterations", format!("must be at most {MAX_YIELD_ITERATIONS}")));
        }
        self.placement().validate(decree_engine::runtime::placement::available_cpus()).map_err(|detail| ("placement", detail))?;
        Ok(())
    }

    /// The initial configuration: `initial_voters` (default: every member) and `initial_learners`,
    /// each of which must be an entry of `members`.
    pub fn initial_membership(&self) -> Result<Membership, String> {
        let voters = self.initial_voters.clone().unwrap_or_else(|| self.members.iter().map(|m| m.id).collect());
        for id in voters.iter().chain(&self.initial_learners) {
            if self.member(*id).is_none() {
                return Err(format!("replica {id} has no [[members]] entry: give it an address there"));
            }
        }
        let ids = |list: &[u32]| list.iter().copied().map(ReplicaId).collect();
        Membership::try_new(ids(&voters), ids(&self.initial_learners)).map_err(|e| format!("{e}; list at least one voter, each replica once"))
    }

    /// The protocol core's configuration.
    pub fn core_config(&self) -> CoreConfig {
        let mut core = CoreConfig::new(ReplicaId(self.id), vec![ReplicaId(self.id)]);
        core.membership = self.initial_membership().expect("validated: initial membership");
        core.heartbeat_interval_ms = self.timeouts.heartbeat_interval_ms;
        core.election_timeout_min_ms = self.timeouts.election_timeout_min_ms;
        core.election_timeout_max_ms = self.timeouts.election_timeout_max_ms;
        core.max_batch_requests = self.batching.max_requests;
        core.max_batch_bytes = self.batching.max_bytes;
        core.window_slots = self.batching.window_slots;
        // Spares that sync late are also sent to late: about once per sync window.
        core.spare_lag_ms = self.spare_sync_delay_us().div_ceil(1_000);
        core.seed = (self.id as u64) ^ crate::secret::random_u64();
        core
    }

    /// Core placement.
    pub fn placement(&self) -> Placement {
        if !self.placement.pin {
            return Placement::default();
        }
        let auto = Placement::for_cpus(decree_engine::runtime::placement::available_cpus());
        Placement {
            core_cpu: self.placement.core_cpu.or(auto.core_cpu),
            persistence_cpu: self.placement.persistence_cpu.or(auto.persistence_cpu),
            io_cpu: self.placement.io_cpu.or(auto.io_cpu),
        }
    }

    /// The runtime's configuration.
    pub fn node_config(&self) -> NodeConfig {
        let mut node = NodeConfig::new(self.core_config());
        node.placement = self.placement();
        node.tick_ms = self.timeouts.tick_ms;
        node.checkpoint_every_slots = self.log.checkpoint_every_slots;
        node.spare_sync_delay = Duration::from_micros(self.spare_sync_delay_us());
        if let Some(spins) = self.placement.spin_iterations {
            node.spin_iterations = spins;
        }
        if let Some(yields) = self.placement.yield_iterations {
            node.yield_iterations = yields;
        }
        if let Some(on_delivery) = self.placement.run_core_on_delivery {
            node.run_core_on_delivery = on_delivery;
        }
        node
    }

    /// `[log] spare_sync_delay_us`, or its default for where the members are.
    pub fn spare_sync_delay_us(&self) -> u64 {
        let one_host = self.members.iter().all(|m| m.addr.parse::<SocketAddr>().is_ok_and(|a| a.ip().is_loopback()));
        // The memory log has no disk for a spare to leave to the others.
        let durable = decree_pmem::Backend::parse(&self.log.backend) != Some(decree_pmem::Backend::Memory);
        self.log.spare_sync_delay_us.unwrap_or(if one_host && durable { ONE_HOST_SPARE_SYNC_DELAY_US } else { 0 })
    }

    /// shm: the directory of every replica's mailbox.
    pub fn shm_dir(&self) -> PathBuf {
        self.transport.shm_dir.clone().unwrap_or_else(|| self.data_dir.parent().unwrap_or(Path::new(".")).to_path_buf())
    }

    /// rdma: where replica `id`'s queue-pair side channel listens.
    pub fn rdma_side_channel(&self, id: u32) -> Option<SocketAddr> {
        let mut addr: SocketAddr = self.member(id)?.addr.parse().ok()?;
        addr.set_port(addr.port().checked_add(self.transport.rdma_port_offset)?);
        Some(addr)
    }

    /// The address this replica listens on.
    pub fn listen_addr(&self) -> String {
        self.listen.clone().unwrap_or_else(|| self.member(self.id).expect("validated: id is a member").addr.clone())
    }

    /// The member with `id`.
    pub fn member(&self, id: u32) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    /// The log file path.
    pub fn log_path(&self) -> PathBuf {
        self.log.path.clone().unwrap_or_else(|| self.data_dir.join("log"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replica.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    const GOOD: &str = r#"
id = 1
data_dir = "data"
secret_file = "secret"
[[members]]
id = 0
addr = "127.0.0.1:7400"
[[members]]
id = 1
addr = "127.0.0.1:7401"
[[members]]
id = 2
addr = "127.0.0.1:7402"
"#;

    #[test]
    fn good_config_resolves_paths_against_its_directory() {
        let (dir, path) = write(GOOD);
        let config = ReplicaConfig::load(&path).unwrap();
        assert_eq!(config.data_dir, dir.path().join("data"));
        assert_eq!(config.listen_addr(), "127.0.0.1:7401");
        assert_eq!(config.core_config().membership.voters().len(), 3);
        assert!(config.placement.pin, "an omitted [placement] pins by default");
    }

    #[test]
    fn errors_name_the_field() {
        let (_dir, path) = write(&GOOD.replacen("id = 1\n", "id = 7\n", 1));
        let err = ReplicaConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("id: 7 is not among"), "{err}");
        let (_dir, path) = write(&format!("{GOOD}\n[log]\nbackend = \"floppy\"\n"));
        let err = ReplicaConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("log.backend") && err.contains("file-mmap, memory"), "{err}");
        let (_dir, path) = write(&format!("{GOOD}\nbogus = 1\n"));
        let err = ReplicaConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn the_volatile_memory_backend_is_accepted() {
        let (_dir, path) = write(&format!("{GOOD}\n[log]\nbackend = \"memory\"\n"));
        let config = ReplicaConfig::load(&path).unwrap();
        assert_eq!(decree_pmem::Backend::parse(&config.log.backend), Some(decree_pmem::Backend::Memory));
    }

    #[test]
    fn batching_reaches_the_core_and_is_bounded() {
        let (_dir, path) = write(&format!("{GOOD}\n[batching]\nmax_requests = 16\nmax_bytes = 4096\nwindow_slots = 8\n"));
        let core = ReplicaConfig::load(&path).unwrap().core_config();
        assert_eq!((core.max_batch_requests, core.max_batch_bytes, core.window_slots), (16, 4096, 8));
        let (_dir, path) = write(&format!("{GOOD}\n[batching]\nmax_bytes = 0\n"));
        let err = ReplicaConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("batching.max_bytes"), "{err}");
        let (_dir, path) = write(&format!("{GOOD}\n[batching]\nwindow_slots = 1000000\n"));
        assert!(ReplicaConfig::load(&path).unwrap_err().to_string().contains("batching.window_slots"));
    }

    #[test]
    fn a_spare_delays_its_syncs_on_one_host_by_default_and_the_delay_is_bounded() {
        let (_dir, path) = write(GOOD);
        let node = ReplicaConfig::load(&path).unwrap().node_config();
        assert_eq!(node.spare_sync_delay, Duration::from_millis(5));
        assert_eq!(node.core.spare_lag_ms, 5, "the leader sends to spares once per window too");
        let (_dir, path) = write(&format!("{GOOD}\n[log]\nbackend = \"memory\"\n"));
        assert_eq!(ReplicaConfig::load(&path).unwrap().node_config().spare_sync_delay, Duration::ZERO, "no disk to share");
        let spread = GOOD.replace("127.0.0.1:7402", "10.0.0.3:7402");
        let (_dir, path) = write(&spread);
        assert_eq!(ReplicaConfig::load(&path).unwrap().node_config().spare_sync_delay, Duration::ZERO, "one member off this host");
        assert_eq!(ReplicaConfig::load(&path).unwrap().core_config().spare_lag_ms, 0, "every follower is sent every proposal");
        let (_dir, path) = write(&format!("{spread}\n[log]\nspare_sync_delay_us = 250\n"));
        let node = ReplicaConfig::load(&path).unwrap().node_config();
        assert_eq!(node.spare_sync_delay, Duration::from_micros(250));
        assert_eq!(node.core.spare_lag_ms, 1, "rounded up to the core's millisecond");
        let (_dir, path) = write(&format!("{GOOD}\n[log]\nspare_sync_delay_us = 10001\n"));
        let err = ReplicaConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("log.spare_sync_delay_us") && err.contains("at most 10000"), "{err}");
    }

    #[test]
    fn run_on_delivery_follows_the_host_unless_set() {
        let (_dir, path) = write(GOOD);
        let default = ReplicaConfig::load(&path).unwrap().node_config();
        assert_eq!(default.run_core_on_delivery, default.spin_iterations == 0, "parking hosts run the core on delivery");
        for set in [true, false] {
            let (_dir, path) = write(&format!("{GOOD}\n[placement]\nrun_core_on_delivery = {set}\n"));
            assert_eq!(ReplicaConfig::load(&path).unwrap().node_config().run_core_on_delivery, set);
        }
        let (_dir, path) = write(&format!("{GOOD}\n[placement]\nrun_core_on_delivery = 1\n"));
        assert!(ReplicaConfig::load(&path).unwrap_err().to_string().contains("run_core_on_delivery"));
    }

    #[test]
    fn transport_kinds_and_their_settings_are_checked() {
        let (_dir, path) = write(&format!("{GOOD}\n[transport]\nkind = \"shm\"\nmailbox_mib = 4\n"));
        let config = ReplicaConfig::load(&path).unwrap();
        assert_eq!(config.shm_dir(), config.data_dir.parent().unwrap());
        let (_dir, path) = write(&format!("{GOOD}\n[transport]\nkind = \"carrier-pigeon\"\n"));
        let err = ReplicaConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("transport.kind") && err.contains("tcp, shm"), "{err}");
        let (_dir, path) = write(&format!("{GOOD}\n[transport]\nkind = \"shm\"\nmailbox_mib = 0\n"));
        assert!(ReplicaConfig::load(&path).unwrap_err().to_string().contains("transport.mailbox_mib"));
    }

    fn with_initial(lines: &str) -> String {
        GOOD.replacen("secret_file = \"secret\"\n", &format!("secret_file = \"secret\"\n{lines}\n"), 1)
    }

    #[test]
    fn a_pool_larger_than_the_initial_configuration_leaves_spares() {
        let (_dir, path) = write(&with_initial("initial_voters = [0, 2]"));
        let config = ReplicaConfig::load(&path).unwrap();
        let membership = config.core_config().membership;
        assert_eq!(membership.voters(), &[ReplicaId(0), ReplicaId(2)]);
        assert!(!membership.is_member(ReplicaId(1)), "replica 1 is a spare");
        let (_dir, path) = write(&with_initial("initial_voters = [0, 1]\ninitial_learners = [2]"));
        let membership = ReplicaConfig::load(&path).unwrap().core_config().membership;
        assert_eq!(membership.learners(), &[ReplicaId(2)]);
    }

    #[test]
    fn a_bad_initial_configuration_is_refused_naming_the_fix() {
        for (lines, expected) in [
            ("initial_voters = []", "at least one voter"),
            ("initial_voters = [0, 9]", "replica 9 has no [[members]] entry"),
            ("initial_voters = [0]\ninitial_learners = [0]", "both as voter and as learner"),
            ("initial_voters = [0]\ninitial_learners = [5]", "replica 5 has no [[members]] entry"),
        ] {
            let (_dir, path) = write(&with_initial(lines));
            let err = ReplicaConfig::load(&path).unwrap_err().to_string();
            assert!(err.contains("initial_voters") && err.contains(expected), "{lines}: {err}");
        }
    }
}

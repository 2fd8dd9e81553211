//! `decree replica`: one replica process. Recovers the log, starts the runtime (core and
//! persistence threads), the peer transport, the authenticated listener and the metrics endpoint,
//! and shuts down gracefully on SIGTERM / SIGINT.

pub mod checkpoint_file;
pub mod checkpoint_store;
pub mod io_thread;
pub mod listener;
pub mod log2_histogram;
pub mod metrics;
pub mod one_sided;
pub mod op_arena;
pub mod peer_conn;
pub mod peers;
pub mod reply_frame;
pub mod session;
pub mod storage;

use crate::config::ReplicaConfig;
use crate::secret::{read_secret, SecretError};
use decree_engine::kv::KvStore;
use decree_engine::runtime::{Inbox, Node, PeerTransport, Placement, StorageError};
use session::ConnResponder;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// Why a replica could not start or had to stop.
#[derive(Debug, Error)]
pub enum ServeError {
    /// The secret file is missing or unusable.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The log could not be opened, recovered or written.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A listening address is taken or invalid.
    #[error("cannot listen on {addr}: {source} (is another replica or process using the port?)")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// Other I/O (data directory, threads).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// The log failed while serving; the replica stopped voting.
    #[error("the log failed while serving (see the error above); repair the device and restart")]
    LogFailed,
}

/// What connection threads share.
pub struct Context {
    /// This replica's id.
    pub id: u32,
    /// The cluster secret.
    pub key: Arc<Vec<u8>>,
    /// The core thread's inbox.
    pub inbox: Arc<Inbox<ConnResponder>>,
    /// Member id -> client address (for redirects).
    pub members: HashMap<u32, String>,
    /// Set on shutdown.
    pub stop: Arc<AtomicBool>,
    /// CPU placement of I/O threads.
    pub placement: Placement,
    /// Connections open now (capped at `listener::MAX_CONNECTIONS`).
    pub connections: std::sync::atomic::AtomicUsize,
    /// Client I/O threads (`[placement] io_threads`; None: `io_thread::default_io_threads`).
    pub io_threads: Option<usize>,
}

#[cfg(test)]
impl Context {
    /// A context for unit tests of one replica's threads: no members, default placement, one
    /// I/O thread, an inbox whose core is not started, `connections` already counted.
    pub(crate) fn for_test(id: u32, inbox_capacity: usize, connections: usize) -> Arc<Context> {
        Arc::new(Context {
            id,
            key: Arc::new(b"unused: the handshake is the listener's".to_vec()),
            inbox: Arc::new(Inbox::new(inbox_capacity, false)),
            members: HashMap::new(),
            stop: Arc::new(AtomicBool::new(false)),
            placement: Placement::default(),
            connections: std::sync::atomic::AtomicUsize::new(connections),
            io_threads: Some(1),
        })
    }
}

/// The replica-to-replica transport `config.transport.kind` names.
fn start_transport(
    config: &ReplicaConfig,
    key: &Arc<Vec<u8>>,
    placement: &Placement,
    inbox: &Arc<Inbox<ConnResponder>>,
    stop: &Arc<AtomicBool>,
) -> Result<Box<dyn PeerTransport>, ServeError> {
    let peers: Vec<(u32, SocketAddr)> = config
        .members
        .iter()
        .filter(|m| m.id != config.id)
        .map(|m| (m.id, m.addr.parse().expect("validated")))
        .collect();
    let kind = config.transport.kind.as_str();
    if kind == "tcp" {
        return Ok(Box::new(peers::TcpPeers::start(config.id, peers, key.clone(), placement.clone(), stop.clone())));
    }
    let mailbox_bytes = (config.transport.mailbox_mib << 20) as usize;
    let gate = one_sided::secret_gate(key.clone(), config.id);
    let transport_error = |what: String, e: decree_verbs::VerbsError| ServeError::Io { what, source: std::io::Error::other(e.to_string()) };
    let (mailbox, dial): (Box<dyn decree_verbs::FollowerLink + Send>, one_sided::Dial) = match kind {
        "shm" => {
            let dir = config.shm_dir();
            let path = move |id: u32| dir.join(format!("r{id}.mailbox"));
            let mine = path(config.id);
            let mailbox = decree_verbs::shm::ShmFollower::create_gated(&mine, mailbox_bytes, gate.clone())
                .map_err(|e| transport_error(format!("creating the shm mailbox {}", mine.display()), e))?;
            let token = one_sided::token_of(config.id);
            let dial: one_sided::Dial = Box::new(move |peer| {
                let link = decree_verbs::shm::ShmLeader::connect_gated(&path(peer), token, decree_verbs::Durability::FollowerPersists, &gate)?;
                Ok(Box::new(link) as Box<dyn decree_verbs::LeaderLink + Send>)
            });
            (Box::new(mailbox), dial)
        }
        #[cfg(feature = "rdma")]
        "rdma" => {
            let mut rdma = decree_verbs::rdma::RdmaConfig::new(&config.transport.rdma_device);
            rdma.gid_index = config.transport.rdma_gid_index;
            rdma.gate = gate;
            let bind = config.rdma_side_channel(config.id).expect("validated: member address and port offset");
            let region = decree_verbs::mapping::Mapping::anonymous(mailbox_bytes)
                .map_err(|e| transport_error("allocating the rdma mailbox".into(), e))?;
            let mailbox = decree_verbs::rdma::RdmaFollower::listen(bind, rdma.clone(), region)
                .map_err(|e| transport_error(format!("registering the rdma mailbox on {}", config.transport.rdma_device), e))?;
            let addrs: std::collections::HashMap<u32, SocketAddr> =
                peers.iter().map(|(id, _)| (*id, config.rdma_side_channel(*id).expect("validated"))).collect();
            let token = one_sided::token_of(config.id);
            let dial: one_sided::Dial = Box::new(move |peer| {
                let link = decree_verbs::rdma::RdmaLeader::connect(addrs[&peer], token, rdma.clone())?;
                Ok(Box::new(link) as Box<dyn decree_verbs::LeaderLink + Send>)
            });
            (Box::new(mailbox), dial)
        }
        other => unreachable!("validated transport kind {other}"),
    };
    let ids = peers.iter().map(|(id, _)| *id).collect();
    let transport = one_sided::start(config.id, if kind == "shm" { "shm" } else { "rdma" }, ids, (mailbox, dial), inbox.clone(), placement.clone(), stop.clone())
        .map_err(|source| ServeError::Io { what: format!("starting the {kind} transport thread"), source })?;
    tracing::info!(transport = kind, mailbox_bytes, "replicating with one-sided writes");
    Ok(Box::new(transport))
}

fn bind(addr: &str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr).map_err(|source| ServeError::Bind { addr: addr.to_string(), source })
}

/// Runs a replica until SIGTERM/SIGINT (Ok) or a log failure (Err).
pub fn run(config: ReplicaConfig) -> Result<(), ServeError> {
    let key = Arc::new(read_secret(&config.secret_file)?);
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|source| ServeError::Io { what: format!("creating data dir {}", config.data_dir.display()), source })?;
    let backend = decree_pmem::Backend::parse(&config.log.backend).expect("validated");
    let log_config = decree_pmem::Config { path: config.log_path(), size_bytes: config.log.size_mib << 20, backend };
    let (storage, durable) = storage::PmemStorage::open(&log_config)?;
    let listener = bind(&config.listen_addr())?;
    let metrics = Arc::new(metrics::Metrics::new(config.id));
    if let Some(addr) = &config.metrics {
        metrics::serve(bind(addr)?, metrics.clone());
    }
    let node_config = config.node_config();
    let placement = node_config.placement.clone();
    let inbox = Node::inbox(&node_config);
    let stop = Arc::new(AtomicBool::new(false));
    let transport = start_transport(&config, &key, &placement, &inbox, &stop)?;
    // A random hash seed: clients hold the cluster secret, so it must not be derivable from it.
    let store = KvStore::with_hash_seed(crate::secret::random_u64());
    let node = Node::start(node_config, inbox.clone(), durable, store, transport, storage, metrics)
        .map_err(|source| ServeError::Io { what: "starting runtime threads".into(), source })?;
    let ctx = Arc::new(Context {
        id: config.id,
        key,
        inbox,
        members: config.members.iter().map(|m| (m.id, m.addr.clone())).collect(),
        stop: stop.clone(),
        placement,
        connections: std::sync::atomic::AtomicUsize::new(0),
        io_threads: config.placement.io_threads,
    });
    let io = listener::start_io_threads(&ctx)
        .map_err(|source| ServeError::Io { what: "starting the client I/O threads".into(), source })?;
    std::thread::Builder::new()
        .name("decree-accept".into())
        .spawn(move || listener::serve(listener, ctx, io))
        .map_err(|source| ServeError::Io { what: "starting the listener".into(), source })?;
    tracing::info!(id = config.id, listen = %config.listen_addr(), metrics = ?config.metrics, "replica serving");

    let terminate = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, terminate.clone())
            .map_err(|source| ServeError::Io { what: "installing signal handlers".into(), source })?;
    }
    while !terminate.load(Ordering::Acquire) && !node.failed() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let failed = node.failed();
    tracing::info!("shutting down: stopping the core, syncing the log");
    stop.store(true, Ordering::Release);
    node.shutdown();
    if failed {
        return Err(ServeError::LogFailed);
    }
    tracing::info!("replica stopped cleanly");
    Ok(())
}

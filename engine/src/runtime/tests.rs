//! In-process tests of the runtime: three nodes wired by ring transports and in-memory storages,
//! driven by their real core and persistence threads.

use super::*;
use crate::core::{CoreConfig, DurableWrite};
use crate::durable::Durable;
use crate::kv::{KvOp, KvReply, KvStore};
use crate::message::Envelope;
use crate::types::{ClientId, ReplicaId, Request};
use bytes::Bytes;
use crossbeam::channel::{self, Receiver, Sender};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

#[derive(Clone)]
struct Reply(Sender<(u64, Response)>);

impl Responder for Reply {
    fn respond(&self, request_id: u64, response: Response) {
        let _ = self.0.send((request_id, response));
    }
}

type Inboxes = Arc<OnceLock<Vec<Arc<Inbox<Reply>>>>>;

/// Delivers through the receivers' inboxes; `silenced` (a bit per node) drops what a silenced
/// node sends or would receive, as a crashed replica's links do.
struct RingTransport {
    inboxes: Inboxes,
    silenced: Arc<AtomicU64>,
}

impl PeerTransport for RingTransport {
    fn send(&mut self, envelope: Envelope) {
        let silenced = self.silenced.load(Ordering::Relaxed);
        if silenced & (1 << envelope.from.0 | 1 << envelope.to.0) != 0 {
            return;
        }
        let inboxes = self.inboxes.get().expect("wired before start");
        let inbox = &inboxes[envelope.to.0 as usize];
        // As the tools' transports deliver: post, then run the receiver's core here if it is free.
        let _ = inbox.post(Event::Peer(envelope));
        inbox.serve();
    }
}

/// Memory storage with a slow sync (2 ms unless the test changes `sync_delay_us`), counting syncs
/// and staged writes. With a capacity it models a bounded log: each write takes `WRITE_BYTES`, a
/// checkpoint discards everything, and a write that does not fit fails as a full log does.
struct SlowStorage {
    staged: Option<u64>,
    writes: Arc<AtomicU64>,
    syncs: Arc<AtomicU64>,
    /// This node's syncs alone (`syncs` counts every node's).
    node_syncs: Arc<AtomicU64>,
    checkpoints: Arc<AtomicU64>,
    capacity: Option<u64>,
    used: u64,
    /// Whether a checkpoint empties the log (false: it frees nothing, as a stuck discard would).
    checkpoint_frees: bool,
    /// Where checkpoints are stored (`LogStorage::checkpoint_writer`); None: nowhere.
    checkpoint_store: Option<Arc<GatedCheckpointStore>>,
    /// How long this node's sync takes, in microseconds.
    sync_delay_us: Arc<AtomicU64>,
}

const SYNC_DELAY: Duration = Duration::from_millis(2);

/// Whether a node awaits its spares, as its last `Observer::on_spares_awaited` said.
#[derive(Default)]
struct SparesAwaited(AtomicBool);

impl Observer for SparesAwaited {
    fn on_spares_awaited(&self, awaited: bool) {
        self.0.store(awaited, Ordering::Relaxed);
    }
}

/// A checkpoint store whose stores wait until it is opened, as a multi-megabyte write and fsync
/// holds whichever thread stores; a checkpoint already stored is not stored again.
#[derive(Default)]
struct GatedCheckpointStore {
    open: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
    stored_slot: std::sync::Mutex<Option<u64>>,
    /// Stores waiting at the gate now.
    waiting: AtomicU64,
}

impl GatedCheckpointStore {
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

impl CheckpointWriter for GatedCheckpointStore {
    fn store(&self, checkpoint: &crate::types::Checkpoint) -> Result<(), StorageError> {
        if self.stored_slot.lock().unwrap().is_some_and(|slot| slot >= checkpoint.slot) {
            return Ok(());
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
        drop(open);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        let mut stored = self.stored_slot.lock().unwrap();
        *stored = Some(stored.unwrap_or(0).max(checkpoint.slot));
        Ok(())
    }
}

const WRITE_BYTES: u64 = 1_000;

impl LogStorage for SlowStorage {
    fn stage(&mut self, ticket: u64, write: &DurableWrite) -> Result<(), StorageError> {
        self.staged = Some(ticket);
        self.writes.fetch_add(1, Ordering::Relaxed);
        if let DurableWrite::Checkpoint(checkpoint) = write {
            if let Some(store) = &self.checkpoint_store {
                store.store(checkpoint)?;
            }
            self.checkpoints.fetch_add(1, Ordering::Relaxed);
            if self.checkpoint_frees {
                self.used = 0;
            }
        } else {
            self.used += WRITE_BYTES;
        }
        match self.capacity {
            Some(capacity) if self.used > capacity => Err(StorageError { detail: "log full".into() }),
            _ => Ok(()),
        }
    }
    fn sync(&mut self) -> Result<Option<u64>, StorageError> {
        std::thread::sleep(Duration::from_micros(self.sync_delay_us.load(Ordering::Relaxed)));
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.node_syncs.fetch_add(1, Ordering::Relaxed);
        Ok(self.staged.take())
    }
    fn size_bytes(&self) -> u64 {
        self.used
    }
    fn capacity_bytes(&self) -> Option<u64> {
        self.capacity
    }
    fn checkpoint_writer(&self) -> Option<Arc<dyn CheckpointWriter>> {
        self.checkpoint_store.clone().map(|store| store as Arc<dyn CheckpointWriter>)
    }
}

struct Cluster {
    nodes: Vec<Node<Reply>>,
    writes: Arc<AtomicU64>,
    syncs: Arc<AtomicU64>,
    node_syncs: Vec<Arc<AtomicU64>>,
    checkpoints: Arc<AtomicU64>,
    /// Nodes whose messages are dropped (`RingTransport`), a bit each.
    silenced: Arc<AtomicU64>,
    /// Each node's gated checkpoint store (`Setup::gated_checkpoints`).
    checkpoint_stores: Vec<Arc<GatedCheckpointStore>>,
    /// Each node's sync time in microseconds (`SlowStorage::sync_delay_us`).
    sync_delays_us: Vec<Arc<AtomicU64>>,
    /// Whether each node awaits its spares.
    spares_awaited: Vec<Arc<SparesAwaited>>,
    /// Client 1's last sequence number (`put_one_at_a_time`).
    last_seq: AtomicU64,
}

fn start() -> Cluster {
    start_with(0)
}

fn start_with(checkpoint_every_slots: u64) -> Cluster {
    start_bounded(checkpoint_every_slots, None, true)
}

fn start_bounded(checkpoint_every_slots: u64, log_capacity: Option<u64>, checkpoint_frees: bool) -> Cluster {
    start_full(Setup { checkpoint_every_slots, log_capacity, checkpoint_frees, ..Setup::default() })
}

/// How a test cluster is built.
struct Setup {
    checkpoint_every_slots: u64,
    /// The storages' capacity (`SlowStorage`); None: unbounded.
    log_capacity: Option<u64>,
    checkpoint_frees: bool,
    /// Whether senders run a free core themselves (`Inbox`), or only core threads do.
    on_delivery: bool,
    spare_sync_delay: Duration,
    /// `CoreConfig::spare_lag_ms`.
    spare_lag_ms: u64,
    /// Whether checkpoints go to a `GatedCheckpointStore` per node.
    gated_checkpoints: bool,
    /// `CoreConfig::heartbeat_interval_ms`; election timeouts scale with it.
    heartbeat_interval_ms: u64,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            checkpoint_every_slots: 0,
            log_capacity: None,
            checkpoint_frees: true,
            on_delivery: true,
            spare_sync_delay: Duration::ZERO,
            spare_lag_ms: 0,
            gated_checkpoints: false,
            heartbeat_interval_ms: 20,
        }
    }
}

fn start_full(setup: Setup) -> Cluster {
    let inboxes: Inboxes = Arc::default();
    let voters: Vec<ReplicaId> = (0..3).map(ReplicaId).collect();
    let (writes, syncs, checkpoints) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let node_syncs: Vec<Arc<AtomicU64>> = voters.iter().map(|_| Arc::default()).collect();
    let silenced: Arc<AtomicU64> = Arc::default();
    let checkpoint_stores: Vec<Arc<GatedCheckpointStore>> =
        if setup.gated_checkpoints { voters.iter().map(|_| Arc::default()).collect() } else { Vec::new() };
    let sync_delays_us: Vec<Arc<AtomicU64>> =
        voters.iter().map(|_| Arc::new(AtomicU64::new(SYNC_DELAY.as_micros() as u64))).collect();
    let spares_awaited: Vec<Arc<SparesAwaited>> = voters.iter().map(|_| Arc::default()).collect();
    let configs: Vec<NodeConfig> = voters
        .iter()
        .map(|id| {
            let mut core = CoreConfig::new(*id, voters.clone());
            core.spare_lag_ms = setup.spare_lag_ms;
            core.heartbeat_interval_ms = setup.heartbeat_interval_ms;
            core.election_timeout_min_ms = core.election_timeout_min_ms.max(8 * setup.heartbeat_interval_ms);
            core.election_timeout_max_ms = core.election_timeout_max_ms.max(16 * setup.heartbeat_interval_ms);
            let mut config = NodeConfig::new(core);
            config.inbox_capacity = 4_096;
            config.checkpoint_every_slots = setup.checkpoint_every_slots;
            config.run_core_on_delivery = setup.on_delivery;
            config.spare_sync_delay = setup.spare_sync_delay;
            config
        })
        .collect();
    let rings: Vec<_> = configs.iter().map(Node::<Reply>::inbox).collect();
    assert!(inboxes.set(rings.clone()).is_ok());
    let nodes = configs
        .into_iter()
        .zip(rings)
        .zip(&node_syncs)
        .enumerate()
        .map(|(node, ((config, inbox), node_syncs))| {
            let storage = SlowStorage {
                staged: None,
                writes: writes.clone(),
                syncs: syncs.clone(),
                node_syncs: node_syncs.clone(),
                checkpoints: checkpoints.clone(),
                capacity: setup.log_capacity,
                used: 0,
                checkpoint_frees: setup.checkpoint_frees,
                checkpoint_store: checkpoint_stores.get(node).cloned(),
                sync_delay_us: sync_delays_us[node].clone(),
            };
            Node::start(
                config,
                inbox,
                Durable::default(),
                KvStore::default(),
                RingTransport { inboxes: inboxes.clone(), silenced: silenced.clone() },
                storage,
                spares_awaited[node].clone(),
            )
            .unwrap()
        })
        .collect();
    Cluster {
        nodes,
        writes,
        syncs,
        node_syncs,
        checkpoints,
        silenced,
        checkpoint_stores,
        sync_delays_us,
        spares_awaited,
        last_seq: AtomicU64::new(0),
    }
}

impl Cluster {
    fn shutdown(self) {
        for node in self.nodes {
            node.shutdown();
        }
    }

    /// Puts `count` writes of client 1 at `node` one at a time (one slot each), its sequence
    /// going on from the last call's; returns the answers.
    fn put_one_at_a_time(&self, node: usize, count: u64) -> Vec<Response> {
        let (tx, rx) = channel::unbounded();
        let first = self.last_seq.fetch_add(count, Ordering::Relaxed) + 1;
        (first..first + count)
            .map(|seq| {
                put_seq(&self.nodes[node], 1, seq, &tx);
                collect(&rx, 1).remove(0).1
            })
            .collect()
    }
}

fn status(node: &Node<Reply>) -> NodeStatus {
    let (tx, rx) = channel::unbounded();
    node.inbox.push(Event::Status { request_id: 0, reply_to: Reply(tx) }).ok().unwrap();
    match rx.recv_timeout(Duration::from_secs(2)).unwrap().1 {
        Response::Status(status) => *status,
        other => panic!("{other:?}"),
    }
}

fn wait_leader(cluster: &Cluster) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(leader) = cluster.nodes.iter().position(|n| status(n).core.leading) {
            return leader;
        }
        assert!(Instant::now() < deadline, "no leader within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn put(node: &Node<Reply>, client: u64, tx: &Sender<(u64, Response)>) {
    put_seq(node, client, 1, tx);
}

fn put_seq(node: &Node<Reply>, client: u64, seq: u64, tx: &Sender<(u64, Response)>) {
    let op = KvOp::Put { key: Bytes::from(format!("k{client}")), value: Bytes::from_static(b"v") }.encode();
    let request = Request { client: ClientId(client), seq, op };
    assert!(node.inbox.push(Event::Request { request, request_id: client, reply_to: Reply(tx.clone()) }).is_ok());
}

fn collect(rx: &Receiver<(u64, Response)>, count: usize) -> Vec<(u64, Response)> {
    (0..count).map(|_| rx.recv_timeout(Duration::from_secs(10)).expect("a reply within 10 s")).collect()
}

#[test]
fn leader_replies_to_every_request_and_the_log_is_group_committed() {
    replies_to_every_request_with_group_commit(start());
}

#[test]
fn core_threads_alone_serve_every_request_when_senders_do_not_run_the_core() {
    replies_to_every_request_with_group_commit(start_full(Setup { on_delivery: false, ..Setup::default() }));
}

fn replies_to_every_request_with_group_commit(cluster: Cluster) {
    let leader = wait_leader(&cluster);
    let (tx, rx) = channel::unbounded();
    // A stream (not one burst) so proposals, and their persist writes, arrive while a 2 ms sync runs.
    for client in 0..500 {
        put(&cluster.nodes[leader], client, &tx);
        std::thread::sleep(Duration::from_micros(50));
    }
    let replies = collect(&rx, 500);
    for (_, response) in &replies {
        let Response::Reply { payload, .. } = response else { panic!("{response:?}") };
        assert_eq!(KvReply::decode(payload).unwrap(), KvReply::Done);
    }
    let (writes, syncs) = (cluster.writes.load(Ordering::Relaxed), cluster.syncs.load(Ordering::Relaxed));
    assert!(syncs < writes, "no group commit: {syncs} syncs for {writes} staged writes");
    cluster.shutdown();
}

/// A cluster whose spare is sent to lazily and groups its syncs over `window`; returns it with
/// its leader, the follower on the commit path and the spare, once the followers follow.
fn start_with_a_spare(window: Duration) -> (Cluster, usize, usize, usize) {
    start_with_a_spare_and(window, Setup::default())
}

/// `start_with_a_spare` from `setup` otherwise.
fn start_with_a_spare_and(window: Duration, setup: Setup) -> (Cluster, usize, usize, usize) {
    let spare_lag_ms = window.as_millis() as u64;
    let cluster = start_full(Setup { spare_sync_delay: window, spare_lag_ms, ..setup });
    let leader = wait_leader(&cluster);
    // Voters 0, 1, 2: the one after the leader completes its majority, the other is the spare.
    let (on_path, spare) = ((leader + 1) % 3, (leader + 2) % 3);
    // Followers take the leader as fresh once they hear from it.
    std::thread::sleep(Duration::from_millis(100));
    (cluster, leader, on_path, spare)
}

/// Waits until `node` holds `slots` slots and has synced since `before`.
fn wait_durable_slots(cluster: &Cluster, node: usize, slots: u64, before: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&cluster.nodes[node]).core.log_end < slots
        || cluster.node_syncs[node].load(Ordering::Relaxed) == before
    {
        assert!(Instant::now() < deadline, "node {node} never made {slots} slots durable");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_spare_is_sent_to_and_syncs_once_per_window_while_the_leader_commits_with_the_follower_after_it() {
    let window = Duration::from_millis(300);
    let (cluster, leader, on_path, spare) = start_with_a_spare(window);
    let before: Vec<u64> = cluster.node_syncs.iter().map(|n| n.load(Ordering::Relaxed)).collect();
    let started = Instant::now();
    let puts = 40;
    for response in cluster.put_one_at_a_time(leader, puts) {
        assert!(matches!(response, Response::Reply { .. }), "{response:?}");
    }
    let elapsed = started.elapsed();
    let synced = |node: usize| cluster.node_syncs[node].load(Ordering::Relaxed) - before[node];
    let (on_path_syncs, spare_syncs) = (synced(on_path), synced(spare));
    // Each put waits for a 2 ms sync on the commit path, so the spare's window covers many puts.
    assert!(on_path_syncs >= puts, "the follower on the commit path synced {on_path_syncs} times for {puts} puts");
    let windows = 1 + (elapsed.as_millis() / window.as_millis()) as u64;
    assert!(spare_syncs <= windows, "the spare synced {spare_syncs} times in {elapsed:?}: not once per {window:?}");
    // The spare still gets everything and makes it durable, a window or two later.
    wait_durable_slots(&cluster, spare, puts, before[spare]);
    cluster.shutdown();
}

#[test]
fn a_silent_follower_on_the_commit_path_makes_the_spare_awaited_and_prompt() {
    let window = Duration::from_millis(100);
    let (cluster, leader, on_path, spare) = start_with_a_spare(window);
    cluster.silenced.store(1 << on_path, Ordering::Relaxed);
    let before = cluster.node_syncs[spare].load(Ordering::Relaxed);
    let started = Instant::now();
    let puts = 40;
    for response in cluster.put_one_at_a_time(leader, puts) {
        assert!(matches!(response, Response::Reply { .. }), "{response:?}");
    }
    let elapsed = started.elapsed();
    // The first put waits for the leader to notice (the stall time); after that the spare is sent
    // every put at once and syncs it without its window: 40 puts deferred a window each would
    // take 4 s.
    assert!(elapsed < window * 15, "{puts} puts took {elapsed:?} with the commit path's follower silent");
    let spare_syncs = cluster.node_syncs[spare].load(Ordering::Relaxed) - before;
    assert!(spare_syncs >= puts / 2, "the spare synced {spare_syncs} times for {puts} puts it voted for");
    cluster.shutdown();
}

#[test]
fn a_commit_path_follower_that_answers_slower_than_the_spare_makes_the_spare_awaited_until_it_is_faster_again() {
    // A stall takes half a heartbeat (50 ms) here, so a follower answering every accept 12 ms
    // late never stalls: only who completes the commits can tell the leader it is slow.
    let window = Duration::from_millis(2);
    let setup = Setup { heartbeat_interval_ms: 100, ..Setup::default() };
    let (cluster, leader, on_path, spare) = start_with_a_spare_and(window, setup);
    let awaited = || cluster.spares_awaited[leader].0.load(Ordering::Relaxed);
    assert!(!awaited(), "the spare is lazy while the commit path keeps up");
    let slow = Duration::from_millis(12).as_micros() as u64;
    cluster.sync_delays_us[on_path].store(slow, Ordering::Relaxed);
    for response in cluster.put_one_at_a_time(leader, 40) {
        assert!(matches!(response, Response::Reply { .. }), "{response:?}");
    }
    // The spare, replicated every 2 ms and syncing 2 ms after, completed the first commits; after
    // eight of them the leader sends to it at once and awaits it.
    assert!(awaited(), "the slow commit path still sets the pace");
    // The commit path is fast again and the spare slow: after eight commits the spare is lazy again.
    cluster.sync_delays_us[on_path].store(SYNC_DELAY.as_micros() as u64, Ordering::Relaxed);
    cluster.sync_delays_us[spare].store(slow, Ordering::Relaxed);
    for response in cluster.put_one_at_a_time(leader, 40) {
        assert!(matches!(response, Response::Reply { .. }), "{response:?}");
    }
    assert!(!awaited(), "the spare stayed awaited with the commit path faster");
    cluster.shutdown();
}

#[test]
fn a_follower_redirects_to_the_leader() {
    let cluster = start();
    let leader = wait_leader(&cluster);
    let follower = (leader + 1) % 3;
    // The follower learns the leader from its heartbeats.
    let deadline = Instant::now() + Duration::from_secs(5);
    while status(&cluster.nodes[follower]).core.leader != Some(ReplicaId(leader as u32)) {
        assert!(Instant::now() < deadline, "follower never learned the leader");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (tx, rx) = channel::unbounded();
    put(&cluster.nodes[follower], 7, &tx);
    let (id, response) = collect(&rx, 1).remove(0);
    assert_eq!(id, 7);
    assert_eq!(response, Response::Redirect { leader: Some(ReplicaId(leader as u32)) });
    cluster.shutdown();
}

#[test]
fn the_driver_takes_checkpoints_and_the_storage_persists_them() {
    let cluster = start_with(5);
    let leader = wait_leader(&cluster);
    // One request at a time: one slot each, so 40 slots pass 5-slot checkpoint marks 8 times.
    cluster.put_one_at_a_time(leader, 40);
    let applied = status(&cluster.nodes[leader]).core.applied;
    assert!(applied >= 40, "applied {applied}");
    assert!(cluster.checkpoints.load(Ordering::Relaxed) >= 3, "no checkpoints reached storage");
    cluster.shutdown();
}

/// Storing a checkpoint (a multi-megabyte write and fsync in the tools' store) happens on the
/// checkpoint helper thread: the group commits behind it go on. Stored by the persistence thread,
/// as before, every put after the checkpoint waited for the store.
#[test]
fn commits_go_on_while_a_checkpoint_is_being_stored() {
    let cluster = start_full(Setup { checkpoint_every_slots: 5, gated_checkpoints: true, ..Setup::default() });
    let leader = wait_leader(&cluster);
    cluster.put_one_at_a_time(leader, 6);
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.checkpoint_stores.iter().any(|store| store.waiting.load(Ordering::SeqCst) == 0) {
        assert!(Instant::now() < deadline, "no node started storing its checkpoint");
        std::thread::sleep(Duration::from_millis(5));
    }
    let (tx, rx) = channel::unbounded();
    for seq in 7..=30 {
        put_seq(&cluster.nodes[leader], 1, seq, &tx);
        let answer = rx.recv_timeout(Duration::from_secs(2));
        assert!(matches!(answer, Ok((_, Response::Reply { .. }))), "put {seq} behind a checkpoint store: {answer:?}");
    }
    assert_eq!(cluster.checkpoints.load(Ordering::Relaxed), 0, "no checkpoint reached the log before its store");
    for store in &cluster.checkpoint_stores {
        store.open();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.checkpoints.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the stored checkpoint never reached the log");
        std::thread::sleep(Duration::from_millis(5));
    }
    cluster.shutdown();
}

#[test]
fn a_half_full_log_is_checkpointed_before_it_fills_even_with_no_slot_count_due() {
    // Room for 300 writes and never a checkpoint by slot count: 500 one-request slots overfill
    // the log unless the half-full rule checkpoints it (each checkpoint empties this log).
    let cluster = start_bounded(0, Some(300 * WRITE_BYTES), true);
    let leader = wait_leader(&cluster);
    cluster.put_one_at_a_time(leader, 500);
    assert!(cluster.nodes.iter().all(|node| !node.failed()), "a log filled up");
    assert!(cluster.checkpoints.load(Ordering::Relaxed) >= 3, "no half-full checkpoints reached storage");
    cluster.shutdown();
}

#[test]
fn a_leader_whose_log_is_nearly_full_sheds_writes_instead_of_filling_it() {
    // Checkpoints free nothing here, so only shedding keeps the log from filling up.
    let cluster = start_bounded(0, Some(200 * WRITE_BYTES), false);
    let leader = wait_leader(&cluster);
    let busy =
        cluster.put_one_at_a_time(leader, 300).iter().filter(|response| matches!(response, Response::Busy)).count();
    assert!(busy > 0, "the leader never shed a write");
    assert!(cluster.nodes.iter().all(|node| !node.failed()), "a log filled up");
    // Reads need no log space and are still served.
    let (tx, rx) = channel::unbounded();
    let get = KvOp::Get { key: Bytes::from_static(b"k1") };
    request(&cluster.nodes[leader], 2, 1, get, &tx);
    assert!(matches!(collect(&rx, 1)[0].1, Response::Reply { .. }));
    cluster.shutdown();
}

fn request(node: &Node<Reply>, client: u64, seq: u64, op: KvOp, tx: &Sender<(u64, Response)>) {
    let request = Request { client: ClientId(client), seq, op: op.encode() };
    assert!(node.inbox.push(Event::Request { request, request_id: seq, reply_to: Reply(tx.clone()) }).is_ok());
}

#[test]
fn gets_are_served_by_read_index_without_a_log_slot_and_see_the_latest_write() {
    let cluster = start();
    let leader = wait_leader(&cluster);
    let (tx, rx) = channel::unbounded();
    let key = Bytes::from_static(b"k");
    request(&cluster.nodes[leader], 9, 1, KvOp::Put { key: key.clone(), value: Bytes::from_static(b"v1") }, &tx);
    collect(&rx, 1);
    let log_end = status(&cluster.nodes[leader]).core.log_end;
    for seq in 2..12 {
        request(&cluster.nodes[leader], 9, seq, KvOp::Get { key: key.clone() }, &tx);
        let (_, response) = collect(&rx, 1).remove(0);
        let Response::Reply { payload, .. } = response else { panic!("{response:?}") };
        assert_eq!(KvReply::decode(&payload).unwrap(), KvReply::Value(Some(Bytes::from_static(b"v1"))));
    }
    assert_eq!(status(&cluster.nodes[leader]).core.log_end, log_end, "gets took log slots");
    cluster.shutdown();
}

fn ask(node: &Node<Reply>, event: impl FnOnce(Reply) -> Event<Reply>) -> Response {
    let (tx, rx) = channel::unbounded();
    assert!(node.inbox.push(event(Reply(tx))).is_ok());
    rx.recv_timeout(Duration::from_secs(10)).expect("an answer within 10 s").1
}

#[test]
fn operator_events_checkpoint_change_membership_at_the_leader_and_serve_stale_reads_anywhere() {
    let cluster = start();
    let leader = wait_leader(&cluster);
    let follower = (leader + 1) % 3;
    let (tx, rx) = channel::unbounded();
    let key = Bytes::from_static(b"k");
    request(&cluster.nodes[leader], 9, 1, KvOp::Put { key: key.clone(), value: Bytes::from_static(b"v1") }, &tx);
    collect(&rx, 1);
    let applied = status(&cluster.nodes[leader]).core.applied;

    // A checkpoint on demand covers what is applied and reaches the storage.
    let response = ask(&cluster.nodes[leader], |reply_to| Event::Checkpoint { request_id: 1, reply_to });
    let Response::Admin { ok: true, slot: Some(slot), .. } = response else { panic!("{response:?}") };
    assert_eq!(slot, applied);
    let deadline = Instant::now() + Duration::from_secs(5);
    while cluster.checkpoints.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the operator's checkpoint never reached storage");
        std::thread::sleep(Duration::from_millis(10));
    }

    // A stale read at a follower waits for `min_slot`, then sees the write; a write is refused.
    let get = Request { client: ClientId(9), seq: 2, op: KvOp::Get { key: key.clone() }.encode() };
    let response = ask(&cluster.nodes[follower], |reply_to| Event::FastRead {
        request: get,
        min_slot: applied,
        request_id: 2,
        reply_to,
    });
    let Response::Reply { payload, .. } = response else { panic!("{response:?}") };
    assert_eq!(KvReply::decode(&payload).unwrap(), KvReply::Value(Some(Bytes::from_static(b"v1"))));
    let put = Request { client: ClientId(9), seq: 3, op: KvOp::Put { key, value: Bytes::new() }.encode() };
    let response = ask(&cluster.nodes[follower], |reply_to| Event::FastRead {
        request: put,
        min_slot: 0,
        request_id: 3,
        reply_to,
    });
    assert!(matches!(response, Response::Admin { ok: false, .. }), "{response:?}");

    // Membership edits: a follower points at the leader; the leader validates, then proposes.
    let remove = |id: usize| MembershipChange::Remove(ReplicaId(id as u32));
    let response = ask(&cluster.nodes[follower], |reply_to| Event::ChangeMembership {
        change: remove(follower),
        request_id: 4,
        reply_to,
    });
    assert_eq!(
        response,
        Response::Admin {
            ok: false,
            detail: "not the leader".into(),
            leader: Some(ReplicaId(leader as u32)),
            slot: None
        }
    );
    let response =
        ask(&cluster.nodes[leader], |reply_to| Event::ChangeMembership { change: remove(9), request_id: 5, reply_to });
    let Response::Admin { ok: false, detail, .. } = response else { panic!("{response:?}") };
    assert!(detail.contains("not a member"), "{detail}");
    let response = ask(&cluster.nodes[leader], |reply_to| Event::ChangeMembership {
        change: remove(follower),
        request_id: 6,
        reply_to,
    });
    let Response::Admin { ok: true, slot: Some(_), .. } = response else { panic!("{response:?}") };
    let deadline = Instant::now() + Duration::from_secs(5);
    while status(&cluster.nodes[leader]).core.membership.is_member(ReplicaId(follower as u32)) {
        assert!(Instant::now() < deadline, "the removal never applied at the leader");
        std::thread::sleep(Duration::from_millis(10));
    }
    cluster.shutdown();
}

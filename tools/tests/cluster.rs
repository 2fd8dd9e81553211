//! Multi-process tests of a real 3-replica cluster on loopback (the `decree` binary, one process
//! per replica). Ignored by default (they take ~1 min on a small host); ci/test-cluster.sh runs them.

use bytes::Bytes;
use decree_engine::kv::{KvOp, KvReply};
use decree_engine::sim::kv_model::KvRegister;
use decree_engine::sim::linearizability::{self, Operation};
use decree_tools::auth::{self, AuthError, Peer};
use decree_tools::client::{Client, ClientConfig, ClientError};
use decree_tools::cluster_file::ClusterFile;
use decree_tools::secret::read_secret;
use decree_tools::wire::{self, ErrorCode, ServerFrame};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DECREE: &str = env!("CARGO_BIN_EXE_decree");

fn decree_in(dir: &Path, args: &[&str]) -> String {
    let output = Command::new(DECREE).args(args).arg("--dir").arg(dir).output().expect("running decree");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "decree {args:?} failed: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

/// A local cluster in a temp dir; torn down (SIGTERM, purge) on drop.
struct Cluster {
    dir: PathBuf,
    file: ClusterFile,
    secret: Vec<u8>,
}

impl Cluster {
    fn up(name: &str, base_port: u16) -> Cluster {
        Cluster::up_with(name, base_port, &[])
    }

    fn up_with(name: &str, base_port: u16, extra: &[&str]) -> Cluster {
        let dir = std::env::temp_dir().join(format!("decree-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ports = ["--replicas", "3", "--base-port", &base_port.to_string(), "--metrics-base-port", &(base_port + 1000).to_string()];
        decree_in(&dir, &[&["cluster", "up"][..], &ports[..], extra].concat());
        let file = ClusterFile::load(&dir).unwrap();
        let secret = read_secret(&file.secret_file).unwrap();
        Cluster { dir, file, secret }
    }

    fn decree(&self, args: &[&str]) -> String {
        decree_in(&self.dir, args)
    }

    fn client(&self) -> Client {
        Client::new(ClientConfig::new(self.file.addrs(), self.secret.clone()))
    }

    fn status(&self, id: usize) -> Option<decree_tools::wire::StatusView> {
        Client::status(&self.file.members[id].addr, &self.secret, Duration::from_millis(500)).ok()
    }

    fn leader(&self) -> Option<usize> {
        (0..self.file.members.len()).find(|&id| self.status(id).is_some_and(|s| s.leading))
    }

    fn wait_leader(&self, not: Option<usize>, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(leader) = self.leader().filter(|l| Some(*l) != not) {
                return leader;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no leader (other than {not:?}) within {within:?}");
    }

    fn pid(&self, id: usize) -> i32 {
        std::fs::read_to_string(self.dir.join(format!("replica-{id}.pid"))).unwrap().trim().parse().unwrap()
    }

    fn log(&self, id: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("replica-{id}.log"))).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(DECREE).args(["cluster", "down", "--purge", "--dir"]).arg(&self.dir).output();
    }
}

fn kill9(pid: i32) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
}

/// Completed (or, for writes, possibly-applied) operations, for the linearizability check.
type History = Arc<Mutex<Vec<Operation<KvOp, KvReply>>>>;

fn micros(origin: Instant) -> u64 {
    origin.elapsed().as_micros() as u64
}

/// One closed-loop client: puts of unique values and gets over a few keys, recorded in `history`.
/// Returns the acknowledged puts (key -> last value acknowledged) and the ops completed per phase.
fn load(mut client: Client, index: usize, stop: Arc<AtomicBool>, killed: Arc<AtomicBool>, history: History, origin: Instant) -> (Vec<(Bytes, Bytes)>, u64, u64) {
    let mut rng = fastrand::Rng::with_seed(index as u64);
    let (mut acked, mut before, mut after) = (Vec::new(), 0u64, 0u64);
    let mut n = 0u64;
    while !stop.load(Ordering::Acquire) {
        n += 1;
        // Shared keys exercise linearizability; unique keys show no acknowledged write is lost.
        let key = Bytes::from(format!("k{}", rng.u32(0..4)));
        let value = Bytes::from(format!("c{index}-{n}"));
        let op = match rng.u32(0..3) {
            0 => KvOp::Put { key, value },
            1 => KvOp::Get { key },
            _ => KvOp::Put { key: Bytes::from(format!("u{index}-{n}")), value },
        };
        let call_time = micros(origin);
        match client.execute(&op) {
            Ok(out) => {
                if let KvOp::Put { key, value } = &op {
                    acked.push((key.clone(), value.clone()));
                }
                history.lock().unwrap().push(Operation { call_time, return_time: micros(origin), op, out });
                if killed.load(Ordering::Acquire) {
                    after += 1;
                } else {
                    before += 1;
                }
            }
            Err(error) => {
                // A write that timed out may still take effect: it stays in the history, open-ended.
                if matches!(op, KvOp::Put { .. }) {
                    history.lock().unwrap().push(Operation { call_time, return_time: u64::MAX, op, out: KvReply::Done });
                }
                eprintln!("client {index}: {error}");
            }
        }
    }
    (acked, before, after)
}

#[test]
#[ignore = "multi-process; run by ci/test-cluster.sh"]
fn leader_kill9_under_load_elects_a_new_leader_loses_no_acknowledged_write_and_the_victim_catches_up() {
    // Frequent checkpoints: the leader discards its log while the victim is down, so the victim
    // can only catch up by installing a checkpoint sent by a peer.
    let cluster = Cluster::up_with("failover", 27400, &["--checkpoint-every-slots", "500"]);
    let old_leader = cluster.wait_leader(None, Duration::from_secs(10));
    let (stop, killed) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let history: History = Arc::default();
    let origin = Instant::now();
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let (client, stop, killed, history) = (cluster.client(), stop.clone(), killed.clone(), history.clone());
            std::thread::spawn(move || load(client, i, stop, killed, history, origin))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1_500));
    kill9(cluster.pid(old_leader));
    killed.store(true, Ordering::Release);
    let new_leader = cluster.wait_leader(Some(old_leader), Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(2_000));
    stop.store(true, Ordering::Release);
    let mut acked = Vec::new();
    let (mut before, mut after) = (0, 0);
    for client in clients {
        let (writes, b, a) = client.join().unwrap();
        acked.extend(writes);
        before += b;
        after += a;
    }
    assert_ne!(new_leader, old_leader);
    assert!(before > 0, "no operation completed before the kill");
    assert!(after > 0, "clients made no progress after the leader was killed");

    // Every acknowledged write is readable afterwards, and the shared-key history (final reads
    // included) is linearizable.
    let mut reader = cluster.client();
    for (key, value) in acked.iter().filter(|(k, _)| k.starts_with(b"u")) {
        assert_eq!(reader.get(key).unwrap().as_ref(), Some(value), "acknowledged write to {key:?} lost");
    }
    for k in 0..4 {
        let key = Bytes::from(format!("k{k}"));
        let call_time = micros(origin);
        let value = reader.get(&key).unwrap();
        history.lock().unwrap().push(Operation { call_time, return_time: micros(origin), op: KvOp::Get { key }, out: KvReply::Value(value) });
    }
    let history = history.lock().unwrap().clone();
    let mut by_key: BTreeMap<Bytes, Vec<_>> = BTreeMap::new();
    for op in history.into_iter().filter(|o| o.op.key().starts_with(b"k")) {
        by_key.entry(op.op.key().clone()).or_default().push(op);
    }
    assert!(by_key.values().all(|ops| ops.len() > 1), "too little history to check");
    for (key, ops) in &by_key {
        assert!(linearizability::check::<KvRegister>(ops).is_ok(), "history of {key:?} ({} ops) is not linearizable", ops.len());
    }
    let unique_acked = acked.iter().filter(|(k, _)| k.starts_with(b"u")).count();

    // The killed replica restarts from its log and catches up to the leader's commit index.
    cluster.decree(&["cluster", "up"]);
    let target = cluster.status(new_leader).unwrap().commit;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let caught_up = cluster.status(old_leader).map(|s| s.applied).unwrap_or(0);
        if caught_up >= target {
            break;
        }
        assert!(Instant::now() < deadline, "restarted r{old_leader} applied {caught_up} < leader commit {target}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(cluster.log(old_leader).contains("installed a checkpoint received from a peer"), "the victim caught up without a checkpoint transfer");
    eprintln!("ops before kill {before}, after {after}; {unique_acked} acknowledged writes verified; r{old_leader} caught up to {target} via a checkpoint");
}

#[test]
#[ignore = "multi-process; run by ci/test-cluster.sh"]
fn wrong_secret_is_refused_before_the_protocol_and_logged() {
    let cluster = Cluster::up("secret", 27500);
    let leader = cluster.wait_leader(None, Duration::from_secs(10));
    let addr = &cluster.file.members[leader].addr;
    let mut stream = TcpStream::connect(addr).unwrap();
    let refused = auth::connect(&mut stream, b"not-the-cluster-secret-at-all", Peer::Client);
    assert!(matches!(refused, Err(AuthError::Refused)), "{refused:?}");
    // A replica impostor with the wrong key is refused as well.
    let mut stream = TcpStream::connect(addr).unwrap();
    assert!(auth::connect(&mut stream, b"not-the-cluster-secret-at-all", Peer::Replica(1)).is_err());
    // The client library reports it without retrying forever.
    let mut bad = Client::new(ClientConfig::new(vec![addr.clone()], b"not-the-cluster-secret-at-all".to_vec()));
    assert!(matches!(bad.put(b"k", b"v"), Err(ClientError::Auth(_))));
    std::thread::sleep(Duration::from_millis(200));
    assert!(cluster.log(leader).contains("connection refused: authentication failed"), "no refusal logged");
    // Nothing reached the protocol: the key is absent, and the right secret still works.
    let mut good = cluster.client();
    assert_eq!(good.get(b"k").unwrap(), None);
    good.put(b"k", b"v").unwrap();
    assert_eq!(good.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
}

fn authed(addr: &str, secret: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    auth::connect(&mut stream, secret, Peer::Client).unwrap();
    stream
}

fn expect_error_then_close(mut stream: TcpStream, expected: ErrorCode) {
    let frame: ServerFrame = wire::read_frame(&mut stream, &mut Vec::new()).expect("an error frame");
    assert!(matches!(frame, ServerFrame::Error { code, .. } if code == expected), "{frame:?}");
    let mut rest = [0u8; 1];
    assert_eq!(stream.read(&mut rest).unwrap_or(0), 0, "connection left open after a refused frame");
}

#[test]
#[ignore = "multi-process; run by ci/test-cluster.sh"]
fn malformed_oversize_and_unknown_version_frames_get_an_error_while_other_clients_continue() {
    let cluster = Cluster::up("frames", 27600);
    let leader = cluster.wait_leader(None, Duration::from_secs(10));
    let addr = cluster.file.members[leader].addr.clone();
    let mut other = cluster.client();
    other.put(b"before", b"1").unwrap();

    let mut garbage = authed(&addr, &cluster.secret);
    garbage.write_all(b"this is not a decree frame at all").unwrap();
    expect_error_then_close(garbage, ErrorCode::Malformed);

    let mut frame = Vec::new();
    wire::encode(&decree_tools::wire::ClientFrame::Status { request_id: 1 }, &mut frame);
    let mut versioned = frame.clone();
    versioned[4] = 99;
    let mut stream = authed(&addr, &cluster.secret);
    stream.write_all(&versioned).unwrap();
    expect_error_then_close(stream, ErrorCode::UnsupportedVersion);

    let mut oversize = frame.clone();
    oversize[8..12].copy_from_slice(&(64u32 << 20).to_le_bytes());
    let mut stream = authed(&addr, &cluster.secret);
    stream.write_all(&oversize).unwrap();
    expect_error_then_close(stream, ErrorCode::Oversize);

    let mut corrupt = frame;
    *corrupt.last_mut().unwrap() ^= 0xff;
    let mut stream = authed(&addr, &cluster.secret);
    stream.write_all(&corrupt).unwrap();
    expect_error_then_close(stream, ErrorCode::Malformed);

    // The established client kept its session and everything accepted earlier is still there.
    other.put(b"after", b"2").unwrap();
    assert_eq!(other.get(b"before").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(other.get(b"after").unwrap().as_deref(), Some(&b"2"[..]));
}

#[test]
#[ignore = "multi-process; run by ci/test-cluster.sh"]
fn more_writes_than_the_log_holds_survive_checkpoints_graceful_shutdown_and_restart() {
    // Without checkpoints a 2 MiB log fills after ~17k puts (measured: the replicas stop with "log
    // full"); 24k go in, so only checkpoints + prefix discard keep the cluster going.
    let cluster = Cluster::up_with("restart", 27700, &["--log-size-mib", "2", "--checkpoint-every-slots", "200"]);
    cluster.wait_leader(None, Duration::from_secs(10));
    let per_client = 6_000;
    let run = |op: fn(&mut Client, String, String)| {
        let workers: Vec<_> = (0..4)
            .map(|c| {
                let mut client = cluster.client();
                std::thread::spawn(move || (0..per_client).for_each(|i| op(&mut client, format!("key{c}-{i}"), format!("value{c}-{i}"))))
            })
            .collect();
        workers.into_iter().for_each(|w| w.join().unwrap());
    };
    run(|client, key, value| client.put(key.as_bytes(), value.as_bytes()).unwrap());
    let down = Command::new(DECREE).args(["cluster", "down", "--dir"]).arg(&cluster.dir).output().unwrap();
    assert!(down.status.success());
    for id in 0..3 {
        assert!(cluster.log(id).contains("replica stopped cleanly"), "r{id} did not shut down cleanly:\n{}", cluster.log(id));
    }
    cluster.decree(&["cluster", "up"]);
    for id in 0..3 {
        assert!(cluster.log(id).contains("checkpoint recovered"), "r{id} restarted without its checkpoint");
    }
    run(|client, key, value| assert_eq!(client.get(key.as_bytes()).unwrap(), Some(Bytes::from(value)), "{key} lost across restart"));
}

#[test]
#[ignore = "multi-process; run by ci/test-cluster.sh"]
fn leadership_transfer_moves_the_leader_to_the_named_replica_and_refuses_a_non_member() {
    let cluster = Cluster::up("transfer", 27800);
    let leader = cluster.wait_leader(None, Duration::from_secs(10));
    let target = (leader + 1) % 3;
    let mut client = cluster.client();
    client.put(b"before", b"1").unwrap();
    let detail = client.transfer_leadership(Some(target as u32)).unwrap();
    assert!(detail.contains(&format!("r{target}")), "{detail}");
    assert_eq!(cluster.wait_leader(Some(leader), Duration::from_secs(5)), target);
    client.put(b"after", b"2").unwrap();
    assert_eq!(client.get(b"before").unwrap().as_deref(), Some(&b"1"[..]));
    assert!(matches!(client.transfer_leadership(Some(7)), Err(ClientError::Refused(_))));
}

//! decree-bench's load generator against a real 3-replica cluster (tcp, file log): with one
//! session on one connection and with several sessions per connection, it completes puts without
//! errors and records every latency. Starts replica processes, so it runs with the cluster suite
//! (ci/test-cluster.sh), after the tools cluster tests built `decree`.

use decree_bench::decree_cluster::{find_decree_bin, ClusterSpec, DecreeCluster};
use decree_bench::decree_load;
use decree_bench::load::LoadSpec;
use decree_bench::placement::{self, Placement};
use decree_bench::schedule::Arrival;
use std::path::PathBuf;
use std::time::Duration;

/// `target/<profile>/decree`: this test runs from `target/<profile>/deps`.
fn decree_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .join("decree")
}

/// Three replicas, tcp, a small file log, listening from `base_port`.
fn spec(base_port: u16) -> ClusterSpec {
    ClusterSpec {
        replicas: 3,
        transport: "tcp".into(),
        log_backend: "file".into(),
        log_size_mib: 16,
        checkpoint_every_slots: 10_000,
        batching: decree_tools::config::BatchingSection::default(),
        base_port,
    }
}

/// A closed loop of 64 B puts over 100 keys: 200 ms of warm-up, one measured second.
fn one_second_of_puts(clients: usize, connections: usize) -> LoadSpec {
    LoadSpec {
        clients,
        connections,
        payload_bytes: 64,
        keys: 100,
        warmup: Duration::from_millis(200),
        duration: Duration::from_secs(1),
        arrival: Arrival::Closed,
        progress: false,
    }
}

#[test]
#[ignore = "starts replica processes: run by ci/test-cluster.sh"]
fn the_load_generator_commits_puts_without_errors_at_one_and_at_eight_clients() {
    let bin = find_decree_bin(Some(&decree_bin()))
        .expect("build the decree binary first (cargo build -p decree-tools)");
    let dir = std::env::temp_dir().join(format!("decree-bench-load-{}", std::process::id()));
    let cluster = DecreeCluster::start(&bin, &dir, &spec(28_400)).expect("cluster starts");
    let leader = cluster
        .find_leader(Duration::from_secs(15))
        .expect("a leader is elected");
    // 1 client: one connection, one session; 8 clients: two sessions on each of 4 connections.
    for clients in [1, 8] {
        let load = one_second_of_puts(clients, 4);
        let outcome =
            decree_load::run(&leader, &cluster.secret, &load, "test").expect("the load runs");
        assert!(
            outcome.ops >= 50,
            "{clients} clients: only {} puts in a second",
            outcome.ops
        );
        assert_eq!(outcome.errors, 0, "{clients} clients");
        assert_eq!(
            outcome.corrected.len(),
            outcome.ops,
            "{clients} clients: every put's latency recorded"
        );
        assert!(
            outcome.corrected.value_at_quantile(0.5) > 0,
            "{clients} clients: latencies are real"
        );
    }
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The CPUs every thread of `pid` may run on, from /proc (one list per thread).
fn allowed_lists(pid: i32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the replica's threads")
        .filter_map(|task| {
            let status = std::fs::read_to_string(task.ok()?.path().join("status")).ok()?;
            let line = status.lines().find(|l| l.starts_with("Cpus_allowed_list:"))?;
            Some(line.split_whitespace().nth(1)?.to_string())
        })
        .collect()
}

#[test]
#[ignore = "starts replica processes: run by ci/test-cluster.sh"]
fn placing_a_live_cluster_together_pins_every_replica_thread_and_it_still_commits() {
    let allowed = placement::allowed_cpus().expect("this process's CPUs");
    let Some(cpu) = placement::together_cpu(&allowed) else {
        eprintln!("one CPU here: nothing to place");
        return;
    };
    let bin = find_decree_bin(Some(&decree_bin())).expect("build the decree binary first");
    let dir = std::env::temp_dir().join(format!("decree-bench-place-{}", std::process::id()));
    let cluster = DecreeCluster::start(&bin, &dir, &spec(28_500)).expect("cluster starts");
    let pids: Vec<i32> = cluster.processes().iter().map(|p| p.pid).collect();
    assert_eq!(pids.len(), 3, "every replica's pid file");
    let load = one_second_of_puts(8, 1);
    // On a thread of its own: the harness places its calling thread too.
    let (pids_placed, leader, secret) = (pids.clone(), cluster.leader_addr.clone(), cluster.secret.clone());
    let outcome = std::thread::spawn(move || {
        placement::apply(Placement::Together { cpu }, &allowed, &pids_placed).expect("placed");
        for &pid in &pids_placed {
            let lists = allowed_lists(pid);
            assert!(lists.len() > 3, "replica {pid}: its threads are listed");
            assert!(lists.iter().all(|l| *l == cpu.to_string()), "replica {pid} threads on {lists:?}, not cpu {cpu}");
        }
        let outcome = decree_load::run(&leader, &secret, &load, "together").expect("the load runs");
        placement::apply(Placement::Spread, &allowed, &pids_placed).expect("spread again");
        let spread = allowed_lists(pids_placed[0]);
        assert!(spread.iter().all(|l| *l != cpu.to_string()), "spread gives every CPU back: {spread:?}");
        outcome
    })
    .join()
    .expect("the placed load");
    assert!(outcome.ops >= 50, "only {} puts in a second on one CPU", outcome.ops);
    assert_eq!(outcome.errors, 0);
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}

//! decree-bench's load generator against a real 3-replica cluster (tcp, file log): with one
//! session on one connection and with several sessions per connection, it completes puts without
//! errors and records every latency. Starts replica processes, so it runs with the cluster suite
//! (ci/test-cluster.sh), after the tools cluster tests built `decree`.

use decree_bench::decree_cluster::{find_decree_bin, ClusterSpec, DecreeCluster};
use decree_bench::decree_load;
use decree_bench::load::LoadSpec;
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

#[test]
#[ignore = "starts replica processes: run by ci/test-cluster.sh"]
fn the_load_generator_commits_puts_without_errors_at_one_and_at_eight_clients() {
    let bin = find_decree_bin(Some(&decree_bin()))
        .expect("build the decree binary first (cargo build -p decree-tools)");
    let dir = std::env::temp_dir().join(format!("decree-bench-load-{}", std::process::id()));
    let spec = ClusterSpec {
        replicas: 3,
        transport: "tcp".into(),
        log_backend: "file".into(),
        log_size_mib: 16,
        checkpoint_every_slots: 10_000,
        batching: decree_tools::config::BatchingSection::default(),
        base_port: 28_400,
    };
    let cluster = DecreeCluster::start(&bin, &dir, &spec).expect("cluster starts");
    let leader = cluster
        .find_leader(Duration::from_secs(15))
        .expect("a leader is elected");
    // 1 client: one connection, one session; 8 clients: two sessions on each of 4 connections.
    for clients in [1, 8] {
        let load = LoadSpec {
            clients,
            connections: 4,
            payload_bytes: 64,
            keys: 100,
            warmup: Duration::from_millis(200),
            duration: Duration::from_secs(1),
            arrival: Arrival::Closed,
            progress: false,
        };
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

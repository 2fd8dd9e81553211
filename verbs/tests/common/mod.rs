//! Helpers shared by the integration tests.
#![allow(dead_code)]

use decree_engine::message::{Envelope, Heartbeat, Message};
use decree_engine::types::{Ballot, ReplicaId};
use decree_verbs::{FollowerEvent, FollowerLink, LeaderEvent, LeaderLink};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A heartbeat carrying `commit`, a recognisable control message.
pub fn heartbeat(commit: u64) -> Envelope {
    Envelope {
        from: ReplicaId(1),
        to: ReplicaId(2),
        msg: Message::Heartbeat(Heartbeat {
            ballot: Ballot {
                round: 3,
                leader: 1,
            },
            commit,
            round: commit,
        }),
    }
}

/// A fresh path under /dev/shm (or the temp dir) for a region file.
pub fn region_path(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    dir.join(format!(
        "decree-test-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Polls until `pred` matches an event (events before it are returned too), or panics.
fn wait_for<E: std::fmt::Debug>(
    what: &str,
    mut poll: impl FnMut(&mut Vec<E>) -> Result<(), decree_verbs::VerbsError>,
    pred: impl Fn(&E) -> bool,
) -> Vec<E> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        let start = seen.len();
        poll(&mut seen).unwrap_or_else(|e| panic!("poll while waiting for {what}: {e}"));
        if seen[start..].iter().any(&pred) {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; saw {seen:?}"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Polls the leader until `pred` matches an event.
pub fn leader_wait(
    link: &mut dyn LeaderLink,
    what: &str,
    pred: impl Fn(&LeaderEvent) -> bool,
) -> Vec<LeaderEvent> {
    wait_for(what, |out| link.poll(out), pred)
}

/// Polls the follower until `pred` matches an event.
pub fn follower_wait(
    f: &mut dyn FollowerLink,
    what: &str,
    pred: impl Fn(&FollowerEvent) -> bool,
) -> Vec<FollowerEvent> {
    wait_for(what, |out| f.poll(out), pred)
}

/// Reads `len` bytes of the follower's region at `offset`.
pub fn read(f: &dyn FollowerLink, offset: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    f.read(offset, &mut v).unwrap();
    v
}

/// Sends the crate's tracing output to the test's stderr (once per process); RUST_LOG filters.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_test_writer()
        .with_ansi(false)
        .try_init();
}

pub mod scenarios;

/// Calls `op` until it fails (within 5 s) and returns the error.
pub fn first_error(
    what: &str,
    mut op: impl FnMut() -> Result<(), decree_verbs::VerbsError>,
) -> decree_verbs::VerbsError {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Err(e) = op() {
            return e;
        }
        assert!(Instant::now() < deadline, "{what} never reported");
        std::thread::sleep(Duration::from_micros(200));
    }
}

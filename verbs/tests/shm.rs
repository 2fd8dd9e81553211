//! shm transport: one-sided stores into a shared region, fencing, faults and bad input.

mod common;

use common::*;
use decree_verbs::shm::{ShmFollower, ShmLeader};
use decree_verbs::{Durability, FollowerEvent, FollowerLink, LeaderEvent, LeaderLink, LeaderToken, VerbsError, Write};
use std::io::Write as _;

const A: LeaderToken = LeaderToken(0xA1);
const B: LeaderToken = LeaderToken(0xB2);

fn pair(len: usize, mode: Durability) -> (ShmFollower, ShmLeader, std::path::PathBuf) {
    let path = region_path("shm");
    let mut f = ShmFollower::create(&path, len).unwrap();
    let l = ShmLeader::connect(&path, A, mode).unwrap();
    f.grant(A).unwrap();
    (f, l, path)
}

#[test]
fn write_lands_with_imm_and_persisted_ack_reaches_the_leader() {
    let (mut f, mut l, path) = pair(1 << 16, Durability::FollowerPersists);
    let key = l.remote().key;
    let id = l.post_write(&Write { key, offset: 128, bytes: b"entry-one", imm: Some(42) }).unwrap();
    assert_eq!(read(&f, 128, 9), b"entry-one");
    let ev = leader_wait(&mut l, "completion", |e| matches!(e, LeaderEvent::Completed { .. }));
    assert!(matches!(ev[0], LeaderEvent::Completed { id: got, durable: false } if got == id), "follower-persists: completion alone is not durable");
    follower_wait(&mut f, "imm", |e| matches!(e, FollowerEvent::Imm { imm: 42, from } if *from == A));
    f.ack_persisted(A, 137).unwrap();
    leader_wait(&mut l, "persisted", |e| matches!(e, LeaderEvent::Persisted { upto: 137 }));
    std::fs::remove_file(path).unwrap();
}

#[test]
fn volatile_mode_completions_count_at_once_and_read_after_write_is_refused() {
    let (_f, mut l, path) = pair(4096, Durability::Volatile);
    let key = l.remote().key;
    l.post_write(&Write { key, offset: 0, bytes: b"x", imm: None }).unwrap();
    let ev = leader_wait(&mut l, "completion", |e| matches!(e, LeaderEvent::Completed { .. }));
    assert!(matches!(ev[0], LeaderEvent::Completed { durable: true, .. }));
    assert!(matches!(ShmLeader::connect(&path, B, Durability::ReadAfterWrite), Err(VerbsError::Config(_))));
    std::fs::remove_file(path).unwrap();
}

#[test]
fn control_messages_cross_both_ways() {
    let (mut f, mut l, path) = pair(4096, Durability::FollowerPersists);
    l.send(&heartbeat(7)).unwrap();
    let ev = follower_wait(&mut f, "heartbeat", |e| matches!(e, FollowerEvent::Message { .. }));
    assert!(ev.iter().any(|e| matches!(e, FollowerEvent::Message { from, envelope } if *from == A && *envelope == heartbeat(7))));
    f.send(A, &heartbeat(8)).unwrap();
    let ev = leader_wait(&mut l, "reply", |e| matches!(e, LeaderEvent::Message(_)));
    assert!(ev.iter().any(|e| matches!(e, LeaderEvent::Message(m) if *m == heartbeat(8))));
    std::fs::remove_file(path).unwrap();
}

#[test]
fn deposed_leader_is_fenced_and_cannot_touch_the_region() {
    let (mut f, mut a, path) = pair(4096, Durability::FollowerPersists);
    let mut b = ShmLeader::connect(&path, B, Durability::FollowerPersists).unwrap();
    let key = a.remote().key;
    a.post_write(&Write { key, offset: 0, bytes: b"from-a", imm: None }).unwrap();
    assert!(matches!(b.post_write(&Write { key, offset: 0, bytes: b"from-b", imm: None }), Err(VerbsError::Fenced { token: 0xB2, .. })));
    assert_eq!(read(&f, 0, 6), b"from-a");
    f.grant(B).unwrap();
    assert_eq!(f.granted(), B);
    let err = a.post_write(&Write { key, offset: 0, bytes: b"stale!", imm: Some(1) }).unwrap_err();
    assert!(matches!(err, VerbsError::Fenced { token: 0xA1, .. }), "{err}");
    assert_eq!(read(&f, 0, 6), b"from-a", "a fenced write must not land");
    b.post_write(&Write { key, offset: 0, bytes: b"from-b", imm: None }).unwrap();
    assert_eq!(read(&f, 0, 6), b"from-b");
    let mut ev = Vec::new();
    f.poll(&mut ev).unwrap();
    assert!(!ev.iter().any(|e| matches!(e, FollowerEvent::Imm { .. })), "a fenced write's immediate must not arrive");
    std::fs::remove_file(path).unwrap();
}

#[test]
fn out_of_bounds_and_wrong_key_are_typed_errors_and_leave_the_region_alone() {
    let (f, mut l, path) = pair(4096, Durability::FollowerPersists);
    let key = l.remote().key;
    let err = l.post_write(&Write { key, offset: 4090, bytes: &[9u8; 10], imm: None }).unwrap_err();
    assert!(matches!(err, VerbsError::OutOfBounds { offset: 4090, len: 10, region_len: 4096, .. }), "{err}");
    let err = l.post_write(&Write { key: key ^ 1, offset: 0, bytes: b"zz", imm: None }).unwrap_err();
    assert!(matches!(err, VerbsError::WrongKey { .. }), "{err}");
    assert!(read(&f, 0, 4096).iter().all(|&b| b == 0), "refused writes must not land");
    std::fs::remove_file(path).unwrap();
}

#[test]
fn garbage_control_frame_is_a_typed_error_and_the_region_is_untouched() {
    let path = region_path("shm-garbage");
    let mut f = ShmFollower::create(&path, 4096).unwrap();
    let mut raw = std::os::unix::net::UnixStream::connect(decree_verbs::shm::socket_path(&path)).unwrap();
    raw.write_all(&[1, 8, 0, 0, 0]).unwrap(); // hello
    raw.write_all(&0xC1u64.to_le_bytes()).unwrap();
    raw.write_all(&[7, 20, 0, 0, 0]).unwrap(); // control, 20 bytes of junk
    raw.write_all(&[0x5a; 20]).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let err = loop {
        match f.poll(&mut Vec::new()) {
            Err(e) => break e,
            Ok(()) => assert!(std::time::Instant::now() < deadline, "garbage frame never reported"),
        }
    };
    assert!(matches!(err, VerbsError::BadFrame { .. }), "{err}");
    assert!(read(&f, 0, 4096).iter().all(|&b| b == 0));
    std::fs::remove_file(path).unwrap();
}

#[test]
fn follower_gone_is_a_disconnect() {
    let (f, mut l, path) = pair(4096, Durability::FollowerPersists);
    drop(f);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let err = loop {
        if let Err(e) = l.poll(&mut Vec::new()) {
            break e;
        }
        assert!(std::time::Instant::now() < deadline, "disconnect never reported");
    };
    assert!(matches!(err, VerbsError::Disconnected { .. }), "{err}");
    std::fs::remove_file(path).unwrap();
}

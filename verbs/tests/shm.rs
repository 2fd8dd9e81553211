//! shm transport: one-sided stores into a shared region, fencing, faults and bad input.

mod common;

use common::scenarios::*;
use common::*;
use decree_verbs::shm::{ShmFollower, ShmLeader};
use decree_verbs::{Durability, FollowerLink, LeaderLink, LeaderToken, VerbsError};
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
    for mode in [Durability::FollowerPersists, Durability::Volatile] {
        let (mut f, mut l, path) = pair(1 << 16, mode);
        write_lands_and_persisted_is_acknowledged(&mut f, &mut l, A);
        std::fs::remove_file(path).unwrap();
    }
}

#[test]
fn read_after_write_is_refused_on_shm() {
    let (_f, _l, path) = pair(4096, Durability::Volatile);
    assert!(matches!(
        ShmLeader::connect(&path, B, Durability::ReadAfterWrite),
        Err(VerbsError::Config(_))
    ));
    std::fs::remove_file(path).unwrap();
}

#[test]
fn control_messages_cross_both_ways() {
    let (mut f, mut l, path) = pair(4096, Durability::FollowerPersists);
    control_messages_cross(&mut f, &mut l, A);
    std::fs::remove_file(path).unwrap();
}

#[test]
fn deposed_leader_is_fenced_and_cannot_touch_the_region() {
    let (mut f, mut a, path) = pair(4096, Durability::FollowerPersists);
    let mut b = ShmLeader::connect(&path, B, Durability::FollowerPersists).unwrap();
    deposed_leader_is_fenced(&mut f, &mut a, &mut b, A, B);
    std::fs::remove_file(path).unwrap();
}

#[test]
fn out_of_bounds_and_wrong_key_are_typed_errors_and_leave_the_region_alone() {
    let (mut f, mut l, path) = pair(4096, Durability::FollowerPersists);
    bad_writes_leave_the_region_alone(&mut f, &mut l);
    std::fs::remove_file(path).unwrap();
}

#[test]
fn garbage_control_frame_is_a_typed_error_and_the_region_is_untouched() {
    let path = region_path("shm-garbage");
    let mut f = ShmFollower::create(&path, 4096).unwrap();
    let mut raw =
        std::os::unix::net::UnixStream::connect(decree_verbs::shm::socket_path(&path)).unwrap();
    raw.write_all(&[1, 8, 0, 0, 0]).unwrap(); // hello
    raw.write_all(&0xC1u64.to_le_bytes()).unwrap();
    raw.write_all(&[7, 20, 0, 0, 0]).unwrap(); // control, 20 bytes of junk
    raw.write_all(&[0x5a; 20]).unwrap();
    let err = first_error("garbage at the follower", || f.poll(&mut Vec::new()));
    assert!(matches!(err, VerbsError::BadFrame { .. }), "{err}");
    assert!(read(&f, 0, 4096).iter().all(|&b| b == 0));
    std::fs::remove_file(path).unwrap();
}

#[test]
fn follower_gone_is_a_disconnect() {
    let (f, mut l, path) = pair(4096, Durability::FollowerPersists);
    drop(f);
    let err = first_error("disconnect", || l.poll(&mut Vec::new()));
    assert!(matches!(err, VerbsError::Disconnected { .. }), "{err}");
    std::fs::remove_file(path).unwrap();
}

#[test]
fn a_second_process_stores_into_the_region_without_the_follower_polling() {
    // The child maps the region and writes; the follower's thread does nothing meanwhile.
    let path = region_path("shm-xproc");
    let mut f = ShmFollower::create(&path, 4096).unwrap();
    f.grant(A).unwrap();
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_writer",
            "--nocapture",
            "--include-ignored",
        ])
        .env("DECREE_SHM_CHILD_PATH", &path)
        .status()
        .unwrap();
    assert!(child.success(), "child writer failed");
    assert_eq!(read(&f, 512, 10), b"from-child");
    std::fs::remove_file(path).unwrap();
}

/// Runs only as the child of the test above.
#[test]
#[ignore = "helper process of a_second_process_stores_into_the_region_without_the_follower_polling"]
fn child_writer() {
    let Ok(path) = std::env::var("DECREE_SHM_CHILD_PATH") else {
        return;
    };
    let mut l = ShmLeader::connect(std::path::Path::new(&path), A, Durability::Volatile).unwrap();
    let key = l.remote().key;
    write_outcome(
        &mut l,
        &decree_verbs::Write {
            key,
            offset: 512,
            bytes: b"from-child",
            imm: None,
        },
    )
    .unwrap();
}

#[test]
fn records_land_and_the_follower_polls_their_validity_marker() {
    let (mut f, mut l, path) = pair(1 << 16, Durability::FollowerPersists);
    records_land_and_the_follower_polls_their_validity(&mut f, &mut l);
    std::fs::remove_file(path).unwrap();
}

#[test]
fn a_sleeping_follower_is_woken_by_a_store_and_by_its_waker_and_never_misses_one() {
    let (f, mut l, path) = pair(4096, Durability::FollowerPersists);
    let long = std::time::Duration::from_secs(20);
    // Work that arrived after the sequence was read: the sleep returns at once.
    let seq = f.wake_seq().expect("an shm mailbox can sleep");
    let key = l.remote().key;
    l.post_write(&decree_verbs::Write { key, offset: 0, bytes: b"x", imm: Some(1) }).unwrap();
    let started = std::time::Instant::now();
    f.sleep(seq, long);
    assert!(started.elapsed() < long / 4, "slept through a store made before the sleep");
    // A store from another thread while asleep wakes it; so does the waker handle.
    let waker = f.waker().expect("an shm mailbox has a waker");
    for by_waker in [false, true] {
        let seq = f.wake_seq().unwrap();
        let started = std::time::Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(std::time::Duration::from_millis(50));
                if by_waker {
                    waker.wake();
                } else {
                    l.post_write(&decree_verbs::Write { key, offset: 8, bytes: b"y", imm: Some(2) }).unwrap();
                }
            });
            f.sleep(seq, long);
        });
        assert!(started.elapsed() < long / 4, "not woken (by_waker: {by_waker})");
    }
    std::fs::remove_file(path).unwrap();
}

/// A control message far larger than a Unix socket's buffer, from `from` to `to`.
fn large_message(from: u32, to: u32, fill: u8) -> decree_engine::message::Envelope {
    use decree_engine::message::{Envelope, Message, SnapshotChunk};
    use decree_engine::types::{Ballot, ReplicaId};
    let data = bytes::Bytes::from(vec![fill; 4 << 20]);
    Envelope {
        from: ReplicaId(from),
        to: ReplicaId(to),
        msg: Message::Snapshot(SnapshotChunk {
            ballot: Ballot { round: 2, leader: from },
            slot: 9,
            membership: decree_engine::membership::Membership::new(vec![ReplicaId(1), ReplicaId(2)]),
            config_slot: None,
            total_bytes: data.len() as u64,
            checksum: 0,
            offset: 0,
            data,
        }),
    }
}

/// Two replicas' transport threads each send the other a message larger than the socket holds,
/// then poll. One thread drives both, as neither may block: a blocking send waited for a reader
/// that was itself (session 17: two replicas writing to each other stalled until the 5 s send
/// timeout, and their cluster held elections meanwhile).
#[test]
fn replicas_sending_each_other_more_than_a_socket_holds_both_get_through_without_blocking() {
    use decree_engine::message::Message;
    use decree_verbs::mailbox::{token_of, Mailboxes};
    let paths = [region_path("shm-both-ways"), region_path("shm-both-ways")];
    let mut boxes: Vec<Mailboxes<dyn FollowerLink + Send, dyn LeaderLink + Send>> = Vec::new();
    for (id, path) in [(1u32, &paths[0]), (2, &paths[1])] {
        let follower: Box<dyn FollowerLink + Send> = Box::new(ShmFollower::create(path, 1 << 20).unwrap());
        boxes.push(Mailboxes::new(id, follower, [3 - id]));
    }
    for (at, id) in [(0usize, 1u32), (1, 2)] {
        let link = ShmLeader::connect(&paths[1 - at], token_of(id), Durability::FollowerPersists).unwrap();
        boxes[at].attach(3 - id, Box::new(link));
    }
    let started = std::time::Instant::now();
    boxes[0].send(&large_message(1, 2, 0x11)).unwrap();
    boxes[1].send(&large_message(2, 1, 0x22)).unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "a send blocked: {:?}", started.elapsed());
    assert!(boxes[0].sending() && boxes[1].sending(), "4 MiB cannot fit a socket's buffer at once");
    let mut got: [Vec<decree_engine::message::Envelope>; 2] = [Vec::new(), Vec::new()];
    while got.iter().any(Vec::is_empty) {
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "not through: {} / {}", got[0].len(), got[1].len());
        for (at, mailboxes) in boxes.iter_mut().enumerate() {
            let polled = mailboxes.poll(&mut |envelope| got[at].push(envelope));
            assert!(polled.lost.is_empty(), "link lost: {:?}", polled.lost);
        }
    }
    for (at, fill) in [(0usize, 0x22u8), (1, 0x11)] {
        let Message::Snapshot(chunk) = &got[at][0].msg else { panic!("not the snapshot chunk: {:?}", got[at][0].msg) };
        assert_eq!(chunk.data.len(), 4 << 20);
        assert!(chunk.data.iter().all(|b| *b == fill), "the bytes arrived whole and in order");
    }
    assert!(!boxes[0].sending() && !boxes[1].sending());
    for path in paths {
        std::fs::remove_file(path).unwrap();
    }
}

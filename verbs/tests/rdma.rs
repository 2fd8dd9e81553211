//! rdma transport against real devices (soft-RoCE in the guest: ci/guest/host-verbs-rdma.sh).
//! Ignored by default; run with `--ignored` where DECREE_RDMA_DEV_A / DECREE_RDMA_DEV_B name two
//! devices that reach each other (rxe0 and rxe1 from tools/softroce/setup-rxe.sh --pair).
#![cfg(feature = "rdma")]

mod common;

use common::scenarios::*;
use common::*;
use decree_verbs::mapping::Mapping;
use decree_verbs::rdma::{RdmaConfig, RdmaFollower, RdmaLeader};
use decree_verbs::{
    Durability, FollowerEvent, FollowerLink, LeaderEvent, LeaderLink, LeaderToken, VerbsError,
    Write,
};
use std::time::{Duration, Instant};

const A: LeaderToken = LeaderToken(0xA1);
const B: LeaderToken = LeaderToken(0xB2);

fn dev(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} unset: these tests need two RDMA devices (run ci/guest/host-verbs-rdma.sh)")
    })
}

fn follower_on(region: Mapping) -> RdmaFollower {
    init_logging();
    RdmaFollower::listen(
        "127.0.0.1:0".parse().unwrap(),
        RdmaConfig::new(&dev("DECREE_RDMA_DEV_A")),
        region,
    )
    .unwrap()
}

fn follower(len: usize) -> RdmaFollower {
    follower_on(Mapping::anonymous(len).unwrap())
}

fn leader(f: &RdmaFollower, token: LeaderToken, tune: impl FnOnce(&mut RdmaConfig)) -> RdmaLeader {
    let mut cfg = RdmaConfig::new(&dev("DECREE_RDMA_DEV_B"));
    tune(&mut cfg);
    RdmaLeader::connect(f.addr(), token, cfg).unwrap()
}

/// Polls the follower (which adopts the leaders its acceptor welcomed) and `l` until `l` has
/// heard it was adopted: only then does it post one-sided writes.
fn settle(f: &mut RdmaFollower, l: &mut RdmaLeader) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !l.adopted() {
        // An earlier leader that went away is reported (and forgotten) here: not this one's failure.
        let _ = f.poll(&mut Vec::new());
        l.poll(&mut Vec::new()).unwrap();
        assert!(
            Instant::now() < deadline,
            "the follower never adopted the leader"
        );
    }
}

/// A follower of `len` bytes and one leader `A` it has granted and adopted.
fn granted_pair(len: usize, tune: impl FnOnce(&mut RdmaConfig)) -> (RdmaFollower, RdmaLeader) {
    let mut f = follower(len);
    let mut l = leader(&f, A, tune);
    f.grant(A).unwrap();
    settle(&mut f, &mut l);
    (f, l)
}

fn w(key: u32, offset: u64, bytes: &[u8]) -> Write<'_> {
    Write {
        key,
        offset,
        bytes,
        imm: None,
    }
}

#[test]
#[ignore = "needs two RDMA devices"]
fn connect_register_write_inline_and_staged() {
    let (mut f, mut l) = granted_pair(1 << 20, |_| {});
    let key = l.remote().key;
    assert_eq!(l.remote().len, 1 << 20);
    let big: Vec<u8> = (0..8192u32).map(|i| (i * 7) as u8).collect();
    assert!(
        !write_outcome(&mut l, &w(key, 64, b"inline-entry")).unwrap(),
        "follower-persists: a completion alone is not durable"
    );
    write_outcome(&mut l, &w(key, 4096, &big)).unwrap();
    assert_eq!(read(&f, 64, 12), b"inline-entry");
    assert_eq!(read(&f, 4096, big.len()), big);
    let mut ev = Vec::new();
    f.poll(&mut ev).unwrap();
    assert!(
        !ev.iter().any(|e| matches!(e, FollowerEvent::Imm { .. })),
        "plain writes carry no immediate"
    );
}

#[test]
#[ignore = "needs two RDMA devices"]
fn write_with_imm_lands_and_the_persisted_ack_returns() {
    let (mut f, mut l) = granted_pair(1 << 16, |_| {});
    write_lands_and_persisted_is_acknowledged(&mut f, &mut l, A);
}

#[test]
#[ignore = "needs two RDMA devices"]
fn control_messages_ride_the_side_channel() {
    let (mut f, mut l) = granted_pair(4096, |_| {});
    control_messages_cross(&mut f, &mut l, A);
}

#[test]
#[ignore = "needs two RDMA devices"]
fn stale_leader_write_fails_after_the_follower_grants_a_newer_one() {
    let mut f = follower(1 << 16);
    let mut a = leader(&f, A, |_| {});
    let mut b = leader(&f, B, |_| {});
    f.grant(A).unwrap();
    settle(&mut f, &mut a);
    settle(&mut f, &mut b);
    let key = a.remote().key;
    write_outcome(&mut a, &w(key, 0, b"from-a")).unwrap();
    let err = write_outcome(&mut b, &w(key, 0, b"from-b")).unwrap_err();
    assert!(
        matches!(err, VerbsError::Fenced { token, .. } if token == B.0),
        "ungranted leader must be refused: {err}"
    );
    f.grant(B).unwrap(); // revokes a; drops b's first QP, which broke on its refused write
    let mut b = leader(&f, B, |_| {}); // so b reconnects
    settle(&mut f, &mut b); // and is adopted by the follower: granted, it may write
    let err = write_outcome(&mut a, &w(key, 0, b"stale!")).unwrap_err();
    assert!(
        matches!(err, VerbsError::Fenced { token, .. } if token == A.0),
        "stale leader must be fenced: {err}"
    );
    assert_eq!(read(&f, 0, 6), b"from-a", "the fenced write must not land");
    write_outcome(&mut b, &w(key, 0, b"from-b")).unwrap();
    assert_eq!(read(&f, 0, 6), b"from-b");
}

#[test]
#[ignore = "needs two RDMA devices"]
fn a_leader_may_write_only_once_the_follower_has_adopted_it() {
    let mut f = follower(1 << 16);
    f.grant(A).unwrap();
    // Welcomed by the acceptor thread while the follower is not polling: connected, but its QP
    // has no remote access until the follower adopts it, even though its token is granted, and
    // the leader posts no one-sided write before it hears of the adoption.
    let mut early = leader(&f, A, |_| {});
    let deadline = Instant::now() + Duration::from_secs(10);
    while f.connected() == 0 {
        assert!(
            Instant::now() < deadline,
            "the welcomed leader was never queued"
        );
    }
    let key = early.remote().key;
    let err = early.post_write(&w(key, 0, b"early")).unwrap_err();
    assert!(
        matches!(err, VerbsError::Fenced { token, .. } if token == A.0),
        "no write before adoption: {err}"
    );
    assert!(
        read(&f, 0, 5).iter().all(|&b| b == 0),
        "the early write must not land"
    );
    settle(&mut f, &mut early); // adopted with write access: its QP is intact, nothing was posted
    write_outcome(&mut early, &w(key, 0, b"adopted")).unwrap();
    assert_eq!(read(&f, 0, 7), b"adopted");
    // A leader adopted while another is granted may not write.
    let mut other = leader(&f, B, |_| {});
    settle(&mut f, &mut other);
    let err = write_outcome(&mut other, &w(key, 0, b"other")).unwrap_err();
    assert!(
        matches!(err, VerbsError::Fenced { token, .. } if token == B.0),
        "ungranted leader refused after adoption too: {err}"
    );
    assert_eq!(read(&f, 0, 7), b"adopted");
}

#[test]
#[ignore = "needs two RDMA devices"]
fn bad_writes_are_typed_errors_and_the_nic_refuses_a_forged_key() {
    let (mut f, mut l) = granted_pair(4096, |_| {});
    bad_writes_leave_the_region_alone(&mut f, &mut l);
    let key = l.remote().key;
    // Past the local checks, the follower's NIC enforces the key too.
    let id = l
        .post_write_unchecked(&w(key ^ 0x55, 0, b"forged"))
        .unwrap();
    let ev = leader_wait(
        &mut l,
        "refusal",
        |e| matches!(e, LeaderEvent::Failed { id: x, .. } if *x == id),
    );
    assert!(
        ev.iter().any(|e| matches!(
            e,
            LeaderEvent::Failed {
                error: VerbsError::Protocol { .. },
                ..
            }
        )),
        "{ev:?}"
    );
    assert!(
        read(&f, 0, 4096).iter().all(|&b| b == 0),
        "refused writes must not land"
    );
    let err = l.post_write(&w(key, 0, b"after")).unwrap_err();
    assert!(
        matches!(err, VerbsError::Disconnected { .. }),
        "a QP in error refuses further posts: {err}"
    );
}

#[test]
#[ignore = "needs two RDMA devices"]
fn read_after_write_falls_back_over_dram_and_selective_signaling_completes_every_write() {
    // Over DRAM, a READ proves arrival only: the mode in force falls back to follower-persists.
    let (mut f, mut raw) = granted_pair(1 << 16, |c| c.durability = Durability::ReadAfterWrite);
    assert_eq!(
        raw.durability(),
        Durability::FollowerPersists,
        "detected: the region is not pmem"
    );
    let key = raw.remote().key;
    assert!(
        !write_outcome(&mut raw, &w(key, 8, b"durable?")).unwrap(),
        "not durable over DRAM"
    );
    drop(raw);
    let mut sel = leader(&f, B, |c| c.signal_every = 4);
    f.grant(B).unwrap();
    settle(&mut f, &mut sel);
    let ids: Vec<_> = (0..10u64)
        .map(|i| sel.post_write(&w(key, i * 16, &[i as u8 + 1; 16])).unwrap())
        .collect();
    let ev = leader_wait(
        &mut sel,
        "last completion",
        |e| matches!(e, LeaderEvent::Completed { id, .. } if *id == ids[9]),
    );
    let done = ev
        .iter()
        .filter(|e| matches!(e, LeaderEvent::Completed { .. }))
        .count();
    assert_eq!(done, 10, "every write completes, signaled or not: {ev:?}");
    assert_eq!(read(&f, 9 * 16, 16), vec![10u8; 16]);
}

#[test]
#[ignore = "needs two RDMA devices"]
fn follower_gone_fails_outstanding_writes_within_the_timeout() {
    let (f, mut l) = granted_pair(4096, |c| c.write_timeout = Duration::from_millis(1500));
    let key = l.remote().key;
    drop(f);
    let id = l.post_write(&w(key, 0, b"into the void")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let failed = loop {
        let _ = l.poll(&mut seen); // the side channel reports the disconnect too
        if let Some(e) = seen
            .iter()
            .find(|e| matches!(e, LeaderEvent::Failed { id: x, .. } if *x == id))
        {
            break format!("{e:?}");
        }
        assert!(
            Instant::now() < deadline,
            "write to a dead follower never failed: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(
        failed.contains("Timeout") || failed.contains("Disconnected"),
        "{failed}"
    );
}

#[test]
#[ignore = "needs two RDMA devices and a device-DAX namespace (DECREE_DEVDAX)"]
fn device_dax_region_is_an_rdma_target() {
    let path = std::env::var("DECREE_DEVDAX").expect(
        "DECREE_DEVDAX unset: run in the guest with an NVDIMM (ci/guest/host-verbs-rdma.sh)",
    );
    let mut f = follower_on(Mapping::open_device(std::path::Path::new(&path), 2 << 20).unwrap());
    let mut l = leader(&f, A, |c| c.durability = Durability::ReadAfterWrite);
    assert_eq!(
        l.durability(),
        Durability::ReadAfterWrite,
        "device-DAX is persistent: the mode holds"
    );
    f.grant(A).unwrap();
    settle(&mut f, &mut l);
    let key = l.remote().key;
    let marker = format!("pmem-entry-{}", std::process::id());
    let write = Write {
        key,
        offset: (1 << 20) + 8,
        bytes: marker.as_bytes(),
        imm: Some(7),
    };
    assert!(
        write_outcome(&mut l, &write).unwrap(),
        "read-after-write on pmem completes durable"
    );
    follower_wait(&mut f, "imm", |e| {
        matches!(e, FollowerEvent::Imm { imm: 7, .. })
    });
    assert_eq!(read(&f, (1 << 20) + 8, marker.len()), marker.as_bytes());
}

#[test]
#[ignore = "needs two RDMA devices"]
fn records_land_and_the_follower_polls_their_validity_marker() {
    let (mut f, mut l) = granted_pair(1 << 16, |_| {});
    records_land_and_the_follower_polls_their_validity(&mut f, &mut l);
}

#[test]
#[ignore = "needs two RDMA devices"]
fn garbage_on_the_side_channel_is_refused_and_the_follower_keeps_serving() {
    use std::io::Write as _;
    let mut f = follower(4096);
    // A hello too short to hold a QP endpoint, then bytes that are no message at all.
    let mut raw = std::net::TcpStream::connect(f.addr()).unwrap();
    raw.write_all(&[1, 3, 0, 0, 0, 0xde, 0xad, 0xbe]).unwrap();
    let mut junk = std::net::TcpStream::connect(f.addr()).unwrap();
    junk.write_all(&[0xff; 64]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(f.connected(), 0, "no leader admitted from garbage");
    let mut l = leader(&f, A, |_| {});
    f.grant(A).unwrap();
    settle(&mut f, &mut l);
    let key = l.remote().key;
    write_outcome(&mut l, &w(key, 0, b"still serving")).unwrap();
    assert_eq!(read(&f, 0, 13), b"still serving");
    // Control messages still flow on the admitted leader's channel.
    l.send(&heartbeat(1)).unwrap();
    follower_wait(&mut f, "heartbeat", |e| {
        matches!(e, FollowerEvent::Message { .. })
    });
    assert!(
        read(&f, 13, 4096 - 13).iter().all(|&b| b == 0),
        "nothing else landed"
    );
}

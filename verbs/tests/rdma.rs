//! rdma transport against real devices (soft-RoCE in the guest: ci/guest/host-verbs-rdma.sh).
//! Ignored by default; run with `--ignored` where DECREE_RDMA_DEV_A / DECREE_RDMA_DEV_B name two
//! devices that reach each other (rxe0 and rxe1 from tools/softroce/setup-rxe.sh --pair).
#![cfg(feature = "rdma")]

mod common;

use common::*;
use decree_verbs::mapping::Mapping;
use decree_verbs::rdma::{RdmaConfig, RdmaFollower, RdmaLeader};
use decree_verbs::{
    Durability, FollowerEvent, FollowerLink, LeaderEvent, LeaderLink, LeaderToken, VerbsError,
    Write, WriteId,
};
use std::time::Duration;

const A: LeaderToken = LeaderToken(0xA1);
const B: LeaderToken = LeaderToken(0xB2);

fn dev(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} unset: these tests need two RDMA devices (run ci/guest/host-verbs-rdma.sh)")
    })
}

fn follower(len: usize) -> RdmaFollower {
    init_logging();
    RdmaFollower::listen(
        "127.0.0.1:0".parse().unwrap(),
        RdmaConfig::new(&dev("DECREE_RDMA_DEV_A")),
        Mapping::anonymous(len).unwrap(),
    )
    .unwrap()
}

fn leader(f: &RdmaFollower, token: LeaderToken, tune: impl FnOnce(&mut RdmaConfig)) -> RdmaLeader {
    let mut cfg = RdmaConfig::new(&dev("DECREE_RDMA_DEV_B"));
    tune(&mut cfg);
    RdmaLeader::connect(f.addr(), token, cfg).unwrap()
}

/// Polls until write `id` completes or fails; returns that event.
fn outcome(l: &mut RdmaLeader, id: WriteId) -> LeaderEvent {
    let mut ev = leader_wait(
        l,
        "write outcome",
        |e| matches!(e, LeaderEvent::Completed { id: x, .. } | LeaderEvent::Failed { id: x, .. } if *x == id),
    );
    let at = ev.iter().position(|e| matches!(e, LeaderEvent::Completed { id: x, .. } | LeaderEvent::Failed { id: x, .. } if *x == id)).unwrap();
    ev.swap_remove(at)
}

#[test]
#[ignore = "needs two RDMA devices"]
fn connect_register_write_inline_and_staged() {
    let mut f = follower(1 << 20);
    let mut l = leader(&f, A, |_| {});
    f.grant(A).unwrap();
    let key = l.remote().key;
    assert_eq!(l.remote().len, 1 << 20);
    let small = b"inline-entry";
    let big: Vec<u8> = (0..8192u32).map(|i| (i * 7) as u8).collect();
    let a = l
        .post_write(&Write {
            key,
            offset: 64,
            bytes: small,
            imm: None,
        })
        .unwrap();
    assert!(matches!(
        outcome(&mut l, a),
        LeaderEvent::Completed { durable: false, .. }
    ));
    let b = l
        .post_write(&Write {
            key,
            offset: 4096,
            bytes: &big,
            imm: None,
        })
        .unwrap();
    assert!(matches!(outcome(&mut l, b), LeaderEvent::Completed { .. }));
    assert_eq!(read(&f, 64, small.len()), small);
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
fn write_with_imm_reaches_the_follower_after_the_bytes() {
    let mut f = follower(1 << 16);
    let mut l = leader(&f, A, |_| {});
    f.grant(A).unwrap();
    let key = l.remote().key;
    let id = l
        .post_write(&Write {
            key,
            offset: 256,
            bytes: b"with-imm",
            imm: Some(0xDEC0DE),
        })
        .unwrap();
    assert!(matches!(outcome(&mut l, id), LeaderEvent::Completed { .. }));
    follower_wait(
        &mut f,
        "imm",
        |e| matches!(e, FollowerEvent::Imm { imm: 0xDEC0DE, from } if *from == A),
    );
    assert_eq!(read(&f, 256, 8), b"with-imm");
}

#[test]
#[ignore = "needs two RDMA devices"]
fn stale_leader_write_fails_after_the_follower_grants_a_newer_one() {
    let mut f = follower(1 << 16);
    let mut a = leader(&f, A, |_| {});
    let mut b = leader(&f, B, |_| {});
    f.grant(A).unwrap();
    let key = a.remote().key;
    let id = a
        .post_write(&Write {
            key,
            offset: 0,
            bytes: b"from-a",
            imm: None,
        })
        .unwrap();
    assert!(matches!(outcome(&mut a, id), LeaderEvent::Completed { .. }));
    let id = b
        .post_write(&Write {
            key,
            offset: 0,
            bytes: b"from-b",
            imm: None,
        })
        .unwrap();
    let ev = outcome(&mut b, id);
    assert!(
        matches!(
            ev,
            LeaderEvent::Failed {
                error: VerbsError::Fenced { .. },
                ..
            }
        ),
        "ungranted leader must be refused: {ev:?}"
    );
    f.grant(B).unwrap(); // revokes a; drops b's first QP, which broke on its refused write
    let mut b = leader(&f, B, |_| {}); // so b reconnects, and is admitted with write access
    let id = a
        .post_write(&Write {
            key,
            offset: 0,
            bytes: b"stale!",
            imm: None,
        })
        .unwrap();
    match outcome(&mut a, id) {
        LeaderEvent::Failed {
            error: VerbsError::Fenced { token, .. },
            ..
        } => assert_eq!(token, A.0),
        other => panic!("stale leader's write must fail as fenced, got {other:?}"),
    }
    assert_eq!(read(&f, 0, 6), b"from-a", "the fenced write must not land");
    let id = b
        .post_write(&Write {
            key,
            offset: 0,
            bytes: b"from-b",
            imm: None,
        })
        .unwrap();
    assert!(matches!(outcome(&mut b, id), LeaderEvent::Completed { .. }));
    assert_eq!(read(&f, 0, 6), b"from-b");
}

#[test]
#[ignore = "needs two RDMA devices"]
fn bad_writes_are_typed_errors_and_the_region_is_untouched() {
    let mut f = follower(4096);
    let mut l = leader(&f, A, |_| {});
    f.grant(A).unwrap();
    let key = l.remote().key;
    assert!(matches!(
        l.post_write(&Write {
            key,
            offset: 4090,
            bytes: &[1; 10],
            imm: None
        }),
        Err(VerbsError::OutOfBounds { .. })
    ));
    assert!(matches!(
        l.post_write(&Write {
            key: key ^ 0x55,
            offset: 0,
            bytes: b"x",
            imm: None
        }),
        Err(VerbsError::WrongKey { .. })
    ));
    // The follower's NIC enforces the key too: a forged key is refused remotely.
    let id = l
        .post_write_unchecked(&Write {
            key: key ^ 0x55,
            offset: 0,
            bytes: b"forged",
            imm: None,
        })
        .unwrap();
    assert!(matches!(
        outcome(&mut l, id),
        LeaderEvent::Failed {
            error: VerbsError::Protocol { .. },
            ..
        }
    ));
    assert!(
        read(&f, 0, 4096).iter().all(|&b| b == 0),
        "refused writes must not land"
    );
    let err = l
        .post_write(&Write {
            key,
            offset: 0,
            bytes: b"after",
            imm: None,
        })
        .unwrap_err();
    assert!(
        matches!(err, VerbsError::Disconnected { .. }),
        "a QP in error refuses further posts: {err}"
    );
}

#[test]
#[ignore = "needs two RDMA devices"]
fn read_after_write_completes_durable_and_selective_signaling_completes_every_write() {
    let mut f = follower(1 << 16);
    let mut raw = leader(&f, A, |c| c.durability = Durability::ReadAfterWrite);
    f.grant(A).unwrap();
    let key = raw.remote().key;
    let id = raw
        .post_write(&Write {
            key,
            offset: 8,
            bytes: b"durable?",
            imm: None,
        })
        .unwrap();
    assert!(matches!(
        outcome(&mut raw, id),
        LeaderEvent::Completed { durable: true, .. }
    ));
    drop(raw);
    let mut sel = leader(&f, B, |c| c.signal_every = 4);
    f.grant(B).unwrap();
    let ids: Vec<WriteId> = (0..10u64)
        .map(|i| {
            sel.post_write(&Write {
                key,
                offset: i * 16,
                bytes: &[i as u8 + 1; 16],
                imm: None,
            })
            .unwrap()
        })
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
fn control_messages_and_persisted_acks_ride_the_side_channel() {
    let mut f = follower(4096);
    let mut l = leader(&f, A, |_| {});
    f.grant(A).unwrap();
    l.send(&heartbeat(11)).unwrap();
    let ev = follower_wait(&mut f, "heartbeat", |e| {
        matches!(e, FollowerEvent::Message { .. })
    });
    assert!(ev.iter().any(|e| matches!(e, FollowerEvent::Message { envelope, from } if *envelope == heartbeat(11) && *from == A)));
    f.send(A, &heartbeat(12)).unwrap();
    f.ack_persisted(A, 4000).unwrap();
    let ev = leader_wait(&mut l, "persisted", |e| {
        matches!(e, LeaderEvent::Persisted { upto: 4000 })
    });
    assert!(ev
        .iter()
        .any(|e| matches!(e, LeaderEvent::Message(m) if *m == heartbeat(12))));
}

#[test]
#[ignore = "needs two RDMA devices"]
fn follower_gone_fails_outstanding_writes_within_the_timeout() {
    let mut f = follower(4096);
    let mut l = leader(&f, A, |c| c.write_timeout = Duration::from_millis(1500));
    f.grant(A).unwrap();
    let key = l.remote().key;
    drop(f);
    let start = std::time::Instant::now();
    let id = l
        .post_write(&Write {
            key,
            offset: 0,
            bytes: b"into the void",
            imm: None,
        })
        .unwrap();
    let deadline = start + Duration::from_secs(20);
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
            std::time::Instant::now() < deadline,
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
    init_logging();
    let region = Mapping::open_device(std::path::Path::new(&path), 2 << 20).unwrap();
    let mut f = RdmaFollower::listen(
        "127.0.0.1:0".parse().unwrap(),
        RdmaConfig::new(&dev("DECREE_RDMA_DEV_A")),
        region,
    )
    .unwrap();
    let mut l = leader(&f, A, |c| c.durability = Durability::ReadAfterWrite);
    f.grant(A).unwrap();
    let key = l.remote().key;
    let marker = format!("pmem-entry-{}", std::process::id());
    let id = l
        .post_write(&Write {
            key,
            offset: (1 << 20) + 8,
            bytes: marker.as_bytes(),
            imm: Some(7),
        })
        .unwrap();
    assert!(matches!(
        outcome(&mut l, id),
        LeaderEvent::Completed { durable: true, .. }
    ));
    follower_wait(&mut f, "imm", |e| {
        matches!(e, FollowerEvent::Imm { imm: 7, .. })
    });
    assert_eq!(read(&f, (1 << 20) + 8, marker.len()), marker.as_bytes());
}

//! tcp transport: a receiver thread applies writes; fencing, timeouts, reconnects, bad input.

mod common;

use common::scenarios::*;
use common::*;
use decree_verbs::tcp::{TcpConfig, TcpFollower, TcpLeader};
use decree_verbs::{
    Durability, FollowerLink, LeaderEvent, LeaderLink, LeaderToken, VerbsError, Write,
};
use std::io::{Read, Write as _};
use std::net::TcpListener;
use std::time::{Duration, Instant};

const A: LeaderToken = LeaderToken(0xA1);
const B: LeaderToken = LeaderToken(0xB2);

fn follower(len: usize) -> TcpFollower {
    TcpFollower::listen("127.0.0.1:0".parse().unwrap(), len).unwrap()
}

fn leader(f: &TcpFollower, token: LeaderToken, cfg: TcpConfig) -> TcpLeader {
    TcpLeader::connect(f.addr(), token, cfg).unwrap()
}

#[test]
fn write_lands_with_imm_and_persisted_ack_reaches_the_leader() {
    for durability in [Durability::FollowerPersists, Durability::Volatile] {
        let mut f = follower(1 << 16);
        let mut l = leader(
            &f,
            A,
            TcpConfig {
                durability,
                ..TcpConfig::default()
            },
        );
        f.grant(A).unwrap();
        write_lands_and_persisted_is_acknowledged(&mut f, &mut l, A);
    }
}

#[test]
fn control_messages_cross_both_ways() {
    let mut f = follower(4096);
    let mut l = leader(&f, A, TcpConfig::default());
    f.grant(A).unwrap();
    control_messages_cross(&mut f, &mut l, A);
}

#[test]
fn deposed_leader_is_fenced_and_cannot_touch_the_region() {
    let mut f = follower(4096);
    let mut a = leader(&f, A, TcpConfig::default());
    let mut b = leader(&f, B, TcpConfig::default());
    deposed_leader_is_fenced(&mut f, &mut a, &mut b, A, B);
}

#[test]
fn out_of_bounds_and_wrong_key_are_typed_errors_and_leave_the_region_alone() {
    let mut f = follower(4096);
    let mut l = leader(&f, A, TcpConfig::default());
    f.grant(A).unwrap();
    bad_writes_leave_the_region_alone(&mut f, &mut l);
}

#[test]
fn garbage_control_frame_is_a_typed_error_at_the_follower() {
    let mut f = follower(4096);
    let mut raw = std::net::TcpStream::connect(f.addr()).unwrap();
    raw.write_all(&[1, 8, 0, 0, 0]).unwrap();
    raw.write_all(&0xC1u64.to_le_bytes()).unwrap();
    let mut welcome = [0u8; 5 + 12];
    raw.read_exact(&mut welcome).unwrap();
    raw.write_all(&[7, 20, 0, 0, 0]).unwrap();
    raw.write_all(&[0x5a; 20]).unwrap();
    let err = first_error("garbage at the follower", || f.poll(&mut Vec::new()));
    assert!(matches!(err, VerbsError::BadFrame { .. }), "{err}");
    assert!(read(&f, 0, 4096).iter().all(|&b| b == 0));
}

/// A hand-written follower: accepts one leader, welcomes it (key 5, 4096 bytes), then `then`.
fn fake_follower(
    then: impl FnOnce(std::net::TcpStream) + Send + 'static,
) -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut hello = [0u8; 13];
        s.read_exact(&mut hello).unwrap();
        let mut welcome = vec![2, 12, 0, 0, 0];
        welcome.extend_from_slice(&5u32.to_le_bytes());
        welcome.extend_from_slice(&4096u64.to_le_bytes());
        s.write_all(&welcome).unwrap();
        then(s);
    });
    (addr, fake)
}

#[test]
fn garbage_from_the_follower_is_a_typed_error_at_the_leader() {
    let (addr, fake) = fake_follower(|mut s| {
        s.write_all(&[7, 4, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef])
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
    });
    let mut l = TcpLeader::connect(addr, A, TcpConfig::default()).unwrap();
    let err = first_error("garbage at the leader", || l.poll(&mut Vec::new()));
    assert!(matches!(err, VerbsError::BadFrame { .. }), "{err}");
    fake.join().unwrap();
}

#[test]
fn a_follower_that_never_acknowledges_times_the_write_out() {
    let (addr, fake) = fake_follower(|mut s| {
        let mut sink = [0u8; 4096];
        while matches!(s.read(&mut sink), Ok(n) if n > 0) {} // swallow everything, answer nothing
    });
    let cfg = TcpConfig {
        write_timeout: Duration::from_millis(200),
        ..TcpConfig::default()
    };
    let mut l = TcpLeader::connect(addr, A, cfg).unwrap();
    let start = Instant::now();
    let err = write_outcome(
        &mut l,
        &Write {
            key: 5,
            offset: 0,
            bytes: b"hello?",
            imm: None,
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            VerbsError::Timeout {
                timeout_ms: 200,
                ..
            }
        ),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    drop(l);
    fake.join().unwrap();
}

#[test]
fn leader_reconnects_with_backoff_after_the_follower_restarts() {
    let f = follower(4096);
    let addr = f.addr();
    let mut l = leader(&f, A, TcpConfig::default());
    drop(f);
    // Outstanding and new writes fail while the follower is gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    while l.is_connected() {
        let _ = l.poll(&mut Vec::new());
        let _ = l.post_write(&Write {
            key: l.remote().key,
            offset: 0,
            bytes: b"x",
            imm: None,
        });
        assert!(Instant::now() < deadline, "disconnect never noticed");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(matches!(
        l.post_write(&Write {
            key: l.remote().key,
            offset: 0,
            bytes: b"x",
            imm: None
        }),
        Err(VerbsError::Disconnected { .. })
    ));
    let mut f2 = TcpFollower::listen(addr, 4096).unwrap();
    f2.grant(A).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !l.is_connected() {
        let _ = l.poll(&mut Vec::new());
        assert!(Instant::now() < deadline, "never reconnected");
        std::thread::sleep(Duration::from_millis(5));
    }
    let key = l.remote().key;
    assert_eq!(
        key,
        f2.local().key,
        "the new region's key is learned on reconnect"
    );
    write_outcome(
        &mut l,
        &Write {
            key,
            offset: 8,
            bytes: b"again",
            imm: None,
        },
    )
    .unwrap();
    assert_eq!(read(&f2, 8, 5), b"again");
    let mut ev = Vec::new();
    l.poll(&mut ev).unwrap();
    assert!(!ev.iter().any(|e| matches!(e, LeaderEvent::Failed { .. })));
}

#[test]
fn read_after_write_is_refused_on_tcp() {
    let f = follower(4096);
    let cfg = TcpConfig {
        durability: Durability::ReadAfterWrite,
        ..TcpConfig::default()
    };
    assert!(matches!(
        TcpLeader::connect(f.addr(), A, cfg),
        Err(VerbsError::Config(_))
    ));
}

#[test]
fn records_land_and_the_follower_polls_their_validity_marker() {
    let mut f = follower(1 << 16);
    let mut l = leader(&f, A, TcpConfig::default());
    f.grant(A).unwrap();
    records_land_and_the_follower_polls_their_validity(&mut f, &mut l);
}

#[test]
fn a_batch_goes_out_in_one_vectored_send_and_every_write_completes() {
    let mut f = follower(1 << 20);
    let mut l = leader(
        &f,
        A,
        TcpConfig {
            max_outstanding: 4096,
            ..TcpConfig::default()
        },
    );
    f.grant(A).unwrap();
    let key = l.remote().key;
    let payloads: Vec<Vec<u8>> = (0..1500u32)
        .map(|i| vec![(i % 251) as u8; 1 + (i as usize % 300)])
        .collect();
    let writes: Vec<Write<'_>> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| Write {
            key,
            offset: i as u64 * 512,
            bytes: p,
            imm: None,
        })
        .collect();
    let mut ids = Vec::new();
    l.post_batch(&writes, &mut ids).unwrap();
    assert_eq!(
        ids.len(),
        1500,
        "more messages than IOV_MAX slices still go out"
    );
    let last = *ids.last().unwrap();
    let ev = leader_wait(
        &mut l,
        "last completion",
        |e| matches!(e, LeaderEvent::Completed { id, .. } if *id == last),
    );
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, LeaderEvent::Completed { .. }))
            .count(),
        1500
    );
    for (i, p) in payloads.iter().enumerate().step_by(97) {
        assert_eq!(&read(&f, i as u64 * 512, p.len()), p);
    }
    let bad = [
        Write {
            key,
            offset: 0,
            bytes: b"ok",
            imm: None,
        },
        Write {
            key,
            offset: 1 << 20,
            bytes: b"past",
            imm: None,
        },
    ];
    assert!(matches!(
        l.post_batch(&bad, &mut Vec::new()),
        Err(VerbsError::OutOfBounds { .. })
    ));
    // Offset 0 holds the first payload (1 byte); the refused batch's "ok" would add a 'k'.
    assert_eq!(
        read(&f, 0, 2),
        vec![payloads[0][0], 0],
        "a refused batch sends nothing"
    );
}

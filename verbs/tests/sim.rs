//! sim transport: the shared scenarios, then its faults and its determinism.

mod common;

use common::scenarios::*;
use common::*;
use decree_verbs::sim::{SimConfig, SimNet};
use decree_verbs::{
    FollowerEvent, FollowerLink, LeaderEvent, LeaderLink, LeaderToken, VerbsError, Write,
};

const A: LeaderToken = LeaderToken(0xA1);
const B: LeaderToken = LeaderToken(0xB2);

#[test]
fn shared_scenarios_pass_on_a_reliable_network() {
    let net = SimNet::new(SimConfig::reliable(1));
    let mut f = net.follower(1, 1 << 16);
    let mut l = net.leader(0, 1, A);
    f.grant(A).unwrap();
    write_lands_and_persisted_is_acknowledged(&mut f, &mut l, A);
    control_messages_cross(&mut f, &mut l, A);
    bad_writes_leave_the_region_alone(&mut net.follower(2, 4096), &mut net.leader(0, 2, A));
    let mut f3 = net.follower(3, 4096);
    let (mut a, mut b) = (net.leader(0, 3, A), net.leader(4, 3, B));
    deposed_leader_is_fenced(&mut f3, &mut a, &mut b, A, B);
}

/// Posts `n` writes and polls for `ticks`, returning every leader event.
fn run(cfg: SimConfig, n: u64, ticks: u64) -> Vec<String> {
    let net = SimNet::new(cfg);
    let mut f = net.follower(1, 4096);
    let mut l = net.leader(0, 1, A);
    f.grant(A).unwrap();
    let key = l.remote().key;
    for i in 0..n {
        l.post_write(&Write {
            key,
            offset: i * 8,
            bytes: &i.to_le_bytes(),
            imm: None,
        })
        .unwrap();
    }
    let mut ev = Vec::new();
    for _ in 0..ticks {
        l.poll(&mut ev).unwrap();
    }
    ev.iter().map(|e| format!("{e:?}")).collect()
}

#[test]
fn lost_writes_time_out() {
    let cfg = SimConfig {
        loss: 1.0,
        write_timeout_ticks: 50,
        ..SimConfig::reliable(2)
    };
    let ev = run(cfg, 3, 100);
    assert_eq!(ev.len(), 3, "{ev:?}");
    assert!(ev.iter().all(|e| e.contains("Timeout")), "{ev:?}");
}

#[test]
fn missing_and_duplicated_completions_are_injected() {
    let missing = run(
        SimConfig {
            missing_completion: 1.0,
            write_timeout_ticks: 50,
            ..SimConfig::reliable(3)
        },
        4,
        100,
    );
    assert!(
        missing.iter().all(|e| e.contains("Timeout")) && missing.len() == 4,
        "a landed write without completion must time out: {missing:?}"
    );
    let dup = run(
        SimConfig {
            duplicate_completion: 1.0,
            ..SimConfig::reliable(3)
        },
        4,
        20,
    );
    assert_eq!(
        dup.iter().filter(|e| e.contains("Completed")).count(),
        8,
        "{dup:?}"
    );
}

#[test]
fn same_seed_same_history_and_delays_reorder() {
    let cfg = |seed| SimConfig {
        loss: 0.2,
        duplicate_completion: 0.2,
        delay_min: 1,
        delay_max: 30,
        write_timeout_ticks: 100,
        ..SimConfig::reliable(seed)
    };
    let a = run(cfg(7), 40, 300);
    assert_eq!(a, run(cfg(7), 40, 300), "a seed must replay exactly");
    assert_ne!(
        a,
        run(cfg(8), 40, 300),
        "another seed gives another history"
    );
    let ids: Vec<u64> = a
        .iter()
        .filter(|e| e.contains("Completed"))
        .map(|e| {
            e.split("WriteId(")
                .nth(1)
                .unwrap()
                .split(')')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(
        ids.windows(2).any(|w| w[0] > w[1]),
        "delays of 1..30 ticks must reorder some completions: {ids:?}"
    );
}

#[test]
fn partition_drops_traffic_until_healed() {
    let net = SimNet::new(SimConfig {
        write_timeout_ticks: 20,
        ..SimConfig::reliable(4)
    });
    let mut f = net.follower(1, 4096);
    let mut l = net.leader(0, 1, A);
    f.grant(A).unwrap();
    let key = l.remote().key;
    net.partition(0, 1);
    l.send(&heartbeat(1)).unwrap();
    let lost = l
        .post_write(&Write {
            key,
            offset: 0,
            bytes: b"cut",
            imm: None,
        })
        .unwrap();
    let mut ev = Vec::new();
    for _ in 0..30 {
        l.poll(&mut ev).unwrap();
    }
    assert!(
        matches!(&ev[..], [LeaderEvent::Failed { id, error: VerbsError::Timeout { .. } }] if *id == lost),
        "{ev:?}"
    );
    let mut fev = Vec::new();
    f.poll(&mut fev).unwrap();
    assert!(
        fev.is_empty() && read(&f, 0, 3) == [0, 0, 0],
        "nothing crosses a partition: {fev:?}"
    );
    net.heal(0, 1);
    write_outcome(
        &mut l,
        &Write {
            key,
            offset: 0,
            bytes: b"ok!",
            imm: None,
        },
    )
    .unwrap();
    follower_wait(&mut f, "landed", |e| {
        matches!(
            e,
            FollowerEvent::Landed {
                offset: 0,
                len: 3,
                ..
            }
        )
    });
}

#[test]
fn records_land_and_the_follower_polls_their_validity_marker() {
    let net = SimNet::new(SimConfig {
        delay_max: 20,
        ..SimConfig::reliable(9)
    });
    let mut f = net.follower(1, 1 << 16);
    let mut l = net.leader(0, 1, A);
    f.grant(A).unwrap();
    records_land_and_the_follower_polls_their_validity(&mut f, &mut l);
}

//! The one-sided transports' steady-state path allocates nothing: over shm, control messages both
//! ways, one-sided writes with immediates, persisted acknowledgements, and the mailbox layer above
//! them (Accepts stored one-sided, the rest on the control channel, the grant on acknowledgement).
//! rdma shares the connection and buffer code (`conn`, the reused frame and body buffers) but
//! needs a device: tests/rdma.rs, in the guest.

mod common;
#[path = "../../tools/tests/support/counting_alloc.rs"]
mod counting_alloc;

use common::*;
use counting_alloc::counted;
use decree_engine::message::{Accept, Accepted, Envelope, Message};
use decree_engine::types::{Ballot, ReplicaId, Value};
use decree_verbs::mailbox::{token_of, Mailboxes};
use decree_verbs::shm::{ShmFollower, ShmLeader};
use decree_verbs::{
    Durability, FollowerEvent, FollowerLink, LeaderEvent, LeaderLink, LeaderToken, Write,
};
use std::time::{Duration, Instant};

const A: LeaderToken = LeaderToken(0xA1);
/// Rounds before counting: buffers reach their working size.
const WARM_UP: u64 = 50;
/// Rounds counted.
const ROUNDS: u64 = 500;

/// Polls until `found` says the awaited event came; bounded.
fn until(what: &str, mut found: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !found() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
    }
}

/// One round over a link: a control message each way, a write with its immediate and its
/// completion, a persisted acknowledgement.
fn link_round(
    f: &mut ShmFollower,
    l: &mut ShmLeader,
    fev: &mut Vec<FollowerEvent>,
    lev: &mut Vec<LeaderEvent>,
    round: u64,
) {
    let hb = heartbeat(round);
    l.send(&hb).unwrap();
    until("leader's message", || {
        fev.clear();
        f.poll(fev).unwrap();
        fev.iter()
            .any(|e| matches!(e, FollowerEvent::Message { envelope, .. } if *envelope == hb))
    });
    f.send(A, &hb).unwrap();
    until("follower's message", || {
        lev.clear();
        l.poll(lev).unwrap();
        lev.iter()
            .any(|e| matches!(e, LeaderEvent::Message(envelope) if *envelope == hb))
    });
    let key = l.remote().key;
    let offset = (round % 64) * 16;
    let bytes = round.to_le_bytes();
    let write = Write {
        key,
        offset,
        bytes: &bytes,
        imm: Some(round as u32),
    };
    l.post_write(&write).unwrap();
    until("immediate", || {
        fev.clear();
        f.poll(fev).unwrap();
        fev.iter()
            .any(|e| matches!(e, FollowerEvent::Imm { imm, .. } if u64::from(*imm) == round))
    });
    f.ack_persisted(A, round + 1).unwrap(); // rises every round, so the leader reports it
    until("persisted", || {
        lev.clear();
        l.poll(lev).unwrap();
        lev.iter()
            .any(|e| matches!(e, LeaderEvent::Persisted { .. }))
    });
}

#[test]
fn an_shm_link_allocates_nothing_per_message_or_write() {
    let path = region_path("noalloc-link");
    let mut f = ShmFollower::create(&path, 4096).unwrap();
    let mut l = ShmLeader::connect(&path, A, Durability::FollowerPersists).unwrap();
    f.grant(A).unwrap();
    let (mut fev, mut lev) = (Vec::with_capacity(64), Vec::with_capacity(64));
    for round in 0..WARM_UP {
        link_round(&mut f, &mut l, &mut fev, &mut lev, round);
    }
    let (allocations, bytes) = counted(|| {
        for round in WARM_UP..WARM_UP + ROUNDS {
            link_round(&mut f, &mut l, &mut fev, &mut lev, round);
        }
    });
    assert_eq!(
        (allocations, bytes),
        (0, 0),
        "allocations (and bytes) in {ROUNDS} rounds"
    );
}

fn envelope(from: u32, to: u32, msg: Message) -> Envelope {
    Envelope {
        from: ReplicaId(from),
        to: ReplicaId(to),
        msg,
    }
}

type ShmMailboxes = Mailboxes<ShmFollower, ShmLeader>;

/// Replica `id`'s mailbox at `path(id)`, linked to `peer`'s.
fn replica(id: u32, peer: u32, path: &dyn Fn(u32) -> std::path::PathBuf) -> ShmMailboxes {
    let mailbox = ShmFollower::create(&path(id), 1 << 16).unwrap();
    Mailboxes::new(id, Box::new(mailbox), [peer])
}

/// Polls `m` until it delivers a message equal to `want`.
fn deliver(m: &mut ShmMailboxes, want: &Envelope) {
    until("delivery", || {
        let mut got = false;
        m.poll(&mut |e| got |= e == *want);
        got
    });
}

/// One round of replication between leader 1 and follower 2: an Accept (one-sided), its
/// Accepted (control channel; acknowledging grants 2's mailbox to 1), a heartbeat.
fn mailbox_round(one: &mut ShmMailboxes, two: &mut ShmMailboxes, round: u64) {
    let ballot = Ballot {
        round: 1,
        leader: 1,
    };
    let accept = envelope(
        1,
        2,
        Message::Accept(Accept {
            ballot,
            start: round,
            values: [Value::Noop].into_iter().collect(),
            commit: round,
            awaited: true,
        }),
    );
    one.send(&accept).unwrap();
    deliver(two, &accept);
    let accepted = envelope(
        2,
        1,
        Message::Accepted(Accepted {
            ballot,
            upto: round + 1,
            round,
        }),
    );
    two.send(&accepted).unwrap();
    deliver(one, &accepted);
    let hb = envelope(1, 2, heartbeat(round).msg);
    one.send(&hb).unwrap();
    deliver(two, &hb);
}

#[test]
fn mailboxes_over_shm_allocate_nothing_per_accept() {
    let base = region_path("noalloc-mailbox");
    let path = move |id: u32| base.with_extension(format!("r{id}"));
    let mut one = replica(1, 2, &path);
    let mut two = replica(2, 1, &path);
    let link = |to: u32, from: u32| {
        Box::new(
            ShmLeader::connect(&path(to), token_of(from), Durability::FollowerPersists).unwrap(),
        )
    };
    one.attach(2, link(2, 1));
    two.attach(1, link(1, 2));
    for round in 0..WARM_UP {
        mailbox_round(&mut one, &mut two, round);
    }
    let written = two.stats().received;
    let (allocations, bytes) = counted(|| {
        for round in WARM_UP..WARM_UP + ROUNDS {
            mailbox_round(&mut one, &mut two, round);
        }
    });
    assert_eq!(
        two.stats().received - written,
        ROUNDS,
        "every counted Accept went one-sided"
    );
    assert_eq!(
        (allocations, bytes),
        (0, 0),
        "allocations (and bytes) in {ROUNDS} rounds"
    );
}

//! Scenarios every transport must pass, written once against the traits.

use super::*;
use decree_verbs::{
    Durability, FollowerEvent, FollowerLink, LeaderEvent, LeaderLink, LeaderToken, VerbsError,
    Write,
};

/// Posts `w` and waits for its outcome: Ok when it completed, the error when it was refused
/// (synchronously, or later by the follower).
pub fn write_outcome(l: &mut dyn LeaderLink, w: &Write<'_>) -> Result<bool, VerbsError> {
    let id = l.post_write(w)?;
    let ev = leader_wait(
        l,
        "write outcome",
        |e| matches!(e, LeaderEvent::Completed { id: x, .. } | LeaderEvent::Failed { id: x, .. } if *x == id),
    );
    for e in ev {
        match e {
            LeaderEvent::Completed { id: x, durable } if x == id => return Ok(durable),
            LeaderEvent::Failed { id: x, error } if x == id => return Err(error),
            _ => {}
        }
    }
    unreachable!("leader_wait returned without the awaited event")
}

/// A write lands with its immediate; completion durability follows the mode; the follower's
/// persisted acknowledgement reaches the leader.
pub fn write_lands_and_persisted_is_acknowledged(
    f: &mut dyn FollowerLink,
    l: &mut dyn LeaderLink,
    token: LeaderToken,
) {
    let key = l.remote().key;
    let durable = write_outcome(
        l,
        &Write {
            key,
            offset: 128,
            bytes: b"entry-one",
            imm: Some(42),
        },
    )
    .unwrap();
    assert_eq!(
        durable,
        l.durability() == Durability::Volatile,
        "completion durability must follow the mode"
    );
    assert_eq!(read(f, 128, 9), b"entry-one");
    follower_wait(
        f,
        "imm",
        |e| matches!(e, FollowerEvent::Imm { imm: 42, from } if *from == token),
    );
    f.ack_persisted(token, 137).unwrap();
    leader_wait(l, "persisted", |e| {
        matches!(e, LeaderEvent::Persisted { upto: 137 })
    });
}

/// Control messages cross both ways.
pub fn control_messages_cross(
    f: &mut dyn FollowerLink,
    l: &mut dyn LeaderLink,
    token: LeaderToken,
) {
    l.send(&heartbeat(7)).unwrap();
    let ev = follower_wait(f, "heartbeat", |e| {
        matches!(e, FollowerEvent::Message { .. })
    });
    assert!(ev.iter().any(|e| matches!(e, FollowerEvent::Message { from, envelope } if *from == token && *envelope == heartbeat(7))));
    f.send(token, &heartbeat(8)).unwrap();
    let ev = leader_wait(l, "reply", |e| matches!(e, LeaderEvent::Message(_)));
    assert!(ev
        .iter()
        .any(|e| matches!(e, LeaderEvent::Message(m) if *m == heartbeat(8))));
}

/// Only the granted leader's writes land; after a new grant the deposed one is refused.
pub fn deposed_leader_is_fenced(
    f: &mut dyn FollowerLink,
    a: &mut dyn LeaderLink,
    b: &mut dyn LeaderLink,
    ta: LeaderToken,
    tb: LeaderToken,
) {
    f.grant(ta).unwrap();
    let key = a.remote().key;
    write_outcome(
        a,
        &Write {
            key,
            offset: 0,
            bytes: b"from-a",
            imm: None,
        },
    )
    .unwrap();
    let err = write_outcome(
        b,
        &Write {
            key,
            offset: 0,
            bytes: b"from-b",
            imm: None,
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, VerbsError::Fenced { token, .. } if token == tb.0),
        "{err}"
    );
    assert_eq!(read(f, 0, 6), b"from-a");
    f.grant(tb).unwrap();
    assert_eq!(f.granted(), tb);
    let err = write_outcome(
        a,
        &Write {
            key,
            offset: 0,
            bytes: b"stale!",
            imm: Some(1),
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, VerbsError::Fenced { token, .. } if token == ta.0),
        "{err}"
    );
    assert_eq!(read(f, 0, 6), b"from-a", "a fenced write must not land");
    write_outcome(
        b,
        &Write {
            key,
            offset: 0,
            bytes: b"from-b",
            imm: None,
        },
    )
    .unwrap();
    assert_eq!(read(f, 0, 6), b"from-b");
    let mut ev = Vec::new();
    f.poll(&mut ev).unwrap();
    assert!(
        !ev.iter().any(|e| matches!(e, FollowerEvent::Imm { .. })),
        "a fenced write's immediate must not arrive"
    );
}

/// Past-the-end and wrong-key writes are typed errors and leave the region zero.
pub fn bad_writes_leave_the_region_alone(f: &mut dyn FollowerLink, l: &mut dyn LeaderLink) {
    let RemoteRegion { key, len } = l.remote();
    let err = l
        .post_write(&Write {
            key,
            offset: len - 6,
            bytes: &[9u8; 10],
            imm: None,
        })
        .unwrap_err();
    assert!(
        matches!(err, VerbsError::OutOfBounds { len: 10, region_len, .. } if region_len == len),
        "{err}"
    );
    let err = l
        .post_write(&Write {
            key: key ^ 1,
            offset: 0,
            bytes: b"zz",
            imm: None,
        })
        .unwrap_err();
    assert!(matches!(err, VerbsError::WrongKey { .. }), "{err}");
    assert!(
        read(f, 0, len as usize).iter().all(|&b| b == 0),
        "refused writes must not land"
    );
}

use decree_verbs::RemoteRegion;

/// The follower's side of the log layout: records (decree-pmem's format, whose checksum and
/// position are the validity marker) land by one-sided writes; the follower polls the next
/// position until a valid record appears, never parsing a stream. A torn record never validates.
pub fn records_land_and_the_follower_polls_their_validity(
    f: &mut dyn FollowerLink,
    l: &mut dyn LeaderLink,
) {
    use decree_engine::types::Ballot;
    use decree_pmem::record::{decode, encode_into, encoded_size_bytes, Decoded, Header, Kind};
    const LOG_ID: u64 = 0x10C;
    let key = l.remote().key;
    let header = |lsn: u64, slot: u64, len: usize| Header {
        kind: Kind::Entry,
        lsn,
        slot,
        ballot: Ballot {
            round: 2,
            leader: 1,
        },
        payload_len: len as u32,
        durable_lsn: 0,
        epoch: 1,
    };
    // Zeroed memory is not a record.
    let mut probe = vec![0u8; 256];
    f.read(0, &mut probe).unwrap();
    assert!(
        !matches!(decode(LOG_ID, 0, &probe), Decoded::Valid(..)),
        "zeroed memory must not validate"
    );
    // A torn record (first half landed) is never valid.
    let mut torn = Vec::new();
    encode_into(&mut torn, LOG_ID, &header(0, 0, 100), &[7u8; 100]);
    write_outcome(
        l,
        &Write {
            key,
            offset: 0,
            bytes: &torn[..torn.len() / 2],
            imm: None,
        },
    )
    .unwrap();
    let mut got = vec![0u8; torn.len()];
    f.read(0, &mut got).unwrap();
    assert!(
        !matches!(decode(LOG_ID, 0, &got), Decoded::Valid(..)),
        "a torn record must not validate"
    );
    // Twenty records, pipelined, each at its lsn; the follower polls them in order.
    let mut lsn = 0u64;
    let mut expected = Vec::new();
    for slot in 0..20u64 {
        let payload: Vec<u8> = (0..(slot as usize * 13 % 200 + 1))
            .map(|i| (i as u64 + slot) as u8)
            .collect();
        let mut rec = Vec::new();
        encode_into(
            &mut rec,
            LOG_ID,
            &header(lsn, slot, payload.len()),
            &payload,
        );
        l.post_write(&Write {
            key,
            offset: lsn,
            bytes: &rec,
            imm: None,
        })
        .unwrap();
        expected.push((lsn, slot, payload));
        lsn += rec.len() as u64;
        assert_eq!(
            rec.len(),
            encoded_size_bytes(expected.last().unwrap().2.len())
        );
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut cursor = 0u64;
    let mut next = 0usize;
    let mut ev = Vec::new();
    while next < expected.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "follower saw only {next} of {} records",
            expected.len()
        );
        ev.clear();
        l.poll(&mut ev).unwrap(); // drives completions (and the sim's clock)
        let mut bytes = vec![0u8; 512];
        f.read(cursor, &mut bytes).unwrap();
        if let Decoded::Valid(h, payload) = decode(LOG_ID, cursor, &bytes) {
            let (at, slot, want) = &expected[next];
            assert_eq!((cursor, h.slot, payload), (*at, *slot, want.as_slice()));
            cursor += h.encoded_size_bytes() as u64;
            next += 1;
        }
    }
}

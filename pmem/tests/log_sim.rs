//! The log's contract on the simulated medium: append, group commit, read, supersede, truncate,
//! discard with ring reuse, and crash recovery.

mod common;

use common::{ballot, payload};
use decree_engine::core::io::DurableWrite;
use decree_engine::types::{Entry, Value};
use decree_pmem::sim::SimMedium;
use decree_pmem::superblock::DATA_OFFSET_BYTES;
use decree_pmem::{Error, Log};

fn sim_log(ring_bytes: u64) -> Log<SimMedium> {
    Log::create(SimMedium::new(DATA_OFFSET_BYTES + ring_bytes)).unwrap()
}

fn crash(log: Log<SimMedium>, tear_seed: Option<u64>) -> Log<SimMedium> {
    Log::open(log.into_medium().crash(tear_seed)).unwrap()
}

#[test]
fn group_commit_persists_many_appends_with_one_persist() {
    let mut log = sim_log(1 << 16);
    let before = log.medium().persist_count();
    for slot in 0..100 {
        log.append_entry(slot, ballot(1), &payload(slot, 1, 64)).unwrap();
    }
    assert_eq!(log.durable_lsn(), 0, "nothing is durable before sync");
    let durable = log.sync().unwrap();
    assert_eq!(durable, log.tail_lsn());
    assert_eq!(log.medium().persist_count() - before, 1);
    let log = crash(log, None);
    for slot in 0..100 {
        assert_eq!(log.read(slot).unwrap().unwrap().payload, payload(slot, 1, 64));
    }
}

#[test]
fn unsynced_appends_are_readable_but_lost_on_crash() {
    let mut log = sim_log(1 << 16);
    log.append_entry(0, ballot(1), b"durable").unwrap();
    log.sync().unwrap();
    log.append_entry(1, ballot(1), b"volatile").unwrap();
    assert_eq!(log.read(1).unwrap().unwrap().payload, b"volatile");
    let log = crash(log, None);
    assert_eq!(log.read(0).unwrap().unwrap().payload, b"durable");
    assert_eq!(log.read(1).unwrap(), None);
}

#[test]
fn reaccept_supersedes_without_forgetting_later_slots() {
    let mut log = sim_log(1 << 16);
    for slot in 0..5 {
        log.append_entry(slot, ballot(1), &payload(slot, 1, 10)).unwrap();
    }
    log.append_entry(2, ballot(2), &payload(2, 2, 10)).unwrap();
    log.sync().unwrap();
    let log = crash(log, None);
    let got = log.read(2).unwrap().unwrap();
    assert_eq!((got.ballot, got.payload), (ballot(2), payload(2, 2, 10)));
    assert_eq!(log.slots().map(|(s, _)| s).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
}

#[test]
fn truncate_suffix_survives_recovery() {
    let mut log = sim_log(1 << 16);
    for slot in 0..6 {
        log.append_entry(slot, ballot(1), b"x").unwrap();
    }
    log.truncate_suffix(3).unwrap();
    log.append_entry(4, ballot(2), b"y").unwrap();
    log.sync().unwrap();
    let log = crash(log, None);
    assert_eq!(log.slots().map(|(s, _)| s).collect::<Vec<_>>(), vec![0, 1, 2, 4]);
    assert_eq!(log.read(4).unwrap().unwrap().payload, b"y");
}

#[test]
fn hard_state_survives_many_laps_of_discard() {
    // A ring of 4 KiB holds about forty 64-byte entries; write thousands through it.
    let mut log = sim_log(4096);
    log.append_promise(ballot(7)).unwrap();
    log.sync().unwrap();
    let mut next = 0u64;
    for lap in 0..200u64 {
        for _ in 0..5 {
            log.append_entry(next, ballot(7), &payload(next, 7, 64)).unwrap();
            next += 1;
        }
        log.append_commit(next - 2).unwrap();
        log.sync().unwrap();
        log.discard_prefix(next - 3).unwrap();
        if lap % 37 == 0 {
            log = crash(log, Some(lap));
        }
    }
    assert!(log.tail_lsn() > 20 * log.capacity_bytes(), "the ring wrapped many times");
    let log = crash(log, Some(1));
    assert_eq!(log.hard_state().promise, ballot(7));
    assert_eq!(log.hard_state().commit, next - 2);
    assert_eq!(log.base_slot(), next - 3);
    assert_eq!(log.slots().map(|(s, _)| s).collect::<Vec<_>>(), vec![next - 3, next - 2, next - 1]);
    for slot in next - 3..next {
        assert_eq!(log.read(slot).unwrap().unwrap().payload, payload(slot, 7, 64));
    }
}

#[test]
fn discard_keeps_an_old_but_live_slot() {
    let mut log = sim_log(4096);
    log.append_entry(100, ballot(1), b"old-but-live").unwrap();
    for slot in 0..20 {
        log.append_entry(slot, ballot(1), &[0; 64]).unwrap();
    }
    log.sync().unwrap();
    log.discard_prefix(20).unwrap();
    let log = crash(log, None);
    assert_eq!(log.read(100).unwrap().unwrap().payload, b"old-but-live");
    assert_eq!(log.slots().count(), 1);
}

#[test]
fn full_ring_refuses_then_discard_frees_space() {
    let mut log = sim_log(2048);
    let mut slot = 0;
    let err = loop {
        match log.append_entry(slot, ballot(1), &[1; 100]) {
            Ok(_) => slot += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::Full { .. }), "{err}");
    assert!(log.failure().is_none(), "a full ring is not a device failure");
    log.sync().unwrap();
    log.discard_prefix(slot).unwrap();
    log.append_entry(slot, ballot(1), &[2; 100]).unwrap();
    log.sync().unwrap();
    assert!(matches!(log.append_entry(0, ballot(1), b"x"), Err(Error::Invalid { .. })), "slot below the base");
}

#[test]
fn stages_the_cores_durable_writes() {
    let mut log = sim_log(1 << 16);
    let mut encode = |v: &Value, out: &mut Vec<u8>| out.extend_from_slice(format!("{v:?}").as_bytes());
    let entries = vec![Entry { slot: 3, ballot: ballot(4), value: Value::Noop }];
    let e1 = log.stage(&DurableWrite::Promise(ballot(4)), &mut encode).unwrap();
    let e2 = log.stage(&DurableWrite::Entries(entries.into()), &mut encode).unwrap();
    let e3 = log.stage(&DurableWrite::Commit(3), &mut encode).unwrap();
    assert!(e1 < e2 && e2 < e3);
    let mut tickets = decree_pmem::Tickets::default();
    tickets.staged(1, e1);
    tickets.staged(2, e2);
    tickets.staged(3, e3);
    assert_eq!(tickets.completed(log.durable_lsn()), None);
    assert_eq!(tickets.completed(log.sync().unwrap()), Some(3));
    let log = crash(log, None);
    assert_eq!(log.hard_state().promise, ballot(4));
    assert_eq!(log.hard_state().commit, 3);
    assert_eq!(log.read(3).unwrap().unwrap().payload, b"Noop");
}

#[test]
fn corrupted_acknowledged_record_is_an_error_naming_the_offset() {
    let mut log = sim_log(1 << 16);
    log.append_entry(0, ballot(1), b"first").unwrap();
    let first_end = log.sync().unwrap();
    log.append_entry(1, ballot(1), b"second").unwrap();
    log.sync().unwrap();
    let mut medium = log.into_medium();
    medium.flip_bit(DATA_OFFSET_BYTES + 50, 2); // inside record 0's payload
    match Log::open(medium) {
        Err(Error::Corrupt { offset, lsn, .. }) => {
            assert_eq!((offset, lsn), (DATA_OFFSET_BYTES, 0));
            assert!(first_end > 0);
        }
        other => panic!("expected corruption error, got {:?}", other.map(|l| l.tail_lsn())),
    }
}

#[test]
fn reformatting_a_used_medium_hides_the_old_records() {
    let mut log = sim_log(1 << 16);
    log.append_entry(0, ballot(1), b"old").unwrap();
    log.sync().unwrap();
    let log = Log::create(log.into_medium()).unwrap();
    let log = crash(log, None);
    assert_eq!(log.slots().count(), 0, "records of an earlier format must not come back");
}

#[test]
fn recovers_a_ring_larger_than_the_read_window() {
    // 12 MiB ring, 3 read windows; odd record sizes so records straddle window edges; wraps twice.
    let ring_bytes = 3 * decree_pmem::window::WINDOW_SIZE_BYTES as u64;
    let mut log = sim_log(ring_bytes);
    let mut slot = 0u64;
    while log.tail_lsn() < 2 * ring_bytes + ring_bytes / 2 {
        log.append_entry(slot, ballot(1), &payload(slot, 1, 1000 + (slot as usize * 37) % 9000)).unwrap();
        slot += 1;
        if slot % 100 == 0 {
            log.sync().unwrap();
            log.discard_prefix(slot.saturating_sub(600)).unwrap();
        }
    }
    log.sync().unwrap();
    let live: Vec<u64> = log.slots().map(|(s, _)| s).collect();
    let log = crash(log, None);
    assert_eq!(log.slots().map(|(s, _)| s).collect::<Vec<_>>(), live);
    assert!(live.len() > 500);
    for s in live {
        assert_eq!(log.read(s).unwrap().unwrap().payload, payload(s, 1, 1000 + (s as usize * 37) % 9000));
    }
}

#[test]
fn a_batch_that_does_not_fit_is_staged_not_at_all() {
    let mut log = sim_log(4096);
    let mut encode = |_: &Value, out: &mut Vec<u8>| out.extend_from_slice(&[9; 500]);
    let batch = |first: u64, n: u64| DurableWrite::Entries((first..first + n).map(|slot| Entry { slot, ballot: ballot(1), value: Value::Noop }).collect());
    log.stage(&batch(0, 4), &mut encode).unwrap();
    let tail = log.tail_lsn();
    assert!(matches!(log.stage(&batch(4, 8), &mut encode), Err(Error::Full { .. })));
    assert_eq!(log.tail_lsn(), tail, "nothing of the refused batch was staged");
    assert_eq!(log.slots().count(), 4);
}

#[test]
fn recovered_writes_rebuild_the_cores_state() {
    let mut log = sim_log(1 << 16);
    let mut encode = |v: &Value, out: &mut Vec<u8>| out.push(v.request_count() as u8);
    log.stage(&DurableWrite::Promise(ballot(5)), &mut encode).unwrap();
    let entries: Vec<Entry> = (0..3).map(|slot| Entry { slot, ballot: ballot(5), value: Value::Noop }).collect();
    log.stage(&DurableWrite::Entries(entries.clone().into()), &mut encode).unwrap();
    log.stage(&DurableWrite::Commit(2), &mut encode).unwrap();
    log.sync().unwrap();
    let log = crash(log, None);
    let writes = log.recovered_writes(&mut |_, bytes| (bytes == [0]).then_some(Value::Noop)).unwrap();
    assert_eq!(writes, vec![DurableWrite::Promise(ballot(5)), DurableWrite::Entries(entries.into()), DurableWrite::Commit(2)]);
    assert!(matches!(log.recovered_writes(&mut |_, _| None), Err(Error::Corrupt { .. })), "undecodable payload is corruption");
}

/// A discard re-appends the promise and the commit after its marker. The ring's reserve covers
/// one discard; a second one before the head can move (an old live entry pins it at the ring's
/// start) may not fit, and then it must change nothing, not stage its marker and fail on the
/// promise (found by `model_props` on a 4,024-byte ring).
#[test]
fn a_discard_that_does_not_fit_changes_nothing() {
    let mut log = sim_log(4024);
    log.append_entry(15, ballot(1), &payload(15, 1, 81)).unwrap();
    log.append_promise(ballot(1)).unwrap();
    log.append_commit(1).unwrap();
    while log.append_entry(0, ballot(1), &payload(0, 1, 200)).is_ok() {}
    log.sync().unwrap();
    let mut refused = 0;
    let mut discarded = 0;
    for below in 1..20 {
        let before = (log.base_slot(), log.hard_state(), log.free_bytes());
        match log.discard_prefix(below) {
            Ok(()) => discarded = below,
            Err(Error::Full { .. }) => {
                refused += 1;
                let after = (log.base_slot(), log.hard_state(), log.free_bytes());
                assert_eq!(after, before, "a discard refused for room stages nothing");
            }
            Err(e) => panic!("discard below {below}: {e}"),
        }
    }
    assert!(refused > 0, "the pinned head must run the ring out of room");
    let log = crash(log, None);
    assert_eq!(log.base_slot(), discarded, "the last discard that succeeded is the one recovered");
    assert_eq!(log.read(15).unwrap().unwrap().payload, payload(15, 1, 81));
}

//! Property tests: recovery returns exactly the longest valid prefix under arbitrary truncation,
//! bit flips and crashes with torn writes; it reports damage to acknowledged records as an error.

mod common;

use common::{ballot, payload};
use decree_pmem::record::{encoded_size_bytes, HEADER_SIZE_BYTES};
use decree_pmem::faulty::{FaultPlan, FaultyMedium};
use decree_pmem::sim::SimMedium;
use decree_pmem::superblock::DATA_OFFSET_BYTES;
use decree_pmem::{Error, Log, Medium};
use proptest::prelude::*;
use std::collections::BTreeMap;

const RING_BYTES: u64 = 1 << 16;

/// What the writer knows about one appended record.
#[derive(Clone, Debug)]
struct Written {
    slot: u64,
    start_lsn: u64,
    payload_len: usize,
    /// The log's durable position when the record was encoded.
    durable_at_write: u64,
}

/// Appends one entry per payload length (slot = index), syncing after the batches given.
fn build(lens: &[usize], sync_every: usize) -> (SimMedium, Vec<Written>) {
    let mut log = Log::create(SimMedium::new(DATA_OFFSET_BYTES + RING_BYTES)).unwrap();
    let mut written = Vec::new();
    for (slot, &len) in lens.iter().enumerate() {
        let slot = slot as u64;
        let durable_at_write = log.durable_lsn();
        let end = log.append_entry(slot, ballot(1), &payload(slot, 1, len)).unwrap();
        let start_lsn = end - encoded_size_bytes(len) as u64;
        written.push(Written { slot, start_lsn, payload_len: len, durable_at_write });
        if (slot as usize + 1) % sync_every == 0 {
            log.sync().unwrap();
        }
    }
    log.sync().unwrap();
    (log.into_medium(), written)
}

/// The slots a correct recovery returns when record `bad` is the first damaged one (None: no
/// damage), or None when it must report corruption.
fn expected(written: &[Written], bad: Option<usize>) -> Option<Vec<u64>> {
    let Some(bad) = bad else { return Some(written.iter().map(|w| w.slot).collect()) };
    let bad_lsn = written[bad].start_lsn;
    if written[bad + 1..].iter().any(|w| w.durable_at_write > bad_lsn) {
        return None;
    }
    Some(written[..bad].iter().map(|w| w.slot).collect())
}

fn check(medium: SimMedium, written: &[Written], bad: Option<usize>) -> Result<(), TestCaseError> {
    let by_slot: BTreeMap<u64, &Written> = written.iter().map(|w| (w.slot, w)).collect();
    match (Log::open(medium), expected(written, bad)) {
        (Ok(log), Some(slots)) => {
            let got: Vec<u64> = log.slots().map(|(s, _)| s).collect();
            prop_assert_eq!(&got, &slots, "recovered slots differ (bad record {:?})", bad);
            for slot in slots {
                let got = log.read(slot).unwrap().unwrap();
                prop_assert_eq!(got.payload, payload(slot, 1, by_slot[&slot].payload_len));
            }
        }
        (Err(Error::Corrupt { offset, .. }), None) => {
            let bad_lsn = written[bad.unwrap()].start_lsn;
            prop_assert_eq!(offset, DATA_OFFSET_BYTES + bad_lsn);
        }
        (got, want) => {
            let got = got.map(|l| l.slots().map(|(s, _)| s).collect::<Vec<_>>());
            return Err(TestCaseError::fail(format!("recovery gave {got:?}, expected {want:?} (bad record {bad:?})")));
        }
    }
    Ok(())
}

/// Index of the record whose checksummed bytes contain ring offset `at`, if any.
fn record_covering(written: &[Written], at: u64) -> Option<usize> {
    written.iter().position(|w| at >= w.start_lsn && at < w.start_lsn + (HEADER_SIZE_BYTES + w.payload_len) as u64)
}

proptest! {
    // PROPTEST_CASES (the soak sets thousands) overrides the quick default.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(96)
    ))]

    #[test]
    fn truncation_returns_the_records_wholly_before_the_cut(
        lens in proptest::collection::vec(0usize..300, 1..40), sync_every in 1usize..8, cut_frac in 0.0f64..1.0,
    ) {
        let (mut medium, written) = build(&lens, sync_every);
        let end = written.last().map(|w| w.start_lsn + encoded_size_bytes(w.payload_len) as u64).unwrap();
        let cut = (end as f64 * cut_frac) as u64;
        // A torn tail: everything from `cut` on never reached the media.
        let mut before = vec![0u8; RING_BYTES as usize];
        medium.read_at(DATA_OFFSET_BYTES, &mut before).unwrap();
        let zeros = vec![0u8; (RING_BYTES - cut) as usize];
        medium.write_at(DATA_OFFSET_BYTES + cut, &zeros).unwrap();
        medium.persist().unwrap();
        // A record is cut when zeroing changed one of its checksummed bytes (header + payload;
        // padding is outside the checksum, and bytes that were already zero do not change).
        let changed = |w: &Written| {
            let end = w.start_lsn + (HEADER_SIZE_BYTES + w.payload_len) as u64;
            (cut.max(w.start_lsn)..end).any(|at| before[at as usize] != 0)
        };
        let first_cut = written.iter().position(changed);
        let keep: Vec<Written> = written[..first_cut.unwrap_or(written.len())].to_vec();
        check(medium, &keep, None)?;
    }

    #[test]
    fn a_bit_flip_cuts_an_unacknowledged_tail_or_is_reported(
        lens in proptest::collection::vec(0usize..300, 1..40), sync_every in 1usize..8,
        at_frac in 0.0f64..1.0, bit in 0u8..8,
    ) {
        let (mut medium, written) = build(&lens, sync_every);
        let end = written.last().map(|w| w.start_lsn + encoded_size_bytes(w.payload_len) as u64).unwrap();
        let at = (end as f64 * at_frac) as u64;
        medium.flip_bit(DATA_OFFSET_BYTES + at, bit);
        // Flips in padding are outside the checksum and change nothing.
        check(medium, &written, record_covering(&written, at))?;
    }

    #[test]
    fn crash_with_a_torn_write_keeps_every_synced_record(
        lens in proptest::collection::vec(0usize..300, 1..40), synced in 0usize..40, tear_seed in any::<u64>(),
    ) {
        let sim = SimMedium::new(DATA_OFFSET_BYTES + RING_BYTES);
        let mut log = Log::create(FaultyMedium::new(sim, FaultPlan::default())).unwrap();
        let synced = synced.min(lens.len());
        for (slot, &len) in lens.iter().enumerate() {
            log.append_entry(slot as u64, ballot(1), &payload(slot as u64, 1, len)).unwrap();
            if slot + 1 == synced {
                log.sync().unwrap();
            }
        }
        // The rest reaches the medium, then power fails during the persist: the sim keeps what
        // was persisted plus a random subset of the 8-byte words of the unpersisted write.
        log.medium_mut().set_plan(FaultPlan { fail_persist_from: Some(0), errno: libc::EIO, ..FaultPlan::default() });
        prop_assert_eq!(log.sync().is_err(), synced < lens.len());
        let recovered = Log::open(log.into_medium().into_inner().crash(Some(tear_seed))).unwrap();
        let slots: Vec<u64> = recovered.slots().map(|(s, _)| s).collect();
        prop_assert!(slots.len() >= synced, "lost synced records: {} < {}", slots.len(), synced);
        prop_assert_eq!(&slots, &(0..slots.len() as u64).collect::<Vec<_>>());
        for slot in slots {
            prop_assert_eq!(recovered.read(slot).unwrap().unwrap().payload, payload(slot, 1, lens[slot as usize]));
        }
    }

    #[test]
    fn garbage_anywhere_never_panics_recovery_or_reads(
        lens in proptest::collection::vec(0usize..300, 1..30),
        smears in proptest::collection::vec((0u64..RING_BYTES + DATA_OFFSET_BYTES, proptest::collection::vec(any::<u8>(), 1..200)), 1..6),
    ) {
        let (mut medium, _) = build(&lens, 3);
        for (at, bytes) in smears {
            let at = at.min(medium.size_bytes() - bytes.len() as u64);
            medium.write_at(at, &bytes).unwrap();
        }
        medium.persist().unwrap();
        // Any outcome but a panic is acceptable; reads of what recovery listed must not panic.
        if let Ok(log) = Log::open(medium) {
            for (slot, _) in log.slots().collect::<Vec<_>>() {
                let _ = log.read(slot);
            }
        }
    }
}

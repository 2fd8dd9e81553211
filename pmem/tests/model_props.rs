//! Model-based property test: random sequences of appends, promises, commits, truncations,
//! discards, syncs and crashes (with torn, unpersisted writes) on the simulated medium, checked
//! against an independent model. After every crash the recovered log must equal the model after
//! some prefix of the staged operations that includes every operation a sync made durable.

mod common;

use common::{ballot, payload};
use decree_pmem::faulty::{FaultPlan, FaultyMedium};
use decree_pmem::sim::SimMedium;
use decree_pmem::superblock::DATA_OFFSET_BYTES;
use decree_pmem::{Error, Log};
use proptest::prelude::*;
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
enum Op {
    Entry { slot: u64, round: u64, len: usize },
    Promise(u64),
    Commit(u64),
    Truncate(u64),
    Discard(u64),
    Sync,
    /// Power loss; with `during_persist`, the staged bytes reach the medium but the persist never
    /// completes, so the sim keeps a torn subset of them.
    Crash { tear_seed: u64, during_persist: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..40, 1u64..5, 0usize..300).prop_map(|(slot, round, len)| Op::Entry { slot, round, len }),
        1 => (1u64..9).prop_map(Op::Promise),
        1 => (0u64..40).prop_map(Op::Commit),
        1 => (0u64..40).prop_map(Op::Truncate),
        1 => (0u64..40).prop_map(Op::Discard),
        3 => Just(Op::Sync),
        1 => (any::<u64>(), any::<bool>()).prop_map(|(tear_seed, during_persist)| Op::Crash { tear_seed, during_persist }),
    ]
}

/// The independent model of what a log holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Model {
    entries: BTreeMap<u64, (u64, usize)>,
    promise: u64,
    commit: u64,
    base: u64,
}

impl Model {
    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Entry { slot, round, len } => drop(self.entries.insert(slot, (round, len))),
            Op::Promise(round) => self.promise = self.promise.max(round),
            Op::Commit(slot) => self.commit = self.commit.max(slot),
            Op::Truncate(slot) => drop(self.entries.split_off(&slot)),
            Op::Discard(slot) if slot > self.base => {
                self.base = slot;
                self.entries = self.entries.split_off(&slot);
            }
            _ => {}
        }
    }

    fn of(history: &[Op]) -> Model {
        let mut m = Model::default();
        history.iter().for_each(|op| m.apply(op));
        m
    }

    fn observe(log: &Log<FaultyMedium<SimMedium>>) -> Model {
        let mut entries = BTreeMap::new();
        for (slot, b) in log.slots() {
            let got = log.read(slot).unwrap().unwrap();
            // Record the length only when the bytes are exactly what was written at that round.
            let len = got.payload.len();
            assert_eq!(got.payload, payload(slot, b.round, len), "slot {slot}: payload damaged");
            entries.insert(slot, (b.round, len));
        }
        Model { entries, promise: log.hard_state().promise.round, commit: log.hard_state().commit, base: log.base_slot() }
    }
}

fn fresh(medium: SimMedium) -> FaultyMedium<SimMedium> {
    FaultyMedium::new(medium, FaultPlan::default())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128)
    ))]

    #[test]
    fn recovery_equals_the_model_after_a_durable_prefix(
        ops in proptest::collection::vec(op(), 1..80), ring_bytes in prop_oneof![Just(8192u64), 4000u64..8192],
    ) {
        // A small ring (4-8 KiB) so discards, wraps and Full all happen; most sizes end the ring
        // inside a 4 KiB block, where a group ending at the lap's end has no free space after it.
        let mut log = Log::create(fresh(SimMedium::new(DATA_OFFSET_BYTES + ring_bytes))).unwrap();
        let mut history: Vec<Op> = Vec::new();
        let mut durable = 0usize;
        for op in &ops {
            let result = match op {
                Op::Entry { slot, round, len } => log.append_entry(*slot, ballot(*round), &payload(*slot, *round, *len)).map(|_| ()),
                Op::Promise(round) => log.append_promise(ballot(*round)).map(|_| ()),
                Op::Commit(slot) => log.append_commit(*slot).map(|_| ()),
                Op::Truncate(slot) => log.truncate_suffix(*slot).map(|_| ()),
                Op::Discard(slot) => log.discard_prefix(*slot),
                Op::Sync => log.sync().map(|_| ()),
                Op::Crash { tear_seed, during_persist } => {
                    if *during_persist {
                        log.medium_mut().set_plan(FaultPlan { fail_persist_from: Some(0), errno: libc::EIO, ..FaultPlan::default() });
                        let _ = log.sync();
                    }
                    let medium = log.into_medium().into_inner().crash(Some(*tear_seed));
                    log = Log::open(fresh(medium)).unwrap();
                    let seen = Model::observe(&log);
                    let k = (durable..=history.len()).find(|&k| Model::of(&history[..k]) == seen);
                    prop_assert!(k.is_some(), "recovered {seen:?} matches no prefix from {durable} of {history:?}");
                    history.truncate(k.unwrap());
                    durable = history.len();
                    continue;
                }
            };
            match result {
                Ok(()) => {
                    history.push(op.clone());
                    if matches!(op, Op::Sync | Op::Discard(_)) {
                        durable = history.len();
                    }
                }
                Err(Error::Full { .. } | Error::Invalid { .. }) => {}
                Err(e) => return Err(TestCaseError::fail(format!("unexpected error {e}"))),
            }
        }
        prop_assert_eq!(Model::observe(&log), Model::of(&history));
    }
}

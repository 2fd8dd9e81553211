//! The simulator is deterministic: a seed replays exactly, which is what makes a failing seed
//! debuggable. And a run really exercises faults.

use decree_engine::sim::{self, SimOptions};

#[test]
fn the_same_seed_replays_the_same_run() {
    for seed in [3, 17, 123_456] {
        let first = sim::run(seed, &SimOptions::default()).expect("seed passes");
        let second = sim::run(seed, &SimOptions::default()).expect("seed passes");
        assert_eq!(format!("{first:?}"), format!("{second:?}"), "seed {seed} diverged between runs");
    }
}

#[test]
fn runs_inject_faults_and_still_complete_checked_operations() {
    let reports: Vec<_> = (0..50).map(|seed| sim::run(seed, &SimOptions::default()).expect("seed passes")).collect();
    assert!(reports.iter().map(|r| r.crashes).sum::<u64>() > 0, "some runs crash replicas");
    assert!(reports.iter().map(|r| r.partitions).sum::<u64>() > 0, "some runs partition the network");
    assert!(reports.iter().map(|r| r.dropped).sum::<u64>() > 0, "some runs drop messages");
    assert!(reports.iter().all(|r| r.operations > 0), "every run completes client operations");
    assert!(reports.iter().any(|r| r.elections_won > 1), "some runs change leaders");
}

//! Seeds that once found a bug, replayed on every test run so the bug stays fixed.

use decree_engine::sim::{self, SimOptions};

/// (seed, what it found).
const SEEDS: &[(u64, &str)] = &[
    (319, "catch-up stalled: a follower's old horizon did not move the leader's next slot forward"),
    (2964, "removed leader stepped down; new voters never learned they were voters"),
    (22952, "restarted follower's volatile horizon stayed below what the leader had sent"),
    (21263, "leader counted a follower horizon past its own proposals (past a reconfig cut)"),
    (42817, "a restarted replica took a leadership transfer before its candidacy veto was set"),
    (188842, "a candidate installed a checkpoint that removed it, then led on stale promises"),
    (183645, "same as 188842"),
];

#[test]
fn seeds_that_once_failed_still_pass() {
    for (seed, found) in SEEDS {
        if let Err(violation) = sim::run(*seed, &SimOptions::default()) {
            panic!("seed {seed} ({found}) fails again: {violation}");
        }
    }
}

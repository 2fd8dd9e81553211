//! Mutation check: each deliberately broken protocol variant must be caught by the simulator
//! within a bounded number of seeds, both with the core's contracts on and with them off (the
//! latter measures the simulator's own safety and linearizability checks alone).
#![cfg(feature = "mutations")]

use decree_engine::core::Mutation;
use decree_engine::sim::{self, SimOptions, Violation};

/// Seeds tried per mutation before it counts as surviving (override: MUTATION_MAX_SEEDS).
fn max_seeds() -> u64 {
    std::env::var("MUTATION_MAX_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3_000)
}

/// Runs seeds from 0 until one fails; returns (seeds run, the violation).
fn seeds_to_catch(mutation: Mutation, contracts_off: bool) -> Option<(u64, Violation)> {
    std::panic::set_hook(Box::new(|_| {}));
    let options = SimOptions { mutation, contracts_off, ..SimOptions::default() };
    let found = (0..max_seeds()).find_map(|seed| sim::run(seed, &options).err().map(|v| (seed + 1, v)));
    let _ = std::panic::take_hook();
    found
}

fn assert_caught(mutation: Mutation) {
    for contracts_off in [false, true] {
        let label = if contracts_off { "simulator checks only" } else { "contracts + simulator" };
        match seeds_to_catch(mutation, contracts_off) {
            Some((seeds, violation)) => {
                println!("mutation {mutation:?} ({label}): caught after {seeds} seed(s) by {violation}");
            }
            None => panic!("mutation {mutation:?} ({label}) survived {} seeds", max_seeds()),
        }
    }
}

#[test]
fn unmutated_protocol_passes_the_same_seeds() {
    let options = SimOptions::default();
    for seed in 0..200 {
        if let Err(violation) = sim::run(seed, &options) {
            panic!("seed {seed} failed without any mutation: {violation}");
        }
    }
}

#[test]
fn skipping_phase1_repropose_is_caught() {
    assert_caught(Mutation::SkipRepropose);
}

#[test]
fn accepting_a_lower_ballot_is_caught() {
    assert_caught(Mutation::AcceptLowerBallot);
}

#[test]
fn acknowledging_before_persisting_is_caught() {
    assert_caught(Mutation::AckBeforePersist);
}

#[test]
fn committing_without_a_quorum_is_caught() {
    assert_caught(Mutation::CommitWithoutQuorum);
}

#[test]
fn switching_configuration_before_the_change_is_chosen_is_caught() {
    assert_caught(Mutation::EarlyReconfig);
}

#[test]
fn leading_without_the_checkpointed_prefix_is_caught() {
    assert_caught(Mutation::IgnoreCheckpointGap);
}

#[test]
fn reading_without_confirming_leadership_is_caught() {
    assert_caught(Mutation::ReadWithoutConfirmation);
}

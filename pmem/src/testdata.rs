//! Deterministic payloads for the crash and guest tests: a verifier recomputes the value written
//! for (slot, round) instead of keeping a copy, so it can check content after a kill.

/// The value written for `slot` at `round`, 0..600 bytes long.
pub fn value(slot: u64, round: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(slot.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ round.rotate_left(17));
    let len = rng.usize(0..600);
    (0..len).map(|_| rng.u8(..)).collect()
}

//! The replicated request path allocates nothing per request or per batch, in steady state: three
//! protocol cores, every message framed and decoded by the replica codec, every put applied by each
//! replica's KV store (the in-process workload the callgrind mode counts). The workload runs at N and
//! at 2N operations; the allocations of the second N (start-up, election and warm-up cancel out)
//! must be almost none: only the batch arenas' and decode arenas' new chunks and the log's growth,
//! each amortized over thousands of operations.

#[path = "../../tools/tests/support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::counted;
use decree_bench::inproc::{self, InprocSpec};

const OPS: u64 = 20_000;
/// One per 500 operations: amortized chunk and log growth only (measured with DHAT: 5 allocations
/// for 6,400 operations; it was 34,803 when each batch and stored value had buffers of its own).
const MOST_ALLOCATIONS_PER_OP: f64 = 0.002;

fn allocations(ops: u64) -> u64 {
    let spec = InprocSpec {
        ops,
        clients: 64,
        payload_bytes: 64,
        max_batch_requests: 1024,
    };
    let (allocations, _) = counted(|| {
        inproc::run(spec);
    });
    allocations
}

#[test]
fn committing_more_operations_allocates_almost_nothing_more() {
    let (once, twice) = (allocations(OPS), allocations(2 * OPS));
    let per_op = twice.saturating_sub(once) as f64 / OPS as f64;
    assert!(
        per_op < MOST_ALLOCATIONS_PER_OP,
        "{per_op:.3} allocations per committed op ({once} for {OPS} ops, {twice} for {})",
        2 * OPS
    );
}

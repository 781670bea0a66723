//! Found by the shim case's adversary (issue 17; seed 50, operation 34): a peer's first
//! record of a stream this agent knew only from its seal was stored in two steps (the
//! change saying where the copy starts, then the record), so a crash between them left a
//! copy that starts somewhere but holds nothing: a state neither before nor after the
//! envelope. Both are one engine batch now. The case must pass with the same budget.

use pstream_crashtest::shim_case::{generate_shim, run_shim_ops, ShimBudget};

#[test]
fn a_mirror_streams_first_record_and_its_start_are_atomic() {
    let seed = 50;
    let ops = generate_shim(seed, 40);
    let budget = ShimBudget {
        fence_stride: 2,
        exhaustive_max: 8,
        samples: 2,
        images_max: 300,
        recovery_crash_every: 16,
    };
    let run = run_shim_ops(seed, &ops, &budget).expect("the case runs");
    assert_eq!(run.violation, None);
}

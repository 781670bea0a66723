//! Found by the first long campaign (case seed 1065, shrunk to nine operations): a shim
//! `append_batch` that spanned a segment boundary of its engine stream was made durable in
//! two steps, so a crash between them kept a prefix of the batch, which breaks rule 2 of the
//! crash model (an unacknowledged operation is wholly present or wholly absent). Batches are
//! atomic now (they never span segments; recovery drops an incomplete one whole), and the
//! oracle is strict for every operation: this trace must pass.

use pstream_crashtest::shim_case::{run_shim_ops, ShimBudget, ShimOp, Target};

fn at(caller: u8, owner: u8, bundle: u8) -> Target {
    Target {
        caller,
        owner,
        bundle,
    }
}

fn trace() -> Vec<ShimOp> {
    vec![
        ShimOp::AddUser { user: 1 },
        ShimOp::AddUser { user: 2 },
        ShimOp::RegisterClient { user: 0 },
        ShimOp::CreateBundle { at: at(0, 0, 0) },
        ShimOp::CreateBundle { at: at(0, 0, 1) },
        ShimOp::CreateBundle { at: at(1, 1, 1) },
        ShimOp::CreateStream {
            at: at(1, 1, 1),
            policy: None,
        },
        ShimOp::Append {
            at: at(1, 1, 1),
            stream: 0,
            len_bytes: 103,
            tag: 0x100,
        },
        ShimOp::AppendBatch {
            at: at(1, 1, 1),
            stream: 0,
            count: 2,
            tag: 0x300,
        },
    ]
}

#[test]
fn a_batch_at_a_segment_boundary_is_all_or_nothing() {
    let seed = 1065;
    let run = run_shim_ops(seed, &trace(), &ShimBudget::default()).expect("runs");
    assert_eq!(run.violation, None, "a batch survived in part");
    assert!(run.tally.images > 0, "no crash image was checked");
}

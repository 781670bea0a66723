//! Found by the first long campaign (case seed 1065, shrunk to nine operations): a shim
//! `append_batch` that spans a segment boundary of its engine stream is made durable in two
//! steps, so a crash between them keeps a prefix of the batch. That is the engine's batch
//! semantics today (each record atomic, see `oracle::Model::strict_batches`), and it breaks
//! rule 2 of the crash model read literally (an unacknowledged operation is wholly present
//! or wholly absent). This test pins both readings: it fails under `strict_batches` and
//! passes without. If batches become atomic, the strict run stops failing: then make
//! strict the default (`Budgets`, `ShimBudget`, `EngineBudget`) and flip this test.

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
fn a_batch_spanning_segments_can_leave_a_prefix() {
    let seed = 1065;
    let strict = ShimBudget {
        strict_batches: true,
        ..ShimBudget::default()
    };
    let run = run_shim_ops(seed, &trace(), &strict).expect("runs");
    let violation = run
        .violation
        .expect("a prefix of the batch survives some crash image");
    assert_eq!(violation.op_index, Some(8), "{violation}");
    assert!(violation.crash_point.is_some(), "{violation}");

    let lenient = run_shim_ops(seed, &trace(), &ShimBudget::default()).expect("runs");
    assert_eq!(lenient.violation, None, "only the batch prefix differs");
}

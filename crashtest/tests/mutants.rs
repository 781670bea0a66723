//! The harness catches a broken backend and shrinks the failing trace: a persistent-memory
//! backend that silently drops one flush in seven loses acknowledged data under some crash
//! image, and the violation names the crash point and a short reproducing trace.

use std::time::Duration;

use pstream_crashtest::engine_case::{
    generate_random, run_engine_ops, run_engine_ops_on, shrink_engine_ops_on, EngineBudget,
    EngineOp, EngineSetup,
};
use pstream_crashtest::mutants::DroppingFlushes;

#[test]
fn dropped_flushes_are_caught_and_shrunk() {
    let setup = EngineSetup::default();
    let budget = EngineBudget {
        exhaustive_max: 256,
        samples: 16,
        recovery_crash_every: 0,
        images_max: 0,
    };
    let seed = 41;
    // Batches only: a single append checks on return that nothing is left unpersisted
    // (like pmemcheck), a batch does not, so here the crash images must catch it.
    let ops: Vec<EngineOp> = generate_random(seed, 60, 4)
        .into_iter()
        .map(|op| match op {
            EngineOp::Append { stream, payload } => EngineOp::Batch {
                records: vec![(stream, payload)],
            },
            other => other,
        })
        .collect();
    let clean = run_engine_ops(seed, &ops, &setup, &budget);
    assert_eq!(clean.violation, None, "the real backend passes");
    let mutant = |sim| DroppingFlushes::new(sim, 7);
    let run = run_engine_ops_on(seed, &ops, &setup, &budget, mutant);
    let violation = run.violation.expect("a dropped flush must be caught");
    println!("caught: {violation}");
    let op_index = violation.op_index.expect("names the operation");
    assert!(
        violation.crash_point.is_some(),
        "caught by a crash image: {violation}"
    );
    let shrunk = shrink_engine_ops_on(seed, &ops, &setup, &budget, Duration::from_secs(60), mutant);
    println!("shrunk to {} of {} ops:", shrunk.len(), ops.len());
    for op in &shrunk {
        println!("  {op}");
    }
    assert!(!shrunk.is_empty() && shrunk.len() <= op_index + 1);
    let again = run_engine_ops_on(seed, &shrunk, &setup, &budget, mutant);
    assert!(again.violation.is_some(), "the shrunk trace reproduces it");
}

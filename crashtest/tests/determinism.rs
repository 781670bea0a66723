//! The same seed gives the same operations, the same crash images and the same verdicts:
//! every deterministic kind of case, run twice, gives the same trace hash and counters.
//! (One test in its own binary, so no other test's threads hold epochs meanwhile.)

use pstream_crashtest::{run_case, Budgets, CaseKind};

#[test]
fn same_seed_same_trace_hash() {
    let budgets = Budgets::small();
    let mut checked = 0;
    for seed in 300..310u64 {
        let kind = CaseKind::of_seed(seed);
        if !kind.is_deterministic() {
            continue;
        }
        let first = run_case(seed, &budgets, false).expect("first run");
        let second = run_case(seed, &budgets, false).expect("second run");
        assert_eq!(first.violation, None, "seed {seed}");
        assert_eq!(
            first.trace_hash, second.trace_hash,
            "seed {seed} ({kind}): trace hashes differ"
        );
        assert_eq!(first.tally, second.tally, "seed {seed} ({kind})");
        assert!(
            first.tally.crash_images_checked() > 0,
            "seed {seed} ({kind}) checked nothing"
        );
        checked += 1;
    }
    assert_eq!(checked, 8);
    // Different seeds give different traces.
    let a = run_case(300, &budgets, false).expect("run");
    let b = run_case(306, &budgets, false).expect("run");
    assert_eq!(a.kind, b.kind);
    assert_ne!(a.trace_hash, b.trace_hash);
}

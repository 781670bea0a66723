//! The CI budget: the harness checks at least 10,000 crash images with no violation, on a
//! fixed seed set covering every kind of case, in at most about two minutes on a 2-core
//! machine (debug build: the workspace dev profile is opt-level 1, dependencies 3).

use std::time::Instant;

use pstream_crashtest::{run_case, Budgets, CaseKind, Tally};

#[test]
fn fixed_seeds_check_ten_thousand_images_without_violation() {
    let started = Instant::now();
    let budgets = Budgets::default();
    let mut total = Tally::default();
    let mut kinds = std::collections::BTreeSet::new();
    for seed in 100..110u64 {
        let case_started = Instant::now();
        let case = run_case(seed, &budgets, true).expect("case runs");
        println!(
            "seed {seed} {:<18} {:>6} images {:>5} fences {:>4} exhaustive {:>5} nested \
             {:>4} ssd {:>4} io faults {:>6.1} s",
            case.kind.as_str(),
            case.tally.images,
            case.tally.fences_checked,
            case.tally.exhaustive_fences,
            case.tally.recovery_crash_images,
            case.tally.cold_images,
            case.tally.io_faults_injected,
            case_started.elapsed().as_secs_f64()
        );
        if let Some(text) = case.describe_violation() {
            panic!("{text}");
        }
        kinds.insert(case.kind);
        total += case.tally;
    }
    println!(
        "total: {} crash images checked ({total:?}) in {:.1} s",
        total.crash_images_checked(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(kinds.len(), CaseKind::ALL.len(), "every kind of case ran");
    assert!(
        total.crash_images_checked() >= 10_000,
        "only {} crash images checked",
        total.crash_images_checked()
    );
    assert!(total.migration_crash_points > 0 && total.io_faults_injected > 0);
    assert!(total.recovery_crash_images > 0);
}

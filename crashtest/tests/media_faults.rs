//! A CI-sized media-fault campaign (docs/TESTING.md, "Media faults at rest"): every
//! workload kind, faults in pool images and cold files. What must hold today: no formatted
//! pool is ever taken for blank, nothing panics, no deleted stream comes back, and damage is
//! detected. (Silent losses are reported by `pstream crashtest --media-faults`; the ones
//! left are damage to the last write of an open segment, issue 12's residual.)

use pstream_crashtest::media_case::{run_media_campaign, MediaBudget, MediaWorkload};

#[test]
fn media_faults_never_reformat_never_panic_and_are_detected() {
    let budget = MediaBudget {
        fault_sets_per_case: 60,
        ..MediaBudget::default()
    };
    let report = run_media_campaign(100, Some(9), None, &budget, &mut |_| {}).unwrap();
    let tally = report.tally;
    assert_eq!(tally.cases, 9);
    assert_eq!(tally.fault_sets, 9 * 60);
    assert!(tally.media_faults_injected >= tally.fault_sets);
    assert_eq!(tally.reformats, 0, "{:#?}", report.violation_reports);
    assert_eq!(tally.panics, 0, "{:#?}", report.violation_reports);
    assert_eq!(
        tally.resurrected_streams, 0,
        "{:#?}",
        report.violation_reports
    );
    assert!(tally.faults_detected > tally.fault_sets / 4, "{tally:?}");
    assert!(tally.fault_sets_harmless > 0, "{tally:?}");
    assert!(tally.records_untouched_readable > 0, "{tally:?}");
    // Seeds 100..109 cover every workload kind.
    let kinds: Vec<MediaWorkload> = (100..109).map(MediaWorkload::of_seed).collect();
    for kind in [
        MediaWorkload::Engine,
        MediaWorkload::Agent,
        MediaWorkload::Tiered,
    ] {
        assert!(kinds.contains(&kind));
    }
}

#[test]
fn the_campaign_is_deterministic_per_seed() {
    let budget = MediaBudget {
        fault_sets_per_case: 20,
        ..MediaBudget::default()
    };
    let first = run_media_campaign(7, Some(3), None, &budget, &mut |_| {}).unwrap();
    let second = run_media_campaign(7, Some(3), None, &budget, &mut |_| {}).unwrap();
    assert_eq!(first.tally, second.tally);
    assert_eq!(first.violation_reports, second.violation_reports);
}

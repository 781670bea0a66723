//! Regression: a batch that crossed a segment boundary sealed the full segment with the same
//! fence that made the batch's earlier records durable, so a crash image could hold the seal
//! but not the records (found by `crash_exhaustive` seed 2, fence 45: "payload checksum
//! mismatch" reading a record of a sealed segment). The records must be fenced first.
//!
//! Batches no longer cross segment boundaries: one that does not fit the rest of its lane's
//! segment goes whole into the next, and the seal happens before any of its records is
//! written, when every record of the lane is already durable. The scenario below (batches
//! that reach a segment's end, every fence crash-checked, now with the strict all-or-nothing
//! oracle) is kept to guard that order.

use pstream_crashtest::kit as common;

use common::{Budget, CrashChecker, Pending};
use pmem_emul::SimPmem;
use pstream_engine::{Log, StreamId};

#[test]
fn batches_at_segment_boundaries_never_seal_unpersisted_records() {
    let budget = Budget {
        exhaustive_max: 4096,
        samples: 64,
        seed: 2,
        lane_count: 1,
        recovery_crash_every: 0,
    };
    let log = Log::create(
        SimPmem::new(256 * 1024),
        common::small_config(),
        common::options(1),
    )
    .unwrap();
    let checker = CrashChecker::install(log.pmem(), budget);
    let s = common::create_modelled(&log, &checker.model, b"r");
    // 3 x ~450 B records per batch: every few batches one straddles a 16 KiB boundary.
    for round in 0..30usize {
        let records: Vec<(StreamId, Vec<u8>)> = (0..3)
            .map(|i| (s, vec![(round * 3 + i) as u8 | 1; 400 + 50 * i]))
            .collect();
        checker.model.lock().pending = vec![Pending::Append {
            records: records.clone(),
        }];
        let batch: Vec<(StreamId, &[u8])> =
            records.iter().map(|(s, p)| (*s, p.as_slice())).collect();
        log.append_batch(&batch).unwrap();
        let mut model = checker.model.lock();
        model.pending.clear();
        let entry = model.streams.get_mut(&s).unwrap();
        entry.acked.extend(records.into_iter().map(|(_, p)| p));
    }
    checker.assert_clean();
    assert!(log.stats().segments_sealed >= 2, "no boundary was crossed");
}

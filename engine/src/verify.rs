//! `verify`: a read-only full checksum scan of a pool, reporting every problem it finds
//! (where recovery stops at the first).

use pmem_emul::Pmem;

use crate::error::EngineError;
use crate::format::segment::SegmentState;
use crate::recovery::{read_entry, read_slot};
use crate::scan;

/// What `verify` found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub stream_slots_checked: u64,
    pub segments_checked: u64,
    pub records_checked: u64,
    pub bytes_checked: u64,
    /// Segments by state name.
    pub segments_by_state: Vec<(&'static str, u64)>,
    pub problems: Vec<EngineError>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks every structure and every record checksum of the pool, without writing.
/// `Err` only when the superblock itself is unusable (no copy checks); a damaged copy
/// beside a good one is reported as a problem (open repairs it, verify writes nothing).
pub fn verify<P: Pmem>(pmem: &P) -> Result<VerifyReport, EngineError> {
    let probed = crate::probe::probe_layout(pmem)?;
    let copy_problems = crate::probe::copy_problems(&probed.copy_faults);
    let layout = probed.into_layout()?;
    let mut report = VerifyReport {
        problems: copy_problems,
        ..VerifyReport::default()
    };
    for slot in 0..layout.stream_slot_count as u32 {
        report.stream_slots_checked += 1;
        if let Err(problem) = read_slot(pmem, &layout, slot) {
            report.problems.push(problem);
        }
    }
    let mut by_state: std::collections::BTreeMap<&'static str, u64> = Default::default();
    let mut records = Vec::new();
    for segment in 0..layout.segment_count as u32 {
        let entry = match read_entry(pmem, &layout, segment) {
            Ok((entry, _)) => entry,
            Err(problem) => {
                report.problems.push(problem);
                continue;
            }
        };
        *by_state.entry(entry.state.as_str()).or_default() += 1;
        records.clear();
        let scanned = match entry.state {
            SegmentState::Open => scan::scan_open(pmem, &layout, segment, &entry, &mut records)
                .map(|tail| tail.tail_bytes),
            SegmentState::Sealed | SegmentState::Migrating => {
                scan::scan_sealed(pmem, &layout, segment, &entry, true, &mut records)
                    .map(|()| entry.sealed_len_bytes)
            }
            SegmentState::Free | SegmentState::Scrubbing | SegmentState::Cold => continue,
        };
        report.segments_checked += 1;
        match scanned {
            Ok(bytes) => {
                report.records_checked += records.len() as u64;
                report.bytes_checked += bytes;
            }
            Err(problem) => report.problems.push(problem),
        }
    }
    report.segments_by_state = by_state.into_iter().collect();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use pmem_emul::SimPmem;

    use crate::log::{Log, LogConfig, OpenOptions};

    /// Records that live only in an open segment are checked and counted like sealed ones.
    #[test]
    fn records_of_open_segments_are_checked() {
        let config = LogConfig {
            segment_size_bytes: 16 * 1024,
            stream_slot_count: 4,
        };
        let log = Log::create(
            SimPmem::new(256 * 1024),
            config,
            OpenOptions { lane_count: 1 },
        )
        .unwrap();
        let s = log.create_stream(b"s").unwrap();
        for i in 0..10u8 {
            log.append(s, &[i; 200]).unwrap();
        }
        let report = super::verify(log.pmem()).unwrap();
        assert!(report.is_clean(), "{:?}", report.problems);
        assert_eq!(report.records_checked, 10);
        assert_eq!(report.segments_checked, 1);
        assert_eq!(report.segments_by_state, vec![("free", 14), ("open", 1)]);
    }
}

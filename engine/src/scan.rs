//! Reading one segment's records back from media, for recovery and for `verify`.
//!
//! The scanner reads a header only where the previous valid record ended, starting right
//! after the segment header, so payload bytes are never interpreted as a header.
//!
//! Decision table at the first position that does not hold a valid record:
//!
//! | segment | what is there                                   | verdict                   |
//! |---------|-------------------------------------------------|---------------------------|
//! | sealed  | anything before `sealed_len_bytes`              | corruption at that offset |
//! | sealed  | records do not end exactly at `sealed_len`      | corruption                |
//! | open    | non-zero byte past the longest possible write   | corruption (mid-log)      |
//! | open    | otherwise                                       | torn tail: dropped        |
//!
//! Then batches (see `format::record`): the valid records must end with a record that ends
//! its batch. In a sealed segment, a trailing `KIND_BATCH_MORE` record is corruption (a
//! lane seals only after its last batch is complete and durable). In an open segment, the
//! trailing `KIND_BATCH_MORE` records are an incomplete batch: the tail moves back to the
//! batch's first record and the batch is dropped with the torn tail.
//!
//! A lane starts a write only after the previous one is durable, and a write (one record or
//! one batch) takes at most `torn_extent_max_bytes`, so only the last write of an open
//! segment can be torn, and nothing it wrote reaches past `torn_extent_max_bytes` from its
//! start, which is at or before the first invalid position (or the incomplete batch).

use pmem_emul::Pmem;

use crate::error::{CorruptKind, EngineError, Location, Result};
use crate::format::record::{self, CrcKey, HeaderCheck, RecordHeader, RECORD_HEADER_BYTES};
use crate::format::segment::{SegmentEntry, SegmentHeader, SegmentState, SEGMENT_HEADER_BYTES};
use crate::layout::Layout;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScannedRecord {
    pub header: RecordHeader,
    pub offset_bytes: u32,
    pub void: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenTail {
    /// Where the next record goes.
    pub tail_bytes: u64,
    /// End of the bytes a torn write may have left behind (to scrub before reuse).
    pub torn_end_bytes: u64,
    /// Records (live and void) before the tail.
    pub record_count: u64,
    /// Records of an incomplete batch at the end of the valid records, dropped (the tail
    /// is at the first of them).
    pub incomplete_batch_records: u64,
}

fn record_location(segment: u32, offset_bytes: u64) -> Location {
    Location::Record {
        segment,
        offset_bytes,
    }
}

/// Checks the header of `segment` against its table entry.
pub fn check_segment_header<P: Pmem>(
    pmem: &P,
    layout: &Layout,
    segment: u32,
    entry: &SegmentEntry,
) -> Result<()> {
    let base = layout.segment_offset(segment);
    let header = SegmentHeader::decode(pmem.read(base, SEGMENT_HEADER_BYTES)).map_err(|e| {
        EngineError::corruption(
            Location::SegmentHeader { segment },
            e.corrupt_kind(),
            format!("{e:?}"),
        )
    })?;
    let expected = SegmentHeader {
        segment_index: segment,
        segment_gen: entry.segment_gen,
        pool_nonce: layout.pool_nonce,
        segment_size_bytes: layout.segment_size_bytes,
    };
    if header != expected {
        return Err(EngineError::corruption(
            Location::SegmentHeader { segment },
            CorruptKind::Mismatch {
                field: "segment header",
            },
            format!("header {header:?} does not match table entry (expected {expected:?})"),
        ));
    }
    Ok(())
}

/// Reads the header at `pos` and, if it is a record that fits below `end`, its verdict.
fn read_record<P: Pmem>(
    pmem: &P,
    base: usize,
    pos: u64,
    end: u64,
    key: CrcKey,
    verify_payload: bool,
) -> Option<(RecordHeader, bool)> {
    if pos + RECORD_HEADER_BYTES as u64 > end {
        return None;
    }
    let bytes = pmem.read(base + pos as usize, RECORD_HEADER_BYTES);
    let (header, void) = match record::decode_slice(bytes, key) {
        HeaderCheck::Live(header) => (header, false),
        HeaderCheck::Void(header) => (header, true),
        HeaderCheck::Zero | HeaderCheck::Invalid(_) => return None,
    };
    let size = record::record_size_bytes(header.payload_len as usize) as u64;
    if pos + size > end {
        return None;
    }
    if verify_payload && !void {
        let payload = pmem.read(
            base + pos as usize + RECORD_HEADER_BYTES,
            header.payload_len as usize,
        );
        if record::payload_crc(payload) != header.payload_crc {
            return None;
        }
    }
    Some((header, void))
}

/// Scans a sealed (or migrating) segment: every byte up to `sealed_len_bytes` must be valid
/// records. Payload checksums are verified when `verify_payload` (always for `verify`).
pub fn scan_sealed<P: Pmem>(
    pmem: &P,
    layout: &Layout,
    segment: u32,
    entry: &SegmentEntry,
    verify_payload: bool,
    out: &mut Vec<ScannedRecord>,
) -> Result<()> {
    debug_assert!(matches!(
        entry.state,
        SegmentState::Sealed | SegmentState::Migrating
    ));
    check_segment_header(pmem, layout, segment, entry)?;
    let end = entry.sealed_len_bytes;
    if end < SEGMENT_HEADER_BYTES as u64 || end > layout.segment_size_bytes {
        return Err(EngineError::corruption(
            Location::SegmentEntry { segment },
            CorruptKind::BadField {
                field: "sealed_len_bytes",
            },
            format!("sealed length {end} outside the segment"),
        ));
    }
    let base = layout.segment_offset(segment);
    let key = CrcKey::new(layout.pool_nonce, entry.segment_gen);
    let mut pos = SEGMENT_HEADER_BYTES as u64;
    let mut count = 0u64;
    while pos < end {
        let Some((header, void)) = read_record(pmem, base, pos, end, key, verify_payload) else {
            return Err(EngineError::corruption(
                record_location(segment, pos),
                CorruptKind::NotTorn,
                "invalid record inside a sealed segment",
            ));
        };
        out.push(ScannedRecord {
            header,
            offset_bytes: pos as u32,
            void,
        });
        pos += record::record_size_bytes(header.payload_len as usize) as u64;
        count += 1;
    }
    if let Some(last) = out.last().filter(|_| count > 0) {
        if last.header.batch_more {
            return Err(EngineError::corruption(
                record_location(segment, u64::from(last.offset_bytes)),
                CorruptKind::SealedInsideBatch,
                "sealed segment ends inside a batch (its last record says more follow)",
            ));
        }
    }
    if count != entry.record_count {
        return Err(EngineError::corruption(
            Location::SegmentEntry { segment },
            CorruptKind::Mismatch {
                field: "record_count",
            },
            format!(
                "sealed segment holds {count} records, its entry says {}",
                entry.record_count
            ),
        ));
    }
    Ok(())
}

/// Scans an open segment up to its first invalid position and classifies what follows.
pub fn scan_open<P: Pmem>(
    pmem: &P,
    layout: &Layout,
    segment: u32,
    entry: &SegmentEntry,
    out: &mut Vec<ScannedRecord>,
) -> Result<OpenTail> {
    debug_assert_eq!(entry.state, SegmentState::Open);
    check_segment_header(pmem, layout, segment, entry)?;
    let base = layout.segment_offset(segment);
    let end = layout.segment_size_bytes;
    let key = CrcKey::new(layout.pool_nonce, entry.segment_gen);
    let mut pos = SEGMENT_HEADER_BYTES as u64;
    let mut record_count = 0u64;
    let first_out = out.len();
    // Start of the batch the last valid record belongs to, and its records so far.
    let mut batch_start = pos;
    let mut batch_records = 0u64;
    while let Some((header, void)) = read_record(pmem, base, pos, end, key, true) {
        out.push(ScannedRecord {
            header,
            offset_bytes: pos as u32,
            void,
        });
        pos += record::record_size_bytes(header.payload_len as usize) as u64;
        record_count += 1;
        batch_records += 1;
        if !header.batch_more {
            batch_start = pos;
            batch_records = 0;
        }
    }
    // `pos` is the first position without a valid record: a torn tail or damage. A batch
    // fences once for many records, so a torn record may be followed by valid ones of the
    // same batch: only bytes past the torn extent prove damage.
    let torn_end = (pos + layout.torn_extent_max_bytes()).min(end);
    let beyond = pmem.read(base + torn_end as usize, (end - torn_end) as usize);
    if let Some(first_nonzero) = beyond.iter().position(|&b| b != 0) {
        return Err(EngineError::corruption(
            record_location(segment, pos),
            CorruptKind::NotTorn,
            format!(
                "invalid record followed by data at offset {} (past any torn write)",
                torn_end + first_nonzero as u64
            ),
        ));
    }
    // Trailing records that say more of their batch follow, with no record ending the
    // batch: the batch was not complete when the crash hit; it goes with the torn tail.
    debug_assert!(batch_start <= pos && batch_records <= record_count);
    out.truncate(out.len() - batch_records as usize);
    debug_assert!(out.len() >= first_out);
    Ok(OpenTail {
        tail_bytes: batch_start,
        torn_end_bytes: torn_end,
        record_count: record_count - batch_records,
        incomplete_batch_records: batch_records,
    })
}

#[cfg(test)]
mod tests {
    use pmem_emul::{Pmem, SimPmem};

    use super::*;
    use crate::log::{Log, LogConfig, OpenOptions};
    use crate::recovery::{read_entry, read_layout};
    use crate::StreamId;

    const SEGMENT_BYTES: u64 = 16 * 1024;

    fn config() -> LogConfig {
        LogConfig {
            segment_size_bytes: SEGMENT_BYTES,
            stream_slot_count: 4,
        }
    }

    fn one_lane() -> OpenOptions {
        OpenOptions { lane_count: 1 }
    }

    /// A pool with one lone record, then a batch of three records over two streams, all in
    /// segment `(segment, entry)`; returns the image, the streams and the batch's offsets.
    fn pool_with_batch() -> (Vec<u8>, [StreamId; 2], Vec<u64>) {
        let log = Log::create(SimPmem::new(256 * 1024), config(), one_lane()).unwrap();
        let a = log.create_stream(b"a").unwrap();
        let b = log.create_stream(b"b").unwrap();
        log.append(a, b"alone").unwrap();
        let seqs = log
            .append_batch(&[(a, b"one"), (b, &[2u8; 100]), (a, b"three")])
            .unwrap();
        assert_eq!(seqs, vec![1, 0, 2]);
        let offsets = [0u64, 64, 64 + 192]
            .iter()
            .map(|at| SEGMENT_HEADER_BYTES as u64 + 64 + at)
            .collect();
        (log.pmem().volatile_image(), [a, b], offsets)
    }

    fn scan_open_image(image: Vec<u8>) -> (SimPmem, Result<OpenTail>, Vec<ScannedRecord>) {
        let sim = SimPmem::from_image(image);
        let layout = read_layout(&sim).unwrap();
        let (entry, _) = read_entry(&sim, &layout, 0).unwrap();
        assert_eq!(entry.state, SegmentState::Open);
        let mut out = Vec::new();
        let tail = scan_open(&sim, &layout, 0, &entry, &mut out);
        (sim, tail, out)
    }

    #[test]
    fn a_complete_batch_is_kept() {
        let (image, _, offsets) = pool_with_batch();
        let (_, tail, out) = scan_open_image(image);
        let tail = tail.unwrap();
        assert_eq!(out.len(), 4);
        assert_eq!(
            out.iter().map(|r| r.header.batch_more).collect::<Vec<_>>(),
            vec![false, true, true, false]
        );
        assert_eq!(u64::from(out[3].offset_bytes), offsets[2]);
        assert_eq!(tail.record_count, 4);
        assert_eq!(tail.incomplete_batch_records, 0);
        assert_eq!(tail.tail_bytes, offsets[2] + 64);
    }

    #[test]
    fn an_incomplete_batch_at_the_tail_is_dropped_whole() {
        let (mut image, [a, b], offsets) = pool_with_batch();
        let layout = read_layout(&SimPmem::from_image(image.clone())).unwrap();
        // The batch's last record never made it: its header is zero (torn).
        let last = layout.segment_offset(0) + offsets[2] as usize;
        image[last..last + RECORD_HEADER_BYTES].fill(0);
        let (_, tail, out) = scan_open_image(image.clone());
        let tail = tail.unwrap();
        assert_eq!(out.len(), 1, "only the lone record stays: {out:?}");
        assert_eq!(
            tail.tail_bytes, offsets[0],
            "the tail moves to the batch's start"
        );
        assert_eq!(tail.record_count, 1);
        assert_eq!(tail.incomplete_batch_records, 2);
        assert!(tail.torn_end_bytes > offsets[2]);

        // Recovery drops it, zeroes its bytes, and the pool verifies clean.
        let (log, report) = Log::open(SimPmem::from_image(image), one_lane()).unwrap();
        assert_eq!(report.incomplete_batch_records_dropped, 2);
        assert_eq!(report.torn_tails_dropped, 1);
        assert_eq!(log.bounds(a).unwrap(), (0, 1));
        assert_eq!(log.bounds(b).unwrap(), (0, 0));
        let start = layout.segment_offset(0) + offsets[0] as usize;
        assert!(log.pmem().read(start, 256).iter().all(|&x| x == 0));
        assert!(crate::verify(log.pmem()).unwrap().is_clean());
        // The space is reused: the next batch goes where the dropped one was.
        assert_eq!(log.append_batch(&[(b, b"again")]).unwrap(), vec![0]);
        let pmem = log.close();
        let (log, _) = Log::open(pmem, one_lane()).unwrap();
        assert_eq!(log.read(b, 0).unwrap().payload(), b"again");
    }

    #[test]
    fn a_sealed_segment_ending_inside_a_batch_is_corruption_with_location() {
        let log = Log::create(SimPmem::new(256 * 1024), config(), one_lane()).unwrap();
        let s = log.create_stream(b"s").unwrap();
        // 4 records of 1.5 KiB per batch: the third batch does not fit segment 0's rest, so
        // segment 0 is sealed after two batches.
        let payload = vec![7u8; 1500];
        for _ in 0..3 {
            log.append_batch(&[(s, payload.as_slice()); 4]).unwrap();
        }
        let layout = log.layout;
        let (entry, _) = read_entry(log.pmem(), &layout, 0).unwrap();
        assert_eq!(entry.state, SegmentState::Sealed);
        assert_eq!(entry.record_count, 8);
        let mut out = Vec::new();
        scan_sealed(log.pmem(), &layout, 0, &entry, true, &mut out).unwrap();
        // Rewrite the last record's header as "more follows", with a valid crc.
        let last = *out.last().unwrap();
        let key = CrcKey::new(layout.pool_nonce, entry.segment_gen);
        let more = RecordHeader {
            batch_more: true,
            ..last.header
        };
        let mut image = log.pmem().volatile_image();
        let at = layout.segment_offset(0) + last.offset_bytes as usize;
        image[at..at + RECORD_HEADER_BYTES].copy_from_slice(&record::encode(&more, key));
        let sim = SimPmem::from_image(image);
        let expected = Location::Record {
            segment: 0,
            offset_bytes: u64::from(last.offset_bytes),
        };
        out.clear();
        match scan_sealed(&sim, &layout, 0, &entry, true, &mut out) {
            Err(EngineError::Corruption {
                location,
                kind,
                detail,
            }) => {
                assert_eq!(location, expected);
                assert_eq!(kind, CorruptKind::SealedInsideBatch);
                assert!(detail.contains("inside a batch"), "{detail}");
            }
            other => panic!("expected corruption, got {other:?}"),
        }
        let report = crate::verify(&sim).unwrap();
        assert!(
            matches!(
                report.problems.as_slice(),
                [EngineError::Corruption { location, .. }] if *location == expected
            ),
            "{:?}",
            report.problems
        );
        assert!(matches!(
            Log::open(sim, one_lane()),
            Err(EngineError::Corruption { location, .. }) if location == expected
        ));
    }
}

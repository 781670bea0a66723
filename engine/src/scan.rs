//! Reading one segment's records back from media, for recovery and for `verify`.
//!
//! The scanner reads a header only where the previous valid record ended, starting right
//! after the segment header, so payload bytes are never interpreted as a header.
//!
//! Decision table at the first position `pos` that does not hold a valid record. The write
//! in flight at a crash (the only one that may be torn) started at `batch_start`, the end of
//! the last complete batch before `pos`, and reaches at most `torn_extent_max_bytes` from
//! there. A record "checks at its own position" when its header crc, keyed with the
//! segment's generation and the header's own offset, and its payload crc hold.
//!
//! | row | segment | what is at and past `pos`                                  | verdict       |
//! |-----|---------|------------------------------------------------------------|---------------|
//! | S1  | sealed  | `pos` before `sealed_len_bytes`                            | `NotTorn`     |
//! | S2  | sealed  | records do not end exactly at `sealed_len`, or miscounted  | `Mismatch`    |
//! | O1  | open    | only zero bytes                                            | clean end     |
//! | O2  | open    | a non-zero byte at or past `batch_start + torn extent`     | `NotTorn`     |
//! | O3  | open    | the header at `pos` checks and ends its batch (the payload | `NotTorn`     |
//! |     |         | does not), and a non-zero byte lies past its end           |               |
//! | O4  | open    | a record past `pos` checks at its own position and ends    | `NotTorn`     |
//! |     |         | its batch, and a non-zero byte lies past its end           |               |
//! | O5  | open    | otherwise                                                  | torn tail     |
//!
//! O3 and O4: a record that ends its batch ends the write it belongs to, so bytes past it
//! were written by a later write, which a lane starts only after this one was fenced: the
//! invalid record was durable and has been damaged since. Each row has a unit test below
//! (`row_*`). `NotTorn` carries what is known of the loss: the first record that checks past
//! the damaged one (stream, seq, offset); the detail names the damaged record's stream and
//! seq if its header still checks.
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
use crate::format::record::{
    self, CrcKey, HeaderCheck, RecordHeader, RECORD_ALIGN_BYTES, RECORD_HEADER_BYTES,
};
use crate::format::segment::{SegmentEntry, SegmentHeader, SegmentState, SEGMENT_HEADER_BYTES};
use crate::layout::Layout;
use crate::StreamId;

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
    let (header, void) = match record::decode_slice(bytes, key.at(pos)) {
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

/// The header at `pos` if it checks (live or void) and its record fits below `end`, whatever
/// its payload holds.
fn header_at<P: Pmem>(
    pmem: &P,
    base: usize,
    pos: u64,
    end: u64,
    key: CrcKey,
) -> Option<RecordHeader> {
    if pos + RECORD_HEADER_BYTES as u64 > end {
        return None;
    }
    let bytes = pmem.read(base + pos as usize, RECORD_HEADER_BYTES);
    let header = match record::decode_slice(bytes, key.at(pos)) {
        HeaderCheck::Live(header) | HeaderCheck::Void(header) => header,
        HeaderCheck::Zero | HeaderCheck::Invalid(_) => return None,
    };
    let size = record::record_size_bytes(header.payload_len as usize) as u64;
    (pos + size <= end).then_some(header)
}

/// The first record past `pos` (at record alignment, below `limit`) that checks at its own
/// position, header and payload: its offset and header.
fn next_valid_record<P: Pmem>(
    pmem: &P,
    base: usize,
    pos: u64,
    limit: u64,
    end: u64,
    key: CrcKey,
) -> Option<(u64, RecordHeader)> {
    let mut at = pos + RECORD_ALIGN_BYTES as u64;
    while at < limit {
        if let Some((header, _void)) = read_record(pmem, base, at, end, key, true) {
            return Some((at, header));
        }
        at += RECORD_ALIGN_BYTES as u64;
    }
    None
}

/// The `NotTorn` error for the invalid record at `pos`, with what is known of the loss:
/// the first record `next` that checks past it (else `data_at`, the offset of bytes that
/// prove the damage), and in the detail the damaged record's stream and seq if its header
/// still checks.
#[allow(clippy::too_many_arguments)]
fn not_torn<P: Pmem>(
    pmem: &P,
    base: usize,
    segment: u32,
    pos: u64,
    end: u64,
    key: CrcKey,
    next: Option<(u64, RecordHeader)>,
    data_at: u64,
    why: &str,
) -> EngineError {
    let (next_valid, valid_again_at_bytes) = match next {
        Some((at, h)) => (Some((StreamId(h.stream_id), h.seq)), at),
        None => (None, data_at),
    };
    let damaged = match header_at(pmem, base, pos, end, key) {
        Some(h) => format!(
            "damaged record: stream {} seq {}",
            StreamId(h.stream_id),
            h.seq
        ),
        None => "damaged record: header unreadable".to_owned(),
    };
    EngineError::corruption(
        record_location(segment, pos),
        CorruptKind::NotTorn {
            next_valid,
            // Segment offsets fit u32 (`Loc` holds them so).
            valid_again_at_bytes: u32::try_from(valid_again_at_bytes).unwrap_or(u32::MAX),
        },
        format!("{why}; {damaged}"),
    )
}

/// Rows O1..O5 of the decision table (module docs) for the first invalid position `pos` of
/// an open segment, given `torn_end`: the end of the extent the write in flight could have
/// reached. `None`: a torn tail (or a clean end); `Some`: the damage.
fn open_tail_damage<P: Pmem>(
    pmem: &P,
    base: usize,
    segment: u32,
    pos: u64,
    end: u64,
    torn_end: u64,
    key: CrcKey,
) -> Option<EngineError> {
    // One pass from `pos`: where the last non-zero byte is (nothing past it to explain).
    let rest = pmem.read(base + pos as usize, (end - pos) as usize);
    let Some(last_nonzero) = crate::format::last_nonzero(rest) else {
        return None; // O1: nothing was written here
    };
    let written_end = pos + last_nonzero as u64 + 1;
    let first_valid_past = |limit| next_valid_record(pmem, base, pos, limit, end, key);
    // Every row's damage is the record at `pos`; the last written byte proves it.
    let damage = |next, why| {
        let data_at = written_end - 1;
        not_torn(pmem, base, segment, pos, end, key, next, data_at, why)
    };
    if written_end > torn_end {
        // O2: bytes no write in flight could have reached.
        return Some(damage(
            first_valid_past(end),
            "invalid record followed by data past any write in flight",
        ));
    }
    if let Some(header) = header_at(pmem, base, pos, end, key) {
        let record_end = pos + record::record_size_bytes(header.payload_len as usize) as u64;
        if !header.batch_more && written_end > record_end {
            // O3: the damaged record ended its write, and a later write followed it.
            return Some(damage(
                first_valid_past(end),
                "record with a damaged payload followed by a later write",
            ));
        }
    }
    // O4: a record that checks past `pos` and ends its batch, with bytes after it.
    let mut from = pos;
    while let Some((at, header)) = next_valid_record(pmem, base, from, written_end, end, key) {
        let record_end = at + record::record_size_bytes(header.payload_len as usize) as u64;
        if !header.batch_more && written_end > record_end {
            return Some(damage(
                Some((at, header)),
                "invalid record followed by a complete write and a later one",
            ));
        }
        // A record that checks is no header position inside: go on after it.
        from = record_end - RECORD_ALIGN_BYTES as u64;
    }
    None // O5: a torn tail
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
            let next = next_valid_record(pmem, base, pos, end, end, key);
            return Err(not_torn(
                pmem,
                base,
                segment,
                pos,
                end,
                key,
                next,
                end,
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
    // same batch: only what no write in flight could have left proves damage.
    let torn_end = (batch_start + layout.torn_extent_max_bytes()).min(end);
    if let Some(error) = open_tail_damage(pmem, base, segment, pos, end, torn_end, key) {
        return Err(error);
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
        let key = key.at(u64::from(last.offset_bytes));
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

    /// A pool of `segment_bytes` segments whose segment 0 is open with `count` single
    /// appends of `payload_len` bytes to one stream; returns the image, the stream and each
    /// record's segment offset.
    fn singles(
        segment_bytes: u64,
        count: u64,
        payload_len: usize,
    ) -> (Vec<u8>, StreamId, Vec<u64>) {
        let config = LogConfig {
            segment_size_bytes: segment_bytes,
            stream_slot_count: 4,
        };
        let log = Log::create(
            SimPmem::new(4 * segment_bytes as usize + 64 * 1024),
            config,
            one_lane(),
        )
        .unwrap();
        let s = log.create_stream(b"s").unwrap();
        let offsets = (0..count)
            .map(|i| {
                let seq = log.append(s, &vec![i as u8 + 1; payload_len]).unwrap();
                let (entry, _) = log.stream(s).unwrap().lookup(seq);
                let loc = entry.unwrap().loc;
                assert_eq!(loc.segment(), 0);
                u64::from(loc.offset_bytes())
            })
            .collect();
        (log.pmem().volatile_image(), s, offsets)
    }

    fn segment_base(image: &[u8]) -> usize {
        read_layout(&SimPmem::from_image(image.to_vec()))
            .unwrap()
            .segment_offset(0)
    }

    /// The location and `NotTorn` fields of a scan's error, and its detail (panics on
    /// anything else).
    fn not_torn_of(result: Result<OpenTail>) -> (u64, String, Option<(StreamId, u64)>, u64) {
        match result {
            Err(EngineError::Corruption {
                location:
                    Location::Record {
                        segment: 0,
                        offset_bytes,
                    },
                kind:
                    CorruptKind::NotTorn {
                        next_valid,
                        valid_again_at_bytes,
                    },
                detail,
            }) => (
                offset_bytes,
                detail,
                next_valid,
                u64::from(valid_again_at_bytes),
            ),
            other => panic!("expected NotTorn in segment 0, got {other:?}"),
        }
    }

    #[test]
    fn row_o1_zeros_after_the_last_record_are_a_clean_end() {
        let (image, _, offsets) = singles(SEGMENT_BYTES, 5, 100);
        let (_, tail, out) = scan_open_image(image);
        let tail = tail.unwrap();
        assert_eq!(out.len(), 5);
        assert_eq!(tail.tail_bytes, offsets[4] + 192);
        assert_eq!(tail.incomplete_batch_records, 0);
    }

    #[test]
    fn row_o2_bytes_past_the_reach_of_any_write_in_flight_are_corruption() {
        // Segments large enough that the torn extent (one largest record) ends inside them.
        let segment_bytes = 4 << 20;
        let (mut image, _, offsets) = singles(segment_bytes, 1, 100);
        let layout = read_layout(&SimPmem::from_image(image.clone())).unwrap();
        let tail = offsets[0] + 192;
        let stray = tail + layout.torn_extent_max_bytes() + 64;
        assert!(stray < segment_bytes);
        image[layout.segment_offset(0) + stray as usize] = 0x5a;
        let (_, result, _) = scan_open_image(image.clone());
        let (at, detail, next_valid, again) = not_torn_of(result);
        assert_eq!((at, next_valid, again), (tail, None, stray));
        assert!(detail.contains("header unreadable"), "{detail}");
        // One byte less far is within reach of the write in flight: a torn tail.
        let mut near = image;
        near[layout.segment_offset(0) + stray as usize] = 0;
        near[layout.segment_offset(0) + (stray - 128) as usize] = 0x5a;
        let (_, result, _) = scan_open_image(near);
        assert_eq!(result.unwrap().tail_bytes, tail);
    }

    #[test]
    fn row_o3_a_damaged_payload_followed_by_a_later_write_is_corruption() {
        let (mut image, s, offsets) = singles(SEGMENT_BYTES, 6, 100);
        let base = segment_base(&image);
        image[base + offsets[2] as usize + RECORD_HEADER_BYTES + 50] ^= 0x10;
        let (_, result, _) = scan_open_image(image);
        let (at, detail, next_valid, again) = not_torn_of(result);
        assert_eq!(at, offsets[2]);
        assert!(detail.contains(&format!("stream {s} seq 2")), "{detail}");
        assert_eq!(next_valid, Some((s, 3)));
        assert_eq!(again, offsets[3]);
    }

    #[test]
    fn row_o4_a_damaged_header_followed_by_complete_writes_is_corruption() {
        let (mut image, s, offsets) = singles(SEGMENT_BYTES, 6, 100);
        let base = segment_base(&image);
        // A flip in the seq field of record 3: its header no longer checks, so its length
        // is unknown; the records after it check at their own positions.
        image[base + offsets[3] as usize + 16] ^= 0x01;
        let (_, result, _) = scan_open_image(image);
        let (at, detail, next_valid, again) = not_torn_of(result);
        assert_eq!(at, offsets[3]);
        assert!(detail.contains("header unreadable"), "{detail}");
        assert_eq!((next_valid, again), (Some((s, 4)), offsets[4]));
    }

    #[test]
    fn row_o5_a_torn_last_append_is_dropped() {
        let (mut image, _, offsets) = singles(SEGMENT_BYTES, 4, 100);
        let base = segment_base(&image);
        // Its payload was not all persisted: the header checks, the payload does not.
        image[base + offsets[3] as usize + RECORD_HEADER_BYTES + 99] ^= 0xff;
        let (_, tail, out) = scan_open_image(image.clone());
        let tail = tail.unwrap();
        assert_eq!((out.len(), tail.tail_bytes), (3, offsets[3]));
        // Its header torn instead: the same.
        let mut torn_header = image;
        torn_header[base + offsets[3] as usize + RECORD_HEADER_BYTES + 99] ^= 0xff;
        torn_header[base + offsets[3] as usize..][..8].fill(0);
        let (_, tail, _) = scan_open_image(torn_header);
        assert_eq!(tail.unwrap().tail_bytes, offsets[3]);
    }

    #[test]
    fn row_o5_a_torn_batch_whose_later_records_persisted_is_dropped_whole() {
        // The batch's first record torn, the two after it durable: a crash state (one
        // fence for the batch), so a torn tail, not corruption (rows O3/O4 do not apply:
        // no write follows the record that ends the batch).
        let (mut image, [a, _], offsets) = pool_with_batch();
        let base = segment_base(&image);
        image[base + offsets[0] as usize..][..RECORD_HEADER_BYTES].fill(0);
        let (_, tail, out) = scan_open_image(image);
        let tail = tail.unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].header.stream_id, a.0);
        assert_eq!(tail.tail_bytes, offsets[0]);
    }

    #[test]
    fn row_s1_a_damaged_record_in_a_sealed_segment_is_corruption_with_what_follows() {
        let log = Log::create(SimPmem::new(256 * 1024), config(), one_lane()).unwrap();
        let s = log.create_stream(b"s").unwrap();
        let payload = vec![7u8; 1500];
        let mut offsets = Vec::new();
        while offsets.len() < 12 {
            let seq = log.append(s, &payload).unwrap();
            let (entry, _) = log.stream(s).unwrap().lookup(seq);
            offsets.push(u64::from(entry.unwrap().loc.offset_bytes()));
        }
        let layout = log.layout;
        let (entry, _) = read_entry(log.pmem(), &layout, 0).unwrap();
        assert_eq!(entry.state, SegmentState::Sealed);
        let mut image = log.pmem().volatile_image();
        image[layout.segment_offset(0) + offsets[1] as usize + 600] ^= 0x04;
        let sim = SimPmem::from_image(image);
        let mut out = Vec::new();
        let result = scan_sealed(&sim, &layout, 0, &entry, true, &mut out).map(|()| OpenTail {
            tail_bytes: 0,
            torn_end_bytes: 0,
            record_count: 0,
            incomplete_batch_records: 0,
        });
        let (at, detail, next_valid, again) = not_torn_of(result);
        assert_eq!(at, offsets[1]);
        assert!(detail.contains(&format!("stream {s} seq 1")), "{detail}");
        assert_eq!((next_valid, again), (Some((s, 2)), offsets[2]));
    }

    /// Issue 12's first failure: a flipped bit in a record in the middle of an open segment
    /// was taken for a torn tail, and recovery dropped that record and every later one of
    /// the segment without a word while `verify` called the pool clean.
    #[test]
    fn a_flip_in_the_middle_of_an_open_segment_is_reported_never_dropped() {
        let (image, s, offsets) = singles(SEGMENT_BYTES, 8, 100);
        let base = segment_base(&image);
        for at in [
            offsets[3] as usize + 2,                        // header crc
            offsets[3] as usize + 20,                       // header seq
            offsets[3] as usize + RECORD_HEADER_BYTES + 70, // payload
        ] {
            for bit in [0u8, 7] {
                let mut flipped = image.clone();
                flipped[base + at] ^= 1 << bit;
                let report = crate::verify(&SimPmem::from_image(flipped.clone())).unwrap();
                assert!(
                    matches!(
                        report.problems.as_slice(),
                        [EngineError::Corruption {
                            location: Location::Record { segment: 0, offset_bytes },
                            kind: CorruptKind::NotTorn { .. },
                            ..
                        }] if *offset_bytes == offsets[3]
                    ),
                    "byte {at} bit {bit}: {:?}",
                    report.problems
                );
                match Log::open(SimPmem::from_image(flipped.clone()), one_lane()) {
                    Err(error) => assert!(
                        matches!(error.corrupt_kind(), Some(CorruptKind::NotTorn { .. })),
                        "{error}"
                    ),
                    Ok((log, _)) => panic!(
                        "opened with stream bounds {:?} after a flip at byte {at}",
                        log.bounds(s)
                    ),
                }
            }
        }
    }
}

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

use crate::error::{EngineError, Location, Result};
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
        EngineError::corruption(Location::SegmentHeader { segment }, format!("{e:?}"))
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
                "sealed segment ends inside a batch (its last record says more follow)",
            ));
        }
    }
    if count != entry.record_count {
        return Err(EngineError::corruption(
            Location::SegmentEntry { segment },
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

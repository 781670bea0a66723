//! Append: lanes, single records and batches.

use std::sync::atomic::Ordering;

use pmem_emul::Pmem;

use super::lane::{bump, bump_signed, LaneGuard};
use super::Log;
use crate::cold::ColdTier;
use crate::error::{EngineError, Result};
use crate::format::record::{self, CrcKey, RecordHeader, RECORD_HEADER_BYTES};
use crate::stream::{BatchStreams, IndexEntry, Loc, Stream};
use crate::StreamId;

/// Payloads at least this long are copied with non-temporal stores (no flush needed).
pub const NT_COPY_MIN_BYTES: usize = 4096;

/// The segment a lane appends into.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenSegment {
    pub segment: u32,
    pub key: CrcKey,
    pub tail_bytes: u64,
    pub record_count: u64,
}

impl<P: Pmem, C: ColdTier> Log<P, C> {
    fn check_payload(&self, len_bytes: usize) -> Result<()> {
        if len_bytes > self.max_payload_bytes() {
            return Err(EngineError::PayloadTooLarge {
                len_bytes,
                max_bytes: self.max_payload_bytes(),
            });
        }
        Ok(())
    }

    /// Appends one record and returns its seq once it and every earlier record of the
    /// stream are durable.
    pub fn append(&self, id: StreamId, payload: &[u8]) -> Result<u64> {
        self.check_payload(payload.len())?;
        // The slot's read lock is held for the append instead of cloning the `Arc` (two
        // locked instructions fewer); only creating or deleting this very stream waits.
        let stream = self.stream_locked(id)?;
        let payload_crc = record::payload_crc(payload);
        let size_bytes = record::record_size_bytes(payload.len()) as u64;
        let seq = {
            let mut lane = self.lanes.acquire();
            let open = self.room_for(&mut lane, size_bytes)?;
            let loc = Loc::new(open.segment, open.tail_bytes as u32);
            let seq = stream.reserve(IndexEntry {
                loc,
                size_bytes: size_bytes as u32,
            })?;
            bump_signed(&lane.counters().unsettled_records, 1);
            bump_signed(&lane.counters().unsettled_bytes, size_bytes as i64);
            let header = RecordHeader {
                stream_id: id.0,
                seq,
                payload_len: payload.len() as u32,
                payload_crc,
                batch_more: false,
            };
            let offset = self.write_record(&open, &header, payload);
            self.pmem.fence();
            self.advance_lane(&mut lane, offset, size_bytes);
            bump(&lane.counters().appends, 1);
            bump(&lane.counters().fences, 1);
            seq
        };
        stream.publish(seq);
        Ok(seq)
    }

    /// Appends many records (of one or several streams) as one atomic batch and makes them
    /// durable with one fence. Returns the seq of each, in order.
    ///
    /// All or nothing, also across crashes: the records go consecutively into one segment
    /// (the lane seals its open segment first if the batch does not fit), every record but
    /// the last says that more of its batch follow, and recovery drops a batch whose last
    /// record is missing. No record of the batch becomes readable before all are durable.
    /// A batch takes at most [`Log::batch_capacity_bytes`] (see
    /// [`Log::batch_size_bytes`]); a larger one is refused with
    /// [`EngineError::BatchTooLarge`]. Nothing is written unless every record is acceptable.
    pub fn append_batch(&self, records: &[(StreamId, &[u8])]) -> Result<Vec<u64>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        for &(_, payload) in records {
            self.check_payload(payload.len())?;
        }
        let batch_bytes = self.batch_size_bytes(records.iter().map(|(_, payload)| payload.len()));
        let capacity_bytes = self.batch_capacity_bytes();
        if batch_bytes > capacity_bytes {
            return Err(EngineError::BatchTooLarge {
                record_count: records.len(),
                batch_bytes,
                capacity_bytes,
            });
        }
        let batch = BatchStreams::resolve(records.iter().map(|&(id, _)| id), |id| self.stream(id))?;
        let crcs: Vec<u32> = records
            .iter()
            .map(|(_, payload)| record::payload_crc(payload))
            .collect();
        let seqs = {
            let mut lane = self.lanes.acquire();
            let open = self.room_for(&mut lane, batch_bytes)?;
            let mut entries = Vec::with_capacity(records.len());
            let mut tail_bytes = open.tail_bytes;
            for (_, payload) in records {
                let size_bytes = record::record_size_bytes(payload.len()) as u64;
                entries.push(IndexEntry {
                    loc: Loc::new(open.segment, tail_bytes as u32),
                    size_bytes: size_bytes as u32,
                });
                tail_bytes += size_bytes;
            }
            assert!(
                tail_bytes <= self.layout.segment_size_bytes,
                "room_for made room for the whole batch"
            );
            let seqs = Stream::reserve_batch(&batch, &entries)?;
            bump_signed(&lane.counters().unsettled_records, records.len() as i64);
            bump_signed(&lane.counters().unsettled_bytes, batch_bytes as i64);
            let last = records.len() - 1;
            // From here to the fence no locked instruction: each would wait for the
            // write-backs already started, persisting the records one after the other.
            // Adjacent byte ranges to flush are flushed as one (one `msync` per run of
            // records in `Durability::Power`); a non-temporal payload ends a run.
            let mut unflushed: Option<(usize, usize)> = None;
            for (i, ((&(id, payload), &seq), &payload_crc)) in
                records.iter().zip(&seqs).zip(&crcs).enumerate()
            {
                let Some(current) = lane.current else {
                    unreachable!("room_for left the lane an open segment");
                };
                let header = RecordHeader {
                    stream_id: id.0,
                    seq,
                    payload_len: payload.len() as u32,
                    payload_crc,
                    batch_more: i != last,
                };
                let (offset, flush_len_bytes) =
                    self.write_record_unflushed(&current, &header, payload);
                debug_assert_eq!(
                    offset,
                    self.layout.segment_offset(open.segment)
                        + entries[i].loc.offset_bytes() as usize
                );
                let run_start = match unflushed {
                    Some((start, end)) if end == offset => start,
                    Some((start, end)) => {
                        self.pmem.flush(start, end - start);
                        offset
                    }
                    None => offset,
                };
                unflushed = Some((run_start, offset + flush_len_bytes));
                self.advance_lane(&mut lane, offset, u64::from(entries[i].size_bytes));
            }
            if let Some((start, end)) = unflushed {
                self.pmem.flush(start, end - start);
            }
            // IMPORTANT: one fence for the whole batch, and the batch fits the torn extent:
            // a crash leaves every record of it, or an incomplete batch recovery drops.
            self.pmem.fence();
            bump(&lane.counters().fences, 1);
            bump(&lane.counters().appends, 1);
            seqs
        };
        Stream::publish_batch(&batch, &seqs);
        Ok(seqs)
    }

    /// The most bytes one batch may take in a segment (see [`Log::batch_size_bytes`]).
    pub fn batch_capacity_bytes(&self) -> u64 {
        self.layout.batch_capacity_bytes()
    }

    /// Bytes a batch with payloads of these lengths takes in a segment: each record is a
    /// header plus its payload, padded to a cache line.
    pub fn batch_size_bytes(&self, payload_lens: impl IntoIterator<Item = usize>) -> u64 {
        payload_lens
            .into_iter()
            .map(|len| record::record_size_bytes(len) as u64)
            .sum()
    }

    /// Splits records with payloads of these lengths, in order, into consecutive ranges
    /// that each fit one batch, for callers that need no atomicity across the whole list
    /// (each range is then atomic on its own). A record too large for any batch gets a
    /// range of its own (appending it reports the error).
    pub fn batch_ranges(&self, payload_lens: &[usize]) -> Vec<std::ops::Range<usize>> {
        let capacity_bytes = self.batch_capacity_bytes();
        let mut ranges = Vec::new();
        let (mut start, mut bytes) = (0usize, 0u64);
        for (i, &len) in payload_lens.iter().enumerate() {
            let size_bytes = record::record_size_bytes(len) as u64;
            if i > start && bytes + size_bytes > capacity_bytes {
                ranges.push(start..i);
                (start, bytes) = (i, 0);
            }
            bytes += size_bytes;
        }
        if start < payload_lens.len() {
            ranges.push(start..payload_lens.len());
        }
        ranges
    }

    /// Writes header and payload at the lane's tail and starts their write-back (a payload
    /// copied with non-temporal stores needs none; its header line does). The caller
    /// fences. Returns the pool offset of the record.
    fn write_record(&self, open: &OpenSegment, header: &RecordHeader, payload: &[u8]) -> usize {
        let (offset, flush_len_bytes) = self.write_record_unflushed(open, header, payload);
        self.pmem.flush(offset, flush_len_bytes);
        offset
    }

    /// Writes header and payload at the lane's tail. Returns the pool offset of the record
    /// and how many bytes from it the caller must flush before the fence: the whole record
    /// (padding included: no extra line), or only the header when the payload went through
    /// non-temporal stores.
    fn write_record_unflushed(
        &self,
        open: &OpenSegment,
        header: &RecordHeader,
        payload: &[u8],
    ) -> (usize, usize) {
        let offset = self.layout.segment_offset(open.segment) + open.tail_bytes as usize;
        let header_bytes = record::encode(header, open.key.at(open.tail_bytes));
        self.pmem.write(offset, &header_bytes);
        if payload.len() >= NT_COPY_MIN_BYTES {
            self.pmem.write_nt(offset + RECORD_HEADER_BYTES, payload);
            (offset, RECORD_HEADER_BYTES)
        } else {
            self.pmem.write(offset + RECORD_HEADER_BYTES, payload);
            // To the padded end: the same cache lines, and the next record's range joins.
            (offset, record::record_size_bytes(payload.len()))
        }
    }

    fn advance_lane(&self, lane: &mut LaneGuard<'_>, offset: usize, size_bytes: u64) {
        let Some(open) = lane.current.as_mut() else {
            unreachable!("a lane writes only into its open segment");
        };
        debug_assert_eq!(
            offset,
            self.layout.segment_offset(open.segment) + open.tail_bytes as usize
        );
        open.tail_bytes += size_bytes;
        open.record_count += 1;
        debug_assert!(open.tail_bytes <= self.layout.segment_size_bytes);
        bump(&lane.counters().records, 1);
        bump(&lane.counters().bytes, size_bytes);
    }

    /// Adds what a lane wrote into `segment` to the segment's live counters.
    fn settle_live(&self, segment: u32, lane: &mut LaneGuard<'_>) {
        let meta = &self.segments[segment as usize];
        let counters = lane.counters();
        let records = counters.unsettled_records.load(Ordering::Relaxed);
        let bytes = counters.unsettled_bytes.load(Ordering::Relaxed);
        meta.live_records.fetch_add(records, Ordering::AcqRel);
        meta.live_bytes.fetch_add(bytes, Ordering::AcqRel);
        counters.unsettled_records.store(0, Ordering::Relaxed);
        counters.unsettled_bytes.store(0, Ordering::Relaxed);
    }

    /// The lane's open segment, with room for `size_bytes`; seals a full one and opens the
    /// next. Every record of the lane is durable here (each append and batch fences before
    /// it releases the lane), so the seal never covers an unfenced record, and a batch never
    /// spans two segments.
    fn room_for(&self, lane: &mut LaneGuard<'_>, size_bytes: u64) -> Result<OpenSegment> {
        debug_assert!(size_bytes <= self.layout.batch_capacity_bytes());
        if let Some(open) = lane.current {
            if open.tail_bytes + size_bytes <= self.layout.segment_size_bytes {
                return Ok(open);
            }
        }
        let fresh = self.take_segment(lane.lane_index, size_bytes)?;
        bump(&lane.counters().fences, 2); // segment header, then its table entry
        if let Some(full) = lane.current.replace(fresh) {
            self.settle_live(full.segment, lane);
            self.seal(full);
            bump(&lane.counters().fences, 1);
        }
        Ok(fresh)
    }
}

//! Where each area of a formatted pool starts, derived from the configuration or read back
//! (and bounds-checked) from the superblock.

use crate::error::{CorruptKind, EngineError, Location, Result};
use crate::format::record::{record_size_bytes, MAX_PAYLOAD_BYTES, RECORD_HEADER_BYTES};
use crate::format::segment::{SEGMENT_ENTRY_BYTES, SEGMENT_HEADER_BYTES};
use crate::format::stream_slot::STREAM_SLOT_BYTES;
use crate::format::superblock::{Superblock, SUPERBLOCK_REGION_BYTES};

pub const PAGE_BYTES: u64 = 4096;
/// Smallest segment: room for the header and a handful of records.
pub const SEGMENT_SIZE_MIN_BYTES: u64 = 16 * 1024;
pub const SEGMENT_SIZE_MAX_BYTES: u64 = 1 << 31;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub pool_nonce: u64,
    pub segment_size_bytes: u64,
    pub segment_count: u64,
    pub stream_slot_count: u64,
    pub stream_table_offset: u64,
    pub segment_table_offset: u64,
    pub segments_offset: u64,
    pub max_payload_bytes: u64,
}

impl Layout {
    /// Plans a pool of `pool_bytes` with the given segment size and stream slot count.
    pub fn plan(
        pool_bytes: u64,
        segment_size_bytes: u64,
        stream_slot_count: u64,
        pool_nonce: u64,
    ) -> Result<Layout> {
        if !(SEGMENT_SIZE_MIN_BYTES..=SEGMENT_SIZE_MAX_BYTES).contains(&segment_size_bytes)
            || segment_size_bytes % PAGE_BYTES != 0
        {
            return Err(EngineError::InvalidConfig(format!(
                "segment size {segment_size_bytes} must be a multiple of {PAGE_BYTES} between \
                 {SEGMENT_SIZE_MIN_BYTES} and {SEGMENT_SIZE_MAX_BYTES}"
            )));
        }
        if stream_slot_count == 0 || stream_slot_count > u64::from(u32::MAX) {
            return Err(EngineError::InvalidConfig(format!(
                "stream slot count {stream_slot_count} must be between 1 and {}",
                u32::MAX
            )));
        }
        let stream_table_offset = SUPERBLOCK_REGION_BYTES as u64;
        let stream_table_bytes =
            (stream_slot_count * STREAM_SLOT_BYTES as u64).next_multiple_of(PAGE_BYTES);
        let segment_table_offset = stream_table_offset + stream_table_bytes;
        // Segment table size depends on the segment count; size it for the most segments
        // that could fit, then count what really fits after it.
        let upper_count = pool_bytes / segment_size_bytes;
        let segment_table_bytes =
            (upper_count * SEGMENT_ENTRY_BYTES as u64).next_multiple_of(PAGE_BYTES);
        let segments_offset = segment_table_offset + segment_table_bytes;
        let segment_count = pool_bytes.saturating_sub(segments_offset) / segment_size_bytes;
        if segment_count < 2 {
            return Err(EngineError::PoolTooSmall {
                pool_bytes,
                needed_bytes: segments_offset + 2 * segment_size_bytes,
            });
        }
        let room = segment_size_bytes - (SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES) as u64;
        let max_payload_bytes = (MAX_PAYLOAD_BYTES as u64).min(room / 8 * 8);
        let layout = Layout {
            pool_nonce,
            segment_size_bytes,
            segment_count,
            stream_slot_count,
            stream_table_offset,
            segment_table_offset,
            segments_offset,
            max_payload_bytes,
        };
        layout.check(pool_bytes)?;
        Ok(layout)
    }

    /// Accepts a superblock read back from media only if every area fits the pool.
    pub fn from_superblock(superblock: &Superblock, pool_bytes: u64) -> Result<Layout> {
        let layout = Layout {
            pool_nonce: superblock.pool_nonce,
            segment_size_bytes: superblock.segment_size_bytes,
            segment_count: superblock.segment_count,
            stream_slot_count: superblock.stream_slot_count,
            stream_table_offset: superblock.stream_table_offset,
            segment_table_offset: superblock.segment_table_offset,
            segments_offset: superblock.segments_offset,
            max_payload_bytes: superblock.max_payload_bytes,
        };
        layout.check(pool_bytes)?;
        Ok(layout)
    }

    fn check(&self, pool_bytes: u64) -> Result<()> {
        let bad = |detail: String| {
            Err(EngineError::corruption(
                Location::Superblock,
                CorruptKind::BadField {
                    field: "superblock geometry",
                },
                detail,
            ))
        };
        let seg = self.segment_size_bytes;
        if !(SEGMENT_SIZE_MIN_BYTES..=SEGMENT_SIZE_MAX_BYTES).contains(&seg)
            || seg % PAGE_BYTES != 0
        {
            return bad(format!("implausible segment size {seg}"));
        }
        if self.stream_slot_count == 0 || self.stream_slot_count > u64::from(u32::MAX) {
            return bad(format!(
                "implausible stream slot count {}",
                self.stream_slot_count
            ));
        }
        if self.segment_count == 0 || self.segment_count > u64::from(u32::MAX) {
            return bad(format!("implausible segment count {}", self.segment_count));
        }
        let max_payload = record_size_bytes(self.max_payload_bytes as usize) as u64;
        if self.max_payload_bytes == 0
            || self.max_payload_bytes > MAX_PAYLOAD_BYTES as u64
            || max_payload + SEGMENT_HEADER_BYTES as u64 > seg
        {
            return bad(format!(
                "implausible max payload {}",
                self.max_payload_bytes
            ));
        }
        let stream_table_end = self
            .stream_slot_count
            .checked_mul(STREAM_SLOT_BYTES as u64)
            .and_then(|bytes| bytes.checked_add(self.stream_table_offset));
        let segment_table_end = self
            .segment_count
            .checked_mul(SEGMENT_ENTRY_BYTES as u64)
            .and_then(|bytes| bytes.checked_add(self.segment_table_offset));
        let segments_end = self
            .segment_count
            .checked_mul(seg)
            .and_then(|bytes| bytes.checked_add(self.segments_offset));
        let ordered = self.stream_table_offset >= SUPERBLOCK_REGION_BYTES as u64
            && matches!(stream_table_end, Some(end) if end <= self.segment_table_offset)
            && matches!(segment_table_end, Some(end) if end <= self.segments_offset)
            && matches!(segments_end, Some(end) if end <= pool_bytes)
            && self.segments_offset % PAGE_BYTES == 0;
        if !ordered {
            return bad(format!(
                "areas do not fit a pool of {pool_bytes} bytes: {self:?}"
            ));
        }
        Ok(())
    }

    pub fn superblock(&self) -> Superblock {
        Superblock {
            pool_nonce: self.pool_nonce,
            segment_size_bytes: self.segment_size_bytes,
            segment_count: self.segment_count,
            stream_slot_count: self.stream_slot_count,
            stream_table_offset: self.stream_table_offset,
            segment_table_offset: self.segment_table_offset,
            segments_offset: self.segments_offset,
            max_payload_bytes: self.max_payload_bytes,
            directory_root: 0,
            directory_generation: 0,
        }
    }

    pub fn slot_offset(&self, slot: u32) -> usize {
        debug_assert!(u64::from(slot) < self.stream_slot_count);
        (self.stream_table_offset + u64::from(slot) * STREAM_SLOT_BYTES as u64) as usize
    }

    pub fn entry_offset(&self, segment: u32) -> usize {
        debug_assert!(u64::from(segment) < self.segment_count);
        (self.segment_table_offset + u64::from(segment) * SEGMENT_ENTRY_BYTES as u64) as usize
    }

    pub fn segment_offset(&self, segment: u32) -> usize {
        debug_assert!(u64::from(segment) < self.segment_count);
        (self.segments_offset + u64::from(segment) * self.segment_size_bytes) as usize
    }

    /// The most bytes a single unfenced write can cover: a torn write never reaches further.
    pub fn torn_extent_max_bytes(&self) -> u64 {
        record_size_bytes(self.max_payload_bytes as usize) as u64
    }

    /// The most bytes one batch (all its records, headers and padding) may take. A batch is
    /// written with one fence into one segment, so it is bounded by the torn extent (which
    /// itself fits an empty segment): only the last write of a lane can be torn, and it never
    /// reaches further than this from its start.
    pub fn batch_capacity_bytes(&self) -> u64 {
        let capacity = self.torn_extent_max_bytes();
        debug_assert!(capacity + SEGMENT_HEADER_BYTES as u64 <= self.segment_size_bytes);
        capacity
    }
}

//! Statistics: the log's, the segments', the tier's.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use pmem_emul::Pmem;

use super::Log;
use crate::cold::ColdTier;
use crate::format::segment::SegmentState;

/// Statistics of a log; counters since open, gauges now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    pub streams: u64,
    pub live_records: u64,
    pub live_bytes: u64,
    pub segment_size_bytes: u64,
    pub segments_total: u64,
    pub segments_free: u64,
    pub segments_open: u64,
    pub segments_sealed: u64,
    pub appends: u64,
    pub records_appended: u64,
    pub bytes_appended: u64,
    pub fences: u64,
}

impl LogStats {
    /// Adds signed live counts (a lane's unsettled ones, a segment's).
    fn add_live(&mut self, records: &AtomicI64, bytes: &AtomicI64) {
        self.live_records = self
            .live_records
            .wrapping_add_signed(records.load(Ordering::Relaxed));
        self.live_bytes = self
            .live_bytes
            .wrapping_add_signed(bytes.load(Ordering::Relaxed));
    }
}

/// A segment as [`Log::segment_infos`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    pub index: u32,
    pub state: SegmentState,
    pub segment_gen: u64,
    pub sealed_len_bytes: u64,
    pub live_records: u64,
    pub live_bytes: u64,
    /// Milliseconds since its last append (seal) or hot read.
    pub idle_ms: u64,
    /// It holds nothing live and is waiting to be scrubbed.
    pub scrub_pending: bool,
}

/// Tiering counters since open, and the cold tier's size now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierStats {
    pub migrations: u64,
    pub migration_failures: u64,
    pub bytes_migrated: u64,
    pub bytes_dropped_dead: u64,
    pub cold_reads: u64,
    pub cold_segments: u64,
    pub cold_stored_bytes: u64,
    pub cold_live_bytes: u64,
}

/// Counters of work done off the append path.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub migrations: AtomicU64,
    pub migration_failures: AtomicU64,
    pub bytes_migrated: AtomicU64,
    pub bytes_dropped_dead: AtomicU64,
    pub cold_reads: AtomicU64,
}

impl<P: Pmem, C: ColdTier> Log<P, C> {
    /// Every segment as a migrator sees it.
    pub fn segment_infos(&self) -> Vec<SegmentInfo> {
        let now_ms = self.now_ms();
        self.segments
            .iter()
            .enumerate()
            .map(|(index, meta)| {
                let entry = meta.entry.lock();
                SegmentInfo {
                    index: index as u32,
                    state: entry.entry.state,
                    segment_gen: entry.entry.segment_gen,
                    sealed_len_bytes: entry.entry.sealed_len_bytes,
                    live_records: meta.live_records.load(Ordering::Relaxed).max(0) as u64,
                    live_bytes: meta.live_bytes.load(Ordering::Relaxed).max(0) as u64,
                    idle_ms: now_ms.saturating_sub(meta.last_access_ms.load(Ordering::Relaxed)),
                    scrub_pending: entry.released,
                }
            })
            .collect()
    }
    /// Work done off the append path since open.
    pub fn tier_stats(&self) -> TierStats {
        let table = self.cold_table.read();
        let live = table
            .iter()
            .filter(|slot| !slot.deleted.load(Ordering::Relaxed));
        let (mut cold_segments, mut cold_stored_bytes, mut cold_live_bytes) = (0u64, 0u64, 0u64);
        for slot in live {
            cold_segments += 1;
            cold_stored_bytes += slot.stored_bytes;
            cold_live_bytes += slot.live_bytes.load(Ordering::Relaxed).max(0) as u64;
        }
        TierStats {
            migrations: self.counters.migrations.load(Ordering::Relaxed),
            migration_failures: self.counters.migration_failures.load(Ordering::Relaxed),
            bytes_migrated: self.counters.bytes_migrated.load(Ordering::Relaxed),
            bytes_dropped_dead: self.counters.bytes_dropped_dead.load(Ordering::Relaxed),
            cold_reads: self.counters.cold_reads.load(Ordering::Relaxed),
            cold_segments,
            cold_stored_bytes,
            cold_live_bytes,
        }
    }

    // ----- statistics ----------------------------------------------------------------

    pub fn stats(&self) -> LogStats {
        let mut stats = LogStats {
            segment_size_bytes: self.layout.segment_size_bytes,
            segments_total: self.layout.segment_count,
            ..LogStats::default()
        };
        for lane in self.lanes.iter() {
            let counters = &lane.counters;
            stats.appends += counters.appends.load(Ordering::Relaxed);
            stats.records_appended += counters.records.load(Ordering::Relaxed);
            stats.bytes_appended += counters.bytes.load(Ordering::Relaxed);
            stats.fences += counters.fences.load(Ordering::Relaxed);
            stats.add_live(&counters.unsettled_records, &counters.unsettled_bytes);
        }
        for meta in self.segments.iter() {
            stats.add_live(&meta.live_records, &meta.live_bytes);
            match meta.entry.lock().entry.state {
                SegmentState::Free => stats.segments_free += 1,
                SegmentState::Open => stats.segments_open += 1,
                _ => stats.segments_sealed += 1,
            }
        }
        stats.streams = self.streams.iter().filter(|s| s.read().is_some()).count() as u64;
        stats
    }
}

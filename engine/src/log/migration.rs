//! Migration of sealed segments to the cold tier.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use crossbeam_epoch::{self as epoch};
use pmem_emul::Pmem;

use super::Log;
use crate::cold::{ColdPayload, ColdSource, ColdTier};
use crate::error::{EngineError, Result};
use crate::format::record::{self, RecordHeader, RECORD_HEADER_BYTES};
use crate::format::segment::{SegmentEntry, SegmentState};
use crate::scan;
use crate::stream::{Loc, Stream};
use crate::StreamId;

/// What [`Log::migrate_segment`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrationOutcome {
    pub segment: u32,
    pub segment_gen: u64,
    pub records_migrated: u64,
    pub payload_bytes: u64,
    pub stored_bytes: u64,
    pub dead_bytes_dropped: u64,
}

/// A segment that lives in the cold tier, as the index refers to it.
#[derive(Debug)]
pub(crate) struct ColdSlot {
    pub segment_gen: u64,
    pub live_records: AtomicI64,
    pub live_bytes: AtomicI64,
    pub stored_bytes: u64,
    pub deleted: std::sync::atomic::AtomicBool,
}

impl<P: Pmem, C: ColdTier> Log<P, C> {
    /// Moves the live records of sealed `segment` to the cold tier and frees it (see the
    /// `cold` module for the order of steps and why each crash point is safe). Dead records
    /// (trimmed, deleted streams) are dropped, not migrated. On a cold-tier failure the
    /// segment stays (back to `Sealed`) and the error is returned: retry later.
    pub fn migrate_segment(&self, segment: u32) -> Result<MigrationOutcome> {
        let meta = self
            .segments
            .get(segment as usize)
            .ok_or(EngineError::NotMigratable {
                segment,
                state: "out of range",
            })?;
        // 1. Sealed -> Migrating: the persistent-memory copy stays authoritative.
        let entry = {
            let mut state = meta.entry.lock();
            if state.entry.state != SegmentState::Sealed || state.released {
                let name = if state.released {
                    "being freed"
                } else {
                    state.entry.state.as_str()
                };
                return Err(EngineError::NotMigratable {
                    segment,
                    state: name,
                });
            }
            let next = SegmentEntry {
                state: SegmentState::Migrating,
                cold_id: state.entry.segment_gen,
                ..state.entry
            };
            self.store_entry(segment, &mut state, next);
            state.entry
        };
        let mut scanned = Vec::new();
        if let Err(error) = scan::scan_sealed(
            &self.pmem,
            &self.layout,
            segment,
            &entry,
            true,
            &mut scanned,
        ) {
            self.unmigrate(segment);
            return Err(error);
        }
        // 2. Live records only, straight from persistent memory (nothing writes a sealed
        //    segment, and it is not scrubbed while Migrating).
        let base = self.layout.segment_offset(segment);
        // Each live record: its stream, its header (as the scan verified it), where it is.
        let mut live: Vec<(Arc<Stream>, RecordHeader, Loc)> = Vec::new();
        let mut dead_bytes = 0u64;
        for record in scanned.iter().filter(|r| !r.void) {
            let header = record.header;
            let loc = Loc::new(segment, record.offset_bytes);
            let size = record::record_size_bytes(header.payload_len as usize);
            let indexed = self
                .stream(StreamId(header.stream_id))
                .ok()
                .filter(|stream| matches!(stream.lookup(header.seq).0, Some(e) if e.loc == loc));
            match indexed {
                // Sealed means fenced, not acknowledged: an earlier seq of the stream may
                // still be on its way in another lane. A cold file is never voided, so a
                // record a crash could still orphan must not go there: try again later.
                Some(stream) if header.seq >= stream.durable_next() => {
                    self.unmigrate(segment);
                    return Err(EngineError::NotMigratable {
                        segment,
                        state: "holding records not yet acknowledged",
                    });
                }
                Some(stream) => live.push((stream, header, loc)),
                None => dead_bytes += size as u64,
            }
        }
        let source = ColdSource {
            segment_index: segment,
            segment_gen: entry.segment_gen,
            pool_nonce: self.layout.pool_nonce,
        };
        let pmem = &self.pmem;
        // The scan above verified every payload against its header crc: hand the crc on.
        let mut records = live.iter().map(|(stream, header, loc)| {
            let at = base + loc.offset_bytes() as usize + RECORD_HEADER_BYTES;
            ColdPayload {
                stream_id: stream.id.0,
                seq: header.seq,
                payload: pmem.read(at, header.payload_len as usize),
                payload_crc: header.payload_crc,
            }
        });
        let written = match self.cold.write_segment(source, &mut records) {
            Ok(written) => written,
            Err(error) => {
                self.counters
                    .migration_failures
                    .fetch_add(1, Ordering::Relaxed);
                self.unmigrate(segment);
                return Err(error.into());
            }
        };
        // 3. Migrating -> Cold: from here the cold file is authoritative.
        {
            let mut state = meta.entry.lock();
            let next = SegmentEntry {
                state: SegmentState::Cold,
                ..state.entry
            };
            self.store_entry(segment, &mut state, next);
        }
        // The slot starts with one reference held by this migration, and each record is
        // counted before its index entry points here: a trim racing the moves can then
        // never take the count to zero (and delete the file) while a record is still
        // moving in. The migration's reference goes last.
        let slot = Arc::new(ColdSlot {
            segment_gen: entry.segment_gen,
            live_records: AtomicI64::new(1),
            live_bytes: AtomicI64::new(0),
            stored_bytes: written.stored_bytes,
            deleted: std::sync::atomic::AtomicBool::new(false),
        });
        let cold_loc = {
            let mut table = self.cold_table.write();
            table.push(Arc::clone(&slot));
            Loc::cold((table.len() - 1) as u32)
        };
        let mut moved_records = 0u64;
        for (stream, header, loc) in &live {
            let size = record::record_size_bytes(header.payload_len as usize) as i64;
            slot.live_records.fetch_add(1, Ordering::AcqRel);
            slot.live_bytes.fetch_add(size, Ordering::AcqRel);
            // A trim may have dropped the record meanwhile: then it counts nowhere.
            if stream.move_to_cold(header.seq, *loc, cold_loc) {
                meta.live_records.fetch_sub(1, Ordering::AcqRel);
                meta.live_bytes.fetch_sub(size, Ordering::AcqRel);
                moved_records += 1;
            } else {
                slot.live_records.fetch_sub(1, Ordering::AcqRel);
                slot.live_bytes.fetch_sub(size, Ordering::AcqRel);
            }
        }
        if slot.live_records.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Nothing moved in, or everything that did was trimmed already.
            self.delete_cold(&slot);
        }
        // 4. Free the persistent-memory copy once no reader can hold a borrow of it.
        {
            let mut state = meta.entry.lock();
            state.released = true;
            let queue = Arc::clone(&self.scrub_queue);
            let guard = epoch::pin();
            guard.defer(move || queue.push(segment));
            guard.flush();
        }
        self.counters.migrations.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_migrated
            .fetch_add(written.payload_bytes, Ordering::Relaxed);
        self.counters
            .bytes_dropped_dead
            .fetch_add(dead_bytes, Ordering::Relaxed);
        Ok(MigrationOutcome {
            segment,
            segment_gen: entry.segment_gen,
            records_migrated: moved_records,
            payload_bytes: written.payload_bytes,
            stored_bytes: written.stored_bytes,
            dead_bytes_dropped: dead_bytes,
        })
    }

    /// Migrating -> Sealed after a failed migration: the persistent-memory copy stays.
    fn unmigrate(&self, segment: u32) {
        let mut state = self.segments[segment as usize].entry.lock();
        let next = SegmentEntry {
            state: SegmentState::Sealed,
            cold_id: 0,
            ..state.entry
        };
        self.store_entry(segment, &mut state, next);
    }
}

//! Space: taking, opening, sealing, releasing and scrubbing segments.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_epoch::{self as epoch};
use parking_lot::Mutex;
use pmem_emul::{Pmem, ATOMIC_STORE_BYTES};

use super::{ColdSlot, Log, OpenSegment};
use crate::cold::ColdTier;
use crate::error::{EngineError, Result};
use crate::format::record::CrcKey;
use crate::format::segment::{
    SegmentEntry, SegmentHeader, SegmentState, SEGMENT_ENTRY_SLOT_BYTES, SEGMENT_HEADER_BYTES,
};
use crate::stream::IndexEntry;

#[derive(Debug)]
pub(crate) struct EntryState {
    pub entry: SegmentEntry,
    /// Slot (0 = A, 1 = B) holding `entry`; updates go to the other.
    pub slot: usize,
    /// A scrub is scheduled (the segment holds no live record).
    pub released: bool,
}

#[derive(Debug)]
pub(crate) struct SegmentMeta {
    pub entry: Mutex<EntryState>,
    /// Generation, readable without the lock (for record crc keys on reads).
    pub segment_gen: AtomicU64,
    /// Records and bytes still readable. Signed: a lane adds what it wrote only when it
    /// seals the segment, so trims may briefly drive an open segment's count below zero.
    pub live_records: AtomicI64,
    pub live_bytes: AtomicI64,
    /// Milliseconds since the log was opened at the last seal or hot read (for age policy).
    pub last_access_ms: AtomicU64,
}

#[derive(Debug, Default)]
pub(crate) struct Space {
    /// Zeroed segments.
    pub free: Vec<u32>,
    /// Open segments found by recovery, ready to be adopted by a lane.
    pub partial: Vec<OpenSegment>,
    pub next_gen: u64,
}

impl<P: Pmem, C: ColdTier> Log<P, C> {
    /// Takes a segment for a lane: a partly used open one left by recovery, else a free one.
    pub(super) fn take_segment(&self, lane_index: u16, size_bytes: u64) -> Result<OpenSegment> {
        for attempt in 0..2 {
            let taken = {
                let mut space = self.space.lock();
                let partial = space
                    .partial
                    .iter()
                    .position(|p| p.tail_bytes + size_bytes <= self.layout.segment_size_bytes);
                if let Some(position) = partial {
                    return Ok(space.partial.swap_remove(position));
                }
                space.free.pop().map(|segment| {
                    let segment_gen = space.next_gen;
                    space.next_gen += 1;
                    (segment, segment_gen)
                })
            };
            if let Some((segment, segment_gen)) = taken {
                return Ok(self.open_segment(segment, segment_gen, lane_index));
            }
            if attempt == 0 && self.reclaim() == 0 {
                break;
            }
        }
        Err(EngineError::PoolFull {
            segment_count: self.layout.segment_count,
        })
    }

    fn open_segment(&self, segment: u32, segment_gen: u64, lane_index: u16) -> OpenSegment {
        let header = SegmentHeader {
            segment_index: segment,
            segment_gen,
            pool_nonce: self.layout.pool_nonce,
            segment_size_bytes: self.layout.segment_size_bytes,
        };
        let base = self.layout.segment_offset(segment);
        self.pmem.write(base, &header.encode());
        self.pmem.persist(base, SEGMENT_HEADER_BYTES);
        let meta = &self.segments[segment as usize];
        let mut entry = meta.entry.lock();
        debug_assert_eq!(entry.entry.state, SegmentState::Free);
        meta.segment_gen.store(segment_gen, Ordering::Release);
        let next = SegmentEntry {
            state: SegmentState::Open,
            lane: lane_index,
            segment_gen,
            sealed_len_bytes: 0,
            record_count: 0,
            cold_id: 0,
            ..entry.entry
        };
        self.store_entry(segment, &mut entry, next);
        OpenSegment {
            segment,
            key: CrcKey::new(self.layout.pool_nonce, segment_gen),
            tail_bytes: SEGMENT_HEADER_BYTES as u64,
            record_count: 0,
        }
    }

    pub(super) fn seal(&self, full: OpenSegment) {
        let meta = &self.segments[full.segment as usize];
        meta.last_access_ms.store(self.now_ms(), Ordering::Relaxed);
        let mut entry = meta.entry.lock();
        debug_assert_eq!(entry.entry.state, SegmentState::Open);
        let next = SegmentEntry {
            state: SegmentState::Sealed,
            sealed_len_bytes: full.tail_bytes,
            record_count: full.record_count,
            ..entry.entry
        };
        self.store_entry(full.segment, &mut entry, next);
        self.release_if_dead(full.segment, &mut entry);
    }

    /// Writes `next` into the entry slot not holding the current version, word by word with
    /// the update counter last (see `format::segment`), and persists it.
    pub(crate) fn store_entry(&self, segment: u32, state: &mut EntryState, mut next: SegmentEntry) {
        next.update_seq = state.entry.update_seq + 1;
        let target = 1 - state.slot;
        let offset = self.layout.entry_offset(segment) + target * SEGMENT_ENTRY_SLOT_BYTES;
        debug_assert_eq!(
            offset % SEGMENT_ENTRY_SLOT_BYTES,
            0,
            "an entry slot is one cache line"
        );
        let bytes = next.encode();
        let words: Vec<u64> = bytes
            .chunks_exact(ATOMIC_STORE_BYTES)
            .map(|word| {
                u64::from_le_bytes([
                    word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7],
                ])
            })
            .collect();
        for (i, &word) in words.iter().enumerate().skip(1) {
            self.pmem.write_u64(offset + i * ATOMIC_STORE_BYTES, word);
        }
        // IMPORTANT: the counter word goes last; it is what makes the new version count.
        self.pmem.write_u64(offset, words[0]);
        self.pmem.persist(offset, SEGMENT_ENTRY_SLOT_BYTES);
        state.entry = next;
        state.slot = target;
    }

    /// Drops index entries' live counts and schedules segments that became empty. Returns
    /// the cold segments left with no live record, for the caller to delete
    /// (`delete_cold_segments`) once it is not pinned any more.
    #[must_use = "dead cold segments must be deleted"]
    pub(crate) fn forget_records(
        &self,
        entries: impl Iterator<Item = IndexEntry>,
    ) -> Vec<Arc<ColdSlot>> {
        let mut touched = Vec::new();
        let mut dead_cold = Vec::new();
        for entry in entries {
            if entry.loc.is_cold() {
                dead_cold.extend(self.forget_cold(entry));
                continue;
            }
            let segment = entry.loc.segment();
            let meta = &self.segments[segment as usize];
            meta.live_bytes
                .fetch_sub(i64::from(entry.size_bytes), Ordering::Relaxed);
            if meta.live_records.fetch_sub(1, Ordering::AcqRel) == 1 {
                touched.push(segment);
            }
        }
        for segment in touched {
            let mut entry = self.segments[segment as usize].entry.lock();
            self.release_if_dead(segment, &mut entry);
        }
        dead_cold
    }

    /// Uncounts one cold record; returns its cold segment if that has no live record left.
    fn forget_cold(&self, entry: IndexEntry) -> Option<Arc<ColdSlot>> {
        let slot = self.cold_slot(entry.loc);
        slot.live_bytes
            .fetch_sub(i64::from(entry.size_bytes), Ordering::Relaxed);
        (slot.live_records.fetch_sub(1, Ordering::AcqRel) == 1).then_some(slot)
    }

    /// Deletes cold segments none of whose records is live (file deletions: slow).
    pub(super) fn delete_cold_segments(&self, dead: &[Arc<ColdSlot>]) {
        for slot in dead {
            self.delete_cold(slot);
        }
    }

    /// Deletes a cold segment none of whose records is live. A failure leaves a file whose
    /// records are all dead: recovery ignores them and deletes it again.
    pub(super) fn delete_cold(&self, slot: &ColdSlot) {
        if slot.deleted.swap(true, Ordering::AcqRel) {
            return;
        }
        self.counters
            .bytes_dropped_dead
            .fetch_add(slot.stored_bytes, Ordering::Relaxed);
        if let Err(error) = self.cold.delete(slot.segment_gen) {
            tracing::warn!(segment_gen = slot.segment_gen, %error, "cannot delete dead cold segment");
        }
    }

    /// A sealed segment with no live record is scrubbed once every reader that might
    /// borrow from it has left (epoch-based deferral).
    fn release_if_dead(&self, segment: u32, entry: &mut EntryState) {
        let meta = &self.segments[segment as usize];
        if entry.entry.state != SegmentState::Sealed
            || entry.released
            || meta.live_records.load(Ordering::Acquire) != 0
        {
            return;
        }
        entry.released = true;
        let queue = Arc::clone(&self.scrub_queue);
        let guard = epoch::pin();
        guard.defer(move || queue.push(segment));
        guard.flush();
    }

    /// Scrubs and frees every segment whose readers have left. Returns how many were freed.
    pub fn reclaim(&self) -> usize {
        // Advancing the global epoch takes a few pinned flushes; deferred pushes run then.
        for _ in 0..4 {
            epoch::pin().flush();
        }
        let mut freed = 0;
        while let Some(segment) = self.scrub_queue.pop() {
            self.scrub(segment);
            freed += 1;
        }
        freed
    }

    /// Zeroes a segment and marks it free: Scrubbing (persisted) -> zero -> Free.
    pub(crate) fn scrub(&self, segment: u32) {
        let meta = &self.segments[segment as usize];
        let mut entry = meta.entry.lock();
        if entry.entry.state != SegmentState::Scrubbing {
            let next = SegmentEntry {
                state: SegmentState::Scrubbing,
                ..entry.entry
            };
            self.store_entry(segment, &mut entry, next);
        }
        let base = self.layout.segment_offset(segment);
        self.pmem
            .zero_nt(base, self.layout.segment_size_bytes as usize);
        self.pmem.fence();
        let next = SegmentEntry {
            state: SegmentState::Free,
            sealed_len_bytes: 0,
            record_count: 0,
            ..entry.entry
        };
        self.store_entry(segment, &mut entry, next);
        entry.released = false;
        meta.live_records.store(0, Ordering::Relaxed);
        meta.live_bytes.store(0, Ordering::Relaxed);
        drop(entry);
        self.space.lock().free.push(segment);
    }
}

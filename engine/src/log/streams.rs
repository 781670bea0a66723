//! Streams: create, delete, list, look up, bounds, trim.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_epoch::{self as epoch};
use parking_lot::{MappedRwLockReadGuard, RwLockReadGuard};
use pmem_emul::{Pmem, ATOMIC_STORE_BYTES};

use super::Log;
use crate::cold::ColdTier;
use crate::error::{EngineError, Result};
use crate::format::stream_slot::{self, SlotState, MAX_LABEL_BYTES, STREAM_SLOT_BYTES};
use crate::stream::{Index, Stream};
use crate::StreamId;

#[derive(Debug, Clone, Copy)]
pub(crate) struct SlotInfo {
    pub incarnation: u32,
    pub state: SlotState,
}

/// A stream as `list_streams` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    pub id: StreamId,
    pub label: Vec<u8>,
    pub first_seq: u64,
    pub next_seq: u64,
}

impl<P: Pmem, C: ColdTier> Log<P, C> {
    /// Creates a stream, durably. `label` (at most 31 bytes) is stored with it.
    pub fn create_stream(&self, label: &[u8]) -> Result<StreamId> {
        if label.len() > MAX_LABEL_BYTES {
            return Err(EngineError::LabelTooLong {
                len_bytes: label.len(),
                max_bytes: MAX_LABEL_BYTES,
            });
        }
        let mut slots = self.slots.lock();
        // Every slot below `from` is live (the field's invariant), so the first free or
        // deleted slot is at or past it.
        let from = self
            .slot_search_from
            .load(Ordering::Relaxed)
            .min(slots.len());
        debug_assert!(slots[..from].iter().all(|s| s.state == SlotState::Live));
        let Some(slot) = slots[from..]
            .iter()
            .position(|s| s.state != SlotState::Live)
            .map(|offset| from + offset)
        else {
            self.slot_search_from.store(slots.len(), Ordering::Relaxed);
            return Err(EngineError::StreamTableFull {
                slot_count: self.layout.stream_slot_count,
            });
        };
        self.slot_search_from.store(slot + 1, Ordering::Relaxed);
        let incarnation = slots[slot].incarnation.wrapping_add(1).max(1);
        let slot_index = slot as u32;
        let offset = self.layout.slot_offset(slot_index);
        let body = stream_slot::encode_body(incarnation, label);
        // Body first (state word untouched: the slot still reads free or deleted), then the
        // state word flips it live with one atomic store.
        self.pmem
            .write(offset + ATOMIC_STORE_BYTES, &body[ATOMIC_STORE_BYTES..]);
        self.pmem.persist(offset, STREAM_SLOT_BYTES);
        self.pmem.write_u64(
            offset,
            stream_slot::state_word(incarnation, SlotState::Live),
        );
        self.pmem.persist(offset, ATOMIC_STORE_BYTES);
        slots[slot] = SlotInfo {
            incarnation,
            state: SlotState::Live,
        };
        let id = StreamId(stream_slot::stream_id(slot_index, incarnation));
        let stream = Stream::new(id, slot_index, label.to_vec(), Index::default());
        *self.streams[slot].write() = Some(Arc::new(stream));
        Ok(id)
    }

    /// Deletes a stream, durably. Its space is reclaimed once no reader holds its records.
    pub fn delete_stream(&self, id: StreamId) -> Result<()> {
        let mut slots = self.slots.lock();
        let stream = self.stream(id)?;
        // Durable first: from here a crash leaves the stream deleted. Appends that reserve
        // before `mark_deleted` below are ordered before the delete.
        let offset = self.layout.slot_offset(stream.slot);
        let incarnation = (id.0 >> 32) as u32;
        self.pmem.write_u64(
            offset,
            stream_slot::state_word(incarnation, SlotState::Deleted),
        );
        self.pmem.persist(offset, ATOMIC_STORE_BYTES);
        // See `trim`: pinned from dropping the index until the records are uncounted.
        let guard = epoch::pin();
        let index = stream.mark_deleted();
        slots[stream.slot as usize].state = SlotState::Deleted;
        self.slot_search_from
            .fetch_min(stream.slot as usize, Ordering::Relaxed);
        *self.streams[stream.slot as usize].write() = None;
        drop(slots);
        let dead_cold = self.forget_records(index.entries.iter().copied());
        drop(guard);
        self.delete_cold_segments(&dead_cold);
        Ok(())
    }

    /// Every live stream.
    pub fn list_streams(&self) -> Vec<StreamInfo> {
        self.streams
            .iter()
            .filter_map(|slot| slot.read().clone())
            .map(|stream| {
                let first_seq = stream.first_seq();
                StreamInfo {
                    id: stream.id,
                    label: stream.label.clone(),
                    first_seq,
                    next_seq: stream.durable_next(),
                }
            })
            .collect()
    }

    pub(crate) fn stream(&self, id: StreamId) -> Result<Arc<Stream>> {
        self.stream_locked(id).map(|stream| Arc::clone(&stream))
    }

    /// The live stream `id` with its slot's read lock held (creating or deleting this very
    /// stream waits for the guard).
    pub(super) fn stream_locked(
        &self,
        id: StreamId,
    ) -> Result<MappedRwLockReadGuard<'_, Arc<Stream>>> {
        let slot = (id.0 & u64::from(u32::MAX)) as usize;
        let entry = self
            .streams
            .get(slot)
            .ok_or(EngineError::UnknownStream(id))?;
        RwLockReadGuard::try_map(entry.read(), |stream| {
            stream.as_ref().filter(|stream| stream.id == id)
        })
        .map_err(|_| EngineError::UnknownStream(id))
    }

    /// `(first_seq, next_seq)`: the readable seqs of a stream are `first_seq..next_seq`.
    pub fn bounds(&self, id: StreamId) -> Result<(u64, u64)> {
        let stream = self.stream(id)?;
        let first_seq = stream.first_seq();
        Ok((first_seq, stream.durable_next()))
    }

    /// The last durable seq of a stream, `None` when it has no readable record.
    pub fn tail(&self, id: StreamId) -> Result<Option<u64>> {
        let (first_seq, next_seq) = self.bounds(id)?;
        Ok((next_seq > first_seq).then(|| next_seq - 1))
    }

    /// Drops records below `first_seq` of a stream, durably; their space is reclaimed once
    /// every segment they occupied holds no live record.
    pub fn trim(&self, id: StreamId, first_seq: u64) -> Result<()> {
        let stream = self.stream(id)?;
        let offset = self.layout.slot_offset(stream.slot) + stream_slot::TRIM_WORD_OFFSET;
        // Pinned from before the index drops the entries (right after the trim is durable)
        // until their segments' live counts are down: a migration that finds them gone
        // cannot have the segment scrubbed (and reused, and counted afresh) before this
        // thread has uncounted them. The pin is global (it holds back reclamation in every
        // log of the process), so nothing slow happens under it: no persist, and dead cold
        // files are deleted after.
        let mut guard = None;
        let dropped = stream.trim(first_seq, || {
            self.pmem
                .write_u64(offset, stream_slot::trim_word(id.0, first_seq));
            self.pmem.persist(offset, ATOMIC_STORE_BYTES);
            guard = Some(epoch::pin());
        })?;
        let dead_cold = self.forget_records(dropped.into_iter());
        drop(guard);
        self.delete_cold_segments(&dead_cold);
        Ok(())
    }
}

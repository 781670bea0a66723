//! Opening a pool: rebuild every stream's index from the segments, exactly as the crash
//! model's oracle demands, and repair what a crash left half done.
//!
//! Per segment, by its table entry (the decision table):
//!
//! | entry state | action                                                            |
//! |-------------|-------------------------------------------------------------------|
//! | Free        | free list (its record area is zero by invariant)                  |
//! | Scrubbing   | zero it again (idempotent), mark Free                             |
//! | Open        | scan to the first invalid position; scrub the torn tail; reusable |
//! | Sealed      | scan exactly to `sealed_len_bytes`; anything invalid is corruption |
//! | Migrating   | as Sealed: the persistent-memory copy is still authoritative      |
//! | Cold        | not supported without the tiering crate: typed error              |
//!
//! Then per stream: records of a live slot with the slot's incarnation and `seq >=
//! first_seq` are sorted by seq; the dense run from `first_seq` is the stream. A record past
//! a gap was never acknowledged (acks wait for every lower seq), so it is voided with one
//! atomic store. Duplicates cannot happen and are reported as corruption.
//!
//! Every repair (voiding, tail scrub, scrub redo) is idempotent, so a crash during recovery
//! is recovered by running recovery again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pmem_emul::Pmem;

use crate::error::{EngineError, Location, Result};
use crate::format::record::{self, CrcKey, RECORD_HEADER_BYTES};
use crate::format::segment::{SegmentEntry, SegmentState, SEGMENT_ENTRY_BYTES};
use crate::format::stream_slot::{self, SlotState, STREAM_SLOT_BYTES};
use crate::format::superblock::{Superblock, SuperblockError, SUPERBLOCK_USED_BYTES};
use crate::layout::Layout;
use crate::log::{EntryState, Log, OpenOptions, OpenSegment, SlotInfo};
use crate::scan::{self, ScannedRecord};
use crate::stream::{Index, IndexEntry, Loc, Stream};
use crate::StreamId;

/// What recovery found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub streams: u64,
    pub live_records: u64,
    pub live_bytes: u64,
    pub segments_scanned: u64,
    pub bytes_scanned: u64,
    /// Open segments whose last write was torn and dropped.
    pub torn_tails_dropped: u64,
    /// Records past a gap in their stream (never acknowledged), voided.
    pub orphans_voided: u64,
    /// Segments zeroed and freed (interrupted scrubs, and segments with nothing live).
    pub segments_scrubbed: u64,
    pub duration: Duration,
}

pub(crate) fn read_layout<P: Pmem>(pmem: &P) -> Result<Layout> {
    let pool_bytes = pmem.len_bytes() as u64;
    if (pool_bytes as usize) < SUPERBLOCK_USED_BYTES {
        return Err(EngineError::PoolTooSmall {
            pool_bytes,
            needed_bytes: SUPERBLOCK_USED_BYTES as u64,
        });
    }
    let superblock = match Superblock::decode(pmem.read(0, SUPERBLOCK_USED_BYTES)) {
        Ok(superblock) => superblock,
        Err(SuperblockError::Unformatted) => return Err(EngineError::Unformatted),
        Err(error) => {
            return Err(EngineError::corruption(
                Location::Superblock,
                format!("{error:?}"),
            ))
        }
    };
    Layout::from_superblock(&superblock, pool_bytes)
}

pub(crate) fn read_entry<P: Pmem>(
    pmem: &P,
    layout: &Layout,
    segment: u32,
) -> Result<(SegmentEntry, usize)> {
    SegmentEntry::decode_pair(pmem.read(layout.entry_offset(segment), SEGMENT_ENTRY_BYTES))
        .map_err(|e| EngineError::corruption(Location::SegmentEntry { segment }, format!("{e:?}")))
}

pub(crate) fn read_slot<P: Pmem>(
    pmem: &P,
    layout: &Layout,
    slot: u32,
) -> Result<stream_slot::StreamSlot> {
    let mut bytes = [0u8; STREAM_SLOT_BYTES];
    bytes.copy_from_slice(pmem.read(layout.slot_offset(slot), STREAM_SLOT_BYTES));
    stream_slot::decode(slot, &bytes)
        .map_err(|e| EngineError::corruption(Location::StreamSlot { slot }, format!("{e:?}")))
}

impl<P: Pmem> Log<P> {
    /// Opens a formatted pool, recovering from whatever crash left it.
    pub fn open(pmem: P, options: OpenOptions) -> Result<(Log<P>, RecoveryReport)> {
        let started = Instant::now();
        let layout = read_layout(&pmem)?;
        let log = Log::assemble(pmem, layout, options);
        let mut report = RecoveryReport::default();

        // Streams.
        let mut slot_infos = Vec::with_capacity(layout.stream_slot_count as usize);
        let mut live_slots: HashMap<u64, (u32, stream_slot::StreamSlot)> = HashMap::new();
        for slot in 0..layout.stream_slot_count as u32 {
            let decoded = read_slot(&log.pmem, &layout, slot)?;
            slot_infos.push(SlotInfo {
                incarnation: decoded.incarnation,
                state: decoded.state,
            });
            if decoded.state == SlotState::Live {
                live_slots.insert(
                    stream_slot::stream_id(slot, decoded.incarnation),
                    (slot, decoded),
                );
            }
        }

        // Segments, by the decision table; records go straight to their stream.
        let mut per_stream: HashMap<u64, Vec<(u64, IndexEntry)>> = HashMap::new();
        let mut scanned: Vec<ScannedRecord> = Vec::new();
        let mut free = Vec::new();
        let mut partial = Vec::new();
        let mut max_gen = 0u64;
        for segment in 0..layout.segment_count as u32 {
            let (entry, slot) = read_entry(&log.pmem, &layout, segment)?;
            max_gen = max_gen.max(entry.segment_gen);
            let meta = &log.segments[segment as usize];
            meta.segment_gen
                .store(entry.segment_gen, std::sync::atomic::Ordering::Relaxed);
            *meta.entry.lock() = EntryState {
                entry,
                slot,
                released: false,
            };
            let key = CrcKey::new(layout.pool_nonce, entry.segment_gen);
            scanned.clear();
            match entry.state {
                SegmentState::Free => free.push(segment),
                SegmentState::Scrubbing => {
                    log.scrub_in_recovery(segment, &mut free);
                    report.segments_scrubbed += 1;
                }
                SegmentState::Open => {
                    let tail = scan::scan_open(&log.pmem, &layout, segment, &entry, &mut scanned)?;
                    let base = layout.segment_offset(segment) + tail.tail_bytes as usize;
                    let torn_len = (tail.torn_end_bytes - tail.tail_bytes) as usize;
                    if log.pmem.read(base, torn_len).iter().any(|&b| b != 0) {
                        log.pmem.zero_nt(base, torn_len);
                        log.pmem.fence();
                        report.torn_tails_dropped += 1;
                    }
                    partial.push(OpenSegment {
                        segment,
                        key,
                        tail_bytes: tail.tail_bytes,
                        record_count: tail.record_count,
                    });
                    report.segments_scanned += 1;
                    report.bytes_scanned += tail.tail_bytes;
                }
                SegmentState::Sealed | SegmentState::Migrating => {
                    scan::scan_sealed(&log.pmem, &layout, segment, &entry, false, &mut scanned)?;
                    if entry.state == SegmentState::Migrating {
                        let mut state = meta.entry.lock();
                        let sealed = SegmentEntry {
                            state: SegmentState::Sealed,
                            cold_id: 0,
                            ..entry
                        };
                        log.store_entry(segment, &mut state, sealed);
                    }
                    report.segments_scanned += 1;
                    report.bytes_scanned += entry.sealed_len_bytes;
                }
                SegmentState::Cold => {
                    return Err(EngineError::InvalidConfig(format!(
                        "segment {segment} is cold (on SSD); open this pool through the tiering crate"
                    )));
                }
            }
            for record in &scanned {
                let header = record.header;
                if record.void {
                    continue;
                }
                let Some((_, slot)) = live_slots.get(&header.stream_id) else {
                    continue; // deleted stream or an older incarnation of its slot
                };
                if header.seq < slot.first_seq {
                    continue; // trimmed
                }
                let size_bytes = record::record_size_bytes(header.payload_len as usize) as u32;
                let entry = IndexEntry {
                    loc: Loc::new(segment, record.offset_bytes),
                    size_bytes,
                };
                per_stream
                    .entry(header.stream_id)
                    .or_default()
                    .push((header.seq, entry));
            }
        }

        // Streams from records.
        let mut orphans: Vec<(u32, CrcKey, u32)> = Vec::new();
        let key_of = |segment: u32| {
            CrcKey::new(
                layout.pool_nonce,
                log.segments[segment as usize]
                    .segment_gen
                    .load(std::sync::atomic::Ordering::Relaxed),
            )
        };
        let mut streams_built = Vec::with_capacity(live_slots.len());
        for (stream_id, (slot, decoded)) in &live_slots {
            let mut records = per_stream.remove(stream_id).unwrap_or_default();
            records.sort_unstable_by_key(|(seq, _)| *seq);
            let mut index = Index {
                first_seq: decoded.first_seq,
                entries: Default::default(),
            };
            let mut expected = decoded.first_seq;
            for (seq, entry) in records {
                if seq == expected {
                    index.entries.push_back(entry);
                    expected += 1;
                } else if seq < expected {
                    return Err(EngineError::corruption(
                        Location::Record {
                            segment: entry.loc.segment(),
                            offset_bytes: entry.loc.offset_bytes().into(),
                        },
                        format!("stream {} has seq {seq} twice", StreamId(*stream_id)),
                    ));
                } else {
                    let segment = entry.loc.segment();
                    orphans.push((segment, key_of(segment), entry.loc.offset_bytes()));
                }
            }
            for entry in &index.entries {
                let meta = &log.segments[entry.loc.segment() as usize];
                meta.live_records
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                meta.live_bytes.fetch_add(
                    i64::from(entry.size_bytes),
                    std::sync::atomic::Ordering::Relaxed,
                );
                report.live_bytes += u64::from(entry.size_bytes);
            }
            report.live_records += index.entries.len() as u64;
            streams_built.push(Stream::new(
                StreamId(*stream_id),
                *slot,
                decoded.label.clone(),
                index,
            ));
        }
        report.streams = streams_built.len() as u64;
        for stream in streams_built {
            let slot = stream.slot as usize;
            *log.streams[slot].write() = Some(std::sync::Arc::new(stream));
        }

        // Void records that follow a gap: they were never acknowledged.
        for &(segment, key, offset_bytes) in &orphans {
            let offset = layout.segment_offset(segment) + offset_bytes as usize;
            let mut header = [0u8; RECORD_HEADER_BYTES];
            header.copy_from_slice(log.pmem.read(offset, RECORD_HEADER_BYTES));
            log.pmem.write_u64(offset, record::void_word(&header, key));
            log.pmem.flush(offset, 8);
        }
        if !orphans.is_empty() {
            log.pmem.fence();
        }
        report.orphans_voided = orphans.len() as u64;

        *log.slots.lock() = slot_infos;
        {
            let mut space = log.space.lock();
            space.next_gen = max_gen + 1;
            space.partial = partial;
        }
        // Sealed segments with nothing live: nobody can be reading yet, scrub at once.
        for segment in 0..layout.segment_count as u32 {
            let meta = &log.segments[segment as usize];
            let dead = {
                let state = meta.entry.lock();
                state.entry.state == SegmentState::Sealed
                    && meta.live_records.load(std::sync::atomic::Ordering::Relaxed) == 0
            };
            if dead {
                log.scrub_in_recovery(segment, &mut free);
                report.segments_scrubbed += 1;
            }
        }
        log.space.lock().free = free;
        report.duration = started.elapsed();
        Ok((log, report))
    }

    fn scrub_in_recovery(&self, segment: u32, free: &mut Vec<u32>) {
        self.scrub(segment);
        // `scrub` pushed it onto the shared free list; recovery assembles its own list.
        let mut space = self.space.lock();
        if let Some(position) = space.free.iter().position(|&s| s == segment) {
            space.free.swap_remove(position);
        }
        free.push(segment);
    }
}

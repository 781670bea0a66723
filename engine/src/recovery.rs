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
//! | Migrating   | as Sealed (entry rewritten): persistent memory is authoritative    |
//! | Cold + file | the cold file is authoritative: index it, scrub this copy          |
//! | Cold, no file | the copy here is whole (scrubbing starts later): back to Sealed |
//!
//! Cold files (the cold tier's inventory) whose generation backs an Open, Sealed or
//! Migrating entry are leftovers of an interrupted migration and are discarded. Files whose
//! segment was freed are the only copy of their records and are indexed. A damaged file
//! with no persistent-memory copy is reported as corruption, never silently dropped.
//!
//! An open segment whose valid records end inside a batch (trailing `KIND_BATCH_MORE`
//! records, see `format::record`) lost that batch's last record: the whole batch is dropped
//! with the torn tail (zeroed), so a batch is all or nothing.
//!
//! Then per stream: records of a live slot with the slot's incarnation and `seq >=
//! first_seq` are sorted by seq; the dense run from `first_seq` is the stream. A record past
//! a gap was never acknowledged (acks wait for every lower seq), so it is voided with one
//! atomic store. Duplicates cannot happen and are reported as corruption.
//!
//! Batches are all or nothing here too: a batch with a record past a gap was not
//! acknowledged (a batch publishes nothing before every lower seq of each of its streams is
//! durable), so its other records are voided as well, which may cut other streams and doom
//! further batches: this repeats until nothing changes. A batch that holds a void record was
//! being voided by an interrupted recovery and is voided whole.
//!
//! Every repair (voiding, tail scrub, scrub redo) is idempotent, so a crash during recovery
//! is recovered by running recovery again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use pmem_emul::Pmem;

use crate::cold::{ColdSegment, ColdTier};
use crate::error::{CorruptKind, EngineError, Location, Result};
use crate::format::record::{self, CrcKey, RECORD_HEADER_BYTES};
use crate::format::segment::{SegmentEntry, SegmentState, SEGMENT_ENTRY_BYTES};
use crate::format::stream_slot::{self, SlotState, STREAM_SLOT_BYTES};
use crate::layout::Layout;
use crate::log::{ColdSlot, EntryState, Log, OpenOptions, OpenSegment, SlotInfo};
use crate::scan::{self, ScannedRecord};
use crate::stream::{Index, IndexEntry, Loc, Stream};
use crate::StreamId;

/// What recovery found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Superblock copies that failed their check and were rewritten from the good copy.
    pub superblock_copies_repaired: u64,
    pub streams: u64,
    pub live_records: u64,
    pub live_bytes: u64,
    pub segments_scanned: u64,
    pub bytes_scanned: u64,
    /// Open segments whose last write was torn and dropped.
    pub torn_tails_dropped: u64,
    /// Records of incomplete batches (the batch's last record missing) at the end of open
    /// segments, dropped with the torn tail.
    pub incomplete_batch_records_dropped: u64,
    /// Records past a gap in their stream (never acknowledged), voided.
    pub orphans_voided: u64,
    /// Segments zeroed and freed (interrupted scrubs, and segments with nothing live).
    pub segments_scrubbed: u64,
    /// Cold segments whose records were indexed.
    pub cold_segments: u64,
    /// Cold files of interrupted migrations, removed (persistent memory was authoritative).
    pub cold_files_discarded: u64,
    /// Cold files holding nothing live any more, deleted.
    pub cold_files_deleted: u64,
    /// Cold files written for another pool (another pool nonce) found in this pool's cold
    /// tier, by generation: left untouched and not indexed.
    pub cold_files_foreign: Vec<u64>,
    pub duration: Duration,
}

/// A record recovery found for a live stream.
#[derive(Debug, Clone, Copy)]
struct Found {
    seq: u64,
    entry: IndexEntry,
    /// The batch it belongs to (hot records); cold files keep no batches (their records
    /// were all acknowledged).
    batch: Option<usize>,
}

/// The layout of a formatted pool (read only: a damaged superblock copy is left as it is;
/// see `crate::probe` for the decision table).
#[cfg(test)]
pub(crate) fn read_layout<P: Pmem>(pmem: &P) -> Result<Layout> {
    crate::probe::probe_layout(pmem)?.into_layout()
}

/// A record of a stream that is not live is garbage of a deleted stream (or of an older
/// incarnation of its slot) only if its slot has seen that incarnation: incarnations only
/// grow, and a slot is durable before any record of its stream is written. A record whose
/// slot lies outside the table, or reads an older incarnation (a zeroed slot reads free with
/// incarnation 0), proves the slot was damaged: `Corruption`, never a stream silently gone.
/// (An incarnation wraps after 2^32 reuses of one slot; a record from before the wrap would
/// be reported here, never dropped.)
fn check_slot_not_behind(
    slot_infos: &[SlotInfo],
    stream_id: u64,
    record_location: impl FnOnce() -> Location,
) -> Result<()> {
    let slot = stream_id as u32;
    let incarnation = (stream_id >> 32) as u32;
    match slot_infos.get(slot as usize) {
        Some(info) if info.incarnation >= incarnation => Ok(()),
        Some(info) => Err(EngineError::corruption(
            Location::StreamSlot { slot },
            CorruptKind::Mismatch {
                field: "stream slot incarnation",
            },
            format!(
                "slot reads incarnation {} ({:?}) but a record of stream {} lies at {}",
                info.incarnation,
                info.state,
                StreamId(stream_id),
                record_location()
            ),
        )),
        None => Err(EngineError::corruption(
            record_location(),
            CorruptKind::BadField { field: "stream id" },
            format!(
                "record of stream {} names a slot past the table of {}",
                StreamId(stream_id),
                slot_infos.len()
            ),
        )),
    }
}

pub(crate) fn read_entry<P: Pmem>(
    pmem: &P,
    layout: &Layout,
    segment: u32,
) -> Result<(SegmentEntry, usize)> {
    SegmentEntry::decode_pair(pmem.read(layout.entry_offset(segment), SEGMENT_ENTRY_BYTES)).map_err(
        |e| {
            EngineError::corruption(
                Location::SegmentEntry { segment },
                e.corrupt_kind(),
                format!("{e:?}"),
            )
        },
    )
}

pub(crate) fn read_slot<P: Pmem>(
    pmem: &P,
    layout: &Layout,
    slot: u32,
) -> Result<stream_slot::StreamSlot> {
    let mut bytes = [0u8; STREAM_SLOT_BYTES];
    bytes.copy_from_slice(pmem.read(layout.slot_offset(slot), STREAM_SLOT_BYTES));
    stream_slot::decode(slot, &bytes).map_err(|e| {
        EngineError::corruption(
            Location::StreamSlot { slot },
            e.corrupt_kind(),
            format!("{e:?}"),
        )
    })
}

impl<P: Pmem, C: ColdTier> Log<P, C> {
    /// Opens a formatted pool whose cold segments live in `cold`, recovering from whatever
    /// crash left pool and cold tier (see the decision tables in this module and in `cold`).
    pub fn open_with_cold(
        pmem: P,
        cold: C,
        options: OpenOptions,
    ) -> Result<(Log<P, C>, RecoveryReport)> {
        let started = Instant::now();
        let probed = crate::probe::probe_layout(&pmem)?;
        let damaged_copies: Vec<u8> = probed.copy_faults.iter().map(|(copy, _)| *copy).collect();
        let layout = probed.into_layout()?;
        let inventory = cold.inventory()?;
        // One superblock copy checks: the other is rewritten from it before anything else.
        crate::probe::repair_copies(&pmem, &layout, &damaged_copies);
        let log = Log::assemble(pmem, cold, layout, options);
        let mut report = RecoveryReport {
            superblock_copies_repaired: damaged_copies.len() as u64,
            ..RecoveryReport::default()
        };

        // Streams.
        let mut slot_infos = Vec::with_capacity(layout.stream_slot_count as usize);
        let mut live_slots: IdMap<(u32, stream_slot::StreamSlot)> = IdMap::default();
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
        let mut cold_files: HashMap<u64, ColdSegment> = HashMap::new();
        for file in inventory.segments {
            if file.pool_nonce == layout.pool_nonce {
                cold_files.insert(file.segment_gen, file);
            } else {
                tracing::warn!(
                    segment_gen = file.segment_gen,
                    "cold file of another pool (nonce {:#x}) ignored",
                    file.pool_nonce
                );
                report.cold_files_foreign.push(file.segment_gen);
            }
        }
        let damaged: HashSet<u64> = inventory.damaged.into_iter().collect();

        // Segments, by the decision table; records go straight to their stream.
        let mut per_stream: IdMap<Vec<Found>> = IdMap::default();
        // Per batch of a hot segment (by batch number): whether it must be voided whole.
        let mut doomed: Vec<bool> = Vec::new();
        let mut scanned: Vec<ScannedRecord> = Vec::new();
        let mut free = Vec::new();
        let mut partial = Vec::new();
        let mut scrub_now = Vec::new();
        let mut max_gen = 0u64;
        for segment in 0..layout.segment_count as u32 {
            let (mut entry, slot) = read_entry(&log.pmem, &layout, segment)?;
            max_gen = max_gen.max(entry.segment_gen);
            let meta = &log.segments[segment as usize];
            meta.segment_gen.store(entry.segment_gen, Ordering::Relaxed);
            *meta.entry.lock() = EntryState {
                entry,
                slot,
                released: false,
            };
            let gen = entry.segment_gen;
            let backs_pmem = matches!(
                entry.state,
                SegmentState::Open | SegmentState::Sealed | SegmentState::Migrating
            );
            if backs_pmem && (cold_files.remove(&gen).is_some() || damaged.contains(&gen)) {
                // An interrupted migration: the persistent-memory copy is authoritative.
                log.cold.discard(gen)?;
                report.cold_files_discarded += 1;
            }
            if entry.state == SegmentState::Cold {
                if let Some(file) = cold_files.remove(&gen) {
                    // The cold copy is authoritative; finish freeing this one.
                    log.index_cold_file(
                        file,
                        &live_slots,
                        &slot_infos,
                        &mut per_stream,
                        &mut report,
                    )?;
                    scrub_now.push(segment);
                    continue;
                }
                // The file is missing or damaged, but `Cold` is persisted before scrubbing
                // starts, so this copy is whole: it is authoritative again.
                if damaged.contains(&gen) {
                    log.cold.discard(gen)?;
                    report.cold_files_discarded += 1;
                }
                entry = log.set_state(segment, SegmentState::Sealed);
            }
            if entry.state == SegmentState::Migrating {
                entry = log.set_state(segment, SegmentState::Sealed);
            }
            let key = CrcKey::new(layout.pool_nonce, gen);
            scanned.clear();
            match entry.state {
                SegmentState::Free => free.push(segment),
                SegmentState::Scrubbing => scrub_now.push(segment),
                SegmentState::Open => {
                    let tail = scan::scan_open(&log.pmem, &layout, segment, &entry, &mut scanned)?;
                    let base = layout.segment_offset(segment) + tail.tail_bytes as usize;
                    let torn_len = (tail.torn_end_bytes - tail.tail_bytes) as usize;
                    if !crate::format::is_zero(log.pmem.read(base, torn_len)) {
                        log.pmem.zero_nt(base, torn_len);
                        log.pmem.fence();
                        report.torn_tails_dropped += 1;
                    }
                    report.incomplete_batch_records_dropped += tail.incomplete_batch_records;
                    partial.push(OpenSegment {
                        segment,
                        key,
                        tail_bytes: tail.tail_bytes,
                        record_count: tail.record_count,
                    });
                    report.segments_scanned += 1;
                    report.bytes_scanned += tail.tail_bytes;
                }
                SegmentState::Sealed => {
                    scan::scan_sealed(&log.pmem, &layout, segment, &entry, false, &mut scanned)?;
                    report.segments_scanned += 1;
                    report.bytes_scanned += entry.sealed_len_bytes;
                }
                SegmentState::Migrating | SegmentState::Cold => {
                    unreachable!("resolved to Sealed above")
                }
            }
            let mut batch = doomed.len();
            for record in &scanned {
                let header = record.header;
                if batch == doomed.len() {
                    doomed.push(false);
                }
                let this_batch = batch;
                if !header.batch_more {
                    batch = doomed.len();
                }
                if record.void {
                    doomed[this_batch] = true;
                    continue;
                }
                let Some((_, slot)) = live_slots.get(&header.stream_id) else {
                    check_slot_not_behind(&slot_infos, header.stream_id, || {
                        log.location_of(Loc::new(segment, record.offset_bytes))
                    })?;
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
                per_stream.entry(header.stream_id).or_default().push(Found {
                    seq: header.seq,
                    entry,
                    batch: Some(this_batch),
                });
            }
            debug_assert_eq!(batch, doomed.len(), "scans end with a complete batch");
        }
        // Files whose segment was freed (and maybe reused): the only copy of their records.
        let mut orphan_gens: Vec<u64> = cold_files.keys().copied().collect();
        orphan_gens.sort_unstable();
        for gen in orphan_gens {
            if let Some(file) = cold_files.remove(&gen) {
                log.index_cold_file(file, &live_slots, &slot_infos, &mut per_stream, &mut report)?;
            }
        }
        let backed: HashSet<u64> = log
            .segments
            .iter()
            .map(|meta| meta.entry.lock().entry)
            .filter(|e| e.state != SegmentState::Free && e.state != SegmentState::Scrubbing)
            .map(|e| e.segment_gen)
            .collect();
        if let Some(&gen) = damaged.iter().find(|gen| !backed.contains(gen)) {
            return Err(EngineError::corruption(
                Location::ColdSegment { segment_gen: gen },
                CorruptKind::ColdSegmentLost,
                "damaged cold segment with no persistent-memory copy",
            ));
        }

        // Streams from records: each stream's dense run, then batches all or nothing.
        let mut lists: Vec<(u64, Vec<Found>)> = Vec::with_capacity(live_slots.len());
        for stream_id in live_slots.keys() {
            let mut records = per_stream.remove(stream_id).unwrap_or_default();
            records.sort_unstable_by_key(|found| found.seq);
            if let Some(pair) = records.windows(2).find(|pair| pair[0].seq == pair[1].seq) {
                return Err(EngineError::corruption(
                    log.location_of(pair[1].entry.loc),
                    CorruptKind::DuplicateSeq {
                        stream: StreamId(*stream_id),
                        seq: pair[1].seq,
                    },
                    format!(
                        "stream {} seq {} is duplicated",
                        StreamId(*stream_id),
                        pair[1].seq
                    ),
                ));
            }
            lists.push((*stream_id, records));
        }
        let dense_len = |first_seq: u64, records: &[Found], doomed: &[bool]| {
            records
                .iter()
                .enumerate()
                .take_while(|(i, found)| {
                    found.seq == first_seq + *i as u64
                        && !found.batch.is_some_and(|batch| doomed[batch])
                })
                .count()
        };
        loop {
            let mut changed = false;
            for (stream_id, records) in &lists {
                let first_seq = live_slots[stream_id].1.first_seq;
                let cut = dense_len(first_seq, records, &doomed);
                for batch in records[cut..].iter().filter_map(|found| found.batch) {
                    changed |= !doomed[batch];
                    doomed[batch] = true;
                }
            }
            if !changed {
                break;
            }
        }
        let mut orphans: Vec<(u32, CrcKey, u32)> = Vec::new();
        let mut streams_built = Vec::with_capacity(live_slots.len());
        for (stream_id, records) in lists {
            let (slot, decoded) = &live_slots[&stream_id];
            let cut = dense_len(decoded.first_seq, &records, &doomed);
            let mut index = Index {
                first_seq: decoded.first_seq,
                entries: records[..cut].iter().map(|found| found.entry).collect(),
            };
            for found in &records[cut..] {
                let entry = found.entry;
                if entry.loc.is_cold() {
                    // Cold records were all acknowledged (only durable prefixes migrate).
                    return Err(EngineError::corruption(
                        log.location_of(entry.loc),
                        CorruptKind::SeqGap {
                            stream: StreamId(stream_id),
                            seq: found.seq,
                        },
                        format!(
                            "stream {} seq {} follows a gap",
                            StreamId(stream_id),
                            found.seq
                        ),
                    ));
                }
                let segment = entry.loc.segment();
                let gen = log.segments[segment as usize]
                    .segment_gen
                    .load(Ordering::Relaxed);
                orphans.push((
                    segment,
                    CrcKey::new(layout.pool_nonce, gen),
                    entry.loc.offset_bytes(),
                ));
            }
            index.entries.shrink_to_fit();
            for entry in &index.entries {
                log.count_recovered(*entry);
                report.live_bytes += u64::from(entry.size_bytes);
            }
            report.live_records += index.entries.len() as u64;
            streams_built.push(Stream::new(
                StreamId(stream_id),
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
            let key = key.at(u64::from(offset_bytes));
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
        // Cold files with nothing live are deleted; sealed segments with nothing live and
        // the persistent-memory copies of cold segments are scrubbed (nobody reads yet).
        for slot in log.cold_table.read().iter() {
            if slot.live_records.load(Ordering::Relaxed) == 0 {
                log.cold.delete(slot.segment_gen)?;
                slot.deleted.store(true, Ordering::Relaxed);
                report.cold_files_deleted += 1;
            }
        }
        for segment in 0..layout.segment_count as u32 {
            let meta = &log.segments[segment as usize];
            let dead = meta.entry.lock().entry.state == SegmentState::Sealed
                && meta.live_records.load(Ordering::Relaxed) == 0;
            if dead {
                scrub_now.push(segment);
            }
        }
        for segment in scrub_now {
            log.scrub_in_recovery(segment, &mut free);
            report.segments_scrubbed += 1;
        }
        log.space.lock().free = free;
        report.duration = started.elapsed();
        Ok((log, report))
    }

    /// Rewrites the segment table entry with a new state, keeping the rest.
    fn set_state(&self, segment: u32, state: SegmentState) -> SegmentEntry {
        let mut current = self.segments[segment as usize].entry.lock();
        let cold_id = if state == SegmentState::Sealed {
            0
        } else {
            current.entry.cold_id
        };
        let next = SegmentEntry {
            state,
            cold_id,
            ..current.entry
        };
        self.store_entry(segment, &mut current, next);
        current.entry
    }

    fn location_of(&self, loc: Loc) -> Location {
        if loc.is_cold() {
            let segment_gen = self.cold_table.read()[loc.cold_slot() as usize].segment_gen;
            Location::ColdSegment { segment_gen }
        } else {
            Location::Record {
                segment: loc.segment(),
                offset_bytes: loc.offset_bytes().into(),
            }
        }
    }

    fn count_recovered(&self, entry: IndexEntry) {
        let size = i64::from(entry.size_bytes);
        if entry.loc.is_cold() {
            let slot =
                std::sync::Arc::clone(&self.cold_table.read()[entry.loc.cold_slot() as usize]);
            slot.live_records.fetch_add(1, Ordering::Relaxed);
            slot.live_bytes.fetch_add(size, Ordering::Relaxed);
        } else {
            let meta = &self.segments[entry.loc.segment() as usize];
            meta.live_records.fetch_add(1, Ordering::Relaxed);
            meta.live_bytes.fetch_add(size, Ordering::Relaxed);
        }
    }

    /// Adds a cold file's records to the streams they belong to.
    fn index_cold_file(
        &self,
        file: ColdSegment,
        live_slots: &IdMap<(u32, stream_slot::StreamSlot)>,
        slot_infos: &[SlotInfo],
        per_stream: &mut IdMap<Vec<Found>>,
        report: &mut RecoveryReport,
    ) -> Result<()> {
        let cold_loc = {
            let mut table = self.cold_table.write();
            table.push(std::sync::Arc::new(ColdSlot {
                segment_gen: file.segment_gen,
                live_records: AtomicI64::new(0),
                live_bytes: AtomicI64::new(0),
                stored_bytes: file.stored_bytes,
                deleted: AtomicBool::new(false),
            }));
            Loc::cold((table.len() - 1) as u32)
        };
        report.cold_segments += 1;
        for record in &file.records {
            if record.payload_len as u64 > self.layout.max_payload_bytes {
                return Err(EngineError::corruption(
                    Location::ColdSegment {
                        segment_gen: file.segment_gen,
                    },
                    CorruptKind::BadField {
                        field: "payload length",
                    },
                    format!(
                        "record of {} bytes is larger than any record",
                        record.payload_len
                    ),
                ));
            }
            let Some((_, slot)) = live_slots.get(&record.stream_id) else {
                check_slot_not_behind(slot_infos, record.stream_id, || Location::ColdSegment {
                    segment_gen: file.segment_gen,
                })?;
                continue;
            };
            if record.seq < slot.first_seq {
                continue;
            }
            let size_bytes = record::record_size_bytes(record.payload_len as usize) as u32;
            let entry = IndexEntry {
                loc: cold_loc,
                size_bytes,
            };
            per_stream.entry(record.stream_id).or_default().push(Found {
                seq: record.seq,
                entry,
                batch: None,
            });
        }
        Ok(())
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

/// Maps keyed by stream id, looked up once or twice per recovered record (a multiplicative
/// hash instead of SipHash; see [`IntHasher`](crate::IntHasher)).
type IdMap<V> = HashMap<u64, V, crate::IntBuildHasher>;

#[cfg(test)]
mod tests {
    use pmem_emul::SimPmem;

    use crate::format::record::RECORD_HEADER_BYTES;
    use crate::format::segment::SEGMENT_HEADER_BYTES;
    use crate::log::{Log, LogConfig, OpenOptions};

    /// Lane 0 holds an incomplete batch {S:1, S:2} (its last record torn); lane 1 a complete
    /// batch {S:3, T:0} written after it (concurrent writers make this a real crash state:
    /// the second batch was durable but waiting in publish for S:1 and S:2). S:3 follows a
    /// gap, so its batch was never acknowledged and T:0 must go too.
    #[test]
    fn a_batch_with_a_record_past_a_gap_is_voided_whole() {
        let config = LogConfig {
            segment_size_bytes: 16 * 1024,
            stream_slot_count: 4,
        };
        let log = Log::create(
            SimPmem::new(256 * 1024),
            config,
            OpenOptions { lane_count: 2 },
        )
        .unwrap();
        let s = log.create_stream(b"s").unwrap();
        let t = log.create_stream(b"t").unwrap();
        // The test thread claims a lane of its own (lane_count 2: at most one lane is
        // owned); a second thread can only hold the other, shared lane.
        log.append(s, b"s0").unwrap();
        log.append_batch(&[(s, b"s1"), (s, b"s2")]).unwrap();
        std::thread::scope(|scope| {
            scope.spawn(|| log.append_batch(&[(s, b"s3"), (t, b"t0")]).unwrap());
        });
        let segment_of = |id, seq| {
            let (entry, _) = log.stream(id).unwrap().lookup(seq);
            entry.unwrap().loc.segment()
        };
        let lane0_segment = segment_of(s, 0);
        let lane1_segment = segment_of(t, 0);
        assert_eq!(segment_of(s, 2), lane0_segment);
        assert_eq!(segment_of(s, 3), lane1_segment);
        assert_ne!(lane0_segment, lane1_segment);
        let layout = log.layout;
        let mut image = log.pmem().volatile_image();
        // Lane 0: s0 at the segment's start, then s1 (more), s2 (last): tear s2's header.
        let s2 = layout.segment_offset(lane0_segment) + SEGMENT_HEADER_BYTES + 2 * 64;
        image[s2..s2 + RECORD_HEADER_BYTES].fill(0);

        let (log, report) =
            Log::open(SimPmem::from_image(image), OpenOptions { lane_count: 2 }).unwrap();
        assert_eq!(report.incomplete_batch_records_dropped, 1);
        assert_eq!(report.orphans_voided, 2, "{report:?}");
        assert_eq!(log.bounds(s).unwrap(), (0, 1));
        assert_eq!(log.bounds(t).unwrap(), (0, 0), "the batch survived in part");
        assert!(crate::verify(log.pmem()).unwrap().is_clean());
        // Idempotent: a second recovery finds the same state and repairs nothing more.
        let pmem = log.close();
        let (log, again) = Log::open(pmem, OpenOptions { lane_count: 2 }).unwrap();
        assert_eq!((again.orphans_voided, again.torn_tails_dropped), (0, 0));
        assert_eq!(log.bounds(t).unwrap(), (0, 0));
        // The streams go on densely.
        assert_eq!(
            log.append_batch(&[(t, b"t0'"), (s, b"s1'")]).unwrap(),
            vec![0, 1]
        );
    }
}

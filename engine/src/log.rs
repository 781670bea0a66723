//! The log: lanes, streams, segments; append, read, trim, delete.
//!
//! # Lanes
//! Appends go through one of `lane_count` lanes. A lane owns one open segment at a time and
//! writes one record (or one batch) into it at a time: header + payload, flush, one fence.
//! A thread keeps using the lane it last got (a thread-local hint) and takes another free
//! lane with `try_lock` if that one is busy, so appenders on different threads do not wait
//! for each other while there are at least as many lanes as appending threads. There is no
//! global lock on the append path: the lane mutex is per lane, the stream mutex per stream.
//!
//! Because a lane starts a record only after the previous one is durable, only the last
//! write of a lane can be torn by a crash, and a crashed writer can never hide acknowledged
//! records behind it: there are none behind it in its lane, and other lanes are scanned on
//! their own.
//!
//! # Ordering within a stream
//! Seqs are taken under the lane lock and the stream lock, so within a lane a stream's
//! records are in seq order; across lanes they may complete out of order. An append is
//! acknowledged only when its seq and every lower one are durable (see `Stream`), so after a
//! crash each stream's records form a dense prefix; recovery voids anything past a gap.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam::queue::SegQueue;
use crossbeam::utils::CachePadded;
use crossbeam_epoch::{self as epoch, Guard};
use parking_lot::{MappedRwLockReadGuard, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use pmem_emul::{Pmem, ATOMIC_STORE_BYTES};

use crate::cold::{ColdPayload, ColdSource, ColdTier, NoColdTier};
use crate::error::{EngineError, Location, Result};
use crate::format::record::{self, CrcKey, HeaderCheck, RecordHeader, RECORD_HEADER_BYTES};
use crate::format::segment::{
    SegmentEntry, SegmentHeader, SegmentState, SEGMENT_ENTRY_SLOT_BYTES, SEGMENT_HEADER_BYTES,
};
use crate::format::stream_slot::{self, SlotState, MAX_LABEL_BYTES, STREAM_SLOT_BYTES};
use crate::format::superblock::Superblock;
use crate::layout::Layout;
use crate::recovery::RecoveryReport;
use crate::scan;
use crate::stream::{BatchStreams, Index, IndexEntry, Loc, Stream};
use crate::StreamId;

/// Payloads at least this long are copied with non-temporal stores (no flush needed).
const NT_COPY_MIN_BYTES: usize = 4096;

/// How a new pool is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    pub segment_size_bytes: u64,
    pub stream_slot_count: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_size_bytes: 4 << 20,
            stream_slot_count: 4096,
        }
    }
}

/// Run-time settings (not stored in the pool).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    /// Number of append lanes; at least the number of threads that append at once.
    pub lane_count: usize,
}

impl Default for OpenOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        OpenOptions {
            lane_count: (2 * cores).clamp(4, 64),
        }
    }
}

/// The segment a lane appends into.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenSegment {
    pub segment: u32,
    pub key: CrcKey,
    pub tail_bytes: u64,
    pub record_count: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Lane {
    pub lane_index: u16,
    pub current: Option<OpenSegment>,
    /// Live records and bytes written into `current` and not yet added to its counters.
    pub unsettled_records: i64,
    pub unsettled_bytes: i64,
    pub appends: u64,
    pub records: u64,
    pub bytes: u64,
    pub fences: u64,
}

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

#[derive(Debug, Clone, Copy)]
pub(crate) struct SlotInfo {
    pub incarnation: u32,
    pub state: SlotState,
}

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

/// A stream as `list_streams` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    pub id: StreamId,
    pub label: Vec<u8>,
    pub first_seq: u64,
    pub next_seq: u64,
}

/// A record read back. From the hot tier it is a zero-copy borrow of persistent memory whose
/// space is not reused while this value exists (it holds an epoch guard); from the cold tier
/// it owns a copy.
pub struct Record<'a> {
    _guard: Option<Guard>,
    stream: StreamId,
    seq: u64,
    payload: Payload<'a>,
}

enum Payload<'a> {
    Hot(&'a [u8]),
    Cold(Vec<u8>),
}

impl Record<'_> {
    pub fn stream(&self) -> StreamId {
        self.stream
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn payload(&self) -> &[u8] {
        match &self.payload {
            Payload::Hot(bytes) => bytes,
            Payload::Cold(bytes) => bytes,
        }
    }

    /// Whether the record was served from the cold tier.
    pub fn is_cold(&self) -> bool {
        matches!(self.payload, Payload::Cold(_))
    }
}

impl std::fmt::Debug for Record<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("stream", &self.stream)
            .field("seq", &self.seq)
            .field("payload_len", &self.payload().len())
            .field("cold", &self.is_cold())
            .finish()
    }
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

/// The durable multi-stream append log on persistent memory `P`, with cold tier `C`.
pub struct Log<P: Pmem, C: ColdTier = NoColdTier> {
    pub(crate) pmem: P,
    pub(crate) layout: Layout,
    pub(crate) lanes: Box<[CachePadded<Mutex<Lane>>]>,
    pub(crate) streams: Box<[RwLock<Option<Arc<Stream>>>]>,
    /// Slot states for create/delete; also serializes them (off the append path).
    pub(crate) slots: Mutex<Vec<SlotInfo>>,
    pub(crate) segments: Box<[SegmentMeta]>,
    pub(crate) space: Mutex<Space>,
    /// Segments whose readers have all left, waiting to be scrubbed.
    pub(crate) scrub_queue: Arc<SegQueue<u32>>,
    pub(crate) cold: C,
    /// Cold segments by slot (slots are never reused; `Loc::cold` names a slot).
    pub(crate) cold_table: RwLock<Vec<Arc<ColdSlot>>>,
    pub(crate) counters: Counters,
    pub(crate) opened_at: std::time::Instant,
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

static NEXT_THREAD_LANE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static LANE_HINT: Cell<usize> = Cell::new(NEXT_THREAD_LANE.fetch_add(1, Ordering::Relaxed));
}

fn random_nonce() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(std::process::id().into());
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    hasher.finish() | 1
}

impl<P: Pmem> Log<P, NoColdTier> {
    /// Formats `pmem` as an empty log without a cold tier. Refuses a formatted pool.
    pub fn create(pmem: P, config: LogConfig, options: OpenOptions) -> Result<Log<P>> {
        Log::create_with_cold(pmem, NoColdTier, config, options)
    }

    /// Opens a formatted pool without a cold tier, recovering from whatever crash left it.
    pub fn open(pmem: P, options: OpenOptions) -> Result<(Log<P>, RecoveryReport)> {
        Log::open_with_cold(pmem, NoColdTier, options)
    }
}

impl<P: Pmem, C: ColdTier> Log<P, C> {
    /// Formats `pmem` as an empty log whose cold segments go to `cold`. Refuses a pool that
    /// already holds a log.
    pub fn create_with_cold(
        pmem: P,
        cold: C,
        config: LogConfig,
        options: OpenOptions,
    ) -> Result<Log<P, C>> {
        if Superblock::decode(pmem.read(0, 128)).is_ok() {
            return Err(EngineError::AlreadyFormatted);
        }
        let pool_bytes = pmem.len_bytes() as u64;
        let layout = Layout::plan(
            pool_bytes,
            config.segment_size_bytes,
            config.stream_slot_count,
            random_nonce(),
        )?;
        // Zero every table, persist, then write the superblock last: a pool whose format was
        // interrupted has no valid superblock and is formatted again from scratch.
        let tables_bytes = (layout.segments_offset - layout.stream_table_offset) as usize;
        pmem.zero_nt(layout.stream_table_offset as usize, tables_bytes);
        pmem.zero_nt(0, crate::format::superblock::SUPERBLOCK_REGION_BYTES);
        pmem.fence();
        for segment in 0..layout.segment_count as u32 {
            let base = layout.segment_offset(segment);
            if !crate::format::is_zero(pmem.read(base, layout.segment_size_bytes as usize)) {
                pmem.zero_nt(base, layout.segment_size_bytes as usize);
            }
        }
        pmem.fence();
        let superblock = layout.superblock().encode();
        pmem.write(0, &superblock);
        pmem.persist(0, superblock.len());
        let log = Log::assemble(pmem, cold, layout, options);
        {
            let mut space = log.space.lock();
            space.free = (0..layout.segment_count as u32).rev().collect();
            space.next_gen = 1;
        }
        log.slots
            .lock()
            .extend((0..layout.stream_slot_count).map(|_| SlotInfo {
                incarnation: 0,
                state: SlotState::Free,
            }));
        Ok(log)
    }

    /// Builds the in-memory skeleton; recovery or create fills it.
    pub(crate) fn assemble(pmem: P, cold: C, layout: Layout, options: OpenOptions) -> Log<P, C> {
        let lane_count = options.lane_count.clamp(1, usize::from(u16::MAX));
        let lanes = (0..lane_count)
            .map(|i| {
                CachePadded::new(Mutex::new(Lane {
                    lane_index: i as u16,
                    ..Lane::default()
                }))
            })
            .collect();
        let streams = (0..layout.stream_slot_count)
            .map(|_| RwLock::new(None))
            .collect();
        let segments = (0..layout.segment_count)
            .map(|_| SegmentMeta {
                entry: Mutex::new(EntryState {
                    entry: SegmentEntry::NEVER_USED,
                    slot: 1,
                    released: false,
                }),
                segment_gen: AtomicU64::new(0),
                live_records: AtomicI64::new(0),
                live_bytes: AtomicI64::new(0),
                last_access_ms: AtomicU64::new(0),
            })
            .collect();
        Log {
            pmem,
            layout,
            lanes,
            streams,
            slots: Mutex::new(Vec::new()),
            segments,
            space: Mutex::new(Space::default()),
            scrub_queue: Arc::new(SegQueue::new()),
            cold,
            cold_table: RwLock::new(Vec::new()),
            counters: Counters::default(),
            opened_at: std::time::Instant::now(),
        }
    }

    /// Closes the log. Every acknowledged record is already durable; this hands the pool
    /// back (to close or reopen it).
    pub fn close(self) -> P {
        self.pmem
    }

    /// Closes the log and hands back both the pool and the cold tier.
    pub fn close_with_cold(self) -> (P, C) {
        (self.pmem, self.cold)
    }

    pub fn cold(&self) -> &C {
        &self.cold
    }

    pub fn pmem(&self) -> &P {
        &self.pmem
    }

    /// Largest payload a record may carry in this pool.
    pub fn max_payload_bytes(&self) -> usize {
        self.layout.max_payload_bytes as usize
    }

    pub fn segment_size_bytes(&self) -> u64 {
        self.layout.segment_size_bytes
    }

    // ----- streams -------------------------------------------------------------------

    /// Creates a stream, durably. `label` (at most 31 bytes) is stored with it.
    pub fn create_stream(&self, label: &[u8]) -> Result<StreamId> {
        if label.len() > MAX_LABEL_BYTES {
            return Err(EngineError::LabelTooLong {
                len_bytes: label.len(),
                max_bytes: MAX_LABEL_BYTES,
            });
        }
        let mut slots = self.slots.lock();
        let Some(slot) = slots.iter().position(|s| s.state != SlotState::Live) else {
            return Err(EngineError::StreamTableFull {
                slot_count: self.layout.stream_slot_count,
            });
        };
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
    fn stream_locked(&self, id: StreamId) -> Result<MappedRwLockReadGuard<'_, Arc<Stream>>> {
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

    // ----- append --------------------------------------------------------------------

    fn check_payload(&self, len_bytes: usize) -> Result<()> {
        if len_bytes > self.max_payload_bytes() {
            return Err(EngineError::PayloadTooLarge {
                len_bytes,
                max_bytes: self.max_payload_bytes(),
            });
        }
        Ok(())
    }

    fn acquire_lane(&self) -> MutexGuard<'_, Lane> {
        let lane_count = self.lanes.len();
        let hint = LANE_HINT.with(Cell::get) % lane_count;
        for step in 0..lane_count {
            let candidate = (hint + step) % lane_count;
            if let Some(lane) = self.lanes[candidate].try_lock() {
                if step != 0 {
                    LANE_HINT.with(|h| h.set(candidate));
                }
                return lane;
            }
        }
        self.lanes[hint].lock()
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
            let mut lane = self.acquire_lane();
            let open = self.room_for(&mut lane, size_bytes)?;
            let loc = Loc::new(open.segment, open.tail_bytes as u32);
            let seq = stream.reserve(IndexEntry {
                loc,
                size_bytes: size_bytes as u32,
            })?;
            lane.unsettled_records += 1;
            lane.unsettled_bytes += size_bytes as i64;
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
            lane.appends += 1;
            lane.fences += 1;
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
            let mut lane = self.acquire_lane();
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
            lane.unsettled_records += records.len() as i64;
            lane.unsettled_bytes += batch_bytes as i64;
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
            lane.fences += 1;
            lane.appends += 1;
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
        let header_bytes = record::encode(header, open.key);
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

    fn advance_lane(&self, lane: &mut Lane, offset: usize, size_bytes: u64) {
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
        lane.records += 1;
        lane.bytes += size_bytes;
    }

    /// Adds what a lane wrote into `segment` to the segment's live counters.
    fn settle_live(&self, segment: u32, lane: &mut Lane) {
        let meta = &self.segments[segment as usize];
        meta.live_records
            .fetch_add(lane.unsettled_records, Ordering::AcqRel);
        meta.live_bytes
            .fetch_add(lane.unsettled_bytes, Ordering::AcqRel);
        lane.unsettled_records = 0;
        lane.unsettled_bytes = 0;
    }

    /// The lane's open segment, with room for `size_bytes`; seals a full one and opens the
    /// next. Every record of the lane is durable here (each append and batch fences before
    /// it releases the lane), so the seal never covers an unfenced record, and a batch never
    /// spans two segments.
    fn room_for(&self, lane: &mut Lane, size_bytes: u64) -> Result<OpenSegment> {
        debug_assert!(size_bytes <= self.layout.batch_capacity_bytes());
        if let Some(open) = lane.current {
            if open.tail_bytes + size_bytes <= self.layout.segment_size_bytes {
                return Ok(open);
            }
        }
        let fresh = self.take_segment(lane.lane_index, size_bytes)?;
        lane.fences += 2; // segment header, then its table entry
        if let Some(full) = lane.current.replace(fresh) {
            self.settle_live(full.segment, lane);
            self.seal(full);
            lane.fences += 1;
        }
        Ok(fresh)
    }

    /// Takes a segment for a lane: a partly used open one left by recovery, else a free one.
    fn take_segment(&self, lane_index: u16, size_bytes: u64) -> Result<OpenSegment> {
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

    fn seal(&self, full: OpenSegment) {
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

    // ----- space ---------------------------------------------------------------------

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
    fn delete_cold_segments(&self, dead: &[Arc<ColdSlot>]) {
        for slot in dead {
            self.delete_cold(slot);
        }
    }

    /// Deletes a cold segment none of whose records is live. A failure leaves a file whose
    /// records are all dead: recovery ignores them and deletes it again.
    fn delete_cold(&self, slot: &ColdSlot) {
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

    // ----- read ----------------------------------------------------------------------

    /// Reads record `seq` of a stream: a zero-copy borrow, checked against its checksums.
    pub fn read(&self, id: StreamId, seq: u64) -> Result<Record<'_>> {
        // Pin before looking the record up, so its segment cannot be scrubbed in between.
        let guard = epoch::pin();
        let stream = self.stream(id)?;
        self.read_pinned(guard, &stream, seq)
    }

    /// Reads `seq` of `stream`; `guard` was pinned before the lookup.
    fn read_pinned(&self, guard: Guard, stream: &Stream, seq: u64) -> Result<Record<'_>> {
        let id = stream.id;
        let (entry, first_seq) = stream.lookup_live(seq)?;
        let next_seq = stream.durable_next();
        let entry = match entry {
            Some(entry) if seq < next_seq => entry,
            _ => {
                return Err(EngineError::SeqOutOfRange {
                    stream: id,
                    seq,
                    first_seq,
                    next_seq,
                })
            }
        };
        if entry.loc.is_cold() {
            drop(guard);
            let payload = self.read_cold(entry, id, seq)?;
            return Ok(Record {
                _guard: None,
                stream: id,
                seq,
                payload: Payload::Cold(payload),
            });
        }
        let payload = self.read_hot(entry, id, seq)?;
        self.touch(entry.loc.segment());
        Ok(Record {
            _guard: Some(guard),
            stream: id,
            seq,
            payload: Payload::Hot(payload),
        })
    }

    /// Notes a read for the age policy; stores only when the value moved a second, so
    /// concurrent readers do not fight over the line.
    fn touch(&self, segment: u32) {
        let meta = &self.segments[segment as usize];
        let now_ms = self.now_ms();
        if now_ms.saturating_sub(meta.last_access_ms.load(Ordering::Relaxed)) > 1000 {
            meta.last_access_ms.store(now_ms, Ordering::Relaxed);
        }
    }

    fn cold_slot(&self, loc: Loc) -> Arc<ColdSlot> {
        let table = self.cold_table.read();
        Arc::clone(&table[loc.cold_slot() as usize])
    }

    fn read_cold(&self, entry: IndexEntry, id: StreamId, seq: u64) -> Result<Vec<u8>> {
        let slot = self.cold_slot(entry.loc);
        let payload = self.cold.read(slot.segment_gen, id.0, seq)?;
        self.counters.cold_reads.fetch_add(1, Ordering::Relaxed);
        if record::record_size_bytes(payload.len()) != entry.size_bytes as usize {
            return Err(EngineError::corruption(
                Location::ColdSegment {
                    segment_gen: slot.segment_gen,
                },
                format!(
                    "record {id}/{seq} has {} payload bytes, the index says otherwise",
                    payload.len()
                ),
            ));
        }
        Ok(payload)
    }

    fn read_hot(&self, entry: IndexEntry, id: StreamId, seq: u64) -> Result<&[u8]> {
        let segment = entry.loc.segment();
        let offset_bytes = entry.loc.offset_bytes();
        let location = Location::Record {
            segment,
            offset_bytes: u64::from(offset_bytes),
        };
        let segment_gen = self.segments[segment as usize]
            .segment_gen
            .load(Ordering::Acquire);
        let key = CrcKey::new(self.layout.pool_nonce, segment_gen);
        let base = self.layout.segment_offset(segment) + offset_bytes as usize;
        let header = match record::decode_slice(self.pmem.read(base, RECORD_HEADER_BYTES), key) {
            HeaderCheck::Live(header) => header,
            other => {
                return Err(EngineError::corruption(
                    location,
                    format!("record header reads {other:?}"),
                ))
            }
        };
        let size = record::record_size_bytes(header.payload_len as usize);
        if header.stream_id != id.0 || header.seq != seq || size != entry.size_bytes as usize {
            return Err(EngineError::corruption(
                location,
                format!("expected stream {id} seq {seq}, found header {header:?}"),
            ));
        }
        let payload = self
            .pmem
            .read(base + RECORD_HEADER_BYTES, header.payload_len as usize);
        if record::payload_crc(payload) != header.payload_crc {
            return Err(EngineError::corruption(
                location,
                "payload checksum mismatch",
            ));
        }
        Ok(payload)
    }

    /// Iterates a stream from `from_seq` up to its durable tail at the time of each step.
    pub fn iter(&self, id: StreamId, from_seq: u64) -> Result<StreamIter<'_, P, C>> {
        Ok(StreamIter {
            log: self,
            stream: self.stream(id)?,
            next_seq: from_seq,
            finished: false,
        })
    }

    // ----- tiering ----------------------------------------------------------------------

    fn now_ms(&self) -> u64 {
        self.opened_at.elapsed().as_millis() as u64
    }

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
            let lane = lane.lock();
            stats.appends += lane.appends;
            stats.records_appended += lane.records;
            stats.bytes_appended += lane.bytes;
            stats.fences += lane.fences;
            stats.live_records += lane.unsettled_records as u64;
            stats.live_bytes += lane.unsettled_bytes as u64;
        }
        for meta in self.segments.iter() {
            stats.live_records = stats
                .live_records
                .wrapping_add_signed(meta.live_records.load(Ordering::Relaxed));
            stats.live_bytes = stats
                .live_bytes
                .wrapping_add_signed(meta.live_bytes.load(Ordering::Relaxed));
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

/// Iterator over a stream's records (see [`Log::iter`]).
pub struct StreamIter<'a, P: Pmem, C: ColdTier> {
    log: &'a Log<P, C>,
    /// Looked up once: a step costs one index lookup, not a stream table lookup too.
    stream: Arc<Stream>,
    next_seq: u64,
    /// Set once the stream was found deleted.
    finished: bool,
}

impl<'a, P: Pmem, C: ColdTier> Iterator for StreamIter<'a, P, C> {
    type Item = Result<Record<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        loop {
            let guard = epoch::pin();
            match self.log.read_pinned(guard, &self.stream, self.next_seq) {
                Ok(record) => {
                    self.next_seq += 1;
                    return Some(Ok(record));
                }
                // Trimmed past the iterator meanwhile: go on from the new first seq.
                Err(EngineError::SeqOutOfRange {
                    first_seq,
                    next_seq,
                    ..
                }) if self.next_seq < first_seq && first_seq < next_seq => {
                    self.next_seq = first_seq;
                }
                // At the durable tail (or a stream trimmed to empty): the end.
                Err(EngineError::SeqOutOfRange { .. }) => return None,
                // Deleted: said once, then the end.
                Err(error @ EngineError::UnknownStream(_)) => {
                    self.finished = true;
                    return Some(Err(error));
                }
                // A record that cannot be read (corruption, cold I/O) is reported in its
                // place and the iteration goes on after it.
                Err(error) => {
                    self.next_seq += 1;
                    return Some(Err(error));
                }
            }
        }
    }
}

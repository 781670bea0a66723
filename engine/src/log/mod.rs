//! The log: lanes, streams, segments; append, read, trim, delete.
//!
//! # Lanes
//! Appends go through one of `lane_count` lanes. A lane owns one open segment at a time and
//! writes one record (or one batch) into it at a time: header + payload, flush, one fence.
//! A thread claims a lane of its own on its first append and keeps it until it exits, so
//! its appends take no lock for the lane (see `lane`); while every lane but one is owned,
//! further threads share the remaining lanes, holding one per append. There is no global
//! lock on the append path: a lane is one thread's at a time, the stream mutex per stream.
//!
//! Because a lane starts a record only after the previous one is durable, only the last
//! write of a lane can be torn by a crash, and a crashed writer can never hide acknowledged
//! records behind it: there are none behind it in its lane, and other lanes are scanned on
//! their own.
//!
//! # Ordering within a stream
//! Seqs are taken while the lane is held and under the stream lock, so within a lane a stream's
//! records are in seq order; across lanes they may complete out of order. An append is
//! acknowledged only when its seq and every lower one are durable (see `Stream`), so after a
//! crash each stream's records form a dense prefix; recovery voids anything past a gap.

mod append;
mod lane;
mod migration;
mod read;
mod space;
mod stats;
mod streams;

pub use migration::MigrationOutcome;
pub use read::{Record, StreamIter};
pub use stats::{LogStats, SegmentInfo, TierStats};
pub use streams::StreamInfo;

pub(crate) use append::OpenSegment;
pub use append::NT_COPY_MIN_BYTES;
pub(crate) use lane::Lanes;
pub(crate) use migration::ColdSlot;
pub(crate) use space::{EntryState, SegmentMeta, Space};
pub(crate) use stats::Counters;
pub(crate) use streams::SlotInfo;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::Arc;

use crossbeam::queue::SegQueue;
use parking_lot::{Mutex, RwLock};
use pmem_emul::Pmem;

use crate::cold::{ColdTier, NoColdTier};
use crate::error::{EngineError, Result};
use crate::format::segment::SegmentEntry;
use crate::format::stream_slot::SlotState;
use crate::format::superblock::{copy_offset, FORMAT_MARKER_RUNNING, SUPERBLOCK_REGION_BYTES};
use crate::layout::Layout;
use crate::probe::Probe;
use crate::recovery::RecoveryReport;
use crate::stream::Stream;

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

/// The durable multi-stream append log on persistent memory `P`, with cold tier `C`.
pub struct Log<P: Pmem, C: ColdTier = NoColdTier> {
    pub(crate) pmem: P,
    pub(crate) layout: Layout,
    pub(crate) lanes: Arc<Lanes>,
    pub(crate) streams: Box<[RwLock<Option<Arc<Stream>>>]>,
    /// Slot states for create/delete; also serializes them (off the append path).
    pub(crate) slots: Mutex<Vec<SlotInfo>>,
    /// Every slot below this index is live (changed only under `slots`): where the search
    /// for a free slot starts, so that creating the n-th stream is not O(n).
    pub(crate) slot_search_from: std::sync::atomic::AtomicUsize,
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
    /// Formats `pmem` as an empty log whose cold segments go to `cold`. Formats only a pool
    /// that `probe`s `Blank`: a formatted pool is `AlreadyFormatted`, a damaged one the
    /// superblock's `Corruption`, another format version `UnsupportedVersion`.
    pub fn create_with_cold(
        pmem: P,
        cold: C,
        config: LogConfig,
        options: OpenOptions,
    ) -> Result<Log<P, C>> {
        match crate::probe::probe(&pmem)? {
            Probe::Blank { .. } => {}
            Probe::Formatted { .. } => return Err(EngineError::AlreadyFormatted),
            // Bytes no superblock copy vouches for: never formatted over.
            Probe::Damaged { copy_a, copy_b } => {
                return Err(crate::probe::damage_error(copy_a, copy_b))
            }
        }
        let pool_bytes = pmem.len_bytes() as u64;
        let layout = Layout::plan(
            pool_bytes,
            config.segment_size_bytes,
            config.stream_slot_count,
            random_nonce(),
        )?;
        // The format protocol (docs/FORMAT.md, superblock v2): the marker word `FORMATNG`
        // first, persisted; then zeros everywhere else (both superblock pages, the tables,
        // any segment not already zero); then copy B and last copy A, each persisted. A pool
        // whose format was interrupted probes `Blank` (only the marker and zeros are there)
        // until copy B is durable, and `Formatted` from then on.
        pmem.write(0, &FORMAT_MARKER_RUNNING);
        pmem.persist(0, FORMAT_MARKER_RUNNING.len());
        let marker_bytes = FORMAT_MARKER_RUNNING.len();
        pmem.zero_nt(marker_bytes, SUPERBLOCK_REGION_BYTES - marker_bytes);
        let tables_bytes = (layout.segments_offset - layout.stream_table_offset) as usize;
        pmem.zero_nt(layout.stream_table_offset as usize, tables_bytes);
        for segment in 0..layout.segment_count as u32 {
            let base = layout.segment_offset(segment);
            if !crate::format::is_zero(pmem.read(base, layout.segment_size_bytes as usize)) {
                pmem.zero_nt(base, layout.segment_size_bytes as usize);
            }
        }
        pmem.fence();
        let superblock = layout.superblock().encode();
        for copy in [1, 0] {
            let offset = copy_offset(copy);
            pmem.write(offset, &superblock);
            pmem.persist(offset, superblock.len());
        }
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
        let lanes = Lanes::new(lane_count);
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
            slot_search_from: std::sync::atomic::AtomicUsize::new(0),
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

    /// Milliseconds since the log was opened (for the age policy).
    pub(super) fn now_ms(&self) -> u64 {
        self.opened_at.elapsed().as_millis() as u64
    }
}

//! In-memory state of one stream: sequence numbers, durability watermark and record index.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex, RwLock};

use crate::error::{EngineError, Result};
use crate::format::stream_slot::SEQ_LIMIT;
use crate::StreamId;

/// Where a record lives: segment index (high 32 bits) and byte offset in it (low 32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc(u64);

impl Loc {
    pub fn new(segment: u32, offset_bytes: u32) -> Loc {
        Loc((u64::from(segment) << 32) | u64::from(offset_bytes))
    }

    pub fn segment(self) -> u32 {
        (self.0 >> 32) as u32
    }

    pub fn offset_bytes(self) -> u32 {
        self.0 as u32
    }
}

/// A record's place and size, as the index keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub loc: Loc,
    pub size_bytes: u32,
}

#[derive(Debug, Default)]
pub(crate) struct Index {
    /// Seq of `entries[0]`.
    pub first_seq: u64,
    pub entries: VecDeque<IndexEntry>,
}

impl Index {
    pub fn get(&self, seq: u64) -> Option<IndexEntry> {
        let position = seq.checked_sub(self.first_seq)?;
        self.entries.get(usize::try_from(position).ok()?).copied()
    }
}

#[derive(Debug)]
struct AppendState {
    next_seq: u64,
    deleted: bool,
    /// Durable seqs above the watermark (a later append finished before an earlier one).
    done_early: BTreeSet<u64>,
    watermark: u64,
    waiters: u32,
}

pub(crate) struct Stream {
    pub id: StreamId,
    pub slot: u32,
    pub label: Vec<u8>,
    append: Mutex<AppendState>,
    durable_cv: Condvar,
    /// Every seq below this is durable, hence readable.
    durable_next: AtomicU64,
    pub index: RwLock<Index>,
}

impl Stream {
    pub fn new(id: StreamId, slot: u32, label: Vec<u8>, index: Index) -> Stream {
        let next_seq = index.first_seq + index.entries.len() as u64;
        Stream {
            id,
            slot,
            label,
            append: Mutex::new(AppendState {
                next_seq,
                deleted: false,
                done_early: BTreeSet::new(),
                watermark: next_seq,
                waiters: 0,
            }),
            durable_cv: Condvar::new(),
            durable_next: AtomicU64::new(next_seq),
            index: RwLock::new(index),
        }
    }

    /// Seqs below this are durable.
    pub fn durable_next(&self) -> u64 {
        self.durable_next.load(Ordering::Acquire)
    }

    /// Takes the next seq for a record at `entry` and indexes it. The caller holds the lane,
    /// so records of one stream within a lane are written in seq order.
    pub fn reserve(&self, entry: IndexEntry) -> Result<u64> {
        let mut state = self.append.lock();
        if state.deleted {
            return Err(EngineError::UnknownStream(self.id));
        }
        let seq = state.next_seq;
        if seq + 1 >= SEQ_LIMIT {
            return Err(EngineError::SeqExhausted(self.id));
        }
        state.next_seq += 1;
        let mut index = self.index.write();
        debug_assert_eq!(index.first_seq + index.entries.len() as u64, seq);
        index.entries.push_back(entry);
        Ok(seq)
    }

    /// Marks `seq` durable (its record was fenced) and advances the readable watermark.
    pub fn mark_durable(&self, seq: u64) {
        let mut state = self.append.lock();
        if seq == state.watermark {
            state.watermark += 1;
            loop {
                let next = state.watermark;
                if !state.done_early.remove(&next) {
                    break;
                }
                state.watermark += 1;
            }
            self.durable_next.store(state.watermark, Ordering::Release);
            if state.waiters > 0 {
                self.durable_cv.notify_all();
            }
        } else {
            debug_assert!(seq > state.watermark);
            state.done_early.insert(seq);
        }
    }

    /// Returns once every seq up to `seq` is durable, so an acknowledged append implies
    /// that every earlier append of the stream survives a crash. Callers mark all their own
    /// records durable before waiting on any, so waits only ever point at lower seqs of
    /// writers that never wait first: no cycle.
    pub fn wait_durable(&self, seq: u64) {
        if self.durable_next() > seq {
            return;
        }
        let mut state = self.append.lock();
        while state.watermark <= seq {
            state.waiters += 1;
            self.durable_cv.wait(&mut state);
            state.waiters -= 1;
        }
    }

    /// Marks the stream deleted; later reservations fail. Returns the index it held.
    pub fn mark_deleted(&self) -> Index {
        let mut state = self.append.lock();
        state.deleted = true;
        std::mem::take(&mut *self.index.write())
    }

    /// Runs `f` with appends to this stream held off (for trim).
    pub fn with_appends_paused<R>(&self, f: impl FnOnce(bool) -> R) -> R {
        let state = self.append.lock();
        f(state.deleted)
    }
}

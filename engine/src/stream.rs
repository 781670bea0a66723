//! In-memory state of one stream: sequence numbers, durability watermark and record index.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam::utils::CachePadded;
use parking_lot::Mutex;

use crate::error::{EngineError, Result};
use crate::format::stream_slot::SEQ_LIMIT;
use crate::StreamId;

/// Where a record lives. Hot: segment index (bits 32..63) and byte offset in it (low 32
/// bits). Cold (top bit set): slot of its cold segment in the log's cold table (bits 32..62).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc(u64);

const COLD_BIT: u64 = 1 << 63;

impl Loc {
    pub fn new(segment: u32, offset_bytes: u32) -> Loc {
        debug_assert!(u64::from(segment) < COLD_BIT >> 32);
        Loc((u64::from(segment) << 32) | u64::from(offset_bytes))
    }

    pub fn cold(cold_slot: u32) -> Loc {
        debug_assert!(u64::from(cold_slot) < COLD_BIT >> 32);
        Loc(COLD_BIT | (u64::from(cold_slot) << 32))
    }

    pub fn is_cold(self) -> bool {
        self.0 & COLD_BIT != 0
    }

    /// Segment index of a hot location.
    pub fn segment(self) -> u32 {
        debug_assert!(!self.is_cold());
        (self.0 >> 32) as u32
    }

    pub fn offset_bytes(self) -> u32 {
        self.0 as u32
    }

    /// Cold table slot of a cold location.
    pub fn cold_slot(self) -> u32 {
        debug_assert!(self.is_cold());
        ((self.0 & !COLD_BIT) >> 32) as u32
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

/// The streams of one batch, each once and in slot order (the order their locks are taken
/// in), and for each record of the batch the position of its stream among them. Built once
/// per batch, so a batch of many records to few streams looks each stream up once.
pub(crate) struct BatchStreams {
    streams: Vec<Arc<Stream>>,
    of_record: Vec<usize>,
}

/// Up to this many distinct streams, a batch finds a record's stream by a linear search;
/// past it, through a hash map.
const BATCH_LINEAR_SEARCH_STREAMS: usize = 8;

impl BatchStreams {
    /// Resolves the stream of every record with `lookup`, once per distinct id.
    pub fn resolve(
        ids: impl ExactSizeIterator<Item = StreamId>,
        mut lookup: impl FnMut(StreamId) -> Result<Arc<Stream>>,
    ) -> Result<BatchStreams> {
        let mut streams: Vec<Arc<Stream>> = Vec::new();
        let mut of_record = Vec::with_capacity(ids.len());
        let mut by_id: HashMap<StreamId, usize> = HashMap::new();
        let mut last: Option<(StreamId, usize)> = None;
        for id in ids {
            let at = match last {
                Some((last_id, at)) if last_id == id => at,
                _ => {
                    let found = if streams.len() <= BATCH_LINEAR_SEARCH_STREAMS {
                        streams.iter().position(|s| s.id == id)
                    } else {
                        if by_id.is_empty() {
                            by_id.extend(streams.iter().enumerate().map(|(at, s)| (s.id, at)));
                        }
                        by_id.get(&id).copied()
                    };
                    let at = match found {
                        Some(at) => at,
                        None => {
                            streams.push(lookup(id)?);
                            if !by_id.is_empty() {
                                by_id.insert(id, streams.len() - 1);
                            }
                            streams.len() - 1
                        }
                    };
                    last = Some((id, at));
                    at
                }
            };
            of_record.push(at);
        }
        // Lock order: by slot (then address: a batch may race with the delete and
        // re-creation of a stream in the same slot).
        if streams.len() > 1 {
            let mut sorted: Vec<(usize, Arc<Stream>)> = streams.into_iter().enumerate().collect();
            sorted.sort_unstable_by_key(|(_, s)| (s.slot, Arc::as_ptr(s) as usize));
            let mut rank_of = vec![0usize; sorted.len()];
            for (rank, (at, _)) in sorted.iter().enumerate() {
                rank_of[*at] = rank;
            }
            for at in &mut of_record {
                *at = rank_of[*at];
            }
            streams = sorted.into_iter().map(|(_, stream)| stream).collect();
        }
        debug_assert!(streams.windows(2).all(|w| w[0].slot <= w[1].slot));
        Ok(BatchStreams { streams, of_record })
    }

    /// The stream of record `i`.
    #[cfg(test)]
    pub fn of(&self, i: usize) -> &Stream {
        &self.streams[self.of_record[i]]
    }
}

#[derive(Debug)]
struct StreamState {
    next_seq: u64,
    deleted: bool,
    index: Index,
}

pub(crate) struct Stream {
    pub id: StreamId,
    pub slot: u32,
    pub label: Vec<u8>,
    /// Padded: streams are separate allocations that may sit side by side, and two threads
    /// appending to two streams must not share a cache line.
    state: CachePadded<Mutex<StreamState>>,
    /// Every seq below this is durable, hence readable. Writers advance it in seq order,
    /// each with one plain release store (no read-modify-write after the fence).
    durable_next: CachePadded<AtomicU64>,
}

impl Stream {
    pub fn new(id: StreamId, slot: u32, label: Vec<u8>, index: Index) -> Stream {
        let next_seq = index.first_seq + index.entries.len() as u64;
        Stream {
            id,
            slot,
            label,
            state: CachePadded::new(Mutex::new(StreamState {
                next_seq,
                deleted: false,
                index,
            })),
            durable_next: CachePadded::new(AtomicU64::new(next_seq)),
        }
    }

    /// Seqs below this are durable.
    pub fn durable_next(&self) -> u64 {
        self.durable_next.load(Ordering::Acquire)
    }

    pub fn first_seq(&self) -> u64 {
        self.state.lock().index.first_seq
    }

    /// The index entry of `seq` (durable or not) and the stream's first seq.
    pub fn lookup(&self, seq: u64) -> (Option<IndexEntry>, u64) {
        let state = self.state.lock();
        (state.index.get(seq), state.index.first_seq)
    }

    /// As [`Stream::lookup`], for readers: a deleted stream is an error, not an empty one.
    pub fn lookup_live(&self, seq: u64) -> Result<(Option<IndexEntry>, u64)> {
        let state = self.state.lock();
        if state.deleted {
            return Err(EngineError::UnknownStream(self.id));
        }
        Ok((state.index.get(seq), state.index.first_seq))
    }

    /// Takes the next seq for a record at `entry` and indexes it. The caller holds the lane,
    /// so records of one stream within a lane are written in seq order. Every reserved seq
    /// must be published with [`Stream::publish`] once its record is durable.
    pub fn reserve(&self, entry: IndexEntry) -> Result<u64> {
        let mut state = self.state.lock();
        if state.deleted {
            return Err(EngineError::UnknownStream(self.id));
        }
        let seq = state.next_seq;
        if seq + 1 >= SEQ_LIMIT {
            return Err(EngineError::SeqExhausted(self.id));
        }
        state.next_seq += 1;
        debug_assert_eq!(
            state.index.first_seq + state.index.entries.len() as u64,
            seq
        );
        state.index.entries.push_back(entry);
        Ok(seq)
    }

    /// Publishes `seq` as durable, after every lower seq was: returns once it and every
    /// earlier record of the stream are durable, so an acknowledged append implies that all
    /// earlier appends of the stream survive a crash.
    ///
    /// Waits only for lower seqs, which were reserved earlier, by writers that publish their
    /// records in reservation order: the wait graph points strictly back in time, no cycle.
    pub fn publish(&self, seq: u64) {
        self.wait_durable_below(seq);
        self.durable_next.store(seq + 1, Ordering::Release);
    }

    /// Waits until every seq below `seq` is durable (published) and `seq` is not yet.
    fn wait_durable_below(&self, seq: u64) {
        let mut spins = 0u32;
        loop {
            let durable_next = self.durable_next.load(Ordering::Acquire);
            debug_assert!(durable_next <= seq, "seq {seq} published twice");
            if durable_next == seq {
                return;
            }
            if spins < 128 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
            spins += 1;
        }
    }

    /// Reserves the seqs of a batch, all or none: record `i` goes to
    /// `batch.streams[batch.of_record[i]]` at `entries[i]`. Every stream of the batch stays
    /// locked (in slot order, so two batches cannot deadlock) for the whole reservation: two
    /// writers sharing streams then reserve in the same order in every stream they share,
    /// which is what keeps [`Stream::publish_batch`] free of wait cycles. The caller holds
    /// the lane.
    pub fn reserve_batch(batch: &BatchStreams, entries: &[IndexEntry]) -> Result<Vec<u64>> {
        assert_eq!(batch.of_record.len(), entries.len(), "one entry per record");
        let mut guards: Vec<_> = batch.streams.iter().map(|s| s.state.lock()).collect();
        let mut counts = vec![0u64; batch.streams.len()];
        for &at in &batch.of_record {
            counts[at] += 1;
        }
        // Check everything first: nothing is reserved unless every record can be.
        for ((stream, state), &count) in batch.streams.iter().zip(&guards).zip(&counts) {
            if state.deleted {
                return Err(EngineError::UnknownStream(stream.id));
            }
            if state.next_seq + count >= SEQ_LIMIT {
                return Err(EngineError::SeqExhausted(stream.id));
            }
        }
        let mut seqs = Vec::with_capacity(entries.len());
        for (&at, entry) in batch.of_record.iter().zip(entries) {
            let state = &mut guards[at];
            let seq = state.next_seq;
            state.next_seq += 1;
            debug_assert_eq!(
                state.index.first_seq + state.index.entries.len() as u64,
                seq
            );
            state.index.entries.push_back(*entry);
            seqs.push(seq);
        }
        Ok(seqs)
    }

    /// Publishes a batch reserved with [`Stream::reserve_batch`] as a whole: first waits
    /// until, in every stream of the batch, every seq below the batch's is durable, and only
    /// then publishes any of its records. So no record of the batch becomes readable (nor
    /// can a later append of its streams be acknowledged) before the whole batch can be
    /// acknowledged, which is what lets recovery drop a batch whole.
    ///
    /// No wait cycle: a batch waits only for writers that finished reserving in a shared
    /// stream before it started reserving (reservations hold all of a batch's streams), so
    /// every wait points strictly back in time.
    pub fn publish_batch(batch: &BatchStreams, seqs: &[u64]) {
        assert_eq!(batch.of_record.len(), seqs.len(), "one seq per record");
        // Per stream: the lowest and highest seq of the batch; a stream's seqs in a batch
        // are consecutive, in record order.
        let mut ranges: Vec<Option<(u64, u64)>> = vec![None; batch.streams.len()];
        for (&at, &seq) in batch.of_record.iter().zip(seqs) {
            match &mut ranges[at] {
                Some(range) => {
                    debug_assert_eq!(range.1 + 1, seq, "a batch's seqs of a stream are dense");
                    range.1 = seq;
                }
                none => *none = Some((seq, seq)),
            }
        }
        for (stream, range) in batch.streams.iter().zip(&ranges) {
            if let Some((first, _)) = range {
                stream.wait_durable_below(*first);
            }
        }
        for (stream, range) in batch.streams.iter().zip(&ranges) {
            if let Some((_, last)) = range {
                stream.durable_next.store(last + 1, Ordering::Release);
            }
        }
    }

    /// Marks the stream deleted; later reservations fail. Returns the index it held.
    pub fn mark_deleted(&self) -> Index {
        let mut state = self.state.lock();
        state.deleted = true;
        std::mem::take(&mut state.index)
    }

    /// Points `seq` at its cold copy if it still lives at `hot`. Returns whether it did.
    pub fn move_to_cold(&self, seq: u64, hot: Loc, cold: Loc) -> bool {
        let mut state = self.state.lock();
        let first_seq = state.index.first_seq;
        let Some(position) = seq.checked_sub(first_seq) else {
            return false;
        };
        match state.index.entries.get_mut(position as usize) {
            Some(entry) if entry.loc == hot => {
                entry.loc = cold;
                true
            }
            _ => false,
        }
    }

    /// Drops index entries below `first_seq` after `persist` made the trim durable; appends
    /// to this stream wait meanwhile. Returns the dropped entries.
    pub fn trim(&self, first_seq: u64, persist: impl FnOnce()) -> Result<Vec<IndexEntry>> {
        let mut state = self.state.lock();
        if state.deleted {
            return Err(EngineError::UnknownStream(self.id));
        }
        let next_seq = self.durable_next();
        let indexed_end = state.index.first_seq + state.index.entries.len() as u64;
        if first_seq > next_seq || first_seq > indexed_end {
            return Err(EngineError::TrimBeyondTail {
                stream: self.id,
                first_seq,
                next_seq,
            });
        }
        if first_seq <= state.index.first_seq {
            return Ok(Vec::new());
        }
        persist();
        let count = (first_seq - state.index.first_seq) as usize;
        state.index.first_seq = first_seq;
        Ok(state.index.entries.drain(..count).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn stream(slot: u32) -> Arc<Stream> {
        Arc::new(Stream::new(
            StreamId(u64::from(slot) | (1 << 32)),
            slot,
            Vec::new(),
            Index::default(),
        ))
    }

    fn entry(offset_bytes: u32) -> IndexEntry {
        IndexEntry {
            loc: Loc::new(0, offset_bytes),
            size_bytes: 64,
        }
    }

    fn batch(streams: &[&Arc<Stream>]) -> BatchStreams {
        BatchStreams::resolve(streams.iter().map(|s| s.id), |id| {
            streams
                .iter()
                .find(|s| s.id == id)
                .map(|s| Arc::clone(s))
                .ok_or(EngineError::UnknownStream(id))
        })
        .unwrap()
    }

    /// A batch {T:0, S:1} must not publish T:0 while S:0 (another writer's) is not durable:
    /// else an append of T:1 could be acknowledged, and a crash that loses S:0 would void
    /// the batch (past a gap in S) and with it T:0, which T:1's ack promised.
    #[test]
    fn a_batch_publishes_nothing_until_all_of_it_can_be() {
        let (s, t) = (stream(0), stream(1));
        let first = Stream::reserve_batch(&batch(&[&s]), &[entry(64)]).unwrap();
        assert_eq!(first, vec![0]);
        let seqs = Stream::reserve_batch(&batch(&[&t, &s]), &[entry(128), entry(192)]).unwrap();
        assert_eq!(seqs, vec![0, 1]);
        let publisher = {
            let (s, t) = (Arc::clone(&s), Arc::clone(&t));
            std::thread::spawn(move || Stream::publish_batch(&batch(&[&t, &s]), &seqs))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(t.durable_next(), 0, "T:0 published before S:0 was durable");
        assert_eq!(s.durable_next(), 0);
        s.publish(0);
        publisher.join().unwrap();
        assert_eq!((s.durable_next(), t.durable_next()), (2, 1));
    }

    #[test]
    fn a_batch_reserves_all_or_nothing() {
        let (s, t) = (stream(0), stream(1));
        let _ = t.mark_deleted();
        let refused = Stream::reserve_batch(&batch(&[&s, &t]), &[entry(64), entry(128)]);
        assert!(matches!(refused, Err(EngineError::UnknownStream(_))));
        assert_eq!(
            s.lookup(0),
            (None, 0),
            "S reserved a seq for a refused batch"
        );
        assert_eq!(
            Stream::reserve_batch(&batch(&[&s, &s]), &[entry(64), entry(128)]).unwrap(),
            vec![0, 1]
        );
    }

    /// Records interleaved over more streams than the linear search covers, given out of
    /// slot order: each stream is looked up once, locked in slot order, and every record
    /// still maps to its own stream.
    #[test]
    fn batch_streams_resolve_each_stream_once_in_slot_order() {
        let all: Vec<Arc<Stream>> = (0..20u32).rev().map(stream).collect();
        let records: Vec<&Arc<Stream>> = (0..60).map(|i| &all[(i * 7) % all.len()]).collect();
        let mut lookups = Vec::new();
        let resolved = BatchStreams::resolve(records.iter().map(|s| s.id), |id| {
            lookups.push(id);
            Ok(Arc::clone(all.iter().find(|s| s.id == id).unwrap()))
        })
        .unwrap();
        lookups.sort_unstable();
        let before = lookups.len();
        lookups.dedup();
        assert_eq!(lookups.len(), before, "a stream was looked up twice");
        assert_eq!(lookups.len(), all.len());
        assert!(resolved.streams.windows(2).all(|w| w[0].slot < w[1].slot));
        for (i, record) in records.iter().enumerate() {
            assert_eq!(resolved.of(i).id, record.id, "record {i}");
        }
        let missing = StreamId(99 | (1 << 32));
        let refused = BatchStreams::resolve([all[0].id, missing].into_iter(), |id| {
            all.iter()
                .find(|s| s.id == id)
                .map(Arc::clone)
                .ok_or(EngineError::UnknownStream(id))
        });
        assert!(matches!(refused, Err(EngineError::UnknownStream(id)) if id == missing));
    }
}

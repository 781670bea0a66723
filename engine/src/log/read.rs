//! Reads: single records (hot and cold) and stream iterators.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_epoch::{self as epoch, Guard};
use pmem_emul::Pmem;

use super::{ColdSlot, Log};
use crate::cold::ColdTier;
use crate::error::{CorruptKind, EngineError, Location, Result};
use crate::format::record::{self, CrcKey, HeaderCheck, RECORD_HEADER_BYTES};
use crate::stream::{IndexEntry, Loc, Stream};
use crate::StreamId;

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

impl<P: Pmem, C: ColdTier> Log<P, C> {
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

    pub(super) fn cold_slot(&self, loc: Loc) -> Arc<ColdSlot> {
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
                CorruptKind::Mismatch {
                    field: "payload length",
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
        let key = CrcKey::new(self.layout.pool_nonce, segment_gen).at(u64::from(offset_bytes));
        let base = self.layout.segment_offset(segment) + offset_bytes as usize;
        let header = match record::decode_slice(self.pmem.read(base, RECORD_HEADER_BYTES), key) {
            HeaderCheck::Live(header) => header,
            other => {
                return Err(EngineError::corruption(
                    location,
                    CorruptKind::Checksum,
                    format!("record header reads {other:?}"),
                ))
            }
        };
        let size = record::record_size_bytes(header.payload_len as usize);
        if header.stream_id != id.0 || header.seq != seq || size != entry.size_bytes as usize {
            return Err(EngineError::corruption(
                location,
                CorruptKind::Mismatch {
                    field: "record stream/seq",
                },
                format!("expected stream {id} seq {seq}, found header {header:?}"),
            ));
        }
        let payload = self
            .pmem
            .read(base + RECORD_HEADER_BYTES, header.payload_len as usize);
        if record::payload_crc(payload) != header.payload_crc {
            return Err(EngineError::corruption(
                location,
                CorruptKind::Checksum,
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

//! [`ColdStore`]: the cold directory at run time — what is there, reading records back,
//! writing new files, deleting old ones, and statistics.
//!
//! Opening decides each directory entry by name and content:
//!
//! | entry                      | check                               | action                   |
//! |----------------------------|-------------------------------------|--------------------------|
//! | `seg-<gen>.pcold.tmp`      | none: never committed               | remove                   |
//! | `seg-<gen>.pcold`          | trailer, header, footer all valid,  | adopt; its index is in   |
//! |                            | and agreeing with the name          | the [`OpenReport`]       |
//! | `seg-<gen>.pcold`          | any of those invalid                | rename to `.corrupt`,    |
//! |                            |                                     | report as quarantined    |
//! | `seg-<gen>.pcold.corrupt`  | none                                | report                   |
//! | anything else              | none                                | ignore                   |
//!
//! A damaged final file is quarantined rather than deleted: by the write order it was complete
//! when committed, so damage means media trouble, and it may be the only copy of its records.
//! The engine decides with its segment table (see the crate documentation); it can delete
//! quarantined files with [`ColdStore::purge_quarantined`]. An I/O error while opening is
//! returned as is: a transient EIO must not look like damage.
//!
//! Data blocks are not read at open. Each record read verifies its block's checksums and the
//! record's payload crc; [`ColdStore::verify`] checks a whole file.

use std::collections::{BTreeMap, HashSet};
use std::io::ErrorKind;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::cache::BlockCache;
use crate::dir_sync::DirSyncGroup;
use crate::error::{CorruptKind, Result, Structure, TieringError};
use crate::format::{
    classify_file_name, cold_file_name, corrupt_file_name, decode_block, decode_block_cow,
    decode_file_header, decode_footer, decode_trailer, le_u32, mismatch, record_payload,
    temp_file_name, ColdFileIndex, FileKind, RecordEntry, BLOCK_HEADER_BYTES, FILE_ALIGN_BYTES,
    FILE_HEADER_BYTES, TRAILER_BYTES,
};
use crate::io::{align_down_u64, align_up_u64, IoBuf, IoFile, SegmentIo, StreamShape};
use crate::readahead::{ReadaheadState, ReadaheadWorker};
use crate::writer::{ColdRecord, ColdSegmentHandle, ColdWriter, ColdWriterConfig, SourceSegment};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColdStoreConfig {
    pub writer: ColdWriterConfig,
    /// Bytes of decompressed blocks kept in DRAM.
    pub cache_capacity_bytes: usize,
    /// I/O size of sequential scans ([`ColdStore::scan_segment`], [`ColdStore::verify`]).
    pub read_chunk_bytes: usize,
    /// Reads in flight during a scan.
    pub read_depth: usize,
    /// Read the next window of a stream in the background while a reader serves the
    /// current one (a thread per store; see the `readahead` module).
    pub async_readahead: bool,
}

impl Default for ColdStoreConfig {
    fn default() -> ColdStoreConfig {
        ColdStoreConfig {
            writer: ColdWriterConfig::default(),
            cache_capacity_bytes: 8 << 20,
            read_chunk_bytes: 1 << 20,
            read_depth: 8,
            async_readahead: true,
        }
    }
}

impl ColdStoreConfig {
    pub fn validate(&self) -> Result<()> {
        self.writer.validate()?;
        StreamShape {
            chunk_bytes: self.read_chunk_bytes,
            depth: self.read_depth,
        }
        .validate()
    }
}

/// A cold file that failed validation at open and was moved out of the way.
#[derive(Debug)]
pub struct QuarantinedFile {
    /// The name it had (`seg-<gen>.pcold`).
    pub name: String,
    pub segment_gen: u64,
    pub error: TieringError,
}

/// What [`ColdStore::open`] found.
#[derive(Debug, Default)]
pub struct OpenReport {
    /// Complete cold files, ascending by generation.
    pub files: Vec<Arc<ColdFileIndex>>,
    /// Temp files of interrupted migrations, removed.
    pub removed_temp: Vec<String>,
    /// Damaged final files, renamed to `.corrupt` (or left if even that failed).
    pub quarantined: Vec<QuarantinedFile>,
    /// `.corrupt` files from earlier opens, by generation.
    pub corrupt_files: Vec<u64>,
    /// Other names in the directory, left alone.
    pub ignored: Vec<String>,
    /// [`ColdStore::open_read_only`] only: temp files found and left in place.
    pub temp_kept: Vec<String>,
    /// [`ColdStore::open_read_only`] only: damaged final files found and left in place
    /// under their name (not served).
    pub damaged_kept: Vec<QuarantinedFile>,
}

/// Counters of the cold tier.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ColdStats {
    pub files: u64,
    pub records: u64,
    /// Bytes of cold files on SSD (headers, index and padding included).
    pub bytes_stored: u64,
    /// Bytes of record payloads in them.
    pub bytes_uncompressed: u64,
    pub migrations: u64,
    pub write_errors: u64,
    pub reads: u64,
    pub read_errors: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_bytes: u64,
    /// Bytes read from SSD by record reads and scans.
    pub bytes_read: u64,
    /// Windows of blocks the readahead thread read and cached.
    pub readahead_windows: u64,
    /// Reader misses that waited for the readahead thread's read of their block.
    pub readahead_waits: u64,
    /// Readahead offers dropped because the thread was busy.
    pub readahead_dropped: u64,
    /// Readahead reads that failed (the reader then read the block itself and got the error).
    pub readahead_errors: u64,
    /// Readahead jobs waiting for or running on the thread now.
    pub readahead_queued: u64,
}

impl ColdStats {
    /// Payload bytes per stored byte (above 1 when compression pays off).
    pub fn compression_ratio(&self) -> f64 {
        if self.bytes_stored == 0 {
            1.0
        } else {
            self.bytes_uncompressed as f64 / self.bytes_stored as f64
        }
    }
}

#[derive(Default)]
struct Counters {
    migrations: AtomicU64,
    write_errors: AtomicU64,
    reads: AtomicU64,
    read_errors: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    bytes_read: AtomicU64,
    readahead_windows: AtomicU64,
    readahead_waits: AtomicU64,
    readahead_dropped: AtomicU64,
    readahead_errors: AtomicU64,
    /// Jobs handed to the readahead thread and not yet done (a gauge).
    readahead_queued: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

struct ColdFile<F> {
    file: F,
    name: String,
    index: Arc<ColdFileIndex>,
    /// Where the last record read was in `index.records`: a reader going through a stream
    /// in seq order finds the next one right after it, without a binary search.
    last_position: AtomicUsize,
}

impl<F> ColdFile<F> {
    fn new(file: F, name: String, index: ColdFileIndex) -> ColdFile<F> {
        ColdFile {
            file,
            name,
            index: Arc::new(index),
            last_position: AtomicUsize::new(usize::MAX),
        }
    }

    /// Where record (stream_id, seq) is in the index's records.
    fn position(&self, stream_id: u64, seq: u64) -> Option<usize> {
        let records = &self.index.records;
        let guess = self.last_position.load(Ordering::Relaxed).wrapping_add(1);
        let position = match records.get(guess) {
            Some(record) if record.stream_id == stream_id && record.seq == seq => guess,
            _ => self.index.position(stream_id, seq)?,
        };
        self.last_position.store(position, Ordering::Relaxed);
        Some(position)
    }
}

/// A readahead job: load the window of blocks starting at record `position` of `file`.
struct Prefetch<F> {
    file: Arc<ColdFile<F>>,
    position: usize,
}

/// What readers, writers and the readahead thread share.
struct Shared<I: SegmentIo> {
    io: I,
    /// The files served, by segment generation.
    files: RwLock<BTreeMap<u64, Arc<ColdFile<I::File>>>>,
    config: ColdStoreConfig,
    cache: BlockCache,
    counters: Counters,
    readahead: ReadaheadState<Prefetch<I::File>>,
}

/// The cold directory. All methods take `&self` and may run from many threads at once:
/// readers share open files and the block cache; a migration holds no lock while it writes.
pub struct ColdStore<I: SegmentIo> {
    shared: Arc<Shared<I>>,
    writing: Mutex<HashSet<u64>>,
    dir_sync: DirSyncGroup,
    /// The readahead thread (see [`crate::readahead`]); `None` when
    /// [`ColdStoreConfig::async_readahead`] is off. Dropping the store joins it.
    worker: Option<ReadaheadWorker<Prefetch<I::File>>>,
}

impl<I: SegmentIo> ColdStore<I> {
    /// Opens the cold directory served by `io`: removes temp files, validates every cold
    /// file's trailer, header and footer, quarantines damaged ones, and returns the index of
    /// every complete file (see the module documentation).
    pub fn open(io: I, config: ColdStoreConfig) -> Result<(ColdStore<I>, OpenReport)> {
        ColdStore::open_with(io, config, true)
    }

    /// [`ColdStore::open`] that changes nothing in the directory: temp files and damaged
    /// files are reported (`temp_kept`, `damaged_kept`) and left where they are. For tools
    /// that must not write (`pstream verify`); the store serves the files that validate.
    pub fn open_read_only(io: I, config: ColdStoreConfig) -> Result<(ColdStore<I>, OpenReport)> {
        ColdStore::open_with(io, config, false)
    }

    fn open_with(
        io: I,
        config: ColdStoreConfig,
        clean_up: bool,
    ) -> Result<(ColdStore<I>, OpenReport)> {
        config.validate()?;
        let shared = Arc::new(Shared {
            cache: BlockCache::new(config.cache_capacity_bytes),
            io,
            files: RwLock::new(BTreeMap::new()),
            config,
            counters: Counters::default(),
            readahead: ReadaheadState::default(),
        });
        let worker = if shared.config.async_readahead {
            let shared = Arc::clone(&shared);
            ReadaheadWorker::start(move |job| shared.prefetch(job))
        } else {
            None
        };
        let store = ColdStore {
            shared,
            writing: Mutex::new(HashSet::new()),
            dir_sync: DirSyncGroup::default(),
            worker,
        };
        let report = store.scan_directory(clean_up)?;
        Ok((store, report))
    }

    fn scan_directory(&self, clean_up: bool) -> Result<OpenReport> {
        let mut report = OpenReport::default();
        let mut changed = false;
        for name in self.shared.io.list()? {
            match classify_file_name(&name) {
                FileKind::Temp(_) if !clean_up => report.temp_kept.push(name),
                FileKind::Temp(_) => match self.shared.io.remove(&name) {
                    Ok(()) => {
                        changed = true;
                        report.removed_temp.push(name);
                    }
                    Err(error) => tracing::warn!(name, %error, "could not remove a temp file"),
                },
                FileKind::Cold(segment_gen) => match self.load(&name, segment_gen) {
                    Ok(file) => {
                        report.files.push(Arc::clone(&file.index));
                        self.shared
                            .files
                            .write()
                            .insert(segment_gen, Arc::new(file));
                    }
                    Err(error) if error.is_corruption() && !clean_up => {
                        report.damaged_kept.push(QuarantinedFile {
                            name,
                            segment_gen,
                            error,
                        });
                    }
                    Err(error) if error.is_corruption() => {
                        tracing::error!(name, %error, "damaged cold file, quarantined");
                        let target = corrupt_file_name(segment_gen);
                        if let Err(rename_error) = self.shared.io.rename(&name, &target) {
                            tracing::warn!(name, %rename_error, "could not quarantine");
                        }
                        changed = true;
                        report.quarantined.push(QuarantinedFile {
                            name,
                            segment_gen,
                            error,
                        });
                    }
                    Err(error) => return Err(error),
                },
                FileKind::Corrupt(segment_gen) => report.corrupt_files.push(segment_gen),
                FileKind::Other => report.ignored.push(name),
            }
        }
        if changed {
            // Not needed for correctness (a resurrected temp file is removed again); it keeps
            // the next open from redoing the work.
            if let Err(error) = self.shared.io.sync_dir() {
                tracing::warn!(%error, "directory sync after cleanup failed");
            }
        }
        report.files.sort_by_key(|index| index.segment_gen());
        Ok(report)
    }

    /// Opens and validates one final-named file without reading its data blocks.
    fn load(&self, name: &str, segment_gen: u64) -> Result<ColdFile<I::File>> {
        let file = self.shared.io.open(name)?;
        let file_len = self.shared.io.file_len(&file)?;
        if file_len < FILE_ALIGN_BYTES || file_len % FILE_ALIGN_BYTES != 0 {
            let kind = CorruptKind::Mismatch {
                structure: Structure::File,
                field: "file length alignment",
                expected: align_up_u64(file_len.max(1)),
                found: file_len,
            };
            return Err(TieringError::Corrupt {
                file: name.into(),
                offset_bytes: file_len,
                kind,
            });
        }
        let trailer_at = file_len - TRAILER_BYTES as u64;
        let (buf, skip) = self
            .shared
            .read_range(&file, trailer_at, TRAILER_BYTES as u64)?;
        let trailer_bytes = &buf.as_slice()[skip..skip + TRAILER_BYTES];
        let trailer = decode_trailer(trailer_bytes).map_err(|e| e.in_file(name, trailer_at))?;
        let paired = [
            ("file_len_bytes", file_len, trailer.file_len_bytes),
            ("segment_gen", segment_gen, trailer.segment_gen),
        ];
        for (field, expected, found) in paired {
            if expected != found {
                let structure = Structure::Trailer;
                return Err(
                    mismatch(0, structure, field, expected, found).in_file(name, trailer_at)
                );
            }
        }
        let (buf, skip) = self.shared.read_range(&file, 0, FILE_HEADER_BYTES as u64)?;
        let header = decode_file_header(&buf.as_slice()[skip..]).map_err(|e| e.in_file(name, 0))?;
        drop(buf);
        let footer_at = trailer.footer_offset;
        let (buf, skip) = self
            .shared
            .read_range(&file, footer_at, trailer.footer_len_bytes)?;
        let footer_bytes = &buf.as_slice()[skip..skip + trailer.footer_len_bytes as usize];
        let footer = decode_footer(footer_bytes, segment_gen, footer_at)
            .map_err(|e| e.in_file(name, footer_at))?;
        let footer_crc = le_u32(footer_bytes, footer_bytes.len() - 4);
        let index = ColdFileIndex::assemble(header, &trailer, footer, footer_crc, file_len)
            .map_err(|e| e.in_file(name, 0))?;
        Ok(ColdFile::new(file, name.to_owned(), index))
    }

    /// Writes the cold file of `source` from its live records (`(stream_id, seq, payload)`
    /// tuples or [`ColdRecord`]s, see [`ColdWriter::write`]) and starts serving it. Several
    /// may run at once (one per segment); their directory syncs are shared (group commit). On error
    /// nothing was committed that the store or a later open would take as complete, except
    /// possibly a complete file whose directory sync failed (an orphan the engine's recovery
    /// deletes).
    pub fn write_segment<'r, R, T>(
        &self,
        source: &SourceSegment,
        records: R,
    ) -> Result<ColdSegmentHandle>
    where
        R: IntoIterator<Item = T>,
        T: Into<ColdRecord<'r>>,
    {
        let segment_gen = source.segment_gen;
        let in_flight = self.shared.files.read().contains_key(&segment_gen)
            || !self.writing.lock().insert(segment_gen);
        if in_flight {
            return Err(TieringError::MigrationInProgress { segment_gen });
        }
        let result = self.write_and_adopt(source, records);
        self.writing.lock().remove(&segment_gen);
        match &result {
            Ok(_) => bump(&self.shared.counters.migrations, 1),
            Err(error) => {
                bump(&self.shared.counters.write_errors, 1);
                tracing::warn!(segment_gen, %error, "migration to the cold tier failed");
            }
        }
        result
    }

    fn write_and_adopt<'r, R, T>(
        &self,
        source: &SourceSegment,
        records: R,
    ) -> Result<ColdSegmentHandle>
    where
        R: IntoIterator<Item = T>,
        T: Into<ColdRecord<'r>>,
    {
        let writer = ColdWriter::new(&self.shared.io, self.shared.config.writer.clone())?
            .with_dir_sync(&self.dir_sync);
        let (handle, index) = writer.write(source, records)?;
        let name = cold_file_name(source.segment_gen);
        let file = match self.shared.io.open(&name) {
            Ok(file) => file,
            Err(error) => {
                // Not served, so not a migration: remove the committed file (best effort; if
                // it stays, the engine's recovery discards it as an orphan).
                if let Err(remove_error) = self.shared.io.remove(&name) {
                    tracing::warn!(name, %remove_error, "could not remove an unserved cold file");
                }
                return Err(error);
            }
        };
        let cold = ColdFile::new(file, name, index);
        self.shared
            .files
            .write()
            .insert(source.segment_gen, Arc::new(cold));
        Ok(handle)
    }

    /// The index of a cold file, if the store serves it.
    pub fn index(&self, segment_gen: u64) -> Option<Arc<ColdFileIndex>> {
        self.shared
            .files
            .read()
            .get(&segment_gen)
            .map(|file| Arc::clone(&file.index))
    }

    /// Generations of every cold file served, ascending.
    pub fn segment_gens(&self) -> Vec<u64> {
        let mut gens: Vec<u64> = self.shared.files.read().keys().copied().collect();
        gens.sort_unstable();
        gens
    }

    fn file(&self, segment_gen: u64) -> Result<Arc<ColdFile<I::File>>> {
        let file = self.shared.files.read().get(&segment_gen).cloned();
        file.ok_or(TieringError::UnknownSegment { segment_gen })
    }

    /// The payload of record `seq` of `stream_id` in cold segment `segment_gen`: one block
    /// read (or a cache hit), every checksum verified. Never blocks appends or other readers.
    pub fn read_record(&self, segment_gen: u64, stream_id: u64, seq: u64) -> Result<Vec<u8>> {
        bump(&self.shared.counters.reads, 1);
        let file = self.file(segment_gen)?;
        let not_found = || TieringError::RecordNotFound {
            segment_gen,
            stream_id,
            seq,
        };
        let position = file.position(stream_id, seq).ok_or_else(not_found)?;
        let entry = file.index.records[position];
        let result = self.record_block(&file, position).and_then(|block| {
            let block_at = file.index.blocks[entry.block_no as usize].offset_bytes;
            let payload =
                record_payload(&block, &entry).map_err(|e| e.in_file(&file.name, block_at))?;
            Ok(payload.to_vec())
        });
        if let Err(error) = &result {
            bump(&self.shared.counters.read_errors, 1);
            tracing::warn!(file = file.name, stream_id, seq, %error, "cold read failed");
        }
        result
    }

    /// The verified, decompressed block holding record `records[position]` of the file's
    /// index, from the cache or from SSD.
    ///
    /// A miss reads ahead: the same read also fetches the following blocks that hold the
    /// next records of the same stream (up to `read_chunk_bytes`, never past the stream's
    /// run of adjacent blocks), decodes and verifies them and caches them, so a reader going
    /// through a stream in seq order does one I/O per window instead of one per block. With
    /// [`ColdStoreConfig::async_readahead`] the window after that is read in the background
    /// meanwhile (see [`crate::readahead`]); a miss on a block being read waits for it.
    fn record_block(&self, file: &Arc<ColdFile<I::File>>, position: usize) -> Result<Arc<Vec<u8>>> {
        let shared = &*self.shared;
        let index = &file.index;
        let first = index.records[position].block_no;
        let key = (index.segment_gen(), first);
        loop {
            if let Some(block) = shared.cache.get(key) {
                bump(&shared.counters.cache_hits, 1);
                if enters_block(index, position) {
                    if let Some(job) = shared.readahead.take_trigger(key) {
                        self.offer(job);
                    }
                }
                return Ok(block);
            }
            if self.worker.is_none() {
                bump(&shared.counters.cache_misses, 1);
                let last = shared.readahead_end(index, position);
                return shared.load_window(file, position, last);
            }
            if shared.readahead.wait_unless_inflight(key) {
                // The readahead thread was reading it: look again.
                bump(&shared.counters.readahead_waits, 1);
                continue;
            }
            // Claim the window (or, if the thread is reading part of it, the block alone),
            // so the thread never reads what this reader is reading.
            let mut last = shared.readahead_end(index, position);
            let mut keys: Vec<_> = (first..=last).map(|block_no| (key.0, block_no)).collect();
            if !shared.readahead.begin(&keys) {
                (last, keys) = (first, vec![key]);
                if !shared.readahead.begin(&keys) {
                    continue;
                }
            }
            bump(&shared.counters.cache_misses, 1);
            let loaded = shared.load_window(file, position, last);
            let next = loaded
                .is_ok()
                .then(|| shared.next_window(file, position, last))
                .flatten();
            shared.readahead.finish(&keys);
            if let Some(next) = next {
                self.offer(next);
            }
            return loaded;
        }
    }

    /// Hands a window to the readahead thread, if there is one and it is not busy.
    fn offer(&self, job: Prefetch<I::File>) {
        if let Some(worker) = &self.worker {
            let counters = &self.shared.counters;
            // Counted before the thread can finish it (and count it down).
            bump(&counters.readahead_queued, 1);
            if !worker.offer(job) {
                counters.readahead_queued.fetch_sub(1, Ordering::Relaxed);
                bump(&counters.readahead_dropped, 1);
            }
        }
    }

    /// Reads a whole cold file sequentially (chunked, several reads in flight, bypassing the
    /// cache) and calls `visit` for every record in file order, verified. Returns the number
    /// of records visited.
    pub fn scan_segment<F>(&self, segment_gen: u64, mut visit: F) -> Result<u64>
    where
        F: FnMut(&RecordEntry, &[u8]),
    {
        let file = self.file(segment_gen)?;
        let result = self.scan_file(&file, &mut visit);
        if let Err(error) = &result {
            bump(&self.shared.counters.read_errors, 1);
            tracing::warn!(file = file.name, %error, "cold scan failed");
        }
        result
    }

    fn scan_file<F>(&self, file: &ColdFile<I::File>, visit: &mut F) -> Result<u64>
    where
        F: FnMut(&RecordEntry, &[u8]),
    {
        let index = &file.index;
        // Records in file order: by block, then by position in the block.
        let mut order: Vec<&RecordEntry> = index.records.iter().collect();
        order.sort_unstable_by_key(|record| (record.block_no, record.offset_in_block));
        let mut scan = Scan {
            file,
            order,
            next_record: 0,
            block_no: 0,
            carry: Vec::new(),
        };
        let shape = StreamShape {
            chunk_bytes: self.shared.config.read_chunk_bytes,
            depth: self.shared.config.read_depth,
        };
        let data_end = align_up_u64(index.footer_offset);
        self.shared
            .io
            .read_stream(&file.file, 0, data_end, shape, |chunk_at, bytes| {
                bump(&self.shared.counters.bytes_read, bytes.len() as u64);
                scan.chunk(chunk_at, bytes, visit)
            })?;
        if scan.block_no < index.blocks.len() {
            // The file ended before its last block.
            return Err(scan.truncated(scan.carry.len() as u64));
        }
        debug_assert!(scan.carry.is_empty());
        debug_assert_eq!(scan.next_record, scan.order.len());
        Ok(scan.next_record as u64)
    }

    /// Reads and verifies every block and record of a cold file; returns the record count.
    pub fn verify(&self, segment_gen: u64) -> Result<u64> {
        self.scan_segment(segment_gen, |_, _| {})
    }

    /// Stops serving `segment_gen` and deletes its file (then syncs the directory). Readers
    /// that already hold the file finish their reads. If the directory sync fails the error
    /// is returned; after a crash the file may then reappear, and is reported by `open` as a
    /// cold file the engine no longer references (an orphan to delete again).
    pub fn delete(&self, segment_gen: u64) -> Result<()> {
        let file = self.file(segment_gen)?;
        self.shared.io.remove(&file.name)?;
        self.shared.files.write().remove(&segment_gen);
        self.shared.cache.invalidate_segment(segment_gen);
        self.shared.readahead.forget_segment(segment_gen);
        self.shared.io.sync_dir()
    }

    /// Removes whatever file of `segment_gen` is in the directory (final or temp name) without
    /// it being served: for recovery, when the engine's segment table says the
    /// persistent-memory copy is authoritative, and after an abandoned migration. Returns
    /// whether anything was removed; syncs the directory if so.
    pub fn discard_orphan(&self, segment_gen: u64) -> Result<bool> {
        if self.shared.files.read().contains_key(&segment_gen) {
            self.delete(segment_gen)?;
            return Ok(true);
        }
        let mut removed = false;
        for name in [cold_file_name(segment_gen), temp_file_name(segment_gen)] {
            match self.shared.io.remove(&name) {
                Ok(()) => removed = true,
                Err(TieringError::Fs { source, .. }) if source.kind() == ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
        }
        if removed {
            self.shared.io.sync_dir()?;
        }
        Ok(removed)
    }

    /// Deletes every quarantined (`.corrupt`) file; returns how many.
    pub fn purge_quarantined(&self) -> Result<usize> {
        let mut removed = 0;
        for name in self.shared.io.list()? {
            if let FileKind::Corrupt(_) = classify_file_name(&name) {
                self.shared.io.remove(&name)?;
                removed += 1;
            }
        }
        if removed > 0 {
            self.shared.io.sync_dir()?;
        }
        Ok(removed)
    }

    pub fn stats(&self) -> ColdStats {
        let files = self.shared.files.read();
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ColdStats {
            files: files.len() as u64,
            records: files.values().map(|file| file.index.record_count()).sum(),
            bytes_stored: files.values().map(|file| file.index.file_len_bytes).sum(),
            bytes_uncompressed: files.values().map(|file| file.index.payload_bytes).sum(),
            migrations: load(&self.shared.counters.migrations),
            write_errors: load(&self.shared.counters.write_errors),
            reads: load(&self.shared.counters.reads),
            read_errors: load(&self.shared.counters.read_errors),
            cache_hits: load(&self.shared.counters.cache_hits),
            cache_misses: load(&self.shared.counters.cache_misses),
            cache_bytes: self.shared.cache.used_bytes() as u64,
            bytes_read: load(&self.shared.counters.bytes_read),
            readahead_windows: load(&self.shared.counters.readahead_windows),
            readahead_waits: load(&self.shared.counters.readahead_waits),
            readahead_dropped: load(&self.shared.counters.readahead_dropped),
            readahead_errors: load(&self.shared.counters.readahead_errors),
            readahead_queued: load(&self.shared.counters.readahead_queued),
        }
    }

    pub fn io(&self) -> &I {
        &self.shared.io
    }

    pub fn config(&self) -> &ColdStoreConfig {
        &self.shared.config
    }
}

impl<I: SegmentIo> Shared<I> {
    /// Reads `[offset, offset + len)` with an aligned read; returns the buffer and where the
    /// range starts in it. Missing bytes are a `Truncated` corruption at the first one.
    fn read_range(
        &self,
        file: &I::File,
        offset_bytes: u64,
        len_bytes: u64,
    ) -> Result<(IoBuf, usize)> {
        let start = align_down_u64(offset_bytes);
        let end = align_up_u64(offset_bytes + len_bytes);
        let span = (end - start) as usize;
        let mut buf = self.io.alloc_buf(span);
        buf.set_len(span);
        let (result, buf) = self.io.read_at(file, buf, start);
        let read = result?;
        bump(&self.counters.bytes_read, read as u64);
        let needed = (offset_bytes + len_bytes - start) as usize;
        if read < needed {
            let kind = CorruptKind::Truncated {
                structure: Structure::File,
                needed_bytes: needed as u64,
                available_bytes: read as u64,
            };
            let offset_bytes = start + read as u64;
            return Err(TieringError::Corrupt {
                file: file.name().to_owned(),
                offset_bytes,
                kind,
            });
        }
        Ok((buf, (offset_bytes - start) as usize))
    }

    /// Reads blocks `records[position].block_no ..= last` of `file` with one I/O, verifies
    /// and caches them, and returns the first. A damaged block after the first is left out
    /// (reported when one of its records is read).
    fn load_window(
        &self,
        file: &ColdFile<I::File>,
        position: usize,
        last: u32,
    ) -> Result<Arc<Vec<u8>>> {
        let index = &file.index;
        let segment_gen = index.segment_gen();
        let first = index.records[position].block_no;
        let start_at = index.blocks[first as usize].offset_bytes;
        let end_at = (first..=last)
            .map(|block_no| {
                let entry = index.blocks[block_no as usize];
                entry.offset_bytes + entry.disk_len_bytes()
            })
            .max()
            .unwrap_or(start_at);
        let (buf, skip) = self.read_range(&file.file, start_at, end_at - start_at)?;
        let bytes = &buf.as_slice()[skip..];
        let decode = |block_no: u32| -> Result<Arc<Vec<u8>>> {
            let entry = index.blocks[block_no as usize];
            let from = entry
                .offset_bytes
                .checked_sub(start_at)
                .map(|at| at as usize);
            let block_bytes = from
                .and_then(|from| bytes.get(from..from + entry.disk_len_bytes() as usize))
                .ok_or_else(|| {
                    let found = entry.offset_bytes;
                    mismatch(0, Structure::Footer, "block offset", start_at, found)
                        .in_file(&file.name, entry.offset_bytes)
                })?;
            let block = decode_block(block_bytes, segment_gen, block_no)
                .map_err(|e| e.in_file(&file.name, entry.offset_bytes))?;
            check_block_len(&file.name, &entry, block.len())?;
            Ok(Arc::new(block))
        };
        let wanted = decode(first)?;
        self.cache.insert((segment_gen, first), Arc::clone(&wanted));
        for block_no in first + 1..=last {
            // A damaged block ahead is reported when (if) one of its records is read.
            let Ok(block) = decode(block_no) else {
                break;
            };
            self.cache.insert((segment_gen, block_no), block);
        }
        Ok(wanted)
    }

    /// Where the window after the one of `records[position]` ..= block `last` starts: the
    /// first record of the same stream after block `last` in this file, else its next record
    /// in the next files by generation (a stream's later records are in later segments);
    /// `None` when neither is found.
    fn next_window(
        &self,
        file: &Arc<ColdFile<I::File>>,
        position: usize,
        last: u32,
    ) -> Option<Prefetch<I::File>> {
        /// Files looked at after this one for the stream's next record.
        const NEXT_FILES_SEARCHED: usize = 4;
        let records = &file.index.records;
        let stream_id = records[position].stream_id;
        let after = &records[position + 1..];
        // One pass, stopping at the first record past the window or past the stream's run.
        let stop = after
            .iter()
            .position(|record| record.stream_id != stream_id || record.block_no > last);
        if let Some(offset) = stop.filter(|&offset| after[offset].stream_id == stream_id) {
            let file = Arc::clone(file);
            return Some(Prefetch {
                file,
                position: position + 1 + offset,
            });
        }
        // The stream's run ends in this file: its last record is just before the stop.
        let run_len = stop.unwrap_or(after.len());
        let last_seq = run_len
            .checked_sub(1)
            .map_or(records[position].seq, |at| after[at].seq);
        let files = self.files.read();
        let later = files.range(file.index.segment_gen() + 1..);
        for (_, next_file) in later.take(NEXT_FILES_SEARCHED) {
            let records = &next_file.index.records;
            let at = records
                .partition_point(|record| (record.stream_id, record.seq) <= (stream_id, last_seq));
            if records
                .get(at)
                .is_some_and(|record| record.stream_id == stream_id)
            {
                let file = Arc::clone(next_file);
                return Some(Prefetch { file, position: at });
            }
        }
        None
    }

    /// Runs one readahead job on the readahead thread (see [`Self::load_ahead`]).
    fn prefetch(&self, job: Prefetch<I::File>) {
        self.load_ahead(job);
        self.counters
            .readahead_queued
            .fetch_sub(1, Ordering::Relaxed);
    }

    /// Loads a readahead job's window unless it is cached or already being read, then
    /// leaves a trigger for the window after it.
    fn load_ahead(&self, job: Prefetch<I::File>) {
        let index = &job.file.index;
        let segment_gen = index.segment_gen();
        let Some(record) = index.records.get(job.position) else {
            return;
        };
        let first = record.block_no;
        if self.cache.contains((segment_gen, first)) {
            return;
        }
        let last = self.readahead_end(index, job.position);
        let keys: Vec<_> = (first..=last)
            .map(|block_no| (segment_gen, block_no))
            .collect();
        if !self.readahead.begin(&keys) {
            return;
        }
        match self.load_window(&job.file, job.position, last) {
            Ok(_) => {
                bump(&self.counters.readahead_windows, 1);
                // Before `finish`: a reader waiting for this window sees the trigger.
                if let Some(next) = self.next_window(&job.file, job.position, last) {
                    self.readahead.set_trigger((segment_gen, first), next);
                }
            }
            Err(error) => {
                bump(&self.counters.readahead_errors, 1);
                tracing::debug!(file = job.file.name, %error, "cold readahead failed");
            }
        }
        self.readahead.finish(&keys);
    }

    /// The last block of the readahead window of a miss on `records[position]`: the blocks
    /// after it holding the following records of the same stream, as long as they are
    /// adjacent, not cached and the window stays within `read_chunk_bytes` (and half the
    /// cache, so it never evicts itself).
    fn readahead_end(&self, index: &ColdFileIndex, position: usize) -> u32 {
        let record = index.records[position];
        let segment_gen = index.segment_gen();
        let budget_bytes =
            (self.config.read_chunk_bytes as u64).min(self.config.cache_capacity_bytes as u64 / 2);
        let first = index.blocks[record.block_no as usize];
        let mut last = record.block_no;
        let mut window_bytes = first.disk_len_bytes();
        for next in &index.records[position + 1..] {
            if next.stream_id != record.stream_id || next.block_no < last {
                break;
            }
            if next.block_no == last {
                continue;
            }
            let Some(entry) = index.blocks.get(next.block_no as usize) else {
                break;
            };
            let adjacent = next.block_no == last + 1;
            if !adjacent
                || window_bytes + entry.disk_len_bytes() > budget_bytes
                || u64::from(entry.uncompressed_len) > self.config.cache_capacity_bytes as u64 / 4
                || self.cache.contains((segment_gen, next.block_no))
            {
                break;
            }
            window_bytes += entry.disk_len_bytes();
            last = next.block_no;
        }
        last
    }
}

/// Whether `records[position]` is its stream's first record in its block (where a reader
/// enters the block).
fn enters_block(index: &ColdFileIndex, position: usize) -> bool {
    let record = index.records[position];
    position
        .checked_sub(1)
        .and_then(|before| index.records.get(before))
        .is_none_or(|before| {
            before.block_no != record.block_no || before.stream_id != record.stream_id
        })
}

/// A sequential scan: blocks are decoded straight from the read chunks; only a block that
/// straddles two chunks is copied (into `carry`) to join its pieces.
struct Scan<'f, F> {
    file: &'f ColdFile<F>,
    order: Vec<&'f RecordEntry>,
    next_record: usize,
    block_no: usize,
    /// The first bytes of block `block_no`, read at the end of the previous chunk.
    carry: Vec<u8>,
}

impl<F> Scan<'_, F> {
    fn chunk<V>(&mut self, chunk_at: u64, data: &[u8], visit: &mut V) -> Result<()>
    where
        V: FnMut(&RecordEntry, &[u8]),
    {
        let blocks = &self.file.index.blocks;
        let chunk_end = chunk_at + data.len() as u64;
        let mut data_at = 0usize;
        if !self.carry.is_empty() {
            let Some(entry) = blocks.get(self.block_no) else {
                return Ok(());
            };
            let missing = entry.disk_len_bytes() as usize - self.carry.len();
            let take = missing.min(data.len());
            self.carry.extend_from_slice(&data[..take]);
            if take < missing {
                return Ok(());
            }
            let carry = std::mem::take(&mut self.carry);
            self.block(&carry, visit)?;
            data_at = take;
        }
        while let Some(entry) = blocks.get(self.block_no) {
            debug_assert!(entry.offset_bytes >= chunk_at + data_at as u64);
            let start = (entry.offset_bytes - chunk_at) as usize;
            if entry.offset_bytes >= chunk_end {
                break;
            }
            let end = start + entry.disk_len_bytes() as usize;
            match data.get(start..end) {
                Some(bytes) => self.block(bytes, visit)?,
                None => {
                    self.carry.extend_from_slice(&data[start..]);
                    break;
                }
            }
        }
        Ok(())
    }

    /// Decodes block `block_no` from `bytes` and visits its records.
    fn block<V>(&mut self, bytes: &[u8], visit: &mut V) -> Result<()>
    where
        V: FnMut(&RecordEntry, &[u8]),
    {
        let index = &self.file.index;
        let entry = &index.blocks[self.block_no];
        let name = &self.file.name;
        let block = decode_block_cow(bytes, index.segment_gen(), self.block_no as u32)
            .map_err(|e| e.in_file(name, entry.offset_bytes))?;
        check_block_len(name, entry, block.len())?;
        while let Some(record) = self
            .order
            .get(self.next_record)
            .filter(|r| r.block_no as usize == self.block_no)
        {
            let payload =
                record_payload(&block, record).map_err(|e| e.in_file(name, entry.offset_bytes))?;
            visit(record, payload);
            self.next_record += 1;
        }
        self.block_no += 1;
        Ok(())
    }

    fn truncated(&self, available_bytes: u64) -> TieringError {
        let index = &self.file.index;
        let entry = index.blocks.get(self.block_no);
        let kind = CorruptKind::Truncated {
            structure: Structure::BlockPayload,
            needed_bytes: entry.map_or(0, |entry| entry.disk_len_bytes()),
            available_bytes,
        };
        let offset_bytes = entry.map_or(index.footer_offset, |entry| entry.offset_bytes);
        TieringError::Corrupt {
            file: self.file.name.clone(),
            offset_bytes,
            kind,
        }
    }
}

fn check_block_len(file: &str, entry: &crate::format::BlockEntry, len: usize) -> Result<()> {
    if len == entry.uncompressed_len as usize {
        return Ok(());
    }
    let (expected, found) = (u64::from(entry.uncompressed_len), len as u64);
    let error = mismatch(
        0,
        Structure::BlockHeader,
        "uncompressed_len",
        expected,
        found,
    );
    Err(error.in_file(file, entry.offset_bytes))
}

const _: () = assert!(BLOCK_HEADER_BYTES < FILE_ALIGN_BYTES as usize);

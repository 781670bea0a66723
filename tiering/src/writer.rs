//! [`ColdWriter`]: writes the live records of one sealed segment as a cold file.
//!
//! Crash-safe order (each step only after the previous one succeeded):
//!
//! 1. create `seg-<gen>.pcold.tmp` (truncating a leftover of an earlier attempt);
//! 2. stream header, blocks, footer, padding and trailer into it, chunk by chunk, while the
//!    next chunk is being encoded, and fdatasync it (the last write is linked to the sync);
//! 3. rename it to `seg-<gen>.pcold` — the commit point: a final name only ever names bytes
//!    that a successful fdatasync made durable;
//! 4. fsync the directory, which makes the name durable.
//!
//! Any failure returns a typed error and removes what it can. What may stay behind is never
//! taken as complete: a temp name (removed by `ColdStore::open`), or, if only step 4 failed,
//! a complete and synced file whose name may or may not survive a crash; the engine never
//! flipped its segment to Cold for it, so its recovery deletes it as an orphan.
//!
//! A failed write or sync is not retried here: a failed fdatasync means the data is not
//! durable and retrying the sync proves nothing. The caller keeps the persistent-memory copy
//! and migrates again later, which rewrites the file from the start. A short write is treated
//! the same way (it means out of space or a failing device).

use std::path::PathBuf;

use crate::error::{Result, TieringError};
use crate::format::{
    cold_file_name, crc32, decode_file, encode_block_header, encode_file_header, encode_footer,
    encode_trailer, footer_len_bytes, temp_file_name, BlockEntry, BlockHeader, Codec,
    ColdFileIndex, Compression, FileHeader, Footer, RecordEntry, BLOCK_HEADER_BYTES,
    FILE_ALIGN_BYTES, MAX_BLOCK_SIZE_BYTES, MAX_RECORD_BYTES, MIN_BLOCK_SIZE_BYTES, TRAILER_BYTES,
};
use crate::io::{align_up, Fill, IoBuf, IoFile, SegmentIo, StreamShape, IO_ALIGN_BYTES};

/// How cold files are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColdWriterConfig {
    /// Off by default.
    pub compression: Compression,
    /// Uncompressed bytes per block: the unit of a cold read and of the block cache.
    pub block_size_bytes: u32,
    /// Bytes per write (a multiple of 4096).
    pub chunk_bytes: usize,
    /// Writes in flight at once.
    pub depth: usize,
    /// Read the file back and verify every block before committing it. Catches misdirected
    /// or dropped writes below the page cache when O_DIRECT is in use; costs a full read.
    pub verify_after_write: bool,
}

impl Default for ColdWriterConfig {
    fn default() -> ColdWriterConfig {
        ColdWriterConfig {
            compression: Compression::None,
            block_size_bytes: 64 << 10,
            chunk_bytes: 1 << 20,
            depth: 8,
            verify_after_write: false,
        }
    }
}

impl ColdWriterConfig {
    pub fn validate(&self) -> Result<()> {
        if !(MIN_BLOCK_SIZE_BYTES..=MAX_BLOCK_SIZE_BYTES).contains(&self.block_size_bytes) {
            return Err(TieringError::InvalidConfig(format!(
                "block_size_bytes {} must be in {MIN_BLOCK_SIZE_BYTES}..={MAX_BLOCK_SIZE_BYTES}",
                self.block_size_bytes
            )));
        }
        if let Compression::Zstd { level } = self.compression {
            let range = zstd::compression_level_range();
            if !range.contains(&level) {
                return Err(TieringError::InvalidConfig(format!(
                    "zstd level {level} is outside {range:?}"
                )));
            }
        }
        self.shape().validate()
    }

    pub(crate) fn shape(&self) -> StreamShape {
        StreamShape {
            chunk_bytes: self.chunk_bytes,
            depth: self.depth,
        }
    }
}

/// The segment a cold file is made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceSegment {
    pub segment_index: u32,
    pub segment_gen: u64,
    pub pool_nonce: u64,
}

/// A committed cold file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColdSegmentHandle {
    pub segment_gen: u64,
    pub path: PathBuf,
    /// Length of the file on SSD.
    pub bytes_stored: u64,
    /// Sum of the record payloads it holds.
    pub bytes_uncompressed: u64,
    pub record_count: u64,
}

/// Writes cold files through `I`; see the module documentation for the order of steps.
pub struct ColdWriter<'io, I: SegmentIo> {
    io: &'io I,
    config: ColdWriterConfig,
}

impl<'io, I: SegmentIo> ColdWriter<'io, I> {
    pub fn new(io: &'io I, config: ColdWriterConfig) -> Result<ColdWriter<'io, I>> {
        config.validate()?;
        Ok(ColdWriter { io, config })
    }

    /// Writes and commits the cold file of `source`. `records` yields `(stream_id, seq,
    /// payload)` for every live record of the segment, in any order, each (stream_id, seq)
    /// once; payloads are stored without the engine's record header. On success the file is
    /// durable under its final name and its index is returned.
    pub fn write<'r, R>(
        &self,
        source: &SourceSegment,
        records: R,
    ) -> Result<(ColdSegmentHandle, ColdFileIndex)>
    where
        R: IntoIterator<Item = (u64, u64, &'r [u8])>,
    {
        let temp_name = temp_file_name(source.segment_gen);
        let final_name = cold_file_name(source.segment_gen);
        let file = self.io.create(&temp_name)?;
        let mut encoder = Encoder::new(source, &self.config, &temp_name, records.into_iter());
        let streamed = self
            .io
            .write_stream_synced(&file, 0, self.config.shape(), |buf| encoder.fill(buf));
        let verified = streamed.and_then(|written_bytes| {
            assert_eq!(
                written_bytes, encoder.file_len_bytes,
                "writer and encoder disagree"
            );
            if self.config.verify_after_write {
                self.verify(&file, &encoder)?;
            }
            Ok(())
        });
        drop(file);
        if let Err(error) = verified {
            self.discard(&temp_name);
            return Err(error);
        }
        // The commit point: the final name now refers to durable bytes.
        if let Err(error) = self.io.rename(&temp_name, &final_name) {
            self.discard(&temp_name);
            return Err(error);
        }
        // IMPORTANT: fsync the directory, or the rename may not survive a crash.
        if let Err(error) = self.io.sync_dir() {
            self.discard(&final_name);
            return Err(error);
        }
        let index = encoder.into_index();
        let handle = ColdSegmentHandle {
            segment_gen: source.segment_gen,
            path: self.io.dir().join(&final_name),
            bytes_stored: index.file_len_bytes,
            bytes_uncompressed: index.payload_bytes,
            record_count: index.record_count(),
        };
        Ok((handle, index))
    }

    /// Best-effort removal after a failure; what stays behind is never taken as complete.
    fn discard(&self, name: &str) {
        if let Err(error) = self.io.remove(name) {
            tracing::warn!(name, %error, "could not remove the file of a failed migration");
        }
    }

    /// Reads the whole file back and checks it decodes to what was written.
    fn verify<R>(&self, file: &I::File, encoder: &Encoder<'_, R>) -> Result<()> {
        let name = file.name();
        let chunk_bytes = self.config.chunk_bytes as u64;
        let mut requests = Vec::new();
        let mut offset = 0u64;
        while offset < encoder.file_len_bytes {
            let len = chunk_bytes.min(encoder.file_len_bytes - offset) as usize;
            let mut buf = self.io.alloc_buf(len);
            buf.set_len(len);
            requests.push((offset, buf));
            offset += len as u64;
        }
        let offsets: Vec<u64> = requests.iter().map(|(offset, _)| *offset).collect();
        let completions = self.io.read_batch(file, requests);
        let mut bytes = Vec::with_capacity(encoder.file_len_bytes as usize);
        for (request_offset, (result, buf)) in offsets.into_iter().zip(completions) {
            let read = result?;
            if read != buf.len() {
                let kind = crate::error::CorruptKind::Truncated {
                    structure: crate::error::Structure::File,
                    needed_bytes: buf.len() as u64,
                    available_bytes: read as u64,
                };
                return Err(TieringError::Corrupt {
                    file: name.to_owned(),
                    offset_bytes: request_offset + read as u64,
                    kind,
                });
            }
            bytes.extend_from_slice(buf.as_slice());
        }
        let decoded = decode_file(&bytes).map_err(|error| error.in_file(name, 0))?;
        let expected = encoder.index_view();
        if decoded.records != expected.records || decoded.blocks != expected.blocks {
            let kind = crate::error::CorruptKind::Mismatch {
                structure: crate::error::Structure::Footer,
                field: "index read back",
                expected: expected.records.len() as u64,
                found: decoded.records.len() as u64,
            };
            return Err(TieringError::Corrupt {
                file: name.to_owned(),
                offset_bytes: 0,
                kind,
            });
        }
        Ok(())
    }
}

/// Turns records into the byte stream of a cold file, one chunk at a time.
///
/// Without compression a payload is copied once into `pending` (behind a placeholder block
/// header that is patched when the block closes) and once more into the I/O buffer; its crc
/// is computed once and folded into the block crc with `crc32fast::Hasher::combine`. Only
/// bytes of closed blocks (`pending[..committed]`) are handed out.
struct Encoder<'c, R> {
    records: R,
    config: &'c ColdWriterConfig,
    header: FileHeader,
    file_name: &'c str,
    compressor: Option<zstd::bulk::Compressor<'static>>,
    compressed: Vec<u8>,
    /// Uncompressed bytes of the open block, only when compressing.
    block: Vec<u8>,
    /// Index entries, payload bytes and running crc of the open block.
    block_records: Vec<RecordEntry>,
    block_len_bytes: usize,
    block_hasher: crc32fast::Hasher,
    /// Where the open block's placeholder header sits in `pending`.
    block_header_at: usize,
    /// Encoded bytes not yet handed to a chunk: `pending[pending_pos..committed]` is final.
    pending: Vec<u8>,
    pending_pos: usize,
    committed: usize,
    /// File offset of `pending[0]`.
    pending_base: u64,
    /// Bytes handed out in chunks so far.
    emitted_bytes: u64,
    blocks: Vec<BlockEntry>,
    entries: Vec<RecordEntry>,
    payload_bytes: u64,
    footer_offset: u64,
    file_len_bytes: u64,
    finished: bool,
}

impl<'c, 'r, R> Encoder<'c, R>
where
    R: Iterator<Item = (u64, u64, &'r [u8])>,
{
    fn new(
        source: &SourceSegment,
        config: &'c ColdWriterConfig,
        file_name: &'c str,
        records: R,
    ) -> Encoder<'c, R> {
        let header = FileHeader {
            segment_index: source.segment_index,
            segment_gen: source.segment_gen,
            pool_nonce: source.pool_nonce,
            block_size_bytes: config.block_size_bytes,
            compression: config.compression,
        };
        let mut pending = Vec::with_capacity(config.chunk_bytes * 2);
        pending.extend_from_slice(&encode_file_header(&header));
        let block_capacity = match config.compression {
            Compression::None => 0,
            Compression::Zstd { .. } => config.block_size_bytes as usize,
        };
        Encoder {
            records,
            config,
            header,
            file_name,
            compressor: None,
            compressed: Vec::new(),
            block: Vec::with_capacity(block_capacity),
            block_records: Vec::new(),
            block_len_bytes: 0,
            block_hasher: crc32fast::Hasher::new(),
            block_header_at: 0,
            committed: pending.len(),
            pending,
            pending_pos: 0,
            pending_base: 0,
            emitted_bytes: 0,
            blocks: Vec::new(),
            entries: Vec::new(),
            payload_bytes: 0,
            footer_offset: 0,
            file_len_bytes: 0,
            finished: false,
        }
    }

    fn available(&self) -> usize {
        self.committed - self.pending_pos
    }

    /// File offset of the end of the committed bytes.
    fn committed_offset(&self) -> u64 {
        self.pending_base + self.committed as u64
    }

    /// Fills `buf` with the next chunk of the file.
    fn fill(&mut self, buf: &mut IoBuf) -> Result<Fill> {
        let want = buf.remaining_capacity().min(self.config.chunk_bytes);
        debug_assert!(buf.is_empty() && want % IO_ALIGN_BYTES == 0);
        while self.available() < want && !self.finished {
            self.step()?;
        }
        let take = want.min(self.available());
        buf.extend_from_slice(&self.pending[self.pending_pos..self.pending_pos + take]);
        self.pending_pos += take;
        self.emitted_bytes += take as u64;
        if self.pending_pos == self.pending.len() || self.pending_pos >= self.config.chunk_bytes {
            // Compact; an open block's placeholder lies beyond `committed`, so it stays.
            let consumed = self.pending_pos;
            self.pending.drain(..consumed);
            self.pending_pos = 0;
            self.pending_base += consumed as u64;
            self.committed -= consumed;
            if !self.block_records.is_empty() {
                self.block_header_at -= consumed;
            }
        }
        debug_assert_eq!(
            self.pending_base + self.pending_pos as u64,
            self.emitted_bytes
        );
        if self.finished && self.available() == 0 {
            // Every chunk but the last is full, and the file length is aligned.
            debug_assert_eq!(self.emitted_bytes, self.file_len_bytes);
            debug_assert_eq!(buf.len() % IO_ALIGN_BYTES, 0);
            Ok(Fill::Last)
        } else {
            debug_assert_eq!(buf.len(), want);
            Ok(Fill::More)
        }
    }

    fn step(&mut self) -> Result<()> {
        match self.records.next() {
            Some((stream_id, seq, payload)) => self.add_record(stream_id, seq, payload),
            None => self.finish(),
        }
    }

    fn add_record(&mut self, stream_id: u64, seq: u64, payload: &[u8]) -> Result<()> {
        let len_bytes = payload.len();
        if len_bytes > MAX_RECORD_BYTES as usize {
            let max_bytes = u64::from(MAX_RECORD_BYTES);
            return Err(TieringError::RecordTooLarge {
                len_bytes: len_bytes as u64,
                max_bytes,
            });
        }
        let block_size = self.config.block_size_bytes as usize;
        let open = !self.block_records.is_empty();
        if open && self.block_len_bytes + len_bytes > block_size {
            self.flush_block()?;
        }
        if self.block_records.is_empty() {
            self.open_block();
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(payload);
        self.block_hasher.combine(&hasher);
        self.block_records.push(RecordEntry {
            stream_id,
            seq,
            block_no: self.blocks.len() as u32,
            offset_in_block: self.block_len_bytes as u32,
            len_bytes: len_bytes as u32,
            payload_crc: hasher.finalize(),
        });
        match self.config.compression {
            Compression::None => self.pending.extend_from_slice(payload),
            Compression::Zstd { .. } => self.block.extend_from_slice(payload),
        }
        self.block_len_bytes += len_bytes;
        self.payload_bytes += len_bytes as u64;
        if self.block_len_bytes >= block_size {
            self.flush_block()?;
        }
        Ok(())
    }

    fn open_block(&mut self) {
        debug_assert_eq!(self.committed, self.pending.len());
        self.block_header_at = self.pending.len();
        // Placeholder, patched by `flush_block` before any of it is handed out.
        self.pending.extend_from_slice(&[0u8; BLOCK_HEADER_BYTES]);
        self.block_hasher = crc32fast::Hasher::new();
        self.block_len_bytes = 0;
    }

    fn flush_block(&mut self) -> Result<()> {
        debug_assert!(!self.block_records.is_empty());
        let uncompressed_crc = self.block_hasher.clone().finalize();
        let (codec, stored_len, stored_crc) = match self.config.compression {
            Compression::None => (Codec::Raw, self.block_len_bytes, uncompressed_crc),
            Compression::Zstd { .. } => {
                debug_assert_eq!(self.block.len(), self.block_len_bytes);
                let stored = if self.compress()? {
                    &self.compressed
                } else {
                    &self.block
                };
                self.pending.extend_from_slice(stored);
                if stored.len() < self.block.len() {
                    (Codec::Zstd, stored.len(), crc32(&[stored]))
                } else {
                    (Codec::Raw, stored.len(), uncompressed_crc)
                }
            }
        };
        let header = BlockHeader {
            block_no: self.blocks.len() as u32,
            uncompressed_len: self.block_len_bytes as u32,
            stored_len: stored_len as u32,
            stored_crc,
            uncompressed_crc,
            codec,
        };
        let at = self.block_header_at;
        debug_assert!(at >= self.committed);
        let encoded = encode_block_header(&header, self.header.segment_gen);
        self.pending[at..at + BLOCK_HEADER_BYTES].copy_from_slice(&encoded);
        debug_assert_eq!(self.pending.len(), at + BLOCK_HEADER_BYTES + stored_len);
        self.blocks.push(BlockEntry {
            offset_bytes: self.pending_base + at as u64,
            stored_len: header.stored_len,
            uncompressed_len: header.uncompressed_len,
        });
        self.committed = self.pending.len();
        self.entries.append(&mut self.block_records);
        self.block.clear();
        self.block_len_bytes = 0;
        Ok(())
    }

    /// Compresses the open block into `self.compressed`; true when that made it smaller.
    fn compress(&mut self) -> Result<bool> {
        let Compression::Zstd { level } = self.config.compression else {
            return Ok(false);
        };
        if self.block.is_empty() {
            return Ok(false);
        }
        let compress_error = |source| TieringError::Compress {
            file: self.file_name.to_owned(),
            source,
        };
        if self.compressor.is_none() {
            self.compressor = Some(zstd::bulk::Compressor::new(level).map_err(compress_error)?);
        }
        let Some(compressor) = self.compressor.as_mut() else {
            return Ok(false);
        };
        self.compressed.clear();
        self.compressed
            .reserve(zstd::zstd_safe::compress_bound(self.block.len()));
        compressor
            .compress_to_buffer(&self.block, &mut self.compressed)
            .map_err(compress_error)?;
        Ok(self.compressed.len() < self.block.len())
    }

    fn finish(&mut self) -> Result<()> {
        if !self.block_records.is_empty() {
            self.flush_block()?;
        }
        self.entries
            .sort_unstable_by_key(|entry| (entry.stream_id, entry.seq));
        let duplicate = self
            .entries
            .windows(2)
            .find(|pair| (pair[0].stream_id, pair[0].seq) == (pair[1].stream_id, pair[1].seq));
        if let Some(pair) = duplicate {
            return Err(TieringError::DuplicateRecord {
                segment_gen: self.header.segment_gen,
                stream_id: pair[0].stream_id,
                seq: pair[0].seq,
            });
        }
        self.footer_offset = self.committed_offset();
        let footer = Footer {
            segment_gen: self.header.segment_gen,
            payload_bytes: self.payload_bytes,
            blocks: std::mem::take(&mut self.blocks),
            records: std::mem::take(&mut self.entries),
        };
        let footer_start = self.pending.len();
        encode_footer(&footer, &mut self.pending);
        let footer_len = (self.pending.len() - footer_start) as u64;
        debug_assert_eq!(
            Some(footer_len),
            footer_len_bytes(footer.blocks.len() as u64, footer.records.len() as u64)
        );
        let footer_crc = crate::format::le_u32(&self.pending, self.pending.len() - 4);
        let unpadded = self.footer_offset + footer_len + TRAILER_BYTES as u64;
        let file_len = unpadded.next_multiple_of(FILE_ALIGN_BYTES);
        let padding = (file_len - unpadded) as usize;
        self.pending.resize(self.pending.len() + padding, 0);
        let trailer = crate::format::Trailer {
            footer_crc,
            segment_gen: self.header.segment_gen,
            footer_offset: self.footer_offset,
            footer_len_bytes: footer_len,
            file_len_bytes: file_len,
            record_count: footer.records.len() as u64,
        };
        self.pending.extend_from_slice(&encode_trailer(&trailer));
        self.committed = self.pending.len();
        self.file_len_bytes = file_len;
        self.blocks = footer.blocks;
        self.entries = footer.records;
        self.finished = true;
        debug_assert_eq!(self.committed_offset(), file_len);
        debug_assert_eq!(align_up(file_len as usize) as u64, file_len);
        Ok(())
    }
}

impl<R> Encoder<'_, R> {
    fn index_view(&self) -> ColdFileIndex {
        ColdFileIndex {
            header: self.header,
            file_len_bytes: self.file_len_bytes,
            footer_offset: self.footer_offset,
            payload_bytes: self.payload_bytes,
            blocks: self.blocks.clone(),
            records: self.entries.clone(),
        }
    }

    fn into_index(self) -> ColdFileIndex {
        debug_assert!(self.finished);
        ColdFileIndex {
            header: self.header,
            file_len_bytes: self.file_len_bytes,
            footer_offset: self.footer_offset,
            payload_bytes: self.payload_bytes,
            blocks: self.blocks,
            records: self.entries,
        }
    }
}

//! [`ColdWriter`]: writes the live records of one sealed segment as a cold file.
//!
//! Crash-safe order (each step only after the previous one succeeded):
//!
//! 1. create `seg-<gen>.pcold.tmp` (truncating a leftover of an earlier attempt);
//! 2. stream header, blocks, footer, padding and trailer into it, chunk by chunk, while the
//!    next chunk is being encoded, and fdatasync it (the last write is linked to the sync);
//! 3. rename it to `seg-<gen>.pcold` — the commit point: a final name only ever names bytes
//!    that a successful fdatasync made durable;
//! 4. fsync the directory, which makes the name durable (writers of one `ColdStore` share
//!    it: a sync that started after this rename returned, run by any of them, suffices; a
//!    failed one fails every writer it covered).
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

use crate::dir_sync::DirSyncGroup;
use crate::error::{CorruptKind, Result, Structure, TieringError};
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

/// One record to migrate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColdRecord<'a> {
    pub stream_id: u64,
    pub seq: u64,
    pub payload: &'a [u8],
    /// crc32 of `payload` if the caller already has it (the engine's record header holds it).
    /// It is then trusted, not recomputed: the payload stays covered end to end by the crc
    /// it got at append time, and a wrong value makes later reads fail as `Corrupt`, never
    /// return wrong bytes. `None`: computed here.
    pub payload_crc: Option<u32>,
}

impl<'a> From<(u64, u64, &'a [u8])> for ColdRecord<'a> {
    fn from((stream_id, seq, payload): (u64, u64, &'a [u8])) -> ColdRecord<'a> {
        ColdRecord {
            stream_id,
            seq,
            payload,
            payload_crc: None,
        }
    }
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
    /// Shares directory syncs with concurrent writers of the same store (step 4).
    dir_sync: Option<&'io DirSyncGroup>,
}

impl<'io, I: SegmentIo> ColdWriter<'io, I> {
    pub fn new(io: &'io I, config: ColdWriterConfig) -> Result<ColdWriter<'io, I>> {
        config.validate()?;
        Ok(ColdWriter {
            io,
            config,
            dir_sync: None,
        })
    }

    /// Step 4 through `group`: concurrent writers share one directory sync.
    pub(crate) fn with_dir_sync(mut self, group: &'io DirSyncGroup) -> ColdWriter<'io, I> {
        self.dir_sync = Some(group);
        self
    }

    /// Writes and commits the cold file of `source`. `records` yields every live record of
    /// the segment — `(stream_id, seq, payload)` tuples or [`ColdRecord`]s — in any order,
    /// each (stream_id, seq) once; payloads are stored without the engine's record header,
    /// ordered by (stream_id, seq) in the file.
    /// On success the file is durable under its final name and its index is returned.
    pub fn write<'r, R, T>(
        &self,
        source: &SourceSegment,
        records: R,
    ) -> Result<(ColdSegmentHandle, ColdFileIndex)>
    where
        R: IntoIterator<Item = T>,
        T: Into<ColdRecord<'r>>,
    {
        let temp_name = temp_file_name(source.segment_gen);
        let final_name = cold_file_name(source.segment_gen);
        let file = self.io.create(&temp_name)?;
        // Blocks hold the records grouped by stream, ascending by seq: a reader going through
        // one stream touches only its own blocks, and each once (see `ColdStore`'s
        // readahead). Only the (small) record references are sorted, not the payloads.
        let mut records: Vec<ColdRecord<'r>> = records.into_iter().map(Into::into).collect();
        records.sort_unstable_by_key(|record| (record.stream_id, record.seq));
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
        let synced = match self.dir_sync {
            Some(group) => {
                let dir_name = self.io.dir().display().to_string();
                group.sync_after_rename(&dir_name, || self.io.sync_dir())
            }
            None => self.io.sync_dir(),
        };
        if let Err(error) = synced {
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
    fn verify<R: Iterator>(&self, file: &I::File, encoder: &Encoder<'_, R>) -> Result<()> {
        let name = file.name();
        let file_len = encoder.file_len_bytes;
        let mut bytes = Vec::with_capacity(file_len as usize);
        let shape = self.config.shape();
        self.io.read_stream(file, 0, file_len, shape, |_, chunk| {
            bytes.extend_from_slice(chunk);
            Ok(())
        })?;
        if bytes.len() as u64 != file_len {
            let kind = CorruptKind::Truncated {
                structure: Structure::File,
                needed_bytes: file_len,
                available_bytes: bytes.len() as u64,
            };
            let offset_bytes = bytes.len() as u64;
            return Err(TieringError::Corrupt {
                file: name.to_owned(),
                offset_bytes,
                kind,
            });
        }
        let decoded = decode_file(&bytes).map_err(|error| error.in_file(name, 0))?;
        let expected = encoder.index_view();
        if decoded != expected {
            let kind = CorruptKind::Mismatch {
                structure: Structure::Footer,
                field: "records read back",
                expected: expected.record_count(),
                found: decoded.record_count(),
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
/// Without compression a block that fits in the rest of the current chunk is built *in* the
/// chunk's buffer: payloads are copied once, from the caller straight into the buffer handed
/// to the kernel, behind a placeholder header patched when the block closes (blocks close
/// where the chunk ends, so no open block outlives a `fill`). A block that does not fit, and
/// every compressed block, is built aside and emitted into the buffer, its overflow kept in
/// `carry` for the next chunk. Checksums are computed over the copies while they are hot in
/// cache; a record's crc is taken from the caller when it has one.
struct Encoder<'c, R: Iterator> {
    records: std::iter::Peekable<R>,
    config: &'c ColdWriterConfig,
    header: FileHeader,
    file_name: &'c str,
    compressor: Option<zstd::bulk::Compressor<'static>>,
    compressed: Vec<u8>,
    /// Uncompressed bytes of an open block built aside (not in the chunk buffer).
    block: Vec<u8>,
    /// Position of the open block's placeholder header in the current chunk buffer.
    direct_header_at: Option<usize>,
    /// Index entries, payload bytes and file offset of the open block.
    block_records: Vec<RecordEntry>,
    block_len_bytes: usize,
    block_offset: u64,
    /// Encoded bytes waiting for the next chunk: `carry[carry_pos..]`.
    carry: Vec<u8>,
    carry_pos: usize,
    /// File offset just past the last byte encoded (into a buffer or into `carry`).
    stream_end: u64,
    /// Bytes handed out in chunks so far.
    emitted_bytes: u64,
    blocks: Vec<BlockEntry>,
    entries: Vec<RecordEntry>,
    payload_bytes: u64,
    footer_offset: u64,
    file_len_bytes: u64,
    finished: bool,
}

/// Appends `bytes` to the stream: into `buf` up to `want` bytes while nothing is waiting in
/// `carry`, the rest into `carry`.
fn emit(
    buf: &mut IoBuf,
    want: usize,
    carry: &mut Vec<u8>,
    carry_pos: usize,
    bytes: &[u8],
) -> usize {
    let fit = if carry_pos == carry.len() {
        (want - buf.len()).min(bytes.len())
    } else {
        0
    };
    buf.extend_from_slice(&bytes[..fit]);
    carry.extend_from_slice(&bytes[fit..]);
    fit
}

impl<'c, 'r, R> Encoder<'c, R>
where
    R: Iterator<Item = ColdRecord<'r>>,
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
        let carry = encode_file_header(&header).to_vec();
        Encoder {
            records: records.peekable(),
            config,
            header,
            file_name,
            compressor: None,
            compressed: Vec::new(),
            block: Vec::new(),
            direct_header_at: None,
            block_records: Vec::new(),
            block_len_bytes: 0,
            block_offset: 0,
            stream_end: carry.len() as u64,
            carry,
            carry_pos: 0,
            emitted_bytes: 0,
            blocks: Vec::new(),
            entries: Vec::new(),
            payload_bytes: 0,
            footer_offset: 0,
            file_len_bytes: 0,
            finished: false,
        }
    }

    fn carry_is_empty(&self) -> bool {
        self.carry_pos == self.carry.len()
    }

    fn drain_carry(&mut self, buf: &mut IoBuf, want: usize) {
        let take = (want - buf.len()).min(self.carry.len() - self.carry_pos);
        buf.extend_from_slice(&self.carry[self.carry_pos..self.carry_pos + take]);
        self.carry_pos += take;
        if self.carry_is_empty() {
            self.carry.clear();
            self.carry_pos = 0;
        }
    }

    /// Fills `buf` with the next chunk of the file.
    fn fill(&mut self, buf: &mut IoBuf) -> Result<Fill> {
        let want = buf.remaining_capacity().min(self.config.chunk_bytes);
        debug_assert!(buf.is_empty() && want % IO_ALIGN_BYTES == 0);
        self.drain_carry(buf, want);
        while buf.len() < want && !self.finished {
            self.produce(buf, want)?;
        }
        // A block built in this buffer may have filled it exactly: it ends here.
        self.close_direct(buf);
        self.drain_carry(buf, want);
        // Its placeholder header would reach the media: never.
        assert!(
            self.direct_header_at.is_none(),
            "a block open in a returned chunk"
        );
        self.emitted_bytes += buf.len() as u64;
        if self.finished && self.carry_is_empty() {
            // Every chunk but the last is full, and the file length is aligned.
            debug_assert_eq!(self.emitted_bytes, self.file_len_bytes);
            debug_assert_eq!(buf.len() % IO_ALIGN_BYTES, 0);
            Ok(Fill::Last)
        } else {
            debug_assert_eq!(buf.len(), want);
            Ok(Fill::More)
        }
    }

    /// One step: place the next record, close a block, or finish the file.
    fn produce(&mut self, buf: &mut IoBuf, want: usize) -> Result<()> {
        let Some(next_len) = self.records.peek().map(|record| record.payload.len()) else {
            self.close_direct(buf);
            self.close_aside(buf, want)?;
            return self.finish(buf, want);
        };
        if next_len > MAX_RECORD_BYTES as usize {
            let max_bytes = u64::from(MAX_RECORD_BYTES);
            return Err(TieringError::RecordTooLarge {
                len_bytes: next_len as u64,
                max_bytes,
            });
        }
        let block_size = self.config.block_size_bytes as usize;
        let space = want - buf.len();
        let block_open = !self.block_records.is_empty() || self.direct_header_at.is_some();
        if block_open {
            let block_full = self.block_len_bytes + next_len > block_size;
            if self.direct_header_at.is_some() {
                if block_full || next_len > space {
                    self.close_direct(buf);
                    return Ok(());
                }
            } else if block_full {
                return self.close_aside(buf, want);
            }
        } else {
            self.block_len_bytes = 0;
            let raw = self.config.compression == Compression::None;
            if raw && BLOCK_HEADER_BYTES + next_len <= space {
                debug_assert!(self.carry_is_empty());
                self.direct_header_at = Some(buf.len());
                self.block_offset = self.stream_end;
                // Placeholder, patched by `close_direct` before the chunk is handed out.
                buf.extend_from_slice(&[0u8; BLOCK_HEADER_BYTES]);
                self.stream_end += BLOCK_HEADER_BYTES as u64;
            }
        }
        let Some(record) = self.records.next() else {
            return Ok(());
        };
        self.add_record(record, buf);
        if self.block_len_bytes >= block_size {
            self.close_direct(buf);
            self.close_aside(buf, want)?;
        }
        Ok(())
    }

    fn add_record(&mut self, record: ColdRecord<'_>, buf: &mut IoBuf) {
        let ColdRecord {
            stream_id,
            seq,
            payload,
            payload_crc,
        } = record;
        let len_bytes = payload.len();
        // The copy is the only pass over the source; crcs are computed over the copy while
        // it is still in cache. A caller's crc stands for the bytes as they were appended.
        let copy: &[u8] = if self.direct_header_at.is_some() {
            let start = buf.len();
            buf.extend_from_slice(payload);
            self.stream_end += len_bytes as u64;
            &buf.as_slice()[start..]
        } else {
            let start = self.block.len();
            self.block.extend_from_slice(payload);
            &self.block[start..]
        };
        let payload_crc = payload_crc.unwrap_or_else(|| crc32(&[copy]));
        self.block_records.push(RecordEntry {
            stream_id,
            seq,
            block_no: self.blocks.len() as u32,
            offset_in_block: self.block_len_bytes as u32,
            len_bytes: len_bytes as u32,
            payload_crc,
        });
        self.block_len_bytes += len_bytes;
        self.payload_bytes += len_bytes as u64;
    }

    /// Closes a block built in the chunk buffer: patches its header.
    fn close_direct(&mut self, buf: &mut IoBuf) {
        let Some(at) = self.direct_header_at.take() else {
            return;
        };
        let block_start = at + BLOCK_HEADER_BYTES;
        let crc = crc32(&[&buf.as_slice()[block_start..block_start + self.block_len_bytes]]);
        let header = BlockHeader {
            block_no: self.blocks.len() as u32,
            uncompressed_len: self.block_len_bytes as u32,
            stored_len: self.block_len_bytes as u32,
            stored_crc: crc,
            uncompressed_crc: crc,
            codec: Codec::Raw,
        };
        let encoded = encode_block_header(&header, self.header.segment_gen);
        buf.as_mut_slice()[at..at + BLOCK_HEADER_BYTES].copy_from_slice(&encoded);
        debug_assert_eq!(buf.len(), at + BLOCK_HEADER_BYTES + self.block_len_bytes);
        self.close_block(self.block_offset, header);
    }

    /// Closes a block built aside: compresses it if configured and worthwhile, and emits
    /// header and stored bytes.
    fn close_aside(&mut self, buf: &mut IoBuf, want: usize) -> Result<()> {
        if self.block_records.is_empty() || self.direct_header_at.is_some() {
            return Ok(());
        }
        debug_assert_eq!(self.block.len(), self.block_len_bytes);
        let uncompressed_crc = crc32(&[&self.block]);
        let compressed = self.compress()?;
        let stored: &[u8] = if compressed {
            &self.compressed
        } else {
            &self.block
        };
        let header = BlockHeader {
            block_no: self.blocks.len() as u32,
            uncompressed_len: self.block_len_bytes as u32,
            stored_len: stored.len() as u32,
            stored_crc: if compressed {
                crc32(&[stored])
            } else {
                uncompressed_crc
            },
            uncompressed_crc,
            codec: if compressed { Codec::Zstd } else { Codec::Raw },
        };
        let encoded = encode_block_header(&header, self.header.segment_gen);
        let block_offset = self.stream_end;
        for bytes in [&encoded[..], stored] {
            emit(buf, want, &mut self.carry, self.carry_pos, bytes);
        }
        self.stream_end += (BLOCK_HEADER_BYTES + stored.len()) as u64;
        self.block.clear();
        self.close_block(block_offset, header);
        Ok(())
    }

    fn close_block(&mut self, offset_bytes: u64, header: BlockHeader) {
        self.blocks.push(BlockEntry {
            offset_bytes,
            stored_len: header.stored_len,
            uncompressed_len: header.uncompressed_len,
        });
        debug_assert_eq!(
            offset_bytes + BLOCK_HEADER_BYTES as u64 + u64::from(header.stored_len),
            self.stream_end
        );
        self.entries.append(&mut self.block_records);
        self.block_len_bytes = 0;
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

    /// Emits footer, padding and trailer.
    fn finish(&mut self, buf: &mut IoBuf, want: usize) -> Result<()> {
        debug_assert!(self.block_records.is_empty() && self.direct_header_at.is_none());
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
        self.footer_offset = self.stream_end;
        let footer = Footer {
            segment_gen: self.header.segment_gen,
            payload_bytes: self.payload_bytes,
            blocks: std::mem::take(&mut self.blocks),
            records: std::mem::take(&mut self.entries),
        };
        let mut tail = Vec::new();
        encode_footer(&footer, &mut tail);
        let footer_len = tail.len() as u64;
        debug_assert_eq!(
            Some(footer_len),
            footer_len_bytes(footer.blocks.len() as u64, footer.records.len() as u64)
        );
        let footer_crc = crate::format::le_u32(&tail, tail.len() - 4);
        let unpadded = self.footer_offset + footer_len + TRAILER_BYTES as u64;
        let file_len = unpadded.next_multiple_of(FILE_ALIGN_BYTES);
        tail.resize(tail.len() + (file_len - unpadded) as usize, 0);
        let trailer = crate::format::Trailer {
            footer_crc,
            segment_gen: self.header.segment_gen,
            footer_offset: self.footer_offset,
            footer_len_bytes: footer_len,
            file_len_bytes: file_len,
            record_count: footer.records.len() as u64,
        };
        tail.extend_from_slice(&encode_trailer(&trailer));
        emit(buf, want, &mut self.carry, self.carry_pos, &tail);
        self.stream_end += tail.len() as u64;
        debug_assert_eq!(self.stream_end, file_len);
        debug_assert_eq!(align_up(file_len as usize) as u64, file_len);
        self.file_len_bytes = file_len;
        self.blocks = footer.blocks;
        self.entries = footer.records;
        self.finished = true;
        Ok(())
    }
}

impl<R: Iterator> Encoder<'_, R> {
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

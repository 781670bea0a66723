//! A whole cold file: the index assembled from header, footer and trailer with their paired
//! checks, and a whole-file decoder that also verifies every block and record.

use super::{
    crc32, decode_block, decode_file_header, decode_footer, decode_trailer, le_u32, mismatch,
    BlockEntry, FileHeader, Footer, RecordEntry, Trailer, TRAILER_BYTES,
};
use crate::error::{CorruptKind, DecodeError, Structure};

/// Everything needed to serve a cold file's records without reading its data blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColdFileIndex {
    pub header: FileHeader,
    pub file_len_bytes: u64,
    pub footer_offset: u64,
    /// Sum of all record payload lengths (the uncompressed data).
    pub payload_bytes: u64,
    pub blocks: Vec<BlockEntry>,
    /// Strictly ascending by (stream_id, seq).
    pub records: Vec<RecordEntry>,
}

impl ColdFileIndex {
    pub fn segment_gen(&self) -> u64 {
        self.header.segment_gen
    }

    pub fn record_count(&self) -> u64 {
        self.records.len() as u64
    }

    /// The record `seq` of `stream_id`, by binary search.
    pub fn find(&self, stream_id: u64, seq: u64) -> Option<&RecordEntry> {
        self.records.get(self.position(stream_id, seq)?)
    }

    /// Where record (stream_id, seq) is in `records`.
    pub fn position(&self, stream_id: u64, seq: u64) -> Option<usize> {
        self.records
            .binary_search_by(|record| (record.stream_id, record.seq).cmp(&(stream_id, seq)))
            .ok()
    }

    /// The records of one stream, ascending by seq.
    pub fn stream_records(&self, stream_id: u64) -> &[RecordEntry] {
        let start = self
            .records
            .partition_point(|record| record.stream_id < stream_id);
        let end = self
            .records
            .partition_point(|record| record.stream_id <= stream_id);
        &self.records[start..end]
    }

    /// Combines the decoded pieces after checking that they agree with each other and with
    /// the file's actual length. `footer_crc` is the crc stored at the footer's end.
    pub(crate) fn assemble(
        header: FileHeader,
        trailer: &Trailer,
        footer: Footer,
        footer_crc: u32,
        file_len_bytes: u64,
    ) -> Result<ColdFileIndex, DecodeError> {
        let structure = Structure::Trailer;
        let trailer_at = file_len_bytes.saturating_sub(TRAILER_BYTES as u64);
        let checks = [
            ("file_len_bytes", file_len_bytes, trailer.file_len_bytes),
            ("segment_gen", header.segment_gen, trailer.segment_gen),
            (
                "record_count",
                footer.records.len() as u64,
                trailer.record_count,
            ),
            (
                "footer_crc",
                u64::from(footer_crc),
                u64::from(trailer.footer_crc),
            ),
        ];
        for (field, expected, found) in checks {
            if expected != found {
                return Err(mismatch(trailer_at, structure, field, expected, found));
            }
        }
        Ok(ColdFileIndex {
            header,
            file_len_bytes,
            footer_offset: trailer.footer_offset,
            payload_bytes: footer.payload_bytes,
            blocks: footer.blocks,
            records: footer.records,
        })
    }
}

/// The payload of `record` inside its block's uncompressed bytes, checked against its crc.
pub(crate) fn record_payload<'b>(
    block: &'b [u8],
    record: &RecordEntry,
) -> Result<&'b [u8], DecodeError> {
    let start = record.offset_in_block as usize;
    let end = start + record.len_bytes as usize;
    let Some(payload) = block.get(start..end) else {
        let kind = CorruptKind::Truncated {
            structure: Structure::Record,
            needed_bytes: end as u64,
            available_bytes: block.len() as u64,
        };
        return Err(DecodeError::new(0, kind));
    };
    let computed = crc32(&[payload]);
    if computed != record.payload_crc {
        let kind = CorruptKind::ChecksumMismatch {
            structure: Structure::Record,
            stored: record.payload_crc,
            computed,
        };
        return Err(DecodeError::new(start as u64, kind));
    }
    Ok(payload)
}

fn at(base: u64) -> impl Fn(DecodeError) -> DecodeError {
    move |error| DecodeError::new(base.saturating_add(error.offset_bytes), error.kind)
}

/// Decodes and verifies a complete cold file held in memory: trailer, header, footer, every
/// block and every record's crc (fuzz entry point). Offsets in errors are file offsets.
pub fn decode_file(bytes: &[u8]) -> Result<ColdFileIndex, DecodeError> {
    let file_len = bytes.len() as u64;
    let Some(trailer_at) = bytes.len().checked_sub(TRAILER_BYTES) else {
        let kind = CorruptKind::Truncated {
            structure: Structure::File,
            needed_bytes: TRAILER_BYTES as u64,
            available_bytes: file_len,
        };
        return Err(DecodeError::new(0, kind));
    };
    let trailer = decode_trailer(&bytes[trailer_at..]).map_err(at(trailer_at as u64))?;
    if trailer.file_len_bytes != file_len {
        let structure = Structure::Trailer;
        let found = trailer.file_len_bytes;
        return Err(mismatch(
            trailer_at as u64,
            structure,
            "file_len_bytes",
            file_len,
            found,
        ));
    }
    let header = decode_file_header(bytes)?;
    // decode_trailer bounded the footer range inside the file.
    let footer_start = trailer.footer_offset as usize;
    let footer_end = footer_start + trailer.footer_len_bytes as usize;
    let footer_bytes = &bytes[footer_start..footer_end];
    let footer = decode_footer(footer_bytes, header.segment_gen, trailer.footer_offset)
        .map_err(at(trailer.footer_offset))?;
    let footer_crc = le_u32(footer_bytes, footer_bytes.len() - 4);
    let index = ColdFileIndex::assemble(header, &trailer, footer, footer_crc, file_len)?;
    let mut blocks = Vec::with_capacity(index.blocks.len());
    for (block_no, block) in index.blocks.iter().enumerate() {
        let start = block.offset_bytes as usize;
        let end = start + block.disk_len_bytes() as usize;
        let uncompressed = decode_block(&bytes[start..end], header.segment_gen, block_no as u32)
            .map_err(at(block.offset_bytes))?;
        if uncompressed.len() != block.uncompressed_len as usize {
            let (expected, found) = (u64::from(block.uncompressed_len), uncompressed.len() as u64);
            let structure = Structure::BlockHeader;
            return Err(mismatch(
                block.offset_bytes,
                structure,
                "uncompressed_len",
                expected,
                found,
            ));
        }
        blocks.push(uncompressed);
    }
    for record in &index.records {
        let block = &blocks[record.block_no as usize];
        let block_at = index.blocks[record.block_no as usize].offset_bytes;
        record_payload(block, record).map_err(at(block_at))?;
    }
    Ok(index)
}

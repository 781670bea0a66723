//! Footer: where every block is and where every record is, so the store can serve a record
//! with one block read and the engine can rebuild its index without reading data blocks.
//!
//! ```text
//! 0    [u8; 8] magic           b"PSTCFOOT"
//! 8    u32     version         COLD_VERSION
//! 12   u32     block_count
//! 16   u64     record_count
//! 24   u64     segment_gen     paired with the file header, the trailer and the file name
//! 32   u64     payload_bytes   sum of all record lengths
//! 40   u64     reserved        zero
//! 48   block table, block_count entries of 16 bytes:
//!        0  u64 offset_bytes      file offset of the block header
//!        8  u32 stored_len        bytes after the block header
//!        12 u32 uncompressed_len
//! ..   record index, record_count entries of 32 bytes, strictly ascending (stream_id, seq):
//!        0  u64 stream_id
//!        8  u64 seq
//!        16 u32 block_no
//!        20 u32 offset_in_block   offset in the block's uncompressed bytes
//!        24 u32 len_bytes         payload length
//!        28 u32 payload_crc       crc32 of the payload (the engine's payload_crc)
//! end  u32     crc             crc32 of every footer byte before it
//! ```
//!
//! Decoding checks, besides magic, version and crc: the counts fit the length exactly; blocks
//! are back to back from the end of the file header to the footer; every record lies inside
//! its block; the records of a block tile it exactly; the index is strictly ordered.

use super::{
    check_crc, crc32, le_u32, le_u64, mismatch, need, out_of_bounds, put_u32, put_u64,
    BLOCK_HEADER_BYTES, COLD_VERSION, FILE_HEADER_BYTES, MAX_BLOCK_BYTES,
};
use crate::error::{CorruptKind, DecodeError, Structure};

pub const FOOTER_HEAD_BYTES: usize = 48;
pub const BLOCK_ENTRY_BYTES: usize = 16;
pub const RECORD_ENTRY_BYTES: usize = 32;
const FOOTER_CRC_BYTES: usize = 4;
const MAGIC: [u8; 8] = *b"PSTCFOOT";

const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + 8;
const BLOCK_COUNT_OFFSET: usize = VERSION_OFFSET + 4;
const RECORD_COUNT_OFFSET: usize = BLOCK_COUNT_OFFSET + 4;
const SEGMENT_GEN_OFFSET: usize = RECORD_COUNT_OFFSET + 8;
const PAYLOAD_BYTES_OFFSET: usize = SEGMENT_GEN_OFFSET + 8;
const RESERVED_OFFSET: usize = PAYLOAD_BYTES_OFFSET + 8;
const _: () = assert!(RESERVED_OFFSET + 8 == FOOTER_HEAD_BYTES);

const B_OFFSET_OFFSET: usize = 0;
const B_STORED_LEN_OFFSET: usize = B_OFFSET_OFFSET + 8;
const B_UNCOMPRESSED_LEN_OFFSET: usize = B_STORED_LEN_OFFSET + 4;
const _: () = assert!(B_UNCOMPRESSED_LEN_OFFSET + 4 == BLOCK_ENTRY_BYTES);

const R_STREAM_ID_OFFSET: usize = 0;
const R_SEQ_OFFSET: usize = R_STREAM_ID_OFFSET + 8;
const R_BLOCK_NO_OFFSET: usize = R_SEQ_OFFSET + 8;
const R_OFFSET_IN_BLOCK_OFFSET: usize = R_BLOCK_NO_OFFSET + 4;
const R_LEN_OFFSET: usize = R_OFFSET_IN_BLOCK_OFFSET + 4;
const R_PAYLOAD_CRC_OFFSET: usize = R_LEN_OFFSET + 4;
const _: () = assert!(R_PAYLOAD_CRC_OFFSET + 4 == RECORD_ENTRY_BYTES);

/// Where one block is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockEntry {
    pub offset_bytes: u64,
    pub stored_len: u32,
    pub uncompressed_len: u32,
}

impl BlockEntry {
    /// Bytes of the block on disk: header plus stored payload.
    pub fn disk_len_bytes(&self) -> u64 {
        BLOCK_HEADER_BYTES as u64 + u64::from(self.stored_len)
    }
}

/// Where one record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RecordEntry {
    pub stream_id: u64,
    pub seq: u64,
    pub block_no: u32,
    pub offset_in_block: u32,
    pub len_bytes: u32,
    pub payload_crc: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    pub segment_gen: u64,
    pub payload_bytes: u64,
    pub blocks: Vec<BlockEntry>,
    /// Strictly ascending by (stream_id, seq).
    pub records: Vec<RecordEntry>,
}

/// Bytes of a footer with these counts, or `None` on overflow.
pub fn footer_len_bytes(block_count: u64, record_count: u64) -> Option<u64> {
    let blocks = block_count.checked_mul(BLOCK_ENTRY_BYTES as u64)?;
    let records = record_count.checked_mul(RECORD_ENTRY_BYTES as u64)?;
    (FOOTER_HEAD_BYTES as u64 + FOOTER_CRC_BYTES as u64)
        .checked_add(blocks)?
        .checked_add(records)
}

/// Appends the encoded footer to `out`; `footer.records` must already be sorted.
pub fn encode_footer(footer: &Footer, out: &mut Vec<u8>) {
    debug_assert!(footer
        .records
        .windows(2)
        .all(|pair| key(&pair[0]) < key(&pair[1])));
    let start = out.len();
    let mut head = [0u8; FOOTER_HEAD_BYTES];
    head[..8].copy_from_slice(&MAGIC);
    put_u32(&mut head, VERSION_OFFSET, COLD_VERSION);
    put_u32(&mut head, BLOCK_COUNT_OFFSET, footer.blocks.len() as u32);
    put_u64(&mut head, RECORD_COUNT_OFFSET, footer.records.len() as u64);
    put_u64(&mut head, SEGMENT_GEN_OFFSET, footer.segment_gen);
    put_u64(&mut head, PAYLOAD_BYTES_OFFSET, footer.payload_bytes);
    out.extend_from_slice(&head);
    for block in &footer.blocks {
        let mut entry = [0u8; BLOCK_ENTRY_BYTES];
        put_u64(&mut entry, B_OFFSET_OFFSET, block.offset_bytes);
        put_u32(&mut entry, B_STORED_LEN_OFFSET, block.stored_len);
        put_u32(
            &mut entry,
            B_UNCOMPRESSED_LEN_OFFSET,
            block.uncompressed_len,
        );
        out.extend_from_slice(&entry);
    }
    for record in &footer.records {
        let mut entry = [0u8; RECORD_ENTRY_BYTES];
        put_u64(&mut entry, R_STREAM_ID_OFFSET, record.stream_id);
        put_u64(&mut entry, R_SEQ_OFFSET, record.seq);
        put_u32(&mut entry, R_BLOCK_NO_OFFSET, record.block_no);
        put_u32(&mut entry, R_OFFSET_IN_BLOCK_OFFSET, record.offset_in_block);
        put_u32(&mut entry, R_LEN_OFFSET, record.len_bytes);
        put_u32(&mut entry, R_PAYLOAD_CRC_OFFSET, record.payload_crc);
        out.extend_from_slice(&entry);
    }
    let crc = crc32(&[&out[start..]]);
    out.extend_from_slice(&crc.to_le_bytes());
    let expected = footer_len_bytes(footer.blocks.len() as u64, footer.records.len() as u64);
    debug_assert_eq!(Some((out.len() - start) as u64), expected);
}

fn key(record: &RecordEntry) -> (u64, u64) {
    (record.stream_id, record.seq)
}

/// Decodes a footer that is exactly `bytes` long and starts at file offset `footer_offset`
/// of the file of `segment_gen` (fuzz entry point).
pub fn decode_footer(
    bytes: &[u8],
    segment_gen: u64,
    footer_offset: u64,
) -> Result<Footer, DecodeError> {
    let structure = Structure::Footer;
    let head = need(bytes, FOOTER_HEAD_BYTES + FOOTER_CRC_BYTES, structure)?;
    if head[..8] != MAGIC {
        return Err(DecodeError::new(0, CorruptKind::BadMagic { structure }));
    }
    let crc_at = bytes.len() - FOOTER_CRC_BYTES;
    check_crc(
        structure,
        crc_at,
        le_u32(bytes, crc_at),
        crc32(&[&bytes[..crc_at]]),
    )?;
    let version = le_u32(head, VERSION_OFFSET);
    if version != COLD_VERSION {
        let kind = CorruptKind::UnsupportedVersion { structure, version };
        return Err(DecodeError::new(VERSION_OFFSET as u64, kind));
    }
    if le_u64(head, RESERVED_OFFSET) != 0 {
        let kind = CorruptKind::NonZeroReserved { structure };
        return Err(DecodeError::new(RESERVED_OFFSET as u64, kind));
    }
    let found_gen = le_u64(head, SEGMENT_GEN_OFFSET);
    if found_gen != segment_gen {
        let offset = SEGMENT_GEN_OFFSET as u64;
        return Err(mismatch(
            offset,
            structure,
            "segment_gen",
            segment_gen,
            found_gen,
        ));
    }
    let block_count = u64::from(le_u32(head, BLOCK_COUNT_OFFSET));
    let record_count = le_u64(head, RECORD_COUNT_OFFSET);
    let expected_len = footer_len_bytes(block_count, record_count).unwrap_or(u64::MAX);
    if expected_len != bytes.len() as u64 {
        let offset = RECORD_COUNT_OFFSET as u64;
        return Err(mismatch(
            offset,
            structure,
            "footer length",
            expected_len,
            bytes.len() as u64,
        ));
    }
    let blocks = decode_blocks(bytes, block_count as usize, footer_offset)?;
    let records_start = FOOTER_HEAD_BYTES + blocks.len() * BLOCK_ENTRY_BYTES;
    let records = decode_records(bytes, records_start, record_count as usize, &blocks)?;
    let payload_bytes = le_u64(head, PAYLOAD_BYTES_OFFSET);
    let sum: u64 = records
        .iter()
        .map(|record| u64::from(record.len_bytes))
        .sum();
    if sum != payload_bytes {
        let offset = PAYLOAD_BYTES_OFFSET as u64;
        return Err(mismatch(
            offset,
            structure,
            "payload_bytes",
            sum,
            payload_bytes,
        ));
    }
    Ok(Footer {
        segment_gen,
        payload_bytes,
        blocks,
        records,
    })
}

/// Block table: back to back from the end of the file header up to the footer.
fn decode_blocks(
    bytes: &[u8],
    block_count: usize,
    footer_offset: u64,
) -> Result<Vec<BlockEntry>, DecodeError> {
    let structure = Structure::Footer;
    let mut blocks = Vec::with_capacity(block_count);
    let mut expected_offset = FILE_HEADER_BYTES as u64;
    for index in 0..block_count {
        let at = FOOTER_HEAD_BYTES + index * BLOCK_ENTRY_BYTES;
        let entry = BlockEntry {
            offset_bytes: le_u64(bytes, at + B_OFFSET_OFFSET),
            stored_len: le_u32(bytes, at + B_STORED_LEN_OFFSET),
            uncompressed_len: le_u32(bytes, at + B_UNCOMPRESSED_LEN_OFFSET),
        };
        if entry.offset_bytes != expected_offset {
            let found = entry.offset_bytes;
            return Err(mismatch(
                at as u64,
                structure,
                "block offset",
                expected_offset,
                found,
            ));
        }
        if entry.uncompressed_len > MAX_BLOCK_BYTES || entry.stored_len > entry.uncompressed_len {
            let value = u64::from(entry.uncompressed_len.max(entry.stored_len));
            let limit = u64::from(MAX_BLOCK_BYTES);
            return Err(out_of_bounds(
                at as u64,
                structure,
                "block length",
                value,
                limit,
            ));
        }
        expected_offset += entry.disk_len_bytes();
        blocks.push(entry);
    }
    if expected_offset != footer_offset {
        let offset = FOOTER_HEAD_BYTES as u64;
        return Err(mismatch(
            offset,
            structure,
            "end of blocks",
            footer_offset,
            expected_offset,
        ));
    }
    Ok(blocks)
}

/// Record index: inside its block, tiling each block exactly, strictly ordered.
fn decode_records(
    bytes: &[u8],
    records_start: usize,
    record_count: usize,
    blocks: &[BlockEntry],
) -> Result<Vec<RecordEntry>, DecodeError> {
    let structure = Structure::Footer;
    let mut records = Vec::with_capacity(record_count);
    let mut tiled_bytes = vec![0u64; blocks.len()];
    for index in 0..record_count {
        let at = records_start + index * RECORD_ENTRY_BYTES;
        let record = RecordEntry {
            stream_id: le_u64(bytes, at + R_STREAM_ID_OFFSET),
            seq: le_u64(bytes, at + R_SEQ_OFFSET),
            block_no: le_u32(bytes, at + R_BLOCK_NO_OFFSET),
            offset_in_block: le_u32(bytes, at + R_OFFSET_IN_BLOCK_OFFSET),
            len_bytes: le_u32(bytes, at + R_LEN_OFFSET),
            payload_crc: le_u32(bytes, at + R_PAYLOAD_CRC_OFFSET),
        };
        let Some(block) = blocks.get(record.block_no as usize) else {
            let (value, limit) = (u64::from(record.block_no), blocks.len() as u64);
            return Err(out_of_bounds(
                at as u64, structure, "block_no", value, limit,
            ));
        };
        let end = u64::from(record.offset_in_block) + u64::from(record.len_bytes);
        if end > u64::from(block.uncompressed_len) {
            let limit = u64::from(block.uncompressed_len);
            return Err(out_of_bounds(
                at as u64,
                structure,
                "record end",
                end,
                limit,
            ));
        }
        if records
            .last()
            .is_some_and(|previous: &RecordEntry| key(previous) >= key(&record))
        {
            return Err(DecodeError::new(
                at as u64,
                CorruptKind::IndexNotSorted {
                    entry: index as u64,
                },
            ));
        }
        tiled_bytes[record.block_no as usize] += u64::from(record.len_bytes);
        records.push(record);
    }
    for (block_no, (block, tiled)) in blocks.iter().zip(&tiled_bytes).enumerate() {
        if u64::from(block.uncompressed_len) != *tiled {
            let at = (FOOTER_HEAD_BYTES + block_no * BLOCK_ENTRY_BYTES) as u64;
            let expected = u64::from(block.uncompressed_len);
            return Err(mismatch(
                at,
                structure,
                "bytes of records in block",
                expected,
                *tiled,
            ));
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Footer, u64) {
        let blocks = vec![
            BlockEntry {
                offset_bytes: 64,
                stored_len: 100,
                uncompressed_len: 100,
            },
            BlockEntry {
                offset_bytes: 64 + 132,
                stored_len: 10,
                uncompressed_len: 50,
            },
        ];
        let records = vec![
            RecordEntry {
                stream_id: 1,
                seq: 0,
                block_no: 0,
                offset_in_block: 0,
                len_bytes: 60,
                payload_crc: 1,
            },
            RecordEntry {
                stream_id: 1,
                seq: 1,
                block_no: 1,
                offset_in_block: 0,
                len_bytes: 50,
                payload_crc: 2,
            },
            RecordEntry {
                stream_id: 2,
                seq: 7,
                block_no: 0,
                offset_in_block: 60,
                len_bytes: 40,
                payload_crc: 3,
            },
        ];
        let footer_offset = 64 + 132 + 42;
        (
            Footer {
                segment_gen: 4,
                payload_bytes: 150,
                blocks,
                records,
            },
            footer_offset,
        )
    }

    #[test]
    fn round_trip_and_every_flipped_bit_is_rejected() {
        let (footer, footer_offset) = sample();
        let mut bytes = Vec::new();
        encode_footer(&footer, &mut bytes);
        assert_eq!(decode_footer(&bytes, 4, footer_offset), Ok(footer));
        assert!(decode_footer(&bytes, 5, footer_offset).is_err());
        assert!(decode_footer(&bytes, 4, footer_offset + 1).is_err());
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_footer(&flipped, 4, footer_offset).is_err(),
                "bit {bit}"
            );
        }
        for len in 0..bytes.len() {
            assert!(
                decode_footer(&bytes[..len], 4, footer_offset).is_err(),
                "len {len}"
            );
        }
    }
}

//! Trailer: the last 64 bytes of a cold file, pointing at the footer.
//!
//! ```text
//! 0   [u8; 8] magic             b"PSTCTRLR"
//! 8   u32     version           COLD_VERSION
//! 12  u32     footer_crc        copy of the footer's crc (paired check)
//! 16  u64     segment_gen
//! 24  u64     footer_offset     file offset of the footer
//! 32  u64     footer_len_bytes
//! 40  u64     file_len_bytes    the whole file, a multiple of 4096 (paired with fstat)
//! 48  u64     record_count      paired with the footer
//! 56  u32     reserved          zero
//! 60  u32     crc               crc32 of bytes 0..60
//! ```
//!
//! The trailer is the last thing written, so a file cut short by a crash has no valid trailer
//! at its end; but since the rename commits, a final name always has one (see `writer.rs`).

use super::{
    check_crc, crc32, le_u32, le_u64, mismatch, need, out_of_bounds, put_u32, put_u64,
    COLD_VERSION, FILE_ALIGN_BYTES, FILE_HEADER_BYTES,
};
use crate::error::{CorruptKind, DecodeError, Structure};

pub const TRAILER_BYTES: usize = 64;
const MAGIC: [u8; 8] = *b"PSTCTRLR";

const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + 8;
const FOOTER_CRC_OFFSET: usize = VERSION_OFFSET + 4;
const SEGMENT_GEN_OFFSET: usize = FOOTER_CRC_OFFSET + 4;
const FOOTER_OFFSET_OFFSET: usize = SEGMENT_GEN_OFFSET + 8;
const FOOTER_LEN_OFFSET: usize = FOOTER_OFFSET_OFFSET + 8;
const FILE_LEN_OFFSET: usize = FOOTER_LEN_OFFSET + 8;
const RECORD_COUNT_OFFSET: usize = FILE_LEN_OFFSET + 8;
const RESERVED_OFFSET: usize = RECORD_COUNT_OFFSET + 8;
const CRC_OFFSET: usize = RESERVED_OFFSET + 4;
const _: () = assert!(CRC_OFFSET + 4 == TRAILER_BYTES);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    pub footer_crc: u32,
    pub segment_gen: u64,
    pub footer_offset: u64,
    pub footer_len_bytes: u64,
    pub file_len_bytes: u64,
    pub record_count: u64,
}

pub fn encode_trailer(trailer: &Trailer) -> [u8; TRAILER_BYTES] {
    let mut bytes = [0u8; TRAILER_BYTES];
    bytes[..8].copy_from_slice(&MAGIC);
    put_u32(&mut bytes, VERSION_OFFSET, COLD_VERSION);
    put_u32(&mut bytes, FOOTER_CRC_OFFSET, trailer.footer_crc);
    put_u64(&mut bytes, SEGMENT_GEN_OFFSET, trailer.segment_gen);
    put_u64(&mut bytes, FOOTER_OFFSET_OFFSET, trailer.footer_offset);
    put_u64(&mut bytes, FOOTER_LEN_OFFSET, trailer.footer_len_bytes);
    put_u64(&mut bytes, FILE_LEN_OFFSET, trailer.file_len_bytes);
    put_u64(&mut bytes, RECORD_COUNT_OFFSET, trailer.record_count);
    let crc = crc32(&[&bytes[..CRC_OFFSET]]);
    put_u32(&mut bytes, CRC_OFFSET, crc);
    debug_assert_eq!(decode_trailer(&bytes), Ok(*trailer));
    bytes
}

/// Decodes a trailer from the first 64 bytes of `bytes` and checks that the footer range it
/// names is plausible for its file length (fuzz entry point).
pub fn decode_trailer(bytes: &[u8]) -> Result<Trailer, DecodeError> {
    let structure = Structure::Trailer;
    let bytes = need(bytes, TRAILER_BYTES, structure)?;
    if bytes[..8] != MAGIC {
        return Err(DecodeError::new(0, CorruptKind::BadMagic { structure }));
    }
    check_crc(
        structure,
        CRC_OFFSET,
        le_u32(bytes, CRC_OFFSET),
        crc32(&[&bytes[..CRC_OFFSET]]),
    )?;
    let version = le_u32(bytes, VERSION_OFFSET);
    if version != COLD_VERSION {
        let kind = CorruptKind::UnsupportedVersion { structure, version };
        return Err(DecodeError::new(VERSION_OFFSET as u64, kind));
    }
    if le_u32(bytes, RESERVED_OFFSET) != 0 {
        let kind = CorruptKind::NonZeroReserved { structure };
        return Err(DecodeError::new(RESERVED_OFFSET as u64, kind));
    }
    let trailer = Trailer {
        footer_crc: le_u32(bytes, FOOTER_CRC_OFFSET),
        segment_gen: le_u64(bytes, SEGMENT_GEN_OFFSET),
        footer_offset: le_u64(bytes, FOOTER_OFFSET_OFFSET),
        footer_len_bytes: le_u64(bytes, FOOTER_LEN_OFFSET),
        file_len_bytes: le_u64(bytes, FILE_LEN_OFFSET),
        record_count: le_u64(bytes, RECORD_COUNT_OFFSET),
    };
    let file_len = trailer.file_len_bytes;
    if file_len < FILE_ALIGN_BYTES || file_len % FILE_ALIGN_BYTES != 0 {
        let offset = FILE_LEN_OFFSET as u64;
        return Err(mismatch(
            offset,
            structure,
            "file_len_bytes alignment",
            FILE_ALIGN_BYTES,
            file_len,
        ));
    }
    // Header, blocks, footer, padding, trailer: the footer lies between the header and the
    // trailer.
    let footer_end = trailer.footer_offset.checked_add(trailer.footer_len_bytes);
    let limit = file_len - TRAILER_BYTES as u64;
    let in_range = trailer.footer_offset >= FILE_HEADER_BYTES as u64
        && footer_end.is_some_and(|end| end <= limit);
    if !in_range {
        let value = footer_end.unwrap_or(u64::MAX);
        return Err(out_of_bounds(
            FOOTER_OFFSET_OFFSET as u64,
            structure,
            "footer end",
            value,
            limit,
        ));
    }
    Ok(trailer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_flipped_bit_is_rejected() {
        let trailer = Trailer {
            footer_crc: 0xabcd,
            segment_gen: 7,
            footer_offset: 1000,
            footer_len_bytes: 500,
            file_len_bytes: 4096,
            record_count: 3,
        };
        let bytes = encode_trailer(&trailer);
        assert_eq!(decode_trailer(&bytes), Ok(trailer));
        for bit in 0..TRAILER_BYTES * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_trailer(&flipped).is_err(), "bit {bit}");
        }
    }
}

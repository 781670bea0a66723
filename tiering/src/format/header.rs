//! File header: the first 64 bytes of a cold file, naming the segment it came from.
//!
//! ```text
//! 0   [u8; 8] magic              b"PSTCOLDF"
//! 8   u32     version            COLD_VERSION
//! 12  u32     segment_index      index of the source segment in the pool
//! 16  u64     segment_gen        generation of the source segment (also in the file name)
//! 24  u64     pool_nonce         the pool's random nonce
//! 32  u32     block_size_bytes   target uncompressed bytes per block
//! 36  u8      compression        0 = none, 1 = zstd (what the writer was asked to do)
//! 37  [u8; 3] reserved           zero
//! 40  i32     compression_level  zstd level, 0 when none
//! 44  [u8;16] reserved           zero
//! 60  u32     crc                crc32 of bytes 0..60
//! ```

use super::{
    check_crc, crc32, le_u32, le_u64, need, put_u32, put_u64, COLD_VERSION, MAX_BLOCK_SIZE_BYTES,
    MIN_BLOCK_SIZE_BYTES,
};
use crate::error::{CorruptKind, DecodeError, Structure};

pub const FILE_HEADER_BYTES: usize = 64;
const MAGIC: [u8; 8] = *b"PSTCOLDF";

const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + 8;
const SEGMENT_INDEX_OFFSET: usize = VERSION_OFFSET + 4;
const SEGMENT_GEN_OFFSET: usize = SEGMENT_INDEX_OFFSET + 4;
const POOL_NONCE_OFFSET: usize = SEGMENT_GEN_OFFSET + 8;
const BLOCK_SIZE_OFFSET: usize = POOL_NONCE_OFFSET + 8;
const COMPRESSION_OFFSET: usize = BLOCK_SIZE_OFFSET + 4;
const RESERVED_A_OFFSET: usize = COMPRESSION_OFFSET + 1;
const LEVEL_OFFSET: usize = RESERVED_A_OFFSET + 3;
const RESERVED_B_OFFSET: usize = LEVEL_OFFSET + 4;
const CRC_OFFSET: usize = RESERVED_B_OFFSET + 16;
const _: () = assert!(CRC_OFFSET + 4 == FILE_HEADER_BYTES);

/// Per-file compression setting. Off by default: cold data may still be latency-sensitive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    /// zstd at `level` (1..=22; negative levels are zstd's fast modes).
    Zstd { level: i32 },
}

impl Compression {
    fn code(self) -> (u8, i32) {
        match self {
            Compression::None => (0, 0),
            Compression::Zstd { level } => (1, level),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    pub segment_index: u32,
    pub segment_gen: u64,
    pub pool_nonce: u64,
    pub block_size_bytes: u32,
    pub compression: Compression,
}

pub fn encode_file_header(header: &FileHeader) -> [u8; FILE_HEADER_BYTES] {
    debug_assert!((MIN_BLOCK_SIZE_BYTES..=MAX_BLOCK_SIZE_BYTES).contains(&header.block_size_bytes));
    let mut bytes = [0u8; FILE_HEADER_BYTES];
    bytes[MAGIC_OFFSET..MAGIC_OFFSET + 8].copy_from_slice(&MAGIC);
    put_u32(&mut bytes, VERSION_OFFSET, COLD_VERSION);
    put_u32(&mut bytes, SEGMENT_INDEX_OFFSET, header.segment_index);
    put_u64(&mut bytes, SEGMENT_GEN_OFFSET, header.segment_gen);
    put_u64(&mut bytes, POOL_NONCE_OFFSET, header.pool_nonce);
    put_u32(&mut bytes, BLOCK_SIZE_OFFSET, header.block_size_bytes);
    let (code, level) = header.compression.code();
    bytes[COMPRESSION_OFFSET] = code;
    bytes[LEVEL_OFFSET..LEVEL_OFFSET + 4].copy_from_slice(&level.to_le_bytes());
    let crc = crc32(&[&bytes[..CRC_OFFSET]]);
    put_u32(&mut bytes, CRC_OFFSET, crc);
    debug_assert_eq!(decode_file_header(&bytes), Ok(*header));
    bytes
}

/// Decodes the file header from the start of `bytes` (fuzz entry point).
pub fn decode_file_header(bytes: &[u8]) -> Result<FileHeader, DecodeError> {
    let structure = Structure::FileHeader;
    let bytes = need(bytes, FILE_HEADER_BYTES, structure)?;
    if bytes[MAGIC_OFFSET..MAGIC_OFFSET + 8] != MAGIC {
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
    let reserved_a = &bytes[RESERVED_A_OFFSET..LEVEL_OFFSET];
    let reserved_b = &bytes[RESERVED_B_OFFSET..CRC_OFFSET];
    if reserved_a.iter().chain(reserved_b).any(|&b| b != 0) {
        return Err(DecodeError::new(
            RESERVED_A_OFFSET as u64,
            CorruptKind::NonZeroReserved { structure },
        ));
    }
    let block_size_bytes = le_u32(bytes, BLOCK_SIZE_OFFSET);
    if !(MIN_BLOCK_SIZE_BYTES..=MAX_BLOCK_SIZE_BYTES).contains(&block_size_bytes) {
        return Err(super::out_of_bounds(
            BLOCK_SIZE_OFFSET as u64,
            structure,
            "block_size_bytes",
            u64::from(block_size_bytes),
            u64::from(MAX_BLOCK_SIZE_BYTES),
        ));
    }
    let level = le_u32(bytes, LEVEL_OFFSET) as i32;
    let compression = match bytes[COMPRESSION_OFFSET] {
        0 if level == 0 => Compression::None,
        1 => Compression::Zstd { level },
        code => {
            let kind = CorruptKind::UnknownCodec { structure, code };
            return Err(DecodeError::new(COMPRESSION_OFFSET as u64, kind));
        }
    };
    Ok(FileHeader {
        segment_index: le_u32(bytes, SEGMENT_INDEX_OFFSET),
        segment_gen: le_u64(bytes, SEGMENT_GEN_OFFSET),
        pool_nonce: le_u64(bytes, POOL_NONCE_OFFSET),
        block_size_bytes,
        compression,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FileHeader {
        FileHeader {
            segment_index: 3,
            segment_gen: 0x55,
            pool_nonce: 0xfeed,
            block_size_bytes: 65536,
            compression: Compression::Zstd { level: 3 },
        }
    }

    #[test]
    fn round_trip_and_every_flipped_bit_is_rejected() {
        let bytes = encode_file_header(&sample());
        assert_eq!(decode_file_header(&bytes), Ok(sample()));
        for bit in 0..FILE_HEADER_BYTES * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_file_header(&flipped).is_err(), "bit {bit}");
        }
        assert!(decode_file_header(&bytes[..10]).is_err());
    }
}

//! Superblock: the first page of the data region, written once when the pool is formatted.
//!
//! ```text
//! 0    [u8; 8] magic                 b"PSTRMLOG"
//! 8    u32     version               SUPERBLOCK_VERSION
//! 12   u32     used_bytes            SUPERBLOCK_USED_BYTES
//! 16   u64     pool_nonce            random, keys every record crc
//! 24   u64     segment_size_bytes
//! 32   u64     segment_count
//! 40   u64     stream_slot_count
//! 48   u64     stream_table_offset
//! 56   u64     segment_table_offset
//! 64   u64     segments_offset
//! 72   u64     max_payload_bytes
//! 80   [u8;44] reserved (zero)
//! 124  u32     crc                   crc32 of bytes 0..124
//! ```
//! Nothing in the superblock changes after format, so it needs no atomic update protocol;
//! format writes it last, so a pool whose format was interrupted has no valid superblock.

use super::{crc32, le_u32, le_u64, put_u32, put_u64};

pub const SUPERBLOCK_MAGIC: [u8; 8] = *b"PSTRMLOG";
pub const SUPERBLOCK_VERSION: u32 = 1;
pub const SUPERBLOCK_REGION_BYTES: usize = 4096;

const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + 8;
const USED_BYTES_OFFSET: usize = VERSION_OFFSET + 4;
const POOL_NONCE_OFFSET: usize = USED_BYTES_OFFSET + 4;
const SEGMENT_SIZE_OFFSET: usize = POOL_NONCE_OFFSET + 8;
const SEGMENT_COUNT_OFFSET: usize = SEGMENT_SIZE_OFFSET + 8;
const STREAM_SLOT_COUNT_OFFSET: usize = SEGMENT_COUNT_OFFSET + 8;
const STREAM_TABLE_OFFSET_OFFSET: usize = STREAM_SLOT_COUNT_OFFSET + 8;
const SEGMENT_TABLE_OFFSET_OFFSET: usize = STREAM_TABLE_OFFSET_OFFSET + 8;
const SEGMENTS_OFFSET_OFFSET: usize = SEGMENT_TABLE_OFFSET_OFFSET + 8;
const MAX_PAYLOAD_OFFSET: usize = SEGMENTS_OFFSET_OFFSET + 8;
const RESERVED_OFFSET: usize = MAX_PAYLOAD_OFFSET + 8;
const CRC_OFFSET: usize = 124;
pub const SUPERBLOCK_USED_BYTES: usize = CRC_OFFSET + 4;

const _: () = assert!(RESERVED_OFFSET <= CRC_OFFSET);
const _: () = assert!(SUPERBLOCK_USED_BYTES <= SUPERBLOCK_REGION_BYTES);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    pub pool_nonce: u64,
    pub segment_size_bytes: u64,
    pub segment_count: u64,
    pub stream_slot_count: u64,
    pub stream_table_offset: u64,
    pub segment_table_offset: u64,
    pub segments_offset: u64,
    pub max_payload_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuperblockError {
    /// Too short to hold a superblock.
    Truncated {
        len_bytes: usize,
    },
    /// All zero: the pool was never formatted (or its format was interrupted).
    Unformatted,
    BadMagic,
    UnsupportedVersion(u32),
    BadUsedBytes(u32),
    ChecksumMismatch {
        stored: u32,
        computed: u32,
    },
    /// Checksummed, but bytes documented as zero are not.
    ReservedNotZero,
}

impl SuperblockError {
    /// The engine-wide kind of this damage.
    pub fn corrupt_kind(&self) -> crate::error::CorruptKind {
        use crate::error::CorruptKind;
        match self {
            SuperblockError::ChecksumMismatch { .. } => CorruptKind::Checksum,
            SuperblockError::Truncated { .. } | SuperblockError::Unformatted => {
                CorruptKind::BadField {
                    field: "superblock length",
                }
            }
            SuperblockError::BadMagic => CorruptKind::BadField { field: "magic" },
            SuperblockError::UnsupportedVersion(_) => CorruptKind::BadField { field: "version" },
            SuperblockError::BadUsedBytes(_) => CorruptKind::BadField {
                field: "used bytes",
            },
            SuperblockError::ReservedNotZero => CorruptKind::BadField { field: "reserved" },
        }
    }
}

impl Superblock {
    pub fn encode(&self) -> [u8; SUPERBLOCK_USED_BYTES] {
        let mut bytes = [0u8; SUPERBLOCK_USED_BYTES];
        bytes[MAGIC_OFFSET..MAGIC_OFFSET + 8].copy_from_slice(&SUPERBLOCK_MAGIC);
        put_u32(&mut bytes, VERSION_OFFSET, SUPERBLOCK_VERSION);
        put_u32(&mut bytes, USED_BYTES_OFFSET, SUPERBLOCK_USED_BYTES as u32);
        put_u64(&mut bytes, POOL_NONCE_OFFSET, self.pool_nonce);
        put_u64(&mut bytes, SEGMENT_SIZE_OFFSET, self.segment_size_bytes);
        put_u64(&mut bytes, SEGMENT_COUNT_OFFSET, self.segment_count);
        put_u64(&mut bytes, STREAM_SLOT_COUNT_OFFSET, self.stream_slot_count);
        put_u64(
            &mut bytes,
            STREAM_TABLE_OFFSET_OFFSET,
            self.stream_table_offset,
        );
        put_u64(
            &mut bytes,
            SEGMENT_TABLE_OFFSET_OFFSET,
            self.segment_table_offset,
        );
        put_u64(&mut bytes, SEGMENTS_OFFSET_OFFSET, self.segments_offset);
        put_u64(&mut bytes, MAX_PAYLOAD_OFFSET, self.max_payload_bytes);
        let crc = crc32(&[&bytes[..CRC_OFFSET]]);
        put_u32(&mut bytes, CRC_OFFSET, crc);
        bytes
    }

    /// Decodes untrusted bytes. Field plausibility (sizes against the pool) is checked by
    /// the layout, which knows the pool length.
    pub fn decode(bytes: &[u8]) -> Result<Superblock, SuperblockError> {
        let Some(bytes) = bytes.get(..SUPERBLOCK_USED_BYTES) else {
            return Err(SuperblockError::Truncated {
                len_bytes: bytes.len(),
            });
        };
        if bytes.iter().all(|&b| b == 0) {
            return Err(SuperblockError::Unformatted);
        }
        if bytes[MAGIC_OFFSET..MAGIC_OFFSET + 8] != SUPERBLOCK_MAGIC {
            return Err(SuperblockError::BadMagic);
        }
        let version = le_u32(bytes, VERSION_OFFSET);
        if version != SUPERBLOCK_VERSION {
            return Err(SuperblockError::UnsupportedVersion(version));
        }
        let used_bytes = le_u32(bytes, USED_BYTES_OFFSET);
        if used_bytes as usize != SUPERBLOCK_USED_BYTES {
            return Err(SuperblockError::BadUsedBytes(used_bytes));
        }
        let stored = le_u32(bytes, CRC_OFFSET);
        let computed = crc32(&[&bytes[..CRC_OFFSET]]);
        if stored != computed {
            return Err(SuperblockError::ChecksumMismatch { stored, computed });
        }
        if bytes[RESERVED_OFFSET..CRC_OFFSET].iter().any(|&b| b != 0) {
            return Err(SuperblockError::ReservedNotZero);
        }
        Ok(Superblock {
            pool_nonce: le_u64(bytes, POOL_NONCE_OFFSET),
            segment_size_bytes: le_u64(bytes, SEGMENT_SIZE_OFFSET),
            segment_count: le_u64(bytes, SEGMENT_COUNT_OFFSET),
            stream_slot_count: le_u64(bytes, STREAM_SLOT_COUNT_OFFSET),
            stream_table_offset: le_u64(bytes, STREAM_TABLE_OFFSET_OFFSET),
            segment_table_offset: le_u64(bytes, SEGMENT_TABLE_OFFSET_OFFSET),
            segments_offset: le_u64(bytes, SEGMENTS_OFFSET_OFFSET),
            max_payload_bytes: le_u64(bytes, MAX_PAYLOAD_OFFSET),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksummed_superblock_with_reserved_bytes_set_is_rejected() {
        let mut bytes = sample().encode();
        bytes[RESERVED_OFFSET + 3] = 7;
        let crc = crc32(&[&bytes[..CRC_OFFSET]]);
        put_u32(&mut bytes, CRC_OFFSET, crc);
        assert_eq!(
            Superblock::decode(&bytes),
            Err(SuperblockError::ReservedNotZero)
        );
    }

    fn sample() -> Superblock {
        Superblock {
            pool_nonce: 99,
            segment_size_bytes: 1 << 22,
            segment_count: 10,
            stream_slot_count: 64,
            stream_table_offset: 4096,
            segment_table_offset: 8192,
            segments_offset: 12288,
            max_payload_bytes: 1 << 20,
        }
    }

    #[test]
    fn round_trip_and_flips() {
        let bytes = sample().encode();
        assert_eq!(Superblock::decode(&bytes), Ok(sample()));
        for bit in 0..SUPERBLOCK_USED_BYTES * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(Superblock::decode(&flipped).is_err(), "bit {bit}");
        }
        assert_eq!(
            Superblock::decode(&bytes[..10]),
            Err(SuperblockError::Truncated { len_bytes: 10 })
        );
        assert_eq!(
            Superblock::decode(&[0; 200]),
            Err(SuperblockError::Unformatted)
        );
    }
}

//! Superblock (format v2): the first two pages of the data region, two copies of the same
//! 128 bytes, written once when the pool is formatted.
//!
//! ```text
//! 0    u64     format_marker         FORMAT_MARKER_RUNNING while a format runs,
//!                                     FORMAT_MARKER_DONE once it completed
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
//! 80   u64     directory_root        reserved for the stream directory (issue 18), zero
//! 88   u64     directory_generation  reserved for the stream directory (issue 18), zero
//! 96   [u8;24] reserved (zero)
//! 120  u32     flags                 zero in v2
//! 124  u32     crc                   crc32c of bytes 0..124
//! ```
//! Copy A lives at data-region offset 0 (page 0), copy B at `SUPERBLOCK_COPY_BYTES`
//! (page 1). Format writes the marker word `FORMATNG` into copy A first (persisted), zeroes
//! everything else, then writes copy B and last copy A, both with `FORMATED`. What a pool
//! holds is decided by [`crate::probe`] from both copies (the decision table is there).
//!
//! Format v1 had the magic `PSTRMLOG` where v2 has its marker, version 1 and a crc32 (IEEE)
//! over the same bytes 0..124; [`detect_v1`] recognizes such a superblock so that a v1 pool
//! is refused as `UnsupportedVersion`, never taken for damage or formatted over.

use super::{crc32, crc32c, le_u32, le_u64, put_u32, put_u64};

/// Marker word of a format in progress (copy A only, written first).
pub const FORMAT_MARKER_RUNNING: [u8; 8] = *b"FORMATNG";
/// Marker word of a completed format (both copies).
pub const FORMAT_MARKER_DONE: [u8; 8] = *b"FORMATED";
/// The v1 superblock's magic, at the offset of v2's marker word.
pub const SUPERBLOCK_V1_MAGIC: [u8; 8] = *b"PSTRMLOG";
pub const SUPERBLOCK_VERSION: u32 = 2;
/// Bytes of one copy's page.
pub const SUPERBLOCK_COPY_BYTES: usize = 4096;
/// Number of copies (A at page 0, B at page 1).
pub const SUPERBLOCK_COPY_COUNT: usize = 2;
/// The superblock area: both copies' pages. The stream table starts after it.
pub const SUPERBLOCK_REGION_BYTES: usize = SUPERBLOCK_COPY_BYTES * SUPERBLOCK_COPY_COUNT;

const MARKER_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MARKER_OFFSET + 8;
const USED_BYTES_OFFSET: usize = VERSION_OFFSET + 4;
const POOL_NONCE_OFFSET: usize = USED_BYTES_OFFSET + 4;
const SEGMENT_SIZE_OFFSET: usize = POOL_NONCE_OFFSET + 8;
const SEGMENT_COUNT_OFFSET: usize = SEGMENT_SIZE_OFFSET + 8;
const STREAM_SLOT_COUNT_OFFSET: usize = SEGMENT_COUNT_OFFSET + 8;
const STREAM_TABLE_OFFSET_OFFSET: usize = STREAM_SLOT_COUNT_OFFSET + 8;
const SEGMENT_TABLE_OFFSET_OFFSET: usize = STREAM_TABLE_OFFSET_OFFSET + 8;
const SEGMENTS_OFFSET_OFFSET: usize = SEGMENT_TABLE_OFFSET_OFFSET + 8;
const MAX_PAYLOAD_OFFSET: usize = SEGMENTS_OFFSET_OFFSET + 8;
const DIRECTORY_ROOT_OFFSET: usize = MAX_PAYLOAD_OFFSET + 8;
const DIRECTORY_GENERATION_OFFSET: usize = DIRECTORY_ROOT_OFFSET + 8;
const RESERVED_OFFSET: usize = DIRECTORY_GENERATION_OFFSET + 8;
const FLAGS_OFFSET: usize = 120;
const CRC_OFFSET: usize = FLAGS_OFFSET + 4;
pub const SUPERBLOCK_USED_BYTES: usize = CRC_OFFSET + 4;

const _: () = assert!(RESERVED_OFFSET <= FLAGS_OFFSET);
const _: () = assert!(SUPERBLOCK_USED_BYTES == 128);
const _: () = assert!(SUPERBLOCK_USED_BYTES <= SUPERBLOCK_COPY_BYTES);

/// Data-region offset of copy `copy` (0 = A, 1 = B).
pub const fn copy_offset(copy: usize) -> usize {
    copy * SUPERBLOCK_COPY_BYTES
}

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
    /// Reserved for the stream directory (issue 18): zero until it lands.
    pub directory_root: u64,
    /// Reserved for the stream directory (issue 18): zero until it lands.
    pub directory_generation: u64,
}

/// Why one copy of the superblock does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuperblockError {
    /// Too short to hold a superblock.
    Truncated {
        len_bytes: usize,
    },
    /// All zero: never written.
    Unformatted,
    /// The marker word of a format in progress.
    FormatRunning,
    /// Neither marker (nor the v1 magic) at offset 0.
    BadMagic,
    UnsupportedVersion(u32),
    BadUsedBytes(u32),
    ChecksumMismatch {
        stored: u32,
        computed: u32,
    },
    /// Checksummed, but bytes documented as zero (reserved words, flags) are not.
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
            SuperblockError::FormatRunning | SuperblockError::BadMagic => CorruptKind::BadField {
                field: "format marker",
            },
            SuperblockError::UnsupportedVersion(_) => CorruptKind::BadField { field: "version" },
            SuperblockError::BadUsedBytes(_) => CorruptKind::BadField {
                field: "used bytes",
            },
            SuperblockError::ReservedNotZero => CorruptKind::BadField { field: "reserved" },
        }
    }
}

impl Superblock {
    /// One copy's bytes, with the marker of a completed format.
    pub fn encode(&self) -> [u8; SUPERBLOCK_USED_BYTES] {
        let mut bytes = [0u8; SUPERBLOCK_USED_BYTES];
        bytes[MARKER_OFFSET..MARKER_OFFSET + 8].copy_from_slice(&FORMAT_MARKER_DONE);
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
        put_u64(&mut bytes, DIRECTORY_ROOT_OFFSET, self.directory_root);
        put_u64(
            &mut bytes,
            DIRECTORY_GENERATION_OFFSET,
            self.directory_generation,
        );
        put_u32(&mut bytes, FLAGS_OFFSET, 0);
        let crc = crc32c(&[&bytes[..CRC_OFFSET]]);
        put_u32(&mut bytes, CRC_OFFSET, crc);
        bytes
    }

    /// Decodes one copy from untrusted bytes. Field plausibility (sizes against the pool) is
    /// checked by the layout, which knows the pool length.
    pub fn decode(bytes: &[u8]) -> Result<Superblock, SuperblockError> {
        let Some(bytes) = bytes.get(..SUPERBLOCK_USED_BYTES) else {
            return Err(SuperblockError::Truncated {
                len_bytes: bytes.len(),
            });
        };
        if super::is_zero(bytes) {
            return Err(SuperblockError::Unformatted);
        }
        let marker = &bytes[MARKER_OFFSET..MARKER_OFFSET + 8];
        if marker == FORMAT_MARKER_RUNNING {
            return Err(SuperblockError::FormatRunning);
        }
        if let Some(found) = detect_v1(bytes) {
            return Err(SuperblockError::UnsupportedVersion(found));
        }
        if marker != FORMAT_MARKER_DONE {
            return Err(SuperblockError::BadMagic);
        }
        let stored = le_u32(bytes, CRC_OFFSET);
        let computed = crc32c(&[&bytes[..CRC_OFFSET]]);
        if stored != computed {
            return Err(SuperblockError::ChecksumMismatch { stored, computed });
        }
        // Checked after the crc: a version that checks was written by another version.
        let version = le_u32(bytes, VERSION_OFFSET);
        if version != SUPERBLOCK_VERSION {
            return Err(SuperblockError::UnsupportedVersion(version));
        }
        let used_bytes = le_u32(bytes, USED_BYTES_OFFSET);
        if used_bytes as usize != SUPERBLOCK_USED_BYTES {
            return Err(SuperblockError::BadUsedBytes(used_bytes));
        }
        if !super::is_zero(&bytes[RESERVED_OFFSET..CRC_OFFSET]) {
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
            directory_root: le_u64(bytes, DIRECTORY_ROOT_OFFSET),
            directory_generation: le_u64(bytes, DIRECTORY_GENERATION_OFFSET),
        })
    }
}

/// The version of a format-v1 superblock (magic `PSTRMLOG`, crc32 IEEE of bytes 0..124 at
/// 124), if `bytes` hold one whose checksum holds.
pub fn detect_v1(bytes: &[u8]) -> Option<u32> {
    let bytes = bytes.get(..SUPERBLOCK_USED_BYTES)?;
    if bytes[MARKER_OFFSET..MARKER_OFFSET + 8] != SUPERBLOCK_V1_MAGIC {
        return None;
    }
    let stored = le_u32(bytes, CRC_OFFSET);
    (stored == crc32(&[&bytes[..CRC_OFFSET]])).then(|| le_u32(bytes, VERSION_OFFSET))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Superblock {
        Superblock {
            pool_nonce: 99,
            segment_size_bytes: 1 << 22,
            segment_count: 10,
            stream_slot_count: 64,
            stream_table_offset: 8192,
            segment_table_offset: 12288,
            segments_offset: 16384,
            max_payload_bytes: 1 << 20,
            directory_root: 0,
            directory_generation: 0,
        }
    }

    fn reseal(bytes: &mut [u8; SUPERBLOCK_USED_BYTES]) {
        let crc = crc32c(&[&bytes[..CRC_OFFSET]]);
        put_u32(bytes, CRC_OFFSET, crc);
    }

    #[test]
    fn checksummed_superblock_with_reserved_bytes_or_flags_set_is_rejected() {
        for at in [RESERVED_OFFSET + 3, FLAGS_OFFSET] {
            let mut bytes = sample().encode();
            bytes[at] = 7;
            reseal(&mut bytes);
            assert_eq!(
                Superblock::decode(&bytes),
                Err(SuperblockError::ReservedNotZero)
            );
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

    #[test]
    fn a_checksummed_other_version_is_unsupported_not_damaged() {
        let mut bytes = sample().encode();
        put_u32(&mut bytes, VERSION_OFFSET, 3);
        reseal(&mut bytes);
        assert_eq!(
            Superblock::decode(&bytes),
            Err(SuperblockError::UnsupportedVersion(3))
        );
    }

    #[test]
    fn a_v1_superblock_is_recognized_by_its_magic_and_crc() {
        let mut bytes = [0u8; SUPERBLOCK_USED_BYTES];
        bytes[..8].copy_from_slice(&SUPERBLOCK_V1_MAGIC);
        put_u32(&mut bytes, VERSION_OFFSET, 1);
        put_u32(&mut bytes, USED_BYTES_OFFSET, 128);
        let crc = crc32(&[&bytes[..CRC_OFFSET]]);
        put_u32(&mut bytes, CRC_OFFSET, crc);
        assert_eq!(detect_v1(&bytes), Some(1));
        assert_eq!(
            Superblock::decode(&bytes),
            Err(SuperblockError::UnsupportedVersion(1))
        );
        // A v1 magic whose crc fails is damage, not a v1 pool.
        bytes[40] ^= 1;
        assert_eq!(detect_v1(&bytes), None);
        assert_eq!(Superblock::decode(&bytes), Err(SuperblockError::BadMagic));
    }

    #[test]
    fn the_running_marker_alone_is_an_interrupted_format() {
        let mut bytes = [0u8; SUPERBLOCK_USED_BYTES];
        bytes[..8].copy_from_slice(&FORMAT_MARKER_RUNNING);
        assert_eq!(
            Superblock::decode(&bytes),
            Err(SuperblockError::FormatRunning)
        );
    }
}

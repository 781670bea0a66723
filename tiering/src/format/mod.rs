//! The cold segment file: one file per migrated segment, `seg-<segment_gen:016x>.pcold`.
//!
//! Every structure is little-endian, carries [`COLD_VERSION`] or is covered by a versioned
//! structure, and is checksummed with crc32. Decoders take untrusted bytes: they bound every
//! length before using it, never panic, and return a [`DecodeError`] whose offset is relative
//! to the slice they were given (the store adds the file name and the absolute offset).
//!
//! ```text
//! offset               bytes                structure
//! 0                    64                   file header                 (header.rs)
//! 64                   32 + stored_len      block 0: header + payload   (block.rs)
//! ...                                       block 1 .. block_count-1, back to back
//! footer_offset        footer_len_bytes     footer: block table, record index, crc  (footer.rs)
//! ...                  0..4095              zero padding: the file length is a multiple of 4096
//! file_len - 64        64                   trailer: where the footer is  (trailer.rs)
//! ```
//!
//! Records are stored as payload bytes only (not the engine's 32-byte record header): the
//! engine header's crc is keyed to the pool nonce and the *source* segment generation, so it
//! means nothing outside that segment, while the footer keeps each record's stream id, seq,
//! length and payload crc32. A block holds whole records packed back to back; a record larger
//! than the block size gets a block of its own.
//!
//! The file is written to `seg-<gen>.pcold.tmp`, fdatasynced, renamed to its final name, and
//! the directory is fsynced (see `writer.rs`). The rename is the commit point: a final name
//! always refers to fully synced bytes, so a temp name is always incomplete.

mod block;
mod file;
mod footer;
mod header;
mod trailer;

pub use block::{
    decode_block, decode_block_cow, decode_block_header, encode_block_header, BlockHeader, Codec,
    BLOCK_HEADER_BYTES,
};
pub(crate) use file::record_payload;
pub use file::{decode_file, ColdFileIndex};
pub use footer::{
    decode_footer, encode_footer, footer_len_bytes, BlockEntry, Footer, RecordEntry,
    BLOCK_ENTRY_BYTES, FOOTER_HEAD_BYTES, RECORD_ENTRY_BYTES,
};
pub use header::{
    decode_file_header, encode_file_header, Compression, FileHeader, FILE_HEADER_BYTES,
};
pub use trailer::{decode_trailer, encode_trailer, Trailer, TRAILER_BYTES};

use crate::error::{CorruptKind, DecodeError, Structure};

/// Version of every versioned cold-file structure.
pub const COLD_VERSION: u32 = 1;
/// Every cold file's length is a multiple of this (the O_DIRECT unit).
pub const FILE_ALIGN_BYTES: u64 = crate::io::IO_ALIGN_BYTES as u64;
/// Smallest configurable block size (uncompressed bytes per block).
pub const MIN_BLOCK_SIZE_BYTES: u32 = 4096;
/// Largest configurable block size.
pub const MAX_BLOCK_SIZE_BYTES: u32 = 4 << 20;
/// Largest single record (the engine's limit is 1 MiB; this leaves room).
pub const MAX_RECORD_BYTES: u32 = 16 << 20;
/// Largest uncompressed block: a full block, or one record bigger than the block size.
pub const MAX_BLOCK_BYTES: u32 = MAX_RECORD_BYTES;

const _: () = assert!(MIN_BLOCK_SIZE_BYTES <= MAX_BLOCK_SIZE_BYTES);
const _: () = assert!(MAX_BLOCK_SIZE_BYTES <= MAX_BLOCK_BYTES);
const _: () = assert!(FILE_HEADER_BYTES + TRAILER_BYTES <= FILE_ALIGN_BYTES as usize);

const COLD_SUFFIX: &str = ".pcold";
const TEMP_SUFFIX: &str = ".pcold.tmp";
const CORRUPT_SUFFIX: &str = ".pcold.corrupt";

/// `seg-<segment_gen:016x>.pcold`
pub fn cold_file_name(segment_gen: u64) -> String {
    format!("seg-{segment_gen:016x}{COLD_SUFFIX}")
}

/// The name a cold file is written under before its rename commits it.
pub fn temp_file_name(segment_gen: u64) -> String {
    format!("seg-{segment_gen:016x}{TEMP_SUFFIX}")
}

/// Where a damaged cold file is moved so it is never taken as complete.
pub fn corrupt_file_name(segment_gen: u64) -> String {
    format!("seg-{segment_gen:016x}{CORRUPT_SUFFIX}")
}

/// What a directory entry is, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Cold(u64),
    Temp(u64),
    Corrupt(u64),
    Other,
}

pub fn classify_file_name(name: &str) -> FileKind {
    let parse = |suffix: &str| -> Option<u64> {
        let hex = name.strip_prefix("seg-")?.strip_suffix(suffix)?;
        if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(hex, 16).ok()
    };
    if let Some(gen) = parse(TEMP_SUFFIX) {
        FileKind::Temp(gen)
    } else if let Some(gen) = parse(CORRUPT_SUFFIX) {
        FileKind::Corrupt(gen)
    } else if let Some(gen) = parse(COLD_SUFFIX) {
        FileKind::Cold(gen)
    } else {
        FileKind::Other
    }
}

// Little-endian field access. Decoders check a slice's length before reading fixed offsets.

pub(crate) fn le_u32(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_le_bytes(word)
}

pub(crate) fn le_u64(bytes: &[u8], offset: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_le_bytes(word)
}

pub(crate) fn put_u32(bytes: &mut [u8], offset: usize, value: u32) {
    bytes[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

pub(crate) fn put_u64(bytes: &mut [u8], offset: usize, value: u64) {
    bytes[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
}

pub(crate) fn crc32(parts: &[&[u8]]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize()
}

/// `bytes[..needed]`, or a `Truncated` error.
pub(crate) fn need(
    bytes: &[u8],
    needed: usize,
    structure: Structure,
) -> Result<&[u8], DecodeError> {
    bytes.get(..needed).ok_or_else(|| {
        let kind = CorruptKind::Truncated {
            structure,
            needed_bytes: needed as u64,
            available_bytes: bytes.len() as u64,
        };
        DecodeError::new(0, kind)
    })
}

pub(crate) fn check_crc(
    structure: Structure,
    offset: usize,
    stored: u32,
    computed: u32,
) -> Result<(), DecodeError> {
    if stored == computed {
        Ok(())
    } else {
        Err(DecodeError::new(
            offset as u64,
            CorruptKind::ChecksumMismatch {
                structure,
                stored,
                computed,
            },
        ))
    }
}

pub(crate) fn mismatch(
    offset: u64,
    structure: Structure,
    field: &'static str,
    expected: u64,
    found: u64,
) -> DecodeError {
    DecodeError::new(
        offset,
        CorruptKind::Mismatch {
            structure,
            field,
            expected,
            found,
        },
    )
}

pub(crate) fn out_of_bounds(
    offset: u64,
    structure: Structure,
    field: &'static str,
    value: u64,
    limit: u64,
) -> DecodeError {
    DecodeError::new(
        offset,
        CorruptKind::OutOfBounds {
            structure,
            field,
            value,
            limit,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let gen = 0x0123_4567_89ab_cdef;
        assert_eq!(
            classify_file_name(&cold_file_name(gen)),
            FileKind::Cold(gen)
        );
        assert_eq!(
            classify_file_name(&temp_file_name(gen)),
            FileKind::Temp(gen)
        );
        assert_eq!(
            classify_file_name(&corrupt_file_name(gen)),
            FileKind::Corrupt(gen)
        );
        assert_eq!(cold_file_name(1), "seg-0000000000000001.pcold");
        for other in [
            "seg-1.pcold",
            "seg-zzzzzzzzzzzzzzzz.pcold",
            "x.pcold",
            "",
            ".pstream",
        ] {
            assert_eq!(classify_file_name(other), FileKind::Other, "{other}");
        }
    }
}

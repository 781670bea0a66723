//! Block: a 32-byte header followed by `stored_len` payload bytes, which are the block's
//! records (payloads packed back to back), raw or zstd-compressed.
//!
//! ```text
//! 0   [u8; 4] magic             b"PCBK"
//! 4   u32     block_no          position of the block in the file (0-based)
//! 8   u32     uncompressed_len  at most MAX_BLOCK_BYTES
//! 12  u32     stored_len        bytes following the header; == uncompressed_len when raw
//! 16  u32     stored_crc        crc32 of the stored bytes
//! 20  u32     uncompressed_crc  crc32 of the uncompressed bytes
//! 24  u8      codec             0 = raw, 1 = zstd
//! 25  [u8; 3] reserved          zero
//! 28  u32     header_crc        crc32(segment_gen as u64 LE, bytes 0..28)
//! 32  stored bytes
//! ```
//!
//! The header crc is keyed with the segment generation, so a block that a misdirected write
//! carried over from another cold file is rejected even though its own crcs hold. A block is
//! stored raw whenever zstd would not make it smaller.

use std::borrow::Cow;

use super::{check_crc, crc32, le_u32, mismatch, need, out_of_bounds, put_u32, MAX_BLOCK_BYTES};
use crate::error::{CorruptKind, DecodeError, Structure};

pub const BLOCK_HEADER_BYTES: usize = 32;
const MAGIC: [u8; 4] = *b"PCBK";

const MAGIC_OFFSET: usize = 0;
const BLOCK_NO_OFFSET: usize = MAGIC_OFFSET + 4;
const UNCOMPRESSED_LEN_OFFSET: usize = BLOCK_NO_OFFSET + 4;
const STORED_LEN_OFFSET: usize = UNCOMPRESSED_LEN_OFFSET + 4;
const STORED_CRC_OFFSET: usize = STORED_LEN_OFFSET + 4;
const UNCOMPRESSED_CRC_OFFSET: usize = STORED_CRC_OFFSET + 4;
const CODEC_OFFSET: usize = UNCOMPRESSED_CRC_OFFSET + 4;
const RESERVED_OFFSET: usize = CODEC_OFFSET + 1;
const HEADER_CRC_OFFSET: usize = RESERVED_OFFSET + 3;
const _: () = assert!(HEADER_CRC_OFFSET + 4 == BLOCK_HEADER_BYTES);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Raw,
    Zstd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHeader {
    pub block_no: u32,
    pub uncompressed_len: u32,
    pub stored_len: u32,
    pub stored_crc: u32,
    pub uncompressed_crc: u32,
    pub codec: Codec,
}

fn header_crc(segment_gen: u64, covered: &[u8]) -> u32 {
    crc32(&[&segment_gen.to_le_bytes(), covered])
}

pub fn encode_block_header(header: &BlockHeader, segment_gen: u64) -> [u8; BLOCK_HEADER_BYTES] {
    debug_assert!(header.uncompressed_len <= MAX_BLOCK_BYTES);
    debug_assert!(header.codec != Codec::Raw || header.stored_len == header.uncompressed_len);
    let mut bytes = [0u8; BLOCK_HEADER_BYTES];
    bytes[..4].copy_from_slice(&MAGIC);
    put_u32(&mut bytes, BLOCK_NO_OFFSET, header.block_no);
    put_u32(&mut bytes, UNCOMPRESSED_LEN_OFFSET, header.uncompressed_len);
    put_u32(&mut bytes, STORED_LEN_OFFSET, header.stored_len);
    put_u32(&mut bytes, STORED_CRC_OFFSET, header.stored_crc);
    put_u32(&mut bytes, UNCOMPRESSED_CRC_OFFSET, header.uncompressed_crc);
    bytes[CODEC_OFFSET] = match header.codec {
        Codec::Raw => 0,
        Codec::Zstd => 1,
    };
    let crc = header_crc(segment_gen, &bytes[..HEADER_CRC_OFFSET]);
    put_u32(&mut bytes, HEADER_CRC_OFFSET, crc);
    debug_assert_eq!(decode_block_header(&bytes, segment_gen), Ok(*header));
    bytes
}

/// Decodes a block header at the start of `bytes` (fuzz entry point).
pub fn decode_block_header(bytes: &[u8], segment_gen: u64) -> Result<BlockHeader, DecodeError> {
    let structure = Structure::BlockHeader;
    let bytes = need(bytes, BLOCK_HEADER_BYTES, structure)?;
    if bytes[..4] != MAGIC {
        return Err(DecodeError::new(0, CorruptKind::BadMagic { structure }));
    }
    let stored = le_u32(bytes, HEADER_CRC_OFFSET);
    let computed = header_crc(segment_gen, &bytes[..HEADER_CRC_OFFSET]);
    check_crc(structure, HEADER_CRC_OFFSET, stored, computed)?;
    if bytes[RESERVED_OFFSET..HEADER_CRC_OFFSET]
        .iter()
        .any(|&b| b != 0)
    {
        let kind = CorruptKind::NonZeroReserved { structure };
        return Err(DecodeError::new(RESERVED_OFFSET as u64, kind));
    }
    let codec = match bytes[CODEC_OFFSET] {
        0 => Codec::Raw,
        1 => Codec::Zstd,
        code => {
            let kind = CorruptKind::UnknownCodec { structure, code };
            return Err(DecodeError::new(CODEC_OFFSET as u64, kind));
        }
    };
    let uncompressed_len = le_u32(bytes, UNCOMPRESSED_LEN_OFFSET);
    let stored_len = le_u32(bytes, STORED_LEN_OFFSET);
    let limit = u64::from(MAX_BLOCK_BYTES);
    if uncompressed_len > MAX_BLOCK_BYTES {
        let value = u64::from(uncompressed_len);
        let offset = UNCOMPRESSED_LEN_OFFSET as u64;
        return Err(out_of_bounds(
            offset,
            structure,
            "uncompressed_len",
            value,
            limit,
        ));
    }
    // Raw blocks store exactly their bytes; compressed ones are kept only when smaller.
    let stored_ok = match codec {
        Codec::Raw => stored_len == uncompressed_len,
        Codec::Zstd => stored_len < uncompressed_len,
    };
    let stored_crc = le_u32(bytes, STORED_CRC_OFFSET);
    let uncompressed_crc = le_u32(bytes, UNCOMPRESSED_CRC_OFFSET);
    if codec == Codec::Raw && stored_crc != uncompressed_crc {
        // The same bytes have one crc; checking it once is then enough.
        let (expected, found) = (u64::from(stored_crc), u64::from(uncompressed_crc));
        let offset = UNCOMPRESSED_CRC_OFFSET as u64;
        return Err(mismatch(
            offset,
            structure,
            "uncompressed_crc",
            expected,
            found,
        ));
    }
    if !stored_ok {
        let (expected, found) = (u64::from(uncompressed_len), u64::from(stored_len));
        let offset = STORED_LEN_OFFSET as u64;
        return Err(mismatch(offset, structure, "stored_len", expected, found));
    }
    Ok(BlockHeader {
        block_no: le_u32(bytes, BLOCK_NO_OFFSET),
        uncompressed_len,
        stored_len,
        stored_crc,
        uncompressed_crc,
        codec,
    })
}

/// Decodes one whole block (header and stored bytes at the start of `bytes`) and returns its
/// verified uncompressed bytes. `expected_block_no` is where the block index says it is.
pub fn decode_block(
    bytes: &[u8],
    segment_gen: u64,
    expected_block_no: u32,
) -> Result<Vec<u8>, DecodeError> {
    decode_block_cow(bytes, segment_gen, expected_block_no).map(Cow::into_owned)
}

/// [`decode_block`] without copying a raw block: its bytes are borrowed from `bytes`.
pub fn decode_block_cow(
    bytes: &[u8],
    segment_gen: u64,
    expected_block_no: u32,
) -> Result<Cow<'_, [u8]>, DecodeError> {
    let header = decode_block_header(bytes, segment_gen)?;
    if header.block_no != expected_block_no {
        let (expected, found) = (u64::from(expected_block_no), u64::from(header.block_no));
        let offset = BLOCK_NO_OFFSET as u64;
        return Err(mismatch(
            offset,
            Structure::BlockHeader,
            "block_no",
            expected,
            found,
        ));
    }
    let structure = Structure::BlockPayload;
    let end = BLOCK_HEADER_BYTES + header.stored_len as usize;
    let stored = need(bytes, end, structure)?
        .get(BLOCK_HEADER_BYTES..)
        .unwrap_or_default();
    let offset = BLOCK_HEADER_BYTES as u64;
    let computed = crc32(&[stored]);
    check_crc(structure, BLOCK_HEADER_BYTES, header.stored_crc, computed)?;
    let Codec::Zstd = header.codec else {
        // Raw: the header check tied uncompressed_crc to stored_crc, just verified.
        return Ok(Cow::Borrowed(stored));
    };
    let uncompressed =
        zstd::bulk::decompress(stored, header.uncompressed_len as usize).map_err(|error| {
            DecodeError::new(
                offset,
                CorruptKind::Decompress {
                    message: error.to_string(),
                },
            )
        })?;
    if uncompressed.len() != header.uncompressed_len as usize {
        let (expected, found) = (
            u64::from(header.uncompressed_len),
            uncompressed.len() as u64,
        );
        return Err(mismatch(
            offset,
            structure,
            "uncompressed_len",
            expected,
            found,
        ));
    }
    let computed = crc32(&[&uncompressed]);
    check_crc(
        structure,
        BLOCK_HEADER_BYTES,
        header.uncompressed_crc,
        computed,
    )?;
    Ok(Cow::Owned(uncompressed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(payload: &[u8], codec: Codec, gen: u64) -> Vec<u8> {
        let stored = match codec {
            Codec::Raw => payload.to_vec(),
            Codec::Zstd => zstd::bulk::compress(payload, 3).expect("compress"),
        };
        let header = BlockHeader {
            block_no: 9,
            uncompressed_len: payload.len() as u32,
            stored_len: stored.len() as u32,
            stored_crc: crc32(&[&stored]),
            uncompressed_crc: crc32(&[payload]),
            codec,
        };
        let mut bytes = encode_block_header(&header, gen).to_vec();
        bytes.extend_from_slice(&stored);
        bytes
    }

    #[test]
    fn round_trip_raw_and_zstd() {
        let payload = b"hello hello hello hello hello hello hello hello".repeat(20);
        for codec in [Codec::Raw, Codec::Zstd] {
            let bytes = block(&payload, codec, 5);
            assert_eq!(decode_block(&bytes, 5, 9), Ok(payload.clone()));
            assert!(decode_block(&bytes, 6, 9).is_err(), "other generation");
            assert!(decode_block(&bytes, 5, 8).is_err(), "other position");
            assert!(
                decode_block(&bytes[..bytes.len() - 1], 5, 9).is_err(),
                "truncated"
            );
        }
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        let payload = b"abcdefgh".repeat(8);
        for codec in [Codec::Raw, Codec::Zstd] {
            let bytes = block(&payload, codec, 5);
            for bit in 0..bytes.len() * 8 {
                let mut flipped = bytes.clone();
                flipped[bit / 8] ^= 1 << (bit % 8);
                assert!(decode_block(&flipped, 5, 9).is_err(), "{codec:?} bit {bit}");
            }
        }
    }
}

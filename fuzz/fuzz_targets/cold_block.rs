//! The cold-file block decoders. Input: segment generation (8 bytes), expected block number
//! (4), then the block (header and stored bytes). A block either decodes to bytes whose
//! header promised their length, or is a typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pstream_tiering::format::{decode_block, decode_block_header};

fuzz_target!(|data: &[u8]| {
    if data.len() < 12 {
        let _ = decode_block_header(data, 0);
        return;
    }
    let segment_gen = u64::from_le_bytes(data[..8].try_into().unwrap_or([0; 8]));
    let block_no = u32::from_le_bytes(data[8..12].try_into().unwrap_or([0; 4]));
    let bytes = &data[12..];
    let header = decode_block_header(bytes, segment_gen);
    if let Ok(block) = decode_block(bytes, segment_gen, block_no) {
        let header = header.expect("a decodable block has a decodable header");
        assert_eq!(block.len(), header.uncompressed_len as usize);
        assert_eq!(header.block_no, block_no);
    }
});

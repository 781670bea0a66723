//! The cold-file footer decoder (block table and record index). Input: segment generation
//! (8 bytes), footer offset (8), then the footer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pstream_tiering::format::{decode_footer, encode_footer};

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        let _ = decode_footer(data, 0, 0);
        return;
    }
    let segment_gen = u64::from_le_bytes(data[..8].try_into().unwrap_or([0; 8]));
    let footer_offset = u64::from_le_bytes(data[8..16].try_into().unwrap_or([0; 8]));
    if let Ok(footer) = decode_footer(&data[16..], segment_gen, footer_offset) {
        // The record index is what reads trust: strictly ascending by (stream, seq).
        assert!(footer
            .records
            .windows(2)
            .all(|w| (w[0].stream_id, w[0].seq) < (w[1].stream_id, w[1].seq)));
        assert_eq!(footer.segment_gen, segment_gen);
        let mut encoded = Vec::new();
        encode_footer(&footer, &mut encoded);
        assert_eq!(
            decode_footer(&encoded, segment_gen, footer_offset).as_ref(),
            Ok(&footer)
        );
    }
});

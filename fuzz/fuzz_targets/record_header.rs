//! The record header decoder. Input: pool nonce (8 bytes), segment generation (8), the
//! header's offset in its segment (8), header bytes. A header that decodes as live
//! re-encodes to exactly its bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pstream_engine::format::record::{self, CrcKey, HeaderCheck, RECORD_HEADER_BYTES};

fuzz_target!(|data: &[u8]| {
    if data.len() < 24 {
        let _ = record::decode_slice(data, CrcKey::new(0, 0).at(0));
        return;
    }
    let word = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().unwrap_or([0; 8]));
    let (nonce, segment_gen, offset_bytes) = (word(0), word(8), word(16));
    let key = CrcKey::new(nonce, segment_gen).at(offset_bytes);
    let bytes = &data[24..];
    match record::decode_slice(bytes, key) {
        HeaderCheck::Live(header) => {
            assert_eq!(
                &record::encode(&header, key)[..],
                &bytes[..RECORD_HEADER_BYTES]
            );
            // The same bytes under another generation or at another position are not a
            // live header (the key binds a header to its segment generation and offset).
            let other_gen = CrcKey::new(nonce, segment_gen.wrapping_add(1)).at(offset_bytes);
            let other_offset = CrcKey::new(nonce, segment_gen).at(offset_bytes.wrapping_add(64));
            for other in [other_gen, other_offset] {
                assert!(!matches!(
                    record::decode_slice(bytes, other),
                    HeaderCheck::Live(_)
                ));
            }
        }
        HeaderCheck::Void(_) | HeaderCheck::Zero | HeaderCheck::Invalid(_) => {}
    }
});

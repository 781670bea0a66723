//! The record header decoder. Input: pool nonce (8 bytes), segment generation (8), header
//! bytes. A header that decodes as live re-encodes to exactly its bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pstream_engine::format::record::{self, CrcKey, HeaderCheck, RECORD_HEADER_BYTES};

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        let _ = record::decode_slice(data, CrcKey::new(0, 0));
        return;
    }
    let nonce = u64::from_le_bytes(data[..8].try_into().unwrap_or([0; 8]));
    let segment_gen = u64::from_le_bytes(data[8..16].try_into().unwrap_or([0; 8]));
    let key = CrcKey::new(nonce, segment_gen);
    let bytes = &data[16..];
    match record::decode_slice(bytes, key) {
        HeaderCheck::Live(header) => {
            assert_eq!(
                &record::encode(&header, key)[..],
                &bytes[..RECORD_HEADER_BYTES]
            );
            // The same bytes under another generation are not a live header (the key binds
            // a header to its segment generation).
            let other = CrcKey::new(nonce, segment_gen.wrapping_add(1));
            assert!(!matches!(
                record::decode_slice(bytes, other),
                HeaderCheck::Live(_)
            ));
        }
        HeaderCheck::Void(_) | HeaderCheck::Zero | HeaderCheck::Invalid(_) => {}
    }
});

//! The segment header decoder: typed errors, and decode(encode(h)) == h.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pstream_engine::format::segment::{SegmentHeader, SEGMENT_HEADER_BYTES};

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = SegmentHeader::decode(data) {
        let encoded = header.encode();
        assert_eq!(&encoded[..], &data[..SEGMENT_HEADER_BYTES]);
        assert_eq!(SegmentHeader::decode(&encoded), Ok(header));
    }
});

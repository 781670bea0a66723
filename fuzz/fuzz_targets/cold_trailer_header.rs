//! The fixed-size cold-file structures: the trailer (where the footer is) and the file
//! header. Input: a selector byte, then the bytes. Decoded values re-encode to their bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pstream_tiering::format::{
    decode_file_header, decode_trailer, encode_file_header, encode_trailer, FILE_HEADER_BYTES,
    TRAILER_BYTES,
};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        if let Ok(trailer) = decode_trailer(bytes) {
            assert_eq!(&encode_trailer(&trailer)[..], &bytes[..TRAILER_BYTES]);
        }
    } else if let Ok(header) = decode_file_header(bytes) {
        assert_eq!(decode_file_header(&encode_file_header(&header)), Ok(header));
        let _ = FILE_HEADER_BYTES;
    }
});

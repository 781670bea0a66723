//! A whole cold file in memory: trailer, header, footer, every block and record crc. Any
//! bytes give an index or a typed error whose offset lies inside the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pstream_tiering::format::decode_file;

fuzz_target!(|data: &[u8]| {
    match decode_file(data) {
        Ok(index) => {
            assert_eq!(index.file_len_bytes, data.len() as u64);
            let payload_bytes: u64 = index.records.iter().map(|r| u64::from(r.len_bytes)).sum();
            assert_eq!(payload_bytes, index.payload_bytes);
            assert!(index
                .records
                .windows(2)
                .all(|w| (w[0].stream_id, w[0].seq) < (w[1].stream_id, w[1].seq)));
        }
        Err(error) => assert!(
            error.offset_bytes <= data.len() as u64,
            "error offset {} beyond a {}-byte file: {error}",
            error.offset_bytes,
            data.len()
        ),
    }
});

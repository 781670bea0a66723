//! The engine superblock decoder (one copy, format v2): any bytes give a superblock or a
//! typed error; a decoded superblock re-encodes to exactly the bytes it came from (the
//! decoder rejects non-zero reserved bytes and flags, so nothing is lost).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pstream_engine::format::superblock::{Superblock, SUPERBLOCK_USED_BYTES};

fuzz_target!(|data: &[u8]| {
    if let Ok(superblock) = Superblock::decode(data) {
        let encoded = superblock.encode();
        assert_eq!(encoded.len(), SUPERBLOCK_USED_BYTES);
        assert_eq!(&encoded[..], &data[..SUPERBLOCK_USED_BYTES]);
        assert_eq!(Superblock::decode(&encoded), Ok(superblock));
    }
});

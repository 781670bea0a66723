//! The engine superblock decoder: any bytes give a superblock or a typed error; a decoded
//! superblock re-encodes to the bytes it came from, except the reserved bytes 80..124
//! (documented as zero, but the decoder does not check them: a checksummed superblock with
//! non-zero reserved bytes decodes) and so the checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pstream_engine::format::superblock::{Superblock, SUPERBLOCK_USED_BYTES};

/// Where the reserved bytes start (see the layout in `format/superblock.rs`).
const RESERVED_OFFSET: usize = 80;

fuzz_target!(|data: &[u8]| {
    if let Ok(superblock) = Superblock::decode(data) {
        let encoded = superblock.encode();
        assert_eq!(&encoded[..RESERVED_OFFSET], &data[..RESERVED_OFFSET]);
        assert_eq!(encoded.len(), SUPERBLOCK_USED_BYTES);
        assert_eq!(Superblock::decode(&encoded), Ok(superblock));
    }
});

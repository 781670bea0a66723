//! The agent's metadata snapshot decoder (the body a snapshot's parts reassemble to, after
//! their CRC-32 matched): any bytes decode to a state or a typed error, never a panic; a
//! decoded state re-encodes to bytes that decode and encode to themselves.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pstream_agent::snapshot_round_trip;

fuzz_target!(|data: &[u8]| {
    if let Ok(encoded) = snapshot_round_trip(data) {
        assert_eq!(snapshot_round_trip(&encoded).as_ref(), Ok(&encoded));
    }
});

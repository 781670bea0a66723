//! The agent layer's metadata snapshot (`docs/FORMAT.md`): any bytes decode to a state or a
//! typed error; a decoded state re-encodes to bytes that decode to the same state.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pstream_agent::fuzzing::snapshot_round_trip(data);
});

//! The agent layer's system records (metadata changes and snapshot parts, `docs/FORMAT.md`):
//! any bytes decode to a record or a typed error; a decoded record re-encodes to bytes that
//! decode to the same record.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pstream_agent::fuzzing::sys_record_round_trip(data);
});

//! Opening a pool from arbitrary bytes: the input, padded or cut to a multiple of 64 bytes
//! (at most 256 KiB), is the persistent-memory image of a simulated pool. `Log::open` must
//! return a log or a typed error, never panic or read out of bounds; an opened log must
//! iterate every stream without panicking, and `verify` must return a report or an error.
//! `probe` must give a verdict or a typed error, and a pool that opens probes `Formatted`.
//! Seeds are real formatted pools (fresh, with records, and crash images mid-append).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pmem_emul::{SimPmem, CACHE_LINE_BYTES};
use pstream_engine::{Log, OpenOptions};

const POOL_MAX_BYTES: usize = 256 * 1024;

fuzz_target!(|data: &[u8]| {
    let len_bytes = data
        .len()
        .next_multiple_of(CACHE_LINE_BYTES)
        .clamp(CACHE_LINE_BYTES, POOL_MAX_BYTES);
    let mut image = data[..data.len().min(len_bytes)].to_vec();
    image.resize(len_bytes, 0);
    let _ = pstream_engine::verify(&SimPmem::from_image(image.clone()));
    let probed = pstream_engine::probe(&SimPmem::from_image(image.clone()));
    let Ok((log, _report)) = Log::open(SimPmem::from_image(image), OpenOptions { lane_count: 2 })
    else {
        return;
    };
    assert!(
        matches!(probed, Ok(pstream_engine::Probe::Formatted { .. })),
        "a pool that opens probes {probed:?}"
    );
    for info in log.list_streams() {
        assert!(info.first_seq <= info.next_seq);
        if let Ok(iter) = log.iter(info.id, info.first_seq) {
            for record in iter.take(10_000) {
                let _ = record.map(|r| r.payload().len());
            }
        }
    }
    let _ = pstream_engine::verify(log.pmem());
    // Recovery is idempotent: a recovered pool opens again.
    let pmem = log.close();
    if let Err(error) = Log::open(pmem, OpenOptions { lane_count: 2 }) {
        panic!("a recovered pool does not open again: {error}");
    }
});

//! Shared helpers: deterministic segments, small configurations, and the oracle that checks
//! a cold directory after a fault or a crash; the kill -9 tests' child workload.

#![allow(dead_code)]

pub mod kill9_child;

use std::collections::BTreeMap;

use pstream_crashtest::kit::SplitMix64;
use pstream_tiering::{
    format::cold_file_name, ColdStore, ColdStoreConfig, Compression, SegmentIo, StdIo, TieringError,
};

/// (stream_id, seq, payload)
pub type Record = (u64, u64, Vec<u8>);

/// Records of a few streams with dense seqs, interleaved like a segment holds them.
/// `compressible` payloads are text-like; otherwise random. Sizes up to `max_len_bytes`,
/// including empty payloads, plus one record larger than a 4 KiB block when `max_len_bytes`
/// allows.
pub fn make_records(
    seed: u64,
    count: usize,
    max_len_bytes: usize,
    compressible: bool,
) -> Vec<Record> {
    let mut rng = SplitMix64::new(seed);
    let streams = [3u64 | (1 << 32), 7, 11 | (2 << 32), 12];
    let mut next_seq: BTreeMap<u64, u64> = streams.iter().map(|&s| (s, rng.below(100))).collect();
    let mut records = Vec::with_capacity(count);
    for index in 0..count {
        let stream = streams[rng.below(streams.len() as u64) as usize];
        let seq = next_seq.get_mut(&stream).map(|seq| {
            *seq += 1;
            *seq - 1
        });
        let len = match index % 17 {
            0 => 0,
            5 if max_len_bytes > 5000 => 5000 + rng.below(3000) as usize,
            _ => rng.below(max_len_bytes.min(4000) as u64 + 1) as usize,
        };
        let payload: Vec<u8> = if compressible {
            let words = [&b"stream "[..], b"record ", b"pstream ", b"cold ", b"tier "];
            let mut bytes = Vec::with_capacity(len);
            while bytes.len() < len {
                bytes.extend_from_slice(words[rng.below(words.len() as u64) as usize]);
            }
            bytes.truncate(len);
            bytes
        } else {
            (0..len).map(|_| rng.next_u64() as u8).collect()
        };
        records.push((stream, seq.unwrap_or(0), payload));
    }
    records
}

pub fn as_input(records: &[Record]) -> impl Iterator<Item = (u64, u64, &[u8])> {
    records
        .iter()
        .map(|(stream, seq, payload)| (*stream, *seq, payload.as_slice()))
}

/// The harness's small blocks and chunks (a small segment spans many blocks and many writes),
/// with a block cache and asynchronous readahead on.
pub fn small_config(compression: Compression) -> ColdStoreConfig {
    ColdStoreConfig {
        cache_capacity_bytes: 64 << 10,
        async_readahead: true,
        ..pstream_crashtest::tiering_case::small_config(compression)
    }
}

/// Every record reads back byte-identical, and a scan visits exactly the records.
pub fn check_readback<I: SegmentIo>(store: &ColdStore<I>, segment_gen: u64, records: &[Record]) {
    for (stream, seq, payload) in records {
        let read = store.read_record(segment_gen, *stream, *seq);
        match read {
            Ok(read) => assert_eq!(&read, payload, "record {stream:#x}/{seq} differs"),
            Err(error) => panic!("record {stream:#x}/{seq}: {error}"),
        }
    }
    let expected: BTreeMap<(u64, u64), &Vec<u8>> = records
        .iter()
        .map(|(stream, seq, payload)| ((*stream, *seq), payload))
        .collect();
    let mut seen = 0usize;
    let scanned = store.scan_segment(segment_gen, |entry, payload| {
        let want = expected
            .get(&(entry.stream_id, entry.seq))
            .map(|p| p.as_slice());
        assert_eq!(
            want,
            Some(payload),
            "scan of {:#x}/{}",
            entry.stream_id,
            entry.seq
        );
        seen += 1;
    });
    assert_eq!(scanned.ok(), Some(records.len() as u64));
    assert_eq!(seen, records.len());
}

/// What recovery finds in `dir` after a fault or crash: opens it with a fresh `StdIo` and
/// checks the oracle — nothing damaged was adopted, no temp file survives, and the segment
/// is either absent or complete with every record byte-identical. Returns whether it is
/// present.
pub fn recover_and_check(
    dir: &std::path::Path,
    segment_gen: u64,
    records: &[Record],
    config: &ColdStoreConfig,
    context: &str,
) -> bool {
    let io = StdIo::open(dir).unwrap_or_else(|error| panic!("{context}: open dir: {error}"));
    let (store, report) = ColdStore::open(io, config.clone())
        .unwrap_or_else(|error| panic!("{context}: ColdStore::open: {error}"));
    assert!(
        report.quarantined.is_empty(),
        "{context}: an incomplete or damaged file was found under a final name: {:?}",
        report.quarantined
    );
    let names = store.io().list().unwrap_or_default();
    assert!(
        names.iter().all(|name| !name.ends_with(".tmp")),
        "{context}: temp files left after open: {names:?}"
    );
    match store.index(segment_gen) {
        None => {
            assert!(
                !names.contains(&cold_file_name(segment_gen)),
                "{context}: file not served"
            );
            false
        }
        Some(index) => {
            assert_eq!(index.record_count(), records.len() as u64, "{context}");
            check_readback(&store, segment_gen, records);
            assert_eq!(
                store.verify(segment_gen).ok(),
                Some(records.len() as u64),
                "{context}"
            );
            true
        }
    }
}

/// True for errors a fault may legitimately produce.
pub fn is_injected(error: &TieringError) -> bool {
    matches!(
        error,
        TieringError::Io { .. }
            | TieringError::Fs { .. }
            | TieringError::SyncFailed { .. }
            | TieringError::ShortWrite { .. }
            | TieringError::SimulatedCrash { .. }
    )
}

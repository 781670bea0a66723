//! Asynchronous readahead: a reader going through a stream in seq order finds the next
//! window already cached (also across the files of consecutive segments), and a failed read
//! ahead only ever reaches the reader of the block it failed on, as that reader's own typed
//! error.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{as_input, small_config, Record};
use pstream_crashtest::tiering_case::source;
use pstream_tiering::{
    ColdStats, ColdStore, ColdStoreConfig, Compression, CountdownFault, FaultSpec, FaultyIo, IoOp,
    SegmentIo, StdIo, TieringError,
};

const RECORD_BYTES: usize = 1024;
const RECORDS_PER_FILE: u64 = 96;

/// Windows of 16 KiB (four 4 KiB blocks) in a 1 MiB cache: a file of 96 KiB of one stream
/// holds six windows.
fn config() -> ColdStoreConfig {
    ColdStoreConfig {
        cache_capacity_bytes: 1 << 20,
        read_chunk_bytes: 16 << 10,
        async_readahead: true,
        ..small_config(Compression::None)
    }
}

fn payload(seq: u64) -> Vec<u8> {
    (0..RECORD_BYTES)
        .map(|i| (seq as usize * 7 + i) as u8)
        .collect()
}

/// Stream 1, seqs `0..96` in segment 5 and `96..192` in segment 6.
fn write_two_files<I: SegmentIo>(store: &ColdStore<I>) {
    for (file_no, segment_gen) in [5u64, 6].into_iter().enumerate() {
        let first_seq = file_no as u64 * RECORDS_PER_FILE;
        let records: Vec<Record> = (first_seq..first_seq + RECORDS_PER_FILE)
            .map(|seq| (1, seq, payload(seq)))
            .collect();
        store
            .write_segment(&source(segment_gen), as_input(&records))
            .expect("write");
    }
}

/// Waits until the readahead thread has nothing queued or running.
fn settle<I: SegmentIo>(store: &ColdStore<I>) -> ColdStats {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = store.stats();
        if stats.readahead_queued == 0 {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "readahead never settled: {stats:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// How many windows a reader without async readahead misses on reading both files in order
/// (each miss reads one window).
fn windows_without_async_readahead() -> u64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = ColdStoreConfig {
        async_readahead: false,
        ..config()
    };
    let (store, _) = ColdStore::open(StdIo::open(dir.path()).expect("io"), config).expect("open");
    write_two_files(&store);
    for seq in 0..2 * RECORDS_PER_FILE {
        let segment_gen = if seq < RECORDS_PER_FILE { 5 } else { 6 };
        assert_eq!(
            store.read_record(segment_gen, 1, seq).expect("read"),
            payload(seq)
        );
    }
    let stats = store.stats();
    assert_eq!(stats.readahead_windows, 0, "no thread, no windows ahead");
    stats.cache_misses
}

#[test]
fn a_sequential_reader_finds_every_window_after_the_first_read_ahead_across_files() {
    let windows = windows_without_async_readahead();
    // 16 KiB windows of ~4 KiB blocks over 2 x 96 KiB: several windows per file.
    assert!(windows >= 2 * 4, "{windows} windows");
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = ColdStore::open(StdIo::open(dir.path()).expect("io"), config()).expect("open");
    write_two_files(&store);
    let segment_of = |seq: u64| if seq < RECORDS_PER_FILE { 5 } else { 6 };
    for seq in 0..2 * RECORDS_PER_FILE {
        // Let the thread finish what it was given, so every miss below is a real one.
        let before = settle(&store);
        let read = store.read_record(segment_of(seq), 1, seq).expect("read");
        assert_eq!(read, payload(seq), "seq {seq}");
        let after = store.stats();
        if seq == 0 {
            assert_eq!(after.cache_misses, 1, "the first read misses");
        } else {
            assert_eq!(
                after.cache_misses, before.cache_misses,
                "seq {seq} was not read ahead: {after:?}"
            );
        }
    }
    let stats = settle(&store);
    // The same windows: the first read by the reader, every other one ahead of it (the
    // first window of segment 6 while the reader was still in segment 5).
    assert_eq!(stats.cache_misses, 1, "{stats:?}");
    assert_eq!(stats.readahead_windows, windows - 1, "{stats:?}");
    assert_eq!((stats.readahead_errors, stats.read_errors), (0, 0));
}

/// A store whose reader has read seq 0 (the first I/O counted after `set_spec`) while the
/// read ahead of its next window (the second) failed with EIO, once or from then on; returned
/// once the thread is done, with its stats.
fn store_after_failed_read_ahead(
    dir: &std::path::Path,
    persistent: bool,
) -> (ColdStore<Arc<FaultyIo<StdIo>>>, ColdStats) {
    let io = StdIo::open(dir).expect("io");
    let io = Arc::new(FaultyIo::new(io, FaultSpec::none(3)).expect("faulty"));
    let (store, _) = ColdStore::open(Arc::clone(&io), config()).expect("open");
    write_two_files(&store);
    io.set_spec(FaultSpec::countdown(2, CountdownFault::Eio, persistent));
    assert_eq!(store.read_record(5, 1, 0).expect("read"), payload(0));
    let stats = settle(&store);
    (store, stats)
}

/// A one-time EIO on the read ahead: the reader reads the window itself, successfully.
#[test]
fn a_failed_read_ahead_is_retried_by_the_reader_and_succeeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, stats) = store_after_failed_read_ahead(dir.path(), false);
    assert_eq!(
        (stats.readahead_errors, stats.read_errors),
        (1, 0),
        "{stats:?}"
    );
    for seq in 1..RECORDS_PER_FILE {
        assert_eq!(store.read_record(5, 1, seq).expect("read"), payload(seq));
    }
    assert_eq!(store.stats().read_errors, 0);
}

/// Every read from the read ahead on fails: the reader that needs the block gets the EIO
/// with file and offset, as without readahead, and nothing hangs.
#[test]
fn a_persistent_read_error_reaches_the_reader_of_the_block_as_a_typed_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = store_after_failed_read_ahead(dir.path(), true);
    let mut failed_at = None;
    for seq in 1..RECORDS_PER_FILE {
        match store.read_record(5, 1, seq) {
            Ok(read) => assert_eq!(read, payload(seq)),
            Err(TieringError::Io {
                op: IoOp::Read,
                file,
                ..
            }) => {
                assert_eq!(file, pstream_tiering::format::cold_file_name(5));
                failed_at = Some(seq);
                break;
            }
            Err(other) => panic!("seq {seq}: expected a read EIO, got {other:?}"),
        }
    }
    let failed_at = failed_at.expect("the second window's read fails");
    assert!(failed_at > 1, "the first window was read before the fault");
    let stats = store.stats();
    assert_eq!(stats.read_errors, 1, "{stats:?}");
    assert!(stats.readahead_errors >= 1, "{stats:?}");
}

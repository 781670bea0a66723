//! The object-store cold tier ([`ObjectIo`]) against a real S3 server started in-process on
//! 127.0.0.1 (`common/s3.rs`), with faults injected between client and server, and on the
//! in-memory store. What the crash model asks of it:
//!
//! - an object exists only once its upload completed (no partial object, ever);
//! - failed, throttled and cut requests are retried; what still fails is a typed error
//!   naming the object and the byte range, and a read never returns other bytes;
//! - an object the segment table does not point at is an orphan the next open reports and
//!   discard removes.

mod common;
// Only this test binary links the S3 server.
#[path = "common/s3.rs"]
mod s3;

use std::sync::atomic::Ordering;

use common::{check_readback, make_records, Record};
use pstream_crashtest::tiering_case::source;
use pstream_tiering::format::cold_file_name;
use pstream_tiering::{
    ByteRange, ColdStore, ColdStoreConfig, ColdWriterConfig, Compression, IoOp, ObjectIo,
    ObjectTierConfig, SegmentIo, TieringError,
};
use s3::S3Server;

/// Blocks of 16 KiB, writes of 64 KiB, reads of 64 KiB windows.
fn config() -> ColdStoreConfig {
    ColdStoreConfig {
        writer: ColdWriterConfig {
            compression: Compression::None,
            block_size_bytes: 16 << 10,
            chunk_bytes: 64 << 10,
            depth: 4,
            verify_after_write: false,
        },
        cache_capacity_bytes: 1 << 20,
        read_chunk_bytes: 64 << 10,
        read_depth: 4,
        async_readahead: true,
    }
}

/// About `total_bytes` of records in 4 streams, incompressible.
fn records_of(seed: u64, total_bytes: usize) -> Vec<Record> {
    let mut records = make_records(seed, 64, 4000, false);
    let mut next = records.iter().map(|r| r.1).max().unwrap_or(0) + 1_000;
    let mut bytes: usize = records.iter().map(|r| r.2.len()).sum();
    let mut rng = pstream_crashtest::kit::SplitMix64::new(seed);
    while bytes < total_bytes {
        let len = 20_000 + rng.below(40_000) as usize;
        let payload: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        records.push((7, next, payload));
        next += 1;
        bytes += len;
    }
    records
}

fn write(store: &ColdStore<ObjectIo>, segment_gen: u64, records: &[Record]) {
    store
        .write_segment(&source(segment_gen), common::as_input(records))
        .unwrap_or_else(|error| panic!("write segment {segment_gen}: {error}"));
}

#[test]
fn s3_multipart_segment_round_trips_and_reopens() {
    let server = S3Server::start();
    let records = records_of(1, 12 << 20);
    {
        let (store, report) = ColdStore::open(server.io("tier"), config()).unwrap();
        assert!(report.files.is_empty());
        write(&store, 1, &records);
        write(&store, 2, &records[..40]);
        check_readback(&store, 1, &records);
        check_readback(&store, 2, &records[..40]);
    }
    // 12 MiB with 8 MiB parts: a multipart upload (create, 2 parts, complete) and a PUT.
    let uploads = server.faults.uploads.load(Ordering::Relaxed);
    assert!(uploads >= 5, "{uploads} upload requests");
    let (store, report) = ColdStore::open(server.io("tier"), config()).unwrap();
    let gens: Vec<u64> = report.files.iter().map(|f| f.segment_gen()).collect();
    assert_eq!(gens, [1, 2]);
    assert_eq!(store.verify(1).unwrap(), records.len() as u64);
    check_readback(&store, 1, &records);
    let stats = store.stats();
    assert!(stats.readahead_windows > 0, "{stats:?}");
}

#[test]
fn s3_throttling_cuts_and_truncated_bodies_are_retried() {
    let server = S3Server::start();
    let records = records_of(2, 11 << 20);
    let (store, _) = ColdStore::open(server.io("faults"), config()).unwrap();
    server.faults.throttle_next.store(3, Ordering::SeqCst);
    server.faults.cut_next_uploads.store(2, Ordering::SeqCst);
    write(&store, 5, &records);
    assert_eq!(server.faults.throttle_next.load(Ordering::SeqCst), 0);
    assert_eq!(server.faults.cut_next_uploads.load(Ordering::SeqCst), 0);
    // Reads through throttling, cut connections and bodies cut half way.
    let (store, _) = ColdStore::open(server.io("faults"), config()).unwrap();
    server.faults.throttle_next.store(2, Ordering::SeqCst);
    server.faults.cut_next.store(2, Ordering::SeqCst);
    server.faults.truncate_next_gets.store(3, Ordering::SeqCst);
    check_readback(&store, 5, &records);
    assert_eq!(server.faults.truncate_next_gets.load(Ordering::SeqCst), 0);
    assert!(server.faults.injected.load(Ordering::Relaxed) >= 12);
}

#[test]
fn s3_read_that_keeps_failing_is_a_typed_error_naming_object_and_range() {
    let server = S3Server::start();
    let records = records_of(3, 300 << 10);
    let (store, _) = ColdStore::open(server.io("down"), config()).unwrap();
    write(&store, 9, &records);
    let (store, _) = ColdStore::open(server.io("down"), config()).unwrap();
    server
        .faults
        .throttle_next
        .store(u32::MAX, Ordering::SeqCst);
    let (stream, seq, payload) = &records[records.len() - 1];
    let error = store.read_record(9, *stream, *seq).unwrap_err();
    match &error {
        TieringError::ObjectStore {
            op: IoOp::Read,
            object,
            range: ByteRange::Span { start, end },
            ..
        } => {
            assert!(object.ends_with(&cold_file_name(9)), "{error}");
            assert!(start < end, "{error}");
        }
        other => panic!("expected an object store read error, got {other}"),
    }
    assert!(error.to_string().contains("bytes "), "{error}");
    // The server recovers: the same read returns the right bytes (nothing bad was cached).
    server.faults.throttle_next.store(0, Ordering::SeqCst);
    assert_eq!(&store.read_record(9, *stream, *seq).unwrap(), payload);
}

#[test]
fn s3_failed_upload_leaves_no_object_and_a_retry_succeeds() {
    let server = S3Server::start();
    let records = records_of(4, 20 << 20);
    let mut tier = s3::test_config();
    tier.max_retries = 1;
    tier.parts_in_flight = 1;
    let io = ObjectIo::open(&server.url("partial"), tier).unwrap();
    let (store, _) = ColdStore::open(io, config()).unwrap();
    // Parts go through, then every upload request is cut: the upload never completes.
    server.faults.cut_next_uploads.store(0, Ordering::SeqCst);
    let before = server.faults.uploads.load(Ordering::SeqCst);
    std::thread::scope(|scope| {
        let cutter = scope.spawn(|| {
            // Cut from the third upload request on (create and first part pass).
            while server.faults.uploads.load(Ordering::SeqCst) < before + 2 {
                std::thread::yield_now();
            }
            server
                .faults
                .cut_next_uploads
                .store(u32::MAX, Ordering::SeqCst);
        });
        let error = store
            .write_segment(&source(3), common::as_input(&records))
            .unwrap_err();
        assert!(
            matches!(
                error,
                TieringError::ObjectStore {
                    op: IoOp::Upload,
                    ..
                }
            ),
            "{error}"
        );
        cutter.join().unwrap();
    });
    server.faults.cut_next_uploads.store(0, Ordering::SeqCst);
    assert!(
        store.io().list().unwrap().is_empty(),
        "a partial object is visible"
    );
    let (store, report) = ColdStore::open(server.io("partial"), config()).unwrap();
    assert!(report.files.is_empty() && report.quarantined.is_empty());
    write(&store, 3, &records);
    check_readback(&store, 3, &records);
}

#[test]
fn s3_damaged_object_is_quarantined_and_reads_never_return_wrong_bytes() {
    let server = S3Server::start();
    let records = records_of(5, 200 << 10);
    let (store, _) = ColdStore::open(server.io("damage"), config()).unwrap();
    write(&store, 4, &records);
    write(&store, 6, &records);
    drop(store);
    // Flip one byte of a data block of segment 4 and one of the trailer of segment 6.
    let dir = server.object_dir("damage");
    let flip = |name: &str, at_from_end: Option<u64>, at: u64| {
        let path = dir.join(name);
        let mut bytes = std::fs::read(&path).unwrap();
        let index = at_from_end.map_or(at, |back| bytes.len() as u64 - back) as usize;
        bytes[index] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
    };
    flip(&cold_file_name(4), None, 4096 + 200);
    flip(&cold_file_name(6), Some(8), 0);
    let (store, report) = ColdStore::open(server.io("damage"), config()).unwrap();
    let quarantined: Vec<u64> = report.quarantined.iter().map(|q| q.segment_gen).collect();
    assert_eq!(quarantined, [6]);
    let names = store.io().list().unwrap();
    assert!(
        names.contains(&format!("{}.corrupt", cold_file_name(6))),
        "{names:?}"
    );
    let mut corrupt = 0;
    for (stream, seq, payload) in &records {
        match store.read_record(4, *stream, *seq) {
            Ok(read) => assert_eq!(&read, payload),
            Err(error) => {
                assert!(error.is_corruption(), "{error}");
                corrupt += 1;
            }
        }
    }
    assert!(corrupt > 0, "the damaged block was never noticed");
    assert!(store.verify(4).is_err());
}

#[test]
fn orphan_object_is_reported_at_open_and_discarded() {
    let server = S3Server::start();
    let records = records_of(6, 100 << 10);
    let (store, _) = ColdStore::open(server.io("orphan"), config()).unwrap();
    write(&store, 8, &records);
    drop(store);
    // The next open adopts the complete object; the engine's table decides it is an orphan.
    let (store, report) = ColdStore::open(server.io("orphan"), config()).unwrap();
    assert_eq!(report.files.len(), 1);
    assert!(store.discard_orphan(8).unwrap());
    assert!(
        !store.discard_orphan(8).unwrap(),
        "a second discard finds nothing"
    );
    assert!(store.io().list().unwrap().is_empty());
}

#[test]
fn memory_store_round_trips() {
    let io = ObjectIo::open("memory://cold", ObjectTierConfig::default()).unwrap();
    let (store, _) = ColdStore::open(io, config()).unwrap();
    let records = records_of(7, 9 << 20);
    write(&store, 1, &records);
    check_readback(&store, 1, &records);
    assert_eq!(store.io().list().unwrap(), [cold_file_name(1)]);
    assert!(matches!(
        store.write_segment(&source(1), common::as_input(&records)),
        Err(TieringError::MigrationInProgress { .. })
    ));
    store.delete(1).unwrap();
    assert!(store.io().list().unwrap().is_empty());
}

#[test]
fn bad_urls_are_typed_errors() {
    for url in ["ftp://x/y", "s3:///no-bucket", "s3://b/p?colour=red"] {
        let error = ObjectIo::open(url, ObjectTierConfig::default()).unwrap_err();
        assert!(
            matches!(
                error,
                TieringError::InvalidConfig(_)
                    | TieringError::ObjectStore {
                        op: IoOp::Setup,
                        ..
                    }
            ),
            "{url}: {error}"
        );
    }
    let small_parts = ObjectTierConfig {
        part_bytes: 1 << 20,
        ..ObjectTierConfig::default()
    };
    assert!(ObjectIo::open("memory://", small_parts).is_err());
}

//! Damaged bytes are typed errors naming the file and offset, never wrong data and never a
//! panic: garbage and misdirected sector reads, read EIO, misdirected writes, flipped bytes
//! and truncation on disk, and arbitrary input to every decoder.

mod common;

use std::sync::Arc;

use common::{as_input, check_readback, make_records, small_config, Record};
use proptest::prelude::*;
use pstream_crashtest::tiering_case::source;
use pstream_tiering::format::{
    cold_file_name, corrupt_file_name, decode_block, decode_file, decode_file_header,
    decode_footer, decode_trailer,
};
use pstream_tiering::{
    ColdStore, ColdStoreConfig, Compression, CountdownFault, FaultSpec, FaultyIo, IoOp, StdIo,
    TieringError,
};

const GEN: u64 = 0xc0ffee;

fn uncached(compression: Compression) -> ColdStoreConfig {
    ColdStoreConfig {
        cache_capacity_bytes: 0,
        ..small_config(compression)
    }
}

/// Every read either returns the exact payload or a `Corrupt` error naming the cold file at
/// an offset inside the file; returns how many reads failed.
fn reads_are_exact_or_typed<I: pstream_tiering::SegmentIo>(
    store: &ColdStore<I>,
    records: &[Record],
) -> usize {
    let name = cold_file_name(GEN);
    let file_len = store
        .index(GEN)
        .map_or(u64::MAX, |index| index.file_len_bytes);
    let mut failures = 0;
    for (stream, seq, payload) in records {
        match store.read_record(GEN, *stream, *seq) {
            Ok(read) => assert_eq!(&read, payload, "wrong data for {stream:#x}/{seq}"),
            Err(TieringError::Corrupt {
                file,
                offset_bytes,
                kind,
            }) => {
                assert_eq!(file, name, "{kind}");
                assert!(
                    offset_bytes < file_len,
                    "offset {offset_bytes} beyond {file_len}: {kind}"
                );
                failures += 1;
            }
            Err(other) => panic!("untyped failure: {other}"),
        }
    }
    failures
}

fn faulty_store(
    dir: &std::path::Path,
    config: &ColdStoreConfig,
    records: &[Record],
) -> (Arc<FaultyIo<StdIo>>, ColdStore<Arc<FaultyIo<StdIo>>>) {
    let io =
        Arc::new(FaultyIo::new(StdIo::open(dir).expect("io"), FaultSpec::none(1)).expect("faulty"));
    let (store, _) = ColdStore::open(Arc::clone(&io), config.clone()).expect("open");
    store
        .write_segment(&source(GEN), as_input(records))
        .expect("write");
    (io, store)
}

#[test]
fn garbage_and_misdirected_sector_reads_are_typed_errors() {
    for compression in [Compression::None, Compression::Zstd { level: 3 }] {
        let records = make_records(31, 120, 3000, true);
        let dir = tempfile::tempdir().expect("tempdir");
        let (io, store) = faulty_store(dir.path(), &uncached(compression), &records);
        let mut spec = FaultSpec::none(77);
        spec.read_garbage_probability = 1.0;
        io.set_spec(spec);
        let garbage_failures = reads_are_exact_or_typed(&store, &records);
        let mut spec = FaultSpec::none(78);
        spec.misdirected_read_probability = 1.0;
        io.set_spec(spec);
        let misdirected_failures = reads_are_exact_or_typed(&store, &records);
        // Garbage in the alignment slack of a read touches no block byte; most reads fail.
        assert!(
            garbage_failures > records.len() / 2,
            "{compression:?}: {garbage_failures}"
        );
        assert!(
            misdirected_failures > records.len() / 2,
            "{compression:?}: {misdirected_failures}"
        );
        assert!(store.stats().read_errors as usize >= garbage_failures + misdirected_failures);
        // A scan fails the same way.
        assert!(matches!(
            store.verify(GEN),
            Err(TieringError::Corrupt { .. })
        ));
        // Once the device behaves again everything is intact.
        io.set_spec(FaultSpec::none(79));
        check_readback(&store, GEN, &records);
    }
}

#[test]
fn read_eio_names_file_and_offset() {
    let records = make_records(32, 40, 2000, false);
    let dir = tempfile::tempdir().expect("tempdir");
    let (io, store) = faulty_store(dir.path(), &uncached(Compression::None), &records);
    let mut spec = FaultSpec::none(5);
    spec.read_eio_probability = 1.0;
    io.set_spec(spec);
    let (stream, seq, _) = &records[3];
    match store.read_record(GEN, *stream, *seq) {
        Err(TieringError::Io {
            op: IoOp::Read,
            file,
            offset_bytes,
            source,
        }) => {
            assert_eq!(file, cold_file_name(GEN));
            assert_eq!(offset_bytes % 4096, 0);
            assert_eq!(source.raw_os_error(), Some(libc_eio()));
        }
        other => panic!("expected a read EIO, got {other:?}"),
    }
    assert_eq!(store.stats().read_errors, 1);
}

fn libc_eio() -> i32 {
    5
}

/// Misdirect each write of a migration in turn: the migration reports success (the device
/// lied), and afterwards the file is quarantined at open or its damaged records fail with
/// typed errors; no read ever returns wrong bytes. With `verify_after_write` the migration
/// itself fails instead.
#[test]
fn misdirected_writes_are_detected() {
    let records = make_records(33, 80, 2500, false);
    for verify_after_write in [false, true] {
        let mut config = uncached(Compression::None);
        config.writer.verify_after_write = verify_after_write;
        let mut detected = 0;
        let mut quarantined = 0;
        // Operation 1 creates the file; 2.. are chunk writes.
        for k in 2..40 {
            let dir = tempfile::tempdir().expect("tempdir");
            let io = Arc::new(
                FaultyIo::new(StdIo::open(dir.path()).expect("io"), FaultSpec::none(k))
                    .expect("faulty"),
            );
            let (store, _) = ColdStore::open(Arc::clone(&io), config.clone()).expect("open");
            io.set_spec(FaultSpec::countdown(k, CountdownFault::Misdirect, false));
            let result = store.write_segment(&source(GEN), as_input(&records));
            let hit_a_write = io
                .trace()
                .first()
                .is_some_and(|event| event.op == IoOp::Write);
            io.set_spec(FaultSpec::none(k));
            drop(store);
            if !hit_a_write {
                // Past the last write: operation k was the fdatasync (or beyond).
                assert!(k > 3, "k={k}: {result:?}");
                break;
            }
            match (verify_after_write, result) {
                (true, Err(TieringError::Corrupt { file, .. })) => {
                    assert!(file.ends_with(".pcold.tmp"), "{file}");
                    detected += 1;
                    continue;
                }
                (true, Err(other)) => panic!("k={k}: {other}"),
                (_, Ok(_)) => {}
                (false, Err(error)) => panic!("k={k}: the device lied, yet {error}"),
            }
            let (store, report) =
                ColdStore::open(StdIo::open(dir.path()).expect("io"), config.clone())
                    .expect("reopen");
            if let Some(file) = report.quarantined.first() {
                assert!(
                    matches!(file.error, TieringError::Corrupt { .. }),
                    "{}",
                    file.error
                );
                assert!(dir.path().join(corrupt_file_name(GEN)).exists());
                quarantined += 1;
                continue;
            }
            let failures = reads_are_exact_or_typed(&store, &records);
            let verify = store.verify(GEN);
            if failures > 0 || verify.is_err() {
                detected += 1;
            }
        }
        let verify = verify_after_write;
        eprintln!("verify_after_write={verify}: {detected} detected, {quarantined} quarantined");
        assert!(detected + quarantined > 10);
    }
}

#[test]
fn flipped_bytes_on_disk_are_found() {
    let records = make_records(34, 60, 2000, true);
    let config = uncached(Compression::Zstd { level: 3 });
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) =
        ColdStore::open(StdIo::open(dir.path()).expect("io"), config.clone()).expect("open");
    store
        .write_segment(&source(GEN), as_input(&records))
        .expect("write");
    let index = store.index(GEN).expect("served");
    drop(store);
    let path = dir.path().join(cold_file_name(GEN));
    let original = std::fs::read(&path).expect("read");
    let footer_end = index.footer_offset + footer_len(&original);
    let mut quarantined = 0;
    let mut caught_by_reads = 0;
    for position in (0..original.len()).step_by(41) {
        let mut damaged = original.clone();
        damaged[position] ^= 0x10;
        std::fs::write(&path, &damaged).expect("write");
        let (store, report) =
            ColdStore::open(StdIo::open(dir.path()).expect("io"), config.clone()).expect("open");
        let position = position as u64;
        if let Some(file) = report.quarantined.first() {
            match &file.error {
                TieringError::Corrupt { file, .. } => assert_eq!(file, &cold_file_name(GEN)),
                other => panic!("{other}"),
            }
            quarantined += 1;
            std::fs::rename(dir.path().join(corrupt_file_name(GEN)), &path).expect("restore name");
            continue;
        }
        let in_padding = position >= footer_end && position < index.file_len_bytes - 64;
        let in_blocks = position >= 64 && position < index.footer_offset;
        assert!(
            in_blocks || in_padding,
            "flip at {position} in a checked structure was adopted"
        );
        let failures = reads_are_exact_or_typed(&store, &records);
        match store.verify(GEN) {
            Err(TieringError::Corrupt {
                file, offset_bytes, ..
            }) => {
                assert!(in_blocks, "flip at {position}");
                assert_eq!(file, cold_file_name(GEN));
                let block = index.blocks.iter().find(|block| {
                    position >= block.offset_bytes
                        && position < block.offset_bytes + block.disk_len_bytes()
                });
                let block = block.expect("the flip is in a block");
                assert!(
                    offset_bytes >= block.offset_bytes,
                    "error at {offset_bytes}, flip at {position}"
                );
                assert!(failures > 0);
                caught_by_reads += 1;
            }
            Err(other) => panic!("{other}"),
            Ok(_) => assert!(in_padding, "flip at {position} in a block went unnoticed"),
        }
    }
    eprintln!("{quarantined} flips quarantined at open, {caught_by_reads} caught by reads");
    assert!(quarantined > 0 && caught_by_reads > 0);
}

fn footer_len(file: &[u8]) -> u64 {
    let trailer = decode_trailer(&file[file.len() - 64..]).expect("trailer");
    trailer.footer_len_bytes
}

#[test]
fn truncated_files_are_never_adopted() {
    let records = make_records(35, 60, 2000, false);
    let config = small_config(Compression::None);
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) =
        ColdStore::open(StdIo::open(dir.path()).expect("io"), config.clone()).expect("open");
    store
        .write_segment(&source(GEN), as_input(&records))
        .expect("write");
    drop(store);
    let path = dir.path().join(cold_file_name(GEN));
    let original = std::fs::read(&path).expect("read");
    for len in [
        0,
        1,
        63,
        64,
        4095,
        4096,
        original.len() / 2,
        original.len() - 4096,
        original.len() - 1,
    ] {
        std::fs::write(&path, &original[..len]).expect("truncate");
        let (store, report) =
            ColdStore::open(StdIo::open(dir.path()).expect("io"), config.clone()).expect("open");
        assert!(store.index(GEN).is_none(), "truncated to {len} was adopted");
        assert_eq!(report.quarantined.len(), 1, "len {len}");
        std::fs::remove_file(dir.path().join(corrupt_file_name(GEN))).expect("cleanup");
    }
}

fn valid_file(seed: u64, compression: Compression) -> Vec<u8> {
    let records = make_records(seed, 30, 1500, seed % 2 == 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = ColdStore::open(
        StdIo::open(dir.path()).expect("io"),
        small_config(compression),
    )
    .expect("open");
    store
        .write_segment(&source(GEN), as_input(&records))
        .expect("write");
    std::fs::read(dir.path().join(cold_file_name(GEN))).expect("read")
}

fn exercise_decoders(bytes: &[u8]) {
    let _ = decode_file(bytes);
    let _ = decode_file_header(bytes);
    let _ = decode_trailer(bytes);
    let _ = decode_block(bytes, GEN, 0);
    let _ = decode_footer(bytes, GEN, 64);
    if bytes.len() > 64 {
        let _ = decode_trailer(&bytes[bytes.len() - 64..]);
        let _ = decode_block(&bytes[64..], GEN, 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn decoders_never_panic_on_random_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..9000),
    ) {
        exercise_decoders(&bytes);
    }

    #[test]
    fn decoders_never_panic_on_mutated_files(
        seed in 0u64..4,
        zstd in any::<bool>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..8),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
    ) {
        let compression = if zstd { Compression::Zstd { level: 1 } } else { Compression::None };
        let original = valid_file(seed, compression);
        let original_index = decode_file(&original).expect("valid");
        let mut bytes = original.clone();
        for (index, mask) in &flips {
            let position = index.index(bytes.len());
            bytes[position] ^= mask;
        }
        if do_cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        exercise_decoders(&bytes);
        // A mutated file decodes only if every flip hit padding, and then to the same index.
        if let Ok(index) = decode_file(&bytes) {
            prop_assert_eq!(index, original_index);
        }
    }
}

//! The engine's API behaviour: streams, appends, batches, reads, iteration, trim, delete,
//! space reuse, reopen, concurrency, and typed errors for bad input that change nothing.

use pstream_crashtest::kit as common;

use std::sync::Arc;

use pmem_emul::{MmapPool, PoolOptions, SimPmem};
use pstream_engine::{EngineError, Log, LogConfig, OpenOptions, StreamId};

fn sim_log(pool_bytes: usize) -> Log<SimPmem> {
    Log::create(
        SimPmem::new(pool_bytes),
        common::small_config(),
        common::options(2),
    )
    .expect("create")
}

#[test]
fn append_read_iterate_round_trip() {
    let log = sim_log(512 * 1024);
    let a = log.create_stream(b"alpha").unwrap();
    let b = log.create_stream(b"beta").unwrap();
    assert_eq!(log.tail(a).unwrap(), None);
    for i in 0..50u32 {
        assert_eq!(log.append(a, &i.to_le_bytes()).unwrap(), u64::from(i));
        assert!(log.pmem().check_all_persisted().is_ok());
    }
    assert_eq!(log.append(b, b"").unwrap(), 0);
    assert_eq!(log.tail(a).unwrap(), Some(49));
    assert_eq!(log.read(a, 7).unwrap().payload(), &7u32.to_le_bytes());
    assert_eq!(log.read(b, 0).unwrap().payload(), b"");
    let got: Vec<u32> = log
        .iter(a, 45)
        .unwrap()
        .map(|r| u32::from_le_bytes(r.unwrap().payload().try_into().unwrap()))
        .collect();
    assert_eq!(got, vec![45, 46, 47, 48, 49]);
    let mut listed = log.list_streams();
    listed.sort_by_key(|s| s.label.clone());
    assert_eq!(listed.len(), 2);
    assert_eq!(
        (listed[0].label.as_slice(), listed[0].next_seq),
        (&b"alpha"[..], 50)
    );
}

/// An iterator follows the stream as it changes under it: it sees appends made after it
/// was created, skips ahead past a trim, and reports a deletion once and then ends.
#[test]
fn iterator_follows_appends_trims_and_deletion() {
    let log = sim_log(512 * 1024);
    let a = log.create_stream(b"a").unwrap();
    for i in 0..10u32 {
        log.append(a, &i.to_le_bytes()).unwrap();
    }
    let seq_of = |r: Result<pstream_engine::Record<'_>, EngineError>| r.unwrap().seq();
    let mut iter = log.iter(a, 0).unwrap();
    assert_eq!(iter.next().map(seq_of), Some(0));
    log.trim(a, 5).unwrap();
    assert_eq!(
        iter.next().map(seq_of),
        Some(5),
        "did not skip past the trim"
    );
    let rest: Vec<u64> = iter.by_ref().map(seq_of).collect();
    assert_eq!(rest, vec![6, 7, 8, 9]);
    log.append(a, b"late").unwrap();
    assert_eq!(iter.next().map(seq_of), Some(10), "missed a later append");
    assert!(iter.next().is_none());
    log.delete_stream(a).unwrap();
    assert!(matches!(iter.next(), Some(Err(EngineError::UnknownStream(id))) if id == a));
    assert!(iter.next().is_none(), "a deleted stream is reported once");
}

/// A batch flushes exactly the lines its stores left dirty: whole small records, only the
/// header line of a record whose payload went through non-temporal stores; nothing twice.
#[test]
fn batch_flushes_only_what_it_dirtied() {
    let log = sim_log(512 * 1024);
    let a = log.create_stream(b"a").unwrap();
    let big = vec![7u8; 4096];
    log.append(a, b"opens the lane's segment").unwrap();
    let before = log.pmem().counters();
    log.append_batch(&[(a, &big), (a, &[1u8; 64]), (a, &[2u8; 100]), (a, &big)])
        .unwrap();
    let after = log.pmem().counters();
    // 1 header line + 2 lines (32 + 64 B) + 3 lines (32 + 100 B) + 1 header line.
    assert_eq!(after.line_flushes - before.line_flushes, 7);
    assert_eq!(after.redundant_line_flushes, before.redundant_line_flushes);
    assert_eq!(after.fences - before.fences, 1);
    assert!(log.pmem().check_all_persisted().is_ok());
    assert_eq!(log.read(a, 4).unwrap().payload(), big.as_slice());
}

#[test]
fn batch_is_one_fence_and_keeps_order() {
    let log = sim_log(512 * 1024);
    let a = log.create_stream(b"a").unwrap();
    let b = log.create_stream(b"b").unwrap();
    let before = log.pmem().counters().fences;
    let payloads: Vec<Vec<u8>> = (0..16).map(|i| vec![i as u8; 64]).collect();
    let batch: Vec<(StreamId, &[u8])> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| (if i % 3 == 0 { b } else { a }, p.as_slice()))
        .collect();
    // The first batch also opens a segment (header + entry); measure a second one.
    log.append_batch(&batch).unwrap();
    let mid = log.pmem().counters().fences;
    let seqs = log.append_batch(&batch).unwrap();
    assert_eq!(log.pmem().counters().fences - mid, 1, "one fence per batch");
    assert!(mid - before >= 1);
    assert!(log.pmem().check_all_persisted().is_ok());
    assert_eq!(seqs[0], 6); // stream b got 6 records in the first batch
    assert_eq!(seqs[1], 10);
    assert_eq!(log.read(a, 10).unwrap().payload(), &payloads[1][..]);
    assert_eq!(log.stats().records_appended, 32);
}

#[test]
fn bad_input_is_a_typed_error_and_changes_nothing() {
    let log = sim_log(512 * 1024);
    let a = log.create_stream(b"a").unwrap();
    log.append(a, b"one").unwrap();
    let image_before = log.pmem().volatile_image();
    let too_big = vec![0u8; log.max_payload_bytes() + 1];
    assert!(matches!(
        log.append(a, &too_big),
        Err(EngineError::PayloadTooLarge { .. })
    ));
    let ghost = StreamId(a.0 + (1 << 32));
    assert!(matches!(
        log.append(ghost, b"x"),
        Err(EngineError::UnknownStream(_))
    ));
    assert!(matches!(
        log.append(StreamId(u64::MAX), b"x"),
        Err(EngineError::UnknownStream(_))
    ));
    // A batch with one bad record writes none of them.
    let batch: Vec<(StreamId, &[u8])> = vec![(a, b"fine"), (ghost, b"bad")];
    assert!(matches!(
        log.append_batch(&batch),
        Err(EngineError::UnknownStream(_))
    ));
    assert!(matches!(
        log.read(a, 1),
        Err(EngineError::SeqOutOfRange { .. })
    ));
    assert!(matches!(
        log.trim(a, 5),
        Err(EngineError::TrimBeyondTail { .. })
    ));
    assert!(matches!(
        log.create_stream(&[b'x'; 32]),
        Err(EngineError::LabelTooLong { .. })
    ));
    assert!(matches!(
        log.delete_stream(ghost),
        Err(EngineError::UnknownStream(_))
    ));
    assert_eq!(
        log.pmem().volatile_image(),
        image_before,
        "a failed call wrote to the pool"
    );
    assert_eq!(log.bounds(a).unwrap(), (0, 1));
}

#[test]
fn create_refuses_a_formatted_pool_and_open_refuses_garbage() {
    let log = sim_log(256 * 1024);
    let pmem = log.close();
    assert!(matches!(
        Log::create(pmem, common::small_config(), common::options(1)),
        Err(EngineError::AlreadyFormatted)
    ));
    assert!(matches!(
        Log::open(SimPmem::new(256 * 1024), common::options(1)),
        Err(EngineError::Unformatted)
    ));
    let mut garbage = vec![0xA5u8; 256 * 1024];
    garbage[0] = b'P';
    assert!(matches!(
        Log::open(SimPmem::from_image(garbage), common::options(1)),
        Err(EngineError::Corruption { .. })
    ));
    assert!(matches!(
        Log::create(
            SimPmem::new(32 * 1024),
            common::small_config(),
            common::options(1)
        ),
        Err(EngineError::PoolTooSmall { .. })
    ));
    let bad_segment = LogConfig {
        segment_size_bytes: 5000,
        stream_slot_count: 4,
    };
    assert!(matches!(
        Log::create(SimPmem::new(256 * 1024), bad_segment, common::options(1)),
        Err(EngineError::InvalidConfig(_))
    ));
}

#[test]
fn reopen_restores_streams_records_trims_and_deletes() {
    let log = sim_log(512 * 1024);
    let keep = log.create_stream(b"keep").unwrap();
    let gone = log.create_stream(b"gone").unwrap();
    for i in 0..100u32 {
        log.append(keep, &vec![i as u8; (i % 300) as usize])
            .unwrap();
        log.append(gone, b"x").unwrap();
    }
    log.trim(keep, 30).unwrap();
    log.delete_stream(gone).unwrap();
    let pmem = log.close();
    let (log, report) = Log::open(pmem, common::options(2)).unwrap();
    assert_eq!(report.streams, 1);
    assert_eq!(log.bounds(keep).unwrap(), (30, 100));
    assert!(matches!(
        log.read(gone, 0),
        Err(EngineError::UnknownStream(_))
    ));
    for seq in 30..100u64 {
        assert_eq!(
            log.read(keep, seq).unwrap().payload(),
            &vec![seq as u8; (seq % 300) as usize][..]
        );
    }
    // Appending continues densely after reopen.
    assert_eq!(log.append(keep, b"more").unwrap(), 100);
    let new = log.create_stream(b"new").unwrap();
    assert_ne!(new, gone, "stream ids are never reused");
}

#[test]
fn full_pool_errors_and_deleted_space_is_reused() {
    let log = sim_log(256 * 1024);
    let a = log.create_stream(b"a").unwrap();
    let payload = vec![7u8; 4000];
    let mut appended = 0u64;
    let error = loop {
        match log.append(a, &payload) {
            Ok(_) => appended += 1,
            Err(error) => break error,
        }
    };
    assert!(matches!(error, EngineError::PoolFull { .. }), "{error}");
    assert!(appended > 40);
    assert_eq!(
        log.bounds(a).unwrap(),
        (0, appended),
        "a failed append changes nothing"
    );
    log.delete_stream(a).unwrap();
    let b = log.create_stream(b"b").unwrap();
    for _ in 0..appended {
        log.append(b, &payload).unwrap();
    }
    assert!(log.stats().segments_free < 3);
}

#[test]
fn readers_hold_space_until_they_drop() {
    let log = sim_log(256 * 1024);
    let a = log.create_stream(b"a").unwrap();
    for _ in 0..10 {
        log.append(a, &[1u8; 3000]).unwrap();
    }
    let other = log.create_stream(b"o").unwrap();
    for _ in 0..10 {
        log.append(other, &[2u8; 3000]).unwrap(); // fills the lane so segment 0 is sealed
    }
    let record = log.read(a, 0).unwrap();
    log.delete_stream(a).unwrap();
    log.reclaim();
    // The borrowed bytes are still the record's: its segment was not scrubbed under it.
    assert_eq!(record.payload(), &[1u8; 3000][..]);
    drop(record);
    assert!(log.reclaim() > 0 || log.stats().segments_free > 0);
}

#[test]
fn two_threads_on_different_and_same_streams() {
    let log = Arc::new(sim_log(4 << 20));
    let shared = log.create_stream(b"shared").unwrap();
    let own: Vec<StreamId> = (0..2)
        .map(|i| log.create_stream(format!("own{i}").as_bytes()).unwrap())
        .collect();
    let handles: Vec<_> = (0..2)
        .map(|t| {
            let log = Arc::clone(&log);
            let mine = own[t];
            std::thread::spawn(move || {
                let mut shared_seqs = Vec::new();
                for i in 0..300u32 {
                    assert_eq!(log.append(mine, &i.to_le_bytes()).unwrap(), u64::from(i));
                    let seq = log.append(shared, &[t as u8; 40]).unwrap();
                    // Acknowledged means this and every earlier record is readable.
                    assert!(log.bounds(shared).unwrap().1 > seq);
                    shared_seqs.push(seq);
                }
                shared_seqs
            })
        })
        .collect();
    let mut all: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..600).collect::<Vec<u64>>(),
        "shared stream seqs are dense and unique"
    );
    let pmem = Arc::try_unwrap(log).ok().expect("sole owner").close();
    let (log, _) = Log::open(pmem, common::options(2)).unwrap();
    assert_eq!(log.bounds(shared).unwrap(), (0, 600));
    assert_eq!(log.bounds(own[1]).unwrap(), (0, 300));
}

#[test]
fn mmap_pool_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("engine.pool");
    let pool = MmapPool::create(&path, 8 << 20, PoolOptions::default()).unwrap();
    let log = Log::create(
        pool,
        LogConfig {
            segment_size_bytes: 1 << 20,
            stream_slot_count: 64,
        },
        OpenOptions::default(),
    )
    .unwrap();
    let s = log.create_stream(b"file").unwrap();
    let big = vec![0x5Au8; 512 * 1024];
    log.append(s, &big).unwrap();
    log.append(s, b"small").unwrap();
    log.close().close().unwrap();
    let pool = MmapPool::open(&path, PoolOptions::default()).unwrap();
    let (log, report) = Log::open(pool, OpenOptions::default()).unwrap();
    assert_eq!(report.live_records, 2);
    assert_eq!(log.read(s, 0).unwrap().payload(), &big[..]);
    assert_eq!(log.read(s, 1).unwrap().payload(), b"small");
}

#[test]
fn stats_after_reopen_count_live_data() {
    let log = sim_log(1 << 20);
    let s = log.create_stream(b"s").unwrap();
    for _ in 0..100 {
        log.append(s, &[1u8; 1000]).unwrap();
    }
    let before = log.stats();
    assert_eq!(before.live_records, 100);
    assert_eq!(
        before.live_bytes,
        100 * 1088,
        "on-media bytes: header + payload + padding"
    );
    let (log, _) = Log::open(log.close(), common::options(2)).unwrap();
    let after = log.stats();
    assert_eq!(
        (after.live_records, after.live_bytes),
        (before.live_records, before.live_bytes)
    );
}

/// Batches never span segments now; this still checks that whole batches moved to the next
/// segment (sealing the full one) leave nothing unpersisted.
#[test]
fn batch_crossing_segments_leaves_nothing_unpersisted() {
    let log = sim_log(512 * 1024);
    let s = log.create_stream(b"s").unwrap();
    for round in 0..40usize {
        let payloads: Vec<Vec<u8>> = (0..5)
            .map(|i| vec![(round + i) as u8 | 1; 100 + 97 * i])
            .collect();
        let batch: Vec<(StreamId, &[u8])> = payloads.iter().map(|p| (s, p.as_slice())).collect();
        log.append_batch(&batch).unwrap();
        if let Err(unpersisted) = log.pmem().check_all_persisted() {
            panic!("round {round}: {unpersisted}");
        }
    }
}

#[test]
fn an_oversized_batch_is_refused_whole_with_its_sizes() {
    let log = sim_log(512 * 1024);
    let a = log.create_stream(b"a").unwrap();
    let b = log.create_stream(b"b").unwrap();
    log.append_batch(&[(a, b"one"), (b, b"two")]).unwrap();
    let capacity_bytes = log.batch_capacity_bytes();
    assert!(capacity_bytes + 64 <= log.segment_size_bytes());
    // Every record is acceptable on its own; together they exceed one batch.
    let big = vec![5u8; log.max_payload_bytes() / 2];
    let batch: Vec<(StreamId, &[u8])> = vec![(a, &big), (b, b"small"), (a, &big)];
    let image_before = log.pmem().volatile_image();
    let stats_before = log.stats();
    match log.append_batch(&batch) {
        Err(EngineError::BatchTooLarge {
            record_count,
            batch_bytes,
            capacity_bytes: reported,
        }) => {
            assert_eq!(record_count, 3);
            assert_eq!(reported, capacity_bytes);
            assert_eq!(
                batch_bytes,
                log.batch_size_bytes(batch.iter().map(|(_, p)| p.len()))
            );
            assert!(batch_bytes > capacity_bytes);
        }
        other => panic!("expected BatchTooLarge, got {other:?}"),
    }
    let message = log.append_batch(&batch).unwrap_err().to_string();
    assert!(message.contains(&capacity_bytes.to_string()), "{message}");
    // Nothing written: pool bytes, tails and counters unchanged.
    assert!(
        log.pmem().volatile_image() == image_before,
        "the pool changed"
    );
    assert_eq!(log.bounds(a).unwrap(), (0, 1));
    assert_eq!(log.bounds(b).unwrap(), (0, 1));
    assert_eq!(log.stats(), stats_before);
    // Split by `batch_ranges`, each part fits and goes in.
    let lens: Vec<usize> = batch.iter().map(|(_, p)| p.len()).collect();
    let ranges = log.batch_ranges(&lens);
    assert_eq!(ranges, vec![0..2, 2..3]);
    for range in ranges {
        log.append_batch(&batch[range]).unwrap();
    }
    assert_eq!(log.bounds(a).unwrap(), (0, 3));
    // An empty batch is a no-op.
    assert_eq!(log.append_batch(&[]).unwrap(), Vec::<u64>::new());
}

#[test]
fn a_batch_that_does_not_fit_the_segment_rest_goes_whole_into_the_next() {
    let log = sim_log(512 * 1024);
    let s = log.create_stream(b"s").unwrap();
    let t = log.create_stream(b"t").unwrap();
    let payload = vec![3u8; 3000];
    let mut sealed_before = 0;
    for round in 0..12u64 {
        let batch: Vec<(StreamId, &[u8])> = vec![(s, &payload), (t, &payload), (s, &payload)];
        let seqs = log.append_batch(&batch).unwrap();
        assert_eq!(seqs, vec![2 * round, round, 2 * round + 1]);
        let sealed: Vec<_> = log
            .segment_infos()
            .into_iter()
            .filter(|i| i.state == pstream_engine::SegmentState::Sealed)
            .collect();
        // Every sealed segment holds whole batches: 3 records each, never a part.
        for info in &sealed {
            assert_eq!(info.live_records % 3, 0, "{info:?}");
        }
        sealed_before = sealed.len();
    }
    assert!(sealed_before >= 2, "no segment end was reached");
    let pmem = log.close();
    let (log, report) = Log::open(pmem, common::options(2)).unwrap();
    assert_eq!(report.incomplete_batch_records_dropped, 0);
    assert_eq!(log.bounds(s).unwrap(), (0, 24));
    assert!(pstream_engine::verify(log.pmem()).unwrap().is_clean());
}

#[test]
fn slots_are_reused_lowest_first_and_a_full_table_is_a_typed_error() {
    let log = sim_log(256 * 1024);
    let slot_count = 16; // common::small_config()
    let mut ids: Vec<StreamId> = (0..slot_count)
        .map(|_| log.create_stream(b"s").unwrap())
        .collect();
    assert!(matches!(
        log.create_stream(b"s"),
        Err(EngineError::StreamTableFull { slot_count: 16 })
    ));
    // Free two slots out of order: the next creates take the lower one first, then the
    // other, with new incarnations (ids never reused).
    let (low, high) = (ids[3], ids[9]);
    log.delete_stream(high).unwrap();
    log.delete_stream(low).unwrap();
    let first = log.create_stream(b"s").unwrap();
    let second = log.create_stream(b"s").unwrap();
    assert_eq!(first.0 & 0xffff_ffff, low.0 & 0xffff_ffff);
    assert_eq!(second.0 & 0xffff_ffff, high.0 & 0xffff_ffff);
    assert!(first != low && second != high);
    assert!(matches!(
        log.create_stream(b"s"),
        Err(EngineError::StreamTableFull { .. })
    ));
    ids[3] = first;
    ids[9] = second;
    // After a reopen (the search starts over), a delete is still reused.
    let (log, _) = Log::open(log.close(), common::options(2)).unwrap();
    log.delete_stream(ids[15]).unwrap();
    let again = log.create_stream(b"s").unwrap();
    assert_eq!(again.0 & 0xffff_ffff, ids[15].0 & 0xffff_ffff);
}

#[test]
fn a_zeroed_stream_slot_is_corruption_never_a_stream_silently_gone() {
    let log = sim_log(256 * 1024);
    let label = b"zeroed-slot-label";
    let s = log.create_stream(label).unwrap();
    for i in 0..5u8 {
        log.append(s, &[i + 1; 100]).unwrap();
    }
    let mut image = log.close().persisted_image();
    // The slot is the 64-byte line holding the label.
    let at = image
        .windows(label.len())
        .position(|w| w == label)
        .expect("label on media");
    let line = at / 64 * 64;
    image[line..line + 64].fill(0);
    match Log::open(SimPmem::from_image(image), common::options(2)) {
        Err(EngineError::Corruption { kind, .. }) => assert_eq!(
            kind,
            pstream_engine::CorruptKind::Mismatch {
                field: "stream slot incarnation"
            }
        ),
        Err(other) => panic!("expected corruption, got {other}"),
        Ok((log, _)) => panic!("opened with {} streams", log.list_streams().len()),
    }
}

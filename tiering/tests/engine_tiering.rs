//! The cold tier through the engine: a real `Log` migrating to a real cold directory
//! (io_uring and pread I/O, with and without compression), the background migrator filling
//! and draining a small pool, reopen of both tiers, fault countdowns on the SSD I/O, and
//! crashes at every step of a migration (SSD steps through `FaultyIo`, persistent-memory
//! fences through `SimPmem`).

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pmem_emul::{CrashPoint, MmapPool, Pmem, PoolOptions, SimPmem};
use pstream_engine::{ColdTier, Log, LogConfig, OpenOptions, SegmentState, StreamId};
use pstream_tiering::{
    create_tiered_with, default_cold_dir, open_tiered_with, ColdStoreConfig, Compression,
    CountdownFault, EngineColdTier, FaultSpec, FaultyIo, Migrator, MigratorPolicy, SegmentIo,
    StdIo, UringConfig, UringIo,
};

/// Acknowledged payloads by stream, in seq order from 0.
type Oracle = BTreeMap<StreamId, Vec<Vec<u8>>>;

/// A compressible first half, a noisy second half.
fn payload(stream: u64, seq: u64, len: usize) -> Vec<u8> {
    let mut x =
        stream.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seq.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    (0..len)
        .map(|i| {
            if i < len / 2 {
                (i / 64) as u8 ^ seq as u8
            } else {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            }
        })
        .collect()
}

fn check<P: Pmem, C: ColdTier>(log: &Log<P, C>, oracle: &Oracle) -> Result<u64, String> {
    let mut cold = 0;
    for (id, records) in oracle {
        let (first, next) = log.bounds(*id).map_err(|e| format!("bounds {id}: {e}"))?;
        if first != 0 || next != records.len() as u64 {
            return Err(format!(
                "stream {id}: bounds {first}..{next}, expected 0..{}",
                records.len()
            ));
        }
        for (seq, expected) in records.iter().enumerate() {
            let record = log
                .read(*id, seq as u64)
                .map_err(|e| format!("read {id}/{seq}: {e}"))?;
            if record.payload() != &expected[..] {
                return Err(format!("stream {id} seq {seq}: payload differs"));
            }
            cold += u64::from(record.is_cold());
        }
    }
    Ok(cold)
}

fn mmap_pool(path: &Path, bytes: usize) -> MmapPool {
    let options = PoolOptions {
        try_dax: false,
        ..PoolOptions::default()
    };
    MmapPool::create(path, bytes, options).unwrap()
}

fn store_config(compression: Compression) -> ColdStoreConfig {
    let mut config = ColdStoreConfig::default();
    config.writer.compression = compression;
    config
}

fn big_config() -> LogConfig {
    LogConfig {
        segment_size_bytes: 1 << 20,
        stream_slot_count: 16,
    }
}

/// Fills a 16 MiB pool with ~40 MiB through the background migrator, checks every record,
/// closes both tiers, reopens them and checks again.
fn fill_and_reopen<I: SegmentIo, F: Fn(&Path) -> I>(open_io: F, compression: Compression) {
    let dir = tempfile::tempdir().unwrap();
    let pool_path = dir.path().join("pool");
    let cold_dir = default_cold_dir(&pool_path);
    let log = create_tiered_with(
        mmap_pool(&pool_path, 16 << 20),
        open_io(&cold_dir),
        store_config(compression),
        big_config(),
        OpenOptions { lane_count: 2 },
    )
    .unwrap();
    let log = Arc::new(log);
    let policy = MigratorPolicy {
        min_idle_ms: u64::MAX,
        interval: Duration::from_millis(5),
        ..MigratorPolicy::default()
    };
    let migrator = Migrator::start(Arc::clone(&log), policy);
    let ids = [
        log.create_stream(b"a").unwrap(),
        log.create_stream(b"b").unwrap(),
    ];
    let mut oracle = Oracle::new();
    let mut total_bytes = 0usize;
    let mut i = 0u64;
    while total_bytes < 40 << 20 {
        let id = ids[(i % 2) as usize];
        let records = oracle.entry(id).or_default();
        let bytes = payload(id.0, records.len() as u64, 1000 + (i as usize * 37) % 3000);
        let seq = migrator
            .append(id, &bytes, Duration::from_secs(20))
            .unwrap();
        assert_eq!(seq, records.len() as u64);
        total_bytes += bytes.len();
        records.push(bytes);
        i += 1;
    }
    let stats = migrator.stop();
    assert!(stats.migrations >= 10, "{stats:?}");
    assert_eq!(stats.failures, 0, "{stats:?}");
    let cold = check(&log, &oracle).unwrap();
    assert!(cold > 0, "nothing was read from the cold tier");
    let tier = log.tier_stats();
    assert!(tier.cold_reads > 0 && tier.bytes_migrated > 0, "{tier:?}");
    if compression != Compression::None {
        let cold_stats = log.cold().store().stats();
        assert!(cold_stats.compression_ratio() > 1.2, "{cold_stats:?}");
    }

    let log = Arc::try_unwrap(log).ok().unwrap();
    let (pool, cold_tier) = log.close_with_cold();
    drop(cold_tier);
    pool.close().unwrap();
    let pool = MmapPool::open(&pool_path, PoolOptions::default()).unwrap();
    let (log, report) = open_tiered_with(
        pool,
        open_io(&cold_dir),
        store_config(compression),
        OpenOptions { lane_count: 2 },
    )
    .unwrap();
    assert!(report.cold_segments > 0, "{report:?}");
    let cold_after = check(&log, &oracle).unwrap();
    assert!(cold_after > 0);
}

#[test]
fn uring_fill_migrate_read_reopen_uncompressed() {
    fill_and_reopen(
        |dir| UringIo::open(dir, UringConfig::default()).unwrap(),
        Compression::None,
    );
}

#[test]
fn uring_fill_migrate_read_reopen_zstd() {
    fill_and_reopen(
        |dir| UringIo::open(dir, UringConfig::default()).unwrap(),
        Compression::Zstd { level: 3 },
    );
}

#[test]
fn std_io_fill_migrate_read_reopen_zstd() {
    fill_and_reopen(
        |dir| StdIo::open(dir).unwrap(),
        Compression::Zstd { level: 1 },
    );
}

#[test]
fn appends_keep_flowing_while_the_migrator_runs() {
    let dir = tempfile::tempdir().unwrap();
    let pool_path = dir.path().join("pool");
    let log = create_tiered_with(
        mmap_pool(&pool_path, 16 << 20),
        StdIo::open(default_cold_dir(&pool_path)).unwrap(),
        store_config(Compression::None),
        big_config(),
        OpenOptions { lane_count: 2 },
    )
    .unwrap();
    let log = Arc::new(log);
    let id = log.create_stream(b"s").unwrap();
    // Fill most of the pool first, so the migrator starts draining at once.
    let bytes = vec![7u8; 4000];
    for _ in 0..3000 {
        log.append(id, &bytes).unwrap();
    }
    let policy = MigratorPolicy {
        min_idle_ms: u64::MAX,
        interval: Duration::from_millis(1),
        start_occupancy: 0.3,
        stop_occupancy: 0.1,
        ..MigratorPolicy::default()
    };
    let migrator = Migrator::start(Arc::clone(&log), policy);
    // Appends completed while migrations are being counted: the migrator never stops them.
    let mut appends_during = 0u64;
    let started = std::time::Instant::now();
    while migrator.stats().migrations < 8 && started.elapsed() < Duration::from_secs(20) {
        let before = migrator.stats().migrations;
        migrator.append(id, &bytes, Duration::from_secs(5)).unwrap();
        if migrator.stats().migrations > before || before > 0 {
            appends_during += 1;
        }
    }
    let stats = migrator.stop();
    assert!(stats.migrations >= 8, "{stats:?}");
    assert!(appends_during > 0);
    let (first, next) = log.bounds(id).unwrap();
    assert_eq!(first, 0);
    for seq in [0, next / 2, next - 1] {
        assert_eq!(log.read(id, seq).unwrap().payload(), &bytes[..]);
    }
}

#[test]
fn backpressure_waits_then_fails_with_pool_full() {
    let pool = SimPmem::new(1 << 20);
    let dir = tempfile::tempdir().unwrap();
    let log = create_tiered_with(
        pool,
        StdIo::open(dir.path()).unwrap(),
        ColdStoreConfig::default(),
        small_config(),
        OpenOptions { lane_count: 1 },
    )
    .unwrap();
    let id = log.create_stream(b"s").unwrap();
    let bytes = vec![1u8; 2000];
    let error = loop {
        match pstream_tiering::append_with_backpressure(&log, id, &bytes, Duration::from_millis(30))
        {
            Ok(_) => {}
            Err(error) => break error,
        }
    };
    assert!(
        matches!(error, pstream_engine::EngineError::PoolFull { .. }),
        "{error}"
    );
    // One pass frees the pool; the append then goes through.
    let report = Migrator::new(MigratorPolicy::default()).run_once(&log);
    assert!(report.migrated > 0 && report.failed == 0, "{report:?}");
    pstream_tiering::append_with_backpressure(&log, id, &bytes, Duration::from_millis(30)).unwrap();
}

// ----- faults and crashes (SimPmem + FaultyIo) --------------------------------------------

fn small_config() -> LogConfig {
    LogConfig {
        segment_size_bytes: 64 * 1024,
        stream_slot_count: 16,
    }
}

type Faulty = Arc<FaultyIo<StdIo>>;

fn faulty(dir: &Path, seed: u64) -> Faulty {
    Arc::new(FaultyIo::new(StdIo::open(dir).unwrap(), FaultSpec::none(seed)).unwrap())
}

/// A log on a simulated pool with a few sealed segments, and its oracle.
fn populated(
    io: Faulty,
    compression: Compression,
) -> (Log<SimPmem, EngineColdTier<Faulty>>, Oracle) {
    let log = create_tiered_with(
        SimPmem::new(1 << 20),
        io,
        store_config(compression),
        small_config(),
        OpenOptions { lane_count: 1 },
    )
    .unwrap();
    let mut oracle = Oracle::new();
    let ids = [
        log.create_stream(b"x").unwrap(),
        log.create_stream(b"y").unwrap(),
    ];
    for i in 0..160u64 {
        let id = ids[(i % 2) as usize];
        let records = oracle.entry(id).or_default();
        let bytes = payload(id.0, records.len() as u64, 300 + (i as usize * 53) % 1500);
        log.append(id, &bytes).unwrap();
        records.push(bytes);
    }
    (log, oracle)
}

fn first_sealed<P: Pmem, C: ColdTier>(log: &Log<P, C>) -> u32 {
    log.segment_infos()
        .iter()
        .find(|info| info.state == SegmentState::Sealed)
        .map(|info| info.index)
        .unwrap()
}

/// Recovers a crash image with the cold directory `dir` and checks it; returns the number of
/// cold segments recovery indexed.
fn reopen_sim(
    image: Vec<u8>,
    dir: &Path,
    compression: Compression,
    oracle: &Oracle,
) -> Result<u64, String> {
    let (log, _) = open_tiered_with(
        SimPmem::from_image(image),
        StdIo::open(dir).unwrap(),
        store_config(compression),
        OpenOptions { lane_count: 1 },
    )
    .map_err(|e| format!("recovery failed: {e}"))?;
    check(&log, oracle)?;
    Ok(log.tier_stats().cold_segments)
}

#[test]
fn countdown_faults_through_the_engine_lose_nothing() {
    let faults = [
        CountdownFault::Eio,
        CountdownFault::Enospc,
        CountdownFault::ShortWrite,
    ];
    let mut completed_runs = 0;
    for fault in faults {
        for persistent in [false, true] {
            let mut done = false;
            for k in 1..=64u64 {
                let dir = tempfile::tempdir().unwrap();
                let io = faulty(dir.path(), k);
                let (log, oracle) = populated(Arc::clone(&io), Compression::None);
                let segment = first_sealed(&log);
                io.set_spec(FaultSpec::countdown(k, fault, persistent));
                let result = log.migrate_segment(segment);
                let injected = io.counters().injected;
                let context = format!("{fault:?} persistent={persistent} k={k}");
                match &result {
                    Ok(_) => assert_eq!(injected, 0, "{context}: a fault was swallowed"),
                    Err(error) => {
                        assert!(injected > 0, "{context}: {error}");
                        // Not durable on SSD: the persistent-memory copy stays authoritative.
                        let state = log.segment_infos()[segment as usize].state;
                        assert_eq!(state, SegmentState::Sealed, "{context}");
                        assert!(log.tier_stats().migration_failures >= 1);
                        check(&log, &oracle).unwrap_or_else(|e| panic!("{context}: {e}"));
                        if persistent {
                            assert!(log.migrate_segment(segment).is_err(), "{context}");
                        }
                    }
                }
                // Faults gone (a one-time fault may still be armed past a completed
                // migration): a retry writes the whole file again and succeeds.
                io.set_spec(FaultSpec::none(k));
                if result.is_err() {
                    log.migrate_segment(segment)
                        .unwrap_or_else(|e| panic!("{context}: retry failed: {e}"));
                }
                log.reclaim();
                assert!(log.tier_stats().cold_segments >= 1, "{context}");
                check(&log, &oracle).unwrap_or_else(|e| panic!("{context}: {e}"));
                let (pmem, cold) = log.close_with_cold();
                drop(cold);
                let (log, _) = open_tiered_with(
                    pmem,
                    StdIo::open(dir.path()).unwrap(),
                    store_config(Compression::None),
                    OpenOptions { lane_count: 1 },
                )
                .unwrap_or_else(|e| panic!("{context}: reopen: {e}"));
                let cold = check(&log, &oracle).unwrap_or_else(|e| panic!("{context}: {e}"));
                assert!(cold > 0, "{context}");
                if injected == 0 {
                    done = true;
                    completed_runs += 1;
                    break;
                }
            }
            assert!(done, "{fault:?} persistent={persistent}: never completed");
        }
    }
    assert_eq!(completed_runs, 6);
}

/// The last "everything persisted" image at each fence.
fn track_fenced_image(pmem: &SimPmem) -> Arc<Mutex<Vec<u8>>> {
    let image = Arc::new(Mutex::new(pmem.persisted_image()));
    let latest = Arc::clone(&image);
    pmem.set_fence_hook(Some(Box::new(move |point: &CrashPoint<'_>| {
        let mut index = 0;
        point.for_each_image(0, 2, 0, |bytes| {
            index += 1;
            if index == 2 {
                *latest.lock() = bytes.to_vec();
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        });
    })));
    image
}

#[test]
fn crash_at_every_ssd_step_of_a_migration_recovers_everything() {
    for compression in [Compression::None, Compression::Zstd { level: 3 }] {
        let mut completed = false;
        for k in 1..=64u64 {
            let dir = tempfile::tempdir().unwrap();
            let io = faulty(dir.path(), k);
            let (log, oracle) = populated(Arc::clone(&io), compression);
            let fenced = track_fenced_image(log.pmem());
            let segment = first_sealed(&log);
            io.set_spec(FaultSpec::countdown(k, CountdownFault::Crash, false));
            let result = log.migrate_segment(segment);
            let crashed = io.is_crashed();
            assert!(
                !(result.is_ok() && crashed),
                "k={k}: acknowledged after a crash"
            );
            if result.is_ok() {
                io.crash_now();
                completed = true;
            }
            // The process dies here: no close, no unmigrate beyond the last fence.
            let image = fenced.lock().clone();
            log.pmem().set_fence_hook(None);
            drop(log);
            io.materialize_crash(k).unwrap();
            drop(io);
            let cold = reopen_sim(image, dir.path(), compression, &oracle)
                .unwrap_or_else(|e| panic!("{compression:?} crash before SSD op {k}: {e}"));
            if completed {
                assert!(
                    cold >= 1,
                    "a completed migration was not found after the crash"
                );
                break;
            }
        }
        assert!(completed, "{compression:?}: the migration never completed");
    }
}

#[test]
fn crash_at_every_pmem_fence_of_a_migration_recovers_everything() {
    let dir = tempfile::tempdir().unwrap();
    let io = faulty(dir.path(), 1);
    let (log, oracle) = populated(io, Compression::None);
    let images = Arc::new(Mutex::new(0u64));
    let failures: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    {
        let (images, failures) = (Arc::clone(&images), Arc::clone(&failures));
        let cold_dir = dir.path().to_path_buf();
        let oracle = oracle.clone();
        log.pmem()
            .set_fence_hook(Some(Box::new(move |point: &CrashPoint<'_>| {
                // The cold directory's durable state at this instant: every file the store
                // acknowledged was synced (no fence falls inside a cold write), so a copy of
                // the directory is its crash image. Recovery edits it: one copy per image.
                let files: Vec<_> = std::fs::read_dir(&cold_dir)
                    .unwrap()
                    .map(|entry| {
                        let entry = entry.unwrap();
                        (entry.file_name(), std::fs::read(entry.path()).unwrap())
                    })
                    .collect();
                let fence = point.fence_index().unwrap_or(0);
                point.for_each_image(32, 6, fence, |image| {
                    *images.lock() += 1;
                    let copy = tempfile::tempdir().unwrap();
                    for (name, bytes) in &files {
                        std::fs::write(copy.path().join(name), bytes).unwrap();
                    }
                    match reopen_sim(image.to_vec(), copy.path(), Compression::None, &oracle) {
                        Ok(_) => ControlFlow::Continue(()),
                        Err(error) => {
                            failures.lock().push(format!("fence {fence}: {error}"));
                            ControlFlow::Break(())
                        }
                    }
                });
            })));
    }
    for _ in 0..2 {
        let segment = first_sealed(&log);
        log.migrate_segment(segment).unwrap();
        log.reclaim();
    }
    log.pmem().set_fence_hook(None);
    let failures = failures.lock();
    assert!(
        failures.is_empty(),
        "{} violations, first: {}",
        failures.len(),
        failures[0]
    );
    assert!(*images.lock() >= 20, "only {} images", images.lock());
    check(&log, &oracle).unwrap();
}

//! Append throughput while the background migrator demotes sealed segments, against the same
//! appends with no migrator running.
//!
//! Both functions append the same 1 KiB records, alternating over two streams, to a tiered
//! log whose pool lives on `/dev/shm` (a temporary directory elsewhere if there is none) and
//! whose cold files go to a temporary directory (`PSTREAM_BENCH_DIR` if set; it should be
//! on the SSD). One iteration is one batch of [`BATCH_RECORDS`] appends; only the batches are
//! timed.
//!
//! - `idle`: no migrator thread. When the pool reaches [`START_OCCUPANCY`], the clock is
//!   stopped and one migrator pass drains it inline, so the same segments get migrated, just
//!   never while an append is being timed.
//! - `migrating`: a background [`Migrator`] drains continuously: the pool is pre-filled above
//!   its start watermark, and the appends keep it there. The migrations completed during the
//!   timed batches are counted, printed and asserted non-zero, so this function cannot
//!   silently measure an idle log.
//!
//! Between batches (untimed in both) the streams are trimmed to their last
//! [`KEPT_RECORDS`], which are always cold by then: the cold directory stays bounded. In
//! `migrating` the background migrator keeps draining during that pause, so the pool is then
//! refilled (untimed) to the occupancy the batch left, or the pauses would relieve the timed
//! appends of the backpressure they meet in continuous operation.
//!
//! `cargo bench -p pstream-tiering --bench append_while_migrating -- --quick`

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pmem_emul::{MmapPool, PoolOptions};
use pstream_engine::{LogConfig, OpenOptions, StreamId};
use pstream_tiering::{
    append_with_backpressure, create_tiered, occupancy, Migrator, MigratorPolicy, TierConfig,
    TieredLog,
};

const POOL_BYTES: usize = 64 << 20;
const SEGMENT_BYTES: u64 = 1 << 20;
const PAYLOAD_BYTES: usize = 1024;
const BATCH_RECORDS: u64 = 2048;
/// Records kept per stream (older ones are trimmed): twice what the pool holds, so the
/// trimmed records are always cold.
const KEPT_RECORDS: u64 = 64 * 1024;
const START_OCCUPANCY: f64 = 0.5;
const STOP_OCCUPANCY: f64 = 0.4;

struct Fixture {
    log: Arc<TieredLog<MmapPool>>,
    ids: [StreamId; 2],
    payload: Vec<u8>,
    appended: u64,
    _pool_dir: tempfile::TempDir,
    _cold_dir: tempfile::TempDir,
}

fn pool_dir() -> tempfile::TempDir {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(&shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("temporary pool directory")
}

fn cold_dir() -> tempfile::TempDir {
    match std::env::var_os("PSTREAM_BENCH_DIR") {
        Some(dir) => {
            std::fs::create_dir_all(&dir).expect("PSTREAM_BENCH_DIR");
            tempfile::tempdir_in(dir).expect("temporary cold directory")
        }
        None => tempfile::tempdir().expect("temporary cold directory"),
    }
}

fn policy() -> MigratorPolicy {
    MigratorPolicy {
        min_idle_ms: 0,
        start_occupancy: START_OCCUPANCY,
        stop_occupancy: STOP_OCCUPANCY,
        interval: Duration::from_millis(1),
        ..MigratorPolicy::default()
    }
}

impl Fixture {
    fn new() -> Fixture {
        let pool_dir = pool_dir();
        let cold_dir = cold_dir();
        let pool = MmapPool::create(
            pool_dir.path().join("bench.pool"),
            POOL_BYTES,
            PoolOptions::default(),
        )
        .expect("pool");
        let config = LogConfig {
            segment_size_bytes: SEGMENT_BYTES,
            stream_slot_count: 16,
        };
        let log = create_tiered(
            pool,
            cold_dir.path(),
            &TierConfig::default(),
            config,
            OpenOptions::default(),
        )
        .expect("tiered log");
        let ids = [
            log.create_stream(b"a").expect("stream"),
            log.create_stream(b"b").expect("stream"),
        ];
        let payload = (0..PAYLOAD_BYTES)
            .map(|i| (i / 16) as u8 ^ (i as u8).wrapping_mul(31))
            .collect();
        Fixture {
            log: Arc::new(log),
            ids,
            payload,
            appended: 0,
            _pool_dir: pool_dir,
            _cold_dir: cold_dir,
        }
    }

    fn occupancy(&self) -> f64 {
        occupancy(&self.log.segment_infos())
    }

    /// One timed batch of appends.
    fn batch(&mut self) -> Duration {
        let started = Instant::now();
        for _ in 0..BATCH_RECORDS {
            let id = self.ids[(self.appended % 2) as usize];
            append_with_backpressure(&self.log, id, &self.payload, Duration::from_secs(30))
                .expect("append");
            self.appended += 1;
        }
        started.elapsed()
    }

    /// Untimed: keeps the last `KEPT_RECORDS` of each stream.
    fn trim(&self) {
        for id in self.ids {
            let (first, next) = self.log.bounds(id).expect("bounds");
            let keep_from = next.saturating_sub(KEPT_RECORDS);
            if keep_from > first {
                self.log.trim(id, keep_from).expect("trim");
            }
        }
    }

    /// Untimed: appends until the pool is at least `target` full.
    fn fill_to(&mut self, target: f64) {
        while self.occupancy() < target {
            self.batch();
        }
    }
}

fn append_while_migrating(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_while_migrating");
    group.throughput(Throughput::Elements(BATCH_RECORDS));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));

    {
        let mut fixture = Fixture::new();
        let migrator = Migrator::new(policy());
        group.bench_function("idle", |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    timed += fixture.batch();
                    fixture.trim();
                    if fixture.occupancy() >= START_OCCUPANCY {
                        // Clock stopped: drain inline, as the migrator would.
                        migrator.run_once(&fixture.log);
                    }
                }
                timed
            });
        });
        println!(
            "append_while_migrating/idle: {} migrations, all outside the timed batches",
            migrator.stats().migrations
        );
    }

    {
        let mut fixture = Fixture::new();
        fixture.fill_to(START_OCCUPANCY + 0.05);
        let handle = Migrator::start(Arc::clone(&fixture.log), policy());
        let mut during = 0u64;
        let mut samples = 0u64;
        group.bench_function("migrating", |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let before = handle.stats().migrations;
                    timed += fixture.batch();
                    during += handle.stats().migrations - before;
                    // The migrator keeps draining while the clock is stopped (the trim
                    // deletes cold files, which takes ms here): refill to where the batch
                    // left the pool, so that pause does not lower the pressure on the timed
                    // appends.
                    let occupancy = fixture.occupancy();
                    fixture.trim();
                    fixture.fill_to(occupancy);
                }
                samples += 1;
                timed
            });
        });
        let stats = handle.stop();
        println!(
            "append_while_migrating/migrating: {during} migrations completed during timed \
             batches ({} in total, {} failed) over {samples} samples",
            stats.migrations, stats.failures
        );
        assert!(
            during > 0,
            "no migration ran while appends were timed: this measured an idle log"
        );
        assert_eq!(
            stats.failures, 0,
            "migrations failed: {:?}",
            stats.last_error
        );
    }
    group.finish();
}

criterion_group!(benches, append_while_migrating);
criterion_main!(benches);

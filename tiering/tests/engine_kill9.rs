//! kill -9 during heavy migration on real files: a child process (this test binary,
//! re-executed) appends from two threads into a small mmap pool while the background migrator
//! moves every sealed segment to `POOL.cold/`, and reports each acknowledgement on stdout.
//! The parent SIGKILLs it at a random instant, reopens pool and cold directory and checks
//! every acknowledged record, byte for byte, from whichever tier holds it.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pmem_emul::{MmapPool, PoolOptions, SplitMix64};
use pstream_engine::{LogConfig, OpenOptions};
use pstream_tiering::{create_tiered, default_cold_dir, open_tiered, TierConfig, TieredLog};

use common::kill9_child::{append_until_killed, check_acks, parse_ack, payload};
use pstream_crashtest::kill9 as kill9_support;

const CHILD_ENV: &str = "PSTREAM_TIER_KILL9_CHILD_POOL";
const POOL_BYTES: usize = 16 << 20;

fn open_or_create(path: &Path) -> TieredLog<MmapPool> {
    let cold_dir = default_cold_dir(path);
    let tier = TierConfig::default();
    let options = OpenOptions { lane_count: 4 };
    if path.exists() {
        let pool = MmapPool::open(path, PoolOptions::default()).expect("open pool");
        open_tiered(pool, &cold_dir, &tier, options)
            .expect("recover")
            .0
    } else {
        let pool = MmapPool::create(path, POOL_BYTES, PoolOptions::default()).expect("create");
        let config = LogConfig {
            segment_size_bytes: 1 << 20,
            stream_slot_count: 16,
        };
        create_tiered(pool, &cold_dir, &tier, config, options).expect("format")
    }
}

/// Child mode: one appending thread per stream (so each seq is known before the append)
/// until killed; prints `ack <label> <seq>`.
#[test]
fn kill9_tier_child_entry() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    append_until_killed(Arc::new(open_or_create(Path::new(&path))));
}

#[test]
fn kill9_during_migration_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pool_path = dir.path().join("tier.pool");
    let rounds: u64 = std::env::var("PSTREAM_TIER_KILL9_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let mut rng = SplitMix64::new(0x7_1e55);
    let mut total_acks = 0usize;
    let mut cold_total = 0u64;
    for round in 0..rounds {
        let spawned = Instant::now();
        let run_for = Duration::from_millis(300 + rng.below(500));
        let acks: Vec<(u8, u64)> = kill9_support::run_child_until_killed(
            "kill9_tier_child_entry",
            CHILD_ENV,
            &pool_path,
            run_for,
            parse_ack,
        );
        total_acks += acks.len();

        let checked = Instant::now();
        let log = open_or_create(&pool_path);
        let found = check_acks(&log, &acks, round);
        cold_total += found.cold_reads;
        // Every stream is dense up to its tail (acks in flight included): spot checks.
        for (label, id) in &found.by_label {
            let (first, next) = log.bounds(*id).expect("bounds");
            assert_eq!(first, 0);
            for _ in 0..200.min(next) {
                let seq = rng.below(next);
                let record = log.read(*id, seq).expect("dense stream");
                assert_eq!(record.payload(), &payload(*label, seq)[..]);
            }
        }
        println!(
            "round {round}: {} acks, checked in {:?} ({:?} since spawn)",
            acks.len(),
            checked.elapsed(),
            spawned.elapsed()
        );
        let (pool, _cold) = log.close_with_cold();
        pool.close().expect("close");
    }
    println!("tier kill9: {rounds} rounds, {total_acks} acks, {cold_total} read cold");
    assert!(total_acks > 1000, "too few acknowledgements: {total_acks}");
    assert!(
        cold_total > 0,
        "no acknowledged record was read from the cold tier"
    );
}

//! kill -9 in the middle of uploads to the object-store cold tier: a child process (this test
//! binary, re-executed) appends into a small mmap pool while the background migrator uploads
//! every sealed segment to an S3 bucket served by the parent (`common/s3.rs`, 127.0.0.1), and
//! reports each acknowledgement. The parent SIGKILLs it at a random instant — PUTs in flight,
//! objects uploaded whose segment table entry was not flipped yet — then reopens pool and
//! bucket and checks every acknowledged record byte for byte, and that recovery left no
//! object the segment table does not point at.

mod common;
#[path = "common/s3.rs"]
mod s3;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pmem_emul::{MmapPool, PoolOptions, SplitMix64};
use pstream_engine::{Log, LogConfig, OpenOptions};
use pstream_tiering::{open_cold_tier_url, SegmentIo, TierConfig, UrlTieredLog};

use common::kill9_child::{append_until_killed, check_acks, parse_ack};
use pstream_crashtest::kill9 as kill9_support;

const CHILD_ENV: &str = "PSTREAM_OBJECT_KILL9_CHILD_POOL";
const POOL_BYTES: usize = 16 << 20;

fn url_file(pool: &Path) -> PathBuf {
    pool.with_extension("url")
}

fn tier_config() -> TierConfig {
    TierConfig {
        object: s3::test_config(),
        ..TierConfig::default()
    }
}

fn open_or_create(path: &Path) -> UrlTieredLog<MmapPool> {
    let url = std::fs::read_to_string(url_file(path)).expect("url file");
    let cold = open_cold_tier_url(&url, &tier_config()).expect("open cold tier");
    let options = OpenOptions { lane_count: 4 };
    if path.exists() {
        let pool = MmapPool::open(path, PoolOptions::default()).expect("open pool");
        Log::open_with_cold(pool, cold, options).expect("recover").0
    } else {
        let pool = MmapPool::create(path, POOL_BYTES, PoolOptions::default()).expect("create");
        let config = LogConfig {
            segment_size_bytes: 1 << 20,
            stream_slot_count: 16,
        };
        Log::create_with_cold(pool, cold, config, options).expect("format")
    }
}

/// Child mode: one appending thread per stream until killed; prints `ack <label> <seq>`.
#[test]
fn kill9_object_child_entry() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    append_until_killed(Arc::new(open_or_create(Path::new(&path))));
}

#[test]
fn kill9_during_uploads_loses_no_acknowledged_record() {
    let server = s3::S3Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let pool_path = dir.path().join("object.pool");
    std::fs::write(url_file(&pool_path), server.url("kill9")).expect("url file");
    let rounds: u64 = std::env::var("PSTREAM_OBJECT_KILL9_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut rng = SplitMix64::new(0x000b_1ec7);
    let (mut total_acks, mut cold_total) = (0usize, 0u64);
    for round in 0..rounds {
        let run_for = Duration::from_millis(400 + rng.below(600));
        let acks: Vec<(u8, u64)> = kill9_support::run_child_until_killed(
            "kill9_object_child_entry",
            CHILD_ENV,
            &pool_path,
            run_for,
            parse_ack,
        );
        total_acks += acks.len();
        let checked = Instant::now();
        let log = open_or_create(&pool_path);
        let opened = checked.elapsed();
        cold_total += check_acks(&log, &acks, round).cold_reads;
        // Recovery kept exactly the objects the segment table points at.
        let served = log.cold().store().segment_gens().len();
        let objects = log.cold().store().io().list().expect("list");
        assert_eq!(
            objects.len(),
            served,
            "round {round}: orphans left: {objects:?}"
        );
        println!(
            "round {round}: {} acks, {served} objects, opened in {opened:?}, checked in {:?}",
            acks.len(),
            checked.elapsed()
        );
        let (pool, _cold) = log.close_with_cold();
        pool.close().expect("close");
    }
    println!("object kill9: {rounds} rounds, {total_acks} acks, {cold_total} read cold");
    assert!(total_acks > 500, "too few acknowledgements: {total_acks}");
    assert!(
        cold_total > 0,
        "no acknowledged record was read from the object store"
    );
}

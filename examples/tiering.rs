//! Tiering: a small pool whose sealed segments a migrator demotes to checksummed SSD files
//! (`<pool>.cold/`), records read back transparently from the cold tier, and after a
//! restart found again through the segment table.
//!
//! Run: `cargo run --example tiering [DIR]` (default: a temporary directory).

use pstream::engine::{LogConfig, OpenOptions, StreamId};
use pstream::pmem_emul::{MmapPool, PoolOptions};
use pstream::tiering::{
    default_cold_dir, open_cold_tier, Migrator, MigratorPolicy, TierConfig, TieredLog,
};

const RECORDS: u64 = 4000;

fn payload(i: u64) -> Vec<u8> {
    format!("record {i:06} ").repeat(40).into_bytes()
}

fn open(path: &std::path::Path) -> Result<TieredLog<MmapPool>, Box<dyn std::error::Error>> {
    let pool = MmapPool::open(path, PoolOptions::default())?;
    let cold = open_cold_tier(&default_cold_dir(path), &TierConfig::default())?;
    let (log, _report) = TieredLog::open_with_cold(pool, cold, OpenOptions::default())?;
    Ok(log)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let temp = tempfile::tempdir()?;
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| temp.path().to_path_buf(), Into::into);
    let path = dir.join("tiering.pool");
    let cold_dir = default_cold_dir(&path);

    // 16 MiB pool of 256 KiB segments: the data below does not fit without tiering.
    let config = LogConfig {
        segment_size_bytes: 256 << 10,
        ..LogConfig::default()
    };
    let pool = MmapPool::create(&path, 16 << 20, PoolOptions::default())?;
    let cold = open_cold_tier(&cold_dir, &TierConfig::default())?;
    let log = TieredLog::create_with_cold(pool, cold, config, OpenOptions::default())?;
    let stream: StreamId = log.create_stream(b"events")?;

    // Demote every sealed segment, idle or not, whenever a pass runs.
    let migrator = Migrator::new(MigratorPolicy {
        min_idle_ms: 0,
        ..MigratorPolicy::default()
    });
    for i in 0..RECORDS {
        log.append(stream, &payload(i))?;
        if i % 500 == 499 {
            let pass = migrator.run_once(&log);
            println!(
                "after {:>4} records: migrated {} segment(s), {} bytes -> {} stored",
                i + 1,
                pass.migrated,
                pass.bytes_migrated,
                pass.bytes_stored
            );
        }
    }
    let stats = migrator.stats();
    println!("migrations in all: {stats:?}");

    // Record 0 now lives in an SSD file; reading it is transparent.
    assert_eq!(log.read(stream, 0)?.payload(), payload(0));
    let (pool, _cold) = log.close_with_cold();
    pool.close()?;

    // After a restart the segment table points at the cold files again.
    let log = open(&path)?;
    for i in [0, RECORDS / 2, RECORDS - 1] {
        assert_eq!(log.read(stream, i)?.payload(), payload(i));
    }
    println!(
        "reopened: every record readable, cold ones from {}",
        cold_dir.display()
    );
    Ok(())
}

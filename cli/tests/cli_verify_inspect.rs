//! Honest tools (issue 12): `pstream verify` exits 0 clean, 1 corruption found (in the pool
//! or its cold files, each fault with its location), 2 could not run; `pstream inspect`
//! writes nothing to the pool or the cold directory it inspects.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pstream::engine::{LogConfig, OpenOptions};
use pstream::pmem_emul::{MmapPool, PoolOptions};
use pstream::tiering::{create_tiered, Migrator, MigratorPolicy, TierConfig};

const POOL_BYTES: usize = 32 << 20;
/// Where the data region starts in a pool file (the pool header's page).
const POOL_HEADER_BYTES: usize = 4096;

fn pstream(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pstream"))
        .args(args)
        .output()
        .unwrap()
}

/// A pool with hot records and (after one migration pass) cold files in `PATH.cold`.
fn tiered_pool(dir: &Path) -> (PathBuf, PathBuf) {
    let path = dir.join("t.pool");
    let cold_dir = dir.join("t.pool.cold");
    let pool = MmapPool::create(&path, POOL_BYTES, PoolOptions::default()).unwrap();
    let config = LogConfig {
        segment_size_bytes: 1 << 20,
        stream_slot_count: 16,
    };
    let log = create_tiered(
        pool,
        &cold_dir,
        &TierConfig::default(),
        config,
        OpenOptions { lane_count: 1 },
    )
    .unwrap();
    let stream = log.create_stream(b"s").unwrap();
    for i in 0..3000u32 {
        log.append(stream, format!("record {i:08} ").repeat(40).as_bytes())
            .unwrap();
    }
    let pass = Migrator::new(MigratorPolicy {
        min_idle_ms: 0,
        ..MigratorPolicy::default()
    })
    .run_once(&log);
    assert!(pass.migrated > 0, "{pass:?}");
    log.close_with_cold().0.close().unwrap();
    (path, cold_dir)
}

fn json_of(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

fn cold_files(cold_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(cold_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "pcold"))
        .collect();
    files.sort();
    files
}

/// Every file of the pool's directory (pool and cold tier) by path, with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

#[test]
fn verify_checks_the_cold_files_too_and_names_each_fault() {
    let dir = tempfile::tempdir().unwrap();
    let (path, cold_dir) = tiered_pool(dir.path());
    let pool_arg = path.to_str().unwrap();
    let clean = pstream(&["verify", "--pool", pool_arg, "--json"]);
    assert_eq!(clean.status.code(), Some(0), "{clean:?}");
    let report = json_of(&clean);
    assert!(
        report["cold"]["files_checked"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert!(
        report["cold"]["records_checked"].as_u64().unwrap() > 0,
        "{report}"
    );

    // One flipped bit inside the first data block of the first cold file.
    let file = cold_files(&cold_dir)[0].clone();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[64 + 32 + 100] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();
    let corrupt = pstream(&["verify", "--pool", pool_arg, "--json"]);
    assert_eq!(corrupt.status.code(), Some(1), "{corrupt:?}");
    let report = json_of(&corrupt);
    let faults = report["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 1, "{report}");
    assert_eq!(faults[0]["area"], "cold");
    let location = faults[0]["location"].as_str().unwrap();
    let name = file.file_name().unwrap().to_str().unwrap();
    assert!(
        location.contains(name) && location.contains("offset"),
        "{location}"
    );
    // verify changed nothing: the damaged file is still there under its name.
    assert_eq!(std::fs::read(&file).unwrap(), bytes);

    let text = pstream(&["verify", "--pool", pool_arg]);
    assert_eq!(text.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&text.stdout).contains("CORRUPT"));
}

#[test]
fn verify_finds_superblock_damage_and_exits_2_when_it_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = tiered_pool(dir.path());
    let pool_arg = path.to_str().unwrap();
    let good = std::fs::read(&path).unwrap();

    // One damaged copy: a fault (open would repair it), reported with its copy.
    let mut bytes = good.clone();
    bytes[POOL_HEADER_BYTES + 4096 + 30] ^= 0x08;
    std::fs::write(&path, &bytes).unwrap();
    let output = pstream(&["verify", "--pool", pool_arg, "--json"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let report = json_of(&output);
    assert_eq!(
        report["faults"][0]["location"], "superblock copy B",
        "{report}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "verify repaired (wrote)"
    );

    // Both copies damaged: still corruption found (exit 1), not a failure to run.
    bytes[POOL_HEADER_BYTES + 30] ^= 0x08;
    std::fs::write(&path, &bytes).unwrap();
    let output = pstream(&["verify", "--pool", pool_arg]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");

    // Could not run: a missing pool, a locked pool, a missing explicit cold directory.
    std::fs::write(&path, &good).unwrap();
    let missing = dir.path().join("missing.pool");
    let output = pstream(&["verify", "--pool", missing.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let held = MmapPool::open(&path, PoolOptions::default()).unwrap();
    let output = pstream(&["verify", "--pool", pool_arg]);
    assert_eq!(output.status.code(), Some(2), "locked: {output:?}");
    drop(held);
    let no_cold = dir.path().join("no-such-cold");
    let output = pstream(&[
        "verify",
        "--pool",
        pool_arg,
        "--cold-dir",
        no_cold.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");

    // A blank pool is not a log to verify.
    let blank = dir.path().join("blank.pool");
    MmapPool::create(&blank, 1 << 20, PoolOptions::default())
        .unwrap()
        .close()
        .unwrap();
    let output = pstream(&["verify", "--pool", blank.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}

#[test]
fn inspect_writes_nothing_even_where_recovery_would() {
    let dir = tempfile::tempdir().unwrap();
    let (path, cold_dir) = tiered_pool(dir.path());
    // Work recovery would do: repair superblock copy A, remove a temp file.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[POOL_HEADER_BYTES + 40] ^= 0x02;
    std::fs::write(&path, &bytes).unwrap();
    std::fs::write(cold_dir.join("seg-00000000000000ff.pcold.tmp"), b"partial").unwrap();
    let before = snapshot(dir.path());
    let output = pstream(&["inspect", "--pool", path.to_str().unwrap(), "--json"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let report = json_of(&output);
    assert!(report["cold_segments"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(
        snapshot(dir.path()),
        before,
        "inspect wrote to the pool or its cold tier"
    );
}

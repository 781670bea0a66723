//! The mmap pool backend: a round trip through a real file, and one test per way a pool
//! file can be wrong, each expecting its typed error.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pmem_emul::{
    Durability, FlushInstruction, Guarantee, MmapPool, Pmem, PmemError, PoolOptions,
    POOL_HEADER_BYTES, POOL_MAGIC, POOL_VERSION,
};

const POOL_BYTES: usize = 1 << 20;
/// Child mode of this test binary: `<mode>` then `\t<pool path>`; see [`child_entry`].
const CHILD_ENV: &str = "PMEM_EMUL_TEST_CHILD";
const CHILD_READY: &str = "PMEM_EMUL_CHILD_READY";

fn page_size_bytes() -> usize {
    // SAFETY: sysconf has no preconditions.
    let value = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(value).unwrap()
}

fn opts() -> PoolOptions {
    PoolOptions::default()
}

fn new_pool(dir: &tempfile::TempDir) -> (PathBuf, MmapPool) {
    let path = dir.path().join("test.pool");
    let pool = MmapPool::create(&path, POOL_BYTES, opts()).unwrap();
    (path, pool)
}

/// A closed, valid pool file.
fn pool_file(dir: &tempfile::TempDir) -> PathBuf {
    let (path, pool) = new_pool(dir);
    pool.close().unwrap();
    path
}

fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    let file = OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, offset).unwrap();
}

/// Recomputes the header checksum (layout in `pool_header.rs`: CRC-32 at byte 32 over the
/// rest of the header page).
fn reseal(path: &Path) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut page = vec![0u8; POOL_HEADER_BYTES];
    file.read_exact_at(&mut page, 0).unwrap();
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&page[..32]);
    hasher.update(&page[36..]);
    file.write_all_at(&hasher.finalize().to_le_bytes(), 32)
        .unwrap();
}

#[test]
fn create_write_persist_close_reopen_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (path, pool) = new_pool(&dir);
    assert_eq!(pool.len_bytes(), POOL_BYTES);
    assert_eq!(pool.path(), path);
    assert_eq!(pool.durability(), Durability::Process);
    assert!(pool.flush_instruction().is_supported());
    let expected_guarantee = if pool.is_dax() {
        Guarantee::PowerFailDax
    } else {
        Guarantee::ProcessCrash
    };
    assert_eq!(pool.guarantee(), expected_guarantee);
    assert_eq!(
        File::open(&path).unwrap().metadata().unwrap().len(),
        (POOL_HEADER_BYTES + POOL_BYTES) as u64
    );
    // A fresh pool reads as zeros.
    assert!(pool.read(0, POOL_BYTES).iter().all(|&b| b == 0));

    let payload: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    pool.write(100, &payload);
    pool.write_u64(16_384, 0xDEAD_BEEF_0123_4567);
    pool.write(POOL_BYTES - 3, b"end");
    pool.persist(100, payload.len());
    pool.flush(16_384, 8);
    pool.persist(POOL_BYTES - 3, 3);
    assert_eq!(pool.read(100, payload.len()), &payload[..]);
    assert_eq!(pool.read_u64(16_384), 0xDEAD_BEEF_0123_4567);
    pool.close().unwrap();

    // On media the word is little-endian, after the header page.
    let file = File::open(&path).unwrap();
    let mut word = [0u8; 8];
    file.read_exact_at(&mut word, (POOL_HEADER_BYTES + 16_384) as u64)
        .unwrap();
    assert_eq!(word, 0xDEAD_BEEF_0123_4567u64.to_le_bytes());

    let pool = MmapPool::open(&path, opts()).unwrap();
    assert_eq!(pool.len_bytes(), POOL_BYTES);
    assert_eq!(pool.read(100, payload.len()), &payload[..]);
    assert_eq!(pool.read_u64(16_384), 0xDEAD_BEEF_0123_4567);
    assert_eq!(pool.read(POOL_BYTES - 3, 3), b"end");
    assert!(pool.read(0, 100).iter().all(|&b| b == 0));
    // Dropping (instead of close) unlocks as well.
    drop(pool);
    let pool = MmapPool::open(&path, opts()).unwrap();
    assert_eq!(pool.read(POOL_BYTES - 3, 3), b"end");
}

#[test]
fn pool_is_usable_from_several_threads() {
    let dir = tempfile::tempdir().unwrap();
    let (_path, pool) = new_pool(&dir);
    let pool = std::sync::Arc::new(pool);
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                let base = usize::from(t) * 64 * 1024;
                for i in 0..512 {
                    let offset = base + i * 64;
                    pool.write(offset, &[t; 56]);
                    pool.write_u64(offset + 56, i as u64);
                    pool.persist(offset, 64);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    for t in 0..4u8 {
        let base = usize::from(t) * 64 * 1024;
        for i in 0..512 {
            assert_eq!(pool.read(base + i * 64, 56), &[t; 56]);
            assert_eq!(pool.read_u64(base + i * 64 + 56), i as u64);
        }
    }
}

#[test]
#[should_panic(expected = "out of range")]
fn out_of_range_access_panics() {
    let dir = tempfile::tempdir().unwrap();
    let (_path, pool) = new_pool(&dir);
    pool.write(POOL_BYTES - 1, b"xy");
}

#[test]
#[should_panic(expected = "unaligned")]
fn unaligned_u64_panics() {
    let dir = tempfile::tempdir().unwrap();
    let (_path, pool) = new_pool(&dir);
    pool.write_u64(4, 1);
}

#[test]
fn write_nt_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let (path, pool) = new_pool(&dir);
    let mut model = vec![0u8; POOL_BYTES];
    let mut seed = 0x1234_5678u32;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    let mut shapes = vec![
        (0, 64),
        (1, 1),
        (63, 2),
        (64, 4096),
        (100, 1000),
        (8191, 70_000),
    ];
    for _ in 0..200 {
        let len = (next() % 9000) as usize;
        shapes.push(((next() as usize) % (POOL_BYTES - len), len));
    }
    for (offset, len) in shapes {
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        pool.write_nt(offset, &data);
        model[offset..offset + len].copy_from_slice(&data);
    }
    pool.fence();
    pool.zero_nt(4096, 10_000);
    pool.fence();
    model[4096..14_096].fill(0);
    assert!(pool.read(0, POOL_BYTES) == &model[..]);
    pool.close().unwrap();
    let pool = MmapPool::open(&path, opts()).unwrap();
    assert!(pool.read(0, POOL_BYTES) == &model[..]);
}

#[test]
fn power_durability_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("power.pool");
    let power = PoolOptions {
        durability: Durability::Power,
        ..PoolOptions::default()
    };
    let pool = MmapPool::create(&path, POOL_BYTES, power).unwrap();
    assert_eq!(pool.durability(), Durability::Power);
    let expected_guarantee = if pool.is_dax() {
        Guarantee::PowerFailDax
    } else {
        Guarantee::PowerFailMsync
    };
    assert_eq!(pool.guarantee(), expected_guarantee);
    // Ranges that straddle page boundaries and the end of the pool.
    pool.write(4090, &[1; 20]);
    pool.persist(4090, 20);
    pool.write(POOL_BYTES - 10, &[2; 10]);
    pool.persist(POOL_BYTES - 10, 10);
    pool.write_nt(3 * 4096 + 5, &[3; 9000]);
    pool.fence();
    pool.write_u64(0, 42);
    pool.persist(0, 8);
    drop(pool);
    let pool = MmapPool::open(&path, power).unwrap();
    assert_eq!(pool.read(4090, 20), &[1; 20]);
    assert_eq!(pool.read(POOL_BYTES - 10, 10), &[2; 10]);
    assert_eq!(pool.read(3 * 4096 + 5, 9000), &[3; 9000][..]);
    assert_eq!(pool.read_u64(0), 42);
    pool.close().unwrap();
}

#[test]
fn emulated_mapping_when_dax_is_not_tried() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nodax.pool");
    let no_dax = PoolOptions {
        try_dax: false,
        ..PoolOptions::default()
    };
    let pool = MmapPool::create(&path, POOL_BYTES, no_dax).unwrap();
    assert!(!pool.is_dax());
    assert_eq!(pool.guarantee(), Guarantee::ProcessCrash);
}

#[test]
fn flush_instruction_detection_matches_cpuinfo() {
    let Ok(cpuinfo) = std::fs::read_to_string("/proc/cpuinfo") else {
        eprintln!("note: no /proc/cpuinfo; detection not cross-checked");
        return;
    };
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find(|line| line.starts_with("flags"))
        .map(|line| line.split_whitespace().collect())
        .unwrap_or_default();
    let detected = FlushInstruction::detect();
    if flags.contains(&"clwb") {
        assert_eq!(detected, FlushInstruction::Clwb);
    } else if flags.contains(&"clflushopt") {
        assert_eq!(detected, FlushInstruction::Clflushopt);
    } else if flags.contains(&"clflush") {
        assert_eq!(detected, FlushInstruction::Clflush);
    }
    assert_eq!(detected.as_str(), detected.to_string());
}

#[test]
fn create_refuses_bad_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let page = page_size_bytes();
    let path = dir.path().join("size.pool");
    for (size, what) in [
        (0, "zero"),
        (100, "below a page"),
        (page - 1, "below a page"),
    ] {
        match MmapPool::create(&path, size, opts()) {
            Err(
                error @ PmemError::TooSmall {
                    data_len_bytes,
                    min_bytes,
                    ..
                },
            ) => {
                assert_eq!(data_len_bytes, size as u64, "{what}");
                assert_eq!(min_bytes, page as u64);
                assert!(error.to_string().contains(path.to_str().unwrap()));
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    for size in [page + 1, 3 * page / 2, 5 * page + 8] {
        let result = MmapPool::create(&path, size, opts());
        assert!(
            matches!(result, Err(PmemError::NotPageMultiple { .. })),
            "{size}: {result:?}"
        );
    }
    assert!(!path.exists(), "a refused create leaves no file");
}

#[test]
fn create_refuses_existing_file_and_missing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = pool_file(&dir);
    let result = MmapPool::create(&path, POOL_BYTES, opts());
    assert!(
        matches!(result, Err(PmemError::AlreadyExists { .. })),
        "{result:?}"
    );
    MmapPool::open(&path, opts()).unwrap(); // untouched
    let orphan = dir.path().join("no-such-dir").join("x.pool");
    let result = MmapPool::create(&orphan, POOL_BYTES, opts());
    assert!(
        matches!(result, Err(PmemError::PathMissing { .. })),
        "{result:?}"
    );
}

#[test]
fn open_missing_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.pool");
    match MmapPool::open(&path, opts()) {
        Err(error @ PmemError::PathMissing { .. }) => {
            assert_eq!(error.path(), path);
            assert!(error.to_string().contains("absent.pool"), "{error}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn open_directory() {
    let dir = tempfile::tempdir().unwrap();
    let result = MmapPool::open(dir.path(), opts());
    assert!(
        matches!(
            result,
            Err(PmemError::NotRegularFile {
                kind: "directory",
                ..
            })
        ),
        "{result:?}"
    );
}

#[test]
fn open_file_too_small_for_a_header() {
    let dir = tempfile::tempdir().unwrap();
    for len in [0usize, 8, POOL_HEADER_BYTES - 1] {
        let path = dir.path().join(format!("small-{len}.pool"));
        std::fs::write(&path, vec![0u8; len]).unwrap();
        match MmapPool::open(&path, opts()) {
            Err(PmemError::Truncated {
                expected_file_bytes,
                actual_file_bytes,
                ..
            }) => {
                assert_eq!(expected_file_bytes, POOL_HEADER_BYTES as u64);
                assert_eq!(actual_file_bytes, len as u64);
            }
            other => panic!("{len}: {other:?}"),
        }
    }
}

#[test]
fn open_header_recording_too_small_or_unaligned_region() {
    let dir = tempfile::tempdir().unwrap();
    let path = pool_file(&dir);
    patch(&path, 16, &0u64.to_le_bytes());
    reseal(&path);
    let result = MmapPool::open(&path, opts());
    assert!(
        matches!(
            result,
            Err(PmemError::TooSmall {
                data_len_bytes: 0,
                ..
            })
        ),
        "{result:?}"
    );
    patch(&path, 16, &(POOL_BYTES as u64 + 1).to_le_bytes());
    reseal(&path);
    let result = MmapPool::open(&path, opts());
    assert!(
        matches!(result, Err(PmemError::NotPageMultiple { .. })),
        "{result:?}"
    );
}

#[test]
fn open_wrong_magic() {
    let dir = tempfile::tempdir().unwrap();
    let path = pool_file(&dir);
    patch(&path, 0, b"SQLite f");
    match MmapPool::open(&path, opts()) {
        Err(
            error @ PmemError::WrongMagic {
                found, expected, ..
            },
        ) => {
            assert_eq!(&found, b"SQLite f");
            assert_eq!(expected, POOL_MAGIC);
            assert!(error.to_string().contains(path.to_str().unwrap()));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn open_wrong_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = pool_file(&dir);
    // A future version: recognized as such even though its checksum is not ours.
    patch(&path, 8, &(POOL_VERSION + 1).to_le_bytes());
    let result = MmapPool::open(&path, opts());
    assert!(
        matches!(
            result,
            Err(PmemError::UnsupportedVersion {
                found: 2,
                supported: 1,
                ..
            })
        ),
        "{result:?}"
    );
    // And with a correct checksum.
    reseal(&path);
    let result = MmapPool::open(&path, opts());
    assert!(
        matches!(result, Err(PmemError::UnsupportedVersion { found: 2, .. })),
        "{result:?}"
    );
}

#[test]
fn open_bad_header_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let path = pool_file(&dir);
    // Flip one bit of the data length: still a plausible value, caught only by the CRC.
    let file = File::open(&path).unwrap();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, 18).unwrap();
    patch(&path, 18, &[byte[0] ^ 0x01]);
    let result = MmapPool::open(&path, opts());
    assert!(
        matches!(result, Err(PmemError::HeaderChecksum { .. })),
        "{result:?}"
    );
    // A flipped bit in the reserved part of the header page is caught as well.
    let path = dir.path().join("second.pool");
    MmapPool::create(&path, POOL_BYTES, opts())
        .unwrap()
        .close()
        .unwrap();
    patch(&path, 4000, &[0x40]);
    let result = MmapPool::open(&path, opts());
    assert!(
        matches!(result, Err(PmemError::HeaderChecksum { .. })),
        "{result:?}"
    );
}

#[test]
fn open_truncated_or_extended_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = pool_file(&dir);
    let full_bytes = (POOL_HEADER_BYTES + POOL_BYTES) as u64;
    for actual_bytes in [
        full_bytes - 4096,
        POOL_HEADER_BYTES as u64,
        full_bytes - 1,
        full_bytes + 4096,
    ] {
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(actual_bytes)
            .unwrap();
        match MmapPool::open(&path, opts()) {
            Err(
                error @ PmemError::Truncated {
                    expected_file_bytes,
                    actual_file_bytes,
                    ..
                },
            ) => {
                assert_eq!(expected_file_bytes, full_bytes);
                assert_eq!(actual_file_bytes, actual_bytes);
                assert!(error.to_string().contains(&actual_bytes.to_string()));
            }
            other => panic!("{actual_bytes}: {other:?}"),
        }
    }
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(full_bytes)
        .unwrap();
    MmapPool::open(&path, opts()).unwrap();
}

#[test]
fn open_read_only_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = pool_file(&dir);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    let writable = OpenOptions::new().write(true).open(&path).is_ok();
    if !writable {
        let result = MmapPool::open(&path, opts());
        assert!(
            matches!(result, Err(PmemError::ReadOnly { .. })),
            "{result:?}"
        );
        return;
    }
    // Root ignores mode bits. The immutable attribute binds root too: use it if we may.
    eprintln!("note: running as root, mode 0444 is not enforced; trying chattr +i instead");
    let immutable = Command::new("chattr")
        .arg("+i")
        .arg(&path)
        .status()
        .is_ok_and(|s| s.success());
    if !immutable {
        eprintln!("note: chattr +i unavailable here; read-only open not checked");
        return;
    }
    let result = MmapPool::open(&path, opts());
    let unset = Command::new("chattr").arg("-i").arg(&path).status();
    assert!(
        unset.is_ok_and(|s| s.success()),
        "cannot clear the immutable flag of {path:?}"
    );
    match result {
        Err(error @ PmemError::ReadOnly { .. }) => {
            assert!(error.to_string().contains(path.to_str().unwrap()));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn already_open_in_this_process() {
    let dir = tempfile::tempdir().unwrap();
    let (path, pool) = new_pool(&dir);
    match MmapPool::open(&path, opts()) {
        Err(error @ PmemError::AlreadyOpen { .. }) => {
            assert!(error.to_string().contains(path.to_str().unwrap()));
        }
        other => panic!("{other:?}"),
    }
    pool.close().unwrap();
    let pool = MmapPool::open(&path, opts()).unwrap();
    let result = MmapPool::open(&path, opts());
    assert!(
        matches!(result, Err(PmemError::AlreadyOpen { .. })),
        "{result:?}"
    );
    drop(pool);
    MmapPool::open(&path, opts()).unwrap();
}

/// Runs this test binary again as a child in `mode` on `path` (see [`child_entry`]).
fn spawn_child(mode: &str, path: &Path, extra_env: &[(&str, &str)]) -> std::process::Child {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["child_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{mode}\t{}", path.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (key, value) in extra_env {
        command.env(key, value);
    }
    command.spawn().unwrap()
}

/// Waits (at most a minute) for the child's ready line and returns what followed the marker.
/// A reader thread drains the child's stdout to the end, so the child never blocks on it.
fn wait_ready(child: &mut std::process::Child) -> String {
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // The harness may have printed "test child_entry ... " on the same line.
            if let Some((_, rest)) = line.split_once(CHILD_READY) {
                let _ = sender.send(rest.trim().to_owned());
            }
        }
    });
    match receiver.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(report) => report,
        Err(error) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child did not report ready: {error}");
        }
    }
}

/// Prints a line for the parent straight to stdout (the test harness captures `println!`).
fn tell_parent(report: &str) {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{CHILD_READY} {report}").unwrap();
    stdout.flush().unwrap();
}

#[test]
fn already_open_in_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = pool_file(&dir);
    let mut child = spawn_child("hold", &path, &[]);
    assert_eq!(wait_ready(&mut child), "held");
    let result = MmapPool::open(&path, opts());
    // Let the child go before asserting, so a failure does not leave it waiting.
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    match result {
        Err(error @ PmemError::AlreadyOpen { .. }) => {
            assert!(error.to_string().contains("already open"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert!(status.success());
    // The child wrote through its pool before closing; the lock is gone.
    let pool = MmapPool::open(&path, opts()).unwrap();
    assert_eq!(pool.read(0, 5), b"child");
}

#[test]
fn flush_override_from_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = pool_file(&dir);
    for instruction in [
        FlushInstruction::Clwb,
        FlushInstruction::Clflushopt,
        FlushInstruction::Clflush,
    ] {
        if !instruction.is_supported() {
            continue;
        }
        let mut child = spawn_child("flush", &path, &[("PSTREAM_FLUSH", instruction.as_str())]);
        assert_eq!(wait_ready(&mut child), instruction.as_str());
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success());
    }
    let mut child = spawn_child("flush", &path, &[("PSTREAM_FLUSH", "clbogus")]);
    assert_eq!(wait_ready(&mut child), "error FlushOverride");
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
}

/// Not a test of its own: the child side of the multi-process tests. Without the
/// environment variable it does nothing.
#[test]
fn child_entry() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (mode, path) = spec.split_once('\t').unwrap();
    let report = match (mode, MmapPool::open(path, opts())) {
        ("hold", Ok(pool)) => {
            pool.write(0, b"child");
            pool.persist(0, 5);
            tell_parent("held");
            // Hold the pool until the parent closes our stdin.
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            pool.close().unwrap();
            return;
        }
        ("flush", Ok(pool)) => pool.flush_instruction().as_str().to_owned(),
        ("flush", Err(PmemError::FlushOverride { .. })) => "error FlushOverride".to_owned(),
        (_, result) => panic!("child {mode}: {result:?}"),
    };
    tell_parent(&report);
}

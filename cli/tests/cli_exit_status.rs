//! Exit statuses of `pstream`: 0 success, 1 a finding (here: `verify` on a corrupt pool),
//! 2 a usage or environment error; logs without colour codes when stderr is not a terminal.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::path::Path;
use std::process::{Command, Output};

use pstream::engine::{Log, LogConfig, OpenOptions};
use pstream::pmem_emul::{MmapPool, PoolOptions};

const MARKER: &[u8] = b"pstream-exit-status-marker-payload";

fn pstream(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pstream"))
        .args(args)
        .output()
        .unwrap()
}

fn write_pool(path: &Path) {
    let pool = MmapPool::create(path, 32 << 20, PoolOptions::default()).unwrap();
    let log = Log::create(pool, LogConfig::default(), OpenOptions::default()).unwrap();
    let stream = log.create_stream(b"s").unwrap();
    // 6 MiB of records: the first segment is sealed (verify checks every record of it).
    let mut payload = MARKER.to_vec();
    payload.resize(1024, b'.');
    for _ in 0..6 * 1024 {
        log.append(stream, &payload).unwrap();
    }
    log.close().close().unwrap();
}

#[test]
fn verify_exits_0_on_a_clean_pool_and_1_on_a_corrupt_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.pool");
    write_pool(&path);
    let path_arg = path.to_str().unwrap();
    let clean = pstream(&["verify", "--pool", path_arg]);
    assert_eq!(clean.status.code(), Some(0), "{clean:?}");

    // Flip one byte inside the first record's payload: its checksum no longer matches.
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(MARKER.len())
        .position(|window| window == MARKER)
        .unwrap();
    bytes[at + 3] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    let corrupt = pstream(&["verify", "--pool", path_arg]);
    assert_eq!(corrupt.status.code(), Some(1), "{corrupt:?}");
    let stdout = String::from_utf8_lossy(&corrupt.stdout);
    assert!(stdout.contains("CORRUPT"), "{stdout}");
}

#[test]
fn usage_and_environment_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pool");
    let cases: [&[&str]; 5] = [
        &["verify", "--pool", missing.to_str().unwrap()],
        &["no-such-command"],
        &["ceiling", "--pool-mib=0"],
        &["bench", "tier", "--pool-mib", "8"],
        &["bench", "tier", "--size", "268435456"],
    ];
    for args in cases {
        let output = pstream(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.is_empty(), "{args:?}: no message");
    }
    let output = pstream(&["bench", "tier", "--pool-mib", "8"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--pool-mib 8"), "{stderr}");
}

#[test]
fn logs_carry_no_colour_codes_when_redirected() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_pstream"))
        .args([
            "ceiling",
            "--seconds",
            "0.05",
            "--pool-mib",
            "4",
            "--json",
            "--dir",
        ])
        .arg(dir.path())
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("INFO") || stderr.contains("DEBUG"),
        "no logs: {stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in redirected logs: {stderr:?}"
    );
}

#[test]
fn completions_are_printed_for_each_shell() {
    for (shell, needle) in [
        ("bash", "_pstream()"),
        ("zsh", "#compdef pstream"),
        ("fish", "complete -c pstream"),
    ] {
        let output = pstream(&["completions", shell]);
        assert_eq!(output.status.code(), Some(0), "{shell}: {output:?}");
        let script = String::from_utf8_lossy(&output.stdout);
        assert!(script.contains(needle), "{shell}: {script}");
        for command in ["demo", "verify", "crashtest", "inspect"] {
            assert!(script.contains(command), "{shell} lacks {command}");
        }
    }
    assert_eq!(pstream(&["completions", "cmd.exe"]).status.code(), Some(2));
}

#[test]
fn bench_append_reports_tail_percentiles_from_its_histogram() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_pstream"))
        .args([
            "bench",
            "append",
            "--seconds",
            "0.3",
            "--ceiling-seconds",
            "0.05",
            "--pool-mib",
            "32",
            "--json",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let latency = &report["latency_ns"];
    let get = |key: &str| latency[key].as_u64().unwrap();
    assert!(get("samples") > 0, "{latency}");
    assert!(get("p50") > 0, "{latency}");
    assert!(get("p50") <= get("p99"), "{latency}");
    assert!(get("p99") <= get("p999"), "{latency}");
    assert!(get("p999") <= get("p9999"), "{latency}");
    assert!(get("p9999") <= get("max"), "{latency}");
}

//! `pstream demo` end to end: it creates an agent store, and a second run reopens it with the
//! first run's data in place; with `--json` the last stdout line is one JSON object.

use std::process::Command;

fn demo(dir: &std::path::Path, json: bool) -> (String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pstream"));
    command
        .args(["demo", "--pool-mib", "64", "--burst", "2000", "--dir"])
        .arg(dir);
    if json {
        command.arg("--json");
    }
    let output = command.output().expect("run pstream demo");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "pstream demo failed:\n{stdout}\n{stderr}"
    );
    (stdout, stderr)
}

#[test]
fn demo_runs_twice_and_reports_json() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (first, _) = demo(dir.path(), false);
    assert!(first.contains("new store, run 1"), "{first}");
    assert!(first.contains("reopen+check"), "{first}");
    assert!(first.contains("tiering "), "{first}");
    assert!(first.contains("segments to SSD"), "{first}");

    let (second, _) = demo(dir.path(), true);
    let last = second.lines().last().expect("a JSON line");
    let report: serde_json::Value = serde_json::from_str(last).expect("last line is JSON");
    assert_eq!(report["run"], 2);
    assert_eq!(report["created"], false);
    assert_eq!(report["verified"], true);
    assert_eq!(report["bundles"], 8);
    assert_eq!(report["phases"].as_array().map(Vec::len), Some(6));
    // The age-out pass demoted data, and the checks after the restart read it from SSD.
    assert!(report["bytes_migrated"].as_u64() > Some(0), "{last}");
    assert!(
        report["cold_reads_after_restart"].as_u64() > Some(0),
        "{last}"
    );
    // Live-byte statistics are exact (they once wrapped below zero under migrations).
    let pool_bytes = 64u64 << 20;
    assert!(
        report["hot_bytes_before_restart"].as_u64() < Some(pool_bytes),
        "{last}"
    );
    assert!(report["hot_bytes"].as_u64() < Some(pool_bytes), "{last}");
    assert_eq!(
        second.lines().count(),
        1,
        "JSON mode prints only the JSON line: {second}"
    );

    let (third, _) = demo(dir.path(), false);
    assert!(third.contains("reopened store, run 3"), "{third}");
    assert!(third.contains("found 7 users, 8 bundles"), "{third}");
}

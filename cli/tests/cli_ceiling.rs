//! `pstream ceiling` end to end: the binary runs, prints its JSON report as the last line of
//! stdout, cleans up its pool file, and fails with a readable error on bad input.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::process::Command;

fn pstream() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pstream"))
}

#[test]
fn ceiling_json_reports_positive_figures() {
    let dir = tempfile::tempdir().unwrap();
    let output = pstream()
        .args([
            "ceiling",
            "--seconds",
            "0.2",
            "--json",
            "--pool-mib",
            "16",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "pstream ceiling failed: {stderr}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let last_line = stdout.lines().last().unwrap();
    let report: serde_json::Value = serde_json::from_str(last_line).unwrap();

    assert_eq!(report["payload_bytes"].as_u64(), Some(64));
    for field in [
        "copy_flush_fence_ops_per_sec",
        "nt_fence_ops_per_sec",
        "best_ops_per_sec",
        "bulk_4k_copy_flush_mib_per_sec",
        "ack_floor_ops_per_sec",
        "ack_floor_record_bytes",
        "seconds",
    ] {
        let value = report[field].as_f64();
        assert!(
            value.is_some_and(|v| v > 0.0),
            "{field} = {:?} in {last_line}",
            report[field]
        );
    }
    let best = report["best_ops_per_sec"].as_f64().unwrap();
    assert!(best >= report["nt_fence_ops_per_sec"].as_f64().unwrap());
    assert!(best >= report["copy_flush_fence_ops_per_sec"].as_f64().unwrap());
    let flush = report["flush_instruction"].as_str().unwrap();
    assert!(
        ["clwb", "clflushopt", "clflush", "msync"].contains(&flush),
        "{flush}"
    );
    assert!(report["dax"].is_boolean());
    assert!(!report["guarantee"].as_str().unwrap().is_empty());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(leftovers.is_empty(), "pool file left behind: {leftovers:?}");
}

#[test]
fn ceiling_table_output() {
    let dir = tempfile::tempdir().unwrap();
    let output = pstream()
        .args([
            "ceiling",
            "--seconds",
            "0.05",
            "--size",
            "200",
            "--pool-mib",
            "4",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("copy + flush + fence"), "{stdout}");
    assert!(stdout.contains("200 B payloads"), "{stdout}");
}

#[test]
fn ceiling_errors_are_reported_with_context() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let output = pstream()
        .args(["ceiling", "--seconds", "0.1", "--json", "--dir"])
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("pstream: error:"), "{stderr}");
    assert!(stderr.contains("no-such-dir"), "{stderr}");
    assert!(output.stdout.is_empty());

    for arg in ["--size=0", "--seconds=-1", "--pool-mib=0"] {
        let output = pstream()
            .args(["ceiling", arg, "--dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(!output.status.success(), "{arg} accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("pstream: error:"), "{arg}: {stderr}");
    }
}

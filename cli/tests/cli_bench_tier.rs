//! `pstream bench tier`: sized by `--pool-mib`; a human table without `--json`, one JSON
//! object as the last line with it; its temporary pool and cold files are removed.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::process::Command;

fn bench_tier(dir: &std::path::Path, json: bool) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pstream"));
    command
        .args(["bench", "tier", "--pool-mib", "16", "--segment-mib", "1"])
        .args(["--seconds", "0.2", "--dir"])
        .arg(dir.join("pool"))
        .arg("--ssd-dir")
        .arg(dir.join("ssd"));
    if json {
        command.arg("--json");
    }
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn bench_tier_prints_a_table_or_json_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let table = bench_tier(dir.path(), false);
    assert!(table.starts_with("bench tier: 16 MiB pool"), "{table}");
    for row in [
        "migration MiB/s",
        "cold reads MiB/s",
        "appends/s while migrating",
    ] {
        assert!(table.contains(row), "{row} missing: {table}");
    }
    assert!(!table.contains('{'), "JSON in the table output: {table}");

    let json = bench_tier(dir.path(), true);
    let report: serde_json::Value = serde_json::from_str(json.lines().last().unwrap()).unwrap();
    assert_eq!(report["bench"], "tier");
    assert_eq!(report["pool_bytes"].as_u64(), Some(16 << 20));
    assert!(
        report["migrate_mib_per_sec"].as_f64().unwrap() > 0.0,
        "{report}"
    );

    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("pool"))
        .unwrap()
        .chain(std::fs::read_dir(dir.path().join("ssd")).unwrap())
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

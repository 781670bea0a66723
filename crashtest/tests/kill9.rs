//! kill -9 rounds through the library: this test binary re-executes itself as the child.

use std::process::Command;

use pstream_crashtest::kill::{run_child, run_kill_rounds, KillFiles};

const CHILD_ENV: &str = "PSTREAM_CRASHTEST_KILL_CHILD";

/// Child mode (only when re-executed by the parent below).
#[test]
fn kill9_child_entry() {
    let Ok(pool) = std::env::var(CHILD_ENV) else {
        return;
    };
    if let Err(error) = run_child(&KillFiles::for_pool(std::path::Path::new(&pool))) {
        eprintln!("child failed: {error}");
        std::process::exit(2);
    }
}

#[test]
fn kill9_rounds_lose_no_acknowledgement() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = KillFiles::for_pool(&dir.path().join("kill.pool"));
    let exe = std::env::current_exe().expect("test binary");
    let child = |files: &KillFiles| {
        let mut command = Command::new(&exe);
        command
            .args([
                "--exact",
                "kill9_child_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &files.pool);
        command
    };
    let report = run_kill_rounds(&files, 4, 7, &child, &mut |_| {}).expect("rounds run");
    println!("{report:?}");
    assert_eq!(report.violation, None);
    assert_eq!(report.rounds, 4);
    assert!(report.acks_checked > 0, "the child acknowledged nothing");
    assert!(
        report.cold_segments_checked > 0,
        "no cold segment was committed"
    );
}

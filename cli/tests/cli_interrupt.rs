//! Ctrl-C (SIGINT) and SIGTERM in the middle of a benchmark: the temporary pool files are
//! removed and `pstream` exits with status 130.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn interrupt_bench(args: &[&str], signal: libc::c_int) {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_pstream"))
        .args(args)
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the benchmark's pool file exists, then a little longer.
    let started = Instant::now();
    while !entries(dir.path())
        .iter()
        .any(|name| name.ends_with(".pool"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no pool file appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    let sent = unsafe { libc::kill(pid, signal) };
    assert_eq!(sent, 0);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted: removed"), "{stderr}");
    assert!(
        entries(dir.path()).is_empty(),
        "left behind: {:?}",
        entries(dir.path())
    );
}

#[test]
fn ctrl_c_removes_the_append_bench_pool() {
    interrupt_bench(
        &[
            "bench",
            "append",
            "--seconds",
            "60",
            "--ceiling-seconds",
            "0",
            "--pool-mib",
            "64",
        ],
        libc::SIGINT,
    );
}

#[test]
fn sigterm_removes_the_ceiling_pool() {
    interrupt_bench(
        &["ceiling", "--seconds", "60", "--pool-mib", "16"],
        libc::SIGTERM,
    );
}

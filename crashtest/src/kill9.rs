//! The kill -9 child runner of the crate tests (`engine/tests/kill9.rs`,
//! `tiering/tests/engine_kill9.rs`): runs one test of the current test binary as a child
//! process that appends and prints its acknowledgements, then kills it with SIGKILL at a
//! chosen instant. (The campaign's own kill -9 rounds, [`crate::kill`], run the `pstream`
//! binary's crashtest child instead, with the same protocol of printed acknowledgements.)
//!
//! It panics on a broken test setup (no test binary, a child that never gets ready): it is
//! test support.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the parent waits for the child's `ready` line (recovery of a large pool counts).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Spawns this test binary running only the test `entry`, with `env_key` set to
/// `pool_path`; waits for its `ready` line, lets it run for `run_for`, SIGKILLs and reaps it.
/// Returns every stdout line that `parse` accepted (given the line's whitespace-separated
/// words), in the order printed.
pub fn run_child_until_killed<T: Send + 'static>(
    entry: &str,
    env_key: &str,
    pool_path: &Path,
    run_for: Duration,
    parse: fn(&[&str]) -> Option<T>,
) -> Vec<T> {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args(["--exact", entry, "--nocapture", "--test-threads=1"])
        .env(env_key, pool_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("piped");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut parsed = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let words: Vec<&str> = line.split_whitespace().collect();
            // libtest may print "test <name> ... " on the same line first.
            if words.last() == Some(&"ready") {
                let _ = ready_tx.send(());
            } else if let Some(item) = parse(&words) {
                parsed.push(item);
            }
        }
        parsed
    });
    // Kill only once the child is appending (its recovery does not count).
    let _ = ready_rx.recv_timeout(READY_TIMEOUT);
    let started = Instant::now();
    while started.elapsed() < run_for {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    reader.join().expect("reader")
}

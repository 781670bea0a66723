//! Shrinking a failing operation list: the shortest failing prefix, then single operations
//! dropped while it still fails. Workloads name their objects by ordinal, so every
//! sub-list is still a valid workload.

use std::time::{Duration, Instant};

/// Returns a short sub-list of `ops` for which `fails` holds (`fails(ops)` must hold).
/// The last operation is never dropped: it is where the failure shows.
pub fn shrink<Op: Clone>(
    ops: &[Op],
    mut fails: impl FnMut(&[Op]) -> bool,
    time_limit: Duration,
) -> Vec<Op> {
    let started = Instant::now();
    // Shortest failing prefix by bisection: `hi` always fails.
    let mut hi = ops.len();
    let mut lo = 0;
    while lo + 1 < hi && started.elapsed() < time_limit {
        let mid = (lo + hi) / 2;
        if fails(&ops[..mid]) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let mut best: Vec<Op> = ops[..hi].to_vec();
    let mut index = best.len().saturating_sub(1);
    while index > 0 && started.elapsed() < time_limit {
        index -= 1;
        let mut candidate = best.clone();
        candidate.remove(index);
        if fails(&candidate) {
            best = candidate;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_two_ops_that_matter() {
        let ops: Vec<u32> = (0..100).collect();
        // Fails when the list holds 17 and ends at or after 60.
        let fails = |candidate: &[u32]| {
            candidate.contains(&17) && candidate.last().is_some_and(|&last| last >= 60)
        };
        let shrunk = shrink(&ops, fails, Duration::from_secs(10));
        assert_eq!(shrunk, vec![17, 60]);
    }
}

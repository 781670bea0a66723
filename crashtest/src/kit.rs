//! The test kit the crates' own tests import: the engine oracle's fence checker, the small
//! configurations those tests share, and (re-exported) the oracle, the kill -9 runner, the
//! agent's "never served again" ledger ([`TakenLedger`]) and the one seeded PRNG of the project ([`SplitMix64`], from `pmem-emul`).
//!
//! A crate test writes `use pstream_crashtest::kit as common;` (or imports items by name)
//! instead of keeping its own copy of any of these.

use std::ops::ControlFlow;
use std::sync::Arc;

use parking_lot::Mutex;
use pmem_emul::{CrashPoint, Pmem, SimPmem};
use pstream_engine::{ColdTier, Log, LogConfig, OpenOptions, StreamId};

pub use crate::kill9::run_child_until_killed;
pub use crate::oracle::{
    check_log, crafted_payload, describe_pending, pool_nonce, Model, NestedBudget, Pending,
    StreamModel,
};
pub use crate::shim_case::TakenLedger;
pub use pmem_emul::SplitMix64;

/// The engine configuration of the crash tests: 16 KiB segments (so workloads reach segment
/// ends and seals quickly) and 16 stream slots.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_size_bytes: 16 * 1024,
        stream_slot_count: 16,
    }
}

/// Open options with `lane_count` append lanes.
pub fn options(lane_count: usize) -> OpenOptions {
    OpenOptions { lane_count }
}

/// Creates a stream while `model` says the create is in flight (a crash inside it may keep
/// the stream or not), then records it as acknowledged.
///
/// # Panics
/// If the engine refuses the create (a test precondition).
pub fn create_modelled<P: Pmem, C: ColdTier>(
    log: &Log<P, C>,
    model: &Mutex<Model>,
    label: &[u8],
) -> StreamId {
    model.lock().pending = vec![Pending::Create {
        label: label.to_vec(),
    }];
    #[allow(clippy::expect_used)] // a test precondition, documented above
    let id = log.create_stream(label).expect("create stream");
    let mut model = model.lock();
    model.pending.clear();
    model.streams.insert(id, StreamModel::new(label.to_vec()));
    id
}

/// Recovers `image` and checks it against `model` (see [`crate::oracle::check_image`]),
/// without the digest of the recovered state.
pub fn check_image(image: &[u8], model: &Model, lane_count: usize) -> Result<(), String> {
    crate::oracle::check_image(image, model, lane_count).map(drop)
}

/// Counters of a crash-checking run.
#[derive(Debug, Default, Clone, Copy)]
pub struct CrashTally {
    /// Fences the hook saw.
    pub fences: u64,
    /// Crash images recovered and checked.
    pub images: u64,
    /// Fences whose images were all enumerated (not sampled).
    pub exhaustive_fences: u64,
    /// Images taken during the recovery of another image, recovered and checked.
    pub recovery_crash_images: u64,
}

/// How many images to look at per crash point.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Enumerate every image of a fence when there are at most this many.
    pub exhaustive_max: u64,
    /// Otherwise, this many seeded samples.
    pub samples: u64,
    /// Seed of the samples (mixed with the fence index).
    pub seed: u64,
    /// Lanes of the log the images are recovered with.
    pub lane_count: usize,
    /// Every n-th checked image is also crashed during its own recovery (0 = never).
    pub recovery_crash_every: u64,
}

/// A fence hook that checks crash images against a shared [`Model`] at every fence: the
/// test updates `model` around each operation (pending, then acknowledged), the hook
/// records violations in `failures` and counts in `tally`.
pub struct CrashChecker {
    /// What was acknowledged and what is in flight, kept by the test.
    pub model: Arc<Mutex<Model>>,
    /// What the hook checked so far.
    pub tally: Arc<Mutex<CrashTally>>,
    /// One line per violation found (the hook stops at the first of a fence).
    pub failures: Arc<Mutex<Vec<String>>>,
}

impl CrashChecker {
    /// Installs a fence hook on `sim` that checks crash images at every fence.
    pub fn install(sim: &SimPmem, budget: Budget) -> CrashChecker {
        let model = Arc::new(Mutex::new(Model::default()));
        let tally = Arc::new(Mutex::new(CrashTally::default()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let (m, t, f) = (
            Arc::clone(&model),
            Arc::clone(&tally),
            Arc::clone(&failures),
        );
        sim.set_fence_hook(Some(Box::new(move |point: &CrashPoint<'_>| {
            let model = m.lock().clone();
            let mut tally = t.lock();
            tally.fences += 1;
            let fence = point.fence_index().unwrap_or(0);
            let run = point.for_each_image(
                budget.exhaustive_max,
                budget.samples,
                budget.seed ^ fence,
                |image| {
                    tally.images += 1;
                    let mut verdict = check_image(image, &model, budget.lane_count);
                    if verdict.is_ok()
                        && budget.recovery_crash_every > 0
                        && tally.images % budget.recovery_crash_every == 0
                    {
                        match crash_during_recovery(image, &model, budget) {
                            Ok(count) => tally.recovery_crash_images += count,
                            Err(error) => verdict = Err(format!("crash during recovery: {error}")),
                        }
                    }
                    match verdict {
                        Ok(()) => ControlFlow::Continue(()),
                        Err(error) => {
                            f.lock().push(format!(
                                "fence {fence} (seed {}): {error}; in flight: {:?}",
                                budget.seed, model.pending
                            ));
                            ControlFlow::Break(())
                        }
                    }
                },
            );
            if run.exhaustive {
                tally.exhaustive_fences += 1;
            }
        })));
        CrashChecker {
            model,
            tally,
            failures,
        }
    }

    /// Panics with the first violation if the hook found any.
    pub fn assert_clean(&self) {
        let failures = self.failures.lock();
        assert!(
            failures.is_empty(),
            "{} crash oracle violation(s), first: {}",
            failures.len(),
            failures[0]
        );
    }
}

/// [`crate::oracle::crash_during_recovery`] with the kit's nested budget (16 images
/// enumerated, else 4 samples, per recovery fence).
pub fn crash_during_recovery(image: &[u8], model: &Model, budget: Budget) -> Result<u64, String> {
    crate::oracle::crash_during_recovery(image, model, budget.lane_count, NestedBudget::default())
}

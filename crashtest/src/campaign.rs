//! Cases and campaigns: a case is one seeded workload with crash checking (its kind follows
//! from its seed); a campaign runs cases `seed, seed + 1, ...` until a case count or a time
//! limit, then kill -9 rounds, and sums everything into one [`CampaignReport`].

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::engine_case::{
    generate_interleaved, generate_random, run_engine_ops, EngineBudget, EngineOp, EngineRun,
    EngineSetup,
};
use crate::error::Result;
use crate::hash::TraceHash;
use crate::kill::{run_kill_rounds, KillFiles};
use crate::migration_case::{generate_migration, migration_budget, run_migration_ops};
use crate::report::{CaseKind, CaseReport, Tally, Violation};
use crate::shim_case::{generate_shim, run_shim_ops, ShimBudget, ShimOp};
use crate::threads_case::run_threads;
use crate::tiering_case::{run_tiering, TieringBudget};

/// The size of each kind of case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budgets {
    pub engine_setup: EngineSetup,
    pub engine_random_ops: usize,
    pub engine: EngineBudget,
    pub interleaved_writers: usize,
    pub interleaved_rounds: usize,
    pub thread_ops: usize,
    pub threads: EngineBudget,
    pub shim_ops: usize,
    pub shim: ShimBudget,
    pub tiering: TieringBudget,
    pub migration_ops: usize,
    pub migration: EngineBudget,
    /// Time allowed for shrinking a failing case.
    pub shrink_time: Duration,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            engine_setup: EngineSetup::default(),
            engine_random_ops: 60,
            engine: EngineBudget::default(),
            interleaved_writers: 3,
            interleaved_rounds: 16,
            thread_ops: 30,
            threads: EngineBudget {
                exhaustive_max: 64,
                samples: 10,
                recovery_crash_every: 0,
                images_max: 0,
            },
            shim_ops: 40,
            shim: ShimBudget::default(),
            tiering: TieringBudget::default(),
            migration_ops: 90,
            migration: migration_budget(),
            shrink_time: Duration::from_secs(60),
        }
    }
}

impl Budgets {
    /// Smaller cases for quick runs (fuzzing, smoke tests).
    pub fn small() -> Budgets {
        Budgets {
            engine_random_ops: 20,
            engine: EngineBudget {
                exhaustive_max: 64,
                samples: 4,
                recovery_crash_every: 31,
                images_max: 400,
            },
            interleaved_rounds: 6,
            thread_ops: 10,
            shim_ops: 16,
            shim: ShimBudget {
                images_max: 60,
                ..ShimBudget::default()
            },
            tiering: TieringBudget {
                record_count: 16,
                images_per_crash_point: 1,
                recovery_crash_steps: 2,
            },
            migration_ops: 30,
            migration: EngineBudget {
                images_max: 150,
                ..migration_budget()
            },
            shrink_time: Duration::from_secs(10),
            ..Budgets::default()
        }
    }
}

/// The operations a case runs, for traces.
enum Plan {
    Engine(Vec<EngineOp>),
    Migration(Vec<EngineOp>),
    Shim(Vec<ShimOp>),
    Other,
}

fn plan(seed: u64, kind: CaseKind, budgets: &Budgets) -> Plan {
    match kind {
        CaseKind::EngineRandom => Plan::Engine(generate_random(seed, budgets.engine_random_ops, 4)),
        CaseKind::EngineInterleaved => Plan::Engine(generate_interleaved(
            seed,
            budgets.interleaved_writers,
            budgets.interleaved_rounds,
        )),
        CaseKind::Shim => Plan::Shim(generate_shim(seed, budgets.shim_ops)),
        CaseKind::Migration => Plan::Migration(generate_migration(seed, budgets.migration_ops)),
        CaseKind::EngineThreads | CaseKind::Tiering => Plan::Other,
    }
}

fn prefix_trace<T: ToString>(ops: &[T], violation: &Violation) -> Vec<String> {
    let end = violation
        .op_index
        .map_or(ops.len(), |index| (index + 1).min(ops.len()));
    ops[..end].iter().map(ToString::to_string).collect()
}

/// The trace reported for a failing case: with `shrink`, the shortest op list found for which
/// `fails` still holds; otherwise the prefix up to the failing op.
fn failing_trace<Op: Clone + ToString>(
    ops: &[Op],
    violation: &Violation,
    shrink: bool,
    time_limit: Duration,
    fails: impl FnMut(&[Op]) -> bool,
) -> Vec<String> {
    if shrink {
        crate::shrink::shrink(ops, fails, time_limit)
            .iter()
            .map(ToString::to_string)
            .collect()
    } else {
        prefix_trace(ops, violation)
    }
}

/// Runs the case of `seed`. With `shrink`, a violation's trace is shrunk to the shortest
/// operation list found that still fails; otherwise it is the prefix up to the failing op.
pub fn run_case(seed: u64, budgets: &Budgets, shrink: bool) -> Result<CaseReport> {
    let kind = CaseKind::of_seed(seed);
    let mut report = CaseReport {
        seed,
        kind,
        tally: Tally::default(),
        trace_hash: 0,
        violation: None,
        shrunk_trace: Vec::new(),
    };
    match plan(seed, kind, budgets) {
        Plan::Engine(ops) => {
            let run = run_engine_ops(seed, &ops, &budgets.engine_setup, &budgets.engine);
            absorb(&mut report, &run);
            if let Some(violation) = &run.violation {
                let fails = |candidate: &[EngineOp]| {
                    run_engine_ops(seed, candidate, &budgets.engine_setup, &budgets.engine)
                        .violation
                        .is_some()
                };
                report.shrunk_trace =
                    failing_trace(&ops, violation, shrink, budgets.shrink_time, fails);
            }
        }
        Plan::Migration(ops) => {
            let run = run_migration_ops(seed, &ops, &budgets.migration)?;
            absorb(&mut report, &run);
            if let Some(violation) = &run.violation {
                let fails = |candidate: &[EngineOp]| {
                    run_migration_ops(seed, candidate, &budgets.migration)
                        .is_ok_and(|run| run.violation.is_some())
                };
                report.shrunk_trace =
                    failing_trace(&ops, violation, shrink, budgets.shrink_time, fails);
            }
        }
        Plan::Shim(ops) => {
            let run = run_shim_ops(seed, &ops, &budgets.shim)?;
            report.tally = run.tally;
            report.trace_hash = run.trace_hash;
            report.violation = run.violation.clone();
            if let Some(violation) = &run.violation {
                let fails = |candidate: &[ShimOp]| {
                    run_shim_ops(seed, candidate, &budgets.shim)
                        .is_ok_and(|run| run.violation.is_some())
                };
                report.shrunk_trace =
                    failing_trace(&ops, violation, shrink, budgets.shrink_time, fails);
            }
        }
        Plan::Other if kind == CaseKind::EngineThreads => {
            let run = run_threads(seed, budgets.thread_ops, &budgets.threads);
            absorb(&mut report, &run);
            if report.violation.is_some() {
                report.shrunk_trace = vec![format!(
                    "2 threads x {} appends of seed {seed} (the interleaving is the scheduler's)",
                    budgets.thread_ops
                )];
            }
        }
        Plan::Other => {
            let run = run_tiering(seed, &budgets.tiering)?;
            report.tally = run.tally;
            report.trace_hash = run.trace_hash;
            report.violation = run.violation;
        }
    }
    Ok(report)
}

fn absorb(report: &mut CaseReport, run: &EngineRun) {
    report.tally = run.tally;
    report.trace_hash = run.trace_hash;
    report.violation = run.violation.clone();
}

/// What to run.
#[derive(Debug, Clone)]
pub struct CampaignConfig {
    /// Case `i` runs seed `seed + i`.
    pub seed: u64,
    /// Stop after this many cases...
    pub cases: Option<u64>,
    /// ... or once this many seconds passed (checked before each case).
    pub seconds: Option<f64>,
    pub kill_rounds: u64,
    pub budgets: Budgets,
    /// Shrink the trace of a failing case.
    pub shrink: bool,
}

impl CampaignConfig {
    /// Cases run when neither a case count nor a time limit is given.
    pub const DEFAULT_CASES: u64 = 20;

    pub fn new(seed: u64) -> CampaignConfig {
        CampaignConfig {
            seed,
            cases: None,
            seconds: None,
            kill_rounds: 0,
            budgets: Budgets::default(),
            shrink: true,
        }
    }
}

/// Everything a campaign found. `violations` is 0 when clean.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CampaignReport {
    pub seed: u64,
    pub cases: u64,
    pub crash_images_checked: u64,
    pub fence_points_covered: u64,
    pub migration_crash_points: u64,
    pub io_faults_injected: u64,
    pub kill_rounds: u64,
    pub violations: u64,
    pub seconds: f64,
    pub pmem_images_checked: u64,
    pub recovery_crash_images_checked: u64,
    pub ssd_images_checked: u64,
    pub exhaustive_fences: u64,
    pub fences_seen: u64,
    pub ops: u64,
    pub kill_acks_checked: u64,
    pub kill_cold_segments_checked: u64,
    pub cases_by_kind: BTreeMap<String, u64>,
    /// Hash over the trace hashes of the deterministic cases.
    pub trace_hash: String,
    /// One description per violation: seed, crash point, trace, replay command.
    pub violation_reports: Vec<String>,
}

/// Progress of a running campaign.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub cases_done: u64,
    pub cases_total: Option<u64>,
    pub kill_rounds_done: u64,
    pub crash_images_checked: u64,
    pub violations: u64,
    pub elapsed: Duration,
}

/// Runs a campaign. `child` makes the command of a kill -9 child (see
/// [`crate::kill::run_child`]); without one, kill rounds are skipped.
pub fn run_campaign(
    config: &CampaignConfig,
    child: Option<&dyn Fn(&KillFiles) -> Command>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<CampaignReport> {
    let started = Instant::now();
    let cases_total = match (config.cases, config.seconds) {
        (None, None) => Some(CampaignConfig::DEFAULT_CASES),
        (cases, _) => cases,
    };
    let mut report = CampaignReport {
        seed: config.seed,
        ..CampaignReport::default()
    };
    let mut tally = Tally::default();
    let mut trace = TraceHash::new();
    let mut status = Progress {
        cases_done: 0,
        cases_total,
        kill_rounds_done: 0,
        crash_images_checked: 0,
        violations: 0,
        elapsed: Duration::ZERO,
    };
    progress(&status);
    loop {
        if cases_total.is_some_and(|total| report.cases >= total) {
            break;
        }
        if config
            .seconds
            .is_some_and(|limit| started.elapsed().as_secs_f64() >= limit)
        {
            break;
        }
        let seed = config.seed.wrapping_add(report.cases);
        let case = run_case(seed, &config.budgets, config.shrink)?;
        report.cases += 1;
        *report
            .cases_by_kind
            .entry(case.kind.as_str().to_owned())
            .or_default() += 1;
        tally += case.tally;
        if case.kind.is_deterministic() {
            trace.u64(case.trace_hash);
        }
        if let Some(text) = case.describe_violation() {
            tracing::error!("{text}");
            report.violations += 1;
            report.violation_reports.push(text);
        }
        status.cases_done = report.cases;
        status.crash_images_checked = tally.crash_images_checked();
        status.violations = report.violations;
        status.elapsed = started.elapsed();
        progress(&status);
    }
    if let (Some(child), true) = (child, config.kill_rounds > 0) {
        let dir = tempfile::tempdir().map_err(|source| crate::CrashtestError::Io {
            what: "creating a temporary directory in",
            path: std::env::temp_dir(),
            source,
        })?;
        let files = KillFiles::in_dir(dir.path());
        let kill = run_kill_rounds(
            &files,
            config.kill_rounds,
            config.seed,
            child,
            &mut |done| {
                status.kill_rounds_done = done;
                status.elapsed = started.elapsed();
                progress(&status);
            },
        )?;
        report.kill_rounds = kill.rounds;
        report.kill_acks_checked = kill.acks_checked;
        report.kill_cold_segments_checked = kill.cold_segments_checked;
        if let Some(violation) = kill.violation {
            report.violations += 1;
            report
                .violation_reports
                .push(format!("VIOLATION in kill -9 rounds: {violation}\n"));
        }
    }
    report.crash_images_checked = tally.crash_images_checked();
    report.fence_points_covered = tally.fences_checked;
    report.migration_crash_points = tally.migration_crash_points;
    report.io_faults_injected = tally.io_faults_injected;
    report.pmem_images_checked = tally.images;
    report.recovery_crash_images_checked = tally.recovery_crash_images;
    report.ssd_images_checked = tally.cold_images;
    report.exhaustive_fences = tally.exhaustive_fences;
    report.fences_seen = tally.fences;
    report.ops = tally.ops;
    report.trace_hash = format!("{:016x}", trace.finish());
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

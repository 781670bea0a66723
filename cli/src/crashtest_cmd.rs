//! `pstream crashtest`: the fault-injection harness from the command line (see the
//! `pstream-crashtest` crate and `docs/TESTING.md`).
//!
//! Runs seeded cases (case `i` runs seed `S + i`; each one workload with crash checking at
//! every fence, SSD crash points and faults, or shim operations) until `--cases N` or
//! `--seconds T`, then `--kill-rounds K` rounds of kill -9 of a child process (this binary,
//! `pstream crashtest --child POOL`) on a real mmap pool and cold directory. Exits non-zero
//! when any violation was found; `--replay S` reruns case `S` and prints its shortest
//! failing trace. `--media-faults` runs the media-fault campaign instead (faults at rest
//! injected into clean images: `pstream_crashtest::media_case`).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::Command;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use pstream_crashtest::kill::{run_child, KillFiles};
use pstream_crashtest::media_case::{run_media_campaign, MediaBudget, MediaReport};
use pstream_crashtest::{
    run_campaign, run_case, Budgets, CampaignConfig, CampaignReport, CaseReport, CrashtestError,
    Progress,
};

#[derive(Debug, Args)]
pub struct CrashtestArgs {
    /// First case seed: case i runs seed S + i
    #[arg(long, value_name = "S", default_value_t = 1)]
    seed: u64,
    /// Number of cases [default: 20, or as many as fit in --seconds]
    #[arg(long, value_name = "N")]
    cases: Option<u64>,
    /// Start no case after this many seconds
    #[arg(long, value_name = "T")]
    seconds: Option<f64>,
    /// Rounds of kill -9 of a child process on a real mmap pool and cold directory
    #[arg(long = "kill-rounds", value_name = "K", default_value_t = 3)]
    kill_rounds: u64,
    /// Replay the case of seed S alone and print its shortest failing trace, if any
    #[arg(long, value_name = "S", conflicts_with_all = ["cases", "seconds"])]
    replay: Option<u64>,
    /// Smaller cases (quicker, fewer images each)
    #[arg(long)]
    quick: bool,
    /// Do not shrink the trace of a failing case (report the prefix up to the failure)
    #[arg(long = "no-shrink")]
    no_shrink: bool,
    /// Print one JSON object as the last line of stdout
    #[arg(long)]
    json: bool,
    /// Run the media-fault campaign: bit flips and damaged 256-byte blocks injected into
    /// clean pool images at rest, then verify, open and read back (no kill rounds)
    #[arg(long = "media-faults", conflicts_with = "replay")]
    media_faults: bool,
    /// Media-fault campaign: faulted images checked per case
    #[arg(long = "fault-sets", value_name = "N", default_value_t = 40)]
    fault_sets: u32,
    /// Internal: run as the kill -9 child on this pool file (and POOL.cold)
    #[arg(long, value_name = "POOL", hide = true)]
    child: Option<PathBuf>,
}

/// Why `pstream crashtest` failed.
#[derive(Debug, thiserror::Error)]
pub enum CrashtestCmdError {
    #[error(transparent)]
    Harness(#[from] CrashtestError),
    #[error("cannot find this executable to run the kill -9 child: {0}")]
    Exe(#[source] std::io::Error),
    #[error("cannot encode the report as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot write to stdout: {0}")]
    Stdout(#[source] std::io::Error),
    #[error("{count} crash-oracle violation(s) found (see the report above)")]
    Violations { count: u64 },
}

fn run_media(args: &CrashtestArgs) -> Result<(), CrashtestCmdError> {
    let budget = MediaBudget {
        fault_sets_per_case: args.fault_sets,
        ..MediaBudget::default()
    };
    let budget = if args.quick {
        MediaBudget {
            engine_ops: 60,
            agent_posts: 30,
            ..budget
        }
    } else {
        budget
    };
    let report =
        quietly(|| run_media_campaign(args.seed, args.cases, args.seconds, &budget, &mut |_| {}))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report)?).map_err(CrashtestCmdError::Stdout)?;
    } else {
        print_media_summary(&mut out, &report).map_err(CrashtestCmdError::Stdout)?;
    }
    out.flush().map_err(CrashtestCmdError::Stdout)?;
    let bad = report.violation_reports.len() as u64;
    if bad > 0 {
        return Err(CrashtestCmdError::Violations { count: bad });
    }
    Ok(())
}

fn print_media_summary(out: &mut impl Write, report: &MediaReport) -> std::io::Result<()> {
    let tally = &report.tally;
    writeln!(
        out,
        "crashtest --media-faults: seed {}, {} cases, {} faulted images in {:.1} s",
        report.seed, tally.cases, tally.fault_sets, report.seconds
    )?;
    let rows = [
        (
            "media faults injected",
            tally.media_faults_injected.to_string(),
        ),
        (
            "images with damage detected",
            tally.faults_detected.to_string(),
        ),
        ("images unharmed", tally.fault_sets_harmless.to_string()),
        ("silent losses (records)", tally.silent_losses.to_string()),
        (
            "deleted streams back",
            tally.resurrected_streams.to_string(),
        ),
        ("reformats", tally.reformats.to_string()),
        ("panics", tally.panics.to_string()),
        (
            "records salvaged",
            format!(
                "{:.4} ({} of {} untouched records readable)",
                report.records_salvaged_ratio,
                tally.records_untouched_readable,
                tally.records_untouched
            ),
        ),
    ];
    for (name, value) in rows {
        writeln!(out, "  {name:<28} {value}")?;
    }
    for text in &report.violation_reports {
        writeln!(out, "\n{text}")?;
    }
    Ok(())
}

pub fn run(args: &CrashtestArgs) -> Result<(), CrashtestCmdError> {
    if let Some(pool) = &args.child {
        return Ok(run_child(&KillFiles::for_pool(pool))?);
    }
    if args.media_faults {
        return run_media(args);
    }
    let budgets = if args.quick {
        Budgets::small()
    } else {
        Budgets::default()
    };
    if let Some(seed) = args.replay {
        return replay(seed, &budgets, args);
    }
    let config = CampaignConfig {
        seed: args.seed,
        cases: args.cases,
        seconds: args.seconds,
        kill_rounds: args.kill_rounds,
        budgets,
        shrink: !args.no_shrink,
    };
    let exe = std::env::current_exe().map_err(CrashtestCmdError::Exe)?;
    let child = move |files: &KillFiles| {
        let mut command = Command::new(&exe);
        command.arg("crashtest").arg("--child").arg(&files.pool);
        command
    };
    let bar = progress_bar(args.json, &config);
    let report = quietly(|| {
        run_campaign(&config, Some(&child), &mut |progress| {
            show_progress(&bar, progress, config.kill_rounds);
        })
    });
    bar.finish_and_clear();
    let report = report?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report)?).map_err(CrashtestCmdError::Stdout)?;
    } else {
        print_summary(&mut out, &report).map_err(CrashtestCmdError::Stdout)?;
    }
    out.flush().map_err(CrashtestCmdError::Stdout)?;
    if report.violations > 0 {
        return Err(CrashtestCmdError::Violations {
            count: report.violations,
        });
    }
    Ok(())
}

/// Runs `f` without log output unless `RUST_LOG` asks for it: the cases inject thousands of
/// faults on purpose, and the layers below warn about each one.
fn quietly<R>(f: impl FnOnce() -> R) -> R {
    if std::env::var_os("RUST_LOG").is_some() {
        return f();
    }
    tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), f)
}

fn replay(seed: u64, budgets: &Budgets, args: &CrashtestArgs) -> Result<(), CrashtestCmdError> {
    let case = quietly(|| run_case(seed, budgets, !args.no_shrink))?;
    let violations = u64::from(case.violation.is_some());
    let mut out = std::io::stdout().lock();
    if args.json {
        let json = serde_json::json!({
            "seed": case.seed,
            "kind": case.kind,
            "cases": 1,
            "crash_images_checked": case.tally.crash_images_checked(),
            "fence_points_covered": case.tally.fences_checked,
            "migration_crash_points": case.tally.migration_crash_points,
            "io_faults_injected": case.tally.io_faults_injected,
            "kill_rounds": 0,
            "violations": violations,
            "trace_hash": format!("{:016x}", case.trace_hash),
            "violation": case.violation,
            "shrunk_trace": case.shrunk_trace,
        });
        writeln!(out, "{json}").map_err(CrashtestCmdError::Stdout)?;
    } else {
        print_case(&mut out, &case).map_err(CrashtestCmdError::Stdout)?;
    }
    out.flush().map_err(CrashtestCmdError::Stdout)?;
    if violations > 0 {
        return Err(CrashtestCmdError::Violations { count: violations });
    }
    Ok(())
}

fn print_case(out: &mut impl Write, case: &CaseReport) -> std::io::Result<()> {
    let tally = &case.tally;
    writeln!(out, "case seed {} ({})", case.seed, case.kind)?;
    writeln!(
        out,
        "  {} ops, {} crash images checked at {} fence points, {} SSD crash points, \
         {} I/O faults injected",
        tally.ops,
        tally.crash_images_checked(),
        tally.fences_checked,
        tally.migration_crash_points,
        tally.io_faults_injected
    )?;
    writeln!(out, "  trace hash {:016x}", case.trace_hash)?;
    match case.describe_violation() {
        Some(text) => write!(out, "{text}"),
        None => writeln!(out, "  no violation"),
    }
}

fn print_summary(out: &mut impl Write, report: &CampaignReport) -> std::io::Result<()> {
    let kinds: Vec<String> = report
        .cases_by_kind
        .iter()
        .map(|(kind, count)| format!("{kind} {count}"))
        .collect();
    writeln!(
        out,
        "crashtest: seed {}, {} cases ({}) in {:.1} s",
        report.seed,
        report.cases,
        kinds.join(", "),
        report.seconds
    )?;
    let rows = [
        (
            "crash images checked",
            format!(
                "{} (pmem {}, crashed during recovery {}, ssd {})",
                report.crash_images_checked,
                report.pmem_images_checked,
                report.recovery_crash_images_checked,
                report.ssd_images_checked
            ),
        ),
        (
            "fence points covered",
            format!(
                "{} ({} exhaustive)",
                report.fence_points_covered, report.exhaustive_fences
            ),
        ),
        (
            "migration crash points",
            report.migration_crash_points.to_string(),
        ),
        ("I/O faults injected", report.io_faults_injected.to_string()),
        (
            "kill -9 rounds",
            format!(
                "{} ({} acknowledgements, {} cold segments checked)",
                report.kill_rounds, report.kill_acks_checked, report.kill_cold_segments_checked
            ),
        ),
        ("operations", report.ops.to_string()),
        ("trace hash", report.trace_hash.clone()),
        ("violations", report.violations.to_string()),
    ];
    for (name, value) in rows {
        writeln!(out, "  {name:<24} {value}")?;
    }
    for text in &report.violation_reports {
        write!(out, "\n{text}")?;
    }
    Ok(())
}

/// A progress bar on stderr, hidden for JSON output and when stderr is not a terminal.
fn progress_bar(json: bool, config: &CampaignConfig) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match config.cases {
        Some(cases) => ProgressBar::new(cases),
        None if config.seconds.is_some() => ProgressBar::new_spinner(),
        None => ProgressBar::new(CampaignConfig::DEFAULT_CASES),
    };
    let template = "{msg:<60} [{bar:30}] {pos}/{len} cases {elapsed}";
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn show_progress(bar: &ProgressBar, progress: &Progress, kill_rounds: u64) {
    bar.set_position(progress.cases_done);
    let kills = if progress.kill_rounds_done > 0 {
        format!(
            ", kill -9 round {}/{kill_rounds}",
            progress.kill_rounds_done
        )
    } else {
        String::new()
    };
    bar.set_message(format!(
        "{} images, {} violations{kills}",
        progress.crash_images_checked, progress.violations
    ));
}

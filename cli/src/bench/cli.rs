//! The command-line side of `pstream bench recovery` and `pstream bench agent` (arguments,
//! progress bars, tables, the `--json` last line), and the baseline lines of
//! `pstream bench append`. `src/main.rs` only dispatches here.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::agent::{self, AgentBenchConfig, AgentBenchReport};
use super::recovery::{self, RecoveryBenchConfig, RecoveryBenchReport, RecoveryStage};
use super::streams::{self, StreamsBenchConfig, StreamsBenchReport};
use super::{AppendBenchReport, BenchError};
use crate::ceiling;

/// `pstream bench recovery`.
#[derive(Debug, Args)]
pub struct RecoveryArgs {
    /// Live payload per pool, in MiB, comma separated
    #[arg(long = "sizes-mib", value_name = "N,N,...", value_delimiter = ',',
          default_values_t = recovery::DEFAULT_SIZES_MIB)]
    pub sizes_mib: Vec<usize>,
    /// Payload bytes per record
    #[arg(long = "size", value_name = "BYTES", default_value_t = 1024)]
    pub payload_bytes: usize,
    /// Streams the records are spread over
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub streams: usize,
    /// Floor and recovery measurements per size (the median is reported)
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub repeats: usize,
    /// Directory for the pool files [default: /dev/shm if it exists, else the temp dir]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Print one JSON object as the last line of stdout
    #[arg(long)]
    pub json: bool,
    /// Exit with status 1 if any size misses the recovery target (after the report)
    #[arg(long)]
    pub check: bool,
}

/// `pstream bench streams`.
#[derive(Debug, Args)]
pub struct StreamsArgs {
    /// Stream counts, comma separated (each on a fresh pool)
    #[arg(long = "count", value_name = "N,N,...", value_delimiter = ',',
          default_values_t = streams::DEFAULT_COUNTS)]
    pub counts: Vec<u64>,
    /// Payload bytes of the one record each stream gets
    #[arg(long = "size", value_name = "BYTES", default_value_t = 16)]
    pub payload_bytes: usize,
    /// Directory for the pool files [default: /dev/shm if it exists, else the temp dir]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Print one JSON object as the last line of stdout
    #[arg(long)]
    pub json: bool,
}

/// `pstream bench agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Recipient counts of the fan-out measurement, comma separated
    #[arg(long, value_name = "N,N,...", value_delimiter = ',',
          default_values_t = agent::DEFAULT_FANOUTS)]
    pub fanout: Vec<usize>,
    /// Message payload bytes
    #[arg(long = "size", value_name = "BYTES", default_value_t = 256)]
    pub payload_bytes: usize,
    /// Seconds per measurement
    #[arg(long, value_name = "S", default_value_t = 1.0)]
    pub seconds: f64,
    /// Directory for the pool file [default: /dev/shm if it exists, else the temp dir]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Pool size in MiB
    #[arg(long = "pool-mib", value_name = "N", default_value_t = 1024)]
    pub pool_mib: usize,
    /// Print one JSON object as the last line of stdout
    #[arg(long)]
    pub json: bool,
}

const MIB_BYTES: usize = 1 << 20;
/// Largest pool the agent bench creates (1 TiB).
const POOL_MIB_MAX: usize = 1 << 20;
const BAR_UNITS: u64 = 1000;

/// A progress bar on stderr, hidden for JSON output and when stderr is not a terminal.
fn bar(json: bool, len: u64) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{msg:<24} [{bar:40}] {elapsed}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn emit_json(report: &impl serde::Serialize) -> Result<(), BenchError> {
    let line = serde_json::to_string(report)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").map_err(BenchError::Output)?;
    out.flush().map_err(BenchError::Output)
}

fn emit_lines(lines: &[String]) -> Result<(), BenchError> {
    let mut out = std::io::stdout().lock();
    for line in lines {
        writeln!(out, "{line}").map_err(BenchError::Output)?;
    }
    out.flush().map_err(BenchError::Output)
}

/// Runs `pstream bench recovery`.
pub fn run_recovery(args: &RecoveryArgs) -> Result<(), BenchError> {
    let mut config =
        RecoveryBenchConfig::new(&args.dir.clone().unwrap_or_else(ceiling::default_dir));
    config.sizes_mib.clone_from(&args.sizes_mib);
    config.payload_bytes = args.payload_bytes;
    config.streams = args.streams;
    config.repeats = args.repeats;
    let sizes = config.sizes_mib.clone();
    let bar = bar(args.json, sizes.len() as u64 * 2 * BAR_UNITS);
    let report = recovery::run_recovery_bench(&config, &mut |index, stage, fraction| {
        let (label, offset) = match stage {
            RecoveryStage::Filling => ("filling", 0),
            RecoveryStage::Measuring => ("recovering", BAR_UNITS),
        };
        let size = sizes.get(index).copied().unwrap_or(0);
        bar.set_message(format!("{label} {size} MiB"));
        let units = (fraction.clamp(0.0, 1.0) * BAR_UNITS as f64) as u64;
        bar.set_position(index as u64 * 2 * BAR_UNITS + offset + units);
    });
    bar.finish_and_clear();
    let report = report?;
    if args.json {
        emit_json(&report)?;
    } else {
        emit_lines(&recovery_table(&report))?;
    }
    if args.check {
        let missed: Vec<String> = report
            .points
            .iter()
            .filter(|p| p.ratio_to_target > 1.0)
            .map(|p| format!("{} MiB at {:.2} x target", p.live_mib, p.ratio_to_target))
            .collect();
        if !missed.is_empty() {
            return Err(BenchError::TargetMissed {
                what: format!("recovery time per GiB: {}", missed.join(", ")),
            });
        }
    }
    Ok(())
}

/// Runs `pstream bench streams`.
pub fn run_streams(args: &StreamsArgs) -> Result<(), BenchError> {
    let mut config =
        StreamsBenchConfig::new(&args.dir.clone().unwrap_or_else(ceiling::default_dir));
    config.counts.clone_from(&args.counts);
    config.payload_bytes = args.payload_bytes;
    let counts = config.counts.clone();
    let bar = bar(args.json, counts.len() as u64 * BAR_UNITS);
    let report = streams::run_streams_bench(&config, &mut |index, fraction| {
        let count = counts.get(index).copied().unwrap_or(0);
        bar.set_message(format!("{count} streams"));
        let units = (fraction.clamp(0.0, 1.0) * BAR_UNITS as f64) as u64;
        bar.set_position(index as u64 * BAR_UNITS + units);
    });
    bar.finish_and_clear();
    let report = report?;
    if args.json {
        emit_json(&report)
    } else {
        emit_lines(&streams_table(&report))
    }
}

fn streams_table(report: &StreamsBenchReport) -> Vec<String> {
    let mut lines = vec![
        format!(
            "streams: one {} B record per stream, pools in {}",
            report.payload_bytes, report.dir
        ),
        format!(
            "{:>10} {:>12} {:>10} {:>12} {:>12} {:>12}",
            "streams", "creates/s", "open s", "open us/str", "RSS B/idle", "RSS B/live"
        ),
    ];
    for p in &report.points {
        lines.push(format!(
            "{:>10} {:>12.0} {:>10.3} {:>12.3} {:>12.1} {:>12.1}",
            p.streams,
            p.creates_per_sec,
            p.open_seconds,
            p.open_us_per_stream,
            p.rss_bytes_per_idle_stream,
            p.rss_bytes_per_live_stream
        ));
    }
    lines.push(format!(
        "targets (issue 18): >= {:.0} creates/s, <= {:.0} B per idle stream, <= {} us per \
         stream to open (2 s for 10 M)",
        streams::TARGET_CREATES_PER_SEC,
        streams::TARGET_RSS_BYTES_PER_IDLE_STREAM,
        streams::TARGET_OPEN_US_PER_STREAM
    ));
    lines
}

fn recovery_table(report: &RecoveryBenchReport) -> Vec<String> {
    let mut lines = vec![
        format!(
            "recovery: {} B records over {} streams, median of {}, pools in {}",
            report.payload_bytes, report.streams, report.repeats, report.dir
        ),
        format!(
            "{:>9} {:>12} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8}",
            "live MiB",
            "records",
            "open s",
            "s/GiB",
            "floor s",
            "floor/GiB",
            "warm GiB/s",
            "x floor",
            "x target"
        ),
    ];
    for p in &report.points {
        lines.push(format!(
            "{:>9} {:>12} {:>10.4} {:>10.4} {:>10.4} {:>10.4} {:>10.2} {:>8.2} {:>8.2}",
            p.live_mib,
            p.live_records,
            p.recovery_seconds,
            p.recovery_seconds_per_gib,
            p.floor_seconds,
            p.floor_seconds_per_gib,
            p.floor_warm_gib_per_sec,
            p.ratio_to_floor,
            p.ratio_to_target
        ));
    }
    lines.push(format!(
        "target: at most {} s per GiB of live data (x target <= 1 meets it)",
        recovery::TARGET_SECONDS_PER_GIB
    ));
    lines
}

/// Runs `pstream bench agent`.
pub fn run_agent(args: &AgentArgs) -> Result<(), BenchError> {
    if args.pool_mib == 0 || args.pool_mib > POOL_MIB_MAX {
        return Err(BenchError::Config(format!(
            "--pool-mib {} must be 1..={POOL_MIB_MAX}",
            args.pool_mib
        )));
    }
    let mut config = AgentBenchConfig::new(&args.dir.clone().unwrap_or_else(ceiling::default_dir));
    config.fanouts.clone_from(&args.fanout);
    config.payload_bytes = args.payload_bytes;
    config.seconds = args.seconds;
    config.pool_bytes = args.pool_mib * MIB_BYTES;
    let steps = config.fanouts.len() as u64 + 2;
    let bar = bar(args.json, steps);
    bar.set_message("agent rounds");
    let report = agent::run_agent_bench(&config, &mut |step, _| bar.set_position(step as u64));
    bar.finish_and_clear();
    let report = report?;
    if args.json {
        emit_json(&report)
    } else {
        emit_lines(&agent_table(&report))
    }
}

fn agent_table(report: &AgentBenchReport) -> Vec<String> {
    let mut lines = vec![
        format!(
            "agent: {} B messages, {} s per row, durable calls ({})",
            report.payload_bytes, report.seconds, report.guarantee
        ),
        format!(
            "{:<22} {:>12} {:>14} {:>10} {:>10} {:>8}",
            "fan-out", "messages/s", "deliveries/s", "p50 ns", "p99 ns", "fences"
        ),
    ];
    for p in &report.fanout {
        lines.push(format!(
            "{:<22} {:>12.0} {:>14.0} {:>10} {:>10} {:>8.1}",
            format!("1 -> {} recipient(s)", p.recipients),
            p.messages_per_sec,
            p.deliveries_per_sec,
            p.latency_ns.p50,
            p.latency_ns.p99,
            p.fences_per_message
        ));
    }
    lines.push(format!(
        "{:<22} {:>12} {:>14} {:>10} {:>10} {:>8}",
        "ephemeral round trip", "trips/s", "", "p50 ns", "p99 ns", "fences"
    ));
    for p in &report.ephemeral {
        lines.push(format!(
            "{:<22} {:>12.0} {:>14} {:>10} {:>10} {:>8.1}",
            format!("append + {}", p.mode),
            p.round_trips_per_sec,
            "",
            p.latency_ns.p50,
            p.latency_ns.p99,
            p.fences_per_round_trip
        ));
    }
    lines
}

/// The lines `pstream bench append` prints about its baseline (none without one).
pub fn baseline_lines(report: &AppendBenchReport) -> Vec<String> {
    let (Some(baseline), Some(ops_per_sec), Some(ratio)) = (
        report.baseline,
        report.baseline_ops_per_sec,
        report.ratio_to_baseline,
    ) else {
        return Vec::new();
    };
    let latency = report.baseline_latency_ns.unwrap_or_default();
    vec![
        format!(
            "baseline         {baseline}: {ops_per_sec:.0} records/s, {:.1} MiB/s ({} slices \
             of {:.2} s per side, interleaved)",
            report.baseline_mib_per_sec.unwrap_or(0.0),
            report.slices,
            report.seconds / report.slices.max(1) as f64
        ),
        format!(
            "baseline latency p50 {} ns, p99 {} ns, p99.9 {} ns",
            latency.p50, latency.p99, latency.p999
        ),
        format!(
            "baseline mode    {}",
            report.baseline_mode.as_deref().unwrap_or("")
        ),
        format!("ratio            {ratio:.2}x {baseline}"),
    ]
}

//! `pstream`: the command line tool.
//!
//! `pstream ceiling` measures the persist ceiling of this machine (see [`pstream::ceiling`]).
#![deny(unsafe_code)]

use std::error::Error as _;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pstream::ceiling::{self, CeilingConfig, CeilingError, CeilingReport, Phase};

/// pstream: a crash-consistent append log for persistent memory.
#[derive(Debug, Parser)]
#[command(name = "pstream", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure the persist ceiling: payloads per second made durable one at a time with flush
    /// and fence alone, on a fresh pool file (removed afterwards).
    Ceiling(CeilingArgs),
}

#[derive(Debug, Args)]
struct CeilingArgs {
    /// Directory for the temporary pool file [default: /dev/shm if it exists, else the
    /// system temporary directory]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Payload size in bytes
    #[arg(long = "size", value_name = "BYTES", default_value_t = 64)]
    payload_bytes: usize,
    /// Measurement time of each method, in seconds
    #[arg(long, value_name = "S", default_value_t = 2.0)]
    seconds: f64,
    /// Size of the temporary pool in MiB
    #[arg(long = "pool-mib", value_name = "N", default_value_t = 64)]
    pool_mib: usize,
    /// Print one JSON object as the last line of stdout instead of a table
    #[arg(long)]
    json: bool,
}

/// Why `pstream` failed.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Ceiling(#[from] CeilingError),
    #[error("--pool-mib {pool_mib} is out of range (1 to {max_mib})")]
    PoolSize { pool_mib: usize, max_mib: usize },
    #[error("cannot encode the report as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot write to stdout: {0}")]
    Stdout(#[source] std::io::Error),
}

const MIB_BYTES: usize = 1 << 20;
/// Largest pool the CLI will create (1 TiB).
const POOL_MIB_MAX: usize = 1 << 20;

fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ceiling(args) => run_ceiling(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            report_error(&error);
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (default: warnings and errors).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Fails only if a subscriber is already set, which then keeps working.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Prints the error and every cause its message does not already include.
fn report_error(error: &CliError) {
    let message = error.to_string();
    eprintln!("pstream: error: {message}");
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_message = cause.to_string();
        if !message.contains(&cause_message) {
            eprintln!("  caused by: {cause_message}");
        }
        source = cause.source();
    }
}

fn run_ceiling(args: &CeilingArgs) -> Result<(), CliError> {
    if args.pool_mib == 0 || args.pool_mib > POOL_MIB_MAX {
        return Err(CliError::PoolSize {
            pool_mib: args.pool_mib,
            max_mib: POOL_MIB_MAX,
        });
    }
    let config = CeilingConfig {
        dir: args.dir.clone().unwrap_or_else(ceiling::default_dir),
        payload_bytes: args.payload_bytes,
        seconds: args.seconds,
        pool_bytes: args.pool_mib * MIB_BYTES,
    };
    let bar = progress_bar(args.json);
    let report = ceiling::measure_ceiling_with(&config, &mut |phase, fraction| {
        let phase_units = (fraction.clamp(0.0, 1.0) * PHASE_UNITS as f64) as u64;
        bar.set_message(phase.label());
        bar.set_position(phase.index() as u64 * PHASE_UNITS + phase_units);
    });
    bar.finish_and_clear();
    let report = report?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let line = serde_json::to_string(&report)?;
        writeln!(stdout, "{line}").map_err(CliError::Stdout)?;
    } else {
        print_table(&mut stdout, &report).map_err(CliError::Stdout)?;
    }
    stdout.flush().map_err(CliError::Stdout)
}

/// Progress units per phase.
const PHASE_UNITS: u64 = 1000;

/// A progress bar on stderr, hidden for JSON output and when stderr is not a terminal.
fn progress_bar(json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(Phase::ALL.len() as u64 * PHASE_UNITS);
    if let Ok(style) = ProgressStyle::with_template("{msg:<26} [{bar:40}] {elapsed}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn print_table(out: &mut impl Write, report: &CeilingReport) -> std::io::Result<()> {
    let mapping = if report.dax {
        "DAX (MAP_SYNC)"
    } else {
        "emulated (no DAX)"
    };
    writeln!(
        out,
        "persist ceiling: {} B payloads, {} s per method, {} MiB pool in {}",
        report.payload_bytes,
        report.seconds,
        report.pool_bytes / MIB_BYTES,
        report.dir
    )?;
    writeln!(
        out,
        "mapping: {mapping}, flush: {}, guarantee: {}",
        report.flush_instruction, report.guarantee
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "{:<26} {:>14} {:>10} {:>12}",
        "method", "payloads/s", "ns/op", "MiB/s"
    )?;
    let rows = [
        ("copy + flush + fence", report.copy_flush_fence_ops_per_sec),
        ("nt store + fence", report.nt_fence_ops_per_sec),
    ];
    for (name, ops_per_sec) in rows {
        let ns_per_op = if ops_per_sec > 0.0 {
            1e9 / ops_per_sec
        } else {
            f64::NAN
        };
        let mib_per_sec = ops_per_sec * report.payload_bytes as f64 / MIB_BYTES as f64;
        writeln!(
            out,
            "{name:<26} {ops_per_sec:>14.0} {ns_per_op:>10.1} {mib_per_sec:>12.1}"
        )?;
    }
    let best_name = match report.best_method {
        "nt_fence" => "best (nt store + fence)",
        _ => "best (copy + flush + fence)",
    };
    writeln!(out, "{best_name:<26} {:>14.0}", report.best_ops_per_sec)?;
    writeln!(
        out,
        "{:<26} {:>14} {:>10} {:>12.1}",
        "bulk 4 KiB copy + flush", "", "", report.bulk_4k_copy_flush_mib_per_sec
    )
}

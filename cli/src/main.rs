//! `pstream`: the command line tool.
//!
//! `pstream ceiling` measures the persist ceiling of this machine (see [`pstream_cli::ceiling`]).
//!
//! Exit status: 0 success; 1 a finding (corruption found by `verify`, a crash-oracle
//! violation, a failed check of the demo or a benchmark, a target missed under `--check`);
//! 2 a usage or environment error (bad arguments, a file that cannot be created, ...);
//! 130 interrupted (Ctrl-C), after removing the run's temporary pool files.
#![deny(unsafe_code)]

mod crashtest_cmd;
mod demo;
mod tier_cmd;
mod verify_cmd;

use std::error::Error as _;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pstream_cli::ceiling::{self, CeilingConfig, CeilingError, CeilingReport, Phase};

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
    /// Load generators, measured against the persist ceiling in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Checksum scan of a pool's persistent-memory side: every structure and every record
    /// still in the pool (segments demoted to cold files are not read); exit status 1 if
    /// anything is corrupt.
    Verify(verify_cmd::VerifyArgs),
    /// Run the agent store end to end: the paper's three use cases, a traffic burst, a
    /// restart and a summary (creates or reopens ./pstream-data).
    Demo(demo::DemoArgs),
    /// Fault-injection campaign: seeded workloads checked against the crash oracle at every
    /// fence, SSD crash points and faults, kill -9 rounds; exit status 1 on a violation.
    Crashtest(crashtest_cmd::CrashtestArgs),
    /// Show a pool and its cold tier: segments by state, bytes hot and cold, compression
    /// ratio, pending migrations, streams (opens, and so recovers, the pool).
    Inspect(tier_cmd::InspectArgs),
    /// Print a shell completion script to stdout (e.g. `pstream completions bash >
    /// ~/.local/share/bash-completion/completions/pstream`).
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Append records through the engine on a fresh pool file.
    Append(BenchAppendArgs),
    /// Time recovery (open) of pools holding N MiB of live data against the memory floor.
    Recovery(pstream_cli::bench::cli::RecoveryArgs),
    /// Agent layer: fan-out to N recipients with durable acks; ephemeral round trips.
    Agent(pstream_cli::bench::cli::AgentArgs),
    /// Streams: durable create rate, open time and process memory per idle stream.
    Streams(pstream_cli::bench::cli::StreamsArgs),
    /// Tiering: migration and cold-read throughput against the raw SSD, appends while
    /// migrating against idle, on a small pool the migrator must drain.
    Tier(tier_cmd::BenchTierArgs),
}

#[derive(Debug, Args)]
struct BenchAppendArgs {
    /// Payload size in bytes
    #[arg(long = "size", value_name = "BYTES", default_value_t = 64)]
    payload_bytes: usize,
    /// Appending threads
    #[arg(long, value_name = "N", default_value_t = 1)]
    threads: usize,
    /// Records per append call (1 = single appends)
    #[arg(long, value_name = "K", default_value_t = 1)]
    batch: usize,
    /// Streams in all (at least one per thread) [default: threads]
    #[arg(long, value_name = "M")]
    streams: Option<usize>,
    /// Duration of the append phase in seconds
    #[arg(long, value_name = "S", default_value_t = 2.0)]
    seconds: f64,
    /// Seconds per method of the same-run ceiling measurement
    #[arg(long = "ceiling-seconds", value_name = "S", default_value_t = 0.5)]
    ceiling_seconds: f64,
    /// Directory for the pool files [default: /dev/shm if it exists, else the temp dir]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Pool size in MiB
    #[arg(long = "pool-mib", value_name = "N", default_value_t = 1024)]
    pool_mib: usize,
    /// A peer log to run interleaved with pstream on the same directory
    #[arg(long, value_name = "PEER")]
    baseline: Option<pstream_cli::bench::Baseline>,
    /// Alternating slices per side with --baseline (A B A B ...)
    #[arg(long, value_name = "N", default_value_t = pstream_cli::bench::DEFAULT_SLICES)]
    slices: usize,
    /// What pstream's pool must survive: `process` (flush + fence) or `power` (also an
    /// msync per flush: compare with file logs on a disk). The ceiling stays flush + fence
    #[arg(long, value_enum, default_value_t = DurabilityArg::Process)]
    durability: DurabilityArg,
    /// Who scrubs trimmed space: `background` (threads trim at half their share of the
    /// pool, a reclaimer thread scrubs ahead of need) or `inline` (threads trim when the
    /// pool is full and scrub it themselves)
    #[arg(long, value_enum, default_value_t = ReclaimArg::Background)]
    reclaim: ReclaimArg,
    /// Print one JSON object as the last line of stdout
    #[arg(long)]
    json: bool,
}

/// `--reclaim` of `pstream bench append`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ReclaimArg {
    Inline,
    Background,
}

impl From<ReclaimArg> for pstream_cli::bench::Reclaim {
    fn from(arg: ReclaimArg) -> Self {
        match arg {
            ReclaimArg::Inline => pstream_cli::bench::Reclaim::Inline,
            ReclaimArg::Background => pstream_cli::bench::Reclaim::Background,
        }
    }
}

/// `--durability` of `pstream bench append`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DurabilityArg {
    Process,
    Power,
}

impl From<DurabilityArg> for pstream::pmem_emul::Durability {
    fn from(arg: DurabilityArg) -> Self {
        match arg {
            DurabilityArg::Process => pstream::pmem_emul::Durability::Process,
            DurabilityArg::Power => pstream::pmem_emul::Durability::Power,
        }
    }
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
    #[error(transparent)]
    Bench(#[from] pstream_cli::bench::BenchError),
    #[error(transparent)]
    Verify(#[from] verify_cmd::VerifyError),
    #[error("--pool-mib {pool_mib} is out of range (1 to {max_mib})")]
    PoolSize { pool_mib: usize, max_mib: usize },
    #[error("cannot encode the report as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot write to stdout: {0}")]
    Stdout(#[source] std::io::Error),
    #[error(transparent)]
    Demo(#[from] demo::DemoError),
    #[error(transparent)]
    Crashtest(#[from] crashtest_cmd::CrashtestCmdError),
    #[error(transparent)]
    Tier(#[from] tier_cmd::TierCmdError),
    #[error("cannot install the Ctrl-C handler: {0}")]
    Signal(#[from] ctrlc::Error),
}

/// Exit status of a finding: the command ran and found something wrong.
const EXIT_FINDING: u8 = 1;
/// Exit status of a usage or environment error (clap uses it for bad arguments too).
const EXIT_ERROR: u8 = 2;

impl CliError {
    /// [`EXIT_FINDING`] for what the command was asked to find, [`EXIT_ERROR`] otherwise.
    fn exit_code(&self) -> u8 {
        use pstream_cli::bench::BenchError;
        let finding = match self {
            CliError::Verify(error) => error.is_finding(),
            CliError::Bench(error) => {
                matches!(
                    error,
                    BenchError::Check(_) | BenchError::TargetMissed { .. }
                )
            }
            CliError::Demo(error) => matches!(error, demo::DemoError::Check(_)),
            CliError::Crashtest(error) => {
                matches!(error, crashtest_cmd::CrashtestCmdError::Violations { .. })
            }
            _ => false,
        };
        if finding {
            EXIT_FINDING
        } else {
            EXIT_ERROR
        }
    }
}

const MIB_BYTES: usize = 1 << 20;
/// Largest pool the CLI will create (1 TiB).
const POOL_MIB_MAX: usize = 1 << 20;

fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let result = pstream_cli::interrupt::install()
        .map_err(CliError::from)
        .and_then(|()| run(cli.command));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            report_error(&error);
            ExitCode::from(error.exit_code())
        }
    }
}

fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Ceiling(args) => run_ceiling(&args),
        Command::Bench(BenchCommand::Append(args)) => run_bench_append(&args),
        Command::Bench(BenchCommand::Recovery(args)) => {
            pstream_cli::bench::cli::run_recovery(&args).map_err(CliError::from)
        }
        Command::Bench(BenchCommand::Agent(args)) => {
            pstream_cli::bench::cli::run_agent(&args).map_err(CliError::from)
        }
        Command::Bench(BenchCommand::Streams(args)) => {
            pstream_cli::bench::cli::run_streams(&args).map_err(CliError::from)
        }
        Command::Verify(args) => verify_cmd::run(&args).map_err(CliError::from),
        Command::Demo(args) => demo::run(&args).map_err(CliError::from),
        Command::Crashtest(args) => crashtest_cmd::run(&args).map_err(CliError::from),
        Command::Inspect(args) => tier_cmd::run_inspect(&args).map_err(CliError::from),
        Command::Bench(BenchCommand::Tier(args)) => {
            tier_cmd::run_bench_tier(&args).map_err(CliError::from)
        }
        Command::Completions(args) => {
            let mut stdout = std::io::stdout().lock();
            clap_complete::generate(args.shell, &mut Cli::command(), "pstream", &mut stdout);
            stdout.flush().map_err(CliError::Stdout)
        }
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (default: warnings and errors), in colour only
/// when stderr is a terminal.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Fails only if a subscriber is already set, which then keeps working.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
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
        "{:<26} {:>14.0} {:>10.1}   ({} B records + one locked RMW)",
        "ack floor",
        report.ack_floor_ops_per_sec,
        1e9 / report.ack_floor_ops_per_sec.max(f64::MIN_POSITIVE),
        report.ack_floor_record_bytes
    )?;
    writeln!(
        out,
        "{:<26} {:>14} {:>10} {:>12.1}",
        "bulk 4 KiB copy + flush", "", "", report.bulk_4k_copy_flush_mib_per_sec
    )
}

fn phase_bar(hidden: bool, label: &'static str) -> ProgressBar {
    if hidden || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(1000);
    if let Ok(style) = ProgressStyle::with_template("{msg:>12} [{bar:40}] {percent:>3}%") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(label);
    bar
}

fn run_bench_append(args: &BenchAppendArgs) -> Result<(), CliError> {
    if args.pool_mib == 0 || args.pool_mib > POOL_MIB_MAX {
        return Err(CliError::PoolSize {
            pool_mib: args.pool_mib,
            max_mib: POOL_MIB_MAX,
        });
    }
    let dir = args.dir.clone().unwrap_or_else(ceiling::default_dir);
    let mut config =
        pstream_cli::bench::AppendBenchConfig::new(&dir, args.payload_bytes, args.threads);
    config.batch = args.batch;
    config.streams = args.streams.unwrap_or(args.threads);
    config.seconds = args.seconds;
    config.ceiling_seconds = args.ceiling_seconds;
    config.pool_bytes = args.pool_mib * MIB_BYTES;
    config.baseline = args.baseline;
    config.slices = args.slices;
    config.durability = args.durability.into();
    config.reclaim = args.reclaim.into();
    let bar = phase_bar(args.json, "appending");
    let report = pstream_cli::bench::run_append_bench(&config, &|fraction| {
        bar.set_position((fraction * 1000.0) as u64);
    })?;
    bar.finish_and_clear();
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report)?).map_err(CliError::Stdout)?;
        return Ok(());
    }
    let lines = [
        format!(
            "payload          {} B, {} thread(s), batch {}, {} stream(s)",
            report.payload_bytes, report.threads, report.batch, report.streams
        ),
        format!(
            "appended         {} records in {:.2} s ({} calls, {} fences)",
            report.ops, report.seconds, report.calls, report.fences
        ),
        format!(
            "throughput       {:.0} records/s, {:.1} MiB/s",
            report.ops_per_sec, report.mib_per_sec
        ),
        format!(
            "ack latency      p50 {} ns, p99 {} ns, p99.9 {} ns, p99.99 {} ns",
            report.latency_ns.p50,
            report.latency_ns.p99,
            report.latency_ns.p999,
            report.latency_ns.p9999
        ),
        format!(
            "ceiling          {:.0} payloads/s ({}, same run)",
            report.ceiling_ops_per_sec, report.ceiling_method
        ),
        format!(
            "ratio            {:.2} of the ceiling",
            report.ratio_to_ceiling
        ),
        format!(
            "ack floor        {:.0} records/s ({} B records + one locked RMW, same run); \
             ratio {:.2}",
            report.ack_floor_ops_per_sec, report.ack_floor_record_bytes, report.ratio_to_ack_floor
        ),
        format!(
            "persistence      {} with {} (dax: {})",
            report.guarantee, report.flush_instruction, report.dax
        ),
    ];
    for line in lines
        .into_iter()
        .chain(pstream_cli::bench::cli::baseline_lines(&report))
    {
        writeln!(out, "{line}").map_err(CliError::Stdout)?;
    }
    Ok(())
}

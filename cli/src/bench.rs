//! `pstream bench append`: a load generator for the engine's append path, measured side by
//! side with the raw persist floor of the same machine (the `ceiling`) in the same run.
//!
//! Every appending thread has its own streams; each op is one `append` (or one
//! `append_batch` of `batch` records) whose latency is taken around the call, so the
//! percentiles are acknowledgement latencies: the record is durable when they stop.
//! Throughput counts records (a batch of 16 counts 16).
//!
//! With a baseline (`--baseline pmemlog|fdatasync|okaywal`, see [`peer`]) the same threads,
//! payloads and batches drive a peer log on the same directory, interleaved with pstream in
//! `slices` alternating slices (pstream, peer, pstream, peer, ...) of `seconds / slices`
//! each, summed per side, so that drift (other work on the machine, frequency changes)
//! falls on both sides alike. The other benchmarks live beside it: [`recovery`] (open time
//! against the memory-bandwidth floor) and [`agent`] (fan-out and ephemeral round trips).

pub mod agent;
pub mod cli;
mod file_log;
#[cfg(feature = "okaywal")]
mod okaywal_log;
pub mod peer;
#[cfg(feature = "pmdk")]
pub mod pmdk;
pub mod recovery;
pub mod streams;

pub use peer::{Baseline, PeerError, PeerLog};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use pmem_emul::{Durability, MmapPool, Pmem, PoolOptions};
use pstream_engine::{EngineError, Log, LogConfig, OpenOptions, StreamId};
use serde::Serialize;

use crate::ceiling::{self, CeilingError};
use peer::PeerConfig;

use crate::interrupt::TempFile;

/// What to run.
#[derive(Debug, Clone)]
pub struct AppendBenchConfig {
    pub dir: PathBuf,
    pub payload_bytes: usize,
    pub threads: usize,
    pub batch: usize,
    pub streams: usize,
    /// Seconds of appending per side (pstream, and the baseline if any).
    pub seconds: f64,
    pub pool_bytes: usize,
    pub segment_size_bytes: u64,
    /// Seconds per phase of the same-run ceiling measurement (0 = skip it).
    pub ceiling_seconds: f64,
    /// The peer to run interleaved with pstream, if any.
    pub baseline: Option<Baseline>,
    /// Alternating slices per side when a baseline runs (A B A B ...).
    pub slices: usize,
    /// What pstream's pool promises (`Power`: an `msync` per flush, the like-for-like
    /// setting against file logs on a disk). The ceiling is measured with flush + fence.
    pub durability: Durability,
    /// Who scrubs the space pstream's threads trim (see [`Reclaim`]).
    pub reclaim: Reclaim,
}

/// How the steady state of a pstream run gets its space back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reclaim {
    /// Each thread trims its streams when the pool is full and scrubs the freed segments
    /// itself (`Log::reclaim` on the appending thread; the pool is zeroed on the path).
    Inline,
    /// Each thread trims its streams once it has written half its share of the pool, and a
    /// background thread (as an application's maintenance thread would) scrubs what was
    /// freed, ahead of need. An appender that still finds no free segment scrubs inline.
    Background,
}

impl AppendBenchConfig {
    pub fn new(dir: &Path, payload_bytes: usize, threads: usize) -> Self {
        AppendBenchConfig {
            dir: dir.to_path_buf(),
            payload_bytes,
            threads,
            batch: 1,
            streams: threads,
            seconds: 2.0,
            pool_bytes: 1 << 30,
            segment_size_bytes: 4 << 20,
            ceiling_seconds: 0.5,
            baseline: None,
            slices: DEFAULT_SLICES,
            durability: Durability::Process,
            reclaim: Reclaim::Background,
        }
    }
}

/// How long the background reclaimer sleeps when it found nothing to scrub.
const RECLAIM_IDLE: Duration = Duration::from_micros(200);

/// Slices per side when a baseline runs.
pub const DEFAULT_SLICES: usize = 4;

/// Latency percentiles in nanoseconds, read from an HDR histogram of 3 significant digits
/// (each figure within 0.1% of the exact sample; memory bounded whatever the run length).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct LatencyNs {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub p9999: u64,
    pub max: u64,
    /// Samples behind the percentiles.
    pub samples: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AppendBenchReport {
    /// Always `"append"` (results files mix benchmarks, one JSON object per line).
    pub bench: &'static str,
    /// Directory of the pool and of the peer's files.
    pub dir: String,
    pub payload_bytes: usize,
    pub threads: usize,
    pub batch: usize,
    pub streams: usize,
    /// Records appended (acknowledged).
    pub ops: u64,
    /// `append` / `append_batch` calls.
    pub calls: u64,
    pub seconds: f64,
    /// Records per second.
    pub ops_per_sec: f64,
    /// Payload MiB per second.
    pub mib_per_sec: f64,
    /// Acknowledgement latency of one call (every eighth call sampled).
    pub latency_ns: LatencyNs,
    pub fences: u64,
    /// Times the pool filled and the threads trimmed their streams to go on.
    pub pool_recycles: u64,
    /// Who scrubbed the trimmed space.
    pub reclaim: Reclaim,
    pub ceiling_ops_per_sec: f64,
    pub ceiling_method: &'static str,
    pub ratio_to_ceiling: f64,
    /// The ceiling's two methods for this payload size (0 when not measured).
    pub ceiling_copy_flush_fence_ops_per_sec: f64,
    pub ceiling_nt_fence_ops_per_sec: f64,
    /// One acknowledged record of this payload's on-media size per op, persisted as an
    /// append writes it, plus one locked read-modify-write (see `ceiling`; one thread; 0
    /// when not measured), and this run's records per second against it.
    pub ack_floor_ops_per_sec: f64,
    pub ack_floor_record_bytes: usize,
    pub ratio_to_ack_floor: f64,
    pub flush_instruction: &'static str,
    pub guarantee: &'static str,
    pub dax: bool,
    /// Slices per side (1 without a baseline).
    pub slices: usize,
    /// The peer run interleaved with pstream; the `baseline_*` fields are null without one.
    pub baseline: Option<Baseline>,
    /// What the peer's acknowledgement means in this run.
    pub baseline_mode: Option<String>,
    pub baseline_ops: Option<u64>,
    pub baseline_calls: Option<u64>,
    pub baseline_seconds: Option<f64>,
    pub baseline_ops_per_sec: Option<f64>,
    pub baseline_mib_per_sec: Option<f64>,
    pub baseline_latency_ns: Option<LatencyNs>,
    /// Times the peer recycled its space (rewind, truncate, checkpoint).
    pub baseline_recycles: Option<u64>,
    /// pstream's records per second over the peer's.
    pub ratio_to_baseline: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    #[error("invalid benchmark setting: {0}")]
    Config(String),
    #[error("pool: {0}")]
    Pool(#[from] pmem_emul::PmemError),
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    #[error("ceiling: {0}")]
    Ceiling(#[from] CeilingError),
    #[error(transparent)]
    Peer(#[from] PeerError),
    #[error("cannot remove benchmark pool {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("agent: {0}")]
    Agent(#[source] Box<pstream_agent::AgentError>),
    #[error("benchmark check failed: {0}")]
    Check(String),
    #[error("target missed: {what}")]
    TargetMissed { what: String },
    #[error("benchmark thread panicked")]
    ThreadPanicked,
    #[error("cannot encode the report as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot write the report: {0}")]
    Output(#[source] std::io::Error),
}

fn validate(config: &AppendBenchConfig) -> Result<(), BenchError> {
    let bad = |what: String| Err(BenchError::Config(what));
    if config.threads == 0 || config.threads > 64 {
        return bad(format!("threads {} must be 1..=64", config.threads));
    }
    if config.batch == 0 || config.batch > 4096 {
        return bad(format!("batch {} must be 1..=4096", config.batch));
    }
    if config.streams < config.threads {
        return bad(format!(
            "streams {} must be at least threads {}",
            config.streams, config.threads
        ));
    }
    if !(config.seconds.is_finite() && config.seconds > 0.0 && config.seconds <= 3600.0) {
        return bad(format!("seconds {} must be in (0, 3600]", config.seconds));
    }
    if config.slices == 0 || config.slices > 1000 {
        return bad(format!("slices {} must be 1..=1000", config.slices));
    }
    if config.payload_bytes > pstream_engine::MAX_PAYLOAD_BYTES {
        return bad(format!(
            "payload {} exceeds {}",
            config.payload_bytes,
            pstream_engine::MAX_PAYLOAD_BYTES
        ));
    }
    Ok(())
}

/// Runs the benchmark; `progress` gets the fraction of the append phase done.
pub fn run_append_bench(
    config: &AppendBenchConfig,
    progress: &(dyn Fn(f64) + Sync),
) -> Result<AppendBenchReport, BenchError> {
    validate(config)?;
    if let Some(baseline) = config.baseline {
        // Fail before anything is measured if this build lacks the peer.
        peer::check_available(baseline)?;
    }
    let ceiling = if config.ceiling_seconds > 0.0 {
        Some(ceiling::measure_ceiling(
            &config.dir,
            config.payload_bytes.max(1),
            config.ceiling_seconds,
        )?)
    } else {
        None
    };
    let path = config
        .dir
        .join(format!("pstream-bench-{}.pool", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let options = PoolOptions {
        durability: config.durability,
        try_dax: true,
    };
    let pool = MmapPool::create(&path, config.pool_bytes, options)?;
    let cleanup = TempFile::new(path.clone());
    // Touch every page first so page faults are not measured (the ceiling does the same).
    pool.zero_nt(0, pool.len_bytes());
    pool.fence();
    let flush_instruction = pool.flush_instruction().as_str();
    let guarantee = pool.guarantee().as_str();
    let dax = pool.is_dax();
    let log = Log::create(
        pool,
        LogConfig {
            segment_size_bytes: config.segment_size_bytes,
            stream_slot_count: 4096,
        },
        OpenOptions {
            lane_count: (config.threads * 2).max(4),
        },
    )?;
    let batch_bytes = log.batch_size_bytes(std::iter::repeat_n(config.payload_bytes, config.batch));
    if config.batch > 1 && batch_bytes > log.batch_capacity_bytes() {
        return Err(BenchError::Config(format!(
            "a batch of {} records of {} bytes takes {batch_bytes} bytes; one atomic batch \
             takes at most {} with {}-byte segments",
            config.batch,
            config.payload_bytes,
            log.batch_capacity_bytes(),
            config.segment_size_bytes
        )));
    }
    let peer = match config.baseline {
        Some(baseline) => Some(peer::open_peer(baseline, &peer_config(config))?),
        None => None,
    };
    let mut report = interleave(&log, peer.as_deref(), config, progress)?;
    if let Some(peer) = peer {
        peer.remove()?;
    }
    report.flush_instruction = flush_instruction;
    report.guarantee = guarantee;
    report.dax = dax;
    if let Some(ceiling) = ceiling {
        report.ceiling_ops_per_sec = ceiling.best_ops_per_sec;
        report.ceiling_method = ceiling.best_method;
        report.ratio_to_ceiling = report.ops_per_sec / ceiling.best_ops_per_sec;
        report.ceiling_copy_flush_fence_ops_per_sec = ceiling.copy_flush_fence_ops_per_sec;
        report.ceiling_nt_fence_ops_per_sec = ceiling.nt_fence_ops_per_sec;
        report.ack_floor_ops_per_sec = ceiling.ack_floor_ops_per_sec;
        report.ack_floor_record_bytes = ceiling.ack_floor_record_bytes;
        report.ratio_to_ack_floor = report.ops_per_sec / ceiling.ack_floor_ops_per_sec;
    }
    drop(log);
    cleanup.remove().map_err(|source| BenchError::Remove {
        path: path.clone(),
        source,
    })?;
    Ok(report)
}

fn peer_config(config: &AppendBenchConfig) -> PeerConfig {
    PeerConfig {
        dir: config.dir.clone(),
        space_bytes: config.pool_bytes,
    }
}

/// Runs pstream (and the peer, if any) in alternating slices on an open log.
fn interleave<P: Pmem>(
    log: &Log<P>,
    peer: Option<&dyn PeerLog>,
    config: &AppendBenchConfig,
    progress: &(dyn Fn(f64) + Sync),
) -> Result<AppendBenchReport, BenchError> {
    let side = PstreamSide::new(log, config)?;
    let slices = if peer.is_some() { config.slices } else { 1 };
    let sides = if peer.is_some() { 2 } else { 1 };
    let slice_budget = Duration::from_secs_f64(config.seconds / slices as f64);
    let total_slices = (slices * sides) as f64;
    let fences_before = log.stats().fences;
    let mut ours = Totals::default();
    let mut theirs = Totals::default();
    for slice in 0..slices {
        let done = (slice * sides) as f64;
        let ours_progress = |f: f64| progress((done + f) / total_slices);
        ours.add(side.run_slice(slice_budget, &ours_progress)?);
        if let Some(peer) = peer {
            let theirs_progress = |f: f64| progress((done + 1.0 + f) / total_slices);
            theirs.add(run_peer_slice(
                peer,
                config,
                slice_budget,
                &theirs_progress,
            )?);
        }
    }
    progress(1.0);
    let mut report = side.report(&mut ours, log.stats().fences - fences_before);
    report.slices = slices;
    if let Some(peer) = peer {
        let (ops_per_sec, mib_per_sec) = theirs.rates(config.payload_bytes);
        report.baseline = config.baseline;
        report.baseline_mode = Some(peer.mode());
        report.baseline_ops = Some(theirs.records);
        report.baseline_calls = Some(theirs.calls);
        report.baseline_seconds = Some(theirs.seconds);
        report.baseline_ops_per_sec = Some(ops_per_sec);
        report.baseline_mib_per_sec = Some(mib_per_sec);
        report.baseline_latency_ns = Some(theirs.percentiles());
        report.baseline_recycles = Some(peer.recycles());
        report.ratio_to_baseline = Some(if ops_per_sec > 0.0 {
            report.ops_per_sec / ops_per_sec
        } else {
            f64::INFINITY
        });
    }
    Ok(report)
}

/// Runs the timed append phase on an open log (also used by criterion benches): creates
/// `config.streams` streams and appends for `config.seconds` (no baseline, one slice).
pub fn measure<P: Pmem>(
    log: &Log<P>,
    config: &AppendBenchConfig,
    progress: &(dyn Fn(f64) + Sync),
) -> Result<AppendBenchReport, BenchError> {
    validate(config)?;
    let config = AppendBenchConfig {
        baseline: None,
        ..config.clone()
    };
    interleave(log, None, &config, progress)
}

/// Significant decimal digits of the latency histograms (0.1% resolution).
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;

/// What one side did over its slices.
#[derive(Debug)]
struct Totals {
    records: u64,
    calls: u64,
    seconds: f64,
    recycles: u64,
    /// Sampled call latencies in nanoseconds: a few tens of KiB however long the run.
    latencies_ns: Histogram<u64>,
}

impl Default for Totals {
    fn default() -> Self {
        Totals {
            records: 0,
            calls: 0,
            seconds: 0.0,
            recycles: 0,
            latencies_ns: latency_histogram(),
        }
    }
}

/// An empty auto-resizing latency histogram.
fn latency_histogram() -> Histogram<u64> {
    // `new` fails only for more than 5 significant digits.
    Histogram::new(LATENCY_SIGNIFICANT_DIGITS)
        .unwrap_or_else(|_| unreachable!("3 significant digits are valid"))
}

impl Totals {
    fn add(&mut self, slice: Totals) {
        self.records += slice.records;
        self.calls += slice.calls;
        self.seconds += slice.seconds;
        self.recycles += slice.recycles;
        // Both histograms auto-resize, so adding cannot go out of range.
        let _ = self.latencies_ns.add(&slice.latencies_ns);
    }

    /// Records one sampled latency (saturating at the histogram's range).
    fn record_latency(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
        // `record` grows the auto-resizing histogram; it fails only beyond its largest
        // trackable value, where the sample saturates.
        if self.latencies_ns.record(ns).is_err() {
            self.latencies_ns.saturating_record(ns);
        }
    }

    /// (records per second, payload MiB per second).
    fn rates(&self, payload_bytes: usize) -> (f64, f64) {
        if self.seconds <= 0.0 {
            return (0.0, 0.0);
        }
        let ops_per_sec = self.records as f64 / self.seconds;
        (
            ops_per_sec,
            ops_per_sec * payload_bytes as f64 / (1024.0 * 1024.0),
        )
    }

    fn percentiles(&self) -> LatencyNs {
        let latencies = &self.latencies_ns;
        if latencies.is_empty() {
            return LatencyNs::default();
        }
        LatencyNs {
            p50: latencies.value_at_quantile(0.5),
            p99: latencies.value_at_quantile(0.99),
            p999: latencies.value_at_quantile(0.999),
            p9999: latencies.value_at_quantile(0.9999),
            max: latencies.max(),
            samples: latencies.len(),
        }
    }
}

/// pstream's side: the streams of every thread and the payload.
struct PstreamSide<'a, P: Pmem> {
    log: &'a Log<P>,
    config: &'a AppendBenchConfig,
    streams: Vec<StreamId>,
    payload: Vec<u8>,
}

impl<'a, P: Pmem> PstreamSide<'a, P> {
    fn new(log: &'a Log<P>, config: &'a AppendBenchConfig) -> Result<Self, BenchError> {
        let mut streams = Vec::with_capacity(config.streams);
        for i in 0..config.streams {
            streams.push(log.create_stream(format!("bench-{i}").as_bytes())?);
        }
        Ok(PstreamSide {
            log,
            config,
            streams,
            payload: bench_payload(config.payload_bytes),
        })
    }

    /// Thread `t` appends to every `threads`-th stream starting at `t`.
    fn streams_of(&self, thread: usize) -> Vec<StreamId> {
        self.streams
            .iter()
            .copied()
            .skip(thread)
            .step_by(self.config.threads)
            .collect()
    }

    fn run_slice(&self, budget: Duration, progress: &(dyn Fn(f64) + Sync)) -> SliceResult {
        if self.config.reclaim == Reclaim::Inline {
            return self.run_appenders(budget, progress);
        }
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let reclaimer = scope.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if self.log.reclaim() == 0 {
                        std::thread::sleep(RECLAIM_IDLE);
                    }
                }
            });
            let result = self.run_appenders(budget, progress);
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            match reclaimer.join() {
                Ok(()) => result,
                Err(_) => Err(BenchError::ThreadPanicked),
            }
        })
    }

    /// Trims every stream of a thread to its tail.
    fn trim_all(&self, streams: &[StreamId]) -> Result<(), BenchError> {
        for &stream in streams {
            let (_, next) = self.log.bounds(stream)?;
            self.log.trim(stream, next)?;
        }
        Ok(())
    }

    fn run_appenders(&self, budget: Duration, progress: &(dyn Fn(f64) + Sync)) -> SliceResult {
        let background = self.config.reclaim == Reclaim::Background;
        // Half of a thread's share of the pool: trimmed early, the space is scrubbed in the
        // background while the thread fills the other half.
        let trim_every_bytes = self.config.pool_bytes as u64 / (2 * self.config.threads as u64);
        let record_bytes = self
            .log
            .batch_size_bytes(std::iter::repeat_n(self.config.payload_bytes, 1));
        run_threads(self.config.threads, budget, progress, |thread| {
            let streams = self.streams_of(thread);
            let batch_items: Vec<(StreamId, &[u8])> = (0..self.config.batch)
                .map(|i| (streams[i % streams.len()], self.payload.as_slice()))
                .collect();
            let mut next_stream = 0usize;
            let mut written_bytes = 0u64;
            move || {
                let outcome = if batch_items.len() == 1 {
                    next_stream = (next_stream + 1) % streams.len();
                    self.log
                        .append(streams[next_stream], &self.payload)
                        .map(|_| 1)
                } else {
                    self.log
                        .append_batch(&batch_items)
                        .map(|seqs| seqs.len() as u64)
                };
                match outcome {
                    Ok(records) => {
                        written_bytes += records * record_bytes;
                        if background && written_bytes >= trim_every_bytes {
                            written_bytes = 0;
                            self.trim_all(&streams)?;
                        }
                        Ok(Some(records))
                    }
                    Err(EngineError::PoolFull { .. }) => {
                        // Steady state: drop what this thread wrote and reuse the space.
                        written_bytes = 0;
                        self.trim_all(&streams)?;
                        self.log.reclaim();
                        Ok(None)
                    }
                    Err(error) => Err(error.into()),
                }
            }
        })
    }

    fn report(&self, totals: &mut Totals, fences: u64) -> AppendBenchReport {
        let config = self.config;
        let (ops_per_sec, mib_per_sec) = totals.rates(config.payload_bytes);
        AppendBenchReport {
            bench: "append",
            dir: config.dir.display().to_string(),
            payload_bytes: config.payload_bytes,
            threads: config.threads,
            batch: config.batch,
            streams: config.streams,
            ops: totals.records,
            calls: totals.calls,
            seconds: totals.seconds,
            ops_per_sec,
            mib_per_sec,
            latency_ns: totals.percentiles(),
            fences,
            pool_recycles: totals.recycles,
            reclaim: config.reclaim,
            ceiling_ops_per_sec: 0.0,
            ceiling_method: "not measured",
            ratio_to_ceiling: 0.0,
            ceiling_copy_flush_fence_ops_per_sec: 0.0,
            ceiling_nt_fence_ops_per_sec: 0.0,
            ack_floor_ops_per_sec: 0.0,
            ack_floor_record_bytes: 0,
            ratio_to_ack_floor: 0.0,
            flush_instruction: "n/a",
            guarantee: "n/a",
            dax: false,
            slices: 1,
            baseline: None,
            baseline_mode: None,
            baseline_ops: None,
            baseline_calls: None,
            baseline_seconds: None,
            baseline_ops_per_sec: None,
            baseline_mib_per_sec: None,
            baseline_latency_ns: None,
            baseline_recycles: None,
            ratio_to_baseline: None,
        }
    }
}

/// The payload every side appends: the same bytes, so checksums cost the same.
fn bench_payload(payload_bytes: usize) -> Vec<u8> {
    (0..payload_bytes).map(|i| (i * 31 % 251) as u8).collect()
}

/// One slice of the peer: the same threads, payload and batch as pstream's.
fn run_peer_slice(
    peer: &dyn PeerLog,
    config: &AppendBenchConfig,
    budget: Duration,
    progress: &(dyn Fn(f64) + Sync),
) -> SliceResult {
    let payload = bench_payload(config.payload_bytes);
    let recycles_before = peer.recycles();
    let mut totals = run_threads(config.threads, budget, progress, |_thread| {
        let batch: Vec<&[u8]> = vec![payload.as_slice(); config.batch];
        move || {
            if batch.len() == 1 {
                peer.append(batch[0])?;
            } else {
                peer.append_batch(&batch)?;
            }
            Ok(Some(batch.len() as u64))
        }
    })?;
    totals.recycles = peer.recycles() - recycles_before;
    Ok(totals)
}

type SliceResult = Result<Totals, BenchError>;

/// One call in this many is timed for the latency percentiles.
const LATENCY_SAMPLE_EVERY: u64 = 8;
/// Most calls between two reads of the clock for the time budget.
const CLOCK_CHECK_CALLS_MAX: u64 = 256;
/// The clock is read more often when calls take longer than this in between reads.
const CLOCK_CHECK_SPACING: Duration = Duration::from_micros(200);

/// Runs `threads` threads for `budget`. `make_op(thread)` builds a thread's operation: one
/// call, returning the records it made durable, or `None` if it recycled space instead (not
/// counted). Thread 0 reports progress.
fn run_threads<M, F>(
    threads: usize,
    budget: Duration,
    progress: &(dyn Fn(f64) + Sync),
    make_op: M,
) -> SliceResult
where
    M: Fn(usize) -> F + Sync,
    F: FnMut() -> Result<Option<u64>, BenchError>,
{
    let started = Instant::now();
    let results: Vec<SliceResult> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let make_op = &make_op;
                scope.spawn(move || {
                    let op = make_op(thread);
                    let progress = (thread == 0).then_some(progress);
                    drive(op, started, budget, progress)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or(Err(BenchError::ThreadPanicked)))
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut totals = Totals::default();
    for result in results {
        totals.add(result?);
    }
    totals.seconds = seconds;
    Ok(totals)
}

/// One thread's loop: calls `op` until `budget` has passed since `started`.
fn drive(
    mut op: impl FnMut() -> Result<Option<u64>, BenchError>,
    started: Instant,
    budget: Duration,
    progress: Option<&(dyn Fn(f64) + Sync)>,
) -> SliceResult {
    let mut totals = Totals::default();
    let mut attempts = 0u64;
    let mut next_check = 0u64;
    let mut check_every = 1u64;
    let mut last_check = started;
    loop {
        if attempts >= next_check {
            let now = Instant::now();
            if now - started >= budget {
                break;
            }
            // Read the clock about every CLOCK_CHECK_SPACING, whatever a call costs.
            check_every = if now - last_check < CLOCK_CHECK_SPACING {
                (check_every * 2).min(CLOCK_CHECK_CALLS_MAX)
            } else {
                (check_every / 2).max(1)
            };
            next_check = attempts + check_every;
            last_check = now;
            if let Some(progress) = progress {
                progress((now - started).as_secs_f64() / budget.as_secs_f64());
            }
        }
        attempts += 1;
        // Every eighth call is timed: the clock itself costs about as much as a persist.
        let timed = totals.calls % LATENCY_SAMPLE_EVERY == 0;
        let t0 = timed.then(Instant::now);
        let outcome = op()?;
        let latency = t0.map(|t0| t0.elapsed());
        match outcome {
            Some(records) => {
                totals.records += records;
                totals.calls += 1;
                if let Some(latency) = latency {
                    totals.record_latency(latency);
                }
            }
            None => totals.recycles += 1,
        }
    }
    Ok(totals)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn small_config(dir: &Path) -> AppendBenchConfig {
        let mut config = AppendBenchConfig::new(dir, 64, 2);
        config.seconds = 0.08;
        config.ceiling_seconds = 0.0;
        config.pool_bytes = 16 << 20;
        config.segment_size_bytes = 1 << 20;
        config
    }

    #[test]
    fn latency_percentiles_come_from_a_bounded_histogram() {
        let mut totals = Totals::default();
        // 1,000,000 samples: 1 us each, but every 1000th is 1 ms and the last one 50 ms.
        for i in 1..=1_000_000u64 {
            let us = match i {
                1_000_000 => 50_000,
                _ if i % 1000 == 0 => 1000,
                _ => 1,
            };
            totals.record_latency(Duration::from_micros(us));
        }
        let buckets_before = totals.latencies_ns.distinct_values();
        let mut other = Totals::default();
        other.record_latency(Duration::from_micros(1));
        totals.add(other);
        // The histogram holds buckets, not samples: its size does not grow with the count.
        assert_eq!(totals.latencies_ns.distinct_values(), buckets_before);
        let p = totals.percentiles();
        assert_eq!(p.samples, 1_000_001);
        let within = |value: u64, exact: u64| value.abs_diff(exact) * 1000 <= exact;
        assert!(within(p.p50, 1000), "{p:?}");
        assert!(within(p.p99, 1000), "{p:?}");
        assert!(p.p999 <= p.p9999, "{p:?}");
        assert!(within(p.p9999, 1_000_000), "{p:?}");
        assert!(within(p.max, 50_000_000), "{p:?}");
    }

    #[test]
    fn fdatasync_baseline_runs_interleaved_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = small_config(dir.path());
        config.baseline = Some(Baseline::Fdatasync);
        config.batch = 4;
        let fractions = std::sync::Mutex::new(Vec::new());
        let report = run_append_bench(&config, &|f| fractions.lock().unwrap().push(f)).unwrap();
        assert_eq!(report.slices, DEFAULT_SLICES);
        assert_eq!(report.baseline, Some(Baseline::Fdatasync));
        assert!(report.ops > 0 && report.ops % 4 == 0, "{report:?}");
        let baseline_ops = report.baseline_ops.unwrap();
        assert!(baseline_ops > 0 && baseline_ops % 4 == 0, "{report:?}");
        let ratio = report.ratio_to_baseline.unwrap();
        let expected = report.ops_per_sec / report.baseline_ops_per_sec.unwrap();
        assert!((ratio - expected).abs() < 1e-9 * expected.max(1.0));
        assert!(report.baseline_latency_ns.unwrap().p50 > 0);
        let json = serde_json::to_value(&report).unwrap();
        for key in [
            "baseline",
            "baseline_ops_per_sec",
            "ratio_to_baseline",
            "latency_ns",
        ] {
            assert!(!json[key].is_null(), "{key} missing in {json}");
        }
        assert_eq!(json["baseline"], "fdatasync");
        let fractions = fractions.into_inner().unwrap();
        assert!(fractions.windows(2).all(|w| w[0] <= w[1] + 1e-9));
        assert_eq!(fractions.last().copied(), Some(1.0));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// `Power`: the pool msyncs at every persist point and says so in the report.
    #[test]
    fn power_durability_is_used_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = small_config(dir.path());
        config.durability = Durability::Power;
        let report = run_append_bench(&config, &|_| {}).unwrap();
        assert!(report.ops > 0);
        assert!(
            report.dax || report.guarantee == pmem_emul::Guarantee::PowerFailMsync.as_str(),
            "{}",
            report.guarantee
        );
    }

    #[test]
    fn without_baseline_the_baseline_fields_are_null() {
        let dir = tempfile::tempdir().unwrap();
        let config = small_config(dir.path());
        let report = run_append_bench(&config, &|_| {}).unwrap();
        assert_eq!(report.slices, 1);
        let json = serde_json::to_value(&report).unwrap();
        assert!(json["baseline"].is_null());
        assert!(json["ratio_to_baseline"].is_null());
        assert!(report.ops > 0);
    }

    #[test]
    fn a_full_pool_is_recycled_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = small_config(dir.path());
        config.threads = 1;
        config.streams = 1;
        config.payload_bytes = 4096;
        config.pool_bytes = 8 << 20;
        config.seconds = 0.2;
        config.reclaim = Reclaim::Inline;
        let report = run_append_bench(&config, &|_| {}).unwrap();
        assert!(report.pool_recycles > 0, "{report:?}");
        assert_eq!(report.reclaim, Reclaim::Inline);
    }

    /// Background reclaim: the threads trim early and a reclaimer scrubs; the pool's
    /// space is reused many times over.
    #[test]
    fn background_reclaim_reuses_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = small_config(dir.path());
        config.payload_bytes = 4096;
        config.pool_bytes = 8 << 20;
        config.seconds = 0.2;
        assert_eq!(config.reclaim, Reclaim::Background);
        let report = run_append_bench(&config, &|_| {}).unwrap();
        let written_bytes =
            report.ops * pstream_engine::format::record::record_size_bytes(4096) as u64;
        assert!(written_bytes > 2 * config.pool_bytes as u64, "{report:?}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["reclaim"], "background");
    }

    #[test]
    fn missing_peers_fail_before_measuring_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        for baseline in Baseline::ALL.into_iter().filter(|b| !b.is_available()) {
            let mut config = small_config(dir.path());
            config.baseline = Some(baseline);
            let error = run_append_bench(&config, &|_| {}).unwrap_err();
            assert!(matches!(
                error,
                BenchError::Peer(PeerError::Unavailable { .. })
            ));
            assert!(error.to_string().contains("--features"), "{error}");
        }
    }

    #[test]
    fn bad_settings_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = small_config(dir.path());
        config.slices = 0;
        assert!(matches!(
            run_append_bench(&config, &|_| {}),
            Err(BenchError::Config(_))
        ));
    }
}

//! `pstream bench append`: a load generator for the engine's append path, measured side by
//! side with the raw persist floor of the same machine (the `ceiling`) in the same run.
//!
//! Every appending thread has its own streams; each op is one `append` (or one
//! `append_batch` of `batch` records) whose latency is taken around the call, so the
//! percentiles are acknowledgement latencies: the record is durable when they stop.
//! Throughput counts records (a batch of 16 counts 16).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pmem_emul::{Durability, MmapPool, Pmem, PoolOptions};
use pstream_engine::{EngineError, Log, LogConfig, OpenOptions, StreamId};
use serde::Serialize;

use crate::ceiling::{self, CeilingError};

/// What to run.
#[derive(Debug, Clone)]
pub struct AppendBenchConfig {
    pub dir: PathBuf,
    pub payload_bytes: usize,
    pub threads: usize,
    pub batch: usize,
    pub streams: usize,
    pub seconds: f64,
    pub pool_bytes: usize,
    pub segment_size_bytes: u64,
    /// Seconds per phase of the same-run ceiling measurement (0 = skip it).
    pub ceiling_seconds: f64,
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
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct LatencyNs {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AppendBenchReport {
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
    pub ceiling_ops_per_sec: f64,
    pub ceiling_method: &'static str,
    pub ratio_to_ceiling: f64,
    pub flush_instruction: &'static str,
    pub guarantee: &'static str,
    pub dax: bool,
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
    #[error("cannot remove benchmark pool {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
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
        durability: Durability::Process,
        try_dax: true,
    };
    let pool = MmapPool::create(&path, config.pool_bytes, options)?;
    let cleanup = RemoveOnDrop(path.clone());
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
    let mut report = measure(&log, config, progress)?;
    report.flush_instruction = flush_instruction;
    report.guarantee = guarantee;
    report.dax = dax;
    if let Some(ceiling) = ceiling {
        report.ceiling_ops_per_sec = ceiling.best_ops_per_sec;
        report.ceiling_method = ceiling.best_method;
        report.ratio_to_ceiling = report.ops_per_sec / ceiling.best_ops_per_sec;
    }
    drop(log);
    cleanup.remove()?;
    Ok(report)
}

struct RemoveOnDrop(PathBuf);

impl RemoveOnDrop {
    fn remove(self) -> Result<(), BenchError> {
        let path = self.0.clone();
        std::mem::forget(self);
        std::fs::remove_file(&path).map_err(|source| BenchError::Remove { path, source })
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs the timed append phase on an open log (also used by criterion benches).
pub fn measure<P: Pmem>(
    log: &Log<P>,
    config: &AppendBenchConfig,
    progress: &(dyn Fn(f64) + Sync),
) -> Result<AppendBenchReport, BenchError> {
    validate(config)?;
    let mut streams = Vec::with_capacity(config.streams);
    for i in 0..config.streams {
        streams.push(log.create_stream(format!("bench-{i}").as_bytes())?);
    }
    let payload: Vec<u8> = (0..config.payload_bytes)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let fences_before = log.stats().fences;
    let recycles = AtomicU64::new(0);
    let budget = Duration::from_secs_f64(config.seconds);
    let started = Instant::now();
    let results: Vec<ThreadResult> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..config.threads)
            .map(|t| {
                let mine: Vec<StreamId> = streams
                    .iter()
                    .copied()
                    .skip(t)
                    .step_by(config.threads)
                    .collect();
                let (payload, recycles) = (&payload, &recycles);
                scope.spawn(move || {
                    run_thread(
                        log,
                        &mine,
                        payload,
                        config.batch,
                        started,
                        budget,
                        recycles,
                        t == 0,
                        progress,
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Ok((0, 0, Vec::new()))))
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut records = 0u64;
    let mut calls = 0u64;
    let mut latencies: Vec<u32> = Vec::new();
    for result in results {
        let (r, c, l) = result?;
        records += r;
        calls += c;
        latencies.extend(l);
    }
    latencies.sort_unstable();
    let pick = |q: f64| -> u64 {
        if latencies.is_empty() {
            return 0;
        }
        let index = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        u64::from(latencies[index])
    };
    let ops_per_sec = records as f64 / elapsed;
    Ok(AppendBenchReport {
        payload_bytes: config.payload_bytes,
        threads: config.threads,
        batch: config.batch,
        streams: config.streams,
        ops: records,
        calls,
        seconds: elapsed,
        ops_per_sec,
        mib_per_sec: ops_per_sec * config.payload_bytes as f64 / (1024.0 * 1024.0),
        latency_ns: LatencyNs {
            p50: pick(0.5),
            p99: pick(0.99),
            p999: pick(0.999),
            max: pick(1.0),
        },
        fences: log.stats().fences - fences_before,
        pool_recycles: recycles.load(Ordering::Relaxed),
        ceiling_ops_per_sec: 0.0,
        ceiling_method: "not measured",
        ratio_to_ceiling: 0.0,
        flush_instruction: "n/a",
        guarantee: "n/a",
        dax: false,
    })
}

/// One call in this many is timed for the latency percentiles.
const LATENCY_SAMPLE_EVERY: u64 = 8;

type ThreadResult = Result<(u64, u64, Vec<u32>), EngineError>;

#[allow(clippy::too_many_arguments)]
fn run_thread<P: Pmem>(
    log: &Log<P>,
    streams: &[StreamId],
    payload: &[u8],
    batch: usize,
    started: Instant,
    budget: Duration,
    recycles: &AtomicU64,
    reports_progress: bool,
    progress: &(dyn Fn(f64) + Sync),
) -> ThreadResult {
    let mut latencies = Vec::with_capacity(1 << 20);
    let mut records = 0u64;
    let mut calls = 0u64;
    let batch_items: Vec<(StreamId, &[u8])> = (0..batch)
        .map(|i| (streams[i % streams.len()], payload))
        .collect();
    let mut next_stream = 0usize;
    loop {
        if calls % 256 == 0 {
            let elapsed = started.elapsed();
            if elapsed >= budget {
                break;
            }
            if reports_progress {
                progress(elapsed.as_secs_f64() / budget.as_secs_f64());
            }
        }
        // Every eighth call is timed: the clock itself costs about as much as a persist.
        let timed = calls % LATENCY_SAMPLE_EVERY == 0;
        let t0 = timed.then(Instant::now);
        let outcome = if batch == 1 {
            next_stream = (next_stream + 1) % streams.len();
            log.append(streams[next_stream], payload).map(|_| 1)
        } else {
            log.append_batch(&batch_items).map(|seqs| seqs.len() as u64)
        };
        let latency_ns = t0.map(|t0| t0.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32);
        match outcome {
            Ok(count) => {
                records += count;
                calls += 1;
                latencies.extend(latency_ns);
            }
            Err(EngineError::PoolFull { .. }) => {
                // Steady state: drop what this thread wrote and reuse the space.
                for &stream in streams {
                    let (_, next) = log.bounds(stream)?;
                    log.trim(stream, next)?;
                }
                log.reclaim();
                recycles.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => return Err(error),
        }
    }
    Ok((records, calls, latencies))
}

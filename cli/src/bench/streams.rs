//! `pstream bench streams`: what a stream costs (issue 18). For each count N: a fresh pool
//! formatted for N streams; N streams created, each durably (the create rate); one small
//! record appended to each; the pool closed and opened again (the open time, per stream);
//! and the process memory the open log holds for N idle streams (anonymous RSS after the
//! open minus before it, per stream).
//!
//! Memory is read from `/proc/self/status` (`RssAnon`): the pool is a file mapping, whose
//! pages are file-backed and would otherwise be counted as the process's memory.

use std::path::{Path, PathBuf};
use std::time::Instant;

use pmem_emul::{Durability, MmapPool, PoolOptions};
use pstream_engine::{Log, LogConfig, OpenOptions};
use serde::Serialize;

use super::BenchError;

/// Issue 18's targets.
pub const TARGET_CREATES_PER_SEC: f64 = 1_000_000.0;
pub const TARGET_RSS_BYTES_PER_IDLE_STREAM: f64 = 64.0;
/// Opening a pool of 10 million streams in at most 2 s: 0.2 us per stream.
pub const TARGET_OPEN_US_PER_STREAM: f64 = 0.2;
/// Counts measured when the caller does not choose.
pub const DEFAULT_COUNTS: [u64; 2] = [100_000, 1_000_000];
const MIB_BYTES: u64 = 1 << 20;
/// Bytes of pool per stream, generously: its table slot and one small record with its
/// header and alignment, twice over (open segments, slack).
const POOL_BYTES_PER_STREAM: u64 = 2 * (64 + 128);

/// What to run.
#[derive(Debug, Clone)]
pub struct StreamsBenchConfig {
    pub dir: PathBuf,
    pub counts: Vec<u64>,
    /// Payload of the one record each stream gets.
    pub payload_bytes: usize,
    pub segment_size_bytes: u64,
}

impl StreamsBenchConfig {
    pub fn new(dir: &Path) -> Self {
        StreamsBenchConfig {
            dir: dir.to_path_buf(),
            counts: DEFAULT_COUNTS.to_vec(),
            payload_bytes: 16,
            segment_size_bytes: 4 << 20,
        }
    }
}

/// One count.
#[derive(Debug, Clone, Serialize)]
pub struct StreamsPoint {
    pub streams: u64,
    pub pool_bytes: u64,
    /// Time to create every stream, each durable before the next.
    pub create_seconds: f64,
    pub creates_per_sec: f64,
    /// Time to append one record to every stream.
    pub append_seconds: f64,
    /// Anonymous RSS the log held after the creates and appends, per stream (hot state).
    pub rss_bytes_per_live_stream: f64,
    /// Time of `MmapPool::open` + `Log::open` of the closed pool.
    pub open_seconds: f64,
    pub open_us_per_stream: f64,
    /// Anonymous RSS the reopened log holds, per (idle) stream.
    pub rss_bytes_per_idle_stream: f64,
    /// Measured value / target, for each target (at most 1 meets the target for RSS and
    /// open time; at least 1 for the create rate).
    pub creates_ratio_to_target: f64,
    pub rss_ratio_to_target: f64,
    pub open_ratio_to_target: f64,
}

/// The result of [`run_streams_bench`].
#[derive(Debug, Clone, Serialize)]
pub struct StreamsBenchReport {
    pub bench: &'static str,
    pub payload_bytes: usize,
    pub dir: String,
    pub points: Vec<StreamsPoint>,
}

/// The process's anonymous resident memory, in bytes (Linux: `RssAnon` of
/// `/proc/self/status`).
pub fn rss_anon_bytes() -> Result<u64, BenchError> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(BenchError::Output)?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("RssAnon:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| BenchError::Check("no RssAnon line in /proc/self/status".to_owned()))
}

fn validate(config: &StreamsBenchConfig) -> Result<(), BenchError> {
    if config.counts.is_empty() || config.counts.iter().any(|&n| n == 0 || n > u32::MAX as u64) {
        return Err(BenchError::Config(format!(
            "counts {:?} must be 1 to {} each, at least one",
            config.counts,
            u32::MAX
        )));
    }
    if config.payload_bytes == 0 || config.payload_bytes > 64 {
        return Err(BenchError::Config(format!(
            "payload {} must be 1..=64 bytes (one small record per stream)",
            config.payload_bytes
        )));
    }
    Ok(())
}

/// Runs every count; `progress(count_index, fraction)`.
pub fn run_streams_bench(
    config: &StreamsBenchConfig,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<StreamsBenchReport, BenchError> {
    validate(config)?;
    let mut points = Vec::with_capacity(config.counts.len());
    for (index, &count) in config.counts.iter().enumerate() {
        points.push(measure_count(config, count, &mut |fraction| {
            progress(index, fraction)
        })?);
    }
    Ok(StreamsBenchReport {
        bench: "streams",
        payload_bytes: config.payload_bytes,
        dir: config.dir.display().to_string(),
        points,
    })
}

fn measure_count(
    config: &StreamsBenchConfig,
    count: u64,
    progress: &mut dyn FnMut(f64),
) -> Result<StreamsPoint, BenchError> {
    let pool_bytes = (count * POOL_BYTES_PER_STREAM + 64 * MIB_BYTES)
        .next_multiple_of(config.segment_size_bytes)
        + 8 * config.segment_size_bytes;
    let path = config.dir.join(format!(
        "pstream-bench-streams-{}-{count}.pool",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    let pool_options = PoolOptions {
        durability: Durability::Process,
        try_dax: true,
    };
    let log_config = LogConfig {
        segment_size_bytes: config.segment_size_bytes,
        stream_slot_count: count,
    };
    let options = OpenOptions { lane_count: 4 };
    let result = (|| {
        let pool = MmapPool::create(&path, pool_bytes as usize, pool_options)?;
        let log = Log::create(pool, log_config, options)?;
        let rss_before = rss_anon_bytes()?;
        let started = Instant::now();
        let mut ids = Vec::with_capacity(count as usize);
        let step = (count / 100).max(1);
        for n in 0..count {
            ids.push(log.create_stream(b"s")?);
            if n % step == 0 {
                progress(0.5 * n as f64 / count as f64);
            }
        }
        let create_seconds = started.elapsed().as_secs_f64();
        let payload = vec![0x5a; config.payload_bytes];
        let started = Instant::now();
        for (n, id) in ids.iter().enumerate() {
            log.append(*id, &payload)?;
            if n as u64 % step == 0 {
                progress(0.5 + 0.4 * n as f64 / count as f64);
            }
        }
        let append_seconds = started.elapsed().as_secs_f64();
        let rss_live = rss_anon_bytes()?.saturating_sub(rss_before);
        drop(ids);
        drop(log.close());
        let rss_closed = rss_anon_bytes()?;
        let started = Instant::now();
        let pool = MmapPool::open(&path, pool_options)?;
        let (log, report) = Log::open(pool, options)?;
        let open_seconds = started.elapsed().as_secs_f64();
        let rss_idle = rss_anon_bytes()?.saturating_sub(rss_closed);
        let streams = log.list_streams().len() as u64;
        if streams != count || report.live_records != count {
            return Err(BenchError::Check(format!(
                "reopened pool holds {streams} streams and {} records, expected {count} of each",
                report.live_records
            )));
        }
        drop(log);
        progress(1.0);
        let creates_per_sec = count as f64 / create_seconds;
        let open_us_per_stream = open_seconds * 1e6 / count as f64;
        let rss_bytes_per_idle_stream = rss_idle as f64 / count as f64;
        Ok(StreamsPoint {
            streams: count,
            pool_bytes,
            create_seconds,
            creates_per_sec,
            append_seconds,
            rss_bytes_per_live_stream: rss_live as f64 / count as f64,
            open_seconds,
            open_us_per_stream,
            rss_bytes_per_idle_stream,
            creates_ratio_to_target: creates_per_sec / TARGET_CREATES_PER_SEC,
            rss_ratio_to_target: rss_bytes_per_idle_stream / TARGET_RSS_BYTES_PER_IDLE_STREAM,
            open_ratio_to_target: open_us_per_stream / TARGET_OPEN_US_PER_STREAM,
        })
    })();
    let removed = std::fs::remove_file(&path);
    let point = result?;
    removed.map_err(|source| BenchError::Remove { path, source })?;
    Ok(point)
}

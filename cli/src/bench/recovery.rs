//! `pstream bench recovery`: how long [`Log::open`] (recovery) takes on a pool holding N MiB
//! of live hot data, beside the memory-bandwidth floor of the same machine measured in the
//! same run.
//!
//! For each size: a fresh pool is filled with `payload_bytes` records spread round-robin
//! over `streams` streams until N MiB of payload is live, then closed. Then, `repeats`
//! times and interleaved (floor, recovery, floor, recovery, ...):
//!
//! * **floor**: map the pool afresh ([`MmapPool::open`]) and read the bytes recovery scans
//!   (`bytes_scanned` of its report) once, summing them as 64-bit words: what any scan of
//!   that data costs at least, page faults of the fresh mapping included; then read them
//!   once more (the warm floor: memory bandwidth alone, the mapping now resident);
//! * **recovery**: [`MmapPool::open`] + [`Log::open`], which rebuilds every stream's index
//!   from the segments.
//!
//! The medians are reported; the pool file is removed before the next size.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pmem_emul::{Durability, MmapPool, Pmem, PoolOptions};
use pstream_engine::format::record::record_size_bytes;
use pstream_engine::format::segment::SEGMENT_HEADER_BYTES;
use pstream_engine::{EngineError, Log, LogConfig, OpenOptions, StreamId};
use serde::Serialize;

use super::BenchError;

/// The target of issue 7: recovery of one GiB of live hot data in at most this many seconds.
pub const TARGET_SECONDS_PER_GIB: f64 = 0.25;
/// Sizes measured when the caller does not choose.
pub const DEFAULT_SIZES_MIB: [usize; 4] = [64, 256, 1024, 4096];
const GIB_BYTES: f64 = (1u64 << 30) as f64;
const MIB_BYTES: usize = 1 << 20;
/// Records per `append_batch` while filling.
const FILL_BATCH_RECORDS: usize = 64;

/// What to run.
#[derive(Debug, Clone)]
pub struct RecoveryBenchConfig {
    pub dir: PathBuf,
    /// Live payload per measured pool, in MiB.
    pub sizes_mib: Vec<usize>,
    pub payload_bytes: usize,
    pub streams: usize,
    pub segment_size_bytes: u64,
    /// Floor and recovery measurements per size (the median is reported).
    pub repeats: usize,
}

impl RecoveryBenchConfig {
    pub fn new(dir: &Path) -> Self {
        RecoveryBenchConfig {
            dir: dir.to_path_buf(),
            sizes_mib: DEFAULT_SIZES_MIB.to_vec(),
            payload_bytes: 1024,
            streams: 16,
            segment_size_bytes: 4 << 20,
            repeats: 3,
        }
    }
}

/// One pool size.
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryPoint {
    /// Live payload, as asked.
    pub live_mib: usize,
    pub live_payload_bytes: u64,
    /// Live records and their bytes on media (headers and alignment included).
    pub live_records: u64,
    pub live_record_bytes: u64,
    pub pool_bytes: usize,
    pub fill_seconds: f64,
    /// Median time of `MmapPool::open` + `Log::open`.
    pub recovery_seconds: f64,
    pub recovery_seconds_min: f64,
    /// `recovery_seconds` per GiB of live payload.
    pub recovery_seconds_per_gib: f64,
    /// What recovery reported scanning.
    pub segments_scanned: u64,
    pub bytes_scanned: u64,
    /// Median time to map the pool afresh and read `bytes_scanned` bytes once.
    pub floor_seconds: f64,
    pub floor_seconds_per_gib: f64,
    pub floor_gib_per_sec: f64,
    /// The same read again on the now resident mapping: bandwidth without page faults.
    pub floor_warm_seconds: f64,
    pub floor_warm_gib_per_sec: f64,
    /// `recovery_seconds / floor_seconds`: how far recovery is from a plain read.
    pub ratio_to_floor: f64,
    pub target_seconds_per_gib: f64,
    /// `recovery_seconds_per_gib / target_seconds_per_gib` (at most 1 meets the target).
    pub ratio_to_target: f64,
}

/// The result of [`run_recovery_bench`].
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryBenchReport {
    pub bench: &'static str,
    pub payload_bytes: usize,
    pub streams: usize,
    pub repeats: usize,
    pub dir: String,
    pub points: Vec<RecoveryPoint>,
}

/// The stages of one size, reported to the progress callback with the size's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryStage {
    Filling,
    Measuring,
}

fn validate(config: &RecoveryBenchConfig) -> Result<(), BenchError> {
    let bad = |what: String| Err(BenchError::Config(what));
    if config.sizes_mib.is_empty() || config.sizes_mib.iter().any(|&s| s == 0 || s > 1 << 20) {
        return bad(format!(
            "sizes {:?} must be 1 to {} MiB each, at least one",
            config.sizes_mib,
            1 << 20
        ));
    }
    if config.payload_bytes == 0 || config.payload_bytes > pstream_engine::MAX_PAYLOAD_BYTES {
        return bad(format!(
            "payload {} must be 1..={}",
            config.payload_bytes,
            pstream_engine::MAX_PAYLOAD_BYTES
        ));
    }
    if config.streams == 0 || config.streams > 4096 {
        return bad(format!("streams {} must be 1..=4096", config.streams));
    }
    if config.repeats == 0 || config.repeats > 100 {
        return bad(format!("repeats {} must be 1..=100", config.repeats));
    }
    let records_per_segment = (config.segment_size_bytes as usize)
        .saturating_sub(SEGMENT_HEADER_BYTES)
        / record_size_bytes(config.payload_bytes);
    if records_per_segment == 0 {
        return bad(format!(
            "a {} B record does not fit a {} B segment",
            config.payload_bytes, config.segment_size_bytes
        ));
    }
    Ok(())
}

/// Runs every size; `progress(size_index, stage, fraction)`.
pub fn run_recovery_bench(
    config: &RecoveryBenchConfig,
    progress: &mut dyn FnMut(usize, RecoveryStage, f64),
) -> Result<RecoveryBenchReport, BenchError> {
    validate(config)?;
    let mut points = Vec::with_capacity(config.sizes_mib.len());
    for (index, &live_mib) in config.sizes_mib.iter().enumerate() {
        let point = measure_size(config, live_mib, &mut |stage, fraction| {
            progress(index, stage, fraction)
        })?;
        points.push(point);
    }
    Ok(RecoveryBenchReport {
        bench: "recovery",
        payload_bytes: config.payload_bytes,
        streams: config.streams,
        repeats: config.repeats,
        dir: config.dir.display().to_string(),
        points,
    })
}

/// Pool bytes for `live_payload_bytes` of records: every segment but the open ones full,
/// one open segment per lane, the tables, and 5% slack.
fn pool_bytes_for(config: &RecoveryBenchConfig, live_payload_bytes: u64, lanes: usize) -> usize {
    let record_bytes = record_size_bytes(config.payload_bytes) as u64;
    let records = live_payload_bytes.div_ceil(config.payload_bytes as u64);
    let per_segment = (config.segment_size_bytes - SEGMENT_HEADER_BYTES as u64) / record_bytes;
    let segments = records.div_ceil(per_segment) + lanes as u64 + 2;
    let data_bytes = segments * config.segment_size_bytes;
    let bytes = data_bytes + data_bytes / 20 + 16 * MIB_BYTES as u64;
    (bytes as usize).next_multiple_of(MIB_BYTES)
}

fn measure_size(
    config: &RecoveryBenchConfig,
    live_mib: usize,
    progress: &mut dyn FnMut(RecoveryStage, f64),
) -> Result<RecoveryPoint, BenchError> {
    let live_payload_target = (live_mib * MIB_BYTES) as u64;
    let options = OpenOptions { lane_count: 4 };
    let pool_bytes = pool_bytes_for(config, live_payload_target, options.lane_count);
    let path = config.dir.join(format!(
        "pstream-bench-recovery-{}-{live_mib}.pool",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    let pool_options = PoolOptions {
        durability: Durability::Process,
        try_dax: true,
    };
    let pool = MmapPool::create(&path, pool_bytes, pool_options)?;
    let cleanup = crate::interrupt::TempFile::new(path.clone());
    let fill_started = Instant::now();
    let log = Log::create(
        pool,
        LogConfig {
            segment_size_bytes: config.segment_size_bytes,
            stream_slot_count: 4096,
        },
        options,
    )?;
    let (records, payload_bytes) = fill(&log, config, live_payload_target, progress)?;
    let fill_seconds = fill_started.elapsed().as_secs_f64();
    log.close().close()?;

    let mut floors = Vec::with_capacity(config.repeats);
    let mut floors_warm = Vec::with_capacity(config.repeats);
    let mut recoveries = Vec::with_capacity(config.repeats);
    let mut scanned = (0u64, 0u64);
    let mut live = (0u64, 0u64);
    let steps = 2 * config.repeats;
    for repeat in 0..config.repeats {
        // Recovery first on the first round: it says how many bytes the floor must read.
        let started = Instant::now();
        let pool = MmapPool::open(&path, pool_options)?;
        let (log, report) = Log::open(pool, options)?;
        recoveries.push(started.elapsed());
        scanned = (report.segments_scanned, report.bytes_scanned);
        live = (report.live_records, report.live_bytes);
        drop(log);
        progress(
            RecoveryStage::Measuring,
            (2 * repeat + 1) as f64 / steps as f64,
        );
        let (cold, warm) = read_floor(&path, pool_options, scanned.1 as usize)?;
        floors.push(cold);
        floors_warm.push(warm);
        progress(
            RecoveryStage::Measuring,
            (2 * repeat + 2) as f64 / steps as f64,
        );
    }
    cleanup.remove().map_err(|source| BenchError::Remove {
        path: path.clone(),
        source,
    })?;
    if live.0 != records {
        return Err(BenchError::Check(format!(
            "recovery found {} live records, {records} were written",
            live.0
        )));
    }
    let recovery_seconds = median(&mut recoveries);
    let floor_seconds = median(&mut floors);
    let floor_warm_seconds = median(&mut floors_warm);
    let gib = payload_bytes as f64 / GIB_BYTES;
    let recovery_seconds_per_gib = recovery_seconds / gib;
    Ok(RecoveryPoint {
        live_mib,
        live_payload_bytes: payload_bytes,
        live_records: live.0,
        live_record_bytes: live.1,
        pool_bytes,
        fill_seconds,
        recovery_seconds,
        recovery_seconds_min: recoveries.iter().min().map_or(0.0, Duration::as_secs_f64),
        recovery_seconds_per_gib,
        segments_scanned: scanned.0,
        bytes_scanned: scanned.1,
        floor_seconds,
        floor_seconds_per_gib: floor_seconds / gib,
        floor_gib_per_sec: scanned.1 as f64 / GIB_BYTES / floor_seconds,
        floor_warm_seconds,
        floor_warm_gib_per_sec: scanned.1 as f64 / GIB_BYTES / floor_warm_seconds,
        ratio_to_floor: recovery_seconds / floor_seconds,
        target_seconds_per_gib: TARGET_SECONDS_PER_GIB,
        ratio_to_target: recovery_seconds_per_gib / TARGET_SECONDS_PER_GIB,
    })
}

/// Appends `payload_bytes` records round-robin over the streams until `target` bytes of
/// payload are live. Returns (records, payload bytes).
fn fill<P: Pmem>(
    log: &Log<P>,
    config: &RecoveryBenchConfig,
    target: u64,
    progress: &mut dyn FnMut(RecoveryStage, f64),
) -> Result<(u64, u64), BenchError> {
    let mut streams: Vec<StreamId> = Vec::with_capacity(config.streams);
    for i in 0..config.streams {
        streams.push(log.create_stream(format!("recovery-{i}").as_bytes())?);
    }
    let payload: Vec<u8> = (0..config.payload_bytes)
        .map(|i| (i * 17 % 253) as u8)
        .collect();
    let records_target = target.div_ceil(config.payload_bytes as u64);
    let mut records = 0u64;
    let mut batch: Vec<(StreamId, &[u8])> = Vec::with_capacity(FILL_BATCH_RECORDS);
    let report_every = (records_target / 100).max(1);
    // A batch is atomic and fits one segment: fewer records per batch for large payloads.
    let per_batch = (log.batch_capacity_bytes() / log.batch_size_bytes([config.payload_bytes]))
        .clamp(1, FILL_BATCH_RECORDS as u64);
    while records < records_target {
        let count = (records_target - records).min(per_batch);
        batch.clear();
        batch.extend((0..count).map(|i| {
            let stream = streams[((records + i) % streams.len() as u64) as usize];
            (stream, payload.as_slice())
        }));
        match log.append_batch(&batch) {
            Ok(_) => {}
            Err(EngineError::PoolFull { segment_count }) => {
                return Err(BenchError::Config(format!(
                    "pool of {segment_count} segments filled after {records} records"
                )))
            }
            Err(error) => return Err(error.into()),
        }
        let before = records;
        records += count;
        if records / report_every != before / report_every {
            progress(
                RecoveryStage::Filling,
                records as f64 / records_target as f64,
            );
        }
    }
    Ok((records, records * config.payload_bytes as u64))
}

/// Maps the pool afresh and reads `len_bytes` from the start of its data region once
/// (cold: open and page faults included), then once more (warm: resident pages only).
fn read_floor(
    path: &Path,
    options: PoolOptions,
    len_bytes: usize,
) -> Result<(Duration, Duration), BenchError> {
    let started = Instant::now();
    let pool = MmapPool::open(path, options)?;
    let len_bytes = len_bytes.min(pool.len_bytes());
    let sum = checksum_words(pool.read(0, len_bytes));
    let cold = started.elapsed();
    std::hint::black_box(sum);
    let started = Instant::now();
    let sum = checksum_words(pool.read(0, len_bytes));
    let warm = started.elapsed();
    std::hint::black_box(sum);
    drop(pool);
    Ok((cold, warm))
}

/// A wrapping sum of the 64-bit little-endian words of `bytes` (and its tail bytes): reads
/// every byte once, at about memory bandwidth.
pub fn checksum_words(bytes: &[u8]) -> u64 {
    let mut lanes = [0u64; 8];
    let mut blocks = bytes.chunks_exact(64);
    for block in &mut blocks {
        for (lane, word) in lanes.iter_mut().zip(block.chunks_exact(8)) {
            let mut le = [0u8; 8];
            le.copy_from_slice(word);
            *lane = lane.wrapping_add(u64::from_le_bytes(le));
        }
    }
    let tail = blocks
        .remainder()
        .iter()
        .fold(0u64, |sum, &b| sum.wrapping_add(u64::from(b)));
    lanes.iter().fold(tail, |sum, &lane| sum.wrapping_add(lane))
}

fn median(samples: &mut [Duration]) -> f64 {
    samples.sort_unstable();
    samples
        .get(samples.len() / 2)
        .map_or(0.0, Duration::as_secs_f64)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn checksum_reads_every_byte() {
        let bytes: Vec<u8> = (0..131u32).map(|i| i as u8).collect();
        let mut expected = 0u64;
        let mut words = bytes.chunks_exact(64 * 2 / 2);
        for block in &mut words {
            for word in block.chunks_exact(8) {
                let mut le = [0u8; 8];
                le.copy_from_slice(word);
                expected = expected.wrapping_add(u64::from_le_bytes(le));
            }
        }
        for &b in words.remainder() {
            expected = expected.wrapping_add(u64::from(b));
        }
        assert_eq!(checksum_words(&bytes), expected);
        assert_eq!(checksum_words(&[]), 0);
    }

    #[test]
    fn small_pools_recover_every_record_and_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = RecoveryBenchConfig::new(dir.path());
        config.sizes_mib = vec![2, 5];
        config.segment_size_bytes = 1 << 20;
        config.repeats = 2;
        let mut stages = Vec::new();
        let report =
            run_recovery_bench(&config, &mut |i, stage, _| stages.push((i, stage))).unwrap();
        assert_eq!(report.points.len(), 2);
        for point in &report.points {
            assert_eq!(
                point.live_payload_bytes,
                (point.live_mib * MIB_BYTES) as u64
            );
            assert_eq!(point.live_records, point.live_payload_bytes / 1024);
            assert!(point.bytes_scanned >= point.live_record_bytes);
            assert!(point.recovery_seconds > 0.0 && point.floor_seconds > 0.0);
            assert!(point.ratio_to_floor > 0.0);
        }
        assert!(stages.contains(&(1, RecoveryStage::Measuring)));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let json = serde_json::to_value(&report).unwrap();
        assert!(json["points"][0]["recovery_seconds_per_gib"].is_number());
    }

    #[test]
    fn bad_settings_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = RecoveryBenchConfig::new(dir.path());
        config.sizes_mib = vec![];
        assert!(run_recovery_bench(&config, &mut |_, _, _| {}).is_err());
        config.sizes_mib = vec![1];
        config.payload_bytes = 8 << 20;
        assert!(run_recovery_bench(&config, &mut |_, _, _| {}).is_err());
    }
}

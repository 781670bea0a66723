//! The persist ceiling of this machine: how many payloads per second can be made durable one
//! at a time, with nothing but the flush and fence instructions, on a fresh [`MmapPool`].
//!
//! No log can acknowledge appends faster than this, so every later benchmark reports its
//! figure as a fraction of the ceiling. Two ways to persist one payload are measured:
//!
//! * copy + flush + fence: ordinary stores, cache-line write-back of the payload, `sfence`;
//! * non-temporal store + fence: `write_nt` (streaming stores) then `sfence`;
//!
//! plus the bulk bandwidth of copy + flush + fence with 4 KiB payloads, and the *ack floor*:
//! the rate of one acknowledged record of the engine's real on-media size for this payload
//! (header and padding included), written as an append must write it (copy + flush, or
//! non-temporal stores from the engine's threshold on, then one fence) followed by one
//! locked read-modify-write (an append publishes its record with at least one). No append
//! can be faster than that; `pstream bench append` reports its rate against it. Payloads go to
//! successive offsets and wrap around the pool; the pool is pre-faulted first, so page faults
//! are not measured.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pmem_emul::{Durability, MmapPool, Pmem, PmemError, PoolOptions};
use pstream_engine::format::record::record_size_bytes;
use pstream_engine::NT_COPY_MIN_BYTES;

/// Pool size when the caller does not choose one: larger than any last-level cache.
pub const DEFAULT_POOL_BYTES: usize = 64 << 20;
/// Payload size of the bulk bandwidth measurement.
pub const BULK_PAYLOAD_BYTES: usize = 4096;
/// Longest measurement time accepted per method.
pub const SECONDS_MAX: f64 = 3600.0;
/// Operations between two clock reads in a measurement loop.
const CLOCK_CHECK_INTERVAL_OPS: u64 = 64;
/// Least time between two progress reports.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(50);
const MIB: f64 = 1024.0 * 1024.0;

/// What to measure.
#[derive(Debug, Clone, PartialEq)]
pub struct CeilingConfig {
    /// Directory for the temporary pool file.
    pub dir: PathBuf,
    /// Bytes per payload.
    pub payload_bytes: usize,
    /// Measurement time of each method.
    pub seconds: f64,
    /// Data region of the temporary pool; a whole number of pages.
    pub pool_bytes: usize,
}

impl CeilingConfig {
    /// A configuration with the default pool size.
    pub fn new(dir: &Path, payload_bytes: usize, seconds: f64) -> Self {
        CeilingConfig {
            dir: dir.to_path_buf(),
            payload_bytes,
            seconds,
            pool_bytes: DEFAULT_POOL_BYTES,
        }
    }
}

/// The steps of a measurement, reported to the progress callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Writing zeros over the pool once.
    Prefault,
    /// Copy + flush + fence, one payload at a time.
    CopyFlushFence,
    /// Non-temporal store + fence, one payload at a time.
    NtFence,
    /// Copy + flush + fence of 4 KiB payloads.
    Bulk4k,
    /// One record of the engine's on-media size, persisted, then one locked RMW.
    AckFloor,
}

impl Phase {
    /// Every phase, in the order they run.
    pub const ALL: [Phase; 5] = [
        Phase::Prefault,
        Phase::CopyFlushFence,
        Phase::NtFence,
        Phase::Bulk4k,
        Phase::AckFloor,
    ];

    /// A short label for progress output.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Prefault => "pre-faulting the pool",
            Phase::CopyFlushFence => "copy + flush + fence",
            Phase::NtFence => "nt store + fence",
            Phase::Bulk4k => "bulk 4 KiB copy + flush",
            Phase::AckFloor => "ack floor (record + RMW)",
        }
    }

    /// Position in [`Phase::ALL`].
    pub fn index(self) -> usize {
        match self {
            Phase::Prefault => 0,
            Phase::CopyFlushFence => 1,
            Phase::NtFence => 2,
            Phase::Bulk4k => 3,
            Phase::AckFloor => 4,
        }
    }
}

/// The result of [`measure_ceiling`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CeilingReport {
    /// Bytes per payload.
    pub payload_bytes: usize,
    /// Measurement time of each method, as requested.
    pub seconds: f64,
    /// Payloads per second made durable with ordinary stores + flush + fence.
    pub copy_flush_fence_ops_per_sec: f64,
    /// Payloads per second made durable with non-temporal stores + fence.
    pub nt_fence_ops_per_sec: f64,
    /// The larger of the two.
    pub best_ops_per_sec: f64,
    /// Which method gave `best_ops_per_sec`: `"copy_flush_fence"` or `"nt_fence"`.
    pub best_method: &'static str,
    /// Bandwidth of copy + flush + fence with 4 KiB payloads, one fence per payload.
    pub bulk_4k_copy_flush_mib_per_sec: f64,
    /// Records per second acknowledged at the floor: one record of `ack_floor_record_bytes`
    /// persisted as an append writes it, plus one locked read-modify-write.
    pub ack_floor_ops_per_sec: f64,
    /// The engine's on-media size of a record with this payload (header and padding).
    pub ack_floor_record_bytes: usize,
    /// The flush instruction used (`clwb`, `clflushopt`, `clflush`, `msync`).
    pub flush_instruction: &'static str,
    /// Whether the pool was a real DAX mapping.
    pub dax: bool,
    /// What an acknowledged flush + fence survives on this pool.
    pub guarantee: &'static str,
    /// Data region of the pool used.
    pub pool_bytes: usize,
    /// Directory the pool file was in.
    pub dir: String,
}

/// Why the ceiling could not be measured.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum CeilingError {
    /// The payload is empty or larger than the pool.
    #[error(
        "payload size {payload_bytes} bytes is out of range (1 to {max_bytes}, the pool size)"
    )]
    PayloadSize {
        payload_bytes: usize,
        max_bytes: usize,
    },
    /// The measurement time is not a positive finite number of seconds.
    #[error("measurement time {seconds} s is out of range (more than 0, at most {SECONDS_MAX})")]
    Seconds { seconds: f64 },
    /// The pool directory does not exist or is not a directory.
    #[error("pool directory {path}: {reason}")]
    Directory { path: PathBuf, reason: &'static str },
    /// Creating or mapping the pool failed.
    #[error(transparent)]
    Pool(#[from] PmemError),
    /// The temporary pool file could not be removed afterwards.
    #[error("cannot remove temporary pool file {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where the pool goes when the caller does not say: `/dev/shm` (memory, like the NVRAM it
/// stands in for) if it exists, else the system temporary directory.
pub fn default_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Measures the persist ceiling for `payload_bytes` payloads, `seconds` per method, on a fresh
/// pool of [`DEFAULT_POOL_BYTES`] in `dir` (removed afterwards).
pub fn measure_ceiling(
    dir: &Path,
    payload_bytes: usize,
    seconds: f64,
) -> Result<CeilingReport, CeilingError> {
    measure_ceiling_with(
        &CeilingConfig::new(dir, payload_bytes, seconds),
        &mut |_, _| {},
    )
}

/// [`measure_ceiling`] with every knob, reporting progress as (phase, fraction of the phase
/// done) to `progress`.
pub fn measure_ceiling_with(
    config: &CeilingConfig,
    progress: &mut dyn FnMut(Phase, f64),
) -> Result<CeilingReport, CeilingError> {
    validate(config)?;
    let pool_path = config.dir.join(unique_pool_name());
    let opts = PoolOptions {
        durability: Durability::Process,
        try_dax: true,
    };
    let pool = MmapPool::create(&pool_path, config.pool_bytes, opts)?;
    // From here on the file exists: remove it whatever happens.
    let guard = crate::interrupt::TempFile::new(pool_path.clone());
    let report = measure_on(&pool, config, progress);
    drop(pool);
    guard.remove().map_err(|source| CeilingError::Remove {
        path: pool_path,
        source,
    })?;
    Ok(report)
}

fn validate(config: &CeilingConfig) -> Result<(), CeilingError> {
    let seconds = config.seconds;
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= SECONDS_MAX) {
        return Err(CeilingError::Seconds { seconds });
    }
    let max_bytes = config.pool_bytes;
    // The ack floor writes whole records (header and padding): those must fit too.
    if config.payload_bytes == 0
        || config.payload_bytes > max_bytes
        || record_size_bytes(config.payload_bytes) > max_bytes
    {
        return Err(CeilingError::PayloadSize {
            payload_bytes: config.payload_bytes,
            max_bytes,
        });
    }
    match std::fs::metadata(&config.dir) {
        Ok(metadata) if metadata.is_dir() => Ok(()),
        Ok(_) => Err(CeilingError::Directory {
            path: config.dir.clone(),
            reason: "not a directory",
        }),
        Err(_) => Err(CeilingError::Directory {
            path: config.dir.clone(),
            reason: "does not exist or cannot be read",
        }),
    }
}

/// Runs every phase on `pool`.
fn measure_on(
    pool: &MmapPool,
    config: &CeilingConfig,
    progress: &mut dyn FnMut(Phase, f64),
) -> CeilingReport {
    prefault(pool, progress);
    let budget = Duration::from_secs_f64(config.seconds);
    let payload: Vec<u8> = (0..config.payload_bytes)
        .map(|i| (i % 251) as u8 ^ 0x5A)
        .collect();

    let mut cursor = Cursor::new(pool.len_bytes(), payload.len());
    let copy_flush_fence = run_for(budget, Phase::CopyFlushFence, progress, || {
        let offset = cursor.next_offset();
        pool.write(offset, &payload);
        pool.flush(offset, payload.len());
        pool.fence();
    });

    let mut cursor = Cursor::new(pool.len_bytes(), payload.len());
    let nt_fence = run_for(budget, Phase::NtFence, progress, || {
        let offset = cursor.next_offset();
        pool.write_nt(offset, &payload);
        pool.fence();
    });

    let bulk: Vec<u8> = (0..BULK_PAYLOAD_BYTES).map(|i| (i % 241) as u8).collect();
    let mut cursor = Cursor::new(pool.len_bytes(), bulk.len());
    let bulk_ops = run_for(budget, Phase::Bulk4k, progress, || {
        let offset = cursor.next_offset();
        pool.write(offset, &bulk);
        pool.flush(offset, bulk.len());
        pool.fence();
    });

    let record_bytes = record_size_bytes(config.payload_bytes);
    let record: Vec<u8> = (0..record_bytes).map(|i| (i % 239) as u8 ^ 0xA5).collect();
    let mut cursor = Cursor::new(pool.len_bytes(), record.len());
    let published = AtomicU64::new(0);
    let ack_floor = run_for(budget, Phase::AckFloor, progress, || {
        let offset = cursor.next_offset();
        if config.payload_bytes >= NT_COPY_MIN_BYTES {
            pool.write_nt(offset, &record);
        } else {
            pool.write(offset, &record);
            pool.flush(offset, record.len());
        }
        pool.fence();
        published.fetch_add(1, Ordering::AcqRel);
    });

    let copy_flush_fence_ops_per_sec = copy_flush_fence.ops_per_sec();
    let nt_fence_ops_per_sec = nt_fence.ops_per_sec();
    let (best_ops_per_sec, best_method) = if nt_fence_ops_per_sec > copy_flush_fence_ops_per_sec {
        (nt_fence_ops_per_sec, "nt_fence")
    } else {
        (copy_flush_fence_ops_per_sec, "copy_flush_fence")
    };
    CeilingReport {
        payload_bytes: config.payload_bytes,
        seconds: config.seconds,
        copy_flush_fence_ops_per_sec,
        nt_fence_ops_per_sec,
        best_ops_per_sec,
        best_method,
        bulk_4k_copy_flush_mib_per_sec: bulk_ops.ops_per_sec() * BULK_PAYLOAD_BYTES as f64 / MIB,
        ack_floor_ops_per_sec: ack_floor.ops_per_sec(),
        ack_floor_record_bytes: record_bytes,
        flush_instruction: pool.flush_instruction().as_str(),
        dax: pool.is_dax(),
        guarantee: pool.guarantee().as_str(),
        pool_bytes: pool.len_bytes(),
        dir: config.dir.display().to_string(),
    }
}

/// Writes zeros over the whole pool so that every page is faulted in before measuring.
fn prefault(pool: &MmapPool, progress: &mut dyn FnMut(Phase, f64)) {
    const CHUNK_BYTES: usize = 1 << 20;
    let zeros = vec![0u8; CHUNK_BYTES];
    let len_bytes = pool.len_bytes();
    let mut done_bytes = 0;
    while done_bytes < len_bytes {
        let chunk_bytes = (len_bytes - done_bytes).min(CHUNK_BYTES);
        pool.write(done_bytes, &zeros[..chunk_bytes]);
        done_bytes += chunk_bytes;
        progress(Phase::Prefault, done_bytes as f64 / len_bytes as f64);
    }
    pool.persist(0, len_bytes);
}

/// Successive payload offsets, wrapping to 0 when the next payload would not fit.
struct Cursor {
    next: usize,
    pool_bytes: usize,
    payload_bytes: usize,
}

impl Cursor {
    fn new(pool_bytes: usize, payload_bytes: usize) -> Self {
        assert!(payload_bytes > 0 && payload_bytes <= pool_bytes);
        Cursor {
            next: 0,
            pool_bytes,
            payload_bytes,
        }
    }

    #[inline]
    fn next_offset(&mut self) -> usize {
        if self.next + self.payload_bytes > self.pool_bytes {
            self.next = 0;
        }
        let offset = self.next;
        self.next += self.payload_bytes;
        debug_assert!(offset + self.payload_bytes <= self.pool_bytes);
        offset
    }
}

/// Operations done in a measured time.
#[derive(Debug, Clone, Copy)]
struct Sample {
    ops: u64,
    elapsed: Duration,
}

impl Sample {
    fn ops_per_sec(self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ops as f64 / secs
        } else {
            0.0
        }
    }
}

/// Repeats `op` for at least `budget`, reading the clock every
/// [`CLOCK_CHECK_INTERVAL_OPS`] operations.
fn run_for(
    budget: Duration,
    phase: Phase,
    progress: &mut dyn FnMut(Phase, f64),
    mut op: impl FnMut(),
) -> Sample {
    let start = Instant::now();
    let mut last_report = start;
    let mut ops = 0u64;
    loop {
        for _ in 0..CLOCK_CHECK_INTERVAL_OPS {
            op();
        }
        ops += CLOCK_CHECK_INTERVAL_OPS;
        let now = Instant::now();
        let elapsed = now - start;
        if elapsed >= budget {
            progress(phase, 1.0);
            return Sample { ops, elapsed };
        }
        if now - last_report >= PROGRESS_INTERVAL {
            progress(phase, elapsed.as_secs_f64() / budget.as_secs_f64());
            last_report = now;
        }
    }
}

/// A file name no other measurement (in this or another process) uses at the same time.
fn unique_pool_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let sequence = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "pstream-ceiling-{}-{nanos}-{sequence}.pool",
        std::process::id()
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn cursor_wraps_before_overrunning() {
        let mut cursor = Cursor::new(100, 30);
        let offsets: Vec<usize> = (0..5).map(|_| cursor.next_offset()).collect();
        assert_eq!(offsets, [0, 30, 60, 0, 30]);
        let mut whole = Cursor::new(64, 64);
        assert_eq!([whole.next_offset(), whole.next_offset()], [0, 0]);
    }

    #[test]
    fn bad_configs_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = CeilingConfig::new(dir.path(), 0, 1.0);
        assert!(matches!(
            validate(&config),
            Err(CeilingError::PayloadSize { .. })
        ));
        config.payload_bytes = DEFAULT_POOL_BYTES + 1;
        assert!(matches!(
            validate(&config),
            Err(CeilingError::PayloadSize { .. })
        ));
        config.payload_bytes = 64;
        for seconds in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e9] {
            config.seconds = seconds;
            assert!(matches!(
                validate(&config),
                Err(CeilingError::Seconds { .. })
            ));
        }
        config.seconds = 0.1;
        config.dir = dir.path().join("missing");
        let error = validate(&config).unwrap_err();
        assert!(error.to_string().contains("missing"), "{error}");
    }

    #[test]
    fn small_measurement_reports_positive_figures_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let config = CeilingConfig {
            dir: dir.path().to_path_buf(),
            payload_bytes: 100,
            seconds: 0.02,
            pool_bytes: 1 << 20,
        };
        let mut phases = Vec::new();
        let report = measure_ceiling_with(&config, &mut |phase, _| phases.push(phase)).unwrap();
        assert!(report.copy_flush_fence_ops_per_sec > 0.0);
        assert!(report.nt_fence_ops_per_sec > 0.0);
        assert!(report.ack_floor_ops_per_sec > 0.0);
        assert_eq!(
            report.ack_floor_record_bytes,
            record_size_bytes(config.payload_bytes)
        );
        assert!(report.bulk_4k_copy_flush_mib_per_sec > 0.0);
        assert!(report.best_ops_per_sec >= report.nt_fence_ops_per_sec);
        assert!(report.best_ops_per_sec >= report.copy_flush_fence_ops_per_sec);
        assert_eq!(report.pool_bytes, 1 << 20);
        for phase in Phase::ALL {
            assert!(phases.contains(&phase), "{phase:?} not reported");
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "pool file left behind"
        );
    }
}

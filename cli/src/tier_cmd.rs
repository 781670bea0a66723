//! `pstream inspect` (a pool and its cold tier: segments by state, bytes hot and cold,
//! compression ratio, pending migrations, streams) and `pstream bench tier` (migration and
//! cold-read throughput against the raw SSD bandwidth measured in the same run, and append
//! throughput while migrating against idle).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use pstream::engine::cold::{ColdInventory, ColdSource, ColdWritten};
use pstream::engine::{ColdError, ColdErrorKind, ColdPayload, ColdTier};
use pstream::engine::{EngineError, Log, LogConfig, OpenOptions, SegmentState, StreamId};
use pstream::pmem_emul::{MmapPool, Pmem, PmemError, PoolOptions, SimPmem};
use pstream::tiering::{
    append_with_backpressure, default_cold_dir, measure_raw_ssd, measure_raw_ssd_with,
    open_cold_tier_url, ColdIo, ColdStore, Compression, DirectIo, EngineColdTier, Migrator,
    MigratorPolicy, TierConfig, TieredError, TieringError, UringConfig, UrlTieredLog,
};

type TieredLog<P> = UrlTieredLog<P>;

#[derive(Debug, thiserror::Error)]
pub enum TierCmdError {
    #[error("{0}")]
    Pool(#[from] PmemError),
    #[error("{0}")]
    Tiered(#[from] TieredError),
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    #[error("raw SSD measurement: {0}")]
    Raw(#[from] TieringError),
    #[error("{what} {path}: {source}")]
    Fs {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode the report as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot write to stdout: {0}")]
    Stdout(#[source] std::io::Error),
    #[error("--segment-mib {segment_mib} must be in 1..=1024")]
    SegmentSize { segment_mib: u64 },
    #[error("migration: {0}")]
    Migration(String),
    #[error("--pool-mib {pool_mib} is out of range: the bench needs at least 16 MiB and 16 segments, at most 1 TiB")]
    PoolSize { pool_mib: u64 },
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Pool file
    #[arg(long, value_name = "PATH")]
    pool: PathBuf,
    /// Cold directory [default: PATH.cold]
    #[arg(long = "cold-dir", value_name = "DIR")]
    cold_dir: Option<PathBuf>,
    /// Cold tier on an object store (s3://bucket/prefix?endpoint=URL, file:///dir,
    /// memory://) instead of a cold directory; credentials from the environment
    #[arg(long = "cold-url", value_name = "URL", conflicts_with = "cold_dir")]
    cold_url: Option<String>,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
}

fn write_out(text: &str) -> Result<(), TierCmdError> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}").map_err(TierCmdError::Stdout)?;
    stdout.flush().map_err(TierCmdError::Stdout)
}

/// The cold tier as `inspect` sees it: reads are served, and everything that would change
/// the cold directory (writing a segment, deleting or discarding a file) is skipped, so
/// recovering a copy of the pool against it leaves the directory as it was.
struct ReadOnlyCold(EngineColdTier<ColdIo>);

impl ColdTier for ReadOnlyCold {
    fn inventory(&self) -> Result<ColdInventory, ColdError> {
        self.0.inventory()
    }

    fn write_segment(
        &self,
        source: ColdSource,
        _records: &mut dyn Iterator<Item = ColdPayload<'_>>,
    ) -> Result<ColdWritten, ColdError> {
        Err(ColdError {
            kind: ColdErrorKind::Io,
            message: format!(
                "inspect is read-only: segment {:#x} not migrated",
                source.segment_gen
            ),
        })
    }

    fn read(&self, segment_gen: u64, stream_id: u64, seq: u64) -> Result<Vec<u8>, ColdError> {
        self.0.read(segment_gen, stream_id, seq)
    }

    fn delete(&self, _segment_gen: u64) -> Result<(), ColdError> {
        Ok(())
    }

    fn discard(&self, _segment_gen: u64) -> Result<(), ColdError> {
        Ok(())
    }
}

/// Reports what is where in a pool and its cold tier, without writing to either: the pool
/// is read (under its lock) into memory and recovery runs on that copy; the cold tier is
/// opened read-only (no temp file removed, no damaged file renamed, no `O_DIRECT` probe).
pub fn run_inspect(args: &InspectArgs) -> Result<(), TierCmdError> {
    let cold_dir = args
        .cold_dir
        .clone()
        .unwrap_or_else(|| default_cold_dir(&args.pool));
    let cold_location = match &args.cold_url {
        Some(url) => url.clone(),
        None => cold_dir.display().to_string(),
    };
    let pool = MmapPool::open(&args.pool, PoolOptions::default())?;
    let copy = SimPmem::from_image(pool.read(0, pool.len_bytes()).to_vec());
    // Dropped, not closed: `close` would msync a mapping nothing wrote to.
    drop(pool);
    let tier = TierConfig::default();
    let uring = UringConfig {
        direct_io: DirectIo::Off,
        ..tier.uring.clone()
    };
    let io = ColdIo::open(&cold_location, uring, tier.object.clone())?;
    let (store, opened) = ColdStore::open_read_only(io, tier.store.clone())?;
    let cold = ReadOnlyCold(EngineColdTier::from_store(store, &opened));
    let (log, report) = Log::open_with_cold(copy, cold, OpenOptions::default())?;
    let infos = log.segment_infos();
    let mut by_state = serde_json::Map::new();
    for state in SegmentState::ALL {
        let count = infos.iter().filter(|info| info.state == state).count();
        by_state.insert(state.as_str().to_owned(), count.into());
    }
    let pending = infos
        .iter()
        .filter(|info| info.state == SegmentState::Sealed && !info.scrub_pending)
        .count();
    let tier = log.tier_stats();
    let hot_live_bytes = log.stats().live_bytes.saturating_sub(tier.cold_live_bytes);
    let cold = log.cold().0.store().stats();
    let streams: Vec<serde_json::Value> = log
        .list_streams()
        .into_iter()
        .map(|stream| {
            serde_json::json!({
                "id": stream.id.to_string(),
                "label": String::from_utf8_lossy(&stream.label),
                "first_seq": stream.first_seq,
                "next_seq": stream.next_seq,
            })
        })
        .collect();
    let value = serde_json::json!({
        "pool": args.pool.display().to_string(),
        "cold_dir": cold_location,
        "segment_size_bytes": log.segment_size_bytes(),
        "segments": infos.len(),
        "segments_by_state": by_state,
        "pending_migrations": pending,
        "hot_live_bytes": hot_live_bytes,
        "cold_segments": tier.cold_segments,
        "cold_live_bytes": tier.cold_live_bytes,
        "cold_stored_bytes": cold.bytes_stored,
        "cold_uncompressed_bytes": cold.bytes_uncompressed,
        "compression_ratio": cold.compression_ratio(),
        "damaged_cold_files": log.cold().0.damaged(),
        "recovery_cold_files_discarded": report.cold_files_discarded,
        "streams": streams,
    });
    if args.json {
        return write_out(&serde_json::to_string(&value)?);
    }
    let mut text = format!(
        "pool {} ({} segments of {} B), cold tier {}\n",
        args.pool.display(),
        infos.len(),
        log.segment_size_bytes(),
        cold_location
    );
    for (state, count) in &by_state {
        text.push_str(&format!("  {state:<10} {count}\n"));
    }
    text.push_str(&format!(
        "pending migrations (sealed): {pending}\nhot live bytes: {hot_live_bytes}\n\
         cold: {} segments, {} B stored, {} B uncompressed, compression ratio {:.2}\nstreams:",
        tier.cold_segments,
        cold.bytes_stored,
        cold.bytes_uncompressed,
        cold.compression_ratio()
    ));
    for stream in log.list_streams() {
        text.push_str(&format!(
            "\n  {} {:?} seqs {}..{}",
            stream.id,
            String::from_utf8_lossy(&stream.label),
            stream.first_seq,
            stream.next_seq
        ));
    }
    write_out(&text)
}

#[derive(Debug, Args)]
pub struct BenchTierArgs {
    /// Directory of the pool file [default: a temporary directory on /dev/shm (DRAM, the
    /// persistent-memory stand-in) if it exists, else in the system temp directory; removed
    /// afterwards]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Cold (SSD) directory [default: POOL.cold with --dir, else a temporary directory in
    /// the system temp directory]
    #[arg(long = "ssd-dir", value_name = "DIR")]
    ssd_dir: Option<PathBuf>,
    /// Cold tier on an object store instead (s3://bucket/prefix?endpoint=URL, file:///dir,
    /// memory://); the raw floor is then a PUT and ranged GETs of the same bytes through the
    /// same client. Credentials from the environment
    #[arg(long = "cold-url", value_name = "URL", conflicts_with = "ssd_dir")]
    cold_url: Option<String>,
    /// With --cold-url: add this delay to every object store request (how much latency the
    /// readahead hides)
    #[arg(long = "inject-latency-ms", value_name = "MS", default_value_t = 0)]
    inject_latency_ms: u64,
    /// Pool size in MiB (small, so the migrator must run)
    #[arg(long = "pool-mib", value_name = "MIB", default_value_t = 256)]
    pool_mib: u64,
    /// Segment size in MiB (the engine's default is 4). Every migration pays a file create,
    /// an fdatasync, a rename and a directory sync once per segment
    #[arg(long = "segment-mib", value_name = "MIB", default_value_t = 4)]
    segment_mib: u64,
    /// Migrations run at once by a migrator pass [default: MigratorPolicy's]
    #[arg(long = "parallel-migrations", value_name = "N")]
    parallel_migrations: Option<usize>,
    /// Time budget of the append phases, in seconds
    #[arg(long, value_name = "S", default_value_t = 4.0)]
    seconds: f64,
    /// zstd level of cold segments (0: no compression)
    #[arg(long = "compress", value_name = "LEVEL", default_value_t = 0)]
    compress_level: i32,
    /// Print one JSON object as the last line of stdout instead of text
    #[arg(long)]
    json: bool,
}

impl BenchTierArgs {
    fn pool_bytes(&self) -> u64 {
        self.pool_mib << 20
    }
}

/// Idle and busy append slices, alternating.
const APPEND_SLICES: u32 = 4;
/// Idle appends run up to this occupancy, then an untimed inline pass drains to IDLE_DRAIN_TO.
const IDLE_UNTIL: f64 = 0.75;
const IDLE_DRAIN_TO: f64 = 0.3;
/// Watermarks of the background migrator in busy slices: it drains whenever the pool is
/// above half full, which the appends keep it.
const BUSY_START_OCCUPANCY: f64 = 0.5;
const BUSY_STOP_OCCUPANCY: f64 = 0.4;
/// Fill-and-drain rounds of the migration measurement.
const MIGRATE_ROUNDS: u32 = 3;
const PAYLOAD_BYTES: usize = 1024;

fn mib_per_sec(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn occupancy(log: &TieredLog<MmapPool>) -> f64 {
    pstream::tiering::occupancy(&log.segment_infos())
}

/// Appends until occupancy reaches `until` or `budget` passes; returns (ops, elapsed).
fn append_until(
    log: &TieredLog<MmapPool>,
    ids: &[StreamId],
    payload: &[u8],
    until: f64,
    budget: Duration,
) -> Result<(u64, Duration), TierCmdError> {
    let started = Instant::now();
    let mut ops = 0u64;
    while started.elapsed() < budget {
        for _ in 0..64 {
            let id = ids[(ops % ids.len() as u64) as usize];
            append_with_backpressure(log, id, payload, Duration::from_secs(10))?;
            ops += 1;
        }
        if ops % 256 == 0 && occupancy(log) >= until {
            break;
        }
    }
    Ok((ops, started.elapsed()))
}

fn progress(json: bool, steps: u64) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps);
    if let Ok(style) = ProgressStyle::with_template("{msg:<28} [{bar:40}] {elapsed}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Fills a small pool so the migrator must run and reports throughputs against the raw SSD.
pub fn run_bench_tier(args: &BenchTierArgs) -> Result<(), TierCmdError> {
    if args.segment_mib == 0 || args.segment_mib > 1024 {
        return Err(TierCmdError::SegmentSize {
            segment_mib: args.segment_mib,
        });
    }
    if args.pool_mib < 16 || args.pool_mib < 16 * args.segment_mib || args.pool_mib > 1 << 20 {
        return Err(TierCmdError::PoolSize {
            pool_mib: args.pool_mib,
        });
    }
    // The pool stands for persistent memory: by default it lives in DRAM (/dev/shm), so the
    // kernel's writeback of a disk-backed pool file never competes with the cold tier for
    // the SSD under test; the cold files go to the system temp directory (on disk).
    let temp = match &args.dir {
        Some(_) => None,
        None => Some(tempfile_dir(&shm_or_temp_dir(), "pool")?),
    };
    let temp_ssd = match (&args.dir, &args.ssd_dir) {
        (None, None) => Some(tempfile_dir(&std::env::temp_dir(), "ssd")?),
        _ => None,
    };
    let dir = args
        .dir
        .clone()
        .or_else(|| temp.as_ref().map(|t| t.0.clone()))
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&dir).map_err(|source| TierCmdError::Fs {
        what: "creating",
        path: dir.clone(),
        source,
    })?;
    let pool_path = dir.join(format!("bench-tier-{}.pool", std::process::id()));
    let ssd_dir = args
        .ssd_dir
        .clone()
        .or_else(|| temp_ssd.as_ref().map(|t| t.0.join("cold")))
        .unwrap_or_else(|| default_cold_dir(&pool_path));
    // What Ctrl-C removes: the pool, and the cold directory unless the caller named it.
    let mut registered = vec![pstream_cli::interrupt::register(&pool_path)];
    if args.ssd_dir.is_none() {
        registered.push(pstream_cli::interrupt::register(&ssd_dir));
    }
    for temp_dir in [&temp, &temp_ssd].into_iter().flatten() {
        registered.push(pstream_cli::interrupt::register(&temp_dir.0));
    }
    let bar = progress(args.json, 6);
    let result = bench(args, &pool_path, &ssd_dir, &bar);
    bar.finish_and_clear();
    // Clean up what the bench made (the cold files, the pool).
    let _ = std::fs::remove_file(&pool_path);
    if args.ssd_dir.is_none() {
        let _ = std::fs::remove_dir_all(&ssd_dir);
    } else if let Ok(entries) = std::fs::read_dir(&ssd_dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with("seg-") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    if let Some(url) = &args.cold_url {
        remove_bench_objects(url);
    }
    drop(temp);
    drop(temp_ssd);
    drop(registered);
    let value = result?;
    if args.json {
        return write_out(&serde_json::to_string(&value)?);
    }
    write_out(&tier_table(&value))
}

/// The human form of `bench tier`'s report: each measured rate, its reference measured in
/// the same run, the ratio and the target.
fn tier_table(value: &serde_json::Value) -> String {
    let number = |key: &str| {
        value
            .get(key)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0)
    };
    let text = |key: &str| {
        value
            .get(key)
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .unwrap_or_default()
    };
    let mut lines = vec![
        format!(
            "bench tier: {} MiB pool ({}), {} KiB segments, {} B records, cold files in {}",
            number("pool_bytes") as u64 >> 20,
            text("pool_path"),
            number("segment_size_bytes") as u64 >> 10,
            number("payload_bytes"),
            text("ssd_dir"),
        ),
        format!(
            "{:<26} {:>14} {:>22} {:>8} {:>8}",
            "measurement", "pstream", "reference (same run)", "ratio", "target"
        ),
    ];
    let rows = [
        (
            "migration MiB/s",
            "migrate_mib_per_sec",
            "ssd_write_mib_per_sec_raw",
            "migrate_vs_raw_write",
            "target_migrate_vs_raw_write",
        ),
        (
            "cold reads MiB/s",
            "cold_read_mib_per_sec",
            "ssd_read_mib_per_sec_raw",
            "cold_read_vs_raw_read",
            "target_cold_read_vs_raw_read",
        ),
        (
            "appends/s while migrating",
            "append_ops_per_sec_while_migrating",
            "append_ops_per_sec_idle",
            "append_while_migrating_vs_idle",
            "target_append_while_migrating_vs_idle",
        ),
    ];
    for (label, ours, reference, ratio, target) in rows {
        let ratio = number(ratio);
        let target = number(target);
        lines.push(format!(
            "{label:<26} {:>14.1} {:>22.1} {ratio:>8.2} {:>7}{target:.2}",
            number(ours),
            number(reference),
            if ratio >= target { ">=" } else { "< " },
        ));
    }
    lines.push(format!(
        "migrations: {} segments in the migration phase ({} at once), {} during appends, {} failed; compression ratio {:.2}",
        number("migrate_segments"),
        number("parallel_migrations"),
        number("migrations_during_append_phase"),
        number("migration_failures"),
        number("compression_ratio"),
    ));
    lines.push(format!(
        "cold cache: {} hits, {} misses; read-ahead: {} windows, {} waits, {} dropped",
        number("cold_cache_hits"),
        number("cold_cache_misses"),
        number("cold_readahead_windows"),
        number("cold_readahead_waits"),
        number("cold_readahead_dropped"),
    ));
    lines.join("\n")
}

/// Removes the cold segment objects the bench left in its bucket prefix (best effort).
fn remove_bench_objects(url: &str) {
    use pstream::tiering::SegmentIo;
    let tier = TierConfig::default();
    let Ok(io) = ColdIo::open(url, tier.uring, tier.object) else {
        return;
    };
    for name in io.list().unwrap_or_default() {
        if name.starts_with("seg-") {
            let _ = io.remove(&name);
        }
    }
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `/dev/shm` when it is a directory (tmpfs: DRAM), else the system temp directory.
fn shm_or_temp_dir() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    }
}

fn tempfile_dir(parent: &Path, what: &str) -> Result<TempDir, TierCmdError> {
    let name = format!("pstream-bench-tier-{}-{what}", std::process::id());
    let path = parent.join(name);
    std::fs::create_dir_all(&path).map_err(|source| TierCmdError::Fs {
        what: "creating",
        path: path.clone(),
        source,
    })?;
    Ok(TempDir(path))
}

fn bench(
    args: &BenchTierArgs,
    pool_path: &Path,
    ssd_dir: &Path,
    bar: &ProgressBar,
) -> Result<serde_json::Value, TierCmdError> {
    let phase = Duration::from_secs_f64((args.seconds / 2.0).max(0.2));
    let mut tier = TierConfig::default();
    if args.compress_level != 0 {
        tier.store.writer.compression = Compression::Zstd {
            level: args.compress_level,
        };
    }
    let io_size_bytes = tier.store.writer.chunk_bytes;
    tier.object.inject_latency_ms = args.inject_latency_ms;

    bar.set_message("raw SSD bandwidth");
    std::fs::create_dir_all(ssd_dir).map_err(|source| TierCmdError::Fs {
        what: "creating",
        path: ssd_dir.to_path_buf(),
        source,
    })?;
    let (raw_write, raw_read) = match &args.cold_url {
        Some(url) => {
            // The same client (a second instance of it) and the same I/O size and depth.
            let io = ColdIo::open(url, tier.uring.clone(), tier.object.clone())?;
            let depth = tier.store.writer.depth;
            let raw = measure_raw_ssd_with(&io, io_size_bytes, args.pool_bytes(), depth)?;
            (raw.write_mib_per_sec, raw.read_mib_per_sec)
        }
        None => measure_raw_ssd(ssd_dir, io_size_bytes, args.pool_bytes())?,
    };
    let cold_location = match &args.cold_url {
        Some(url) => url.clone(),
        None => ssd_dir.display().to_string(),
    };
    bar.inc(1);

    bar.set_message("idle appends");
    let segment_bytes = args.segment_mib << 20;
    let data_bytes = (args.pool_bytes() / segment_bytes * segment_bytes) as usize;
    let pool = MmapPool::create(pool_path, data_bytes, PoolOptions::default())?;
    let config = LogConfig {
        segment_size_bytes: segment_bytes,
        stream_slot_count: 64,
    };
    let cold = open_cold_tier_url(&cold_location, &tier)?;
    let log = Arc::new(Log::create_with_cold(
        pool,
        cold,
        config,
        OpenOptions::default(),
    )?);
    let ids = [log.create_stream(b"hot")?, log.create_stream(b"aged")?];
    let payload: Vec<u8> = (0..PAYLOAD_BYTES)
        .map(|i| (i / 16) as u8 ^ (i as u8).wrapping_mul(31))
        .collect();
    // Fill up to 70%, and drop a slice of "aged" (dead bytes are dropped, not migrated).
    append_until(&log, &ids, &payload, 0.7, Duration::from_secs(60))?;
    let (_, aged_next) = log.bounds(ids[1])?;
    log.trim(ids[1], aged_next / 4)?;
    bar.inc(1);

    // Idle and busy appends in alternating slices (idle, busy, idle, busy, ...), so drift of
    // a shared machine falls on both. Idle: no migrator runs while appends are timed; when
    // the pool reaches IDLE_UNTIL the clock stops and one inline pass drains it (the same
    // segments get migrated, never during a timed append). Busy: the background migrator
    // drains while the appends run (with backpressure when the pool is full).
    bar.set_message("appends idle / migrating");
    let slice = phase / APPEND_SLICES;
    let inline = Migrator::new(MigratorPolicy {
        min_idle_ms: u64::MAX,
        start_occupancy: BUSY_START_OCCUPANCY,
        stop_occupancy: IDLE_DRAIN_TO,
        ..MigratorPolicy::default()
    });
    let parallel_migrations = args
        .parallel_migrations
        .unwrap_or(MigratorPolicy::default().parallel_migrations)
        .max(1);
    let busy_policy = MigratorPolicy {
        min_idle_ms: u64::MAX,
        start_occupancy: BUSY_START_OCCUPANCY,
        stop_occupancy: BUSY_STOP_OCCUPANCY,
        interval: Duration::from_millis(1),
        parallel_migrations,
        ..MigratorPolicy::default()
    };
    let (mut idle_ops, mut idle_time) = (0u64, Duration::ZERO);
    let (mut busy_ops, mut busy_time) = (0u64, Duration::ZERO);
    let mut during = 0u64;
    let mut busy_failures = 0u64;
    for _ in 0..APPEND_SLICES {
        let mut timed = Duration::ZERO;
        while timed < slice {
            if occupancy(&log) >= IDLE_UNTIL {
                inline.run_once(&log);
            }
            let (ops, time) = append_until(&log, &ids, &payload, IDLE_UNTIL, slice - timed)?;
            idle_ops += ops;
            timed += time;
        }
        idle_time += timed;
        let migrator = Migrator::start(Arc::clone(&log), busy_policy);
        let (ops, time) = append_until(&log, &ids, &payload, 1.1, slice)?;
        // Migrations completed while the appends were timed.
        during += migrator.stats().migrations;
        busy_failures += migrator.stop().failures;
        busy_ops += ops;
        busy_time += time;
    }
    bar.inc(1);

    // Migration throughput: fill to 90%, then one migrator pass drains every sealed segment
    // as the background thread would (`MigratorPolicy::parallel_migrations` at once); a few
    // rounds, so the timed bytes are well above the pool size.
    bar.set_message("migration throughput");
    let drain = Migrator::new(MigratorPolicy {
        min_idle_ms: 0,
        start_occupancy: 0.0,
        stop_occupancy: 0.0,
        parallel_migrations,
        ..MigratorPolicy::default()
    });
    let (mut migrated_bytes, mut stored_bytes) = (0u64, 0u64);
    let (mut migrate_segments, mut migrate_time) = (0u64, Duration::ZERO);
    for _ in 0..MIGRATE_ROUNDS {
        append_until(&log, &ids, &payload, 0.9, Duration::from_secs(60))?;
        let started = Instant::now();
        let pass = drain.run_once(&log);
        migrate_time += started.elapsed();
        if let Some(error) = pass.last_error {
            return Err(TierCmdError::Migration(error));
        }
        migrated_bytes += pass.bytes_migrated;
        stored_bytes += pass.bytes_stored;
        migrate_segments += pass.migrated;
    }
    log.reclaim();
    bar.inc(1);

    bar.set_message("cold reads");
    let started = Instant::now();
    let mut cold_bytes = 0u64;
    for id in ids {
        let (first, next) = log.bounds(id)?;
        for seq in first..next {
            let record = log.read(id, seq)?;
            if record.is_cold() {
                cold_bytes += record.payload().len() as u64;
            }
        }
    }
    let cold_read_time = started.elapsed();
    bar.inc(1);

    let tier_stats = log.tier_stats();
    let cold = log.cold().store().stats();
    let migrate = mib_per_sec(migrated_bytes, migrate_time);
    let cold_read = mib_per_sec(cold_bytes, cold_read_time);
    let idle = idle_ops as f64 / idle_time.as_secs_f64().max(1e-9);
    let busy = busy_ops as f64 / busy_time.as_secs_f64().max(1e-9);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    bar.inc(1);
    Ok(serde_json::json!({
        "bench": "tier",
        "pool_bytes": data_bytes,
        "segment_size_bytes": segment_bytes,
        "payload_bytes": PAYLOAD_BYTES,
        "io_size_bytes": io_size_bytes,
        "compress_level": args.compress_level,
        "ssd_dir": cold_location,
        "inject_latency_ms": args.inject_latency_ms,
        "pool_path": pool_path.display().to_string(),
        "migrate_mib_per_sec": migrate,
        "migrate_segments": migrate_segments,
        "parallel_migrations": drain.policy().parallel_migrations,
        "migrate_stored_mib_per_sec": mib_per_sec(stored_bytes, migrate_time),
        "cold_read_mib_per_sec": cold_read,
        "cold_cache_hits": cold.cache_hits,
        "cold_cache_misses": cold.cache_misses,
        "cold_readahead_windows": cold.readahead_windows,
        "cold_readahead_waits": cold.readahead_waits,
        "cold_readahead_dropped": cold.readahead_dropped,
        "append_ops_per_sec_idle": idle,
        "append_ops_per_sec_while_migrating": busy,
        "migrations_during_append_phase": during,
        "bytes_migrated": tier_stats.bytes_migrated,
        "bytes_dropped_dead": tier_stats.bytes_dropped_dead,
        "migration_failures": tier_stats.migration_failures + busy_failures,
        "append_slices": APPEND_SLICES,
        "compression_ratio": cold.compression_ratio(),
        "ssd_write_mib_per_sec_raw": raw_write,
        "ssd_read_mib_per_sec_raw": raw_read,
        "migrate_vs_raw_write": ratio(migrate, raw_write),
        "cold_read_vs_raw_read": ratio(cold_read, raw_read),
        "append_while_migrating_vs_idle": ratio(busy, idle),
        "target_migrate_vs_raw_write": 0.8,
        "target_cold_read_vs_raw_read": 0.8,
        "target_append_while_migrating_vs_idle": 0.85,
    }))
}

//! Engine and cold tier together: a log on the crash simulator whose sealed segments migrate
//! to real cold files (`EngineColdTier` over a `ColdStore` on [`FaultyIo`]).
//!
//! * At every fence of the workload (appends, seals, the migration steps `Sealed ->
//!   Migrating -> Cold`, scrubs, trims and deletes of migrated data, recovery), every crash
//!   image checked (exhaustive or sampled) is recovered *together with the cold directory as
//!   it is at that instant* (copied into a fresh directory per image) and checked against
//!   the oracle. At an engine fence no cold write is in progress, and a committed cold file
//!   is durable, so the directory's contents are the SSD's durable state.
//! * Migrations under SSD faults (countdown EIO, ENOSPC, short and misdirected writes, one
//!   time or persistent): the segment stays where it was and is migrated again later.
//! * System crashes during migrations: the SSD crashes before its k-th I/O, then a seeded
//!   persistent-memory crash image and a seeded SSD crash image (unsynced sectors present,
//!   absent or garbage; unsynced directory operations partly kept) are recovered together,
//!   checked, and the workload continues on the recovered system.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use pmem_emul::{SimPmem, SplitMix64};
use pstream_engine::{Log, LogConfig, OpenOptions};
use pstream_tiering::{
    ColdStoreConfig, Compression, EngineColdTier, FaultSpec, FaultyIo, SegmentIo, StdIo,
};

use crate::engine_case::{
    run_ops_with_cold, ColdEnv, EngineBudget, EngineOp, EngineRun, EngineSetup, ImageChecker,
    PayloadSpec,
};
use crate::error::{CrashtestError, Result};
#[cfg(feature = "object-store")]
use crate::object_cold::ObjectCold;
use crate::oracle::{self, Model};
#[cfg(feature = "object-store")]
use crate::report::CaseKind;
use crate::tiering_case::small_config;

/// The cold tier of a migration case.
pub type SsdTier = EngineColdTier<Arc<FaultyIo<StdIo>>>;

/// A cold directory under fault injection, and what it takes to recover images with it.
pub struct SsdCold {
    dir: tempfile::TempDir,
    io: Mutex<Arc<FaultyIo<StdIo>>>,
    config: ColdStoreConfig,
    armed: AtomicBool,
    /// Faults of the I/O layers replaced by reboots.
    injected_before: AtomicU64,
}

impl SsdCold {
    /// A fresh cold directory and its tier.
    pub fn create(compression: Compression) -> Result<(Arc<SsdCold>, SsdTier)> {
        let dir = tempfile::tempdir().map_err(|source| CrashtestError::Io {
            what: "creating a temporary directory in",
            path: std::env::temp_dir(),
            source,
        })?;
        let mut config = small_config(compression);
        // Misdirected writes are caught by reading the file back before it is committed.
        config.writer.verify_after_write = true;
        let io = Arc::new(FaultyIo::new(StdIo::open(dir.path())?, FaultSpec::none(0))?);
        let (tier, _) = EngineColdTier::open(Arc::clone(&io), config.clone())?;
        let env = SsdCold {
            dir,
            io: Mutex::new(io),
            config,
            armed: AtomicBool::new(false),
            injected_before: AtomicU64::new(0),
        };
        Ok((Arc::new(env), tier))
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// The files of a directory (read directly, not through the fault-injecting layer, whose
/// countdown must not see them).
fn snapshot(dir: &Path) -> std::result::Result<Vec<(PathBuf, Vec<u8>)>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("list {}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("list {}: {e}", dir.display()))?;
        let bytes =
            std::fs::read(entry.path()).map_err(|e| format!("read {:?}: {e}", entry.path()))?;
        files.push((PathBuf::from(entry.file_name()), bytes));
    }
    files.sort();
    Ok(files)
}

/// Recovers `image` with a cold directory holding `files` and checks it.
fn check_with_cold(
    image: &[u8],
    files: &[(PathBuf, Vec<u8>)],
    config: &ColdStoreConfig,
    model: &Model,
    lane_count: usize,
) -> std::result::Result<u64, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).map_err(|e| format!("write {name:?}: {e}"))?;
    }
    let io = StdIo::open(dir.path()).map_err(|e| format!("open cold dir: {e}"))?;
    check_recovered(image, io, config, model, lane_count)
}

/// Recovers `image` with the cold tier served by `io` (the cold tier's durable state of the
/// image's instant) and checks it against the oracle; returns the log's digest.
pub(crate) fn check_recovered<I: SegmentIo>(
    image: &[u8],
    io: I,
    config: &ColdStoreConfig,
    model: &Model,
    lane_count: usize,
) -> std::result::Result<u64, String> {
    let (tier, _) = EngineColdTier::open(io, config.clone())
        .map_err(|e| format!("cold tier recovery failed: {e}"))?;
    let (log, _) = Log::open_with_cold(
        SimPmem::from_image(image.to_vec()),
        tier,
        OpenOptions { lane_count },
    )
    .map_err(|e| format!("recovery failed: {e}"))?;
    let digest = oracle::check_log(&log, model)?;
    let report = pstream_engine::verify(log.pmem()).map_err(|e| format!("verify failed: {e}"))?;
    if !report.is_clean() {
        return Err(format!("verify after recovery found {:?}", report.problems));
    }
    Ok(digest)
}

impl ColdEnv for SsdCold {
    type Tier = SsdTier;
    const NESTED_RECOVERY_CRASHES: bool = false;

    fn image_checker(&self, lane_count: usize) -> ImageChecker {
        let config = self.config.clone();
        match snapshot(self.path()) {
            Ok(files) => Box::new(move |image, model| {
                check_with_cold(image, &files, &config, model, lane_count)
            }),
            Err(detail) => Box::new(move |_, _| Err(format!("cold snapshot: {detail}"))),
        }
    }

    fn arm(&self, spec: Option<FaultSpec>) {
        let io = self.io.lock();
        self.armed.store(spec.is_some(), Ordering::Relaxed);
        io.set_spec(spec.unwrap_or_else(|| FaultSpec::none(0)));
    }

    fn armed(&self) -> bool {
        self.armed.load(Ordering::Relaxed)
    }

    fn reboot(&self, seed: u64) -> std::result::Result<SsdTier, String> {
        let mut io = self.io.lock();
        io.crash_now();
        io.materialize_crash(seed)
            .map_err(|e| format!("materializing the SSD crash image: {e}"))?;
        self.injected_before
            .fetch_add(io.counters().injected, Ordering::Relaxed);
        let fresh = FaultyIo::new(
            StdIo::open(self.path()).map_err(|e| format!("reopen cold dir: {e}"))?,
            FaultSpec::none(seed),
        )
        .map_err(|e| format!("reopen cold dir: {e}"))?;
        *io = Arc::new(fresh);
        self.armed.store(false, Ordering::Relaxed);
        let (tier, _) = EngineColdTier::open(Arc::clone(&io), self.config.clone())
            .map_err(|e| format!("cold tier recovery after a crash failed: {e}"))?;
        Ok(tier)
    }

    fn faults_injected(&self) -> u64 {
        self.injected_before.load(Ordering::Relaxed) + self.io.lock().counters().injected
    }
}

/// Pool shape of migration cases: 16 KiB segments fill and seal quickly.
pub fn migration_setup() -> EngineSetup {
    EngineSetup {
        pool_bytes: 512 * 1024,
        log_config: LogConfig {
            segment_size_bytes: 16 * 1024,
            stream_slot_count: 16,
        },
        lane_count: 2,
    }
}

/// A seeded migration workload: three streams, appends and batches that fill segments,
/// trims and deletes (of migrated data too), migrations, faulty migrations, system crashes
/// during migrations, and reopens.
pub fn generate_migration(seed: u64, op_count: usize) -> Vec<EngineOp> {
    let mut rng = SplitMix64::new(seed ^ 0x3160_a7e5);
    let mut ops: Vec<EngineOp> = (0..3).map(|stream| EngineOp::Create { stream }).collect();
    let mut live: Vec<u16> = vec![0, 1, 2];
    let mut next_ordinal = 3u16;
    for index in 0..op_count {
        let tag = (index as u32) << 8;
        let pick = |rng: &mut SplitMix64, live: &[u16]| live[rng.below(live.len() as u64) as usize];
        let payload = |rng: &mut SplitMix64, k: u32| PayloadSpec::Bytes {
            len_bytes: 300 + rng.below(3000) as u32,
            tag: tag | k,
        };
        let op = match rng.below(100) {
            0..=41 => EngineOp::Append {
                stream: pick(&mut rng, &live),
                payload: payload(&mut rng, 0),
            },
            42..=54 => {
                let count = 1 + rng.below(4) as u32;
                let records = (0..count)
                    .map(|k| (pick(&mut rng, &live), payload(&mut rng, k)))
                    .collect();
                EngineOp::Batch { records }
            }
            55..=59 => EngineOp::Append {
                stream: pick(&mut rng, &live),
                payload: PayloadSpec::Crafted,
            },
            60..=69 => EngineOp::Migrate,
            70..=77 => EngineOp::MigrateFaulty {
                fail_at: 1 + rng.below(24) as u16,
                fault: rng.below(4) as u8,
                persistent: rng.below(2) == 0,
            },
            78..=83 => EngineOp::CrashRestart {
                fail_at: 1 + rng.below(30) as u16,
                image: rng.below(4) as u8,
            },
            84..=90 => EngineOp::Trim {
                stream: pick(&mut rng, &live),
                keep_per_mille: 200 + rng.below(700) as u16,
            },
            91..=93 if live.len() > 1 => {
                let victim = live.swap_remove(rng.below(live.len() as u64) as usize);
                EngineOp::Delete { stream: victim }
            }
            94 | 95 => {
                live.push(next_ordinal);
                next_ordinal += 1;
                EngineOp::Create {
                    stream: next_ordinal - 1,
                }
            }
            _ => EngineOp::Reopen,
        };
        ops.push(op);
    }
    ops
}

/// How many crash images a migration case checks (each one recovers a cold directory too).
pub fn migration_budget() -> EngineBudget {
    EngineBudget {
        exhaustive_max: 32,
        samples: 4,
        recovery_crash_every: 0,
        images_max: 1000,
    }
}

/// Runs `ops` on a fresh log with a fault-injected cold tier (see the module docs).
pub fn run_migration_ops(seed: u64, ops: &[EngineOp], budget: &EngineBudget) -> Result<EngineRun> {
    let compression = if seed % 2 == 0 {
        Compression::None
    } else {
        Compression::Zstd { level: 1 }
    };
    let setup = migration_setup();
    // Every other migration case runs over the object-store tier (an in-memory bucket behind
    // request faults, see `object_cold`); all of them over SSD files in a build without the
    // `object-store` feature (the fuzz targets).
    #[cfg(feature = "object-store")]
    if (seed / CaseKind::ALL.len() as u64) % 2 == 1 {
        let (env, tier) = ObjectCold::create(compression)?;
        return Ok(run_ops_with_cold(
            seed,
            ops,
            &setup,
            budget,
            |sim| sim,
            env,
            tier,
        ));
    }
    let (env, tier) = SsdCold::create(compression)?;
    Ok(run_ops_with_cold(
        seed,
        ops,
        &setup,
        budget,
        |sim| sim,
        env,
        tier,
    ))
}

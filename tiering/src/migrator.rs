//! The background migrator: decides *which* sealed segments leave persistent memory and
//! *when*; [`Log::migrate_segment`] does each migration crash-safely.
//!
//! Policy ([`MigratorPolicy`]), evaluated once per pass:
//! - **Occupancy** (segments not free / all segments): once it reaches `start_occupancy` the
//!   migrator drains, oldest idle sealed segment first, until it is at or below
//!   `stop_occupancy` (hysteresis: between the two it keeps draining only if it already was).
//! - **Age**: any sealed segment idle (no append, no hot read) for `min_idle_ms` or longer is
//!   migrated whatever the occupancy.
//!
//! A failed migration leaves its segment `Sealed` in persistent memory (the engine puts it
//! back); it is counted, logged and tried again on a later pass. Migration takes no lane
//! lock, so appends keep flowing; a foreground append that finds the pool full can wait for
//! the migrator with [`append_with_backpressure`].

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use pmem_emul::Pmem;
use pstream_engine::{ColdTier, EngineError, Log, SegmentInfo, SegmentState, StreamId};

/// When segments are migrated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MigratorPolicy {
    /// Sealed segments idle at least this long are migrated regardless of occupancy.
    pub min_idle_ms: u64,
    /// Occupancy (fraction of segments not free) at which draining starts.
    pub start_occupancy: f64,
    /// Occupancy at which draining stops.
    pub stop_occupancy: f64,
    /// Pause between passes of the background thread.
    pub interval: Duration,
    /// Upper bound of migrations per pass (0: no bound).
    pub max_migrations_per_pass: usize,
    /// Migrations of one pass run at once, on scoped threads (1: one after the other on the
    /// calling thread). Each one mostly waits on its file's create, fdatasync, rename and
    /// directory sync; running several overlaps those waits with each other and with the
    /// copying and hashing of the others, and concurrent migrations share directory syncs
    /// (see `ColdStore::write_segment`). Each keeps up to `ColdWriterConfig::depth` chunks of
    /// `chunk_bytes` in flight.
    pub parallel_migrations: usize,
}

impl Default for MigratorPolicy {
    fn default() -> Self {
        MigratorPolicy {
            min_idle_ms: 60_000,
            start_occupancy: 0.75,
            stop_occupancy: 0.5,
            interval: Duration::from_millis(50),
            max_migrations_per_pass: 0,
            parallel_migrations: 4,
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PassReport {
    pub occupancy_before: f64,
    pub occupancy_after: f64,
    /// Whether the pass was draining by occupancy.
    pub draining: bool,
    pub migrated: u64,
    pub failed: u64,
    pub records_migrated: u64,
    pub bytes_migrated: u64,
    pub bytes_stored: u64,
    pub bytes_dropped_dead: u64,
    pub segments_freed: u64,
    /// The last failure of this pass.
    pub last_error: Option<String>,
}

/// Totals since the migrator was made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigratorStats {
    pub passes: u64,
    pub migrations: u64,
    pub failures: u64,
    pub bytes_migrated: u64,
    pub bytes_dropped_dead: u64,
    pub segments_freed: u64,
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Totals {
    passes: AtomicU64,
    migrations: AtomicU64,
    failures: AtomicU64,
    bytes_migrated: AtomicU64,
    bytes_dropped_dead: AtomicU64,
    segments_freed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// Occupancy of a pool from its segment table: segments neither free nor about to be freed.
pub fn occupancy(infos: &[SegmentInfo]) -> f64 {
    if infos.is_empty() {
        return 0.0;
    }
    let used = infos.iter().filter(|info| is_used(info)).count();
    used as f64 / infos.len() as f64
}

fn is_used(info: &SegmentInfo) -> bool {
    info.state != SegmentState::Free && !info.scrub_pending
}

/// The migration policy and its state (draining or not), with statistics.
pub struct Migrator {
    policy: MigratorPolicy,
    draining: AtomicBool,
    totals: Totals,
}

impl std::fmt::Debug for Migrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migrator")
            .field("policy", &self.policy)
            .field("draining", &self.draining.load(Ordering::Relaxed))
            .field("stats", &self.stats())
            .finish()
    }
}

impl Migrator {
    pub fn new(policy: MigratorPolicy) -> Migrator {
        Migrator {
            policy,
            draining: AtomicBool::new(false),
            totals: Totals::default(),
        }
    }

    pub fn policy(&self) -> &MigratorPolicy {
        &self.policy
    }

    /// One pass: free what readers released, migrate by the policy, free again.
    pub fn run_once<P: Pmem, C: ColdTier>(&self, log: &Log<P, C>) -> PassReport {
        let mut report = PassReport {
            segments_freed: log.reclaim() as u64,
            ..PassReport::default()
        };
        let infos = log.segment_infos();
        let total = infos.len().max(1);
        let mut used = infos.iter().filter(|info| is_used(info)).count();
        report.occupancy_before = used as f64 / total as f64;
        let policy = &self.policy;
        let draining = if report.occupancy_before >= policy.start_occupancy {
            true
        } else if report.occupancy_before <= policy.stop_occupancy {
            false
        } else {
            self.draining.load(Ordering::Relaxed)
        };
        report.draining = draining;
        let mut candidates: Vec<&SegmentInfo> = infos
            .iter()
            .filter(|info| info.state == SegmentState::Sealed && !info.scrub_pending)
            .collect();
        // Oldest idle first.
        candidates.sort_by_key(|info| std::cmp::Reverse(info.idle_ms));
        let stop_used = (policy.stop_occupancy * total as f64).floor() as usize;
        // Pick this pass's segments up front (the policy as if each pick succeeds), then
        // migrate them, several at once.
        let mut picked: Vec<&SegmentInfo> = Vec::new();
        for info in candidates {
            if policy.max_migrations_per_pass != 0 && picked.len() >= policy.max_migrations_per_pass
            {
                break;
            }
            let by_occupancy = draining && used > stop_used;
            let by_age = info.idle_ms >= policy.min_idle_ms;
            if !by_occupancy && !by_age {
                // Sorted by idle time: no later candidate is older.
                break;
            }
            used = used.saturating_sub(1);
            picked.push(info);
        }
        let workers = policy.parallel_migrations.clamp(1, picked.len().max(1));
        if workers == 1 {
            for info in &picked {
                migrate_one(log, info, &mut report);
            }
        } else {
            let next = AtomicUsize::new(0);
            let reports: Vec<PassReport> = std::thread::scope(|scope| {
                let work = || {
                    let mut part = PassReport::default();
                    while let Some(info) = picked.get(next.fetch_add(1, Ordering::Relaxed)) {
                        migrate_one(log, info, &mut part);
                    }
                    part
                };
                let helpers: Vec<_> = (1..workers).map(|_| scope.spawn(work)).collect();
                let mut parts = vec![work()];
                for helper in helpers {
                    match helper.join() {
                        Ok(part) => parts.push(part),
                        Err(_) => tracing::error!("a migration worker panicked"),
                    }
                }
                parts
            });
            for part in reports {
                report.migrated += part.migrated;
                report.failed += part.failed;
                report.records_migrated += part.records_migrated;
                report.bytes_migrated += part.bytes_migrated;
                report.bytes_stored += part.bytes_stored;
                report.bytes_dropped_dead += part.bytes_dropped_dead;
                report.segments_freed += part.segments_freed;
                if part.last_error.is_some() {
                    report.last_error = part.last_error;
                }
            }
        }
        report.segments_freed += log.reclaim() as u64;
        let after = log.segment_infos();
        report.occupancy_after = occupancy(&after);
        self.draining.store(
            draining && report.occupancy_after > policy.stop_occupancy,
            Ordering::Relaxed,
        );
        self.account(&report);
        report
    }

    fn account(&self, report: &PassReport) {
        let totals = &self.totals;
        totals.passes.fetch_add(1, Ordering::Relaxed);
        totals
            .migrations
            .fetch_add(report.migrated, Ordering::Relaxed);
        totals.failures.fetch_add(report.failed, Ordering::Relaxed);
        totals
            .bytes_migrated
            .fetch_add(report.bytes_migrated, Ordering::Relaxed);
        totals
            .bytes_dropped_dead
            .fetch_add(report.bytes_dropped_dead, Ordering::Relaxed);
        totals
            .segments_freed
            .fetch_add(report.segments_freed, Ordering::Relaxed);
        if let Some(error) = &report.last_error {
            *totals.last_error.lock() = Some(error.clone());
        }
    }

    pub fn stats(&self) -> MigratorStats {
        let totals = &self.totals;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        MigratorStats {
            passes: load(&totals.passes),
            migrations: load(&totals.migrations),
            failures: load(&totals.failures),
            bytes_migrated: load(&totals.bytes_migrated),
            bytes_dropped_dead: load(&totals.bytes_dropped_dead),
            segments_freed: load(&totals.segments_freed),
            last_error: totals.last_error.lock().clone(),
        }
    }

    /// Runs passes on a background thread every `policy.interval` (or sooner when woken)
    /// until the returned handle is stopped or dropped.
    pub fn start<P, C>(log: Arc<Log<P, C>>, policy: MigratorPolicy) -> MigratorHandle<P, C>
    where
        P: Pmem + Send + Sync + 'static,
        C: ColdTier,
    {
        let migrator = Arc::new(Migrator::new(policy));
        let signal = Arc::new(Signal::default());
        let thread = {
            let (log, migrator, signal) =
                (Arc::clone(&log), Arc::clone(&migrator), Arc::clone(&signal));
            std::thread::Builder::new()
                .name("pstream-migrator".into())
                .spawn(move || background(&log, &migrator, &signal))
        };
        let thread = match thread {
            Ok(thread) => Some(thread),
            Err(error) => {
                tracing::error!(%error, "cannot spawn the migrator thread; migrating inline");
                None
            }
        };
        MigratorHandle {
            log,
            migrator,
            signal,
            thread,
        }
    }
}

/// Migrates one segment and frees it at once, so appenders waiting for space get it
/// promptly; adds the outcome to `report`.
fn migrate_one<P: Pmem, C: ColdTier>(log: &Log<P, C>, info: &SegmentInfo, report: &mut PassReport) {
    match log.migrate_segment(info.index) {
        Ok(outcome) => {
            report.migrated += 1;
            report.records_migrated += outcome.records_migrated;
            report.bytes_migrated += outcome.payload_bytes;
            report.bytes_stored += outcome.stored_bytes;
            report.bytes_dropped_dead += outcome.dead_bytes_dropped;
            report.segments_freed += log.reclaim() as u64;
        }
        // Freed or changed since the snapshot: nothing to do.
        Err(EngineError::NotMigratable { .. }) => {}
        Err(error) => {
            report.failed += 1;
            tracing::warn!(
                segment = info.index,
                segment_gen = info.segment_gen,
                %error,
                "migration failed; the segment stays in persistent memory and is retried"
            );
            report.last_error = Some(format!(
                "segment {} (gen {}): {error}",
                info.index, info.segment_gen
            ));
        }
    }
}

#[derive(Default)]
struct Signal {
    /// (stop requested, wake-up pending)
    state: Mutex<(bool, bool)>,
    changed: Condvar,
}

fn background<P: Pmem, C: ColdTier>(log: &Log<P, C>, migrator: &Migrator, signal: &Signal) {
    loop {
        let report = migrator.run_once(log);
        if report.failed > 0 {
            tracing::debug!(?report, "migrator pass with failures");
        }
        let mut state = signal.state.lock();
        let busy = report.draining && report.migrated > 0;
        if !(state.0 || state.1 || busy) {
            signal
                .changed
                .wait_for(&mut state, migrator.policy.interval);
        }
        if state.0 {
            return;
        }
        state.1 = false;
    }
}

/// A running background migrator; stops and joins its thread when stopped or dropped.
pub struct MigratorHandle<P: Pmem + Send + Sync + 'static, C: ColdTier> {
    log: Arc<Log<P, C>>,
    migrator: Arc<Migrator>,
    signal: Arc<Signal>,
    thread: Option<JoinHandle<()>>,
}

impl<P: Pmem + Send + Sync + 'static, C: ColdTier> MigratorHandle<P, C> {
    pub fn log(&self) -> &Arc<Log<P, C>> {
        &self.log
    }

    pub fn stats(&self) -> MigratorStats {
        self.migrator.stats()
    }

    /// Asks for a pass now (e.g. an appender found the pool full).
    pub fn wake(&self) {
        self.signal.state.lock().1 = true;
        self.signal.changed.notify_all();
        if self.thread.is_none() {
            self.migrator.run_once(&self.log);
        }
    }

    /// [`append_with_backpressure`] that also wakes this migrator when the pool is full.
    pub fn append(
        &self,
        id: StreamId,
        payload: &[u8],
        max_wait: Duration,
    ) -> Result<u64, EngineError> {
        append_waiting(&self.log, id, payload, max_wait, || self.wake())
    }

    /// Stops the thread after its current pass and returns the final statistics.
    pub fn stop(mut self) -> MigratorStats {
        self.shutdown();
        self.migrator.stats()
    }

    fn shutdown(&mut self) {
        self.signal.state.lock().0 = true;
        self.signal.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the migrator thread panicked");
            }
        }
    }
}

impl<P: Pmem + Send + Sync + 'static, C: ColdTier> Drop for MigratorHandle<P, C> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Appends, and while the pool is full (`EngineError::PoolFull`) retries with a growing pause
/// (up to 10 ms) for at most `max_wait`, giving a migrator time to free segments; then
/// returns the `PoolFull` error. Other errors return at once.
pub fn append_with_backpressure<P: Pmem, C: ColdTier>(
    log: &Log<P, C>,
    id: StreamId,
    payload: &[u8],
    max_wait: Duration,
) -> Result<u64, EngineError> {
    append_waiting(log, id, payload, max_wait, || {})
}

fn append_waiting<P: Pmem, C: ColdTier>(
    log: &Log<P, C>,
    id: StreamId,
    payload: &[u8],
    max_wait: Duration,
    mut on_full: impl FnMut(),
) -> Result<u64, EngineError> {
    let started = Instant::now();
    let mut pause = Duration::from_micros(100);
    loop {
        match log.append(id, payload) {
            Err(EngineError::PoolFull { segment_count }) => {
                let waited = started.elapsed();
                if waited >= max_wait {
                    return Err(EngineError::PoolFull { segment_count });
                }
                on_full();
                // Freed segments may only need a reclaim (readers have left).
                if log.reclaim() > 0 {
                    continue;
                }
                std::thread::sleep(pause.min(max_wait - waited));
                pause = (pause * 2).min(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

//! Engine workloads under crash checking: seeded operation lists, an interpreter that keeps
//! the oracle's [`Model`] in step, a fence hook that recovers crash images at every fence,
//! and shrinking of a failing operation list.
//!
//! Operations name streams by *ordinal* (the n-th stream the workload creates), not by
//! engine id, so any prefix or sub-list of an operation list is still a valid workload:
//! operations on a stream that does not exist (any more) are skipped. That is what makes
//! shrinking by prefixes and by dropping single operations possible.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pmem_emul::{CrashPoint, Pmem, SimPmem, SplitMix64};
use pstream_engine::{
    ColdTier, EngineError, Log, LogConfig, NoColdTier, OpenOptions, SegmentState, StreamId,
};
use pstream_tiering::{CountdownFault, FaultSpec};

use crate::hash::TraceHash;
use crate::oracle::{self, Model, NestedBudget, Pending, StreamModel};
use crate::report::{Tally, Violation};

/// How a payload's bytes are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadSpec {
    /// `len_bytes` bytes derived from `tag`.
    Bytes { len_bytes: u32, tag: u32 },
    /// Bytes that are valid record headers of this pool (oracle rule 6).
    Crafted,
}

impl PayloadSpec {
    fn bytes(self, nonce: u64, stream: StreamId, next_seq: u64) -> Vec<u8> {
        match self {
            PayloadSpec::Bytes { len_bytes, tag } => payload_bytes(len_bytes, tag),
            PayloadSpec::Crafted => oracle::crafted_payload(nonce, stream, next_seq + 1, 1..12),
        }
    }
}

impl fmt::Display for PayloadSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PayloadSpec::Bytes { len_bytes, tag } => write!(f, "<{len_bytes} B #{tag:x}>"),
            PayloadSpec::Crafted => write!(f, "<crafted headers>"),
        }
    }
}

/// Deterministic payload bytes (never all zero, so a torn write is visible).
pub fn payload_bytes(len_bytes: u32, tag: u32) -> Vec<u8> {
    let tag = tag as usize;
    (0..len_bytes as usize)
        .map(|j| (tag.wrapping_mul(31).wrapping_add(j * 7) ^ (tag >> 8)) as u8 | 1)
        .collect()
}

/// One engine operation; streams are named by ordinal (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineOp {
    Create {
        stream: u16,
    },
    Delete {
        stream: u16,
    },
    Append {
        stream: u16,
        payload: PayloadSpec,
    },
    Batch {
        records: Vec<(u16, PayloadSpec)>,
    },
    /// Trims to `first + (next - first) * (1000 - keep_per_mille) / 1000`, then reclaims.
    Trim {
        stream: u16,
        keep_per_mille: u16,
    },
    Reclaim,
    /// Close the log and open it again (recovery on a clean pool, checked at every fence).
    Reopen,
    /// Migrate every sealed segment to the cold tier (steps checked at every fence).
    Migrate,
    /// Migrate with an SSD fault at the `fail_at`-th cold I/O (`fault`: 0 EIO, 1 ENOSPC,
    /// 2 short write, 3 misdirected write), once or from then on.
    MigrateFaulty {
        fail_at: u16,
        fault: u8,
        persistent: bool,
    },
    /// Migrate with the SSD crashing before its `fail_at`-th I/O, then crash the whole
    /// system: a seeded persistent-memory crash image plus a seeded SSD crash image are
    /// recovered together, checked, and the workload goes on from there.
    CrashRestart {
        fail_at: u16,
        image: u8,
    },
}

impl fmt::Display for EngineOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineOp::Create { stream } => write!(f, "create s{stream}"),
            EngineOp::Delete { stream } => write!(f, "delete s{stream}"),
            EngineOp::Append { stream, payload } => write!(f, "append s{stream} {payload}"),
            EngineOp::Batch { records } => {
                write!(f, "batch [")?;
                for (index, (stream, payload)) in records.iter().enumerate() {
                    let sep = if index == 0 { "" } else { ", " };
                    write!(f, "{sep}s{stream} {payload}")?;
                }
                write!(f, "]")
            }
            EngineOp::Trim {
                stream,
                keep_per_mille,
            } => write!(f, "trim s{stream} keep {keep_per_mille}/1000"),
            EngineOp::Reclaim => write!(f, "reclaim"),
            EngineOp::Reopen => write!(f, "reopen"),
            EngineOp::Migrate => write!(f, "migrate sealed segments"),
            EngineOp::MigrateFaulty {
                fail_at,
                fault,
                persistent,
            } => write!(
                f,
                "migrate with {} at cold I/O {fail_at} (persistent: {persistent})",
                fault_name(*fault)
            ),
            EngineOp::CrashRestart { fail_at, image } => write!(
                f,
                "migrate, SSD crash before cold I/O {fail_at}, system crash (image {image}), \
                 recover"
            ),
        }
    }
}

/// The name of a `MigrateFaulty` fault code.
pub fn fault_name(fault: u8) -> &'static str {
    ["EIO", "ENOSPC", "short write", "misdirected write"][usize::from(fault % 4)]
}

/// Pool shape of engine cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineSetup {
    pub pool_bytes: usize,
    pub log_config: LogConfig,
    pub lane_count: usize,
}

impl Default for EngineSetup {
    fn default() -> Self {
        EngineSetup {
            pool_bytes: 256 * 1024,
            log_config: LogConfig {
                segment_size_bytes: 16 * 1024,
                stream_slot_count: 16,
            },
            lane_count: 2,
        }
    }
}

/// How many crash images to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineBudget {
    /// Enumerate every image of a fence when there are at most this many.
    pub exhaustive_max: u64,
    /// Otherwise check this many seeded samples.
    pub samples: u64,
    /// Every n-th checked image is also crashed during its own recovery (0 = never).
    pub recovery_crash_every: u64,
    /// Stop checking images after this many in the case (0 = no limit).
    pub images_max: u64,
}

impl Default for EngineBudget {
    fn default() -> Self {
        EngineBudget {
            exhaustive_max: 1024,
            samples: 24,
            recovery_crash_every: 101,
            images_max: 0,
        }
    }
}

/// What one run of an operation list found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineRun {
    pub tally: Tally,
    pub trace_hash: u64,
    pub violation: Option<Violation>,
}

// ----- generators ----------------------------------------------------------------------

fn random_payload(rng: &mut SplitMix64, tag: u32) -> PayloadSpec {
    let len_bytes = match rng.below(10) {
        0 => 0,
        1..=6 => 1 + rng.below(100),
        7 | 8 => 100 + rng.below(400),
        _ => 2000 + rng.below(3000),
    };
    PayloadSpec::Bytes {
        len_bytes: len_bytes as u32,
        tag,
    }
}

/// A single writer's random workload of `op_count` operations over at most `streams_max`
/// streams at a time.
pub fn generate_random(seed: u64, op_count: usize, streams_max: usize) -> Vec<EngineOp> {
    let mut rng = SplitMix64::new(seed);
    let mut live: Vec<u16> = Vec::new();
    let mut next_ordinal = 0u16;
    let mut ops = Vec::with_capacity(op_count);
    for index in 0..op_count {
        let tag = (index as u32) << 8;
        let choice = if live.is_empty() { 0 } else { rng.below(100) };
        let pick = |rng: &mut SplitMix64, live: &[u16]| live[rng.below(live.len() as u64) as usize];
        let op = match choice {
            0..=7 if live.len() < streams_max => {
                live.push(next_ordinal);
                next_ordinal += 1;
                EngineOp::Create {
                    stream: next_ordinal - 1,
                }
            }
            8..=10 if live.len() > 1 => {
                let victim = live.swap_remove(rng.below(live.len() as u64) as usize);
                EngineOp::Delete { stream: victim }
            }
            11..=14 => EngineOp::Trim {
                stream: pick(&mut rng, &live),
                keep_per_mille: rng.below(1001) as u16,
            },
            15..=28 => {
                let count = 1 + rng.below(4) as u32;
                let records = (0..count)
                    .map(|k| (pick(&mut rng, &live), random_payload(&mut rng, tag | k)))
                    .collect();
                EngineOp::Batch { records }
            }
            29 => EngineOp::Reopen,
            30 => EngineOp::Reclaim,
            _ => {
                let stream = pick(&mut rng, &live);
                let payload = if rng.below(6) == 0 {
                    PayloadSpec::Crafted
                } else {
                    random_payload(&mut rng, tag)
                };
                EngineOp::Append { stream, payload }
            }
        };
        ops.push(op);
    }
    ops
}

/// `writers` logical writers, each with its own stream plus one shared stream, each drawing
/// its operations from its own generator; their whole operations interleave round-robin
/// (`rounds` operations per writer).
pub fn generate_interleaved(seed: u64, writers: usize, rounds: usize) -> Vec<EngineOp> {
    let writers = writers.clamp(1, 8);
    let shared = writers as u16;
    let mut ops = vec![EngineOp::Create { stream: shared }];
    let mut own: Vec<u16> = (0..writers as u16).collect();
    ops.extend(own.iter().map(|&stream| EngineOp::Create { stream }));
    let mut next_ordinal = shared + 1;
    let mut rngs: Vec<SplitMix64> = (0..writers as u64)
        .map(|w| SplitMix64::new(seed ^ (w + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)))
        .collect();
    for round in 0..rounds {
        for (writer, rng) in rngs.iter_mut().enumerate() {
            let tag = ((writer as u32) << 24) | ((round as u32) << 8);
            let mine = own[writer];
            let target = |rng: &mut SplitMix64| if rng.below(2) == 0 { mine } else { shared };
            match rng.below(100) {
                0..=44 => {
                    let stream = target(rng);
                    let payload = random_payload(rng, tag);
                    ops.push(EngineOp::Append { stream, payload });
                }
                45..=69 => {
                    let count = 1 + rng.below(3) as u32;
                    let records = (0..count)
                        .map(|k| (target(rng), random_payload(rng, tag | k)))
                        .collect();
                    ops.push(EngineOp::Batch { records });
                }
                70..=79 => ops.push(EngineOp::Trim {
                    stream: mine,
                    keep_per_mille: rng.below(1001) as u16,
                }),
                80..=84 => {
                    // The writer replaces its stream: two whole operations back to back.
                    ops.push(EngineOp::Delete { stream: mine });
                    ops.push(EngineOp::Create {
                        stream: next_ordinal,
                    });
                    own[writer] = next_ordinal;
                    next_ordinal += 1;
                }
                85..=91 => ops.push(EngineOp::Trim {
                    stream: shared,
                    keep_per_mille: rng.below(1001) as u16,
                }),
                92 | 93 => ops.push(EngineOp::Reopen),
                _ => ops.push(EngineOp::Append {
                    stream: target(rng),
                    payload: PayloadSpec::Crafted,
                }),
            }
        }
    }
    ops
}

// ----- the fence hook ------------------------------------------------------------------

/// State shared between the workload and the fence hook.
pub(crate) struct HookState {
    pub model: Model,
    pub op_index: Option<usize>,
    pub tally: Tally,
    pub violation: Option<Violation>,
    pub trace: TraceHash,
    /// Whether image verdicts go into the trace hash (not with real threads).
    pub hash_images: bool,
    /// A migration is in progress: its fences count as migration crash points.
    pub migrating: bool,
}

impl HookState {
    pub fn new(hash_images: bool) -> HookState {
        HookState {
            model: Model::default(),
            op_index: None,
            tally: Tally::default(),
            violation: None,
            trace: TraceHash::new(),
            hash_images,
            migrating: false,
        }
    }
}

/// Installs a fence hook on `sim` that recovers and checks crash images at every fence.
pub(crate) fn install_hook<E: ColdEnv>(
    sim: &SimPmem,
    shared: Arc<Mutex<HookState>>,
    budget: EngineBudget,
    lane_count: usize,
    seed: u64,
    env: Arc<E>,
) {
    sim.set_fence_hook(Some(Box::new(move |point: &CrashPoint<'_>| {
        let mut state = shared.lock();
        state.tally.fences += 1;
        let out_of_budget = budget.images_max > 0 && state.tally.images >= budget.images_max;
        if state.violation.is_some() || out_of_budget {
            return;
        }
        state.tally.fences_checked += 1;
        if state.migrating {
            state.tally.migration_crash_points += 1;
        }
        let fence = point.fence_index().unwrap_or(0);
        let model = state.model.clone();
        let op_index = state.op_index;
        let image_seed = seed ^ fence.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let mut verdicts = TraceHash::new();
        // The cold tier's durable state at this instant goes with every image of it.
        let checker = env.image_checker(lane_count);
        let run =
            point.for_each_image(budget.exhaustive_max, budget.samples, image_seed, |image| {
                state.tally.images += 1;
                let mut verdict = checker(image, &model);
                let nested_due = E::NESTED_RECOVERY_CRASHES
                    && budget.recovery_crash_every > 0
                    && state.tally.images % budget.recovery_crash_every == 0;
                if verdict.is_ok() && nested_due {
                    let nested = NestedBudget {
                        seed: image_seed,
                        ..NestedBudget::default()
                    };
                    match oracle::crash_during_recovery(image, &model, lane_count, nested) {
                        Ok(count) => state.tally.recovery_crash_images += count,
                        Err(error) => verdict = Err(error),
                    }
                }
                match verdict {
                    Ok(digest) => {
                        verdicts.u64(digest);
                        ControlFlow::Continue(())
                    }
                    Err(detail) => {
                        state.violation = Some(Violation {
                            crash_point: Some(fence),
                            op_index,
                            detail: format!(
                                "{detail}; in flight: {}",
                                oracle::describe_pending(&model.pending)
                            ),
                        });
                        ControlFlow::Break(())
                    }
                }
            });
        if run.exhaustive {
            state.tally.exhaustive_fences += 1;
        }
        if state.hash_images {
            let image_count = u64::try_from(point.image_count()).unwrap_or(u64::MAX);
            let trace = &mut state.trace;
            trace.u64(fence);
            trace.u64(point.dirty_line_count() as u64);
            trace.u64(image_count);
            trace.u64(run.images_visited);
            trace.u64(u64::from(run.exhaustive));
            trace.fold(verdicts.finish());
        }
    })));
}

// ----- the interpreter -----------------------------------------------------------------

/// A [`Pmem`] backed by the crash simulator: the simulator itself, or a wrapper around it
/// (see [`crate::mutants`]).
pub trait SimBacked: Pmem {
    fn sim(&self) -> &SimPmem;
}

impl SimBacked for SimPmem {
    fn sim(&self) -> &SimPmem {
        self
    }
}

/// Recovers one crash image (with whatever cold state goes with it) and checks it against
/// the model; returns the digest of the recovered state.
pub type ImageChecker = Box<dyn Fn(&[u8], &Model) -> Result<u64, String>>;

/// The cold tier side of an engine workload: none ([`NoCold`]), or SSD files under fault
/// injection ([`crate::migration_case::SsdCold`]).
pub trait ColdEnv: Send + Sync + 'static {
    type Tier: ColdTier;
    /// Whether images are also crashed during their own recovery (nested images are
    /// recovered without a cold tier, so only where there is none).
    const NESTED_RECOVERY_CRASHES: bool;
    /// A checker for the crash images of this instant (called at fences: it captures the
    /// cold tier's durable state now).
    fn image_checker(&self, lane_count: usize) -> ImageChecker;
    /// Arms a fault for the coming cold I/O (`None` disarms).
    fn arm(&self, spec: Option<FaultSpec>);
    /// Whether a fault is armed (a failed migration is then expected).
    fn armed(&self) -> bool;
    /// Crashes the SSD now, materializes its crash image `seed`, and returns a fresh cold
    /// tier over it (the restart after a system crash).
    fn reboot(&self, seed: u64) -> Result<Self::Tier, String>;
    /// I/O faults injected so far.
    fn faults_injected(&self) -> u64;
}

/// No cold tier: migrations fail (the segment stays), images recover without one.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCold;

impl ColdEnv for NoCold {
    type Tier = NoColdTier;
    const NESTED_RECOVERY_CRASHES: bool = true;

    fn image_checker(&self, lane_count: usize) -> ImageChecker {
        Box::new(move |image, model| oracle::check_image(image, model, lane_count))
    }

    fn arm(&self, _spec: Option<FaultSpec>) {}

    fn armed(&self) -> bool {
        true
    }

    fn reboot(&self, _seed: u64) -> Result<NoColdTier, String> {
        Ok(NoColdTier)
    }

    fn faults_injected(&self) -> u64 {
        0
    }
}

pub(crate) struct Runner<P: SimBacked, E: ColdEnv> {
    log: Option<Log<P, E::Tier>>,
    shared: Arc<Mutex<HookState>>,
    streams: BTreeMap<u16, StreamId>,
    options: OpenOptions,
    nonce: u64,
    stream_slot_count: usize,
    env: Arc<E>,
    wrap: Box<dyn Fn(SimPmem) -> P>,
    seed: u64,
    budget: EngineBudget,
}

/// What an operation did, for the trace hash.
enum Outcome {
    Skipped,
    Done(Vec<u64>),
}

impl<P: SimBacked, E: ColdEnv> Runner<P, E> {
    fn log(&self) -> Result<&Log<P, E::Tier>, String> {
        self.log
            .as_ref()
            .ok_or_else(|| "the log is closed (an earlier reopen failed)".to_owned())
    }

    fn set_pending(&self, pending: Vec<Pending>) {
        self.shared.lock().model.pending = pending;
    }

    fn apply(&mut self, op: &EngineOp) -> Result<Outcome, String> {
        match op {
            EngineOp::Create { stream } => self.create(*stream),
            EngineOp::Delete { stream } => self.delete(*stream),
            EngineOp::Append { stream, payload } => self.append(*stream, *payload),
            EngineOp::Batch { records } => self.batch(records),
            EngineOp::Trim {
                stream,
                keep_per_mille,
            } => self.trim_op(*stream, *keep_per_mille),
            EngineOp::Reclaim => {
                let freed = self.log()?.reclaim();
                Ok(Outcome::Done(vec![freed as u64]))
            }
            EngineOp::Reopen => self.reopen(),
            EngineOp::Migrate => self.migrate_all(),
            EngineOp::MigrateFaulty {
                fail_at,
                fault,
                persistent,
            } => {
                let fault = [
                    CountdownFault::Eio,
                    CountdownFault::Enospc,
                    CountdownFault::ShortWrite,
                    CountdownFault::Misdirect,
                ][usize::from(fault % 4)];
                let fail_at = u64::from(*fail_at).max(1);
                self.env
                    .arm(Some(FaultSpec::countdown(fail_at, fault, *persistent)));
                let outcome = self.migrate_all();
                self.env.arm(None);
                outcome
            }
            EngineOp::CrashRestart { fail_at, image } => self.crash_restart(*fail_at, *image),
        }
    }

    /// Migrates every sealed segment; failures are expected only under an armed fault.
    fn migrate_all(&mut self) -> Result<Outcome, String> {
        self.shared.lock().migrating = true;
        let outcome = self.migrate_sealed();
        self.shared.lock().migrating = false;
        outcome
    }

    fn migrate_sealed(&self) -> Result<Outcome, String> {
        let log = self.log()?;
        let (mut migrated, mut failed) = (0u64, 0u64);
        for info in log.segment_infos() {
            if info.state != SegmentState::Sealed || info.scrub_pending {
                continue;
            }
            match log.migrate_segment(info.index) {
                Ok(_) => migrated += 1,
                Err(error) if self.env.armed() => {
                    failed += 1;
                    tracing::debug!(%error, "migration failed under an injected fault");
                }
                Err(error) => {
                    return Err(format!(
                        "migrating segment {} failed without a fault: {error}",
                        info.index
                    ))
                }
            }
        }
        log.reclaim();
        Ok(Outcome::Done(vec![migrated, failed]))
    }

    /// SSD crash during migrations, then a system crash and recovery of both tiers.
    fn crash_restart(&mut self, fail_at: u16, image: u8) -> Result<Outcome, String> {
        let fail_at = u64::from(fail_at).max(1);
        self.env.arm(Some(FaultSpec::countdown(
            fail_at,
            CountdownFault::Crash,
            false,
        )));
        let migrated = self.migrate_all();
        self.env.arm(None);
        migrated?;
        let Some(log) = self.log.take() else {
            return Err("the log is closed".to_owned());
        };
        // A persistent-memory crash image of this instant: samples 0 and 1 are "nothing" and
        // "everything" pending persisted, later ones random prefixes per line.
        let wanted = u64::from(image % 4);
        let image_seed = self.seed ^ (fail_at << 20) ^ u64::from(image);
        let mut chosen = Vec::new();
        log.pmem().sim().with_crash_point(|point| {
            let mut index = 0;
            point.for_each_image(0, wanted + 1, image_seed, |bytes| {
                if index == wanted {
                    chosen = bytes.to_vec();
                }
                index += 1;
                ControlFlow::Continue(())
            });
        });
        log.pmem().sim().set_fence_hook(None);
        drop(log);
        let tier = self.env.reboot(image_seed)?;
        {
            let mut state = self.shared.lock();
            state.tally.migration_crash_points += 1;
            state.tally.cold_images += 1;
        }
        let pmem = (self.wrap)(SimPmem::from_image(chosen));
        install_hook(
            pmem.sim(),
            Arc::clone(&self.shared),
            self.budget,
            self.options.lane_count,
            self.seed ^ fail_at,
            Arc::clone(&self.env),
        );
        let (log, _report) = Log::open_with_cold(pmem, tier, self.options)
            .map_err(|e| format!("recovery after a system crash failed: {e}"))?;
        let model = self.shared.lock().model.clone();
        let digest =
            oracle::check_log(&log, &model).map_err(|e| format!("after a system crash: {e}"))?;
        self.log = Some(log);
        Ok(Outcome::Done(vec![digest]))
    }

    fn create(&mut self, ordinal: u16) -> Result<Outcome, String> {
        if self.streams.contains_key(&ordinal) || self.streams.len() >= self.stream_slot_count {
            return Ok(Outcome::Skipped);
        }
        let label = format!("s{ordinal}").into_bytes();
        self.set_pending(vec![Pending::Create {
            label: label.clone(),
        }]);
        let id = self
            .log()?
            .create_stream(&label)
            .map_err(|e| format!("create_stream failed: {e}"))?;
        let mut state = self.shared.lock();
        state.model.pending.clear();
        state.model.streams.insert(id, StreamModel::new(label));
        self.streams.insert(ordinal, id);
        Ok(Outcome::Done(vec![id.0]))
    }

    fn delete(&mut self, ordinal: u16) -> Result<Outcome, String> {
        let Some(&id) = self.streams.get(&ordinal) else {
            return Ok(Outcome::Skipped);
        };
        self.set_pending(vec![Pending::Delete { stream: id }]);
        self.log()?
            .delete_stream(id)
            .map_err(|e| format!("delete_stream {id} failed: {e}"))?;
        {
            let mut state = self.shared.lock();
            state.model.pending.clear();
            state.model.streams.remove(&id);
        }
        self.streams.remove(&ordinal);
        self.log()?.reclaim();
        Ok(Outcome::Done(Vec::new()))
    }

    fn next_seq(&self, id: StreamId) -> u64 {
        self.shared
            .lock()
            .model
            .streams
            .get(&id)
            .map_or(0, StreamModel::next_seq)
    }

    fn append(&mut self, ordinal: u16, spec: PayloadSpec) -> Result<Outcome, String> {
        let Some(&id) = self.streams.get(&ordinal) else {
            return Ok(Outcome::Skipped);
        };
        let bytes = spec.bytes(self.nonce, id, self.next_seq(id));
        self.set_pending(vec![Pending::Append {
            records: vec![(id, bytes.clone())],
        }]);
        match self.log()?.append(id, &bytes) {
            Ok(seq) => {
                if let Err(report) = self.log()?.pmem().sim().check_all_persisted() {
                    return Err(format!(
                        "append returned with stores not persisted: {report}"
                    ));
                }
                self.acknowledge(&[(id, bytes)], &[seq])?;
                Ok(Outcome::Done(vec![seq]))
            }
            Err(EngineError::PoolFull { .. }) => {
                let (_, next) = self.bounds(id)?;
                if next != self.next_seq(id) {
                    return Err(format!("a refused append (pool full) changed {id}"));
                }
                self.set_pending(Vec::new());
                self.make_room()?;
                Ok(Outcome::Skipped)
            }
            Err(error) => Err(format!("append to {id} failed: {error}")),
        }
    }

    fn batch(&mut self, specs: &[(u16, PayloadSpec)]) -> Result<Outcome, String> {
        let mut records: Vec<(StreamId, Vec<u8>)> = Vec::new();
        for (ordinal, spec) in specs {
            if let Some(&id) = self.streams.get(ordinal) {
                let earlier = records.iter().filter(|(s, _)| *s == id).count() as u64;
                records.push((id, spec.bytes(self.nonce, id, self.next_seq(id) + earlier)));
            }
        }
        if records.is_empty() {
            return Ok(Outcome::Skipped);
        }
        self.set_pending(vec![Pending::Append {
            records: records.clone(),
        }]);
        let borrowed: Vec<(StreamId, &[u8])> =
            records.iter().map(|(s, p)| (*s, p.as_slice())).collect();
        match self.log()?.append_batch(&borrowed) {
            Ok(seqs) => {
                self.acknowledge(&records, &seqs)?;
                Ok(Outcome::Done(seqs))
            }
            Err(EngineError::PoolFull { .. }) => {
                // A batch is all or nothing: a refused one wrote nothing.
                self.check_batch_left_nothing(&records)?;
                self.set_pending(Vec::new());
                self.make_room()?;
                Ok(Outcome::Skipped)
            }
            Err(EngineError::BatchTooLarge { .. }) => {
                self.check_batch_left_nothing(&records)?;
                self.set_pending(Vec::new());
                Ok(Outcome::Skipped)
            }
            Err(error) => Err(format!("append_batch failed: {error}")),
        }
    }

    fn acknowledge(&self, records: &[(StreamId, Vec<u8>)], seqs: &[u64]) -> Result<(), String> {
        if records.len() != seqs.len() {
            return Err(format!(
                "{} records appended, {} seqs returned",
                records.len(),
                seqs.len()
            ));
        }
        let mut state = self.shared.lock();
        state.model.pending.clear();
        for ((id, bytes), &seq) in records.iter().zip(seqs) {
            let Some(stream) = state.model.streams.get_mut(id) else {
                return Err(format!("append acknowledged for unmodelled stream {id}"));
            };
            if seq != stream.next_seq() {
                return Err(format!(
                    "stream {id}: acknowledged seq {seq}, expected {}",
                    stream.next_seq()
                ));
            }
            stream.ack(seq, bytes.clone())?;
        }
        Ok(())
    }

    /// A refused batch must have written nothing: every stream's tail is where the model
    /// has it.
    fn check_batch_left_nothing(&self, records: &[(StreamId, Vec<u8>)]) -> Result<(), String> {
        let ids: std::collections::BTreeSet<StreamId> = records.iter().map(|(s, _)| *s).collect();
        for id in ids {
            let (_, next) = self.bounds(id)?;
            let state = self.shared.lock();
            let Some(stream) = state.model.streams.get(&id) else {
                return Err(format!("batch touched unmodelled stream {id}"));
            };
            if next != stream.next_seq() {
                return Err(format!(
                    "a refused batch left records in {id}: next seq {next}, modelled {}",
                    stream.next_seq()
                ));
            }
        }
        Ok(())
    }

    fn bounds(&self, id: StreamId) -> Result<(u64, u64), String> {
        self.log()?
            .bounds(id)
            .map_err(|e| format!("bounds of {id} failed: {e}"))
    }

    /// The pool ran full: trim every stream to its tail (each a modelled trim) and reclaim.
    fn make_room(&mut self) -> Result<(), String> {
        let ids: Vec<StreamId> = self.streams.values().copied().collect();
        for id in ids {
            let (_, next) = self.bounds(id)?;
            self.trim_to(id, next)?;
        }
        Ok(())
    }

    fn trim_op(&mut self, ordinal: u16, keep_per_mille: u16) -> Result<Outcome, String> {
        let Some(&id) = self.streams.get(&ordinal) else {
            return Ok(Outcome::Skipped);
        };
        let (first, next) = self.bounds(id)?;
        let keep = u64::from(keep_per_mille.min(1000));
        let to = first + (next - first) * (1000 - keep) / 1000;
        self.trim_to(id, to)?;
        Ok(Outcome::Done(vec![to]))
    }

    fn trim_to(&mut self, id: StreamId, to: u64) -> Result<(), String> {
        self.set_pending(vec![Pending::Trim {
            stream: id,
            first_seq: to,
        }]);
        self.log()?
            .trim(id, to)
            .map_err(|e| format!("trim {id} to {to} failed: {e}"))?;
        {
            let mut state = self.shared.lock();
            state.model.pending.clear();
            if let Some(stream) = state.model.streams.get_mut(&id) {
                stream.trim(to);
            }
        }
        self.log()?.reclaim();
        Ok(())
    }

    fn reopen(&mut self) -> Result<Outcome, String> {
        let Some(log) = self.log.take() else {
            return Err("the log is closed".to_owned());
        };
        let (pmem, cold) = log.close_with_cold();
        let (log, _report) = Log::open_with_cold(pmem, cold, self.options)
            .map_err(|e| format!("reopen failed: {e}"))?;
        let model = self.shared.lock().model.clone();
        let digest = oracle::check_log(&log, &model).map_err(|e| format!("after reopen: {e}"))?;
        self.log = Some(log);
        Ok(Outcome::Done(vec![digest]))
    }
}

/// Runs `ops` on a fresh simulated pool, checking crash images at every fence.
pub fn run_engine_ops(
    seed: u64,
    ops: &[EngineOp],
    setup: &EngineSetup,
    budget: &EngineBudget,
) -> EngineRun {
    run_engine_ops_on(seed, ops, setup, budget, |sim| sim)
}

/// [`run_engine_ops`] with the simulator wrapped by `wrap` (a mutant backend, to check that
/// the harness catches what it should).
pub fn run_engine_ops_on<P: SimBacked>(
    seed: u64,
    ops: &[EngineOp],
    setup: &EngineSetup,
    budget: &EngineBudget,
    wrap: impl Fn(SimPmem) -> P + 'static,
) -> EngineRun {
    run_ops_with_cold(seed, ops, setup, budget, wrap, Arc::new(NoCold), NoColdTier)
}

fn failed_run(detail: String) -> EngineRun {
    EngineRun {
        tally: Tally::default(),
        trace_hash: 0,
        violation: Some(Violation {
            crash_point: None,
            op_index: None,
            detail,
        }),
    }
}

/// Runs `ops` on a fresh simulated pool whose cold tier is `tier` (of `env`), checking crash
/// images (with the cold tier's state of the instant) at every fence.
pub fn run_ops_with_cold<P: SimBacked, E: ColdEnv>(
    seed: u64,
    ops: &[EngineOp],
    setup: &EngineSetup,
    budget: &EngineBudget,
    wrap: impl Fn(SimPmem) -> P + 'static,
    env: Arc<E>,
    tier: E::Tier,
) -> EngineRun {
    let shared = Arc::new(Mutex::new(HookState::new(true)));
    let options = OpenOptions {
        lane_count: setup.lane_count,
    };
    let pmem = wrap(SimPmem::new(setup.pool_bytes));
    let log = match Log::create_with_cold(pmem, tier, setup.log_config, options) {
        Ok(log) => log,
        Err(error) => return failed_run(format!("cannot create the log: {error}")),
    };
    let nonce = oracle::pool_nonce(log.pmem());
    install_hook(
        log.pmem().sim(),
        Arc::clone(&shared),
        *budget,
        setup.lane_count,
        seed,
        Arc::clone(&env),
    );
    let mut runner = Runner {
        log: Some(log),
        shared: Arc::clone(&shared),
        streams: BTreeMap::new(),
        options,
        nonce,
        stream_slot_count: setup.log_config.stream_slot_count as usize,
        env: Arc::clone(&env),
        wrap: Box::new(wrap),
        seed,
        budget: *budget,
    };
    for (index, op) in ops.iter().enumerate() {
        shared.lock().op_index = Some(index);
        let outcome = runner.apply(op);
        let mut state = shared.lock();
        state.tally.ops += 1;
        state.trace.str(&op.to_string());
        match outcome {
            Ok(Outcome::Skipped) => state.trace.u64(u64::MAX),
            Ok(Outcome::Done(values)) => {
                for value in values {
                    state.trace.u64(value);
                }
            }
            Err(detail) => {
                if state.violation.is_none() {
                    state.violation = Some(Violation {
                        crash_point: None,
                        op_index: Some(index),
                        detail,
                    });
                }
            }
        }
        if state.violation.is_some() {
            break;
        }
    }
    shared.lock().op_index = None;
    if shared.lock().violation.is_none() {
        if let Err(detail) = final_check(&runner, setup.lane_count) {
            shared.lock().violation = Some(Violation {
                crash_point: None,
                op_index: None,
                detail,
            });
        }
    }
    if let Some(log) = runner.log.take() {
        log.pmem().sim().set_fence_hook(None);
    }
    let mut state = shared.lock();
    state.tally.io_faults_injected += env.faults_injected();
    EngineRun {
        tally: state.tally,
        trace_hash: state.trace.finish(),
        violation: state.violation.clone(),
    }
}

/// The final state, without a crash, is the model too.
fn final_check<P: SimBacked, E: ColdEnv>(
    runner: &Runner<P, E>,
    lane_count: usize,
) -> Result<(), String> {
    let log = runner.log()?;
    let model = runner.shared.lock().model.clone();
    oracle::check_log(log, &model).map_err(|e| format!("live log: {e}"))?;
    let image = log.pmem().sim().volatile_image();
    let checker = runner.env.image_checker(lane_count);
    checker(&image, &model).map_err(|e| format!("final image: {e}"))?;
    Ok(())
}

// ----- shrinking -----------------------------------------------------------------------

/// A short operation list that still violates the oracle on a wrapped simulator (see
/// [`crate::shrink::shrink`]).
pub fn shrink_engine_ops_on<P: SimBacked>(
    seed: u64,
    ops: &[EngineOp],
    setup: &EngineSetup,
    budget: &EngineBudget,
    time_limit: Duration,
    wrap: impl Fn(SimPmem) -> P + Clone + 'static,
) -> Vec<EngineOp> {
    let fails = |candidate: &[EngineOp]| {
        run_engine_ops_on(seed, candidate, setup, budget, wrap.clone())
            .violation
            .is_some()
    };
    crate::shrink::shrink(ops, fails, time_limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generators_are_deterministic() {
        assert_eq!(generate_random(5, 50, 4), generate_random(5, 50, 4));
        assert_ne!(generate_random(5, 50, 4), generate_random(6, 50, 4));
        assert_eq!(
            generate_interleaved(5, 3, 10),
            generate_interleaved(5, 3, 10)
        );
    }

    #[test]
    fn ops_on_missing_streams_are_skipped() {
        let ops = vec![
            EngineOp::Append {
                stream: 3,
                payload: PayloadSpec::Crafted,
            },
            EngineOp::Delete { stream: 1 },
            EngineOp::Create { stream: 0 },
            EngineOp::Create { stream: 0 },
            EngineOp::Append {
                stream: 0,
                payload: PayloadSpec::Bytes {
                    len_bytes: 10,
                    tag: 1,
                },
            },
        ];
        let budget = EngineBudget {
            exhaustive_max: 64,
            samples: 4,
            recovery_crash_every: 0,
            images_max: 0,
        };
        let run = run_engine_ops(1, &ops, &EngineSetup::default(), &budget);
        assert_eq!(run.violation, None);
        assert_eq!(run.tally.ops, 5);
        assert!(run.tally.images > 0);
    }
}

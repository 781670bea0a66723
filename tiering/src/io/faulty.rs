//! [`FaultyIo`]: a [`SegmentIo`] wrapper that injects the SSD faults of the crash model and
//! keeps a model of what is durable, so a test can turn any moment into a crash image.
//!
//! Faults (all seeded by [`FaultSpec::seed`], each one recorded as a [`FaultEvent`]):
//!
//! | fault                  | effect                                                        |
//! |------------------------|---------------------------------------------------------------|
//! | write EIO / ENOSPC     | the write fails, nothing is written                           |
//! | short write            | only the first half (aligned down) is written, reported short |
//! | misdirected write      | the bytes land 1-4 sectors away; success is reported          |
//! | read EIO               | the read fails                                                |
//! | read garbage           | one sector of the returned bytes is replaced by noise         |
//! | misdirected read       | the bytes come from 1-4 sectors away                          |
//! | fdatasync failure      | sync fails; the unsynced sectors are *lost*: no later sync    |
//! |                        | makes them durable until they are written again (Linux marks  |
//! |                        | the pages clean after a failed fsync)                         |
//! | directory sync failure | pending creates/renames/removes stay pending                  |
//! | crash                  | this and every later operation fails with `SimulatedCrash`    |
//!
//! Countdown mode ([`FaultSpec::countdown`]) injects one chosen fault at the k-th counted
//! operation, once (one-time) or at every operation from then on (persistent), in the style of
//! SQLite's I/O error tests. Every [`SegmentIo`] call that reaches the device counts as one
//! operation; a streamed write counts each chunk write and the final fdatasync.
//!
//! The durability model, per file: the bytes a successful fdatasync made durable, the sectors
//! written since (unsynced), and the sectors whose sync failed (lost). Per directory: the
//! names as of the last successful directory sync, and the operations since. A crash image
//! ([`FaultyIo::materialize_crash`]) keeps the durable names plus a random prefix of the
//! pending directory operations, and per unsynced or lost 4 KiB sector picks: fully there,
//! absent (old contents), or garbage. A file grows only if some sector beyond its durable
//! length survived.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::Path;

use parking_lot::Mutex;

use super::{Completion, IoBuf, IoFile, SegmentIo, IO_ALIGN_BYTES};
use crate::error::{IoOp, Result, TieringError};
use pmem_emul::SplitMix64;

const SECTOR_BYTES: usize = IO_ALIGN_BYTES;

/// The fault injected at the countdown point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountdownFault {
    /// EIO (for an fdatasync: a failed sync, with its lost-pages semantics).
    Eio,
    /// ENOSPC for writes and creates, EIO for other operations.
    Enospc,
    /// A short write for writes, EIO for other operations.
    ShortWrite,
    /// A crash just before the operation: nothing from it on happens.
    Crash,
    /// Writes and reads land 1-4 sectors away from where they were aimed, reporting success;
    /// other operations fail with EIO.
    Misdirect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Countdown {
    /// The 1-based number of the operation that fails.
    pub fail_at_op: u64,
    pub fault: CountdownFault,
    /// Fail every operation from `fail_at_op` on, not just that one.
    pub persistent: bool,
}

/// What to inject, and how often. Probabilities are per operation of the matching kind.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpec {
    pub seed: u64,
    pub write_eio_probability: f64,
    pub write_enospc_probability: f64,
    pub short_write_probability: f64,
    pub misdirected_write_probability: f64,
    pub read_eio_probability: f64,
    pub read_garbage_probability: f64,
    pub misdirected_read_probability: f64,
    pub fdatasync_fail_probability: f64,
    pub sync_dir_fail_probability: f64,
    pub crash_probability: f64,
    pub countdown: Option<Countdown>,
}

impl FaultSpec {
    /// No faults: the wrapper only counts operations and keeps its durability model.
    pub fn none(seed: u64) -> FaultSpec {
        FaultSpec {
            seed,
            write_eio_probability: 0.0,
            write_enospc_probability: 0.0,
            short_write_probability: 0.0,
            misdirected_write_probability: 0.0,
            read_eio_probability: 0.0,
            read_garbage_probability: 0.0,
            misdirected_read_probability: 0.0,
            fdatasync_fail_probability: 0.0,
            sync_dir_fail_probability: 0.0,
            crash_probability: 0.0,
            countdown: None,
        }
    }

    /// Fail the `fail_at_op`-th operation with `fault`, once or from then on.
    pub fn countdown(fail_at_op: u64, fault: CountdownFault, persistent: bool) -> FaultSpec {
        FaultSpec {
            countdown: Some(Countdown {
                fail_at_op,
                fault,
                persistent,
            }),
            ..FaultSpec::none(fail_at_op)
        }
    }
}

/// One injected fault, for the trace a failing test prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultEvent {
    pub op_number: u64,
    pub op: IoOp,
    pub file: String,
    pub offset_bytes: u64,
    pub fault: &'static str,
}

impl std::fmt::Display for FaultEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "#{} {} {} @{}: {}",
            self.op_number, self.op, self.file, self.offset_bytes, self.fault
        )
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounters {
    pub ops: u64,
    pub injected: u64,
    pub crashes: u64,
}

/// What [`FaultyIo::materialize_crash`] produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrashImageReport {
    pub seed: u64,
    /// Names present after the crash, with their lengths.
    pub files: Vec<(String, u64)>,
    pub pending_dir_ops: usize,
    pub dir_ops_kept: usize,
    pub uncertain_sectors: u64,
    pub garbage_sectors: u64,
}

/// A file of a [`FaultyIo`].
#[derive(Debug)]
pub struct FaultyFile<F> {
    inner: F,
    id: u64,
    name: String,
}

impl<F: IoFile> IoFile for FaultyFile<F> {
    fn name(&self) -> &str {
        &self.name
    }
}

impl<F> FaultyFile<F> {
    pub fn inner(&self) -> &F {
        &self.inner
    }
}

/// Fault-injecting wrapper; see the module documentation.
pub struct FaultyIo<I: SegmentIo> {
    inner: I,
    state: Mutex<FaultState>,
}

struct FaultState {
    spec: FaultSpec,
    rng: SplitMix64,
    crashed: bool,
    counters: FaultCounters,
    trace: Vec<FaultEvent>,
    model: DiskModel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Pass,
    Crash,
    Errno(i32),
    ShortWrite,
    Misdirect { delta_bytes: i64 },
    Garbage,
}

impl<I: SegmentIo> FaultyIo<I> {
    /// Wraps `inner`; files already in its directory are taken as durable.
    pub fn new(inner: I, spec: FaultSpec) -> Result<FaultyIo<I>> {
        let model = DiskModel::load(inner.dir(), &inner.list()?)?;
        let state = FaultState {
            rng: SplitMix64::new(spec.seed),
            spec,
            crashed: false,
            counters: FaultCounters::default(),
            trace: Vec::new(),
            model,
        };
        Ok(FaultyIo {
            inner,
            state: Mutex::new(state),
        })
    }

    /// Replaces the spec and restarts the operation count (the countdown counts from here).
    pub fn set_spec(&self, spec: FaultSpec) {
        let mut state = self.state.lock();
        state.rng = SplitMix64::new(spec.seed);
        state.spec = spec;
        state.counters.ops = 0;
    }

    /// Operations counted since the last [`FaultyIo::set_spec`].
    pub fn ops_done(&self) -> u64 {
        self.state.lock().counters.ops
    }

    pub fn counters(&self) -> FaultCounters {
        self.state.lock().counters
    }

    pub fn trace(&self) -> Vec<FaultEvent> {
        self.state.lock().trace.clone()
    }

    pub fn is_crashed(&self) -> bool {
        self.state.lock().crashed
    }

    /// Crashes now: every later operation fails until [`FaultyIo::materialize_crash`].
    pub fn crash_now(&self) {
        let mut state = self.state.lock();
        state.crashed = true;
        state.counters.crashes += 1;
    }

    pub fn inner(&self) -> &I {
        &self.inner
    }

    /// Rewrites the real directory into one crash image of the current model (chosen by
    /// `seed`), then "reboots": the image becomes the durable state, the crash flag clears,
    /// and faults are disarmed. Callers drop every open handle first.
    pub fn materialize_crash(&self, seed: u64) -> Result<CrashImageReport> {
        let mut state = self.state.lock();
        let mut rng = SplitMix64::new(seed);
        let (image, mut report) = state.model.crash_image(&mut rng);
        report.seed = seed;
        write_image(self.inner.dir(), &state.model, &image)?;
        state.model = DiskModel::from_image(image);
        state.crashed = false;
        let seed_next = state.spec.seed;
        state.spec = FaultSpec::none(seed_next);
        Ok(report)
    }

    fn decide(&self, state: &mut FaultState, op: IoOp, file: &str, offset_bytes: u64) -> Decision {
        state.counters.ops += 1;
        let op_number = state.counters.ops;
        if state.crashed {
            return Decision::Crash;
        }
        let decision = decide_fault(state, op, op_number);
        if decision != Decision::Pass {
            state.counters.injected += 1;
            if decision == Decision::Crash {
                state.crashed = true;
                state.counters.crashes += 1;
            }
            let fault = describe(decision);
            state.trace.push(FaultEvent {
                op_number,
                op,
                file: file.to_owned(),
                offset_bytes,
                fault,
            });
            tracing::debug!(op_number, %op, file, offset_bytes, fault, "injected I/O fault");
        }
        decision
    }
}

fn describe(decision: Decision) -> &'static str {
    match decision {
        Decision::Pass => "none",
        Decision::Crash => "crash",
        Decision::Errno(libc::ENOSPC) => "ENOSPC",
        Decision::Errno(_) => "EIO",
        Decision::ShortWrite => "short write",
        Decision::Misdirect { .. } => "misdirected",
        Decision::Garbage => "garbage",
    }
}

fn decide_fault(state: &mut FaultState, op: IoOp, op_number: u64) -> Decision {
    if let Some(countdown) = state.spec.countdown {
        let hit = op_number == countdown.fail_at_op
            || (countdown.persistent && op_number > countdown.fail_at_op);
        if hit {
            return countdown_decision(countdown.fault, op, &mut state.rng);
        }
    }
    let spec = &state.spec;
    let rng = &mut state.rng;
    if rng.chance(spec.crash_probability) {
        return Decision::Crash;
    }
    match op {
        IoOp::Write => {
            if rng.chance(spec.write_eio_probability) {
                Decision::Errno(libc::EIO)
            } else if rng.chance(spec.write_enospc_probability) {
                Decision::Errno(libc::ENOSPC)
            } else if rng.chance(spec.short_write_probability) {
                Decision::ShortWrite
            } else if rng.chance(spec.misdirected_write_probability) {
                misdirect(rng)
            } else {
                Decision::Pass
            }
        }
        IoOp::Read => {
            if rng.chance(spec.read_eio_probability) {
                Decision::Errno(libc::EIO)
            } else if rng.chance(spec.read_garbage_probability) {
                Decision::Garbage
            } else if rng.chance(spec.misdirected_read_probability) {
                misdirect(rng)
            } else {
                Decision::Pass
            }
        }
        IoOp::Create if rng.chance(spec.write_enospc_probability) => Decision::Errno(libc::ENOSPC),
        IoOp::Fdatasync if rng.chance(spec.fdatasync_fail_probability) => {
            Decision::Errno(libc::EIO)
        }
        IoOp::SyncDir if rng.chance(spec.sync_dir_fail_probability) => Decision::Errno(libc::EIO),
        _ => Decision::Pass,
    }
}

fn misdirect(rng: &mut SplitMix64) -> Decision {
    let sectors = 1 + rng.below(4) as i64;
    let sign = if rng.below(2) == 0 { -1 } else { 1 };
    Decision::Misdirect {
        delta_bytes: sign * sectors * SECTOR_BYTES as i64,
    }
}

fn countdown_decision(fault: CountdownFault, op: IoOp, rng: &mut SplitMix64) -> Decision {
    match (fault, op) {
        (CountdownFault::Misdirect, IoOp::Write | IoOp::Read) => misdirect(rng),
        (CountdownFault::Crash, _) => Decision::Crash,
        (CountdownFault::Enospc, IoOp::Write | IoOp::Create | IoOp::Rename) => {
            Decision::Errno(libc::ENOSPC)
        }
        (CountdownFault::ShortWrite, IoOp::Write) => Decision::ShortWrite,
        _ => Decision::Errno(libc::EIO),
    }
}

fn errno_error(op: IoOp, file: &str, offset_bytes: Option<u64>, code: i32) -> TieringError {
    let source = io::Error::from_raw_os_error(code);
    let file = file.to_owned();
    match (op, offset_bytes) {
        (IoOp::Fdatasync | IoOp::SyncDir, _) => TieringError::SyncFailed { op, file, source },
        (_, Some(offset_bytes)) => TieringError::Io {
            op,
            file,
            offset_bytes,
            source,
        },
        (_, None) => TieringError::Fs { op, file, source },
    }
}

fn shifted(offset_bytes: u64, delta_bytes: i64) -> u64 {
    let shifted = offset_bytes.checked_add_signed(delta_bytes);
    // Below zero, misdirect forwards instead.
    shifted.unwrap_or(offset_bytes + delta_bytes.unsigned_abs())
}

impl<I: SegmentIo> SegmentIo for FaultyIo<I> {
    type File = FaultyFile<I::File>;

    fn dir(&self) -> &Path {
        self.inner.dir()
    }

    fn is_direct(&self) -> bool {
        self.inner.is_direct()
    }

    fn alloc_buf(&self, capacity_bytes: usize) -> IoBuf {
        self.inner.alloc_buf(capacity_bytes)
    }

    fn create(&self, name: &str) -> Result<Self::File> {
        let mut state = self.state.lock();
        match self.decide(&mut state, IoOp::Create, name, 0) {
            Decision::Pass => {}
            Decision::Crash => return Err(crash(IoOp::Create, name)),
            Decision::Errno(code) => return Err(errno_error(IoOp::Create, name, None, code)),
            _ => return Err(errno_error(IoOp::Create, name, None, libc::EIO)),
        }
        let inner = self.inner.create(name)?;
        let id = state.model.create(name);
        Ok(FaultyFile {
            inner,
            id,
            name: name.to_owned(),
        })
    }

    fn open(&self, name: &str) -> Result<Self::File> {
        let mut state = self.state.lock();
        match self.decide(&mut state, IoOp::Open, name, 0) {
            Decision::Pass => {}
            Decision::Crash => return Err(crash(IoOp::Open, name)),
            _ => return Err(errno_error(IoOp::Open, name, None, libc::EIO)),
        }
        let inner = self.inner.open(name)?;
        let id = state.model.lookup_or_load(self.inner.dir(), name)?;
        Ok(FaultyFile {
            inner,
            id,
            name: name.to_owned(),
        })
    }

    fn file_len(&self, file: &Self::File) -> Result<u64> {
        let mut state = self.state.lock();
        match self.decide(&mut state, IoOp::Stat, &file.name, 0) {
            Decision::Pass => self.inner.file_len(&file.inner),
            Decision::Crash => Err(crash(IoOp::Stat, &file.name)),
            _ => Err(errno_error(IoOp::Stat, &file.name, None, libc::EIO)),
        }
    }

    fn write_at(&self, file: &Self::File, mut buf: IoBuf, offset_bytes: u64) -> Completion {
        let mut state = self.state.lock();
        let name = file.name.as_str();
        let target = match self.decide(&mut state, IoOp::Write, name, offset_bytes) {
            Decision::Pass | Decision::Garbage => offset_bytes,
            Decision::Crash => return (Err(crash(IoOp::Write, name)), buf),
            Decision::Errno(code) => {
                return (
                    Err(errno_error(IoOp::Write, name, Some(offset_bytes), code)),
                    buf,
                )
            }
            Decision::ShortWrite => {
                let full_len = buf.len();
                let mut short_len = full_len / 2;
                if self.inner.is_direct() {
                    short_len -= short_len % IO_ALIGN_BYTES;
                }
                buf.set_len(short_len);
                let (result, mut buf) = if short_len > 0 {
                    self.inner.write_at(&file.inner, buf, offset_bytes)
                } else {
                    (Ok(0), buf)
                };
                if let Ok(written) = result {
                    state
                        .model
                        .write(file.id, offset_bytes, &buf.as_slice()[..written]);
                }
                buf.set_len(full_len);
                return (result, buf);
            }
            Decision::Misdirect { delta_bytes } => shifted(offset_bytes, delta_bytes),
        };
        let (result, buf) = self.inner.write_at(&file.inner, buf, target);
        if let Ok(written) = result {
            state
                .model
                .write(file.id, target, &buf.as_slice()[..written.min(buf.len())]);
        }
        // A misdirected write reports success at the requested offset.
        (result, buf)
    }

    fn read_at(&self, file: &Self::File, buf: IoBuf, offset_bytes: u64) -> Completion {
        let mut state = self.state.lock();
        let name = file.name.as_str();
        let decision = self.decide(&mut state, IoOp::Read, name, offset_bytes);
        let source_offset = match decision {
            Decision::Pass | Decision::Garbage | Decision::ShortWrite => offset_bytes,
            Decision::Crash => return (Err(crash(IoOp::Read, name)), buf),
            Decision::Errno(code) => {
                return (
                    Err(errno_error(IoOp::Read, name, Some(offset_bytes), code)),
                    buf,
                )
            }
            Decision::Misdirect { delta_bytes } => shifted(offset_bytes, delta_bytes),
        };
        let (result, mut buf) = self.inner.read_at(&file.inner, buf, source_offset);
        if let (Decision::Garbage, Ok(read)) = (decision, &result) {
            garble_one_sector(
                &mut state.rng,
                &mut buf.as_mut_slice()[..*read],
                offset_bytes,
            );
        }
        (result, buf)
    }

    fn fdatasync(&self, file: &Self::File) -> Result<()> {
        let mut state = self.state.lock();
        let name = file.name.as_str();
        match self.decide(&mut state, IoOp::Fdatasync, name, 0) {
            Decision::Crash => Err(crash(IoOp::Fdatasync, name)),
            Decision::Pass => match self.inner.fdatasync(&file.inner) {
                Ok(()) => {
                    state.model.synced(file.id);
                    Ok(())
                }
                Err(error) => {
                    state.model.sync_failed(file.id);
                    Err(error)
                }
            },
            _ => {
                state.model.sync_failed(file.id);
                Err(errno_error(IoOp::Fdatasync, name, None, libc::EIO))
            }
        }
    }

    fn sync_dir(&self) -> Result<()> {
        let mut state = self.state.lock();
        let dir = self.inner.dir().display().to_string();
        match self.decide(&mut state, IoOp::SyncDir, &dir, 0) {
            Decision::Crash => Err(crash(IoOp::SyncDir, &dir)),
            Decision::Pass => {
                self.inner.sync_dir()?;
                state.model.dir_synced();
                Ok(())
            }
            _ => Err(errno_error(IoOp::SyncDir, &dir, None, libc::EIO)),
        }
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        let mut state = self.state.lock();
        let label = format!("{from} -> {to}");
        match self.decide(&mut state, IoOp::Rename, &label, 0) {
            Decision::Crash => Err(crash(IoOp::Rename, &label)),
            Decision::Errno(code) => Err(errno_error(IoOp::Rename, &label, None, code)),
            Decision::Pass => {
                self.inner.rename(from, to)?;
                state.model.rename(from, to);
                Ok(())
            }
            _ => Err(errno_error(IoOp::Rename, &label, None, libc::EIO)),
        }
    }

    fn remove(&self, name: &str) -> Result<()> {
        let mut state = self.state.lock();
        match self.decide(&mut state, IoOp::Remove, name, 0) {
            Decision::Crash => Err(crash(IoOp::Remove, name)),
            Decision::Pass => {
                self.inner.remove(name)?;
                state.model.unlink(name);
                Ok(())
            }
            _ => Err(errno_error(IoOp::Remove, name, None, libc::EIO)),
        }
    }

    fn list(&self) -> Result<Vec<String>> {
        let mut state = self.state.lock();
        let dir = self.inner.dir().display().to_string();
        match self.decide(&mut state, IoOp::List, &dir, 0) {
            Decision::Crash => Err(crash(IoOp::List, &dir)),
            Decision::Pass => self.inner.list(),
            _ => Err(errno_error(IoOp::List, &dir, None, libc::EIO)),
        }
    }

    fn evict_cache(&self, file: &Self::File) -> Result<()> {
        self.inner.evict_cache(&file.inner)
    }
}

fn crash(op: IoOp, file: &str) -> TieringError {
    TieringError::SimulatedCrash {
        op,
        file: file.to_owned(),
    }
}

/// Replaces one sector-aligned piece of `bytes` (read at `offset_bytes`) with noise that
/// differs from it in every byte.
fn garble_one_sector(rng: &mut SplitMix64, bytes: &mut [u8], offset_bytes: u64) {
    if bytes.is_empty() {
        return;
    }
    let sector = SECTOR_BYTES as u64;
    let first = offset_bytes / sector;
    let last = (offset_bytes + bytes.len() as u64 - 1) / sector;
    let chosen = first + rng.below(last - first + 1);
    let start = (chosen * sector).max(offset_bytes) - offset_bytes;
    let end = ((chosen + 1) * sector).min(offset_bytes + bytes.len() as u64) - offset_bytes;
    for byte in &mut bytes[start as usize..end as usize] {
        *byte ^= (rng.next_u64() as u8) | 1;
    }
}

// ---------------------------------------------------------------------------------------------
// The durability model.

#[derive(Debug, Clone, Default)]
struct FileModel {
    /// What reads see now.
    live: Vec<u8>,
    /// What the last successful fdatasync made durable.
    durable: Vec<u8>,
    /// Sectors written since the last successful sync.
    unsynced: BTreeSet<u64>,
    /// Sectors whose sync failed: not durable, and no later sync fixes that.
    lost: BTreeSet<u64>,
}

#[derive(Debug, Clone)]
enum DirOp {
    Link { name: String, id: u64 },
    Rename { from: String, to: String },
    Unlink { name: String },
}

fn apply_dir_op(dir: &mut BTreeMap<String, u64>, op: &DirOp) {
    match op {
        DirOp::Link { name, id } => {
            dir.insert(name.clone(), *id);
        }
        DirOp::Rename { from, to } => {
            if let Some(id) = dir.remove(from) {
                dir.insert(to.clone(), id);
            }
        }
        DirOp::Unlink { name } => {
            dir.remove(name);
        }
    }
}

#[derive(Debug, Default)]
struct DiskModel {
    next_id: u64,
    files: HashMap<u64, FileModel>,
    live_dir: BTreeMap<String, u64>,
    durable_dir: BTreeMap<String, u64>,
    pending_dir_ops: Vec<DirOp>,
}

/// A crash image: names and their contents.
type Image = BTreeMap<String, Vec<u8>>;

impl DiskModel {
    fn load(dir: &Path, names: &[String]) -> Result<DiskModel> {
        let mut model = DiskModel::default();
        for name in names {
            model.lookup_or_load(dir, name)?;
        }
        Ok(model)
    }

    fn from_image(image: Image) -> DiskModel {
        let mut model = DiskModel::default();
        for (name, bytes) in image {
            model.insert_durable(&name, bytes);
        }
        model
    }

    fn insert_durable(&mut self, name: &str, bytes: Vec<u8>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let file = FileModel {
            live: bytes.clone(),
            durable: bytes,
            ..FileModel::default()
        };
        self.files.insert(id, file);
        self.live_dir.insert(name.to_owned(), id);
        self.durable_dir.insert(name.to_owned(), id);
        id
    }

    fn lookup_or_load(&mut self, dir: &Path, name: &str) -> Result<u64> {
        if let Some(&id) = self.live_dir.get(name) {
            return Ok(id);
        }
        let bytes = std::fs::read(dir.join(name)).map_err(|source| TieringError::Fs {
            op: IoOp::Open,
            file: name.to_owned(),
            source,
        })?;
        Ok(self.insert_durable(name, bytes))
    }

    fn create(&mut self, name: &str) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.files.insert(id, FileModel::default());
        let op = DirOp::Link {
            name: name.to_owned(),
            id,
        };
        apply_dir_op(&mut self.live_dir, &op);
        self.pending_dir_ops.push(op);
        id
    }

    fn rename(&mut self, from: &str, to: &str) {
        let op = DirOp::Rename {
            from: from.to_owned(),
            to: to.to_owned(),
        };
        apply_dir_op(&mut self.live_dir, &op);
        self.pending_dir_ops.push(op);
    }

    fn unlink(&mut self, name: &str) {
        let op = DirOp::Unlink {
            name: name.to_owned(),
        };
        apply_dir_op(&mut self.live_dir, &op);
        self.pending_dir_ops.push(op);
    }

    fn dir_synced(&mut self) {
        self.durable_dir = self.live_dir.clone();
        self.pending_dir_ops.clear();
    }

    fn write(&mut self, id: u64, offset_bytes: u64, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let Some(file) = self.files.get_mut(&id) else {
            return;
        };
        let start = offset_bytes as usize;
        let end = start + bytes.len();
        if file.live.len() < end {
            file.live.resize(end, 0);
        }
        file.live[start..end].copy_from_slice(bytes);
        let sector = SECTOR_BYTES as u64;
        for index in offset_bytes / sector..=(end as u64 - 1) / sector {
            file.lost.remove(&index);
            file.unsynced.insert(index);
        }
    }

    fn synced(&mut self, id: u64) {
        let Some(file) = self.files.get_mut(&id) else {
            return;
        };
        let mut durable = file.live.clone();
        // Lost sectors keep whatever the device had before: the old durable bytes.
        for &index in &file.lost {
            let range = sector_range(index, durable.len());
            for position in range {
                durable[position] = file.durable.get(position).copied().unwrap_or(0);
            }
        }
        file.durable = durable;
        file.unsynced.clear();
    }

    fn sync_failed(&mut self, id: u64) {
        let Some(file) = self.files.get_mut(&id) else {
            return;
        };
        let unsynced = std::mem::take(&mut file.unsynced);
        file.lost.extend(unsynced);
    }

    fn crash_image(&self, rng: &mut SplitMix64) -> (Image, CrashImageReport) {
        let mut report = CrashImageReport::default();
        let mut dir = self.durable_dir.clone();
        let kept = rng.below(self.pending_dir_ops.len() as u64 + 1) as usize;
        for op in &self.pending_dir_ops[..kept] {
            apply_dir_op(&mut dir, op);
        }
        report.pending_dir_ops = self.pending_dir_ops.len();
        report.dir_ops_kept = kept;
        let mut image = Image::new();
        for (name, id) in dir {
            let Some(file) = self.files.get(&id) else {
                continue;
            };
            let bytes = crash_contents(file, rng, &mut report);
            report.files.push((name.clone(), bytes.len() as u64));
            image.insert(name, bytes);
        }
        (image, report)
    }
}

fn sector_range(index: u64, len_bytes: usize) -> std::ops::Range<usize> {
    let start = (index as usize * SECTOR_BYTES).min(len_bytes);
    let end = ((index as usize + 1) * SECTOR_BYTES).min(len_bytes);
    start..end
}

/// One crash outcome of a file: durable bytes, plus per uncertain sector new, old or noise.
fn crash_contents(
    file: &FileModel,
    rng: &mut SplitMix64,
    report: &mut CrashImageReport,
) -> Vec<u8> {
    let durable_len = file.durable.len();
    let mut bytes = file.durable.clone();
    bytes.resize(file.live.len().max(durable_len), 0);
    let mut grown = false;
    for &index in file.unsynced.iter().chain(file.lost.iter()) {
        let range = sector_range(index, file.live.len());
        if range.is_empty() {
            continue;
        }
        report.uncertain_sectors += 1;
        match rng.below(3) {
            0 => bytes[range.clone()].copy_from_slice(&file.live[range.clone()]),
            1 => continue,
            _ => {
                rng.fill(&mut bytes[range.clone()]);
                report.garbage_sectors += 1;
            }
        }
        grown |= range.end > durable_len;
    }
    if !grown {
        bytes.truncate(durable_len);
    }
    bytes
}

/// Replaces the directory's tracked files with `image`.
fn write_image(dir: &Path, model: &DiskModel, image: &Image) -> Result<()> {
    let fs_error = |name: &str, source| TieringError::Fs {
        op: IoOp::Setup,
        file: name.into(),
        source,
    };
    let tracked: BTreeSet<&String> = model
        .live_dir
        .keys()
        .chain(model.durable_dir.keys())
        .collect();
    for name in tracked {
        match std::fs::remove_file(dir.join(name)) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(fs_error(name, error)),
        }
    }
    for (name, bytes) in image {
        std::fs::write(dir.join(name), bytes).map_err(|error| fs_error(name, error))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_with_file() -> (DiskModel, u64) {
        let mut model = DiskModel::default();
        let id = model.create("f");
        (model, id)
    }

    #[test]
    fn synced_data_survives_every_crash() {
        let (mut model, id) = model_with_file();
        model.write(id, 0, &[7u8; 3 * SECTOR_BYTES]);
        model.synced(id);
        model.dir_synced();
        for seed in 0..32 {
            let (image, _) = model.crash_image(&mut SplitMix64::new(seed));
            assert_eq!(
                image.get("f").map(Vec::as_slice),
                Some(&[7u8; 3 * SECTOR_BYTES][..])
            );
        }
    }

    #[test]
    fn unsynced_name_may_vanish_and_lost_sectors_stay_uncertain() {
        let (mut model, id) = model_with_file();
        model.write(id, 0, &[1u8; SECTOR_BYTES]);
        model.sync_failed(id);
        model.synced(id);
        let mut vanished = false;
        let mut uncertain = false;
        for seed in 0..64 {
            let (image, report) = model.crash_image(&mut SplitMix64::new(seed));
            vanished |= image.is_empty();
            uncertain |= report.uncertain_sectors > 0;
        }
        assert!(vanished && uncertain);
        assert!(
            model.files[&id].lost.contains(&0),
            "a later sync does not heal lost pages"
        );
    }
}

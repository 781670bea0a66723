//! Cold-tier migrations under SSD faults (the SSD half of `docs/CRASH-MODEL.md`):
//!
//! 1. a crash before every I/O of a migration (`write_segment`), each crash point with
//!    several seeded SSD crash images (unsynced sectors present, absent or garbage; a prefix
//!    of the unsynced directory operations), recovered with `ColdStore::open`;
//! 2. a crash at each step of cold-store recovery itself, then recovery again;
//! 3. a SQLite-style countdown loop: fail the k-th I/O for k = 1, 2, ... (one-time or
//!    persistent: EIO, ENOSPC, short write, misdirected write) until the migration completes;
//! 4. read faults (EIO, garbage sectors, misdirected reads) on a committed file.
//!
//! The oracle: a migration that returned `Ok` is present after any crash; an interrupted
//! one is complete or absent, never adopted half-written; no temp file survives recovery;
//! every failure is a typed error; a read returns the exact bytes or a typed error.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use pmem_emul::SplitMix64;
use pstream_tiering::format::cold_file_name;
use pstream_tiering::{
    ColdStore, ColdStoreConfig, ColdWriterConfig, Compression, CountdownFault, FaultSpec, FaultyIo,
    SegmentIo, SourceSegment, StdIo, TieringError,
};

use crate::error::{CrashtestError, Result};
use crate::hash::{hash_bytes, TraceHash};
use crate::report::{Tally, Violation};

/// (stream_id, seq, payload)
pub type ColdRecord = (u64, u64, Vec<u8>);

const GEN: u64 = 0x77;
const SURVIVOR_GEN: u64 = 0x78;
/// Stop a countdown loop that never completes.
const COUNTDOWN_MAX: u64 = 2000;

/// How much of each part a tiering case runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TieringBudget {
    pub record_count: usize,
    /// SSD crash images per migration crash point.
    pub images_per_crash_point: u64,
    /// Crash points inside cold-store recovery.
    pub recovery_crash_steps: u64,
}

impl Default for TieringBudget {
    fn default() -> Self {
        TieringBudget {
            record_count: 48,
            images_per_crash_point: 3,
            recovery_crash_steps: 8,
        }
    }
}

/// What a tiering case found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TieringRun {
    pub tally: Tally,
    pub trace_hash: u64,
    pub violation: Option<Violation>,
}

/// Records of a few streams with dense seqs, interleaved like a segment holds them.
pub fn make_records(seed: u64, count: usize, max_len_bytes: usize) -> Vec<ColdRecord> {
    let mut rng = SplitMix64::new(seed ^ 0xc01d);
    let streams = [3u64 | (1 << 32), 7, 11 | (2 << 32), 12];
    let mut next_seq: BTreeMap<u64, u64> = streams.iter().map(|&s| (s, rng.below(100))).collect();
    let compressible = rng.below(2) == 0;
    (0..count)
        .map(|index| {
            let stream = streams[rng.below(streams.len() as u64) as usize];
            let seq = next_seq.get(&stream).copied().unwrap_or(0);
            next_seq.insert(stream, seq + 1);
            let len = match index % 17 {
                0 => 0,
                5 if max_len_bytes > 5000 => 5000 + rng.below(3000) as usize,
                _ => rng.below(max_len_bytes.min(4000) as u64 + 1) as usize,
            };
            let payload = if compressible {
                let words: [&[u8]; 4] = [b"stream ", b"record ", b"cold ", b"tier "];
                let mut bytes = Vec::with_capacity(len + 8);
                while bytes.len() < len {
                    bytes.extend_from_slice(words[rng.below(4) as usize]);
                }
                bytes.truncate(len);
                bytes
            } else {
                (0..len).map(|_| rng.next_u64() as u8).collect()
            };
            (stream, seq, payload)
        })
        .collect()
}

fn as_input(records: &[ColdRecord]) -> impl Iterator<Item = (u64, u64, &[u8])> {
    records.iter().map(|(s, q, p)| (*s, *q, p.as_slice()))
}

/// The source segment of a cold write in the harness and the tiering tests (segment index 2,
/// a fixed pool nonce).
pub fn source(segment_gen: u64) -> SourceSegment {
    SourceSegment {
        segment_index: 2,
        segment_gen,
        pool_nonce: 0xdead_beef_0bad_f00d,
    }
}

/// Small blocks and chunks, so a small segment spans many blocks and many writes.
pub fn small_config(compression: Compression) -> ColdStoreConfig {
    ColdStoreConfig {
        writer: ColdWriterConfig {
            compression,
            block_size_bytes: 4096,
            chunk_bytes: 8192,
            depth: 4,
            verify_after_write: false,
        },
        cache_capacity_bytes: 0,
        read_chunk_bytes: 8192,
        read_depth: 3,
        // No cache to read ahead into; and the injected faults stay in I/O order.
        async_readahead: false,
    }
}

/// A stable name for an error's kind (messages hold temp paths, kinds do not).
pub fn error_kind(error: &TieringError) -> &'static str {
    match error {
        TieringError::Io { .. } => "io",
        TieringError::Fs { .. } => "fs",
        TieringError::SyncFailed { .. } => "sync_failed",
        TieringError::ShortWrite { .. } => "short_write",
        TieringError::Corrupt { .. } => "corrupt",
        TieringError::SimulatedCrash { .. } => "simulated_crash",
        TieringError::UnknownSegment { .. } => "unknown_segment",
        TieringError::RecordNotFound { .. } => "record_not_found",
        _ => "other",
    }
}

fn injected(error: &TieringError, corrupt_allowed: bool) -> bool {
    matches!(
        error,
        TieringError::Io { .. }
            | TieringError::Fs { .. }
            | TieringError::SyncFailed { .. }
            | TieringError::ShortWrite { .. }
            | TieringError::SimulatedCrash { .. }
    ) || (corrupt_allowed && error.is_corruption())
}

fn tempdir() -> Result<tempfile::TempDir> {
    tempfile::tempdir().map_err(|source| CrashtestError::Io {
        what: "creating a temporary directory in",
        path: std::env::temp_dir(),
        source,
    })
}

/// Every record reads back byte-identical and a scan visits exactly the records.
pub(crate) fn check_readback<I: SegmentIo>(
    store: &ColdStore<I>,
    segment_gen: u64,
    records: &[ColdRecord],
) -> std::result::Result<(), String> {
    for (stream, seq, payload) in records {
        match store.read_record(segment_gen, *stream, *seq) {
            Ok(read) if read == *payload => {}
            Ok(read) => {
                return Err(format!(
                    "record {stream:#x}/{seq}: {} bytes read, {} written, contents differ",
                    read.len(),
                    payload.len()
                ))
            }
            Err(error) => return Err(format!("record {stream:#x}/{seq}: {error}")),
        }
    }
    let expected: BTreeMap<(u64, u64), &Vec<u8>> =
        records.iter().map(|(s, q, p)| ((*s, *q), p)).collect();
    let mut wrong = 0u64;
    let scanned = store.scan_segment(segment_gen, |entry, payload| {
        let want = expected
            .get(&(entry.stream_id, entry.seq))
            .map(|p| p.as_slice());
        if want != Some(payload) {
            wrong += 1;
        }
    });
    match scanned {
        Ok(count) if count == records.len() as u64 && wrong == 0 => Ok(()),
        Ok(count) => Err(format!(
            "scan visited {count} records ({wrong} wrong), {} written",
            records.len()
        )),
        Err(error) => Err(format!("scan failed: {error}")),
    }
}

/// Opens `dir` the way recovery does and checks the oracle. Returns whether segment
/// `segment_gen` is present (and then complete and intact).
pub fn recover_and_check(
    dir: &Path,
    segment_gen: u64,
    records: &[ColdRecord],
    config: &ColdStoreConfig,
) -> std::result::Result<bool, String> {
    let io = StdIo::open(dir).map_err(|e| format!("open dir: {e}"))?;
    let (store, report) =
        ColdStore::open(io, config.clone()).map_err(|e| format!("ColdStore::open failed: {e}"))?;
    if let Some(file) = report.quarantined.first() {
        return Err(format!(
            "an incomplete or damaged file was found under a final name: {} ({})",
            file.name, file.error
        ));
    }
    let names = store.io().list().map_err(|e| format!("list: {e}"))?;
    if let Some(temp) = names.iter().find(|name| name.ends_with(".tmp")) {
        return Err(format!("temp file {temp} left after open"));
    }
    let Some(index) = store.index(segment_gen) else {
        if names.contains(&cold_file_name(segment_gen)) {
            return Err("a complete-looking file is not served".to_owned());
        }
        return Ok(false);
    };
    if index.record_count() != records.len() as u64 {
        return Err(format!(
            "adopted file holds {} records, {} were written",
            index.record_count(),
            records.len()
        ));
    }
    check_readback(&store, segment_gen, records)?;
    match store.verify(segment_gen) {
        Ok(count) if count == records.len() as u64 => Ok(true),
        other => Err(format!("verify: {other:?}")),
    }
}

struct Case {
    seed: u64,
    records: Vec<ColdRecord>,
    config: ColdStoreConfig,
    tally: Tally,
    trace: TraceHash,
}

type Checked<T> = Result<std::result::Result<T, Violation>>;

fn violation(point: Option<u64>, detail: String) -> Violation {
    Violation {
        crash_point: point,
        op_index: None,
        detail,
    }
}

fn faulty(dir: &Path, seed: u64) -> Result<Arc<FaultyIo<StdIo>>> {
    Ok(Arc::new(FaultyIo::new(
        StdIo::open(dir)?,
        FaultSpec::none(seed),
    )?))
}

impl Case {
    /// A crash before operation `crash_at` of a migration, SSD crash image `image_seed`.
    /// Returns whether the migration completed without reaching the crash.
    fn crash_once(&mut self, crash_at: u64, image_seed: u64) -> Checked<bool> {
        let dir = tempdir()?;
        let io = faulty(dir.path(), image_seed)?;
        let (store, _) = ColdStore::open(Arc::clone(&io), self.config.clone())?;
        io.set_spec(FaultSpec::countdown(crash_at, CountdownFault::Crash, false));
        let result = store.write_segment(&source(GEN), as_input(&self.records));
        let crashed = io.is_crashed();
        let context = |detail: String| violation(Some(crash_at), detail);
        match &result {
            Ok(_) if crashed => {
                return Ok(Err(context("acknowledged after a crash".to_owned())));
            }
            Err(error) if !matches!(error, TieringError::SimulatedCrash { .. }) => {
                return Ok(Err(context(format!("unexpected error {error}"))));
            }
            _ => {}
        }
        let acknowledged = result.is_ok();
        if acknowledged {
            io.crash_now();
        }
        drop(store);
        let image = io.materialize_crash(image_seed)?;
        self.tally.cold_images += 1;
        let present = match recover_and_check(dir.path(), GEN, &self.records, &self.config) {
            Ok(present) => present,
            Err(detail) => {
                let trace: Vec<String> = io.trace().iter().map(ToString::to_string).collect();
                return Ok(Err(context(format!(
                    "{detail} (image seed {image_seed}: {image:?}; faults {trace:?})"
                ))));
            }
        };
        if acknowledged && !present {
            return Ok(Err(context(format!(
                "an acknowledged migration was lost (image seed {image_seed})"
            ))));
        }
        self.trace.u64(crash_at);
        self.trace.u64(u64::from(acknowledged));
        self.trace.u64(u64::from(present));
        Ok(Ok(acknowledged && !crashed))
    }

    fn crash_every_step(&mut self, images_per_point: u64) -> Checked<()> {
        for crash_at in 1..=COUNTDOWN_MAX {
            self.tally.migration_crash_points += 1;
            let mut completed = false;
            for image in 0..images_per_point.max(1) {
                let image_seed = self.seed ^ (crash_at << 16) ^ image;
                match self.crash_once(crash_at, image_seed)? {
                    Ok(done) => completed = done,
                    Err(violation) => return Ok(Err(violation)),
                }
            }
            if completed {
                return Ok(Ok(()));
            }
        }
        Ok(Err(violation(
            None,
            "a migration never completed".to_owned(),
        )))
    }

    /// Cold-store recovery crashes at its own step `step`, then runs again to completion.
    fn crash_in_recovery(&mut self, step: u64) -> Checked<()> {
        let dir = tempdir()?;
        let survivor = make_records(self.seed ^ 0x5u64, 20, 1000);
        {
            let io = faulty(dir.path(), self.seed)?;
            let (store, _) = ColdStore::open(Arc::clone(&io), self.config.clone())?;
            store.write_segment(&source(SURVIVOR_GEN), as_input(&survivor))?;
            // Interrupt a second migration midway, leaving a temp file behind.
            io.set_spec(FaultSpec::countdown(4, CountdownFault::Crash, false));
            if store
                .write_segment(&source(GEN), as_input(&self.records))
                .is_ok()
            {
                io.crash_now();
            }
            drop(store);
            io.materialize_crash(self.seed ^ step)?;
            self.tally.cold_images += 1;
        }
        let io = faulty(dir.path(), step)?;
        io.set_spec(FaultSpec::countdown(step, CountdownFault::Crash, false));
        match ColdStore::open(Arc::clone(&io), self.config.clone()) {
            Ok((store, _)) => {
                io.crash_now();
                drop(store);
            }
            Err(TieringError::SimulatedCrash { .. }) => {}
            Err(error) => {
                return Ok(Err(violation(
                    Some(step),
                    format!("recovery failed with {error} instead of the simulated crash"),
                )))
            }
        }
        io.materialize_crash(self.seed ^ (step << 8))?;
        self.tally.cold_images += 1;
        self.tally.migration_crash_points += 1;
        let context = |detail: String| {
            violation(
                Some(step),
                format!("after a crash at step {step} of recovery: {detail}"),
            )
        };
        match recover_and_check(dir.path(), SURVIVOR_GEN, &survivor, &self.config) {
            Ok(true) => {}
            Ok(false) => return Ok(Err(context("a committed segment was lost".to_owned()))),
            Err(detail) => return Ok(Err(context(detail))),
        }
        match recover_and_check(dir.path(), GEN, &self.records, &self.config) {
            Ok(present) => self.trace.u64(u64::from(present)),
            Err(detail) => return Ok(Err(context(detail))),
        }
        Ok(Ok(()))
    }

    /// One run of a countdown loop: `fault` at operation `k`. Returns true once the
    /// migration completed without meeting the fault.
    fn countdown_once(&mut self, fault: CountdownFault, persistent: bool, k: u64) -> Checked<bool> {
        let dir = tempdir()?;
        let io = faulty(dir.path(), k)?;
        let mut config = self.config.clone();
        let misdirect = fault == CountdownFault::Misdirect;
        // A misdirected write reports success; only reading the file back can catch it.
        config.writer.verify_after_write = misdirect;
        let (store, _) = ColdStore::open(Arc::clone(&io), config.clone())?;
        io.set_spec(FaultSpec::countdown(k, fault, persistent));
        let result = store.write_segment(&source(GEN), as_input(&self.records));
        let injected_count = io.counters().injected;
        self.tally.io_faults_injected += injected_count;
        let context = |detail: String| {
            violation(
                Some(k),
                format!("countdown {fault:?} persistent={persistent} at I/O {k}: {detail}"),
            )
        };
        self.trace.u64(k);
        self.trace.u64(injected_count);
        match &result {
            Ok(_) => {
                self.trace.str("ok");
                io.set_spec(FaultSpec::none(k));
                if injected_count > 0 && !misdirect {
                    return Ok(Err(context("a fault was swallowed".to_owned())));
                }
                if let Err(detail) = check_readback(&store, GEN, &self.records) {
                    return Ok(Err(context(format!("acknowledged migration: {detail}"))));
                }
                return Ok(Ok(injected_count == 0));
            }
            Err(error) => {
                self.trace.str(error_kind(error));
                if !injected(error, misdirect) {
                    return Ok(Err(context(format!(
                        "untyped or unexpected error: {error}"
                    ))));
                }
                if store.index(GEN).is_some() {
                    return Ok(Err(context("a failed migration is served".to_owned())));
                }
            }
        }
        io.set_spec(FaultSpec::none(k));
        drop(store);
        // The live directory, as a restart without a crash finds it (checked on a copy).
        let live = tempdir()?;
        for name in io.list()? {
            let from = dir.path().join(&name);
            std::fs::copy(&from, live.path().join(&name)).map_err(|source| CrashtestError::Io {
                what: "copying",
                path: from.clone(),
                source,
            })?;
        }
        if let Err(detail) = recover_and_check(live.path(), GEN, &self.records, &config) {
            return Ok(Err(context(format!("live directory: {detail}"))));
        }
        // A crash right after the failure: unsynced sectors and directory entries in doubt.
        io.crash_now();
        let image = io.materialize_crash(k)?;
        self.tally.cold_images += 1;
        if let Err(detail) = recover_and_check(dir.path(), GEN, &self.records, &config) {
            return Ok(Err(context(format!("crash image {image:?}: {detail}"))));
        }
        // The engine keeps the persistent-memory copy and migrates again later.
        let io = faulty(dir.path(), k)?;
        let (store, _) = ColdStore::open(Arc::clone(&io), config)?;
        store.discard_orphan(GEN)?;
        if let Err(error) = store.write_segment(&source(GEN), as_input(&self.records)) {
            return Ok(Err(context(format!("the retry failed: {error}"))));
        }
        if let Err(detail) = check_readback(&store, GEN, &self.records) {
            return Ok(Err(context(format!("after the retry: {detail}"))));
        }
        Ok(Ok(false))
    }

    fn countdown_loop(&mut self, fault: CountdownFault, persistent: bool) -> Checked<()> {
        for k in 1..=COUNTDOWN_MAX {
            match self.countdown_once(fault, persistent, k)? {
                Ok(true) => return Ok(Ok(())),
                Ok(false) => {}
                Err(violation) => return Ok(Err(violation)),
            }
        }
        Ok(Err(violation(
            None,
            format!("countdown {fault:?}: the migration never completed"),
        )))
    }

    /// Reads under random read faults: exact bytes or a typed error, never wrong data.
    fn read_faults(&mut self) -> Checked<()> {
        let dir = tempdir()?;
        let io = faulty(dir.path(), self.seed)?;
        let (store, _) = ColdStore::open(Arc::clone(&io), self.config.clone())?;
        store.write_segment(&source(GEN), as_input(&self.records))?;
        let mut spec = FaultSpec::none(self.seed);
        spec.read_eio_probability = 0.15;
        spec.read_garbage_probability = 0.15;
        spec.misdirected_read_probability = 0.15;
        io.set_spec(spec);
        for (stream, seq, payload) in &self.records {
            match store.read_record(GEN, *stream, *seq) {
                Ok(read) if read == *payload => self.trace.u64(hash_bytes(&read)),
                Ok(_) => {
                    return Ok(Err(violation(
                        None,
                        format!("read fault returned wrong bytes for {stream:#x}/{seq}"),
                    )))
                }
                Err(error) if matches!(error, TieringError::Io { .. }) || error.is_corruption() => {
                    self.trace.str(error_kind(&error));
                }
                Err(error) => {
                    return Ok(Err(violation(
                        None,
                        format!("untyped read failure for {stream:#x}/{seq}: {error}"),
                    )))
                }
            }
        }
        self.tally.io_faults_injected += io.counters().injected;
        io.set_spec(FaultSpec::none(self.seed));
        if let Err(detail) = check_readback(&store, GEN, &self.records) {
            return Ok(Err(violation(
                None,
                format!("after read faults stopped: {detail}"),
            )));
        }
        Ok(Ok(()))
    }
}

/// Runs the tiering case of `seed`.
pub fn run_tiering(seed: u64, budget: &TieringBudget) -> Result<TieringRun> {
    let mut rng = SplitMix64::new(seed ^ 0x7e1e_51ed);
    let compression = if rng.below(2) == 0 {
        Compression::None
    } else {
        Compression::Zstd {
            level: 1 + rng.below(3) as i32,
        }
    };
    let faults = [
        CountdownFault::Eio,
        CountdownFault::Enospc,
        CountdownFault::ShortWrite,
        CountdownFault::Misdirect,
    ];
    let fault = faults[rng.below(faults.len() as u64) as usize];
    let persistent = rng.below(2) == 0;
    let mut case = Case {
        seed,
        records: make_records(seed, budget.record_count, 3000),
        config: small_config(compression),
        tally: Tally::default(),
        trace: TraceHash::new(),
    };
    case.trace
        .str(&format!("{compression:?} {fault:?} {persistent}"));
    let mut found = case.crash_every_step(budget.images_per_crash_point)?.err();
    for step in 1..=budget.recovery_crash_steps {
        if found.is_some() {
            break;
        }
        found = case.crash_in_recovery(step)?.err();
    }
    if found.is_none() {
        found = case.countdown_loop(fault, persistent)?.err();
    }
    if found.is_none() {
        found = case.read_faults()?.err();
    }
    case.tally.ops = case.records.len() as u64;
    Ok(TieringRun {
        tally: case.tally,
        trace_hash: case.trace.finish(),
        violation: found,
    })
}

//! Media faults at rest (the fault model of docs/CRASH-MODEL.md, "Media faults"): a seeded
//! workload runs to a clean shutdown, then seeded faults are injected into the pool image
//! (single bit flips, aligned 256-byte blocks replaced by zeros or by garbage, several per
//! image) and the store is verified, opened and read back against what it acknowledged.
//!
//! Verdicts, per fault set (one image with its faults):
//! * **detected**: `verify`, open or a read answered a typed error naming damage;
//! * **silent loss**: open reported success, yet an acknowledged record that should be there
//!   is missing or reads back different bytes (counted per record; must be 0);
//! * **reformat**: a formatted pool was taken for blank: the engine answered `Unformatted`
//!   (any open-or-create would format it) or the agent store's `open_or_create` created a
//!   new store (must be 0);
//! * **panic**: open, verify or a read panicked (must be 0).
//!
//! A record is *touched* by a fault set when a fault lands in the bytes its append changed
//! (found by diffing the pool image before and after the append, so the rule does not
//! depend on the record format; a batch's records share their footprint).
//! `records_salvaged_ratio` is the share of untouched acknowledged records that read back
//! intact after open.
//!
//! Two workloads: the engine alone (streams, single appends, batches, trims, deletes and
//! reclaim over several segments), and the agent store (users, bundles, posts, discrete
//! submissions), whose check also covers `Agent::open_or_create` never re-creating a store
//! over data and never deleting user streams.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};

use pmem_emul::{Pmem, SimPmem, SplitMix64};
use pstream_agent::{
    Agent, AgentConfig, AgentError, Caller, Metadata, StreamDefaults, StreamSpec, DATA_STREAM_LABEL,
};
use pstream_engine::{EngineError, Log, LogConfig, OpenOptions, StreamId};
use serde::Serialize;

use crate::engine_case::payload_bytes;

/// Bytes replaced by a block fault, and its alignment.
pub const FAULT_BLOCK_BYTES: usize = 256;

/// Which store a media case runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaWorkload {
    /// The engine alone.
    Engine,
    /// The agent store on the engine.
    Agent,
}

impl MediaWorkload {
    /// The workload of case `seed`: every other case runs the agent store.
    pub fn of_seed(seed: u64) -> MediaWorkload {
        if seed % 2 == 0 {
            MediaWorkload::Engine
        } else {
            MediaWorkload::Agent
        }
    }
}

/// The size of a media case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaBudget {
    /// Fault sets (faulted copies of the image) checked per workload run.
    pub fault_sets_per_case: u32,
    /// Faults per set: `1..=faults_per_set_max`, uniformly.
    pub faults_per_set_max: u32,
    /// Operations of the engine workload.
    pub engine_ops: usize,
    /// Posts of the agent workload.
    pub agent_posts: usize,
}

impl Default for MediaBudget {
    fn default() -> Self {
        MediaBudget {
            fault_sets_per_case: 40,
            faults_per_set_max: 3,
            engine_ops: 120,
            agent_posts: 60,
        }
    }
}

/// One fault at rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaFault {
    /// Bit `bit` of the byte at `offset` flipped.
    BitFlip { offset: usize, bit: u8 },
    /// The aligned block at `offset` replaced by zeros.
    ZeroBlock { offset: usize },
    /// The aligned block at `offset` replaced by bytes derived from `noise`.
    GarbageBlock { offset: usize, noise: u64 },
}

impl MediaFault {
    /// The bytes this fault changes (at most).
    pub fn range(&self) -> Range<usize> {
        match *self {
            MediaFault::BitFlip { offset, .. } => offset..offset + 1,
            MediaFault::ZeroBlock { offset } | MediaFault::GarbageBlock { offset, .. } => {
                offset..offset + FAULT_BLOCK_BYTES
            }
        }
    }

    /// Applies the fault to `image`. `offset` must lie in the image (blocks are clipped at
    /// its end).
    pub fn apply(&self, image: &mut [u8]) {
        let range = self.range();
        let end = range.end.min(image.len());
        match *self {
            MediaFault::BitFlip { offset, bit } => image[offset] ^= 1 << (bit & 7),
            MediaFault::ZeroBlock { .. } => image[range.start..end].fill(0),
            MediaFault::GarbageBlock { noise, .. } => {
                let mut rng = SplitMix64::new(noise);
                for byte in &mut image[range.start..end] {
                    *byte = rng.next_u64() as u8;
                }
            }
        }
    }

    /// A fault of the model: half the time anywhere in the image, half the time in a byte
    /// the store uses (a non-zero byte, so that faults hit data and metadata often enough
    /// to matter in a small campaign).
    pub fn draw(rng: &mut SplitMix64, image: &[u8], used: &[usize]) -> MediaFault {
        let at = if used.is_empty() || rng.below(2) == 0 {
            rng.below(image.len() as u64) as usize
        } else {
            used[rng.below(used.len() as u64) as usize]
        };
        let block = at / FAULT_BLOCK_BYTES * FAULT_BLOCK_BYTES;
        match rng.below(4) {
            0 | 1 => MediaFault::BitFlip {
                offset: at,
                bit: rng.below(8) as u8,
            },
            2 => MediaFault::ZeroBlock { offset: block },
            _ => MediaFault::GarbageBlock {
                offset: block,
                noise: rng.next_u64(),
            },
        }
    }
}

/// An acknowledged record and the bytes its append changed.
#[derive(Debug, Clone)]
struct Acked {
    payload: Vec<u8>,
    footprint: Vec<Range<usize>>,
}

/// What a workload left: every acknowledged record still expected, by stream and seq.
#[derive(Debug, Clone, Default)]
struct Truth {
    records: BTreeMap<(StreamId, u64), Acked>,
    /// Streams that were deleted: they must not come back.
    deleted: BTreeSet<StreamId>,
}

impl Truth {
    fn touched(&self, key: &(StreamId, u64), faults: &[MediaFault]) -> bool {
        self.records[key].footprint.iter().any(|changed| {
            faults.iter().any(|fault| {
                let hit = fault.range();
                hit.start < changed.end && changed.start < hit.end
            })
        })
    }
}

/// Counters of media-fault checking, summed over cases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct MediaTally {
    /// Workload runs (cases).
    pub cases: u64,
    /// Faulted images checked.
    pub fault_sets: u64,
    /// Faults injected over all sets.
    pub media_faults_injected: u64,
    /// Sets in which verify, open or a read reported damage with a typed error.
    pub faults_detected: u64,
    /// Sets with nothing detected and every acknowledged record intact (faults in free
    /// space or in bytes nothing reads).
    pub fault_sets_harmless: u64,
    /// Acknowledged records missing or changed while open reported success.
    pub silent_losses: u64,
    /// Deleted streams that came back.
    pub resurrected_streams: u64,
    /// Formatted pools taken for blank.
    pub reformats: u64,
    /// Panics of open, verify or reads.
    pub panics: u64,
    /// Acknowledged records checked (over all sets).
    pub records_checked: u64,
    /// Of those, records no fault touched.
    pub records_untouched: u64,
    /// Of the untouched, those that read back intact.
    pub records_untouched_readable: u64,
}

impl MediaTally {
    /// Untouched acknowledged records readable after open, as a share (1.0 when none).
    pub fn records_salvaged_ratio(&self) -> f64 {
        if self.records_untouched == 0 {
            1.0
        } else {
            self.records_untouched_readable as f64 / self.records_untouched as f64
        }
    }

    /// True when nothing was lost silently, nothing reformatted and nothing panicked.
    pub fn is_clean(&self) -> bool {
        self.silent_losses == 0
            && self.resurrected_streams == 0
            && self.reformats == 0
            && self.panics == 0
    }
}

impl std::ops::AddAssign for MediaTally {
    fn add_assign(&mut self, other: MediaTally) {
        self.cases += other.cases;
        self.fault_sets += other.fault_sets;
        self.media_faults_injected += other.media_faults_injected;
        self.faults_detected += other.faults_detected;
        self.fault_sets_harmless += other.fault_sets_harmless;
        self.silent_losses += other.silent_losses;
        self.resurrected_streams += other.resurrected_streams;
        self.reformats += other.reformats;
        self.panics += other.panics;
        self.records_checked += other.records_checked;
        self.records_untouched += other.records_untouched;
        self.records_untouched_readable += other.records_untouched_readable;
    }
}

/// One media case: its counters and a description of its first bad verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MediaCaseReport {
    pub seed: u64,
    pub workload: MediaWorkload,
    pub tally: MediaTally,
    /// The first silent loss, reformat or panic found, with the faults that caused it.
    pub first_violation: Option<String>,
}

/// The byte ranges where `after` differs from `before` (8-byte granularity).
fn changed_ranges(before: &[u8], after: &[u8]) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::new();
    for (index, (old, new)) in before.chunks(8).zip(after.chunks(8)).enumerate() {
        if old != new {
            let start = index * 8;
            let end = start + old.len();
            match out.last_mut() {
                Some(last) if last.end == start => last.end = end,
                _ => out.push(start..end),
            }
        }
    }
    out
}

/// Offsets of the non-zero bytes of `image`, sampled every 8 bytes.
fn used_offsets(image: &[u8]) -> Vec<usize> {
    image
        .chunks(8)
        .enumerate()
        .filter(|(_, word)| word.iter().any(|&byte| byte != 0))
        .map(|(index, _)| index * 8)
        .collect()
}

const ENGINE_POOL_BYTES: usize = 320 * 1024;

fn engine_config() -> LogConfig {
    LogConfig {
        segment_size_bytes: 16 * 1024,
        stream_slot_count: 16,
    }
}

const PAYLOAD_LENS: [u32; 6] = [1, 8, 40, 200, 1000, 3000];

/// Runs the engine workload of `seed` to a clean shutdown: the image and what it holds.
fn engine_workload(seed: u64, ops: usize) -> Result<(Vec<u8>, Truth), EngineError> {
    let mut rng = SplitMix64::new(seed ^ 0x6d65_6469_615f_656e);
    let log = Log::create(
        SimPmem::new(ENGINE_POOL_BYTES),
        engine_config(),
        OpenOptions { lane_count: 2 },
    )?;
    let mut truth = Truth::default();
    let mut streams: Vec<StreamId> = Vec::new();
    for _ in 0..3 {
        streams.push(log.create_stream(b"media")?);
    }
    let mut tag = 0u32;
    for _ in 0..ops {
        let before = log.pmem().volatile_image();
        let roll = rng.below(100);
        let stream = streams[rng.below(streams.len() as u64) as usize];
        let mut appended: Vec<(StreamId, u64, Vec<u8>)> = Vec::new();
        let outcome = if roll < 65 {
            tag += 1;
            let payload = payload_bytes(PAYLOAD_LENS[rng.below(6) as usize], tag);
            log.append(stream, &payload).map(|seq| {
                appended.push((stream, seq, payload));
            })
        } else if roll < 80 {
            let count = 2 + rng.below(5) as usize;
            let mut payloads = Vec::with_capacity(count);
            for _ in 0..count {
                tag += 1;
                let target = streams[rng.below(streams.len() as u64) as usize];
                payloads.push((
                    target,
                    payload_bytes(PAYLOAD_LENS[rng.below(5) as usize], tag),
                ));
            }
            let batch: Vec<(StreamId, &[u8])> = payloads
                .iter()
                .map(|(target, payload)| (*target, payload.as_slice()))
                .collect();
            log.append_batch(&batch).map(|seqs| {
                for ((target, payload), seq) in payloads.iter().zip(seqs) {
                    appended.push((*target, seq, payload.clone()));
                }
            })
        } else if roll < 88 {
            let (first, next) = log.bounds(stream)?;
            let to = first + rng.below(next - first + 1);
            log.trim(stream, to).map(|()| {
                truth
                    .records
                    .retain(|(id, seq), _| *id != stream || *seq >= to);
            })
        } else if roll < 92 {
            log.delete_stream(stream).and_then(|()| {
                truth.records.retain(|(id, _), _| *id != stream);
                truth.deleted.insert(stream);
                streams.retain(|id| *id != stream);
                let fresh = log.create_stream(b"media")?;
                streams.push(fresh);
                Ok(())
            })
        } else {
            log.reclaim();
            Ok(())
        };
        match outcome {
            Ok(()) => {}
            // A full pool ends the workload: what is there is the image.
            Err(EngineError::PoolFull { .. }) => break,
            Err(error) => return Err(error),
        }
        if !appended.is_empty() {
            let footprint = changed_ranges(&before, &log.pmem().volatile_image());
            for (stream, seq, payload) in appended {
                truth.records.insert(
                    (stream, seq),
                    Acked {
                        payload,
                        footprint: footprint.clone(),
                    },
                );
            }
        }
    }
    let sim = log.close();
    Ok((sim.persisted_image(), truth))
}

const AGENT_POOL_BYTES: usize = 1 << 20;
const AGENT_NAME: &str = "media.example";
const AGENT_USERS: [&str; 3] = ["alice", "bob", "carol"];

fn agent_config() -> AgentConfig {
    AgentConfig {
        log: LogConfig {
            segment_size_bytes: 16 * 1024,
            stream_slot_count: 128,
        },
        open: OpenOptions { lane_count: 2 },
        snapshot_every_changes: 16,
    }
}

/// The engine-level contents of the agent store's data streams: every record of every
/// stream labelled [`DATA_STREAM_LABEL`].
fn data_records<P: Pmem>(agent: &Agent<P>) -> BTreeMap<(StreamId, u64), Vec<u8>> {
    let engine = agent.engine();
    let mut out = BTreeMap::new();
    for info in engine.list_streams() {
        if info.label != DATA_STREAM_LABEL {
            continue;
        }
        for seq in info.first_seq..info.next_seq {
            if let Ok(record) = engine.read(info.id, seq) {
                out.insert((info.id, seq), record.payload().to_vec());
            }
        }
    }
    out
}

/// Runs the agent workload of `seed` to a clean shutdown: the image and what its data
/// streams hold.
fn agent_workload(seed: u64, posts: usize) -> Result<(Vec<u8>, Truth), AgentError> {
    let mut rng = SplitMix64::new(seed ^ 0x6d65_6469_615f_6167);
    let agent = Agent::create(SimPmem::new(AGENT_POOL_BYTES), AGENT_NAME, agent_config())?;
    let mut bundles = Vec::new();
    for user in AGENT_USERS {
        agent.add_user(user)?;
        let caller = Caller::user(user)?;
        let bundle =
            agent.create_bundle(&caller, "blog", Metadata::new(), StreamDefaults::default())?;
        let stream = agent.create_stream(&caller, &bundle, StreamSpec::discrete("posts"))?;
        bundles.push((caller, bundle, stream));
    }
    let mut truth = Truth::default();
    let mut seen = data_records(&agent);
    let mut tag = 0u32;
    for _ in 0..posts {
        let before = agent.engine().pmem().volatile_image();
        let (caller, bundle, stream) = &bundles[rng.below(bundles.len() as u64) as usize];
        tag += 1;
        let payload = payload_bytes(PAYLOAD_LENS[rng.below(5) as usize], tag);
        if rng.below(8) == 0 {
            let label = format!("drop-{tag}");
            agent.put_discrete(caller, bundle, label.as_bytes(), &[&payload, &payload])?;
        } else {
            agent.append(caller, bundle, *stream, &payload)?;
        }
        let now = data_records(&agent);
        let footprint = changed_ranges(&before, &agent.engine().pmem().volatile_image());
        for (key, payload) in &now {
            if !seen.contains_key(key) {
                truth.records.insert(
                    *key,
                    Acked {
                        payload: payload.clone(),
                        footprint: footprint.clone(),
                    },
                );
            }
        }
        seen = now;
    }
    let sim = agent.close();
    Ok((sim.persisted_image(), truth))
}

/// How one faulted image fared.
#[derive(Debug, Default)]
struct SetOutcome {
    detected: bool,
    reformat: bool,
    silent_losses: u64,
    resurrected: u64,
    checked: u64,
    untouched: u64,
    untouched_readable: u64,
    first_loss: Option<String>,
}

/// Compares the records a store serves with `truth`.
fn check_records<P: Pmem, C: pstream_engine::ColdTier>(
    log: &Log<P, C>,
    truth: &Truth,
    faults: &[MediaFault],
    outcome: &mut SetOutcome,
) {
    for (key, acked) in &truth.records {
        let (stream, seq) = *key;
        outcome.checked += 1;
        let untouched = !truth.touched(key, faults);
        if untouched {
            outcome.untouched += 1;
        }
        match log.read(stream, seq) {
            Ok(record) if record.payload() == acked.payload.as_slice() => {
                if untouched {
                    outcome.untouched_readable += 1;
                }
            }
            Ok(_) => {
                outcome.silent_losses += 1;
                outcome.first_loss.get_or_insert_with(|| {
                    format!("stream {stream} seq {seq} reads changed bytes")
                });
            }
            Err(EngineError::Corruption { .. }) => outcome.detected = true,
            Err(error) => {
                outcome.silent_losses += 1;
                outcome.first_loss.get_or_insert_with(|| {
                    format!("stream {stream} seq {seq} is gone after a successful open: {error}")
                });
            }
        }
    }
    for info in log.list_streams() {
        if truth.deleted.contains(&info.id) {
            outcome.resurrected += 1;
            outcome
                .first_loss
                .get_or_insert_with(|| format!("deleted stream {} came back", info.id));
        }
    }
}

fn check_engine_image(image: Vec<u8>, truth: &Truth, faults: &[MediaFault]) -> SetOutcome {
    let mut outcome = SetOutcome::default();
    match pstream_engine::verify(&SimPmem::from_image(image.clone())) {
        Ok(report) if report.is_clean() => {}
        Ok(_) | Err(EngineError::Corruption { .. }) => outcome.detected = true,
        Err(_) => {}
    }
    match Log::open(SimPmem::from_image(image), OpenOptions { lane_count: 2 }) {
        Ok((log, _report)) => check_records(&log, truth, faults, &mut outcome),
        Err(EngineError::Unformatted) => {
            outcome.reformat = true;
            outcome.first_loss = Some("a formatted pool was taken for blank".to_owned());
        }
        Err(_) => {
            outcome.detected = true;
            outcome.checked = truth.records.len() as u64;
            outcome.untouched = truth
                .records
                .keys()
                .filter(|key| !truth.touched(key, faults))
                .count() as u64;
        }
    }
    outcome
}

fn check_agent_image(image: Vec<u8>, truth: &Truth, faults: &[MediaFault]) -> SetOutcome {
    let mut outcome = SetOutcome::default();
    match Agent::open_or_create(SimPmem::from_image(image), AGENT_NAME, agent_config()) {
        Ok((agent, report)) if report.created => {
            outcome.reformat = true;
            outcome.silent_losses = truth.records.len() as u64;
            outcome.first_loss = Some("open_or_create made a new store over data".to_owned());
            drop(agent);
        }
        Ok((agent, _report)) => check_records(agent.engine(), truth, faults, &mut outcome),
        Err(_) => {
            outcome.detected = true;
            outcome.checked = truth.records.len() as u64;
            outcome.untouched = truth
                .records
                .keys()
                .filter(|key| !truth.touched(key, faults))
                .count() as u64;
        }
    }
    outcome
}

/// Runs media case `seed`: one workload (its kind follows from the seed), then
/// `budget.fault_sets_per_case` faulted copies of its image, each checked.
pub fn run_media_case(seed: u64, budget: &MediaBudget) -> crate::Result<MediaCaseReport> {
    let workload = MediaWorkload::of_seed(seed);
    let (image, truth) = match workload {
        MediaWorkload::Engine => engine_workload(seed, budget.engine_ops)?,
        MediaWorkload::Agent => agent_workload(seed, budget.agent_posts)?,
    };
    let used = used_offsets(&image);
    let mut rng = SplitMix64::new(seed ^ 0x6661_756c_7473);
    let mut tally = MediaTally {
        cases: 1,
        ..MediaTally::default()
    };
    let mut first_violation = None;
    for set in 0..budget.fault_sets_per_case {
        let count = 1 + rng.below(u64::from(budget.faults_per_set_max.max(1))) as usize;
        let faults: Vec<MediaFault> = (0..count)
            .map(|_| MediaFault::draw(&mut rng, &image, &used))
            .collect();
        let mut faulted = image.clone();
        for fault in &faults {
            fault.apply(&mut faulted);
        }
        tally.fault_sets += 1;
        tally.media_faults_injected += faults.len() as u64;
        let checked = catch_unwind(AssertUnwindSafe(|| match workload {
            MediaWorkload::Engine => check_engine_image(faulted, &truth, &faults),
            MediaWorkload::Agent => check_agent_image(faulted, &truth, &faults),
        }));
        let outcome = match checked {
            Ok(outcome) => outcome,
            Err(_) => {
                tally.panics += 1;
                first_violation.get_or_insert_with(|| {
                    format!("seed {seed} set {set}: panic with faults {faults:?}")
                });
                continue;
            }
        };
        tally.records_checked += outcome.checked;
        tally.records_untouched += outcome.untouched;
        tally.records_untouched_readable += outcome.untouched_readable;
        tally.silent_losses += outcome.silent_losses;
        tally.resurrected_streams += outcome.resurrected;
        if outcome.reformat {
            tally.reformats += 1;
        }
        if outcome.detected {
            tally.faults_detected += 1;
        } else if outcome.silent_losses == 0 && !outcome.reformat && outcome.resurrected == 0 {
            tally.fault_sets_harmless += 1;
        }
        if let Some(loss) = outcome.first_loss {
            first_violation
                .get_or_insert_with(|| format!("seed {seed} set {set}: {loss}; faults {faults:?}"));
        }
    }
    Ok(MediaCaseReport {
        seed,
        workload,
        tally,
        first_violation,
    })
}

/// A media-fault campaign's summary (`pstream crashtest --media-faults --json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MediaReport {
    pub seed: u64,
    #[serde(flatten)]
    pub tally: MediaTally,
    pub records_salvaged_ratio: f64,
    pub seconds: f64,
    /// The first bad verdict of each failing case, with seed and faults.
    pub violation_reports: Vec<String>,
}

/// Runs media cases `seed, seed + 1, ...` until `cases` ran or `seconds` passed (checked
/// before each case), calling `progress` after each.
pub fn run_media_campaign(
    seed: u64,
    cases: Option<u64>,
    seconds: Option<f64>,
    budget: &MediaBudget,
    progress: &mut dyn FnMut(&MediaTally),
) -> crate::Result<MediaReport> {
    let started = std::time::Instant::now();
    let mut report = MediaReport {
        seed,
        ..MediaReport::default()
    };
    let cases = match (cases, seconds) {
        (None, None) => Some(20),
        (cases, _) => cases,
    };
    loop {
        if cases.is_some_and(|total| report.tally.cases >= total)
            || seconds.is_some_and(|limit| started.elapsed().as_secs_f64() >= limit)
        {
            break;
        }
        let case = run_media_case(seed.wrapping_add(report.tally.cases), budget)?;
        report.tally += case.tally;
        if let Some(text) = case.first_violation {
            report.violation_reports.push(text);
        }
        progress(&report.tally);
    }
    report.records_salvaged_ratio = report.tally.records_salvaged_ratio();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_change_exactly_their_bytes() {
        let image = vec![0u8; 1024];
        let mut flipped = image.clone();
        MediaFault::BitFlip { offset: 10, bit: 3 }.apply(&mut flipped);
        assert_eq!(changed_ranges(&image, &flipped), vec![8..16]);
        assert_eq!(flipped[10], 8);
        let mut garbage = image.clone();
        MediaFault::GarbageBlock {
            offset: 256,
            noise: 7,
        }
        .apply(&mut garbage);
        let changed = changed_ranges(&image, &garbage);
        assert!(
            changed.iter().all(|r| r.start >= 256 && r.end <= 512),
            "{changed:?}"
        );
        let mut zeroed = garbage.clone();
        MediaFault::ZeroBlock { offset: 256 }.apply(&mut zeroed);
        assert_eq!(zeroed, image);
    }

    #[test]
    fn drawn_faults_are_aligned_and_inside_the_image() {
        let image = vec![1u8; 4096];
        let used = used_offsets(&image);
        let mut rng = SplitMix64::new(3);
        for _ in 0..1000 {
            let fault = MediaFault::draw(&mut rng, &image, &used);
            let range = fault.range();
            assert!(range.start < image.len());
            if !matches!(fault, MediaFault::BitFlip { .. }) {
                assert_eq!(range.start % FAULT_BLOCK_BYTES, 0);
            }
        }
    }

    #[test]
    fn an_unfaulted_image_serves_every_acknowledged_record() {
        for seed in [0u64, 1] {
            let budget = MediaBudget {
                fault_sets_per_case: 0,
                ..MediaBudget::default()
            };
            let report = run_media_case(seed, &budget).unwrap();
            assert_eq!(report.tally.fault_sets, 0);
            let (image, truth) = match MediaWorkload::of_seed(seed) {
                MediaWorkload::Engine => engine_workload(seed, budget.engine_ops).unwrap(),
                MediaWorkload::Agent => agent_workload(seed, budget.agent_posts).unwrap(),
            };
            assert!(truth.records.len() > 20, "{} records", truth.records.len());
            let outcome = match MediaWorkload::of_seed(seed) {
                MediaWorkload::Engine => check_engine_image(image, &truth, &[]),
                MediaWorkload::Agent => check_agent_image(image, &truth, &[]),
            };
            assert!(!outcome.detected && !outcome.reformat, "{outcome:?}");
            assert_eq!(outcome.silent_losses, 0, "{outcome:?}");
            assert_eq!(outcome.untouched_readable, truth.records.len() as u64);
        }
    }

    #[test]
    fn a_flip_in_an_acknowledged_payload_is_never_served() {
        let (image, truth) = engine_workload(4, 60).unwrap();
        let (key, acked) = truth.records.iter().next().unwrap();
        // The last byte the append changed is payload or padding of its record.
        let at = acked.footprint.last().unwrap().end - 1;
        let fault = MediaFault::BitFlip { offset: at, bit: 0 };
        let mut faulted = image;
        fault.apply(&mut faulted);
        let outcome = check_engine_image(faulted, &truth, &[fault]);
        assert_eq!(outcome.silent_losses, 0, "{key:?}: {outcome:?}");
    }
}

//! The crash oracle of `docs/CRASH-MODEL.md`, for engine tests.
//!
//! A `Model` holds what was acknowledged; `Pending` what was in flight when the crash hit.
//! `check` recovers an image and verifies: every acknowledged record present and intact,
//! each in-flight append or batch wholly present or wholly absent (all of its records, in
//! all of its streams, or none: rule 2 read literally), each stream dense, no stream that
//! should not exist, and a clean `verify` after recovery.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use parking_lot::Mutex;
use pmem_emul::{CrashPoint, SimPmem};
use pstream_engine::{Log, LogConfig, OpenOptions, StreamId};

#[derive(Debug, Clone, Default)]
pub struct StreamModel {
    pub label: Vec<u8>,
    pub first_seq: u64,
    /// Payloads of seqs `first_seq..`, acknowledged.
    pub acked: Vec<Vec<u8>>,
    /// Seqs below `next_seq` whose payload is not known yet: a later append was
    /// acknowledged (implying this one is durable) before this one's own ack was recorded.
    /// Its payload must be one of the in-flight ones.
    pub placeholder_seqs: std::collections::BTreeSet<u64>,
}

impl StreamModel {
    pub fn next_seq(&self) -> u64 {
        self.first_seq + self.acked.len() as u64
    }
}

/// Creates a stream while `model` says the create is in flight (a crash inside it may keep
/// the stream or not), then records it as acknowledged.
pub fn create_modelled<P: pmem_emul::Pmem, C: pstream_engine::ColdTier>(
    log: &Log<P, C>,
    model: &Mutex<Model>,
    label: &[u8],
) -> StreamId {
    model.lock().pending = vec![Pending::Create {
        label: label.to_vec(),
    }];
    let id = log.create_stream(label).expect("create stream");
    let mut model = model.lock();
    model.pending.clear();
    model.streams.insert(
        id,
        StreamModel {
            label: label.to_vec(),
            ..Default::default()
        },
    );
    id
}

/// An operation that was in flight (not acknowledged) at the crash.
#[derive(Debug, Clone)]
pub enum Pending {
    Create { label: Vec<u8> },
    Delete { stream: StreamId },
    Append { records: Vec<(StreamId, Vec<u8>)> },
    Trim { stream: StreamId, first_seq: u64 },
}

#[derive(Debug, Clone, Default)]
pub struct Model {
    pub streams: BTreeMap<StreamId, StreamModel>,
    /// In-flight operations (several with concurrent threads).
    pub pending: Vec<Pending>,
}

impl Model {
    fn pending_payloads(&self, stream: StreamId) -> Vec<&[u8]> {
        let mut out = Vec::new();
        for op in &self.pending {
            if let Pending::Append { records } = op {
                out.extend(
                    records
                        .iter()
                        .filter(|(s, _)| *s == stream)
                        .map(|(_, p)| p.as_slice()),
                );
            }
        }
        out
    }
}

pub fn small_config() -> LogConfig {
    LogConfig {
        segment_size_bytes: 16 * 1024,
        stream_slot_count: 16,
    }
}

pub fn options(lane_count: usize) -> OpenOptions {
    OpenOptions { lane_count }
}

/// Recovers `image` and checks it against `model`. Returns a description of the first
/// violation found.
pub fn check_image(image: &[u8], model: &Model, lane_count: usize) -> Result<(), String> {
    let sim = SimPmem::from_image(image.to_vec());
    let (log, _report) =
        Log::open(sim, options(lane_count)).map_err(|e| format!("recovery failed: {e}"))?;
    check_log(&log, model)?;
    let after = log.close();
    let report = pstream_engine::verify(&after).map_err(|e| format!("verify failed: {e}"))?;
    if !report.is_clean() {
        return Err(format!("verify after recovery found {:?}", report.problems));
    }
    Ok(())
}

/// Checks an open log against the model (acknowledged state plus in-flight operations).
pub fn check_log<P: pmem_emul::Pmem, C: pstream_engine::ColdTier>(
    log: &Log<P, C>,
    model: &Model,
) -> Result<(), String> {
    // Per stream, the payloads of records that are not known acknowledged ones.
    let mut in_flight_found: BTreeMap<StreamId, Vec<Vec<u8>>> = BTreeMap::new();
    let listed: BTreeMap<StreamId, Vec<u8>> = log
        .list_streams()
        .into_iter()
        .map(|info| (info.id, info.label))
        .collect();
    for (id, label) in &listed {
        if !model.streams.contains_key(id) {
            let creating = model
                .pending
                .iter()
                .any(|op| matches!(op, Pending::Create { label: l } if l == label));
            if !creating {
                return Err(format!("stream {id} exists but was never created"));
            }
            let (first, next) = log.bounds(*id).map_err(|e| e.to_string())?;
            if first != next {
                return Err(format!("in-flight created stream {id} holds records"));
            }
        }
    }
    for (id, stream) in &model.streams {
        let deleting = model
            .pending
            .iter()
            .any(|op| matches!(op, Pending::Delete { stream } if stream == id));
        if !listed.contains_key(id) {
            if deleting {
                continue;
            }
            return Err(format!("acknowledged stream {id} is missing"));
        }
        if listed[id] != stream.label {
            return Err(format!(
                "stream {id} label {:?} != {:?}",
                listed[id], stream.label
            ));
        }
        let (first, next) = log.bounds(*id).map_err(|e| e.to_string())?;
        let trimming: Vec<u64> = model
            .pending
            .iter()
            .filter_map(|op| match op {
                Pending::Trim { stream, first_seq } if stream == id => Some(*first_seq),
                _ => None,
            })
            .collect();
        if first != stream.first_seq && !trimming.contains(&first) {
            return Err(format!(
                "stream {id} first_seq {first}, acknowledged {}",
                stream.first_seq
            ));
        }
        let pending = model.pending_payloads(*id);
        let acked_next = stream.next_seq();
        if next < acked_next {
            return Err(format!(
                "stream {id} lost acknowledged records: next {next} < {acked_next}"
            ));
        }
        if next > acked_next + pending.len() as u64 {
            return Err(format!(
                "stream {id} has {} records past the acknowledged {acked_next}, only {} in flight",
                next - acked_next,
                pending.len()
            ));
        }
        // In-flight records may land in any order across concurrent operations: match them
        // as a multiset against the in-flight payloads of this stream.
        let mut unmatched: Vec<&[u8]> = pending.clone();
        for seq in first..next {
            let record = log
                .read(*id, seq)
                .map_err(|e| format!("read {id}/{seq}: {e}"))?;
            let known = seq < acked_next && !stream.placeholder_seqs.contains(&seq);
            if known {
                let expected = &stream.acked[(seq - stream.first_seq) as usize];
                if record.payload() != expected.as_slice() {
                    return Err(format!(
                        "stream {id} seq {seq}: payload {} bytes differs from acknowledged {} bytes",
                        record.payload().len(),
                        expected.len()
                    ));
                }
            } else {
                let Some(position) = unmatched.iter().position(|p| *p == record.payload()) else {
                    return Err(format!(
                        "stream {id} seq {seq}: payload of {} bytes matches no in-flight append",
                        record.payload().len()
                    ));
                };
                unmatched.swap_remove(position);
                in_flight_found
                    .entry(*id)
                    .or_default()
                    .push(record.payload().to_vec());
            }
        }
        let iterated = log.iter(*id, first).map_err(|e| e.to_string())?.count() as u64;
        if iterated != next - first {
            return Err(format!(
                "stream {id}: iterator gave {iterated}, bounds say {}",
                next - first
            ));
        }
        in_flight_found.entry(*id).or_default();
    }
    check_whole_batches(model, &in_flight_found)
}

/// Rule 2 for batches: the in-flight records found are exactly the records of some set of
/// in-flight appends (each batch all or nothing, across its streams). Streams that are not
/// checked (deleted meanwhile, never modelled) constrain nothing.
fn check_whole_batches(
    model: &Model,
    found: &BTreeMap<StreamId, Vec<Vec<u8>>>,
) -> Result<(), String> {
    let batches: Vec<&Vec<(StreamId, Vec<u8>)>> = model
        .pending
        .iter()
        .filter_map(|op| match op {
            Pending::Append { records } => Some(records),
            _ => None,
        })
        .collect();
    if batches.len() > 16 {
        return Err(format!(
            "{} appends in flight: too many to check batch atomicity",
            batches.len()
        ));
    }
    let mut found_sorted: BTreeMap<StreamId, Vec<&[u8]>> = found
        .iter()
        .map(|(id, payloads)| (*id, payloads.iter().map(Vec::as_slice).collect()))
        .collect();
    for payloads in found_sorted.values_mut() {
        payloads.sort_unstable();
    }
    for mask in 0u32..(1 << batches.len()) {
        let mut chosen: BTreeMap<StreamId, Vec<&[u8]>> =
            found_sorted.keys().map(|id| (*id, Vec::new())).collect();
        for (_, records) in batches
            .iter()
            .enumerate()
            .filter(|(k, _)| mask & (1 << k) != 0)
        {
            for (stream, payload) in records.iter() {
                if let Some(list) = chosen.get_mut(stream) {
                    list.push(payload.as_slice());
                }
            }
        }
        for payloads in chosen.values_mut() {
            payloads.sort_unstable();
        }
        if chosen == found_sorted {
            return Ok(());
        }
    }
    let summary: Vec<String> = found
        .iter()
        .filter(|(_, payloads)| !payloads.is_empty())
        .map(|(id, payloads)| format!("{id}: {} record(s)", payloads.len()))
        .collect();
    Err(format!(
        "in-flight records found ({}) are not the records of whole in-flight appends \
         (a batch survived in part)",
        summary.join(", ")
    ))
}

/// Counters of a crash-checking run.
#[derive(Debug, Default, Clone, Copy)]
pub struct CrashTally {
    pub fences: u64,
    pub images: u64,
    pub exhaustive_fences: u64,
    pub recovery_crash_images: u64,
}

pub struct CrashChecker {
    pub model: Arc<Mutex<Model>>,
    pub tally: Arc<Mutex<CrashTally>>,
    pub failures: Arc<Mutex<Vec<String>>>,
}

/// How many images to look at per crash point.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub exhaustive_max: u64,
    pub samples: u64,
    pub seed: u64,
    pub lane_count: usize,
    /// Every n-th checked image is also crashed during its own recovery (0 = never).
    pub recovery_crash_every: u64,
}

impl CrashChecker {
    /// Installs a fence hook on `sim` that checks crash images at every fence.
    pub fn install(sim: &SimPmem, budget: Budget) -> CrashChecker {
        let model = Arc::new(Mutex::new(Model::default()));
        let tally = Arc::new(Mutex::new(CrashTally::default()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let (m, t, f) = (
            Arc::clone(&model),
            Arc::clone(&tally),
            Arc::clone(&failures),
        );
        sim.set_fence_hook(Some(Box::new(move |point: &CrashPoint<'_>| {
            let model = m.lock().clone();
            let mut tally = t.lock();
            tally.fences += 1;
            let fence = point.fence_index().unwrap_or(0);
            let run = point.for_each_image(
                budget.exhaustive_max,
                budget.samples,
                budget.seed ^ fence,
                |image| {
                    tally.images += 1;
                    let mut verdict = check_image(image, &model, budget.lane_count);
                    if verdict.is_ok()
                        && budget.recovery_crash_every > 0
                        && tally.images % budget.recovery_crash_every == 0
                    {
                        match crash_during_recovery(image, &model, budget) {
                            Ok(count) => tally.recovery_crash_images += count,
                            Err(error) => verdict = Err(format!("crash during recovery: {error}")),
                        }
                    }
                    match verdict {
                        Ok(()) => ControlFlow::Continue(()),
                        Err(error) => {
                            f.lock().push(format!(
                                "fence {fence} (seed {}): {error}; in flight: {:?}",
                                budget.seed, model.pending
                            ));
                            ControlFlow::Break(())
                        }
                    }
                },
            );
            if run.exhaustive {
                tally.exhaustive_fences += 1;
            }
        })));
        CrashChecker {
            model,
            tally,
            failures,
        }
    }

    pub fn assert_clean(&self) {
        let failures = self.failures.lock();
        assert!(
            failures.is_empty(),
            "{} crash oracle violation(s), first: {}",
            failures.len(),
            failures[0]
        );
    }
}

/// Recovers `image` on a simulator that records the crash images of recovery itself (at
/// each of its fences, sampled), then recovers each of those and checks the oracle.
pub fn crash_during_recovery(image: &[u8], model: &Model, budget: Budget) -> Result<u64, String> {
    let sim = SimPmem::from_image(image.to_vec());
    let nested: Arc<Mutex<Vec<Vec<u8>>>> = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&nested);
    sim.set_fence_hook(Some(Box::new(move |point: &CrashPoint<'_>| {
        point.for_each_image(16, 4, 7, |img| {
            sink.lock().push(img.to_vec());
            ControlFlow::Continue(())
        });
    })));
    let (log, _) = Log::open(sim, options(budget.lane_count)).map_err(|e| e.to_string())?;
    drop(log);
    let images = std::mem::take(&mut *nested.lock());
    for nested_image in &images {
        check_image(nested_image, model, budget.lane_count)?;
    }
    Ok(images.len() as u64)
}

/// A payload whose bytes are valid record headers of this pool (for the segment
/// generations around `segment_gen_hint`), claiming `stream` and seqs from `seq`: if the
/// scanner ever read a header inside a payload, these would surface as records.
pub fn crafted_payload(
    pool_nonce: u64,
    stream: StreamId,
    seq: u64,
    gens: std::ops::Range<u64>,
) -> Vec<u8> {
    use pstream_engine::format::record::{encode, payload_crc, CrcKey, RecordHeader};
    use pstream_engine::format::segment::SEGMENT_HEADER_BYTES;
    let mut payload = Vec::new();
    for segment_gen in gens {
        let header = RecordHeader {
            stream_id: stream.0,
            seq,
            payload_len: 0,
            payload_crc: payload_crc(&[]),
            batch_more: false,
        };
        // Keyed at a segment's first record position: where a scanner that lost its
        // place would start.
        let key = CrcKey::new(pool_nonce, segment_gen).at(SEGMENT_HEADER_BYTES as u64);
        payload.extend_from_slice(&encode(&header, key));
    }
    payload
}

pub fn pool_nonce(sim: &SimPmem) -> u64 {
    use pmem_emul::Pmem;
    let superblock = pstream_engine::format::superblock::Superblock::decode(sim.read(0, 128));
    superblock.map(|s| s.pool_nonce).unwrap_or(0)
}

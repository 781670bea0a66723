//! The crash oracle of `docs/CRASH-MODEL.md` for the engine, as library code.
//!
//! A [`Model`] holds what was acknowledged and, in [`Model::pending`], what was in flight
//! when a crash hit. [`check_image`] recovers an image and checks it: every acknowledged
//! record present and intact (rule 1), in-flight records wholly present or absent (rule 2),
//! each stream dense (rule 3), streams and trims consistent with the data (rule 4), a clean
//! `verify` after recovery, and recovery itself never failing (rule 5). Crafted payloads
//! (rule 6) are written by the workloads; a header read from inside one would surface here as
//! a record matching no append.
//!
//! Every check returns a digest of the recovered logical state (streams, bounds, payloads),
//! which is what the trace hash records: the pool nonce differs from run to run, so raw image
//! bytes do, but the recovered state of the same seed does not.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::sync::Arc;

use parking_lot::Mutex;
use pmem_emul::{CrashPoint, Pmem, SimPmem};
use pstream_engine::format::record::{encode, payload_crc, CrcKey, RecordHeader};
use pstream_engine::format::segment::SEGMENT_HEADER_BYTES;
use pstream_engine::format::superblock::Superblock;
use pstream_engine::{ColdTier, Log, OpenOptions, StreamId};

use crate::hash::TraceHash;

/// What was acknowledged of one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamModel {
    pub label: Vec<u8>,
    pub first_seq: u64,
    /// Payloads of seqs `first_seq..`, acknowledged.
    pub acked: Vec<Vec<u8>>,
    /// Seqs below `next_seq` whose payload is not known yet: a later append of another
    /// thread was acknowledged (so this one is durable) before this one's ack was recorded.
    /// Its payload must be one of the in-flight ones.
    pub placeholder_seqs: BTreeSet<u64>,
}

impl StreamModel {
    pub fn new(label: Vec<u8>) -> StreamModel {
        StreamModel {
            label,
            ..StreamModel::default()
        }
    }

    pub fn next_seq(&self) -> u64 {
        self.first_seq + self.acked.len() as u64
    }

    /// Records an acknowledged append at `seq` (possibly past gaps other threads will fill).
    pub fn ack(&mut self, seq: u64, payload: Vec<u8>) -> Result<(), String> {
        if seq < self.first_seq {
            return Err(format!(
                "append acknowledged seq {seq} below first seq {}",
                self.first_seq
            ));
        }
        let offset = (seq - self.first_seq) as usize;
        while self.acked.len() <= offset {
            let placeholder = self.first_seq + self.acked.len() as u64;
            self.placeholder_seqs.insert(placeholder);
            self.acked.push(Vec::new());
        }
        if !self.placeholder_seqs.remove(&seq) {
            return Err(format!("seq {seq} acknowledged twice"));
        }
        self.acked[offset] = payload;
        Ok(())
    }

    /// Drops acknowledged records below `first_seq`.
    pub fn trim(&mut self, first_seq: u64) {
        let drop_count = first_seq.saturating_sub(self.first_seq) as usize;
        let drop_count = drop_count.min(self.acked.len());
        self.acked.drain(..drop_count);
        self.placeholder_seqs = self.placeholder_seqs.split_off(&first_seq);
        self.first_seq = self.first_seq.max(first_seq);
    }
}

/// An operation that was in flight (not acknowledged) at the crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    Create { label: Vec<u8> },
    Delete { stream: StreamId },
    Append { records: Vec<(StreamId, Vec<u8>)> },
    Trim { stream: StreamId, first_seq: u64 },
}

/// The acknowledged state plus what is in flight.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub streams: BTreeMap<StreamId, StreamModel>,
    /// In-flight operations (several with concurrent threads). An in-flight append or
    /// batch must be wholly present or wholly absent, across all of its streams (rule 2 of
    /// the crash model read literally).
    pub pending: Vec<Pending>,
}

impl Model {
    /// The in-flight payloads of `stream`, each with the index of its pending operation.
    fn pending_payloads(&self, stream: StreamId) -> Vec<(usize, &[u8])> {
        let mut out = Vec::new();
        for (index, op) in self.pending.iter().enumerate() {
            if let Pending::Append { records } = op {
                out.extend(
                    records
                        .iter()
                        .filter(|(s, _)| *s == stream)
                        .map(|(_, p)| (index, p.as_slice())),
                );
            }
        }
        out
    }

    fn creating(&self, label: &[u8]) -> bool {
        self.pending
            .iter()
            .any(|op| matches!(op, Pending::Create { label: l } if l == label))
    }

    fn deleting(&self, id: StreamId) -> bool {
        self.pending
            .iter()
            .any(|op| matches!(op, Pending::Delete { stream } if *stream == id))
    }

    fn trimming(&self, id: StreamId) -> Vec<u64> {
        self.pending
            .iter()
            .filter_map(|op| match op {
                Pending::Trim { stream, first_seq } if *stream == id => Some(*first_seq),
                _ => None,
            })
            .collect()
    }
}

/// A short description of in-flight operations (payload lengths, not bytes).
pub fn describe_pending(pending: &[Pending]) -> String {
    let parts: Vec<String> = pending
        .iter()
        .map(|op| match op {
            Pending::Create { label } => format!("create {:?}", String::from_utf8_lossy(label)),
            Pending::Delete { stream } => format!("delete {stream}"),
            Pending::Trim { stream, first_seq } => format!("trim {stream} to {first_seq}"),
            Pending::Append { records } => {
                let records: Vec<String> = records
                    .iter()
                    .map(|(stream, payload)| format!("{stream} <{} B>", payload.len()))
                    .collect();
                format!("append [{}]", records.join(", "))
            }
        })
        .collect();
    format!("[{}]", parts.join("; "))
}

/// Recovers `image` and checks it against `model`. Returns the digest of the recovered
/// state, or a description of the first violation.
pub fn check_image(image: &[u8], model: &Model, lane_count: usize) -> Result<u64, String> {
    let sim = SimPmem::from_image(image.to_vec());
    let (log, _report) =
        Log::open(sim, OpenOptions { lane_count }).map_err(|e| format!("recovery failed: {e}"))?;
    let digest = check_log(&log, model)?;
    let after = log.close();
    let report = pstream_engine::verify(&after).map_err(|e| format!("verify failed: {e}"))?;
    if !report.is_clean() {
        return Err(format!("verify after recovery found {:?}", report.problems));
    }
    Ok(digest)
}

/// Checks an open log against the model; returns the digest of its logical state.
pub fn check_log<P: Pmem, C: ColdTier>(log: &Log<P, C>, model: &Model) -> Result<u64, String> {
    let mut digest = TraceHash::new();
    let listed: BTreeMap<StreamId, Vec<u8>> = log
        .list_streams()
        .into_iter()
        .map(|info| (info.id, info.label))
        .collect();
    for (id, label) in &listed {
        digest.u64(id.0);
        digest.bytes(label);
        if model.streams.contains_key(id) {
            continue;
        }
        if !model.creating(label) {
            return Err(format!("stream {id} exists but was never created"));
        }
        let (first, next) = log.bounds(*id).map_err(|e| format!("bounds {id}: {e}"))?;
        if first != next {
            return Err(format!("in-flight created stream {id} holds records"));
        }
    }
    let mut landed = vec![0usize; model.pending.len()];
    for (id, stream) in &model.streams {
        if !listed.contains_key(id) {
            if model.deleting(*id) {
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
        check_stream(log, model, *id, stream, &mut digest, &mut landed)?;
    }
    for (op, count) in model.pending.iter().zip(&landed) {
        if let Pending::Append { records } = op {
            if *count != 0 && *count != records.len() {
                return Err(format!(
                    "{count} of the {} records of an in-flight batch survived (a batch \
                     must be wholly present or wholly absent)",
                    records.len()
                ));
            }
        }
    }
    Ok(digest.finish())
}

fn check_stream<P: Pmem, C: ColdTier>(
    log: &Log<P, C>,
    model: &Model,
    id: StreamId,
    stream: &StreamModel,
    digest: &mut TraceHash,
    landed: &mut [usize],
) -> Result<(), String> {
    let (first, next) = log.bounds(id).map_err(|e| format!("bounds {id}: {e}"))?;
    digest.u64(first);
    digest.u64(next);
    if first != stream.first_seq && !model.trimming(id).contains(&first) {
        return Err(format!(
            "stream {id} first_seq {first}, acknowledged {}",
            stream.first_seq
        ));
    }
    let pending = model.pending_payloads(id);
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
    // In-flight records may land in any order across concurrent operations: match them as
    // a multiset against the in-flight payloads of this stream. The digest records which
    // acknowledged or in-flight payload each record is, not its bytes (crafted payloads hold
    // the pool nonce, which differs from run to run).
    let mut used = vec![false; pending.len()];
    for seq in first..next {
        let record = log
            .read(id, seq)
            .map_err(|e| format!("read {id}/{seq}: {e}"))?;
        digest.u64(seq);
        let known = seq < acked_next && !stream.placeholder_seqs.contains(&seq);
        if known {
            let expected = &stream.acked[(seq - stream.first_seq) as usize];
            if record.payload() != expected.as_slice() {
                return Err(format!(
                    "stream {id} seq {seq}: payload of {} bytes differs from the acknowledged \
                     {} bytes",
                    record.payload().len(),
                    expected.len()
                ));
            }
            digest.u64(0);
        } else {
            let matched =
                (0..pending.len()).find(|&j| !used[j] && pending[j].1 == record.payload());
            let Some(position) = matched else {
                return Err(format!(
                    "stream {id} seq {seq}: payload of {} bytes matches no in-flight append",
                    record.payload().len()
                ));
            };
            used[position] = true;
            landed[pending[position].0] += 1;
            digest.u64(1 + position as u64);
        }
    }
    let iterated = log
        .iter(id, first)
        .map_err(|e| format!("iter {id}: {e}"))?
        .count() as u64;
    if iterated != next - first {
        return Err(format!(
            "stream {id}: the iterator gave {iterated} records, bounds say {}",
            next - first
        ));
    }
    Ok(())
}

/// How many crash images of a recovery to take per recovery fence, and from which seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NestedBudget {
    pub exhaustive_max: u64,
    pub samples: u64,
    pub seed: u64,
}

impl Default for NestedBudget {
    fn default() -> Self {
        NestedBudget {
            exhaustive_max: 16,
            samples: 4,
            seed: 7,
        }
    }
}

/// Recovers `image` on a simulator that records the crash images of recovery itself (at
/// each of its fences), then recovers each of those and checks the oracle: recovery must
/// succeed again after being interrupted by a crash. Returns how many images it checked.
pub fn crash_during_recovery(
    image: &[u8],
    model: &Model,
    lane_count: usize,
    budget: NestedBudget,
) -> Result<u64, String> {
    let sim = SimPmem::from_image(image.to_vec());
    let nested: Arc<Mutex<Vec<Vec<u8>>>> = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&nested);
    sim.set_fence_hook(Some(Box::new(move |point: &CrashPoint<'_>| {
        let seed = budget.seed ^ point.fence_index().unwrap_or(0);
        point.for_each_image(budget.exhaustive_max, budget.samples, seed, |img| {
            sink.lock().push(img.to_vec());
            ControlFlow::Continue(())
        });
    })));
    let (log, _) = Log::open(sim, OpenOptions { lane_count })
        .map_err(|e| format!("recovery (to be interrupted) failed: {e}"))?;
    log.pmem().set_fence_hook(None);
    drop(log);
    let images = std::mem::take(&mut *nested.lock());
    for nested_image in &images {
        check_image(nested_image, model, lane_count)
            .map_err(|e| format!("after a crash during recovery: {e}"))?;
    }
    Ok(images.len() as u64)
}

/// A payload whose bytes are valid record headers of this pool (for the segment generations
/// `gens`), claiming `stream` and `seq`: if the scanner ever read a header inside a payload,
/// these would surface as records (oracle rule 6).
pub fn crafted_payload(
    pool_nonce: u64,
    stream: StreamId,
    seq: u64,
    gens: std::ops::Range<u64>,
) -> Vec<u8> {
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

/// The pool nonce of a formatted pool (0 if its superblock does not decode).
pub fn pool_nonce<P: Pmem>(pmem: &P) -> u64 {
    Superblock::decode(pmem.read(0, 128)).map_or(0, |s| s.pool_nonce)
}

//! The agent: engine handle, metadata state, the system stream (change records and
//! snapshots), open/recovery, and the helpers the API modules share.
//!
//! # Durability protocol
//! * Metadata lives in one engine stream (label [`SYS_STREAM_LABEL`]): each acknowledged
//!   change is one record appended *before* the in-memory state changes; every
//!   `snapshot_every_changes` changes a snapshot (possibly several records) is appended and
//!   the records before it are trimmed, so replay stays short.
//! * Data streams are engine streams of their own; the mapping is in the metadata. An engine
//!   stream is created before the change record naming it, and deleted after the change
//!   record that drops it, so a crash leaves at worst an *orphan* engine stream, which open
//!   deletes.
//! * Trims (reclaiming ephemeral data everybody took) follow durable cursor changes; open
//!   recomputes and reapplies them, so a crash between the two loses no reclamation.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pmem_emul::Pmem;
use pstream_engine::{
    ColdTier, EngineError, Log, LogConfig, LogStats, NoColdTier, OpenOptions, Probe,
    RecoveryReport, StreamId, StreamInfo,
};

use crate::address::{self, Caller};
use crate::change::{Change, SnapshotPart, SysRecord, SYS_HEADER_BYTES, SYS_TRAILER_BYTES};
use crate::codec::DecodeError;
use crate::error::{AgentError, MetadataFault, Result};
use crate::model::{BundleRef, Event};
use crate::state::{BundleState, State, StreamMeta};
use crate::Address;

/// Engine label of the system stream.
pub const SYS_STREAM_LABEL: &[u8] = b"pstream-agent.sys";
/// Engine label of every data stream.
pub const DATA_STREAM_LABEL: &[u8] = b"pstream-agent.data";
/// Largest snapshot part payload (besides the record's own framing).
const SNAPSHOT_CHUNK_MAX_BYTES: usize = 256 * 1024;
/// Framing of a snapshot part: record header and trailer plus the part's fixed fields.
const SNAPSHOT_PART_OVERHEAD_BYTES: usize =
    SYS_HEADER_BYTES + SYS_TRAILER_BYTES + 8 + 4 + 4 + 8 + 4 + 4;

/// How an agent store is made and run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentConfig {
    /// Engine layout, used when the store is created.
    pub log: LogConfig,
    pub open: OpenOptions,
    /// A snapshot of the metadata is written after this many change records.
    pub snapshot_every_changes: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            log: LogConfig {
                segment_size_bytes: 4 << 20,
                stream_slot_count: 16 * 1024,
            },
            open: OpenOptions::default(),
            snapshot_every_changes: 512,
        }
    }
}

/// What opening a store found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    pub engine: RecoveryReport,
    /// System records replayed (changes and snapshot parts).
    pub sys_records_replayed: u64,
    pub snapshot_loaded: bool,
    /// Engine streams no metadata named (a crash between creating one and recording it,
    /// or between recording a delete and doing it): deleted.
    pub orphan_streams_deleted: u64,
    /// Streams whose reclaimable prefix was trimmed (again).
    pub streams_trimmed: u64,
    /// Engine streams with a label the shim never writes, found in its pool: kept as they
    /// are (not the shim's to delete).
    pub foreign_streams_kept: u64,
    /// The store was created by this call (`open_or_create`).
    pub created: bool,
    pub duration: Duration,
}

/// Counters since open plus gauges now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentStats {
    pub users: u64,
    pub bundles: u64,
    pub streams: u64,
    pub changes_logged: u64,
    pub snapshots_written: u64,
    pub records_appended: u64,
    pub bytes_appended: u64,
    pub records_delivered: u64,
    pub bytes_delivered: u64,
    pub acks: u64,
    pub trims: u64,
    pub envelopes_sent: u64,
    pub envelopes_received: u64,
    pub subscribers: u64,
    /// Bytes of live records in persistent memory (the hot tier).
    pub hot_bytes: u64,
    pub engine: LogStats,
}

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counters {
    pub changes_logged: u64,
    pub snapshots_written: u64,
    pub records_appended: u64,
    pub bytes_appended: u64,
    pub records_delivered: u64,
    pub bytes_delivered: u64,
    pub acks: u64,
    pub trims: u64,
    pub envelopes_sent: u64,
    pub envelopes_received: u64,
}

pub(crate) struct Subscriber {
    pub caller: Caller,
    pub sender: crossbeam::channel::Sender<Event>,
    pub alive: bool,
}

pub(crate) struct Inner {
    pub state: State,
    pub changes_since_snapshot: u64,
    pub next_snapshot_id: u64,
    pub subscribers: Vec<Subscriber>,
    pub counters: Counters,
}

/// The persistent-streams agent's persistence layer, on persistent memory `P`, with cold
/// segments in `C` (none by default; `pstream-tiering` provides SSD files).
///
/// Every method takes the caller's identity and checks it; a refused or failed call
/// changes nothing. Calls are serialized by one lock (the shim is thin: the engine's own
/// concurrency is below it). Records the engine has demoted to the cold tier are read
/// through it transparently; run a migrator over [`Agent::engine`] to demote.
pub struct Agent<P: Pmem, C: ColdTier = NoColdTier> {
    pub(crate) log: Log<P, C>,
    pub(crate) sys: StreamId,
    pub(crate) config: AgentConfig,
    pub(crate) inner: Mutex<Inner>,
}

impl<P: Pmem, C: ColdTier> std::fmt::Debug for Agent<P, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("sys", &self.sys)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn corrupt(detail: impl Into<String>) -> AgentError {
    AgentError::Corrupt {
        detail: detail.into(),
    }
}

/// The most orphan engine streams one crash can leave: every operation creates at most one
/// engine stream before the change record naming it, or deletes at most one after the change
/// record dropping it, and operations are serialized by the agent lock. More orphans than
/// this mean the metadata lost changes it once held: open refuses and deletes nothing.
pub const ORPHAN_STREAMS_PER_CRASH_MAX: u64 = 1;
impl<P: Pmem> Agent<P> {
    /// Formats `pmem` as a new agent store for the agent `agent_name` (no cold tier).
    pub fn create(pmem: P, agent_name: &str, config: AgentConfig) -> Result<Agent<P>> {
        Agent::create_with_cold(pmem, NoColdTier, agent_name, config)
    }

    /// Opens the store in `pmem`, or creates it (as `agent_name`) when the pool is blank
    /// (`pstream_engine::probe` says `Blank`: never formatted, or its format was
    /// interrupted) or a crash interrupted the store's creation before anything else was
    /// written. An existing store keeps its own name. A damaged pool, or a store whose
    /// engine holds streams but whose metadata is missing, is an error: nothing is formatted
    /// or initialized over data.
    pub fn open_or_create(
        pmem: P,
        agent_name: &str,
        config: AgentConfig,
    ) -> Result<(Agent<P>, OpenReport)> {
        Agent::open_or_create_with_cold(pmem, NoColdTier, agent_name, config)
    }

    /// Opens an existing store: engine recovery, metadata replay, orphan cleanup, trims.
    pub fn open(pmem: P, config: AgentConfig) -> Result<(Agent<P>, OpenReport)> {
        Agent::open_with_cold(pmem, NoColdTier, config)
    }
}

impl<P: Pmem, C: ColdTier> Agent<P, C> {
    /// Formats `pmem` as a new agent store for the agent `agent_name`, with cold tier `cold`.
    pub fn create_with_cold(
        pmem: P,
        cold: C,
        agent_name: &str,
        config: AgentConfig,
    ) -> Result<Agent<P, C>> {
        address::check_agent_name(agent_name)?;
        let log = Log::create_with_cold(pmem, cold, config.log, config.open)?;
        let agent = Agent::assemble(log, None, config)?;
        agent.initialize(agent_name)?;
        Ok(agent)
    }

    /// [`Agent::open_or_create`] with cold tier `cold`.
    pub fn open_or_create_with_cold(
        pmem: P,
        cold: C,
        agent_name: &str,
        config: AgentConfig,
    ) -> Result<(Agent<P, C>, OpenReport)> {
        address::check_agent_name(agent_name)?;
        let started = Instant::now();
        // Only a blank pool is formatted; a damaged one fails in `Log::open` below with the
        // superblock's corruption, and nothing is written to it.
        if let Probe::Blank { .. } = pstream_engine::probe(&pmem)? {
            let agent = Agent::create_with_cold(pmem, cold, agent_name, config)?;
            let report = OpenReport {
                created: true,
                duration: started.elapsed(),
                ..OpenReport::default()
            };
            return Ok((agent, report));
        }
        Agent::open_inner(pmem, cold, Some(agent_name), config)
    }

    /// [`Agent::open`] with cold tier `cold`: engine recovery reconciles the segment table
    /// with the cold files (see `pstream_engine::recovery`).
    pub fn open_with_cold(
        pmem: P,
        cold: C,
        config: AgentConfig,
    ) -> Result<(Agent<P, C>, OpenReport)> {
        Agent::open_inner(pmem, cold, None, config)
    }

    fn open_inner(
        pmem: P,
        cold: C,
        create_as: Option<&str>,
        config: AgentConfig,
    ) -> Result<(Agent<P, C>, OpenReport)> {
        let started = Instant::now();
        let (log, engine) = Log::open_with_cold(pmem, cold, config.open)?;
        let streams = log.list_streams();
        let mut sys_streams = streams.iter().filter(|s| s.label == SYS_STREAM_LABEL);
        let sys = sys_streams.next().map(|s| s.id);
        if sys_streams.next().is_some() {
            return Err(metadata_fault(
                &streams,
                MetadataFault::SeveralSystemStreams,
            ));
        }
        let other_stream_count = streams.iter().filter(|s| Some(s.id) != sys).count() as u64;
        if sys.is_none() {
            // The metadata's stream is gone while data streams are there: never initialize
            // over them (their owners and names are only in the metadata).
            if other_stream_count > 0 {
                return Err(metadata_fault(&streams, MetadataFault::NoSystemStream));
            }
            if create_as.is_none() {
                return Err(AgentError::NotAnAgentStore);
            }
        }
        let mut report = OpenReport {
            engine,
            ..OpenReport::default()
        };
        let agent = Agent::assemble(log, sys, config)?;
        agent.replay(&mut report)?;
        if agent.inner.lock().state.agent.is_empty() {
            // Creation was interrupted before its first record was durable: then the
            // system stream never held a record and no other stream exists. Anything else
            // is metadata lost under data, refused.
            let (first_seq, next_seq) = agent.log.bounds(agent.sys)?;
            if other_stream_count > 0 || next_seq > 0 {
                return Err(metadata_fault(
                    &streams,
                    MetadataFault::NoAgentRecord {
                        sys_first_seq: first_seq,
                        sys_next_seq: next_seq,
                    },
                ));
            }
            let Some(name) = create_as else {
                return Err(AgentError::NotAnAgentStore);
            };
            agent.initialize(name)?;
            report.created = true;
        }
        agent.reconcile(&mut report)?;
        report.duration = started.elapsed();
        Ok((agent, report))
    }

    fn assemble(log: Log<P, C>, sys: Option<StreamId>, config: AgentConfig) -> Result<Agent<P, C>> {
        let sys = match sys {
            Some(sys) => sys,
            None => log.create_stream(SYS_STREAM_LABEL)?,
        };
        let inner = Inner {
            state: State::default(),
            changes_since_snapshot: 0,
            next_snapshot_id: 1,
            subscribers: Vec::new(),
            counters: Counters::default(),
        };
        Ok(Agent {
            log,
            sys,
            config,
            inner: Mutex::new(inner),
        })
    }

    fn initialize(&self, agent_name: &str) -> Result<()> {
        let mut inner = self.inner.lock();
        debug_assert!(inner.state.agent.is_empty());
        self.commit(
            &mut inner,
            Change::Init {
                agent: agent_name.to_owned(),
            },
        )
    }

    /// Closes the store and hands the pool back. Everything acknowledged is durable already.
    pub fn close(self) -> P {
        self.log.close_with_cold().0
    }

    /// Closes the store and hands back the pool and the cold tier.
    pub fn close_with_cold(self) -> (P, C) {
        self.log.close_with_cold()
    }

    /// This agent's name (the part after `@` in its users' addresses).
    pub fn name(&self) -> String {
        self.inner.lock().state.agent.clone()
    }

    /// The address of a local user of this agent.
    pub fn address_of(&self, user: &str) -> Result<Address> {
        Ok(Address::new(None, user, &self.name())?)
    }

    /// The bundle `id` owned by the local user `owner`.
    pub fn bundle_ref(&self, owner: &str, id: &str) -> Result<BundleRef> {
        Ok(BundleRef::new(&self.address_of(owner)?, id)?)
    }

    /// The engine below (statistics, verification, and migration: a tiering `Migrator`
    /// runs over it; the shim's own records are never written through it).
    pub fn engine(&self) -> &Log<P, C> {
        &self.log
    }

    pub fn stats(&self) -> AgentStats {
        let inner = self.inner.lock();
        let engine = self.log.stats();
        let c = inner.counters;
        AgentStats {
            users: inner.state.users.len() as u64,
            bundles: inner.state.bundles.len() as u64,
            streams: inner
                .state
                .bundles
                .values()
                .map(|b| b.streams.len() as u64)
                .sum(),
            changes_logged: c.changes_logged,
            snapshots_written: c.snapshots_written,
            records_appended: c.records_appended,
            bytes_appended: c.bytes_appended,
            records_delivered: c.records_delivered,
            bytes_delivered: c.bytes_delivered,
            acks: c.acks,
            trims: c.trims,
            envelopes_sent: c.envelopes_sent,
            envelopes_received: c.envelopes_received,
            subscribers: inner.subscribers.iter().filter(|s| s.alive).count() as u64,
            hot_bytes: engine.live_bytes,
            engine,
        }
    }

    /// The metadata encoded as a snapshot body (seeds the `agent_snapshot` fuzz corpus;
    /// not a backup format).
    #[doc(hidden)]
    pub fn snapshot_body(&self) -> Vec<u8> {
        self.inner.lock().state.encode_snapshot()
    }

    /// Writes a snapshot now (and trims the system stream before it).
    pub fn snapshot(&self) -> Result<()> {
        let mut inner = self.inner.lock();
        self.write_snapshot(&mut inner)
    }

    /// Frees the space of trimmed records whose readers have left (the engine also does
    /// this on its own when it runs out of segments). Returns the segments freed.
    pub fn reclaim(&self) -> usize {
        self.log.reclaim()
    }

    // ----- the system stream ----------------------------------------------------------

    /// Makes `change` durable, then applies it. The caller has validated it, so `apply`
    /// cannot fail (checked on a copy in debug builds, before anything is written).
    pub(crate) fn commit(&self, inner: &mut Inner, change: Change) -> Result<()> {
        let bytes = self.change_record(inner, &change)?;
        // IMPORTANT: durable first; the state changes only once the engine acknowledged.
        self.log.append(self.sys, &bytes)?;
        self.apply_committed(inner, &change)
    }

    /// [`Agent::commit`] of a change together with one record of the data stream `stream`,
    /// in one engine batch: both are durable or neither is, also across a crash. Returns
    /// the record's engine seq. When the two do not fit one batch, the change goes first
    /// and the record after it.
    pub(crate) fn commit_with_record(
        &self,
        inner: &mut Inner,
        change: Change,
        stream: StreamId,
        payload: &[u8],
    ) -> Result<u64> {
        let bytes = self.change_record(inner, &change)?;
        let batch = [(self.sys, bytes.as_slice()), (stream, payload)];
        let seq = if self.log.batch_ranges(&[bytes.len(), payload.len()]).len() == 1 {
            let seqs = self.log.append_batch(&batch)?;
            self.apply_committed(inner, &change)?;
            seqs.get(1)
                .copied()
                .ok_or_else(|| corrupt("a batch of two records returned fewer seqs"))?
        } else {
            self.log.append(self.sys, &bytes)?;
            self.apply_committed(inner, &change)?;
            self.log.append(stream, payload)?
        };
        Ok(seq)
    }

    /// [`Agent::commit`] of two changes in one engine batch: both are durable or neither
    /// is, also across a crash. The second is validated against the state the first leaves.
    pub(crate) fn commit_pair(
        &self,
        inner: &mut Inner,
        first: Change,
        second: Change,
    ) -> Result<()> {
        let first_bytes = self.change_record(inner, &first)?;
        let mut trial = inner.state.clone();
        trial
            .apply(&first)
            .map_err(|e| corrupt(format!("change does not apply: {e}")))?;
        let second_bytes = {
            let after_first = Inner {
                state: trial,
                changes_since_snapshot: 0,
                next_snapshot_id: 0,
                subscribers: Vec::new(),
                counters: Counters::default(),
            };
            self.change_record(&after_first, &second)?
        };
        let lens = [first_bytes.len(), second_bytes.len()];
        if self.log.batch_ranges(&lens).len() == 1 {
            let batch = [
                (self.sys, first_bytes.as_slice()),
                (self.sys, second_bytes.as_slice()),
            ];
            self.log.append_batch(&batch)?;
            // Both applied before a snapshot may be taken (a snapshot written between them
            // would follow both records in the log and lack the second).
            for change in [&first, &second] {
                inner
                    .state
                    .apply(change)
                    .map_err(|e| corrupt(format!("applying a logged change: {e}")))?;
            }
            inner.counters.changes_logged += 1;
            inner.changes_since_snapshot += 1;
            self.apply_committed_counted(inner)
        } else {
            self.commit(inner, first)?;
            self.commit(inner, second)
        }
    }

    /// The encoded record of a validated change (checked to apply on a copy of the state in
    /// debug builds, before anything is written).
    fn change_record(&self, inner: &Inner, change: &Change) -> Result<Vec<u8>> {
        if cfg!(debug_assertions) {
            let mut trial = inner.state.clone();
            if let Err(error) = trial.apply(change) {
                debug_assert!(
                    false,
                    "validated change does not apply: {error}: {change:?}"
                );
                return Err(corrupt(format!("change does not apply: {error}")));
            }
            if let Err(broken) = trial.check_invariants() {
                debug_assert!(false, "{change:?} would break an invariant: {broken}");
                return Err(corrupt(broken));
            }
        }
        let record = SysRecord::Change(change.clone());
        let bytes = record.encode();
        // Paired check: what goes to media must read back as the same change.
        debug_assert_eq!(SysRecord::decode(&bytes).as_ref(), Ok(&record));
        if bytes.len() > self.log.max_payload_bytes() {
            return Err(AgentError::ChangeTooLarge {
                len_bytes: bytes.len(),
                max_bytes: self.log.max_payload_bytes(),
            });
        }
        Ok(bytes)
    }

    /// Applies a change whose record is durable.
    fn apply_committed(&self, inner: &mut Inner, change: &Change) -> Result<()> {
        inner
            .state
            .apply(change)
            .map_err(|e| corrupt(format!("applying a logged change: {e}")))?;
        self.apply_committed_counted(inner)
    }

    /// Counts an applied change and writes a snapshot when one is due.
    fn apply_committed_counted(&self, inner: &mut Inner) -> Result<()> {
        inner.counters.changes_logged += 1;
        inner.changes_since_snapshot += 1;
        if inner.changes_since_snapshot >= self.config.snapshot_every_changes.max(1) {
            // The change is acknowledged already; a failed snapshot is retried next time.
            if let Err(error) = self.write_snapshot(inner) {
                tracing::warn!(%error, "snapshot failed; the change log keeps growing until one succeeds");
            }
        }
        Ok(())
    }

    fn write_snapshot(&self, inner: &mut Inner) -> Result<()> {
        let bytes = inner.state.encode_snapshot();
        let chunk_bytes = self
            .log
            .max_payload_bytes()
            .saturating_sub(SNAPSHOT_PART_OVERHEAD_BYTES)
            .clamp(1, SNAPSHOT_CHUNK_MAX_BYTES);
        let chunks: Vec<&[u8]> = bytes.chunks(chunk_bytes).collect();
        let count =
            u32::try_from(chunks.len()).map_err(|_| corrupt("snapshot has too many parts"))?;
        let snapshot_id = inner.next_snapshot_id;
        let total_crc = crc32fast::hash(&bytes);
        let records: Vec<Vec<u8>> = chunks
            .iter()
            .enumerate()
            .map(|(index, chunk)| {
                SysRecord::SnapshotPart(SnapshotPart {
                    snapshot_id,
                    index: index as u32,
                    count,
                    total_bytes: bytes.len() as u64,
                    total_crc,
                    chunk: chunk.to_vec(),
                })
                .encode()
            })
            .collect();
        debug_assert!(records
            .iter()
            .all(|r| r.len() <= self.log.max_payload_bytes()));
        let batch: Vec<(StreamId, &[u8])> =
            records.iter().map(|r| (self.sys, r.as_slice())).collect();
        // A snapshot may take more than one engine batch holds: it goes in several batches
        // (each atomic). A snapshot cut short by a crash is ignored on replay (its parts are
        // counted), and nothing before it is trimmed until it is whole.
        let lens: Vec<usize> = records.iter().map(Vec::len).collect();
        let mut first_seq = None;
        for range in self.log.batch_ranges(&lens) {
            let seqs = self.log.append_batch(&batch[range])?;
            first_seq = first_seq.or(seqs.first().copied());
        }
        let first_seq = first_seq.ok_or_else(|| corrupt("empty snapshot batch"))?;
        inner.next_snapshot_id += 1;
        inner.changes_since_snapshot = 0;
        inner.counters.snapshots_written += 1;
        // Only now that the whole snapshot is durable may the records before it go.
        self.log.trim(self.sys, first_seq)?;
        Ok(())
    }

    fn replay(&self, report: &mut OpenReport) -> Result<()> {
        let mut state = State::default();
        let mut parts: Vec<SnapshotPart> = Vec::new();
        let mut last_snapshot_id = 0;
        let mut changes_since_snapshot = 0;
        for record in self.log.iter(self.sys, 0)? {
            let record = record?;
            report.sys_records_replayed += 1;
            match SysRecord::decode(record.payload())? {
                SysRecord::Change(change) => {
                    // A snapshot cut short by a crash is simply ignored: the changes
                    // before it are still there (they are trimmed only after it completes).
                    parts.clear();
                    state.apply(&change)?;
                    changes_since_snapshot += 1;
                }
                SysRecord::SnapshotPart(part) => {
                    let continues = parts.last().is_some_and(|last| {
                        last.snapshot_id == part.snapshot_id
                            && last.index + 1 == part.index
                            && last.count == part.count
                    });
                    if part.index == 0 {
                        parts.clear();
                    } else if !continues {
                        parts.clear();
                        continue;
                    }
                    last_snapshot_id = last_snapshot_id.max(part.snapshot_id);
                    let complete = part.index + 1 == part.count;
                    parts.push(part);
                    if complete {
                        state = assemble_snapshot(&parts)?;
                        parts.clear();
                        report.snapshot_loaded = true;
                        changes_since_snapshot = 0;
                    }
                }
            }
        }
        if !state.agent.is_empty() {
            state
                .check_invariants()
                .map_err(|broken| corrupt(format!("after replay: {broken}")))?;
        }
        let mut inner = self.inner.lock();
        inner.state = state;
        inner.next_snapshot_id = last_snapshot_id + 1;
        inner.changes_since_snapshot = changes_since_snapshot;
        Ok(())
    }

    /// Makes the engine agree with the metadata: orphan streams deleted, every referenced
    /// stream present and consistent with its seal, reclaimable prefixes trimmed.
    ///
    /// Nothing is deleted until the metadata proved intact: it replayed without a decode
    /// error (done by `replay`), every engine stream it names is there and agrees with its
    /// seal (checked first, below), and the engine streams it does not name are no more
    /// than one crash can leave ([`ORPHAN_STREAMS_PER_CRASH_MAX`]). Only streams with the
    /// shim's data label are ever deleted; a stream with another label was not written by
    /// the shim and is kept.
    fn reconcile(&self, report: &mut OpenReport) -> Result<()> {
        let inner = self.inner.lock();
        let referenced: HashSet<u64> = inner
            .state
            .bundles
            .values()
            .flat_map(|b| b.streams.values().map(|s| s.engine_id))
            .collect();
        for (key, bundle) in &inner.state.bundles {
            let local = inner.state.is_local(key);
            for (&no, meta) in &bundle.streams {
                let (_, next_seq) = match self.bounds(meta) {
                    Err(AgentError::Engine(EngineError::UnknownStream(_))) => {
                        return Err(corrupt(format!(
                            "{key} stream #{no}: its engine stream is missing"
                        )));
                    }
                    other => other?,
                };
                if let Some(sealed_at) = meta.sealed_at {
                    // A local stream is sealed only after its records are durable; a copy
                    // of a remote one may learn of the seal before its records arrive.
                    if next_seq > sealed_at || (local && next_seq < sealed_at) {
                        return Err(corrupt(format!(
                            "{key} stream #{no} is sealed at {sealed_at} but holds records up to {next_seq}"
                        )));
                    }
                }
            }
        }
        let unreferenced: Vec<StreamInfo> = self
            .log
            .list_streams()
            .into_iter()
            .filter(|info| info.id != self.sys && !referenced.contains(&info.id.0))
            .collect();
        let (orphans, foreign): (Vec<StreamInfo>, Vec<StreamInfo>) = unreferenced
            .into_iter()
            .partition(|info| info.label == DATA_STREAM_LABEL);
        report.foreign_streams_kept = foreign.len() as u64;
        if orphans.len() as u64 > ORPHAN_STREAMS_PER_CRASH_MAX {
            return Err(AgentError::MetadataLost {
                fault: MetadataFault::UnexplainedOrphans {
                    orphan_count: orphans.len() as u64,
                    crash_max: ORPHAN_STREAMS_PER_CRASH_MAX,
                },
                data_stream_count: referenced.len() as u64 + orphans.len() as u64,
            });
        }
        for info in orphans {
            self.log.delete_stream(info.id)?;
            report.orphan_streams_deleted += 1;
        }
        for (key, bundle) in &inner.state.bundles {
            for (&no, meta) in &bundle.streams {
                if self.trim_stream(&inner.state, key, bundle, no, meta)? {
                    report.streams_trimmed += 1;
                }
            }
        }
        Ok(())
    }

    // ----- shared helpers ---------------------------------------------------------------

    /// `(first_seq, next_seq)` of a stream in agent seqs.
    pub(crate) fn bounds(&self, meta: &StreamMeta) -> Result<(u64, u64)> {
        let (first, next) = self.log.bounds(StreamId(meta.engine_id))?;
        match meta.seq_base {
            Some(base) => Ok((first + base, next + base)),
            None => {
                debug_assert_eq!(next, 0, "a stream without base holds no record");
                let at = meta.sealed_at.unwrap_or(0);
                Ok((at, at))
            }
        }
    }

    /// Reads one record (agent seq) as an owned copy.
    pub(crate) fn read_record(&self, meta: &StreamMeta, seq: u64) -> Result<Vec<u8>> {
        let base = meta.seq_base.unwrap_or(0);
        debug_assert!(seq >= base);
        let record = self.log.read(StreamId(meta.engine_id), seq - base)?;
        Ok(record.payload().to_vec())
    }

    /// Trims what no reader can read any more. Returns whether anything was trimmed.
    pub(crate) fn trim_stream(
        &self,
        state: &State,
        key: &BundleRef,
        bundle: &BundleState,
        no: u64,
        meta: &StreamMeta,
    ) -> Result<bool> {
        let Some(base) = meta.seq_base else {
            return Ok(false);
        };
        let (first_seq, next_seq) = self.bounds(meta)?;
        let Some(point) = state.trim_point(key, bundle, no, meta, next_seq) else {
            return Ok(false);
        };
        debug_assert!(point <= next_seq);
        if point <= first_seq {
            return Ok(false);
        }
        self.log.trim(StreamId(meta.engine_id), point - base)?;
        Ok(true)
    }

    /// Trims the given streams of a bundle after an acknowledged change; failures are
    /// logged (the change is durable already; open trims again).
    pub(crate) fn trim_after(&self, inner: &mut Inner, key: &BundleRef, streams: Option<&[u64]>) {
        let Some(bundle) = inner.state.bundles.get(key) else {
            return;
        };
        let mut trimmed = 0;
        for (&no, meta) in &bundle.streams {
            if streams.is_some_and(|list| !list.contains(&no)) {
                continue;
            }
            match self.trim_stream(&inner.state, key, bundle, no, meta) {
                Ok(true) => trimmed += 1,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, bundle = %key, stream = no, "trim failed; open retries it")
                }
            }
        }
        inner.counters.trims += trimmed;
    }
}

/// The typed refusal for metadata missing under data streams.
fn metadata_fault(streams: &[StreamInfo], fault: MetadataFault) -> AgentError {
    AgentError::MetadataLost {
        fault,
        data_stream_count: streams
            .iter()
            .filter(|s| s.label == DATA_STREAM_LABEL)
            .count() as u64,
    }
}

fn assemble_snapshot(parts: &[SnapshotPart]) -> Result<State> {
    let mut bytes = Vec::new();
    for part in parts {
        bytes.extend_from_slice(&part.chunk);
    }
    let last = parts.last().ok_or_else(|| corrupt("empty snapshot"))?;
    if bytes.len() as u64 != last.total_bytes {
        return Err(AgentError::Decode(DecodeError::Inconsistent {
            what: "snapshot",
            detail: format!("{} bytes, header says {}", bytes.len(), last.total_bytes),
        }));
    }
    let computed = crc32fast::hash(&bytes);
    if computed != last.total_crc {
        return Err(AgentError::Decode(DecodeError::BadChecksum {
            stored: last.total_crc,
            computed,
        }));
    }
    Ok(State::decode_snapshot(&bytes)?)
}

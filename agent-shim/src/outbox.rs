//! The outbox to other agents, and the receiving side.
//!
//! Nothing is copied into the outbox: control envelopes (invitations, answers, seals,
//! deletions, metadata) are derived from the change records and queued in the metadata;
//! data is read straight from the streams after a durable *per-peer cursor*, which also
//! holds back the trimming of ephemeral records until the peer acknowledged them. An agent
//! implementation drains a peer's outbox with [`Agent::outbox_fetch`], delivers the
//! envelopes, and on the peer's acknowledgement calls [`Agent::outbox_ack`]. The receiving
//! agent's [`Agent::receive`] stores them durably before it returns, and is idempotent, so
//! redelivery after a crash on either side is safe.

use pmem_emul::Pmem;
use pstream_engine::ColdTier;
use pstream_engine::StreamId;

use std::collections::{BTreeMap, BTreeSet};

use crate::access;
use crate::address::{self, Address};
use crate::agent::{Agent, Inner, DATA_STREAM_LABEL};
use crate::api::{check_label, check_metadata};
use crate::change::{Change, ReaderKey, StreamCreated};
use crate::envelope::{Envelope, StreamDescriptor};
use crate::error::{AgentError, Result};
use crate::model::{BundleRef, Metadata, PageLimit, StreamNo};
use crate::state::{BundleState, State};

/// Envelopes for one peer, to be acknowledged with [`Agent::outbox_ack`] once the peer
/// has stored them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxBatch {
    pub peer: String,
    pub envelopes: Vec<Envelope>,
    control_through: Option<u64>,
    cursors: Vec<(BundleRef, Vec<(u64, u64)>)>,
}

impl OutboxBatch {
    pub fn is_empty(&self) -> bool {
        self.envelopes.is_empty()
    }
}

/// What [`Agent::receive`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiveReport {
    pub envelopes_applied: u64,
    /// Envelopes already applied before (redelivery).
    pub duplicates: u64,
    pub records_stored: u64,
    pub bytes_stored: u64,
}

fn protocol(peer: &str, detail: impl Into<String>) -> AgentError {
    AgentError::Protocol {
        peer: peer.to_owned(),
        detail: detail.into(),
    }
}

impl<P: Pmem, C: ColdTier> Agent<P, C> {
    /// Peer agents with something to send.
    pub fn outbox_peers(&self) -> Vec<String> {
        let inner = self.inner.lock();
        let state = &inner.state;
        let mut peers: Vec<String> = state
            .peers
            .iter()
            .filter(|(_, o)| !o.queue.is_empty())
            .map(|(p, _)| p.clone())
            .collect();
        for (key, bundle) in state.bundles.iter().filter(|(key, _)| state.is_local(key)) {
            for peer in state.accepting_peers_of(bundle) {
                if peers.contains(&peer) {
                    continue;
                }
                let cursor = bundle.cursors.get(&ReaderKey::Peer(peer.clone()));
                let pending =
                    bundle
                        .streams
                        .iter()
                        .filter(|(_, m)| m.policy.shared)
                        .any(|(no, meta)| {
                            let acked = cursor.and_then(|c| c.get(no)).copied().unwrap_or(0);
                            self.bounds(meta).is_ok_and(|(_, next)| next > acked)
                        });
                if pending {
                    tracing::trace!(bundle = %key, %peer, "data pending");
                    peers.push(peer);
                }
            }
        }
        peers.sort();
        peers
    }

    /// The next envelopes for `peer`: queued control envelopes first, then records of
    /// shared streams of bundles a recipient there accepted, after the peer's cursor.
    pub fn outbox_fetch(&self, peer: &str, limit: PageLimit) -> Result<OutboxBatch> {
        address::check_agent_name(peer)?;
        let inner = self.inner.lock();
        let state = &inner.state;
        let records_max = limit.records_max.max(1);
        let mut batch = OutboxBatch {
            peer: peer.to_owned(),
            envelopes: Vec::new(),
            control_through: None,
            cursors: Vec::new(),
        };
        if let Some(outbox) = state.peers.get(peer) {
            for (id, envelope) in outbox.queue.iter().take(records_max) {
                batch.envelopes.push(envelope.clone());
                batch.control_through = Some(*id);
            }
        }
        let mut bytes = 0usize;
        'bundles: for (key, bundle) in state.bundles.iter().filter(|(key, _)| state.is_local(key)) {
            if !state.accepting_peers_of(bundle).contains(peer) {
                continue;
            }
            let cursor = bundle.cursors.get(&ReaderKey::Peer(peer.to_owned()));
            let mut advanced = Vec::new();
            for (&no, meta) in bundle.streams.iter().filter(|(_, m)| m.policy.shared) {
                let (first_seq, next_seq) = self.bounds(meta)?;
                let mut seq = cursor
                    .and_then(|c| c.get(&no))
                    .copied()
                    .unwrap_or(0)
                    .max(first_seq);
                let start = seq;
                let mut full = false;
                while seq < next_seq {
                    if batch.envelopes.len() >= records_max {
                        full = true;
                        break;
                    }
                    let payload = self.read_record(meta, seq)?;
                    if !batch.envelopes.is_empty() && bytes + payload.len() > limit.bytes_max {
                        full = true;
                        break;
                    }
                    bytes += payload.len();
                    batch.envelopes.push(Envelope::Data {
                        bundle: key.clone(),
                        stream: StreamNo(no),
                        descriptor: meta.descriptor(),
                        seq,
                        payload,
                    });
                    seq += 1;
                }
                if seq > start {
                    advanced.push((no, seq));
                }
                if full {
                    if !advanced.is_empty() {
                        batch.cursors.push((key.clone(), advanced));
                    }
                    break 'bundles;
                }
            }
            if !advanced.is_empty() {
                batch.cursors.push((key.clone(), advanced));
            }
        }
        Ok(batch)
    }

    /// Records that the peer stored `batch`: its control envelopes leave the queue and the
    /// peer's cursors advance, durably; ephemeral records everybody took are reclaimed.
    pub fn outbox_ack(&self, batch: &OutboxBatch) -> Result<()> {
        address::check_agent_name(&batch.peer)?;
        let mut inner = self.inner.lock();
        let state = &inner.state;
        let peer = batch.peer.as_str();
        if let Some(through) = batch.control_through {
            let outbox = state
                .peers
                .get(peer)
                .ok_or_else(|| AgentError::UnknownPeer {
                    peer: peer.to_owned(),
                })?;
            if through >= outbox.next_id {
                return Err(protocol(
                    peer,
                    format!("acknowledges control envelope {through}, never queued"),
                ));
            }
        }
        let control_progress = batch.control_through.is_some_and(|t| {
            state
                .peers
                .get(peer)
                .and_then(|o| o.queue.front())
                .is_some_and(|(id, _)| *id <= t)
        });
        let mut cursors = Vec::new();
        for (key, entries) in &batch.cursors {
            let Some(bundle) = state.bundles.get(key) else {
                continue;
            };
            let current = bundle.cursors.get(&ReaderKey::Peer(peer.to_owned()));
            let mut kept = Vec::new();
            for &(no, next_seq) in entries {
                let Some(meta) = bundle.streams.get(&no) else {
                    continue; // deleted since the fetch
                };
                let (_, tail) = self.bounds(meta)?;
                if next_seq > tail {
                    return Err(AgentError::AckBeyondTail {
                        bundle: key.to_string(),
                        stream: no,
                        requested: next_seq,
                        next_seq: tail,
                    });
                }
                if next_seq > current.and_then(|c| c.get(&no)).copied().unwrap_or(0) {
                    kept.push((no, next_seq));
                }
            }
            if !kept.is_empty() {
                cursors.push((key.clone(), kept));
            }
        }
        if !control_progress && cursors.is_empty() {
            return Ok(());
        }
        let touched: Vec<(BundleRef, Vec<u64>)> = cursors
            .iter()
            .map(|(key, entries)| (key.clone(), entries.iter().map(|e| e.0).collect()))
            .collect();
        let control_through = if control_progress {
            batch.control_through
        } else {
            None
        };
        self.commit(
            &mut inner,
            Change::OutboxAcked {
                peer: peer.to_owned(),
                control_through,
                cursors,
            },
        )?;
        inner.counters.envelopes_sent += batch.envelopes.len() as u64;
        for (key, streams) in touched {
            self.trim_after(&mut inner, &key, Some(&streams));
        }
        Ok(())
    }

    /// Stores envelopes from the peer agent `from_peer`, durably, in order. Idempotent:
    /// envelopes applied before are skipped. The whole batch is checked before any of it is
    /// applied: against the access table (a peer speaks only for its own users and
    /// bundles, see `access`) and against the state it will meet (each envelope as the
    /// earlier ones of the batch leave it: a known mirror, no gap, nothing after a seal, a
    /// stream's descriptor unchanged). A refused batch changes nothing. An engine failure
    /// while applying (pool full, media error) leaves a durable prefix of the batch applied;
    /// the sender's retry skips it as duplicates.
    pub fn receive(&self, from_peer: &str, envelopes: &[Envelope]) -> Result<ReceiveReport> {
        address::check_agent_name(from_peer)?;
        let mut inner = self.inner.lock();
        if from_peer == inner.state.agent {
            return Err(protocol(from_peer, "an agent does not send to itself"));
        }
        for envelope in envelopes {
            access::check_envelope(&inner.state, from_peer, envelope)?;
            self.check_limits(envelope)?;
        }
        self.plan_receive(&inner.state, from_peer, envelopes)?;
        let mut report = ReceiveReport::default();
        for envelope in envelopes {
            let applied = self.receive_one(&mut inner, from_peer, envelope, &mut report)?;
            if applied {
                report.envelopes_applied += 1;
            } else {
                report.duplicates += 1;
            }
        }
        inner.counters.envelopes_received += envelopes.len() as u64;
        Ok(report)
    }

    /// Limits of one envelope's contents (the same as for local calls).
    fn check_limits(&self, envelope: &Envelope) -> Result<()> {
        match envelope {
            Envelope::Invite { metadata, .. } | Envelope::Metadata { metadata, .. } => {
                check_metadata(metadata)
            }
            Envelope::Data {
                descriptor,
                payload,
                ..
            } => {
                check_label(&descriptor.label)?;
                let max_bytes = self.log.max_payload_bytes();
                if payload.len() > max_bytes {
                    return Err(AgentError::PayloadTooLarge {
                        len_bytes: payload.len(),
                        max_bytes,
                    });
                }
                Ok(())
            }
            Envelope::Sealed { descriptor, .. } => check_label(&descriptor.label),
            _ => Ok(()),
        }
    }

    /// Walks a batch against a shadow of the mirrors it touches, as each envelope leaves
    /// them, and refuses it whole if any envelope would be refused where it stands.
    /// `receive_one` then meets exactly the states checked here.
    fn plan_receive(&self, state: &State, peer: &str, envelopes: &[Envelope]) -> Result<()> {
        let mut shadow: BTreeMap<BundleRef, Option<ShadowBundle>> = BTreeMap::new();
        for (index, envelope) in envelopes.iter().enumerate() {
            let refuse = |detail: String| protocol(peer, format!("envelope {index}: {detail}"));
            let key = envelope.bundle();
            if !shadow.contains_key(key) {
                let seen = match state.bundles.get(key) {
                    Some(bundle) => Some(self.shadow_of(bundle)?),
                    None => None,
                };
                shadow.insert(key.clone(), seen);
            }
            let Some(mirror) = shadow.get_mut(key) else {
                continue; // inserted just above
            };
            match envelope {
                Envelope::Invite { .. } => {
                    mirror.get_or_insert_with(ShadowBundle::default);
                }
                Envelope::Response { .. } => {
                    if mirror.is_none() {
                        return Err(refuse(format!("answer about unknown bundle {key}")));
                    }
                }
                Envelope::Metadata { .. } | Envelope::RecipientRemoved { .. } => {}
                Envelope::StreamDeleted { stream, .. } => {
                    if let Some(mirror) = mirror {
                        mirror.streams.remove(&stream.0);
                        mirror.deleted.insert(stream.0);
                    }
                }
                Envelope::Data {
                    stream,
                    descriptor,
                    seq,
                    ..
                } => {
                    let Some(copy) =
                        stream_copy(mirror, key, *stream, descriptor).map_err(refuse)?
                    else {
                        continue; // late or replayed: a duplicate
                    };
                    if copy.sealed_at.is_some_and(|count| *seq >= count) {
                        return Err(refuse(format!(
                            "{key} {stream}: record {seq} after the seal"
                        )));
                    }
                    match copy.next_seq {
                        Some(next) if *seq > next => {
                            return Err(refuse(format!(
                                "{key} {stream}: record {seq} leaves a gap after {next}"
                            )));
                        }
                        Some(next) if *seq < next => {} // a duplicate
                        _ => copy.next_seq = Some(seq + 1),
                    }
                }
                Envelope::Sealed {
                    stream,
                    descriptor,
                    record_count,
                    ..
                } => {
                    let Some(copy) =
                        stream_copy(mirror, key, *stream, descriptor).map_err(refuse)?
                    else {
                        continue; // late or replayed: a duplicate
                    };
                    match copy.sealed_at {
                        Some(count) if count != *record_count => {
                            return Err(refuse(format!(
                                "{key} {stream}: sealed at {count}, now at {record_count}"
                            )));
                        }
                        Some(_) => {} // a duplicate
                        None => {
                            let held = copy.next_seq.unwrap_or(0);
                            if held > *record_count {
                                return Err(refuse(format!(
                                    "{key} {stream}: sealed at {record_count}, holds {held}"
                                )));
                            }
                            copy.sealed_at = Some(*record_count);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn shadow_of(&self, bundle: &BundleState) -> Result<ShadowBundle> {
        let mut streams = BTreeMap::new();
        for (&no, meta) in &bundle.streams {
            let next_seq = match meta.seq_base {
                Some(_) => Some(self.bounds(meta)?.1),
                None => None,
            };
            streams.insert(
                no,
                ShadowStream {
                    descriptor: meta.descriptor(),
                    sealed_at: meta.sealed_at,
                    next_seq,
                },
            );
        }
        Ok(ShadowBundle {
            streams,
            deleted: bundle.deleted_streams.clone(),
        })
    }

    /// Applies one envelope; `false` when it was applied before.
    fn receive_one(
        &self,
        inner: &mut Inner,
        peer: &str,
        envelope: &Envelope,
        report: &mut ReceiveReport,
    ) -> Result<bool> {
        match envelope {
            Envelope::Invite {
                bundle,
                recipient,
                metadata,
            } => self.receive_invite(inner, bundle, recipient, metadata),
            Envelope::Response {
                bundle,
                recipient,
                accepted,
            } => {
                let Some(state) = inner.state.bundles.get(bundle) else {
                    return Err(protocol(
                        peer,
                        format!("answer about unknown bundle {bundle}"),
                    ));
                };
                let Some(entry) = state.recipients.iter().find(|r| r.address == *recipient) else {
                    return Ok(false); // no longer a recipient
                };
                let status = if *accepted {
                    crate::RecipientStatus::Accepted
                } else {
                    crate::RecipientStatus::Rejected
                };
                if entry.status == status {
                    return Ok(false);
                }
                let change = Change::Responded {
                    bundle: bundle.clone(),
                    recipient: recipient.clone(),
                    accepted: *accepted,
                };
                self.commit(inner, change)?;
                self.trim_after(inner, bundle, None);
                Ok(true)
            }
            Envelope::Metadata { bundle, metadata } => {
                let Some(state) = inner.state.bundles.get(bundle) else {
                    return Ok(false);
                };
                if state.metadata == *metadata {
                    return Ok(false);
                }
                self.commit(
                    inner,
                    Change::MetadataSet {
                        bundle: bundle.clone(),
                        metadata: metadata.clone(),
                    },
                )?;
                Ok(true)
            }
            Envelope::RecipientRemoved { bundle, recipient } => {
                let present = inner
                    .state
                    .bundles
                    .get(bundle)
                    .is_some_and(|b| b.recipients.iter().any(|r| r.address == *recipient));
                if !present {
                    return Ok(false);
                }
                let change = Change::MirrorRecipientRemoved {
                    bundle: bundle.clone(),
                    recipient: recipient.clone(),
                };
                self.commit(inner, change)?;
                self.trim_after(inner, bundle, None);
                Ok(true)
            }
            Envelope::Data {
                bundle,
                stream,
                descriptor,
                seq,
                payload,
            } => {
                let stored =
                    self.receive_data(inner, peer, bundle, *stream, descriptor, *seq, payload)?;
                if stored {
                    report.records_stored += 1;
                    report.bytes_stored += payload.len() as u64;
                }
                Ok(stored)
            }
            Envelope::Sealed {
                bundle,
                stream,
                descriptor,
                record_count,
            } => self.receive_sealed(inner, peer, bundle, *stream, descriptor, *record_count),
            Envelope::StreamDeleted { bundle, stream } => {
                let Some(mirror) = inner.state.bundles.get(bundle) else {
                    return Ok(false);
                };
                let engine_id = mirror.streams.get(&stream.0).map(|m| m.engine_id);
                if engine_id.is_none() && mirror.deleted_streams.contains(&stream.0) {
                    return Ok(false); // told before
                }
                // Recorded even for a stream this agent holds no copy of yet (as
                // `plan_receive` assumes): its late records are then ignored, never a new
                // copy of a deleted stream.
                self.commit(
                    inner,
                    Change::StreamDeleted {
                        bundle: bundle.clone(),
                        stream: stream.0,
                    },
                )?;
                if let Some(engine_id) = engine_id {
                    if let Err(error) = self.log.delete_stream(StreamId(engine_id)) {
                        tracing::warn!(%error, "cannot delete a mirrored stream; open removes it");
                    }
                }
                Ok(true)
            }
        }
    }

    fn receive_invite(
        &self,
        inner: &mut Inner,
        bundle: &BundleRef,
        recipient: &Address,
        metadata: &Metadata,
    ) -> Result<bool> {
        // The user is named once per bundle: an invitation for a user already there (under
        // this or another client qualification) is a duplicate. (An owner that readdresses
        // a recipient sends the removal first.)
        let known = inner
            .state
            .bundles
            .get(bundle)
            .is_some_and(|b| access::recipient_entry(b, &recipient.user_address()).is_some());
        if known {
            return Ok(false);
        }
        let change = Change::MirrorInvited {
            bundle: bundle.clone(),
            recipient: recipient.clone(),
            metadata: metadata.clone(),
        };
        if inner.state.users.contains_key(recipient.user()) {
            self.commit(inner, change)?;
            self.notify_invitations(inner, bundle, std::slice::from_ref(recipient));
        } else {
            // Nobody here by that name: answer no (in the same batch: a crash leaves both
            // or neither), so the owner stops holding data for it.
            let answer = Change::Responded {
                bundle: bundle.clone(),
                recipient: recipient.clone(),
                accepted: false,
            };
            self.commit_pair(inner, change, answer)?;
        }
        Ok(true)
    }

    #[allow(clippy::too_many_arguments)]
    fn receive_data(
        &self,
        inner: &mut Inner,
        peer: &str,
        bundle: &BundleRef,
        stream: StreamNo,
        descriptor: &StreamDescriptor,
        seq: u64,
        payload: &[u8],
    ) -> Result<bool> {
        let Some(state) = inner.state.bundles.get(bundle) else {
            return Err(protocol(
                peer,
                format!("data for {bundle}, which was never shared with this agent"),
            ));
        };
        if state.deleted_streams.contains(&stream.0) {
            return Ok(false);
        }
        let Some(meta) = state.streams.get(&stream.0) else {
            // First record of a stream: the engine stream and its record come first, the
            // change record naming them last (a crash before it leaves an orphan).
            let engine_id = self.log.create_stream(DATA_STREAM_LABEL)?;
            let stored = self
                .log
                .append(engine_id, payload)
                .map_err(AgentError::from)
                .and_then(|engine_seq| {
                    debug_assert_eq!(engine_seq, 0);
                    let created =
                        mirror_stream(bundle, stream, engine_id, descriptor, None, Some(seq));
                    self.commit(inner, Change::StreamCreated(created))
                });
            if let Err(error) = stored {
                if let Err(delete_error) = self.log.delete_stream(engine_id) {
                    tracing::warn!(%delete_error, "cannot delete an unrecorded engine stream; open removes it");
                }
                return Err(error);
            }
            self.after_mirror_append(inner, bundle, stream, seq);
            return Ok(true);
        };
        if meta
            .sealed_at
            .is_some_and(|record_count| seq >= record_count)
        {
            return Err(protocol(
                peer,
                format!("{bundle} {stream}: record {seq} after the seal"),
            ));
        }
        let engine_id = StreamId(meta.engine_id);
        let (_, next_seq) = self.bounds(meta)?;
        if meta.seq_base.is_none() {
            // The copy's first record and where it starts, in one atomic batch: a crash
            // leaves both or neither.
            let rebased = Change::StreamRebased {
                bundle: bundle.clone(),
                stream: stream.0,
                seq_base: seq,
            };
            self.commit_with_record(inner, rebased, engine_id, payload)?;
            self.after_mirror_append(inner, bundle, stream, seq);
            return Ok(true);
        } else if seq < next_seq {
            return Ok(false);
        } else if seq > next_seq {
            return Err(protocol(
                peer,
                format!("{bundle} {stream}: record {seq} leaves a gap after {next_seq}"),
            ));
        }
        self.log.append(engine_id, payload)?;
        self.after_mirror_append(inner, bundle, stream, seq);
        Ok(true)
    }

    fn after_mirror_append(
        &self,
        inner: &mut Inner,
        bundle: &BundleRef,
        stream: StreamNo,
        seq: u64,
    ) {
        inner.counters.records_appended += 1;
        self.notify_data(inner, bundle, stream, seq..seq + 1);
        self.trim_after(inner, bundle, Some(&[stream.0]));
    }

    fn receive_sealed(
        &self,
        inner: &mut Inner,
        peer: &str,
        bundle: &BundleRef,
        stream: StreamNo,
        descriptor: &StreamDescriptor,
        record_count: u64,
    ) -> Result<bool> {
        let Some(state) = inner.state.bundles.get(bundle) else {
            return Err(protocol(
                peer,
                format!("seal for {bundle}, which was never shared with this agent"),
            ));
        };
        if state.deleted_streams.contains(&stream.0) {
            return Ok(false);
        }
        match state.streams.get(&stream.0) {
            None => {
                let engine_id = self.log.create_stream(DATA_STREAM_LABEL)?;
                let created = mirror_stream(
                    bundle,
                    stream,
                    engine_id,
                    descriptor,
                    Some(record_count),
                    None,
                );
                if let Err(error) = self.commit(inner, Change::StreamCreated(created)) {
                    if let Err(delete_error) = self.log.delete_stream(engine_id) {
                        tracing::warn!(%delete_error, "cannot delete an unrecorded engine stream; open removes it");
                    }
                    return Err(error);
                }
            }
            Some(meta) if meta.sealed_at.is_none() => {
                let (_, next_seq) = self.bounds(meta)?;
                if next_seq > record_count {
                    return Err(protocol(
                        peer,
                        format!("{bundle} {stream}: sealed at {record_count}, holds {next_seq}"),
                    ));
                }
                self.commit(
                    inner,
                    Change::StreamSealed {
                        bundle: bundle.clone(),
                        stream: stream.0,
                        record_count,
                    },
                )?;
            }
            Some(_) => return Ok(false),
        }
        self.notify_sealed(inner, bundle, stream, record_count);
        Ok(true)
    }
}

/// A mirror as the envelopes of a batch being planned leave it.
#[derive(Debug, Default)]
struct ShadowBundle {
    streams: BTreeMap<u64, ShadowStream>,
    deleted: BTreeSet<u64>,
}

/// The copy of a stream a data or seal envelope meets (made from `descriptor` if the mirror
/// has none yet): refused for a bundle never shared with this agent or a descriptor that
/// changed; `None` for a stream the owner deleted (the envelope is a duplicate).
fn stream_copy<'m>(
    mirror: &'m mut Option<ShadowBundle>,
    key: &BundleRef,
    stream: StreamNo,
    descriptor: &StreamDescriptor,
) -> std::result::Result<Option<&'m mut ShadowStream>, String> {
    let Some(mirror) = mirror else {
        return Err(format!("{key} was never shared with this agent"));
    };
    if mirror.deleted.contains(&stream.0) {
        return Ok(None);
    }
    let copy = mirror
        .streams
        .entry(stream.0)
        .or_insert_with(|| ShadowStream {
            descriptor: descriptor.clone(),
            sealed_at: None,
            next_seq: None,
        });
    if copy.descriptor != *descriptor {
        return Err(format!("{key} {stream}: its descriptor changed"));
    }
    Ok(Some(copy))
}

#[derive(Debug)]
struct ShadowStream {
    descriptor: StreamDescriptor,
    sealed_at: Option<u64>,
    /// `None` until the copy holds a record (it starts wherever its first record is).
    next_seq: Option<u64>,
}

fn mirror_stream(
    bundle: &BundleRef,
    stream: StreamNo,
    engine_id: StreamId,
    descriptor: &StreamDescriptor,
    sealed_at: Option<u64>,
    seq_base: Option<u64>,
) -> StreamCreated {
    StreamCreated {
        bundle: bundle.clone(),
        stream: stream.0,
        engine_id: engine_id.0,
        creator: descriptor.creator.user_address(),
        kind: descriptor.kind,
        policy: descriptor.policy,
        label: descriptor.label.clone(),
        sealed_at,
        seq_base,
    }
}

//! The metadata state, the meaning of each [`Change`] (`apply`), the reclamation rule, and
//! the snapshot encoding (who may do what is in `access`).
//!
//! `apply` is the only code that mutates the state, both on the live path (after the
//! change record is durable) and on replay, so recovery rebuilds exactly what was
//! acknowledged. It is deterministic, and it also derives the outbox's control envelopes,
//! so the outbox needs no records of its own.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::address::{Address, NamePart};
use crate::change::{self, Change, ReaderKey, StreamCreated};
use crate::codec::{DecodeError, Reader, Writer};
use crate::envelope::{Envelope, StreamDescriptor};
use crate::model::{
    BundleRef, Metadata, RecipientStatus, Retention, StreamDefaults, StreamKind, StreamNo,
    StreamPolicy, RECIPIENTS_MAX,
};
use crate::wire;

/// Snapshot encoding version. 2 added each bundle's deleted mirror streams; version 1
/// snapshots still decode (with none).
pub const SNAPSHOT_VERSION: u8 = 2;
const SNAPSHOT_VERSION_MIN: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct State {
    pub agent: String,
    pub users: BTreeMap<String, UserState>,
    pub bundles: BTreeMap<BundleRef, BundleState>,
    pub peers: BTreeMap<String, PeerOutbox>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct UserState {
    /// Registered clients and the bundles each was granted.
    pub clients: BTreeMap<String, BTreeSet<BundleRef>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct BundleState {
    pub metadata: Metadata,
    pub defaults: StreamDefaults,
    pub recipients: Vec<Recipient>,
    pub streams: BTreeMap<u64, StreamMeta>,
    pub next_stream_no: u64,
    /// Per reader, per stream: the next seq the reader has not acknowledged.
    pub cursors: BTreeMap<ReaderKey, BTreeMap<u64, u64>>,
    /// Streams of a mirror (a bundle owned on another agent) deleted there: a late or
    /// replayed envelope for one is a duplicate, never a new stream (whose readers would
    /// be served again what they took). Local bundles never reuse a stream number anyway.
    pub deleted_streams: BTreeSet<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recipient {
    pub address: Address,
    pub status: RecipientStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamMeta {
    pub engine_id: u64,
    pub creator: Address,
    pub kind: StreamKind,
    pub policy: StreamPolicy,
    pub label: Vec<u8>,
    pub sealed_at: Option<u64>,
    /// Agent seq of engine seq 0. Local streams: 0. A copy of a remote stream starts
    /// wherever its first received record is; `None` until then.
    pub seq_base: Option<u64>,
}

impl StreamMeta {
    pub fn descriptor(&self) -> StreamDescriptor {
        StreamDescriptor {
            creator: self.creator.clone(),
            kind: self.kind,
            policy: self.policy,
            label: self.label.clone(),
        }
    }
}

/// Control envelopes queued for one peer agent, with ids in queue order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct PeerOutbox {
    pub next_id: u64,
    pub queue: VecDeque<(u64, Envelope)>,
}

fn inconsistent(what: &'static str, detail: impl Into<String>) -> DecodeError {
    DecodeError::Inconsistent {
        what,
        detail: detail.into(),
    }
}

impl State {
    pub fn is_local(&self, bundle: &BundleRef) -> bool {
        bundle.owner().agent() == self.agent
    }

    pub fn is_local_address(&self, address: &Address) -> bool {
        address.agent() == self.agent
    }

    pub fn address_of(&self, user: &str) -> Address {
        Address::of_checked_user(user, &self.agent)
    }

    fn bundle_mut(&mut self, bundle: &BundleRef) -> Result<&mut BundleState, DecodeError> {
        self.bundles
            .get_mut(bundle)
            .ok_or_else(|| inconsistent("change", format!("unknown bundle {bundle}")))
    }

    fn enqueue(&mut self, peer: &str, envelope: Envelope) {
        debug_assert_ne!(peer, self.agent, "the outbox is for other agents");
        let outbox = self.peers.entry(peer.to_owned()).or_default();
        let id = outbox.next_id;
        outbox.next_id += 1;
        outbox.queue.push_back((id, envelope));
    }

    /// Peer agents holding recipients of a bundle that did not reject it.
    pub fn peers_of(&self, bundle: &BundleState) -> BTreeSet<String> {
        bundle
            .recipients
            .iter()
            .filter(|r| !self.is_local_address(&r.address) && r.status != RecipientStatus::Rejected)
            .map(|r| r.address.agent().to_owned())
            .collect()
    }

    /// Peer agents with at least one recipient that accepted: they get data.
    pub fn accepting_peers_of(&self, bundle: &BundleState) -> BTreeSet<String> {
        bundle
            .recipients
            .iter()
            .filter(|r| !self.is_local_address(&r.address) && r.status == RecipientStatus::Accepted)
            .map(|r| r.address.agent().to_owned())
            .collect()
    }

    fn enqueue_to_peers(
        &mut self,
        bundle: &BundleRef,
        envelope: impl Fn() -> Envelope,
    ) -> Result<(), DecodeError> {
        if !self.is_local(bundle) {
            return Ok(());
        }
        let state = self
            .bundles
            .get(bundle)
            .ok_or_else(|| inconsistent("change", format!("unknown {bundle}")))?;
        for peer in self.peers_of(state) {
            self.enqueue(&peer, envelope());
        }
        Ok(())
    }

    /// Applies one change. An error means the change does not fit the state: on replay the
    /// store is corrupt; on the live path it is a bug (validation comes first).
    pub fn apply(&mut self, change: &Change) -> Result<(), DecodeError> {
        match change {
            Change::Init { agent } => {
                if !self.agent.is_empty() {
                    return Err(inconsistent("init", "the store was initialized twice"));
                }
                self.agent.clone_from(agent);
            }
            Change::UserAdded { user } => {
                if self
                    .users
                    .insert(user.clone(), UserState::default())
                    .is_some()
                {
                    return Err(inconsistent("user", format!("{user} added twice")));
                }
            }
            Change::ClientRegistered { user, client } => {
                let state = self
                    .users
                    .get_mut(user)
                    .ok_or_else(|| inconsistent("client", user.clone()))?;
                if state
                    .clients
                    .insert(client.clone(), BTreeSet::new())
                    .is_some()
                {
                    return Err(inconsistent(
                        "client",
                        format!("{client}:{user} registered twice"),
                    ));
                }
            }
            Change::Granted {
                user,
                client,
                bundle,
            } => {
                self.grants_mut(user, client)?.insert(bundle.clone());
            }
            Change::Revoked {
                user,
                client,
                bundle,
            } => {
                self.grants_mut(user, client)?.remove(bundle);
            }
            Change::BundleCreated {
                bundle,
                metadata,
                defaults,
                client,
            } => {
                if self.bundles.contains_key(bundle) || !self.is_local(bundle) {
                    return Err(inconsistent(
                        "bundle",
                        format!("{bundle} created twice or not local"),
                    ));
                }
                let state = BundleState {
                    metadata: metadata.clone(),
                    defaults: defaults.clone(),
                    ..Default::default()
                };
                self.bundles.insert(bundle.clone(), state);
                if let Some(client) = client {
                    self.grants_mut(bundle.owner().user(), client)?
                        .insert(bundle.clone());
                }
            }
            Change::MetadataSet { bundle, metadata } => {
                self.bundle_mut(bundle)?.metadata = metadata.clone();
                let metadata = metadata.clone();
                self.enqueue_to_peers(bundle, || Envelope::Metadata {
                    bundle: bundle.clone(),
                    metadata: metadata.clone(),
                })?;
            }
            Change::DefaultsSet { bundle, defaults } => {
                self.bundle_mut(bundle)?.defaults = defaults.clone();
            }
            Change::RecipientsSet { bundle, recipients } => {
                self.apply_recipients(bundle, recipients)?
            }
            Change::Responded {
                bundle,
                recipient,
                accepted,
            } => self.apply_response(bundle, recipient, *accepted)?,
            Change::StreamCreated(created) => self.apply_stream_created(created)?,
            Change::StreamSealed {
                bundle,
                stream,
                record_count,
            } => {
                let state = self.bundle_mut(bundle)?;
                let meta = state
                    .streams
                    .get_mut(stream)
                    .ok_or_else(|| inconsistent("seal", format!("#{stream}")))?;
                if meta.sealed_at.is_some() {
                    return Err(inconsistent(
                        "seal",
                        format!("{bundle} #{stream} sealed twice"),
                    ));
                }
                meta.sealed_at = Some(*record_count);
                if meta.policy.shared {
                    let descriptor = meta.descriptor();
                    let record_count = *record_count;
                    self.enqueue_to_peers(bundle, || Envelope::Sealed {
                        bundle: bundle.clone(),
                        stream: StreamNo(*stream),
                        descriptor: descriptor.clone(),
                        record_count,
                    })?;
                }
            }
            Change::StreamDeleted { bundle, stream } => {
                let mirror = !self.is_local(bundle);
                let state = self.bundle_mut(bundle)?;
                if mirror {
                    state.deleted_streams.insert(*stream);
                    if !state.streams.contains_key(stream) {
                        // A mirror learns of a deletion before (or without) any record of
                        // the stream: it remembers it, so late records are ignored.
                        return Ok(());
                    }
                }
                let meta = state
                    .streams
                    .remove(stream)
                    .ok_or_else(|| inconsistent("delete", format!("#{stream}")))?;
                for cursor in state.cursors.values_mut() {
                    cursor.remove(stream);
                }
                if meta.policy.shared {
                    self.enqueue_to_peers(bundle, || Envelope::StreamDeleted {
                        bundle: bundle.clone(),
                        stream: StreamNo(*stream),
                    })?;
                }
            }
            Change::StreamRebased {
                bundle,
                stream,
                seq_base,
            } => {
                let state = self.bundle_mut(bundle)?;
                let meta = state
                    .streams
                    .get_mut(stream)
                    .ok_or_else(|| inconsistent("rebase", format!("#{stream}")))?;
                if meta.seq_base.is_some() {
                    return Err(inconsistent(
                        "rebase",
                        format!("{bundle} #{stream} rebased twice"),
                    ));
                }
                meta.seq_base = Some(*seq_base);
            }
            Change::CursorSet {
                bundle,
                reader,
                entries,
            } => {
                let state = self.bundle_mut(bundle)?;
                for &(stream, _) in entries {
                    if !state.streams.contains_key(&stream) {
                        return Err(inconsistent(
                            "cursor",
                            format!("{bundle} has no stream #{stream}"),
                        ));
                    }
                }
                let cursor = state.cursors.entry(reader.clone()).or_default();
                for &(stream, next_seq) in entries {
                    let slot = cursor.entry(stream).or_insert(0);
                    *slot = (*slot).max(next_seq);
                }
            }
            Change::MirrorInvited {
                bundle,
                recipient,
                metadata,
            } => {
                if self.is_local(bundle) {
                    return Err(inconsistent("mirror", format!("{bundle} is local")));
                }
                let state = self.bundles.entry(bundle.clone()).or_default();
                state.metadata = metadata.clone();
                if !state.recipients.iter().any(|r| r.address == *recipient) {
                    state.recipients.push(Recipient {
                        address: recipient.clone(),
                        status: RecipientStatus::Pending,
                    });
                }
            }
            Change::MirrorRecipientRemoved { bundle, recipient } => {
                let state = self.bundle_mut(bundle)?;
                // The user's cursor stays: what it took stays taken if it is invited again.
                state.recipients.retain(|r| r.address != *recipient);
            }
            Change::OutboxAcked {
                peer,
                control_through,
                cursors,
            } => {
                if let Some(through) = control_through {
                    let outbox = self
                        .peers
                        .get_mut(peer)
                        .ok_or_else(|| inconsistent("outbox", peer.clone()))?;
                    while outbox.queue.front().is_some_and(|(id, _)| id <= through) {
                        outbox.queue.pop_front();
                    }
                }
                for (bundle, entries) in cursors {
                    let change = Change::CursorSet {
                        bundle: bundle.clone(),
                        reader: ReaderKey::Peer(peer.clone()),
                        entries: entries.clone(),
                    };
                    self.apply(&change)?;
                }
            }
        }
        Ok(())
    }

    fn grants_mut(
        &mut self,
        user: &str,
        client: &str,
    ) -> Result<&mut BTreeSet<BundleRef>, DecodeError> {
        self.users
            .get_mut(user)
            .and_then(|u| u.clients.get_mut(client))
            .ok_or_else(|| inconsistent("grant", format!("no client {client}:{user}")))
    }

    fn apply_recipients(
        &mut self,
        bundle: &BundleRef,
        recipients: &[Address],
    ) -> Result<(), DecodeError> {
        let agent = self.agent.clone();
        let state = self.bundle_mut(bundle)?;
        let old = std::mem::take(&mut state.recipients);
        let mut invites = Vec::new();
        for address in recipients {
            let status = match old.iter().find(|r| r.address == *address) {
                Some(existing) => existing.status,
                None => {
                    if address.agent() != agent {
                        invites.push(address.clone());
                    }
                    RecipientStatus::Pending
                }
            };
            state.recipients.push(Recipient {
                address: address.clone(),
                status,
            });
        }
        let removed: Vec<Address> = old
            .into_iter()
            .map(|r| r.address)
            .filter(|a| !recipients.contains(a))
            .collect();
        let agents_left: BTreeSet<&str> = recipients.iter().map(Address::agent).collect();
        // A user's cursor stays when the user is removed: what it took (ephemeral, read
        // once) stays taken if it is added back. It holds nothing back (only recipients'
        // cursors bound the trim point). A peer's cursor goes with its last recipient.
        state.cursors.retain(|reader, _| match reader {
            ReaderKey::User(_) => true,
            ReaderKey::Peer(peer) => agents_left.contains(peer.as_str()),
        });
        let metadata = state.metadata.clone();
        for address in removed.into_iter().filter(|a| a.agent() != agent) {
            let peer = address.agent().to_owned();
            self.enqueue(
                &peer,
                Envelope::RecipientRemoved {
                    bundle: bundle.clone(),
                    recipient: address,
                },
            );
        }
        for address in invites {
            let peer = address.agent().to_owned();
            let invite = Envelope::Invite {
                bundle: bundle.clone(),
                recipient: address,
                metadata: metadata.clone(),
            };
            self.enqueue(&peer, invite);
        }
        Ok(())
    }

    fn apply_response(
        &mut self,
        bundle: &BundleRef,
        recipient: &Address,
        accepted: bool,
    ) -> Result<(), DecodeError> {
        let local_bundle = self.is_local(bundle);
        let local_recipient = self.is_local_address(recipient);
        let state = self.bundle_mut(bundle)?;
        let entry = state
            .recipients
            .iter_mut()
            .find(|r| r.address == *recipient)
            .ok_or_else(|| {
                inconsistent(
                    "response",
                    format!("{recipient} is no recipient of {bundle}"),
                )
            })?;
        entry.status = if accepted {
            RecipientStatus::Accepted
        } else {
            RecipientStatus::Rejected
        };
        if !local_bundle {
            let owner_agent = bundle.owner().agent().to_owned();
            let response = Envelope::Response {
                bundle: bundle.clone(),
                recipient: recipient.clone(),
                accepted,
            };
            self.enqueue(&owner_agent, response);
        }
        // Accepting a bundle addressed to one client authorizes that client for it.
        if accepted && local_recipient {
            if let Some(client) = recipient.client() {
                if let Some(grants) = self
                    .users
                    .get_mut(recipient.user())
                    .and_then(|u| u.clients.get_mut(client))
                {
                    grants.insert(bundle.clone());
                }
            }
        }
        Ok(())
    }

    fn apply_stream_created(&mut self, created: &StreamCreated) -> Result<(), DecodeError> {
        let state = self.bundle_mut(&created.bundle)?;
        if state.streams.contains_key(&created.stream)
            || state.deleted_streams.contains(&created.stream)
        {
            return Err(inconsistent(
                "stream",
                format!("{} #{} created twice", created.bundle, created.stream),
            ));
        }
        let meta = StreamMeta {
            engine_id: created.engine_id,
            creator: created.creator.clone(),
            kind: created.kind,
            policy: created.policy,
            label: created.label.clone(),
            sealed_at: created.sealed_at,
            seq_base: created.seq_base,
        };
        let descriptor = meta.descriptor();
        let announce = meta.policy.shared && meta.sealed_at.is_some();
        state.streams.insert(created.stream, meta);
        state.next_stream_no = state.next_stream_no.max(created.stream + 1);
        if let (true, Some(record_count)) = (announce, created.sealed_at) {
            self.enqueue_to_peers(&created.bundle, || Envelope::Sealed {
                bundle: created.bundle.clone(),
                stream: StreamNo(created.stream),
                descriptor: descriptor.clone(),
                record_count,
            })?;
        }
        Ok(())
    }

    // ----- reclamation ----------------------------------------------------------------

    /// Seq below which no reader can ever read a stream again (`None`: keep everything).
    /// Readers are the owner, the creator, and recipients that did not reject (pending ones
    /// may still accept); a peer agent reads for its recipients.
    pub fn trim_point(
        &self,
        key: &BundleRef,
        bundle: &BundleState,
        stream_no: u64,
        stream: &StreamMeta,
        next_seq: u64,
    ) -> Option<u64> {
        let mut point = next_seq;
        let mut consider = |reader: ReaderKey, retention: Retention| -> bool {
            match retention {
                Retention::Persistent => false,
                Retention::Ephemeral => {
                    let cursor = bundle
                        .cursors
                        .get(&reader)
                        .and_then(|c| c.get(&stream_no))
                        .copied()
                        .unwrap_or(0);
                    point = point.min(cursor);
                    true
                }
            }
        };
        if self.is_local(key) {
            let owner = key.owner().clone();
            let creator_took_it =
                stream.creator == owner && stream.policy.internal == Retention::Ephemeral;
            if !creator_took_it && !consider(ReaderKey::User(owner), stream.policy.internal) {
                return None;
            }
        }
        if stream.creator != *key.owner()
            && self.is_local_address(&stream.creator)
            && stream.policy.external == Retention::Persistent
        {
            return None;
        }
        if stream.policy.shared {
            let mut peers_seen = BTreeSet::new();
            for recipient in bundle
                .recipients
                .iter()
                .filter(|r| r.status != RecipientStatus::Rejected)
            {
                let reader = if self.is_local_address(&recipient.address) {
                    let user = recipient.address.user_address();
                    if user == stream.creator {
                        continue; // took it by writing (or reads it persistently: handled above)
                    }
                    ReaderKey::User(user)
                } else if self.is_local(key) {
                    let peer = recipient.address.agent().to_owned();
                    if !peers_seen.insert(peer.clone()) {
                        continue;
                    }
                    ReaderKey::Peer(peer)
                } else {
                    continue;
                };
                if !consider(reader, stream.policy.external) {
                    return None;
                }
            }
        }
        Some(point)
    }

    // ----- invariants -------------------------------------------------------------------

    /// Checks the relations every reachable state keeps; open runs it after replay, and
    /// debug builds after every change.
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.agent.is_empty() {
            return Err("the agent has no name".into());
        }
        for (user, state) in &self.users {
            for (client, grants) in &state.clients {
                if let Some(bundle) = grants.iter().find(|b| !self.bundles.contains_key(*b)) {
                    return Err(format!(
                        "{client}:{user} is granted the unknown bundle {bundle}"
                    ));
                }
            }
        }
        for (key, bundle) in &self.bundles {
            self.check_bundle(key, bundle)?;
        }
        if self.peers.contains_key(&self.agent) {
            return Err("an outbox addressed to this agent itself".into());
        }
        for (peer, outbox) in &self.peers {
            let ids: Vec<u64> = outbox.queue.iter().map(|(id, _)| *id).collect();
            if ids.windows(2).any(|w| w[0] >= w[1])
                || ids.last().is_some_and(|&id| id >= outbox.next_id)
            {
                return Err(format!(
                    "outbox for {peer}: ids {ids:?} with next {}",
                    outbox.next_id
                ));
            }
        }
        Ok(())
    }

    fn check_bundle(&self, key: &BundleRef, bundle: &BundleState) -> Result<(), String> {
        let local = self.is_local(key);
        if local && !self.users.contains_key(key.owner().user()) {
            return Err(format!("{key} is owned by an unknown user"));
        }
        let mut users = BTreeSet::new();
        for recipient in &bundle.recipients {
            let user = recipient.address.user_address();
            if local && user == *key.owner() {
                return Err(format!("{key} has its owner as a recipient"));
            }
            if !users.insert(user) {
                return Err(format!("{key} names {} twice", recipient.address));
            }
        }
        if let Some((&no, _)) = bundle
            .streams
            .iter()
            .next_back()
            .filter(|(&no, _)| no >= bundle.next_stream_no)
        {
            return Err(format!(
                "{key} stream #{no} is not below the next number {}",
                bundle.next_stream_no
            ));
        }
        for (no, meta) in &bundle.streams {
            if local && meta.seq_base != Some(0) {
                return Err(format!(
                    "{key} #{no}: a local stream starts at {:?}",
                    meta.seq_base
                ));
            }
        }
        if local && !bundle.deleted_streams.is_empty() {
            return Err(format!(
                "{key} is local but remembers deleted mirror streams"
            ));
        }
        if let Some(no) = bundle
            .deleted_streams
            .iter()
            .find(|no| bundle.streams.contains_key(*no))
        {
            return Err(format!("{key} stream #{no} is present and deleted"));
        }
        for (reader, cursor) in &bundle.cursors {
            if let Some(stream) = cursor.keys().find(|s| !bundle.streams.contains_key(*s)) {
                return Err(format!(
                    "{key}: cursor of {reader:?} names the unknown stream #{stream}"
                ));
            }
        }
        Ok(())
    }

    // ----- snapshot -------------------------------------------------------------------

    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(SNAPSHOT_VERSION);
        w.str(&self.agent);
        w.len(self.users.len());
        for (user, state) in &self.users {
            w.str(user);
            w.len(state.clients.len());
            for (client, grants) in &state.clients {
                w.str(client);
                w.len(grants.len());
                for bundle in grants {
                    wire::put_bundle(&mut w, bundle);
                }
            }
        }
        w.len(self.bundles.len());
        for (bundle, state) in &self.bundles {
            wire::put_bundle(&mut w, bundle);
            encode_bundle(&mut w, state);
        }
        w.len(self.peers.len());
        for (peer, outbox) in &self.peers {
            w.str(peer);
            w.u64(outbox.next_id);
            w.len(outbox.queue.len());
            for (id, envelope) in &outbox.queue {
                w.u64(*id);
                envelope.encode_into(&mut w);
            }
        }
        w.into_bytes()
    }

    pub fn decode_snapshot(bytes: &[u8]) -> Result<State, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if !(SNAPSHOT_VERSION_MIN..=SNAPSHOT_VERSION).contains(&version) {
            return Err(DecodeError::BadVersion {
                version,
                supported: SNAPSHOT_VERSION,
            });
        }
        let mut state = State {
            agent: r.name(NamePart::Agent)?,
            ..State::default()
        };
        for _ in 0..r.len("users", usize::MAX, 5)? {
            let user = r.name(NamePart::User)?;
            let mut user_state = UserState::default();
            for _ in 0..r.len("clients", usize::MAX, 5)? {
                let client = r.name(NamePart::Client)?;
                let mut grants = BTreeSet::new();
                for _ in 0..r.len("grants", usize::MAX, 12)? {
                    grants.insert(wire::get_bundle(&mut r)?);
                }
                user_state.clients.insert(client, grants);
            }
            state.users.insert(user, user_state);
        }
        for _ in 0..r.len("bundles", usize::MAX, 12)? {
            let bundle = wire::get_bundle(&mut r)?;
            let bundle_state = decode_bundle(&mut r, version)?;
            state.bundles.insert(bundle, bundle_state);
        }
        for _ in 0..r.len("peers", usize::MAX, 17)? {
            let peer = r.name(NamePart::Agent)?;
            let mut outbox = PeerOutbox {
                next_id: r.u64()?,
                queue: VecDeque::new(),
            };
            for _ in 0..r.len("outbox", usize::MAX, 9)? {
                let id = r.u64()?;
                if id >= outbox.next_id || outbox.queue.back().is_some_and(|(last, _)| *last >= id)
                {
                    return Err(inconsistent("outbox", format!("id {id} out of order")));
                }
                outbox.queue.push_back((id, Envelope::decode_from(&mut r)?));
            }
            state.peers.insert(peer, outbox);
        }
        r.finish()?;
        Ok(state)
    }
}

fn encode_bundle(w: &mut Writer, state: &BundleState) {
    wire::put_metadata(w, &state.metadata);
    wire::put_defaults(w, &state.defaults);
    w.len(state.recipients.len());
    for recipient in &state.recipients {
        w.address(&recipient.address);
        wire::put_status(w, recipient.status);
    }
    w.u64(state.next_stream_no);
    w.len(state.streams.len());
    for (no, stream) in &state.streams {
        w.u64(*no);
        w.u64(stream.engine_id);
        w.address(&stream.creator);
        wire::put_kind(w, stream.kind);
        wire::put_policy(w, &stream.policy);
        w.bytes(&stream.label);
        w.opt_u64(stream.sealed_at);
        w.opt_u64(stream.seq_base);
    }
    w.len(state.cursors.len());
    for (reader, cursor) in &state.cursors {
        change::put_reader(w, reader);
        let entries: Vec<(u64, u64)> = cursor.iter().map(|(s, n)| (*s, *n)).collect();
        wire::put_entries(w, &entries);
    }
    w.len(state.deleted_streams.len());
    for no in &state.deleted_streams {
        w.u64(*no);
    }
}

fn decode_bundle(r: &mut Reader<'_>, version: u8) -> Result<BundleState, DecodeError> {
    let mut state = BundleState {
        metadata: wire::get_metadata(r)?,
        defaults: wire::get_defaults(r)?,
        ..Default::default()
    };
    for _ in 0..r.len("recipients", RECIPIENTS_MAX, wire::ADDRESS_MIN_BYTES + 1)? {
        let address = r.address()?;
        let status = wire::get_status(r)?;
        state.recipients.push(Recipient { address, status });
    }
    state.next_stream_no = r.u64()?;
    for _ in 0..r.len("streams", usize::MAX, 40)? {
        let no = r.u64()?;
        if no >= state.next_stream_no {
            return Err(inconsistent(
                "stream",
                format!("#{no} not below next {}", state.next_stream_no),
            ));
        }
        let stream = StreamMeta {
            engine_id: r.u64()?,
            creator: r.address()?.user_address(),
            kind: wire::get_kind(r)?,
            policy: wire::get_policy(r)?,
            label: wire::get_label(r)?,
            sealed_at: r.opt_u64()?,
            seq_base: r.opt_u64()?,
        };
        state.streams.insert(no, stream);
    }
    for _ in 0..r.len("cursors", usize::MAX, 6)? {
        let reader = change::get_reader(r)?;
        let entries = wire::get_entries(r)?;
        state.cursors.insert(reader, entries.into_iter().collect());
    }
    if version >= 2 {
        for _ in 0..r.len("deleted streams", usize::MAX, 8)? {
            let no = r.u64()?;
            if state.streams.contains_key(&no)
                || state.deleted_streams.last().is_some_and(|last| *last >= no)
            {
                return Err(inconsistent(
                    "deleted streams",
                    format!("#{no} is present, or out of order"),
                ));
            }
            state.deleted_streams.insert(no);
        }
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StreamPolicy;

    fn sample() -> State {
        let mut state = State {
            agent: "b.example".into(),
            ..State::default()
        };
        state.users.insert("bob".into(), UserState::default());
        let owner = Address::parse("alice@a.example").expect("valid");
        let bundle = BundleRef::new(&owner, "posts").expect("valid");
        let mut mirror = BundleState {
            next_stream_no: 4,
            ..BundleState::default()
        };
        mirror.streams.insert(
            3,
            StreamMeta {
                engine_id: 7,
                creator: owner.clone(),
                kind: StreamKind::Continuous,
                policy: StreamPolicy::EPHEMERAL_SHARED,
                label: b"cam".to_vec(),
                sealed_at: None,
                seq_base: Some(2),
            },
        );
        mirror.deleted_streams.extend([0, 2]);
        mirror.cursors.insert(
            ReaderKey::User(Address::parse("bob@b.example").expect("valid")),
            BTreeMap::from([(3, 5)]),
        );
        state.bundles.insert(bundle, mirror);
        state
    }

    #[test]
    fn snapshots_round_trip_and_survive_every_truncation_and_bit_flip() {
        let state = sample();
        let bytes = state.encode_snapshot();
        assert_eq!(State::decode_snapshot(&bytes), Ok(state.clone()));
        for cut in 0..bytes.len() {
            assert!(State::decode_snapshot(&bytes[..cut]).is_err());
        }
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            if let Ok(decoded) = State::decode_snapshot(&flipped) {
                assert_eq!(
                    State::decode_snapshot(&decoded.encode_snapshot()),
                    Ok(decoded)
                );
            }
        }
    }

    #[test]
    fn version_1_snapshots_decode_without_deleted_streams() {
        let mut state = sample();
        let v2 = state.encode_snapshot();
        // Version 1 is version 2 without each bundle's trailing deleted-stream list (one
        // bundle here: its list is the last 4 + 2 * 8 bytes before the empty peer map).
        let peers_len = 4;
        let list_len = 4 + 2 * 8;
        let mut v1 = v2[..v2.len() - peers_len - list_len].to_vec();
        v1.extend_from_slice(&v2[v2.len() - peers_len..]);
        v1[0] = 1;
        for bundle in state.bundles.values_mut() {
            bundle.deleted_streams.clear();
        }
        assert_eq!(State::decode_snapshot(&v1), Ok(state));
        let mut future = v2;
        future[0] = SNAPSHOT_VERSION + 1;
        assert!(matches!(
            State::decode_snapshot(&future),
            Err(DecodeError::BadVersion { .. })
        ));
    }

    #[test]
    fn a_snapshot_naming_a_present_stream_deleted_is_refused() {
        let mut state = sample();
        for bundle in state.bundles.values_mut() {
            bundle.deleted_streams.insert(3);
        }
        assert!(State::decode_snapshot(&state.encode_snapshot()).is_err());
    }
}

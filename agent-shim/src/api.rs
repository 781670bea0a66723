//! Users, clients, grants, bundles and streams: the calls that change the model.
//!
//! Every call checks, in this order: the input is well-formed, then the access table
//! (`access`: the caller exists, sees the bundle and stream, may do this), then the state.
//! Only then is the change made durable and applied, so a refused call changes nothing.

use pmem_emul::Pmem;
use pstream_engine::ColdTier;
use pstream_engine::StreamId;

use crate::access::{self, denied};
use crate::address::{self, Address, Caller, NamePart};
use crate::agent::{Agent, DATA_STREAM_LABEL};
use crate::change::{Change, StreamCreated};
use crate::error::{Action, AgentError, Result};
use crate::model::{
    BundleInfo, BundleRef, Creators, Invitation, Metadata, RecipientStatus, Retention,
    StreamDefaults, StreamInfo, StreamKind, StreamNo, StreamSpec, CREATORS_MAX,
    METADATA_ENTRIES_MAX, METADATA_TOTAL_MAX_BYTES, METADATA_VALUE_MAX_BYTES, RECIPIENTS_MAX,
    STREAM_LABEL_MAX_BYTES,
};
use crate::state::State;

pub(crate) fn check_metadata(metadata: &Metadata) -> Result<()> {
    if metadata.0.len() > METADATA_ENTRIES_MAX {
        return Err(AgentError::MetadataLimit {
            what: "entry count",
            len: metadata.0.len(),
            max: METADATA_ENTRIES_MAX,
        });
    }
    for (key, value) in &metadata.0 {
        address::check_name(NamePart::MetadataKey, key)?;
        if value.len() > METADATA_VALUE_MAX_BYTES {
            return Err(AgentError::MetadataLimit {
                what: "value bytes",
                len: value.len(),
                max: METADATA_VALUE_MAX_BYTES,
            });
        }
    }
    let total = metadata.total_bytes();
    if total > METADATA_TOTAL_MAX_BYTES {
        return Err(AgentError::MetadataLimit {
            what: "total bytes",
            len: total,
            max: METADATA_TOTAL_MAX_BYTES,
        });
    }
    Ok(())
}

fn check_defaults(defaults: &StreamDefaults) -> Result<()> {
    if let Creators::Users(users) = &defaults.creators {
        if users.len() > CREATORS_MAX {
            return Err(AgentError::TooManyCreators {
                count: users.len(),
                max: CREATORS_MAX,
            });
        }
        for user in users {
            address::check_name(NamePart::User, user)?;
        }
    }
    Ok(())
}

pub(crate) fn check_label(label: &[u8]) -> Result<()> {
    if label.len() > STREAM_LABEL_MAX_BYTES {
        return Err(AgentError::LabelTooLong {
            len_bytes: label.len(),
            max_bytes: STREAM_LABEL_MAX_BYTES,
        });
    }
    Ok(())
}

impl<P: Pmem, C: ColdTier> Agent<P, C> {
    // ----- users and clients ------------------------------------------------------------

    /// Adds a local user (an operator action: no caller). Returns its address.
    pub fn add_user(&self, user: &str) -> Result<Address> {
        address::check_name(NamePart::User, user)?;
        let mut inner = self.inner.lock();
        if inner.state.users.contains_key(user) {
            return Err(AgentError::UserExists {
                user: user.to_owned(),
            });
        }
        self.commit(
            &mut inner,
            Change::UserAdded {
                user: user.to_owned(),
            },
        )?;
        Ok(inner.state.address_of(user))
    }

    /// The local users.
    pub fn users(&self) -> Vec<String> {
        self.inner.lock().state.users.keys().cloned().collect()
    }

    /// Registers a client (app or service) of the calling user. Only the user itself may.
    pub fn register_client(&self, caller: &Caller, client: &str) -> Result<()> {
        address::check_name(NamePart::Client, client)?;
        let mut inner = self.inner.lock();
        access::user_itself(
            &inner.state,
            caller,
            Action::RegisterClient,
            "only the user itself registers clients",
        )?;
        let user = caller.user_name();
        if inner
            .state
            .users
            .get(user)
            .is_some_and(|u| u.clients.contains_key(client))
        {
            return Err(AgentError::ClientExists {
                user: user.to_owned(),
                client: client.to_owned(),
            });
        }
        self.commit(
            &mut inner,
            Change::ClientRegistered {
                user: user.to_owned(),
                client: client.to_owned(),
            },
        )
    }

    /// Authorizes one of the caller's clients for a bundle the caller owns, receives, or may
    /// write to. Only the user itself may.
    pub fn grant(&self, caller: &Caller, client: &str, bundle: &BundleRef) -> Result<()> {
        self.change_grant(caller, client, bundle, true)
    }

    /// Withdraws a grant (see [`Agent::grant`]).
    pub fn revoke(&self, caller: &Caller, client: &str, bundle: &BundleRef) -> Result<()> {
        self.change_grant(caller, client, bundle, false)
    }

    fn change_grant(
        &self,
        caller: &Caller,
        client: &str,
        key: &BundleRef,
        grant: bool,
    ) -> Result<()> {
        address::check_name(NamePart::Client, client)?;
        let mut inner = self.inner.lock();
        let state = &inner.state;
        access::user_itself(
            state,
            caller,
            Action::Grant,
            "only the user itself authorizes clients",
        )?;
        let grants = state
            .users
            .get(caller.user_name())
            .and_then(|u| u.clients.get(client))
            .ok_or_else(|| AgentError::UnknownClient {
                user: caller.user_name().to_owned(),
                client: client.to_owned(),
            })?;
        access::viewed_bundle(state, caller, key)?;
        if grants.contains(key) == grant {
            return Ok(());
        }
        let (user, client, bundle) = (
            caller.user_name().to_owned(),
            client.to_owned(),
            key.clone(),
        );
        let change = if grant {
            Change::Granted {
                user,
                client,
                bundle,
            }
        } else {
            Change::Revoked {
                user,
                client,
                bundle,
            }
        };
        self.commit(&mut inner, change)
    }

    // ----- bundles ----------------------------------------------------------------------

    /// Creates a bundle owned by the caller's user. A client that creates a bundle is
    /// granted it.
    pub fn create_bundle(
        &self,
        caller: &Caller,
        id: &str,
        metadata: Metadata,
        defaults: StreamDefaults,
    ) -> Result<BundleRef> {
        address::check_name(NamePart::BundleId, id)?;
        check_metadata(&metadata)?;
        check_defaults(&defaults)?;
        let mut inner = self.inner.lock();
        let owner = access::caller_user(&inner.state, caller)?;
        let key = BundleRef::new(&owner, id)?;
        if inner.state.bundles.contains_key(&key) {
            return Err(AgentError::BundleExists {
                bundle: key.to_string(),
            });
        }
        let client = caller.client_name().map(str::to_owned);
        self.commit(
            &mut inner,
            Change::BundleCreated {
                bundle: key.clone(),
                metadata,
                defaults,
                client,
            },
        )?;
        Ok(key)
    }

    /// Replaces a bundle's metadata. Owner only.
    pub fn set_metadata(&self, caller: &Caller, key: &BundleRef, metadata: Metadata) -> Result<()> {
        check_metadata(&metadata)?;
        let mut inner = self.inner.lock();
        let bundle = access::owned_bundle(&inner.state, caller, key, Action::ChangeBundle)?;
        if bundle.metadata == metadata {
            return Ok(());
        }
        self.commit(
            &mut inner,
            Change::MetadataSet {
                bundle: key.clone(),
                metadata,
            },
        )
    }

    /// Replaces the default permissions applied to streams created from now on. Owner only.
    pub fn set_defaults(
        &self,
        caller: &Caller,
        key: &BundleRef,
        defaults: StreamDefaults,
    ) -> Result<()> {
        check_defaults(&defaults)?;
        let mut inner = self.inner.lock();
        let bundle = access::owned_bundle(&inner.state, caller, key, Action::ChangeBundle)?;
        if bundle.defaults == defaults {
            return Ok(());
        }
        self.commit(
            &mut inner,
            Change::DefaultsSet {
                bundle: key.clone(),
                defaults,
            },
        )
    }

    /// Sets a bundle's recipients (local or remote, optionally client-qualified). Each new
    /// recipient is informed once (inbox, subscription, or the outbox for remote ones);
    /// recipients kept keep their answer; removed ones lose access. Owner only.
    pub fn set_recipients(
        &self,
        caller: &Caller,
        key: &BundleRef,
        recipients: &[Address],
    ) -> Result<()> {
        if recipients.len() > RECIPIENTS_MAX {
            return Err(AgentError::TooManyRecipients {
                count: recipients.len(),
                max: RECIPIENTS_MAX,
            });
        }
        let mut inner = self.inner.lock();
        let bundle = access::owned_bundle(&inner.state, caller, key, Action::ChangeBundle)?;
        let mut users = std::collections::BTreeSet::new();
        for recipient in recipients {
            let user = recipient.user_address();
            if user == *key.owner() {
                return Err(AgentError::OwnerAsRecipient {
                    owner: user.to_string(),
                });
            }
            if !users.insert(user.clone()) {
                return Err(AgentError::DuplicateRecipient {
                    user: user.to_string(),
                });
            }
            if inner.state.is_local_address(&user) && !inner.state.users.contains_key(user.user()) {
                return Err(AgentError::UnknownUser {
                    user: user.to_string(),
                });
            }
        }
        let old: Vec<Address> = bundle
            .recipients
            .iter()
            .map(|r| r.address.clone())
            .collect();
        if old == recipients {
            return Ok(());
        }
        self.commit(
            &mut inner,
            Change::RecipientsSet {
                bundle: key.clone(),
                recipients: recipients.to_vec(),
            },
        )?;
        let fresh: Vec<Address> = recipients
            .iter()
            .filter(|a| !old.contains(a))
            .cloned()
            .collect();
        self.notify_invitations(&mut inner, key, &fresh);
        self.trim_after(&mut inner, key, None);
        Ok(())
    }

    /// A bundle's metadata, defaults and recipients, for anybody it concerns.
    pub fn bundle_info(&self, caller: &Caller, key: &BundleRef) -> Result<BundleInfo> {
        let inner = self.inner.lock();
        let state = &inner.state;
        let (bundle, user) = access::viewed_bundle(state, caller, key)?;
        Ok(BundleInfo {
            bundle: key.clone(),
            metadata: bundle.metadata.clone(),
            defaults: bundle.defaults.clone(),
            recipients: bundle
                .recipients
                .iter()
                .map(|r| (r.address.clone(), r.status))
                .collect(),
            // Only the streams the caller sees: a file drop's count of submissions is the
            // owner's to know.
            stream_count: bundle
                .streams
                .values()
                .filter(|meta| access::sees_stream(key, bundle, meta, &user))
                .count(),
            mirror: !state.is_local(key),
        })
    }

    /// The bundles the caller reads or writes (owned, accepted, or writable).
    pub fn list_bundles(&self, caller: &Caller) -> Result<Vec<BundleRef>> {
        let inner = self.inner.lock();
        let state = &inner.state;
        let user = access::caller_user(state, caller)?;
        Ok(state
            .bundles
            .iter()
            .filter(|(key, bundle)| access::lists_bundle(state, caller, key, bundle, &user))
            .map(|(key, _)| key.clone())
            .collect())
    }

    /// Invitations waiting for the caller's answer. A client sees those addressed to it.
    pub fn inbox(&self, caller: &Caller) -> Result<Vec<Invitation>> {
        let inner = self.inner.lock();
        let state = &inner.state;
        let user = access::caller_user(state, caller)?;
        Ok(state
            .bundles
            .iter()
            .filter_map(|(key, bundle)| {
                let entry = access::pending_invitation(caller, bundle, &user)?;
                Some(Invitation {
                    bundle: key.clone(),
                    recipient: entry.address.clone(),
                    metadata: bundle.metadata.clone(),
                })
            })
            .collect())
    }

    /// Accepts or rejects a bundle the caller's user was invited to (answering again
    /// changes the answer). Accepting one addressed to a client authorizes that client.
    /// Only the user itself answers.
    pub fn respond(&self, caller: &Caller, key: &BundleRef, accept: bool) -> Result<()> {
        let mut inner = self.inner.lock();
        let (entry, user) = access::invitation_to_answer(&inner.state, caller, key)?;
        let status = if accept {
            RecipientStatus::Accepted
        } else {
            RecipientStatus::Rejected
        };
        if entry.status == status {
            return Ok(());
        }
        let recipient = entry.address.clone();
        self.commit(
            &mut inner,
            Change::Responded {
                bundle: key.clone(),
                recipient,
                accepted: accept,
            },
        )?;
        if accept {
            self.push_backlog(&mut inner, &user, key);
        }
        self.trim_after(&mut inner, key, None);
        Ok(())
    }

    // ----- streams ----------------------------------------------------------------------

    /// Checks that the caller may create a stream in the bundle; returns the policy the
    /// stream gets and the creator's address.
    fn creation_policy(
        &self,
        state: &State,
        caller: &Caller,
        key: &BundleRef,
        spec_policy: Option<crate::StreamPolicy>,
        whole: bool,
    ) -> Result<(crate::StreamPolicy, Address)> {
        let (bundle, user) = access::viewed_bundle(state, caller, key)?;
        if !state.is_local(key) {
            return Err(denied(
                caller,
                Action::CreateStream,
                "streams of a bundle owned on another agent are written there",
            ));
        }
        if !access::may_create(state, key, bundle, &user) {
            return Err(denied(
                caller,
                Action::CreateStream,
                "the bundle's default permissions do not let this user create streams",
            ));
        }
        if key.owner() == &user {
            return Ok((spec_policy.unwrap_or(bundle.defaults.policy), user));
        }
        if spec_policy.is_some_and(|p| p != bundle.defaults.policy) {
            return Err(denied(
                caller,
                Action::CreateStream,
                "only the owner chooses a stream's policy",
            ));
        }
        if bundle.defaults.write_once && !whole {
            return Err(denied(
                caller,
                Action::CreateStream,
                "this bundle takes whole, write-once submissions only (put_discrete)",
            ));
        }
        Ok((bundle.defaults.policy, user))
    }

    /// Creates an empty stream in a bundle: by the owner, or by a user the bundle's default
    /// permissions allow (who then gets the default policy).
    pub fn create_stream(
        &self,
        caller: &Caller,
        key: &BundleRef,
        spec: StreamSpec,
    ) -> Result<StreamNo> {
        check_label(&spec.label)?;
        let mut inner = self.inner.lock();
        let (policy, creator) =
            self.creation_policy(&inner.state, caller, key, spec.policy, false)?;
        let no = inner.state.bundles.get(key).map_or(0, |b| b.next_stream_no);
        let engine_id = self.log.create_stream(DATA_STREAM_LABEL)?;
        let created = StreamCreated {
            bundle: key.clone(),
            stream: no,
            engine_id: engine_id.0,
            creator,
            kind: spec.kind,
            policy,
            label: spec.label,
            sealed_at: None,
            seq_base: Some(0),
        };
        if let Err(error) = self.commit(&mut inner, Change::StreamCreated(created)) {
            self.drop_engine_stream(engine_id);
            return Err(error);
        }
        Ok(StreamNo(no))
    }

    /// Creates a discrete stream holding `chunks` and seals it, as one operation: after a
    /// crash it is wholly there or wholly absent. This is how write-once submissions go.
    pub fn put_discrete(
        &self,
        caller: &Caller,
        key: &BundleRef,
        label: &[u8],
        chunks: &[&[u8]],
    ) -> Result<StreamNo> {
        check_label(label)?;
        for chunk in chunks {
            self.check_payload(chunk.len())?;
        }
        let mut inner = self.inner.lock();
        let (policy, creator) = self.creation_policy(&inner.state, caller, key, None, true)?;
        let no = inner.state.bundles.get(key).map_or(0, |b| b.next_stream_no);
        let engine_id = self.log.create_stream(DATA_STREAM_LABEL)?;
        let written = if chunks.is_empty() {
            Ok(())
        } else {
            // The stream exists only once its change record is durable (below), so its
            // chunks need no atomicity of their own: as many engine batches as they need.
            let batch: Vec<(StreamId, &[u8])> = chunks.iter().map(|c| (engine_id, *c)).collect();
            let lens: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
            self.log
                .batch_ranges(&lens)
                .into_iter()
                .try_for_each(|range| self.log.append_batch(&batch[range]).map(|_| ()))
        };
        if let Err(error) = written {
            self.drop_engine_stream(engine_id);
            return Err(error.into());
        }
        let record_count = chunks.len() as u64;
        let created = StreamCreated {
            bundle: key.clone(),
            stream: no,
            engine_id: engine_id.0,
            creator,
            kind: StreamKind::Discrete,
            policy,
            label: label.to_vec(),
            sealed_at: Some(record_count),
            seq_base: Some(0),
        };
        // IMPORTANT: the change record is what makes the stream exist; until it is durable
        // the engine stream is an orphan that open would delete.
        if let Err(error) = self.commit(&mut inner, Change::StreamCreated(created)) {
            self.drop_engine_stream(engine_id);
            return Err(error);
        }
        inner.counters.records_appended += record_count;
        inner.counters.bytes_appended += chunks.iter().map(|c| c.len() as u64).sum::<u64>();
        self.notify_data(&mut inner, key, StreamNo(no), 0..record_count);
        self.notify_sealed(&mut inner, key, StreamNo(no), record_count);
        self.trim_after(&mut inner, key, Some(&[no]));
        Ok(StreamNo(no))
    }

    fn drop_engine_stream(&self, engine_id: StreamId) {
        if let Err(error) = self.log.delete_stream(engine_id) {
            tracing::warn!(%error, "cannot delete an unrecorded engine stream; open removes it");
        }
    }

    fn check_payload(&self, len_bytes: usize) -> Result<()> {
        let max_bytes = self.log.max_payload_bytes();
        if len_bytes > max_bytes {
            return Err(AgentError::PayloadTooLarge {
                len_bytes,
                max_bytes,
            });
        }
        Ok(())
    }

    /// The stream, if the caller created it and it is still open for writing.
    fn writable_stream(
        &self,
        state: &State,
        caller: &Caller,
        key: &BundleRef,
        stream: StreamNo,
        action: Action,
    ) -> Result<(StreamId, u64)> {
        let meta = access::written_stream(state, caller, key, stream, action)?;
        if let Some(record_count) = meta.sealed_at {
            return Err(AgentError::StreamSealed {
                bundle: key.to_string(),
                stream: stream.0,
                record_count,
            });
        }
        let (_, next_seq) = self.bounds(meta)?;
        Ok((StreamId(meta.engine_id), next_seq))
    }

    /// Appends one record to an open stream the caller created; durable on return.
    pub fn append(
        &self,
        caller: &Caller,
        key: &BundleRef,
        stream: StreamNo,
        payload: &[u8],
    ) -> Result<u64> {
        self.check_payload(payload.len())?;
        let mut inner = self.inner.lock();
        let (engine_id, _) =
            self.writable_stream(&inner.state, caller, key, stream, Action::Append)?;
        let seq = self.log.append(engine_id, payload)?;
        inner.counters.records_appended += 1;
        inner.counters.bytes_appended += payload.len() as u64;
        self.notify_data(&mut inner, key, stream, seq..seq + 1);
        self.trim_after(&mut inner, key, Some(&[stream.0]));
        Ok(seq)
    }

    /// Appends several records to one stream with a single fence, all or nothing (also
    /// across a crash); durable on return. The records may take at most
    /// `Log::batch_capacity_bytes` (the engine's limit for one atomic batch); a larger
    /// batch is refused whole (`BatchTooLarge`), nothing written.
    pub fn append_batch(
        &self,
        caller: &Caller,
        key: &BundleRef,
        stream: StreamNo,
        payloads: &[&[u8]],
    ) -> Result<Vec<u64>> {
        for payload in payloads {
            self.check_payload(payload.len())?;
        }
        let mut inner = self.inner.lock();
        let (engine_id, _) =
            self.writable_stream(&inner.state, caller, key, stream, Action::Append)?;
        if payloads.is_empty() {
            return Ok(Vec::new());
        }
        let batch: Vec<(StreamId, &[u8])> = payloads.iter().map(|p| (engine_id, *p)).collect();
        let seqs = self.log.append_batch(&batch)?;
        debug_assert!(
            seqs.windows(2).all(|w| w[0] + 1 == w[1]),
            "one stream's batch is dense"
        );
        inner.counters.records_appended += seqs.len() as u64;
        inner.counters.bytes_appended += payloads.iter().map(|p| p.len() as u64).sum::<u64>();
        if let (Some(&first), Some(&last)) = (seqs.first(), seqs.last()) {
            self.notify_data(&mut inner, key, stream, first..last + 1);
        }
        self.trim_after(&mut inner, key, Some(&[stream.0]));
        Ok(seqs)
    }

    /// Seals a discrete stream (closes a continuous one): no record can follow. Returns the
    /// record count. Creator only.
    pub fn seal(&self, caller: &Caller, key: &BundleRef, stream: StreamNo) -> Result<u64> {
        let mut inner = self.inner.lock();
        let (_, next_seq) =
            self.writable_stream(&inner.state, caller, key, stream, Action::Seal)?;
        self.commit(
            &mut inner,
            Change::StreamSealed {
                bundle: key.clone(),
                stream: stream.0,
                record_count: next_seq,
            },
        )?;
        self.notify_sealed(&mut inner, key, stream, next_seq);
        Ok(next_seq)
    }

    /// Deletes a stream and its data. The bundle owner only.
    pub fn delete_stream(&self, caller: &Caller, key: &BundleRef, stream: StreamNo) -> Result<()> {
        let mut inner = self.inner.lock();
        let bundle = access::owned_bundle(&inner.state, caller, key, Action::DeleteStream)?;
        let owner = key.owner().clone();
        let engine_id = StreamId(access::seen_stream(key, bundle, stream, &owner)?.engine_id);
        self.commit(
            &mut inner,
            Change::StreamDeleted {
                bundle: key.clone(),
                stream: stream.0,
            },
        )?;
        // After the record: a crash in between leaves an orphan that open deletes.
        self.drop_engine_stream(engine_id);
        Ok(())
    }

    /// The streams of a bundle the caller owns the bundle of, created, or may read.
    pub fn list_streams(&self, caller: &Caller, key: &BundleRef) -> Result<Vec<StreamInfo>> {
        let inner = self.inner.lock();
        let state = &inner.state;
        let (bundle, user) = access::viewed_bundle(state, caller, key)?;
        let mut streams = Vec::new();
        for (&no, meta) in &bundle.streams {
            if !access::sees_stream(key, bundle, meta, &user) {
                continue;
            }
            let access = access::stream_access(key, bundle, meta, &user);
            let (first_seq, next_seq) = self.bounds(meta)?;
            streams.push(StreamInfo {
                no: StreamNo(no),
                label: meta.label.clone(),
                creator: meta.creator.clone(),
                kind: meta.kind,
                policy: meta.policy,
                sealed_at: meta.sealed_at,
                first_seq,
                next_seq,
                access,
            });
        }
        Ok(streams)
    }

    /// Reads one record. Persistent readers read any present record; an ephemeral reader
    /// reads only what it has not acknowledged yet (see `ack`/`take`).
    pub fn read(
        &self,
        caller: &Caller,
        key: &BundleRef,
        stream: StreamNo,
        seq: u64,
    ) -> Result<Vec<u8>> {
        let inner = self.inner.lock();
        let state = &inner.state;
        let (bundle, user) = access::viewed_bundle(state, caller, key)?;
        let meta = access::seen_stream(key, bundle, stream, &user)?;
        let Some(retention) = access::stream_access(key, bundle, meta, &user) else {
            return Err(denied(
                caller,
                Action::Read,
                "no read access to this stream",
            ));
        };
        if retention == Retention::Ephemeral && seq < access::taken_up_to(bundle, &user, stream) {
            return Err(AgentError::AlreadyTaken {
                bundle: key.to_string(),
                stream: stream.0,
                seq,
            });
        }
        let (first_seq, next_seq) = self.bounds(meta)?;
        if !(first_seq..next_seq).contains(&seq) {
            return Err(AgentError::SeqOutOfRange {
                bundle: key.to_string(),
                stream: stream.0,
                seq,
                first_seq,
                next_seq,
            });
        }
        self.read_record(meta, seq)
    }
}

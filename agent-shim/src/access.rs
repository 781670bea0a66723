//! The access table: every rule of who may do what, in one place. Every API call and every
//! envelope kind `receive` accepts goes through these functions; no other module decides
//! access (docs/ARCHITECTURE.md has the same table in prose).
//!
//! # Calls (by user and client)
//! A call first names an existing user and, if it acts as a client, a registered client
//! of that user ([`caller_user`]). A client then sees only bundles its user granted it and
//! never one addressed to another client of the user ([`client_sees`]). What the user may
//! do with a bundle:
//!
//! | who | sees the bundle (`bundle_info`, `list_streams`, grant a client) | reads (`fetch`, `ack`, `take`, `cursor`, `subscribe`) | creates streams | changes it (metadata, defaults, recipients, delete streams) |
//! |---|---|---|---|---|
//! | owner | yes | yes | yes (any policy) | yes |
//! | accepted recipient | yes | shared streams (external retention) | if `Creators` admits it | no |
//! | pending recipient | yes (to decide) | no | if `Creators` admits it | no |
//! | rejected recipient | no | no | if `Creators` admits it | no |
//! | creator of a stream | yes | its own streams (external retention; ephemeral: taken by writing) | if `Creators` admits it | no |
//! | user `Creators` admits | yes | no | yes (default policy; whole submissions if `write_once`) | no |
//! | anybody else | no | no | no | no |
//!
//! A stream is *seen* (listed, counted, named in errors) by the bundle's owner, its creator,
//! and whoever may read it ([`sees_stream`]); only its creator writes it. Whatever the
//! caller may not see is answered exactly like what does not exist: one error for "not
//! yours" and "no such thing" (`UnknownBundle`, `UnknownStream`, `NotInvited`), and counts
//! include only what the caller sees. `PermissionDenied` is only ever said about things
//! the caller sees. Only the user itself (no client) registers clients, grants, and answers
//! invitations.
//!
//! # Envelopes (by sending agent, for which addresses)
//! A peer agent speaks only for its own users ([`check_envelope`]):
//!
//! | envelope | the sender must be | and |
//! |---|---|---|
//! | `Invite` | the bundle owner's agent | the recipient is a user address of this agent |
//! | `Response` | the recipient's agent | the bundle is owned here |
//! | `Metadata`, `StreamDeleted` | the bundle owner's agent | the bundle is not owned here |
//! | `RecipientRemoved` | the bundle owner's agent | the recipient is an address of this agent |
//! | `Data`, `Sealed` | the bundle owner's agent | the stream's creator is a user of the owner's agent (only they create streams in its bundles; the owner's agent relays them), and the stream is shared |
//!
//! Stateful checks (an existing mirror, no gap, nothing after a seal, a stream's creator
//! and policy never change) are made for a whole batch against the state it will meet
//! before any envelope is applied (`outbox::plan_receive`).

use crate::address::{Address, Caller};
use crate::change::ReaderKey;
use crate::envelope::Envelope;
use crate::error::{Action, AgentError, Result};
use crate::model::{BundleRef, Creators, RecipientStatus, Retention, StreamNo};
use crate::state::{BundleState, Recipient, State, StreamMeta};

pub(crate) fn denied(caller: &Caller, action: Action, reason: &'static str) -> AgentError {
    AgentError::PermissionDenied {
        caller: caller.to_string(),
        action,
        reason,
    }
}

fn unknown_bundle(key: &BundleRef) -> AgentError {
    AgentError::UnknownBundle {
        bundle: key.to_string(),
    }
}

fn unknown_stream(key: &BundleRef, stream: StreamNo) -> AgentError {
    AgentError::UnknownStream {
        bundle: key.to_string(),
        stream: stream.0,
    }
}

// ----- callers ------------------------------------------------------------------------

/// The caller's user must exist, and its client (if any) be registered. Returns the user's
/// address.
pub(crate) fn caller_user(state: &State, caller: &Caller) -> Result<Address> {
    let user = state
        .users
        .get(caller.user_name())
        .ok_or_else(|| AgentError::UnknownUser {
            user: caller.user_name().to_owned(),
        })?;
    if let Some(client) = caller.client_name() {
        if !user.clients.contains_key(client) {
            return Err(AgentError::UnknownClient {
                user: caller.user_name().to_owned(),
                client: client.to_owned(),
            });
        }
    }
    Ok(state.address_of(caller.user_name()))
}

/// [`caller_user`] for what only the user itself (no client) may do.
pub(crate) fn user_itself(
    state: &State,
    caller: &Caller,
    action: Action,
    reason: &'static str,
) -> Result<Address> {
    let user = caller_user(state, caller)?;
    if caller.client_name().is_some() {
        return Err(denied(caller, action, reason));
    }
    Ok(user)
}

/// The recipient entry of `user` (any client qualification) in a bundle.
pub(crate) fn recipient_entry<'b>(
    bundle: &'b BundleState,
    user: &Address,
) -> Option<&'b Recipient> {
    bundle
        .recipients
        .iter()
        .find(|r| r.address.user() == user.user() && r.address.agent() == user.agent())
}

fn recipient_status(bundle: &BundleState, user: &Address) -> Option<RecipientStatus> {
    recipient_entry(bundle, user).map(|r| r.status)
}

/// Whether a caller's client (if any) may see a bundle at all: it needs the user's grant,
/// and a bundle addressed to one client of the user is seen by that client only.
pub(crate) fn client_sees(
    state: &State,
    caller: &Caller,
    key: &BundleRef,
    bundle: &BundleState,
) -> bool {
    let Some(client) = caller.client_name() else {
        return true;
    };
    let granted = state
        .users
        .get(caller.user_name())
        .and_then(|u| u.clients.get(client))
        .is_some_and(|grants| grants.contains(key));
    let user = state.address_of(caller.user_name());
    let addressed_elsewhere = recipient_entry(bundle, &user)
        .and_then(|r| r.address.client())
        .is_some_and(|target| target != client);
    granted && !addressed_elsewhere
}

// ----- bundles ------------------------------------------------------------------------

/// Whether `user` may create streams in a bundle (owner, or the owner's default
/// permissions). Only users of the owner's agent create streams, and only there.
pub(crate) fn may_create(
    state: &State,
    key: &BundleRef,
    bundle: &BundleState,
    user: &Address,
) -> bool {
    if !state.is_local(key) || !state.is_local_address(user) {
        return false;
    }
    if key.owner() == user {
        return true;
    }
    match &bundle.defaults.creators {
        Creators::OwnerOnly => false,
        Creators::Recipients => recipient_status(bundle, user) == Some(RecipientStatus::Accepted),
        Creators::Users(users) => users.contains(user.user()),
        Creators::AnyLocalUser => true,
    }
}

/// Whether `user` reads a bundle at all: owner, accepted recipient, or a stream's creator.
pub(crate) fn is_reader(key: &BundleRef, bundle: &BundleState, user: &Address) -> bool {
    key.owner() == user
        || recipient_status(bundle, user) == Some(RecipientStatus::Accepted)
        || bundle.streams.values().any(|s| s.creator == *user)
}

/// Whether `user` sees a bundle (its metadata, recipients and the streams it sees): a
/// reader, a recipient who has not rejected it, or a user who may create streams in it.
pub(crate) fn may_view(
    state: &State,
    key: &BundleRef,
    bundle: &BundleState,
    user: &Address,
) -> bool {
    is_reader(key, bundle, user)
        || recipient_status(bundle, user) == Some(RecipientStatus::Pending)
        || may_create(state, key, bundle, user)
}

/// The bundle, if it exists and the caller (user and client) sees it; otherwise
/// `UnknownBundle`, whichever of the two it is.
pub(crate) fn viewed_bundle<'s>(
    state: &'s State,
    caller: &Caller,
    key: &BundleRef,
) -> Result<(&'s BundleState, Address)> {
    let user = caller_user(state, caller)?;
    let bundle = state.bundles.get(key).ok_or_else(|| unknown_bundle(key))?;
    if !client_sees(state, caller, key, bundle) || !may_view(state, key, bundle, &user) {
        return Err(unknown_bundle(key));
    }
    Ok((bundle, user))
}

/// The bundle, if the caller sees it and its user owns it.
pub(crate) fn owned_bundle<'s>(
    state: &'s State,
    caller: &Caller,
    key: &BundleRef,
    action: Action,
) -> Result<&'s BundleState> {
    let (bundle, user) = viewed_bundle(state, caller, key)?;
    if key.owner() != &user {
        return Err(denied(
            caller,
            action,
            "only the bundle's owner may do this",
        ));
    }
    Ok(bundle)
}

/// The bundle, if the caller sees it and reads it.
pub(crate) fn read_bundle<'s>(
    state: &'s State,
    caller: &Caller,
    key: &BundleRef,
    action: Action,
) -> Result<(&'s BundleState, Address)> {
    let (bundle, user) = viewed_bundle(state, caller, key)?;
    if !is_reader(key, bundle, &user) {
        return Err(denied(
            caller,
            action,
            "the caller does not read this bundle (not a recipient, or not accepted)",
        ));
    }
    Ok((bundle, user))
}

/// Bundles a subscription or `list_bundles` shows the caller: those it reads or may
/// create streams in, as far as its client sees them.
pub(crate) fn lists_bundle(
    state: &State,
    caller: &Caller,
    key: &BundleRef,
    bundle: &BundleState,
    user: &Address,
) -> bool {
    client_sees(state, caller, key, bundle)
        && (is_reader(key, bundle, user) || may_create(state, key, bundle, user))
}

/// The invitation waiting for the caller's answer in a bundle, if any (a client sees
/// those addressed to it).
pub(crate) fn pending_invitation<'b>(
    caller: &Caller,
    bundle: &'b BundleState,
    user: &Address,
) -> Option<&'b Recipient> {
    let entry = recipient_entry(bundle, user)?;
    let for_caller =
        caller.client_name().is_none() || entry.address.client() == caller.client_name();
    (entry.status == RecipientStatus::Pending && for_caller).then_some(entry)
}

/// The caller's recipient entry, for `respond`: `NotInvited` whether the bundle does not
/// exist or does not name the user.
pub(crate) fn invitation_to_answer<'s>(
    state: &'s State,
    caller: &Caller,
    key: &BundleRef,
) -> Result<(&'s Recipient, Address)> {
    let user = user_itself(
        state,
        caller,
        Action::Respond,
        "only the user itself accepts or rejects bundles",
    )?;
    let entry = state
        .bundles
        .get(key)
        .and_then(|bundle| recipient_entry(bundle, &user))
        .ok_or_else(|| AgentError::NotInvited {
            bundle: key.to_string(),
            user: user.to_string(),
        })?;
    Ok((entry, user))
}

// ----- streams ------------------------------------------------------------------------

/// How `user` (a user-level address) may read a stream:
/// * the owner reads with the internal retention, everybody else with the external one;
/// * besides the owner, only the stream's creator and accepted recipients (of shared
///   streams) read at all;
/// * a writer has taken its own ephemeral records by writing them.
pub(crate) fn stream_access(
    key: &BundleRef,
    bundle: &BundleState,
    stream: &StreamMeta,
    user: &Address,
) -> Option<Retention> {
    let is_owner = key.owner() == user;
    let is_creator = stream.creator == *user;
    let is_recipient =
        stream.policy.shared && recipient_status(bundle, user) == Some(RecipientStatus::Accepted);
    if !(is_owner || is_creator || is_recipient) {
        return None;
    }
    let retention = if is_owner {
        stream.policy.internal
    } else {
        stream.policy.external
    };
    if is_creator && retention == Retention::Ephemeral {
        return None;
    }
    Some(retention)
}

/// Whether `user` sees a stream at all (lists it, counts it, may name it): the owner, its
/// creator, and whoever reads it.
pub(crate) fn sees_stream(
    key: &BundleRef,
    bundle: &BundleState,
    stream: &StreamMeta,
    user: &Address,
) -> bool {
    key.owner() == user
        || stream.creator == *user
        || stream_access(key, bundle, stream, user).is_some()
}

/// The stream, if `user` sees it; otherwise `UnknownStream`, whichever of the two it is.
pub(crate) fn seen_stream<'b>(
    key: &BundleRef,
    bundle: &'b BundleState,
    stream: StreamNo,
    user: &Address,
) -> Result<&'b StreamMeta> {
    bundle
        .streams
        .get(&stream.0)
        .filter(|meta| sees_stream(key, bundle, meta, user))
        .ok_or_else(|| unknown_stream(key, stream))
}

/// The stream, if the caller sees it and created it (only creators write); streams of a
/// bundle owned elsewhere are written there.
pub(crate) fn written_stream<'s>(
    state: &'s State,
    caller: &Caller,
    key: &BundleRef,
    stream: StreamNo,
    action: Action,
) -> Result<&'s StreamMeta> {
    let (bundle, user) = viewed_bundle(state, caller, key)?;
    let meta = seen_stream(key, bundle, stream, &user)?;
    if meta.creator != user || !state.is_local(key) {
        return Err(denied(
            caller,
            action,
            "only the stream's creator writes it",
        ));
    }
    Ok(meta)
}

/// The next seq of a stream `user` has not acknowledged (taken, if ephemeral).
pub(crate) fn taken_up_to(bundle: &BundleState, user: &Address, stream: StreamNo) -> u64 {
    bundle
        .cursors
        .get(&ReaderKey::User(user.clone()))
        .and_then(|c| c.get(&stream.0))
        .copied()
        .unwrap_or(0)
}

// ----- envelopes ----------------------------------------------------------------------

fn refused(peer: &str, detail: String) -> AgentError {
    AgentError::Protocol {
        peer: peer.to_owned(),
        detail,
    }
}

/// Whether `peer` may send `envelope` at all, whatever the state (the envelope table in
/// the module documentation): a peer speaks only for its own users and bundles.
pub(crate) fn check_envelope(state: &State, peer: &str, envelope: &Envelope) -> Result<()> {
    let from_owner = |bundle: &BundleRef| -> Result<()> {
        if bundle.owner().agent() != peer {
            return Err(refused(
                peer,
                format!(
                    "may not speak for {bundle}: it is owned on {}",
                    bundle.owner().agent()
                ),
            ));
        }
        Ok(())
    };
    let for_here = |recipient: &Address, what: &str| -> Result<()> {
        if !state.is_local_address(recipient) {
            return Err(refused(
                peer,
                format!("{what} for {recipient}, who is not a user of this agent"),
            ));
        }
        Ok(())
    };
    match envelope {
        Envelope::Invite {
            bundle, recipient, ..
        } => {
            from_owner(bundle)?;
            for_here(recipient, "invitation")?;
        }
        Envelope::Response {
            bundle, recipient, ..
        } => {
            if recipient.agent() != peer {
                return Err(refused(
                    peer,
                    format!("may not answer for {recipient}, a user of another agent"),
                ));
            }
            if !state.is_local(bundle) {
                return Err(refused(
                    peer,
                    format!("answer about {bundle}, which is not ours"),
                ));
            }
        }
        Envelope::Metadata { bundle, .. } | Envelope::StreamDeleted { bundle, .. } => {
            from_owner(bundle)?;
        }
        Envelope::RecipientRemoved { bundle, recipient } => {
            from_owner(bundle)?;
            for_here(recipient, "removal")?;
        }
        Envelope::Data {
            bundle, descriptor, ..
        }
        | Envelope::Sealed {
            bundle, descriptor, ..
        } => {
            from_owner(bundle)?;
            if descriptor.creator.agent() != bundle.owner().agent() {
                return Err(refused(
                    peer,
                    format!(
                        "{bundle} cannot hold a stream created by {}: only users of {} create streams in it",
                        descriptor.creator,
                        bundle.owner().agent()
                    ),
                ));
            }
            if !descriptor.policy.shared {
                return Err(refused(peer, "a private stream was forwarded".to_owned()));
            }
        }
    }
    Ok(())
}

//! pstream-agent: the persistent-streams agent data model on top of the pstream engine.
//!
//! This is what agent implementations embed (section 4 of the persistent-streams paper,
//! Carl et al., FGBS '21): users and their clients, bundles of streams with recipients,
//! persistent and ephemeral data, owner-defined default permissions, store and forward
//! with durable cursors, and an outbox to other agents. There is no network here: an agent
//! implementation moves [`Envelope`]s between agents.
//!
//! # Model
//! * [`Address`]: `[<client>:]<user>@<agent>`, parsed with typed errors ([`AddressError`]).
//! * Every call names its [`Caller`]: a user acting directly, or one of its registered
//!   clients, which sees only the bundles the user granted it (and, for bundles addressed to
//!   one client of the user, only that client sees them).
//! * A **bundle** ([`BundleRef`]: owner + id) has metadata, recipients, default permissions
//!   ([`StreamDefaults`]) and streams. Recipients are informed once and accept or reject.
//! * A **stream** ([`StreamNo`]) is discrete (sealed after writing) or continuous; only its
//!   creator writes it. Its [`StreamPolicy`] gives the owner's ("internal") and everybody
//!   else's ("external") [`Retention`] and whether recipients get it at all.
//! * **Ephemeral** data is readable once per user: until the user acknowledges it. The
//!   writer counts as having taken what it wrote, which is what makes a file-drop
//!   submission unreadable to its author. Once every reader took a record, its space is
//!   reclaimed (engine trim).
//! * **Store and forward**: [`Agent::fetch`] pages "everything after a [`Position`]",
//!   [`Agent::ack`] moves the durable cursor, [`Agent::subscribe`] pushes while connected.
//! * **Outbox**: [`Agent::outbox_fetch`] / [`Agent::outbox_ack`] on the sending agent,
//!   [`Agent::receive`] on the receiving one.
//!
//! # Durability
//! Everything acknowledged is durable through the engine before the call returns: data in
//! one engine stream per agent stream, metadata as change records in a system stream with
//! periodic snapshots (see the `agent` module). [`Agent::open`] replays it exactly.

#![deny(unsafe_code)]

mod access;
mod address;
mod agent;
mod api;
mod change;
mod codec;
mod delivery;
mod envelope;
mod error;
mod model;
mod outbox;
mod state;
mod wire;

pub use address::{
    check_agent_name, check_name, Address, AddressError, Caller, NamePart, AGENT_NAME_MAX_BYTES,
    BUNDLE_ID_MAX_BYTES, CLIENT_NAME_MAX_BYTES, METADATA_KEY_MAX_BYTES, USER_NAME_MAX_BYTES,
};
pub use agent::{
    Agent, AgentConfig, AgentStats, OpenReport, DATA_STREAM_LABEL, ORPHAN_STREAMS_PER_CRASH_MAX,
    SYS_STREAM_LABEL,
};
pub use change::SYS_RECORD_VERSION;
pub use codec::DecodeError;
pub use delivery::Subscription;
pub use envelope::{Envelope, StreamDescriptor, ENVELOPE_VERSION};
pub use error::{Action, AgentError, MetadataFault, Result};
pub use model::{
    BundleInfo, BundleRef, Creators, Delivery, Event, Invitation, Metadata, Page, PageLimit,
    Position, RecipientStatus, Retention, StreamDefaults, StreamInfo, StreamKind, StreamNo,
    StreamPolicy, StreamSpec, CREATORS_MAX, METADATA_ENTRIES_MAX, METADATA_TOTAL_MAX_BYTES,
    METADATA_VALUE_MAX_BYTES, RECIPIENTS_MAX, STREAM_LABEL_MAX_BYTES,
};
pub use outbox::{OutboxBatch, ReceiveReport};
pub use state::SNAPSHOT_VERSION;

/// Entry points of the fuzz targets in `fuzz/` for the on-media decoders that are not
/// public API (system records, snapshots). Not part of the API; may change at any time.
#[doc(hidden)]
pub mod fuzzing {
    use crate::change::SysRecord;
    use crate::state::State;
    use crate::DecodeError;

    /// Decodes a system record (a metadata change or a snapshot part); a decoded record
    /// re-encodes to bytes that decode to the same record (panics otherwise).
    pub fn sys_record_round_trip(bytes: &[u8]) -> Result<(), DecodeError> {
        let record = SysRecord::decode(bytes)?;
        assert_eq!(SysRecord::decode(&record.encode()).as_ref(), Ok(&record));
        Ok(())
    }

    /// Decodes a metadata snapshot; a decoded snapshot re-encodes to bytes that decode to
    /// the same state (panics otherwise).
    pub fn snapshot_round_trip(bytes: &[u8]) -> Result<(), DecodeError> {
        let state = State::decode_snapshot(bytes)?;
        assert_eq!(
            State::decode_snapshot(&state.encode_snapshot()).as_ref(),
            Ok(&state)
        );
        Ok(())
    }
}

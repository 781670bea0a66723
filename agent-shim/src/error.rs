//! The shim's error type. Every refusal is a typed value naming what was wrong; a call that
//! returns an error has changed nothing.

use std::fmt;

use pstream_engine::EngineError;

use crate::address::AddressError;
use crate::codec::DecodeError;

/// The operation a permission check was made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    RegisterClient,
    Grant,
    CreateBundle,
    ChangeBundle,
    ViewBundle,
    CreateStream,
    Append,
    Seal,
    DeleteStream,
    Read,
    Fetch,
    Ack,
    Respond,
    Inbox,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::RegisterClient => "register a client",
            Action::Grant => "grant a client",
            Action::CreateBundle => "create a bundle",
            Action::ChangeBundle => "change a bundle",
            Action::ViewBundle => "view a bundle",
            Action::CreateStream => "create a stream",
            Action::Append => "append to a stream",
            Action::Seal => "seal a stream",
            Action::DeleteStream => "delete a stream",
            Action::Read => "read a stream",
            Action::Fetch => "fetch",
            Action::Ack => "acknowledge",
            Action::Respond => "respond to an invitation",
            Action::Inbox => "read an inbox",
        })
    }
}

/// How the agent metadata (the system stream) fails to account for the engine's streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetadataFault {
    /// No engine stream carries the system label.
    NoSystemStream,
    /// More than one engine stream carries the system label.
    SeveralSystemStreams,
    /// The system stream holds no agent record (no init change, no snapshot) although it
    /// held records once or data streams exist.
    NoAgentRecord {
        /// The system stream's first live engine seq.
        sys_first_seq: u64,
        /// The system stream's next engine seq.
        sys_next_seq: u64,
    },
    /// More engine streams are named by no metadata than one crash can leave.
    UnexplainedOrphans {
        /// Data streams the metadata does not name.
        orphan_count: u64,
        /// The most one crash can leave.
        crash_max: u64,
    },
}

impl fmt::Display for MetadataFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetadataFault::NoSystemStream => write!(f, "no system stream"),
            MetadataFault::SeveralSystemStreams => write!(f, "several system streams"),
            MetadataFault::NoAgentRecord {
                sys_first_seq,
                sys_next_seq,
            } => write!(
                f,
                "no agent record in the system stream (seqs {sys_first_seq}..{sys_next_seq})"
            ),
            MetadataFault::UnexplainedOrphans {
                orphan_count,
                crash_max,
            } => write!(
                f,
                "{orphan_count} data streams named by no metadata, a crash leaves at most {crash_max}"
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    #[error("invalid name or address: {0}")]
    InvalidName(#[from] AddressError),
    #[error("{caller} may not {action}: {reason}")]
    PermissionDenied {
        caller: String,
        action: Action,
        reason: &'static str,
    },
    #[error("unknown user {user}")]
    UnknownUser { user: String },
    #[error("user {user} exists already")]
    UserExists { user: String },
    #[error("user {user} has no client {client}")]
    UnknownClient { user: String, client: String },
    #[error("user {user} has a client {client} already")]
    ClientExists { user: String, client: String },
    #[error("unknown bundle {bundle}")]
    UnknownBundle { bundle: String },
    #[error("bundle {bundle} exists already")]
    BundleExists { bundle: String },
    #[error("bundle {bundle} has no stream {stream}")]
    UnknownStream { bundle: String, stream: u64 },
    #[error("bundle metadata over its limit: {what} is {len}, at most {max}")]
    MetadataLimit {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("stream label of {len_bytes} bytes exceeds {max_bytes}")]
    LabelTooLong { len_bytes: usize, max_bytes: usize },
    #[error("{count} recipients exceed the limit of {max}")]
    TooManyRecipients { count: usize, max: usize },
    #[error("{count} creators exceed the limit of {max}")]
    TooManyCreators { count: usize, max: usize },
    #[error("user {user} is named twice among the recipients")]
    DuplicateRecipient { user: String },
    #[error("the owner {owner} cannot be a recipient of its own bundle")]
    OwnerAsRecipient { owner: String },
    #[error("payload of {len_bytes} bytes exceeds the maximum of {max_bytes}")]
    PayloadTooLarge { len_bytes: usize, max_bytes: usize },
    #[error("stream {stream} of {bundle} is sealed after {record_count} records")]
    StreamSealed {
        bundle: String,
        stream: u64,
        record_count: u64,
    },
    #[error("{user} was not invited to {bundle}")]
    NotInvited { bundle: String, user: String },
    #[error("stream {stream} of {bundle}: cannot acknowledge up to {requested}, its next seq is {next_seq}")]
    AckBeyondTail {
        bundle: String,
        stream: u64,
        requested: u64,
        next_seq: u64,
    },
    #[error("stream {stream} of {bundle}: record {seq} was already taken (ephemeral, read once)")]
    AlreadyTaken {
        bundle: String,
        stream: u64,
        seq: u64,
    },
    #[error("stream {stream} of {bundle} has no record {seq} (readable: {first_seq}..{next_seq})")]
    SeqOutOfRange {
        bundle: String,
        stream: u64,
        seq: u64,
        first_seq: u64,
        next_seq: u64,
    },
    #[error("peer agent {peer}: {detail}")]
    Protocol { peer: String, detail: String },
    #[error("no outbox for peer agent {peer}")]
    UnknownPeer { peer: String },
    #[error("a metadata change of {len_bytes} bytes does not fit a record of {max_bytes}")]
    ChangeTooLarge { len_bytes: usize, max_bytes: usize },
    #[error("the pool holds no agent store (no system stream)")]
    NotAnAgentStore,
    #[error(
        "the agent metadata is missing or incomplete ({fault}) while the engine holds \
         {data_stream_count} data streams: refusing to initialize over them or delete any \
         (run `pstream verify`)"
    )]
    MetadataLost {
        /// What is wrong with the metadata.
        fault: MetadataFault,
        /// Engine streams with the shim's data label (all kept).
        data_stream_count: u64,
    },
    #[error("agent store is inconsistent: {detail}")]
    Corrupt { detail: String },
    #[error("stored metadata does not decode: {0}")]
    Decode(#[from] DecodeError),
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
}

pub type Result<T, E = AgentError> = std::result::Result<T, E>;

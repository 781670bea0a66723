//! The public value types of the data model: bundles, streams, policies, positions, pages.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::address::{self, Address, AddressError, NamePart};

/// Most key/value entries in a bundle's metadata.
pub const METADATA_ENTRIES_MAX: usize = 32;
/// Largest metadata value.
pub const METADATA_VALUE_MAX_BYTES: usize = 1024;
/// Largest sum of metadata key and value lengths.
pub const METADATA_TOTAL_MAX_BYTES: usize = 8192;
/// Most recipients of one bundle (a bundle record with every address at its longest stays
/// well under 100 KiB).
pub const RECIPIENTS_MAX: usize = 256;
/// Most users named in a bundle's `Creators::Users` list.
pub const CREATORS_MAX: usize = 256;
/// Largest stream label (streams carry minimal metadata: a label, a kind, a policy).
pub const STREAM_LABEL_MAX_BYTES: usize = 64;

/// A bundle: owned by a user (`user@agent`, no client part), with an id unique per owner.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BundleRef {
    owner: Address,
    id: String,
}

impl BundleRef {
    /// The bundle `id` of `owner` (a client part of `owner` is dropped).
    pub fn new(owner: &Address, id: &str) -> Result<BundleRef, AddressError> {
        address::check_name(NamePart::BundleId, id)?;
        Ok(BundleRef {
            owner: owner.user_address(),
            id: id.to_owned(),
        })
    }

    pub fn owner(&self) -> &Address {
        &self.owner
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for BundleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.id)
    }
}

/// A stream's number inside its bundle: assigned in creation order, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamNo(pub u64);

impl fmt::Display for StreamNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Discrete streams are written and then sealed; continuous ones are open-ended (and may
/// be closed, which seals them too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    Discrete,
    Continuous,
}

/// Persistent data is readable while present; ephemeral data is readable once per user
/// (until the user acknowledges it), and the writer counts as having taken it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Retention {
    Persistent,
    Ephemeral,
}

/// How a stream's data is kept for each audience.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamPolicy {
    /// Retention for the bundle owner ("internal").
    pub internal: Retention,
    /// Retention for everybody else: recipients and a creator who is not the owner.
    pub external: Retention,
    /// Whether the stream is served to the bundle's recipients (else private to the owner
    /// and its creator).
    pub shared: bool,
}

impl StreamPolicy {
    pub const PERSISTENT_SHARED: StreamPolicy = StreamPolicy {
        internal: Retention::Persistent,
        external: Retention::Persistent,
        shared: true,
    };
    /// Real-time data: dropped once every recipient took it.
    pub const EPHEMERAL_SHARED: StreamPolicy = StreamPolicy {
        internal: Retention::Ephemeral,
        external: Retention::Ephemeral,
        shared: true,
    };
    /// The file drop: the owner keeps it, the writer cannot read it back, nobody else sees it.
    pub const INTERNALLY_PERSISTENT_EXTERNALLY_EPHEMERAL: StreamPolicy = StreamPolicy {
        internal: Retention::Persistent,
        external: Retention::Ephemeral,
        shared: false,
    };
}

impl Default for StreamPolicy {
    fn default() -> Self {
        StreamPolicy::PERSISTENT_SHARED
    }
}

/// Who may create streams in a bundle besides its owner.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Creators {
    #[default]
    OwnerOnly,
    /// Local users who accepted the bundle.
    Recipients,
    /// The listed local users.
    Users(BTreeSet<String>),
    /// Any local user of this agent.
    AnyLocalUser,
}

/// The owner-definable default permissions applied to streams created in a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct StreamDefaults {
    pub creators: Creators,
    /// Applied to every stream a non-owner creates (the owner may pick another).
    pub policy: StreamPolicy,
    /// Non-owners may only submit whole discrete streams (created, written and sealed in
    /// one call: `Agent::put_discrete`), so a submission can never be changed.
    pub write_once: bool,
}

/// A bundle's extended metadata: key/value pairs within the documented limits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Metadata(pub BTreeMap<String, Vec<u8>>);

impl Metadata {
    pub fn new() -> Metadata {
        Metadata::default()
    }

    /// Adds an entry (builder style); limits are checked when the metadata is stored.
    pub fn with(mut self, key: &str, value: impl Into<Vec<u8>>) -> Metadata {
        self.0.insert(key.to_owned(), value.into());
        self
    }

    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.0.get(key).map(Vec::as_slice)
    }

    pub fn total_bytes(&self) -> usize {
        self.0.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

/// A recipient's answer to a bundle invitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecipientStatus {
    Pending,
    Accepted,
    Rejected,
}

/// What `create_stream` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    pub label: Vec<u8>,
    pub kind: StreamKind,
    /// Only the owner may choose; `None` applies the bundle's default policy.
    pub policy: Option<StreamPolicy>,
}

impl StreamSpec {
    pub fn discrete(label: &str) -> StreamSpec {
        StreamSpec {
            label: label.as_bytes().to_vec(),
            kind: StreamKind::Discrete,
            policy: None,
        }
    }

    pub fn continuous(label: &str) -> StreamSpec {
        StreamSpec {
            label: label.as_bytes().to_vec(),
            kind: StreamKind::Continuous,
            policy: None,
        }
    }

    pub fn with_policy(mut self, policy: StreamPolicy) -> StreamSpec {
        self.policy = Some(policy);
        self
    }
}

/// A bundle as its readers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleInfo {
    pub bundle: BundleRef,
    pub metadata: Metadata,
    pub defaults: StreamDefaults,
    pub recipients: Vec<(Address, RecipientStatus)>,
    pub stream_count: usize,
    /// A copy of a bundle owned on another agent.
    pub mirror: bool,
}

/// A stream as `list_streams` shows it to one caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    pub no: StreamNo,
    pub label: Vec<u8>,
    pub creator: Address,
    pub kind: StreamKind,
    pub policy: StreamPolicy,
    /// `Some(record count)` once sealed (discrete) or closed (continuous).
    pub sealed_at: Option<u64>,
    /// Readable seqs are `first_seq..next_seq` (earlier ones were reclaimed).
    pub first_seq: u64,
    pub next_seq: u64,
    /// How the caller may read it (`None`: not at all).
    pub access: Option<Retention>,
}

/// "Everything after X": for each stream, the next seq a reader has not consumed yet.
/// Streams not named start at 0 (that is, at whatever is still present).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Position(pub BTreeMap<StreamNo, u64>);

impl Position {
    pub fn next_seq(&self, stream: StreamNo) -> u64 {
        self.0.get(&stream).copied().unwrap_or(0)
    }

    pub fn set(&mut self, stream: StreamNo, next_seq: u64) {
        self.0.insert(stream, next_seq);
    }
}

/// How much one fetch returns: at most `records_max` records and, except for a first
/// record larger than that, at most `bytes_max` payload bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit {
    pub records_max: usize,
    pub bytes_max: usize,
}

impl Default for PageLimit {
    fn default() -> Self {
        PageLimit {
            records_max: 100,
            bytes_max: 1 << 20,
        }
    }
}

/// One record handed to a reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub bundle: BundleRef,
    pub stream: StreamNo,
    pub seq: u64,
    pub payload: Vec<u8>,
    /// How the reader holds it: ephemeral records are gone for this user once acknowledged.
    pub retention: Retention,
}

/// One page of a fetch: the records and the position right after them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    pub items: Vec<Delivery>,
    /// Pass to `ack` to consume the page, or to `fetch` to get the next one.
    pub next: Position,
    /// More records were available than the limit allowed.
    pub more: bool,
}

impl Page {
    pub fn payload_bytes(&self) -> usize {
        self.items.iter().map(|d| d.payload.len()).sum()
    }
}

/// A recipient's notice that a bundle was shared with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    pub bundle: BundleRef,
    pub recipient: Address,
    pub metadata: Metadata,
}

/// What a subscription pushes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Data(Delivery),
    Invitation(Invitation),
    Sealed {
        bundle: BundleRef,
        stream: StreamNo,
        record_count: u64,
    },
}

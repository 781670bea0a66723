//! The engine's error type: every failure is a typed value with its context.

use std::fmt;

use crate::StreamId;

/// Where on the pool something was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// The superblock as a whole (no copy checks, or the copies disagree).
    Superblock,
    /// One copy of the superblock: 0 = A (page 0), 1 = B (page 1).
    SuperblockCopy {
        copy: u8,
    },
    StreamSlot {
        slot: u32,
    },
    SegmentEntry {
        segment: u32,
    },
    SegmentHeader {
        segment: u32,
    },
    /// A record position: byte offset inside the segment.
    Record {
        segment: u32,
        offset_bytes: u64,
    },
    /// A segment in the cold tier, by generation.
    ColdSegment {
        segment_gen: u64,
    },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Superblock => write!(f, "superblock"),
            Location::SuperblockCopy { copy } => {
                write!(f, "superblock copy {}", if *copy == 0 { 'A' } else { 'B' })
            }
            Location::StreamSlot { slot } => write!(f, "stream slot {slot}"),
            Location::SegmentEntry { segment } => write!(f, "segment table entry {segment}"),
            Location::SegmentHeader { segment } => write!(f, "header of segment {segment}"),
            Location::Record {
                segment,
                offset_bytes,
            } => {
                write!(f, "segment {segment} offset {offset_bytes}")
            }
            Location::ColdSegment { segment_gen } => write!(f, "cold segment {segment_gen}"),
        }
    }
}

/// What kind of damage a `Corruption` error found: typed, so that callers (repair, verify,
/// the crash harness) decide on it without parsing the detail text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptKind {
    /// A checksummed structure whose stored checksum does not match its bytes.
    Checksum,
    /// A structure whose checksum holds (or that has none) with a field no writer produces:
    /// magic, version, state or kind code, reserved bytes, a length or count out of bounds.
    BadField {
        /// The field's name as in docs/FORMAT.md.
        field: &'static str,
    },
    /// Two structures that must agree do not (segment header vs. table entry, sealed length
    /// or record count vs. the records found, index vs. record).
    Mismatch {
        /// The field's name as in docs/FORMAT.md.
        field: &'static str,
    },
    /// An invalid record where no crash could have left a torn write: valid data lies
    /// past it, or it lies outside the extent a write in flight could have reached. The
    /// location is the damaged record's; the records between it and `valid_again_at_bytes`
    /// are lost. (The damaged record's own stream and seq, when its header still checks,
    /// are in the error's detail; kept out of here so that errors stay small.)
    NotTorn {
        /// The first record past the damage that checks at its own position: its stream
        /// and seq (`None`: only unreadable bytes follow).
        next_valid: Option<(StreamId, u64)>,
        /// Segment offset where readable records start again (that record's offset), or
        /// of the first non-zero byte that proves the damage was not a torn write.
        valid_again_at_bytes: u32,
    },
    /// A sealed segment ends inside a batch (a lane seals only between batches).
    SealedInsideBatch,
    /// Two records claim the same stream and seq.
    DuplicateSeq {
        /// The stream.
        stream: StreamId,
        /// The duplicated seq.
        seq: u64,
    },
    /// A record follows a gap in its stream's seqs where no crash can leave one.
    SeqGap {
        /// The stream.
        stream: StreamId,
        /// The first seq past the gap.
        seq: u64,
    },
    /// A cold segment is damaged and no persistent-memory copy of it exists.
    ColdSegmentLost,
}

impl fmt::Display for CorruptKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorruptKind::Checksum => write!(f, "checksum mismatch"),
            CorruptKind::BadField { field } => write!(f, "impossible value in {field}"),
            CorruptKind::Mismatch { field } => write!(f, "{field} disagrees"),
            CorruptKind::NotTorn {
                next_valid,
                valid_again_at_bytes,
            } => {
                write!(f, "damaged record where no write was in flight")?;
                match next_valid {
                    Some((stream, seq)) => write!(
                        f,
                        ", records readable again at offset {valid_again_at_bytes} \
                         (stream {stream} seq {seq})"
                    ),
                    None => write!(f, ", data follows at offset {valid_again_at_bytes}"),
                }
            }
            CorruptKind::SealedInsideBatch => write!(f, "sealed segment ends inside a batch"),
            CorruptKind::DuplicateSeq { stream, seq } => {
                write!(f, "stream {stream} seq {seq} is duplicated")
            }
            CorruptKind::SeqGap { stream, seq } => {
                write!(f, "stream {stream} seq {seq} follows a gap")
            }
            CorruptKind::ColdSegmentLost => write!(f, "damaged cold segment with no copy"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("pool of {pool_bytes} bytes is too small: this configuration needs {needed_bytes}")]
    PoolTooSmall { pool_bytes: u64, needed_bytes: u64 },
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error("pool is not formatted as a pstream log (no superblock)")]
    Unformatted,
    #[error("pool already holds a pstream log; open it instead of creating one")]
    AlreadyFormatted,
    #[error(
        "pool is format version {found}; this build reads version {supported} only (nothing \
         was written; see docs/FORMAT.md, moving from v1 to v2)"
    )]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("corruption at {location}: {kind} ({detail})")]
    Corruption {
        /// Where the damage is.
        location: Location,
        /// What the damage is (decide on this, not on `detail`).
        kind: CorruptKind,
        /// Human-readable context: the values found.
        detail: String,
    },
    #[error("unknown stream {0}")]
    UnknownStream(StreamId),
    #[error("stream table is full ({slot_count} slots)")]
    StreamTableFull { slot_count: u64 },
    #[error("payload of {len_bytes} bytes exceeds the maximum of {max_bytes}")]
    PayloadTooLarge { len_bytes: usize, max_bytes: usize },
    #[error(
        "batch of {record_count} records takes {batch_bytes} bytes, more than the {capacity_bytes} \
         one batch may take (a batch is one atomic write into one segment); split it"
    )]
    BatchTooLarge {
        record_count: usize,
        batch_bytes: u64,
        capacity_bytes: u64,
    },
    #[error("label of {len_bytes} bytes exceeds the maximum of {max_bytes}")]
    LabelTooLong { len_bytes: usize, max_bytes: usize },
    #[error("pool is full: all {segment_count} segments hold live data")]
    PoolFull { segment_count: u64 },
    #[error("stream {stream} has no record {seq} (readable: {first_seq}..{next_seq})")]
    SeqOutOfRange {
        stream: StreamId,
        seq: u64,
        first_seq: u64,
        next_seq: u64,
    },
    #[error("stream {stream}: cannot trim to {first_seq}, its next seq is {next_seq}")]
    TrimBeyondTail {
        stream: StreamId,
        first_seq: u64,
        next_seq: u64,
    },
    #[error("stream {0} has used every sequence number")]
    SeqExhausted(StreamId),
    #[error("segment {segment} is {state} and cannot be migrated")]
    NotMigratable { segment: u32, state: &'static str },
    #[error("cold tier: {0}")]
    Cold(#[from] crate::cold::ColdError),
}

impl EngineError {
    pub(crate) fn corruption(
        location: Location,
        kind: CorruptKind,
        detail: impl Into<String>,
    ) -> Self {
        EngineError::Corruption {
            location,
            kind,
            detail: detail.into(),
        }
    }

    /// The kind of damage, if this is a `Corruption` error.
    pub fn corrupt_kind(&self) -> Option<CorruptKind> {
        match self {
            EngineError::Corruption { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

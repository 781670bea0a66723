//! The engine's error type: every failure is a typed value with its context.

use std::fmt;

use crate::StreamId;

/// Where on the pool something was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    Superblock,
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
    #[error("corruption at {location}: {detail}")]
    Corruption { location: Location, detail: String },
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
    pub(crate) fn corruption(location: Location, detail: impl Into<String>) -> Self {
        EngineError::Corruption {
            location,
            detail: detail.into(),
        }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

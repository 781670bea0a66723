//! The tiering error type: every failure is a typed value naming the file and, for positional
//! operations, the byte offset.

use std::fmt;
use std::io;

/// The I/O operation that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOp {
    Create,
    Open,
    Stat,
    Write,
    Read,
    Fdatasync,
    SyncDir,
    Rename,
    Remove,
    List,
    Setup,
    /// An object store upload (its parts and completion).
    Upload,
}

impl fmt::Display for IoOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            IoOp::Create => "create",
            IoOp::Open => "open",
            IoOp::Stat => "stat",
            IoOp::Write => "write",
            IoOp::Read => "read",
            IoOp::Fdatasync => "fdatasync",
            IoOp::SyncDir => "fsync of directory",
            IoOp::Rename => "rename",
            IoOp::Remove => "remove",
            IoOp::List => "list",
            IoOp::Setup => "setup",
            IoOp::Upload => "upload",
        };
        f.write_str(name)
    }
}

/// An on-media structure of a cold segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Structure {
    File,
    FileHeader,
    BlockHeader,
    BlockPayload,
    Footer,
    Trailer,
    Record,
}

impl fmt::Display for Structure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Structure::File => "file",
            Structure::FileHeader => "file header",
            Structure::BlockHeader => "block header",
            Structure::BlockPayload => "block payload",
            Structure::Footer => "footer",
            Structure::Trailer => "trailer",
            Structure::Record => "record",
        };
        f.write_str(name)
    }
}

/// What is wrong with bytes read back from a cold file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptKind {
    Truncated {
        structure: Structure,
        needed_bytes: u64,
        available_bytes: u64,
    },
    BadMagic {
        structure: Structure,
    },
    UnsupportedVersion {
        structure: Structure,
        version: u32,
    },
    ChecksumMismatch {
        structure: Structure,
        stored: u32,
        computed: u32,
    },
    /// A length, count or offset outside what the format allows.
    OutOfBounds {
        structure: Structure,
        field: &'static str,
        value: u64,
        limit: u64,
    },
    /// Two places that must agree do not (paired checks, e.g. trailer vs. file length).
    Mismatch {
        structure: Structure,
        field: &'static str,
        expected: u64,
        found: u64,
    },
    NonZeroReserved {
        structure: Structure,
    },
    UnknownCodec {
        structure: Structure,
        code: u8,
    },
    /// The footer's record index is not strictly ordered by (stream_id, seq).
    IndexNotSorted {
        entry: u64,
    },
    Decompress {
        message: String,
    },
}

impl fmt::Display for CorruptKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorruptKind::Truncated {
                structure,
                needed_bytes,
                available_bytes,
            } => write!(
                f,
                "{structure} truncated: needs {needed_bytes} bytes, {available_bytes} available"
            ),
            CorruptKind::BadMagic { structure } => write!(f, "{structure} has a bad magic"),
            CorruptKind::UnsupportedVersion { structure, version } => {
                write!(f, "{structure} has unsupported version {version}")
            }
            CorruptKind::ChecksumMismatch {
                structure,
                stored,
                computed,
            } => write!(
                f,
                "{structure} checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
            CorruptKind::OutOfBounds {
                structure,
                field,
                value,
                limit,
            } => {
                write!(
                    f,
                    "{structure} field {field} = {value} is out of bounds (limit {limit})"
                )
            }
            CorruptKind::Mismatch {
                structure,
                field,
                expected,
                found,
            } => {
                write!(
                    f,
                    "{structure} field {field} is {found}, expected {expected}"
                )
            }
            CorruptKind::NonZeroReserved { structure } => {
                write!(f, "{structure} has non-zero reserved bytes")
            }
            CorruptKind::UnknownCodec { structure, code } => {
                write!(f, "{structure} has unknown codec {code}")
            }
            CorruptKind::IndexNotSorted { entry } => {
                write!(
                    f,
                    "footer index entry {entry} is not ordered after its predecessor"
                )
            }
            CorruptKind::Decompress { message } => write!(f, "decompression failed: {message}"),
        }
    }
}

/// A decoder's verdict on untrusted bytes: `offset_bytes` is relative to the slice decoded.
/// Callers that know the file turn it into [`TieringError::Corrupt`] with an absolute offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub offset_bytes: u64,
    pub kind: CorruptKind,
}

impl DecodeError {
    pub(crate) fn new(offset_bytes: u64, kind: CorruptKind) -> DecodeError {
        DecodeError { offset_bytes, kind }
    }

    /// Moves the error to an absolute position in `file`, whose slice started at `base`.
    pub fn in_file(self, file: &str, base_offset_bytes: u64) -> TieringError {
        TieringError::Corrupt {
            file: file.to_owned(),
            offset_bytes: base_offset_bytes.saturating_add(self.offset_bytes),
            kind: self.kind,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at offset {}: {}", self.offset_bytes, self.kind)
    }
}

impl std::error::Error for DecodeError {}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TieringError {
    /// A positional I/O operation (read, write) failed.
    #[error("{op} of {file} at offset {offset_bytes} failed: {source}")]
    Io {
        op: IoOp,
        file: String,
        offset_bytes: u64,
        source: io::Error,
    },
    /// A file or directory operation failed.
    #[error("{op} of {file} failed: {source}")]
    Fs {
        op: IoOp,
        file: String,
        source: io::Error,
    },
    /// fdatasync (or the directory fsync) failed: what was written is NOT durable, and
    /// retrying the sync proves nothing. Keep the persistent-memory copy; migrate again later.
    #[error("{op} of {file} failed, data is not durable: {source}")]
    SyncFailed {
        op: IoOp,
        file: String,
        source: io::Error,
    },
    /// A write stored fewer bytes than asked (out of space or a failing device). The migration
    /// is abandoned rather than continued, see `writer`.
    #[error("short write to {file} at offset {offset_bytes}: {written_bytes} of {expected_bytes}")]
    ShortWrite {
        file: String,
        offset_bytes: u64,
        expected_bytes: u64,
        written_bytes: u64,
    },
    /// Bytes read back from a cold file are damaged or incomplete.
    #[error("corrupt cold file {file} at offset {offset_bytes}: {kind}")]
    Corrupt {
        file: String,
        offset_bytes: u64,
        kind: CorruptKind,
    },
    /// A fault-injecting I/O layer simulated a crash: nothing works until it is restarted.
    #[error("simulated crash: {op} of {file} did not happen")]
    SimulatedCrash { op: IoOp, file: String },
    #[error("no cold segment with generation {segment_gen:#x}")]
    UnknownSegment { segment_gen: u64 },
    #[error("cold segment {segment_gen:#x} has no record {seq} of stream {stream_id:#x}")]
    RecordNotFound {
        segment_gen: u64,
        stream_id: u64,
        seq: u64,
    },
    #[error("record {seq} of stream {stream_id:#x} appears twice in segment {segment_gen:#x}")]
    DuplicateRecord {
        segment_gen: u64,
        stream_id: u64,
        seq: u64,
    },
    #[error("record of {len_bytes} bytes exceeds the maximum of {max_bytes}")]
    RecordTooLarge { len_bytes: u64, max_bytes: u64 },
    #[error("cold segment {segment_gen:#x} is already being written")]
    MigrationInProgress { segment_gen: u64 },
    #[error("compression failed for {file}: {source}")]
    Compress { file: String, source: io::Error },
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A request to the object store failed after its retries, or ran past its timeout. A
    /// read never returns other bytes than the object's: it returns them or this error.
    #[error("{op} of object {object} ({range}) failed: {source}")]
    ObjectStore {
        op: IoOp,
        /// The object's location in its store (`s3://bucket/prefix/seg-...`).
        object: String,
        range: ByteRange,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The bytes of an object a request was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    Whole,
    /// `[start, end)`.
    Span {
        start: u64,
        end: u64,
    },
}

impl fmt::Display for ByteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ByteRange::Whole => f.write_str("whole object"),
            ByteRange::Span { start, end } => write!(f, "bytes {start}..{end}"),
        }
    }
}

impl TieringError {
    /// True when the error says the data is not durable on SSD (the caller keeps the
    /// persistent-memory copy authoritative).
    pub fn is_sync_failure(&self) -> bool {
        matches!(self, TieringError::SyncFailed { .. })
    }

    /// True for damaged bytes read back from media.
    pub fn is_corruption(&self) -> bool {
        matches!(self, TieringError::Corrupt { .. })
    }
}

pub type Result<T, E = TieringError> = std::result::Result<T, E>;

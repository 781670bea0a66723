//! The seam to the cold tier: segments that left persistent memory. The engine defines the
//! trait; `pstream-tiering` implements it over SSD files (io_uring). The engine decides *when*
//! a segment is authoritative where (the segment table on persistent memory); the cold tier
//! only stores, lists and reads segment files.
//!
//! Migration (see [`crate::Log::migrate_segment`]):
//! 1. entry `Sealed -> Migrating` (persisted): the persistent-memory copy stays authoritative;
//! 2. [`ColdTier::write_segment`]: the file is complete and durable (data and name) when it
//!    returns `Ok`; on `Err` the entry goes back to `Sealed` and the segment is retried later;
//! 3. entry `Migrating -> Cold { cold_id: segment_gen }` (persisted): the file is
//!    authoritative; the index points at it;
//! 4. once no reader can hold a borrow of the persistent-memory copy, it is scrubbed and
//!    freed.

use std::fmt;

/// Identifies the segment a cold file was made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColdSource {
    pub segment_index: u32,
    pub segment_gen: u64,
    pub pool_nonce: u64,
}

/// One record of a cold segment, as its file's index lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColdRecord {
    pub stream_id: u64,
    pub seq: u64,
    pub payload_len: u32,
}

/// A complete cold segment file found at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColdSegment {
    pub segment_gen: u64,
    /// The nonce of the pool the file was written for (from the file's own header). A file
    /// of another pool is never indexed, discarded or deleted: recovery reports it.
    pub pool_nonce: u64,
    pub records: Vec<ColdRecord>,
    pub stored_bytes: u64,
}

/// Everything the cold tier holds, as found at startup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColdInventory {
    pub segments: Vec<ColdSegment>,
    /// Generations whose files exist but are damaged (unreadable index, bad checksums).
    pub damaged: Vec<u64>,
}

/// One live record handed to [`ColdTier::write_segment`]: its payload, borrowed from
/// persistent memory, with the crc32 of that payload from its record header (the engine
/// verified the payload against it just before), so the cold tier need not hash it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColdPayload<'a> {
    pub stream_id: u64,
    pub seq: u64,
    pub payload: &'a [u8],
    /// crc32 (IEEE, as `crc32fast::hash`) of `payload`.
    pub payload_crc: u32,
}

/// What a completed cold write stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColdWritten {
    pub records: u64,
    pub payload_bytes: u64,
    pub stored_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColdErrorKind {
    /// An I/O error (EIO, ENOSPC, short write...).
    Io,
    /// fsync/fdatasync failed: the data is not durable, and retrying the sync proves nothing.
    SyncFailed,
    /// Bytes read back did not check out.
    Corrupt,
    /// No such cold segment or record.
    NotFound,
}

/// An error of the cold tier, with its context rendered by the implementation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColdError {
    pub kind: ColdErrorKind,
    pub message: String,
}

impl fmt::Display for ColdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl std::error::Error for ColdError {}

/// Storage for cold segments. Implementations must be safe to call from any thread; reads
/// must not block appends (the engine never holds an append-path lock while calling).
pub trait ColdTier: Send + Sync + 'static {
    /// Lists every complete cold segment with its record index (no payload is read).
    fn inventory(&self) -> Result<ColdInventory, ColdError>;

    /// Writes the records of one sealed segment as a durable file: on `Ok`, its data and its
    /// name survive a crash. `records` yields every live record in segment order, each
    /// with its verified payload crc.
    fn write_segment(
        &self,
        source: ColdSource,
        records: &mut dyn Iterator<Item = ColdPayload<'_>>,
    ) -> Result<ColdWritten, ColdError>;

    /// Reads the payload of one record.
    fn read(&self, segment_gen: u64, stream_id: u64, seq: u64) -> Result<Vec<u8>, ColdError>;

    /// Deletes a cold segment none of whose records is live any more.
    fn delete(&self, segment_gen: u64) -> Result<(), ColdError>;

    /// Removes a file that the segment table does not back (an interrupted migration whose
    /// persistent-memory copy stayed authoritative).
    fn discard(&self, segment_gen: u64) -> Result<(), ColdError>;
}

/// The cold tier of a log that has none: migration is impossible, and a pool whose segment
/// table says a segment is cold cannot be opened.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoColdTier;

impl ColdTier for NoColdTier {
    fn inventory(&self) -> Result<ColdInventory, ColdError> {
        Ok(ColdInventory::default())
    }

    fn write_segment(
        &self,
        _source: ColdSource,
        _records: &mut dyn Iterator<Item = ColdPayload<'_>>,
    ) -> Result<ColdWritten, ColdError> {
        Err(ColdError {
            kind: ColdErrorKind::Io,
            message: "this log has no cold tier".into(),
        })
    }

    fn read(&self, segment_gen: u64, _stream_id: u64, _seq: u64) -> Result<Vec<u8>, ColdError> {
        Err(ColdError {
            kind: ColdErrorKind::NotFound,
            message: format!("no cold tier holds segment generation {segment_gen}"),
        })
    }

    fn delete(&self, _segment_gen: u64) -> Result<(), ColdError> {
        Ok(())
    }

    fn discard(&self, _segment_gen: u64) -> Result<(), ColdError> {
        Ok(())
    }
}

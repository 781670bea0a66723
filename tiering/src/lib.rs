//! pstream-tiering: the SSD side of the cold tier. Sealed segments leave persistent memory as
//! one checksummed, optionally compressed file each, written crash-safely through io_uring,
//! and their records stay readable by (segment generation, stream id, seq).
//!
//! This crate knows nothing about the engine's pool: the engine drives it. Everything is
//! generic over the I/O seam [`SegmentIo`] ([`UringIo`] in production, [`FaultyIo`] in crash
//! and fault tests, [`StdIo`] as a portable fallback), so the engine holds a
//! `ColdStore<I: SegmentIo>` and its tests inject faults through the very same code.
//!
//! # The API the engine calls
//!
//! ```text
//! // Startup, before recovery decides anything:
//! let io = UringIo::open(ssd_dir, UringConfig::default())?;          // falls back to pread
//! let (cold, report) = ColdStore::open(io, ColdStoreConfig::default())?;
//! //   report.files: Vec<Arc<ColdFileIndex>>  every complete cold file, with its full record
//! //                 index (stream_id, seq, length, crc) — no data block was read
//! //   report.quarantined / report.corrupt_files: damaged files, by generation
//!
//! // Migration of one sealed segment (any thread; several segments may run concurrently):
//! let handle: ColdSegmentHandle = cold.write_segment(
//!     &SourceSegment { segment_index, segment_gen, pool_nonce },
//!     live_records,      // impl IntoIterator<Item = T>, T: Into<ColdRecord>: either
//! )?;                    // (stream_id, seq, payload) or ColdRecord { stream_id, seq, payload,
//!                        // payload_crc: Some(crc from the record header) } (saves a crc pass)
//!
//! // Reads, from any thread, never blocking appends:
//! let payload: Vec<u8> = cold.read_record(segment_gen, stream_id, seq)?;
//! let count: u64 = cold.scan_segment(segment_gen, |entry: &RecordEntry, payload: &[u8]| ..)?;
//! let index: Option<Arc<ColdFileIndex>> = cold.index(segment_gen);
//!
//! // Space and recovery:
//! cold.delete(segment_gen)?;               // all its records are dead
//! cold.discard_orphan(segment_gen)?;       // remove a file the segment table does not back
//! cold.purge_quarantined()?;
//! let stats: ColdStats = cold.stats();      // bytes, compression ratio, errors, cache
//! ```
//!
//! # Migration order (engine side)
//!
//! 1. Segment table entry `Sealed -> Migrating`, flush + fence. The persistent-memory copy
//!    stays authoritative.
//! 2. `cold.write_segment(..)`: temp file, fdatasync, rename, directory fsync. On `Err` the
//!    engine keeps the segment (entry back to `Sealed`), counts the failure and retries later;
//!    it must never retry only the fsync. [`TieringError::is_sync_failure`] tells a failed
//!    sync apart.
//! 3. Entry `Migrating -> Cold { cold_id: segment_gen }`, flush + fence. From here the cold
//!    file is authoritative; point the DRAM index of the segment's records at it.
//! 4. When every reader that could borrow the persistent-memory segment has left, scrub it
//!    and free it.
//!
//! # Recovery decision table (engine side)
//!
//! For every generation `g` that appears either in the segment table or in
//! `report.files` / `report.quarantined` / `report.corrupt_files`:
//!
//! | segment table entry with gen `g`  | cold file `g`        | decision                        |
//! |-----------------------------------|----------------------|---------------------------------|
//! | Open, Sealed or Migrating         | complete             | pmem authoritative:             |
//! |                                   |                      | `discard_orphan(g)`; Migrating  |
//! |                                   |                      | goes back to Sealed             |
//! | Open, Sealed or Migrating         | absent / damaged     | pmem authoritative; Migrating   |
//! |                                   |                      | goes back to Sealed             |
//! | Cold (cold_id = g)                | complete             | cold authoritative: index its   |
//! |                                   |                      | records from `ColdFileIndex`,   |
//! |                                   |                      | finish scrubbing the segment    |
//! | Cold (cold_id = g)                | absent / damaged     | if the pmem segment was not yet |
//! |                                   |                      | scrubbed: back to Sealed and    |
//! |                                   |                      | migrate again; else data loss:  |
//! |                                   |                      | report, never silently drop     |
//! | none (segment freed and reused)   | complete             | cold authoritative (the only    |
//! |                                   |                      | copy): index its records        |
//! | none                              | damaged              | data loss: report               |
//! | any                               | complete, but its    | not this pool's: leave it and   |
//! |                                   | `header.pool_nonce`  | report (never index or delete)  |
//! |                                   | is another pool's    |                                 |
//!
//! Records indexed from cold files are filtered by stream metadata (deleted incarnations,
//! trim points) exactly like records found in persistent memory. Every action is idempotent,
//! so recovery can itself be interrupted and re-run. `cold_id` is the segment generation:
//! the file name is derived from it ([`format::cold_file_name`]).
//!
//! # Guarantees
//!
//! - A final name (`seg-<gen>.pcold`) always names a complete file whose bytes a successful
//!   fdatasync made durable; `ColdStore::open` never adopts anything else.
//! - Every byte read back is checked (block header crc keyed with the generation, stored and
//!   uncompressed crcs, per-record payload crc); a mismatch is [`TieringError::Corrupt`]
//!   naming the file and offset, never a panic and never silent.
//! - Decoders ([`format::decode_file`] and friends) accept arbitrary bytes.

// Unsafe code is confined to io_uring submission and registration (`io/uring.rs`) and one
// posix_fadvise call (`io/std_io.rs`); each site is a function with a local `expect`.
#![deny(unsafe_code)]

mod cache;
mod dir_sync;
mod engine_tier;
mod error;
pub mod format;
pub mod io;
mod migrator;
mod raw;
mod readahead;
mod store;
mod writer;

pub use engine_tier::{
    cold_error, create_tiered, create_tiered_with, default_cold_dir, open_cold_tier,
    open_cold_tier_url, open_tiered, open_tiered_with, EngineColdTier, TierConfig, TieredError,
    TieredLog, UrlTieredLog,
};
pub use error::{ByteRange, CorruptKind, DecodeError, IoOp, Result, Structure, TieringError};
pub use format::{ColdFileIndex, Compression, RecordEntry};
pub use io::{
    ColdIo, ColdIoFile, ColdLocation, CountdownFault, DirectIo, FaultSpec, FaultyIo, IoBuf, IoFile,
    ObjectCredentials, ObjectTierConfig, SegmentIo, StdIo, UringConfig, UringIo,
};
#[cfg(feature = "object-store")]
pub use io::{FaultyStore, ObjectIo, StoreFault};
pub use migrator::{
    append_with_backpressure, occupancy, Migrator, MigratorHandle, MigratorPolicy, MigratorStats,
    PassReport,
};
pub use raw::{measure_raw_ssd, measure_raw_ssd_with, RawSsdBandwidth, RAW_PROBE_NAME};
pub use store::{ColdStats, ColdStore, ColdStoreConfig, OpenReport, QuarantinedFile};
pub use writer::{ColdRecord, ColdSegmentHandle, ColdWriter, ColdWriterConfig, SourceSegment};

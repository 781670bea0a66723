//! pstream-engine: a lock-light, crash-consistent, multi-stream append log on persistent
//! memory.
//!
//! A pool holds many *streams*; each is an append-only sequence of records numbered by a
//! dense per-stream `seq`. [`Log::append`] returns only once the record and every earlier
//! record of its stream are durable; [`Log::append_batch`] makes many records (of one or
//! several streams) durable with one fence, all or nothing, also across crashes. Reads are zero-copy borrows of persistent memory, protected by epochs so space
//! is never reused under a reader. After a crash at any instant, [`Log::open`] rebuilds
//! exactly the acknowledged state (see `docs/CRASH-MODEL.md` and `docs/FORMAT.md`).
//!
//! The engine is generic over the [`pmem_emul::Pmem`] seam: the same code runs on a mapped
//! pool file and on the crash simulator.

#![deny(unsafe_code)]

pub mod cold;
mod error;
pub mod format;
mod int_hash;
mod layout;
mod log;
mod probe;
mod recovery;
mod scan;
mod stream;
mod verify;

pub use cold::{ColdError, ColdErrorKind, ColdPayload, ColdTier, NoColdTier};
pub use error::{CorruptKind, EngineError, Location, Result};
pub use format::record::MAX_PAYLOAD_BYTES;
pub use format::segment::SegmentState;
pub use int_hash::{IntBuildHasher, IntHasher};
pub use log::{
    Log, LogConfig, LogStats, MigrationOutcome, OpenOptions, Record, SegmentInfo, StreamInfo,
    StreamIter, TierStats, NT_COPY_MIN_BYTES,
};
pub use probe::{probe, CopyFault, Probe};
pub use recovery::RecoveryReport;
pub use verify::{verify, VerifyReport};

/// Identifies a stream: slot index (low 32 bits) and the slot's incarnation (high 32 bits),
/// so an id is never reused after its stream is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0 as u32, self.0 >> 32)
    }
}

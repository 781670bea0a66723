//! The engine's cold tier over a [`ColdStore`]: [`EngineColdTier`] implements
//! [`pstream_engine::ColdTier`], so a `Log<P, EngineColdTier<I>>` migrates sealed segments to
//! SSD files and serves their records transparently.
//!
//! The engine owns every decision (its segment table says where a record is authoritative);
//! this adapter only translates: the store's open report becomes the engine's inventory, the
//! engine's record iterator becomes a cold write, and [`TieringError`]s become
//! [`ColdError`]s whose message is the error's display (it names file and offset).
//!
//! Convention: the cold directory of pool file `X` is `X.cold/` ([`default_cold_dir`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use pmem_emul::Pmem;
use pstream_engine::cold::{ColdInventory, ColdRecord as EngineRecord, ColdSegment};
use pstream_engine::cold::{ColdPayload, ColdSource, ColdWritten};
use pstream_engine::{
    ColdError, ColdErrorKind, ColdTier, EngineError, Log, LogConfig, OpenOptions, RecoveryReport,
};

use crate::error::TieringError;
use crate::format::corrupt_file_name;
use crate::io::{ColdIo, ObjectTierConfig, SegmentIo, UringConfig, UringIo};
use crate::store::{ColdStore, ColdStoreConfig, OpenReport};
use crate::writer::{ColdRecord, SourceSegment};

/// The cold directory used for pool file `pool_path` when none is given: `<pool_path>.cold`.
pub fn default_cold_dir(pool_path: &Path) -> PathBuf {
    let mut name = pool_path.as_os_str().to_owned();
    name.push(".cold");
    PathBuf::from(name)
}

/// Maps a tiering error to the engine's error kinds; the message is its display.
pub fn cold_error(error: &TieringError) -> ColdError {
    let kind = match error {
        TieringError::SyncFailed { .. } => ColdErrorKind::SyncFailed,
        TieringError::Corrupt { .. } | TieringError::DuplicateRecord { .. } => {
            ColdErrorKind::Corrupt
        }
        TieringError::UnknownSegment { .. } | TieringError::RecordNotFound { .. } => {
            ColdErrorKind::NotFound
        }
        _ => ColdErrorKind::Io,
    };
    ColdError {
        kind,
        message: error.to_string(),
    }
}

/// Errors of opening or creating a tiered log.
#[derive(Debug, thiserror::Error)]
pub enum TieredError {
    #[error("cold tier: {0}")]
    Tiering(#[from] TieringError),
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
}

/// [`ColdStore`] as the engine's [`ColdTier`].
pub struct EngineColdTier<I: SegmentIo> {
    store: ColdStore<I>,
    /// Damaged generations found at open (quarantined now or earlier), not yet discarded.
    damaged: Mutex<BTreeSet<u64>>,
}

impl<I: SegmentIo> std::fmt::Debug for EngineColdTier<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineColdTier")
            .field("segments", &self.store.segment_gens().len())
            .field("damaged", &*self.damaged.lock())
            .finish()
    }
}

impl<I: SegmentIo> EngineColdTier<I> {
    /// Opens the cold directory served by `io` (see [`ColdStore::open`]).
    pub fn open(io: I, config: ColdStoreConfig) -> Result<(Self, OpenReport), TieringError> {
        let (store, report) = ColdStore::open(io, config)?;
        Ok((EngineColdTier::from_store(store, &report), report))
    }

    /// Wraps an opened store; `report` is what its open found (for the damaged files).
    pub fn from_store(store: ColdStore<I>, report: &OpenReport) -> Self {
        let damaged = report
            .quarantined
            .iter()
            .map(|file| file.segment_gen)
            .chain(report.corrupt_files.iter().copied())
            .collect();
        EngineColdTier {
            store,
            damaged: Mutex::new(damaged),
        }
    }

    pub fn store(&self) -> &ColdStore<I> {
        &self.store
    }

    /// Damaged generations still in the directory (as `.corrupt` files).
    pub fn damaged(&self) -> Vec<u64> {
        self.damaged.lock().iter().copied().collect()
    }

    /// Removes the quarantined file of `segment_gen`, if any (syncs the directory if so).
    fn remove_corrupt(&self, segment_gen: u64) -> Result<(), TieringError> {
        if !self.damaged.lock().contains(&segment_gen) {
            return Ok(());
        }
        match self.store.io().remove(&corrupt_file_name(segment_gen)) {
            Ok(()) => self.store.io().sync_dir()?,
            Err(TieringError::Fs { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        self.damaged.lock().remove(&segment_gen);
        Ok(())
    }
}

impl<I: SegmentIo + 'static> ColdTier for EngineColdTier<I> {
    fn inventory(&self) -> Result<ColdInventory, ColdError> {
        let segments = self
            .store
            .segment_gens()
            .into_iter()
            .filter_map(|gen| self.store.index(gen))
            .map(|index| ColdSegment {
                segment_gen: index.segment_gen(),
                pool_nonce: index.header.pool_nonce,
                records: index
                    .records
                    .iter()
                    .map(|record| EngineRecord {
                        stream_id: record.stream_id,
                        seq: record.seq,
                        payload_len: record.len_bytes,
                    })
                    .collect(),
                stored_bytes: index.file_len_bytes,
            })
            .collect();
        Ok(ColdInventory {
            segments,
            damaged: self.damaged(),
        })
    }

    fn write_segment(
        &self,
        source: ColdSource,
        records: &mut dyn Iterator<Item = ColdPayload<'_>>,
    ) -> Result<ColdWritten, ColdError> {
        let segment = SourceSegment {
            segment_index: source.segment_index,
            segment_gen: source.segment_gen,
            pool_nonce: source.pool_nonce,
        };
        // The engine verified each payload against this crc while scanning the segment.
        let records = records.map(|record| ColdRecord {
            stream_id: record.stream_id,
            seq: record.seq,
            payload: record.payload,
            payload_crc: Some(record.payload_crc),
        });
        match self.store.write_segment(&segment, records) {
            Ok(handle) => Ok(ColdWritten {
                records: handle.record_count,
                payload_bytes: handle.bytes_uncompressed,
                stored_bytes: handle.bytes_stored,
            }),
            Err(error) => {
                // The persistent-memory copy stays authoritative: drop whatever the attempt
                // left (best effort; recovery discards it otherwise) so the retry starts clean.
                if !matches!(error, TieringError::MigrationInProgress { .. }) {
                    if let Err(discard_error) = self.store.discard_orphan(source.segment_gen) {
                        tracing::debug!(
                            segment_gen = source.segment_gen,
                            %discard_error,
                            "could not remove the leftovers of a failed migration"
                        );
                    }
                }
                Err(cold_error(&error))
            }
        }
    }

    fn read(&self, segment_gen: u64, stream_id: u64, seq: u64) -> Result<Vec<u8>, ColdError> {
        self.store
            .read_record(segment_gen, stream_id, seq)
            .map_err(|error| cold_error(&error))
    }

    fn delete(&self, segment_gen: u64) -> Result<(), ColdError> {
        self.store
            .delete(segment_gen)
            .map_err(|error| cold_error(&error))
    }

    fn discard(&self, segment_gen: u64) -> Result<(), ColdError> {
        self.store
            .discard_orphan(segment_gen)
            .and_then(|_| self.remove_corrupt(segment_gen))
            .map_err(|error| cold_error(&error))
    }
}

/// How the cold tier of a tiered log is opened.
#[derive(Debug, Clone, Default)]
pub struct TierConfig {
    pub store: ColdStoreConfig,
    pub uring: UringConfig,
    /// For a cold tier on an object store ([`open_cold_tier_url`]).
    pub object: ObjectTierConfig,
}

/// A log whose cold tier is SSD files through io_uring (or its pread fallback).
pub type TieredLog<P> = Log<P, EngineColdTier<UringIo>>;

/// Opens (creating the directory if missing) the cold tier in `cold_dir`: SSD files through
/// io_uring, or its pread fallback. For stores that assemble their log themselves (the agent
/// shim's `Agent::open_or_create_with_cold`).
pub fn open_cold_tier(
    cold_dir: &Path,
    tier: &TierConfig,
) -> Result<EngineColdTier<UringIo>, TieredError> {
    let io = UringIo::open(cold_dir, tier.uring.clone())?;
    Ok(EngineColdTier::open(io, tier.store.clone())?.0)
}

/// A log whose cold tier was chosen by URL: SSD files or an object store.
pub type UrlTieredLog<P> = Log<P, EngineColdTier<ColdIo>>;

/// Opens the cold tier at `url`: a directory path (SSD files through io_uring) or an object
/// store URL (`s3://bucket/prefix?endpoint=..`, `file:///dir`, `memory://`; see
/// [`crate::ObjectIo`]).
pub fn open_cold_tier_url(
    url: &str,
    tier: &TierConfig,
) -> Result<EngineColdTier<ColdIo>, TieredError> {
    let io = ColdIo::open(url, tier.uring.clone(), tier.object.clone())?;
    Ok(EngineColdTier::open(io, tier.store.clone())?.0)
}

/// Formats `pool` as an empty log whose cold segments go to `cold_dir` (created if missing).
pub fn create_tiered<P: Pmem>(
    pool: P,
    cold_dir: &Path,
    tier: &TierConfig,
    config: LogConfig,
    options: OpenOptions,
) -> Result<TieredLog<P>, TieredError> {
    let cold = open_cold_tier(cold_dir, tier)?;
    Ok(Log::create_with_cold(pool, cold, config, options)?)
}

/// Opens a formatted `pool` with its cold directory, recovering both.
pub fn open_tiered<P: Pmem>(
    pool: P,
    cold_dir: &Path,
    tier: &TierConfig,
    options: OpenOptions,
) -> Result<(TieredLog<P>, RecoveryReport), TieredError> {
    let cold = open_cold_tier(cold_dir, tier)?;
    Ok(Log::open_with_cold(pool, cold, options)?)
}

/// [`create_tiered`] over any I/O layer (tests: [`crate::StdIo`], [`crate::FaultyIo`]).
pub fn create_tiered_with<P: Pmem, I: SegmentIo + 'static>(
    pool: P,
    io: I,
    store: ColdStoreConfig,
    config: LogConfig,
    options: OpenOptions,
) -> Result<Log<P, EngineColdTier<I>>, TieredError> {
    let (cold, _) = EngineColdTier::open(io, store)?;
    Ok(Log::create_with_cold(pool, cold, config, options)?)
}

/// [`open_tiered`] over any I/O layer.
pub fn open_tiered_with<P: Pmem, I: SegmentIo + 'static>(
    pool: P,
    io: I,
    store: ColdStoreConfig,
    options: OpenOptions,
) -> Result<(Log<P, EngineColdTier<I>>, RecoveryReport), TieredError> {
    let (cold, _) = EngineColdTier::open(io, store)?;
    Ok(Log::open_with_cold(pool, cold, options)?)
}

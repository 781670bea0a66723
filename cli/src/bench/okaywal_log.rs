//! The okaywal peer: a Rust multi-writer write-ahead log with group commit
//! (<https://crates.io/crates/okaywal>). One append is one entry of one chunk, committed;
//! a batch is one entry of one chunk per payload, committed once. Checkpointing is trivial:
//! the benchmark keeps nothing, so okaywal may recycle a segment file as soon as it asks.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use okaywal::{Configuration, Entry, EntryId, LogManager, SegmentReader, WriteAheadLog};

use super::peer::{unique_path, Baseline, PeerConfig, PeerError, PeerLog};

/// Bytes okaywal preallocates per segment file; it starts a checkpoint at three quarters.
const SEGMENT_PREALLOCATE_BYTES: u32 = 16 << 20;

/// The okaywal log. See the module documentation.
#[derive(Debug)]
pub struct OkayWalLog {
    dir: PathBuf,
    wal: Option<WriteAheadLog>,
    checkpoints: Arc<AtomicU64>,
    /// Removed by the interrupt handler on Ctrl-C while this lives.
    _registered: crate::interrupt::Registered,
}

/// Keeps nothing: every checkpoint is accepted at once.
#[derive(Debug)]
struct Discard {
    checkpoints: Arc<AtomicU64>,
}

impl LogManager for Discard {
    fn recover(&mut self, _entry: &mut Entry<'_>) -> std::io::Result<()> {
        Ok(())
    }

    fn checkpoint_to(
        &mut self,
        _last_checkpointed_id: EntryId,
        _checkpointed_entries: &mut SegmentReader,
        _wal: &WriteAheadLog,
    ) -> std::io::Result<()> {
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl OkayWalLog {
    /// Creates a fresh log in a new directory under `config.dir`.
    pub fn create(config: &PeerConfig) -> Result<OkayWalLog, PeerError> {
        let dir = unique_path(&config.dir, Baseline::Okaywal, ".wal");
        let checkpoints = Arc::new(AtomicU64::new(0));
        let manager = Discard {
            checkpoints: Arc::clone(&checkpoints),
        };
        let wal = Configuration::default_for(&dir)
            .preallocate_bytes(SEGMENT_PREALLOCATE_BYTES)
            .checkpoint_after_bytes(u64::from(SEGMENT_PREALLOCATE_BYTES) / 4 * 3)
            .open(manager)
            .map_err(|source| PeerError::Io {
                baseline: Baseline::Okaywal,
                op: "open",
                path: dir.clone(),
                source,
            })?;
        Ok(OkayWalLog {
            _registered: crate::interrupt::register(&dir),
            dir,
            wal: Some(wal),
            checkpoints,
        })
    }

    fn io_error(&self, op: &'static str, source: std::io::Error) -> PeerError {
        PeerError::Io {
            baseline: Baseline::Okaywal,
            op,
            path: self.dir.clone(),
            source,
        }
    }

    fn commit(&self, payloads: &[&[u8]]) -> Result<(), PeerError> {
        let Some(wal) = self.wal.as_ref() else {
            return Err(self.io_error("append", std::io::ErrorKind::NotConnected.into()));
        };
        let mut entry = wal
            .begin_entry()
            .map_err(|e| self.io_error("begin_entry", e))?;
        for payload in payloads {
            entry
                .write_chunk(payload)
                .map_err(|e| self.io_error("write_chunk", e))?;
        }
        // IMPORTANT: commit returns once the entry is synced (okaywal's group commit).
        entry.commit().map_err(|e| self.io_error("commit", e))?;
        Ok(())
    }

    fn shutdown(&mut self) -> Result<(), PeerError> {
        match self.wal.take() {
            Some(wal) => wal.shutdown().map_err(|e| self.io_error("shutdown", e)),
            None => Ok(()),
        }
    }
}

impl PeerLog for OkayWalLog {
    fn append(&self, payload: &[u8]) -> Result<(), PeerError> {
        self.commit(&[payload])
    }

    fn append_batch(&self, payloads: &[&[u8]]) -> Result<(), PeerError> {
        self.commit(payloads)
    }

    fn mode(&self) -> String {
        format!(
            "okaywal 0.3 entry commit (fsync, group commit), {} MiB segments",
            SEGMENT_PREALLOCATE_BYTES >> 20
        )
    }

    fn recycles(&self) -> u64 {
        self.checkpoints.load(Ordering::Relaxed)
    }

    fn remove(mut self: Box<Self>) -> Result<(), PeerError> {
        self.shutdown()?;
        std::fs::remove_dir_all(&self.dir).map_err(|e| self.io_error("remove", e))
    }
}

impl Drop for OkayWalLog {
    fn drop(&mut self) {
        let _ = self.shutdown();
        if self.dir.exists() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn appends_commit_and_the_directory_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let config = PeerConfig {
            dir: dir.path().to_path_buf(),
            space_bytes: 1 << 20,
        };
        let log = OkayWalLog::create(&config).unwrap();
        log.append(b"one").unwrap();
        log.append_batch(&[b"two", b"three"]).unwrap();
        Box::new(log).remove().unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}

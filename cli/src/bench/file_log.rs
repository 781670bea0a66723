//! The `fdatasync` peer: what most applications use for a durable log today. A file opened
//! for append; each record is framed (length, CRC-32, payload) and written with one
//! `write`, and the append returns after `fdatasync` (`File::sync_data`).
//!
//! Threads write under a mutex (so frames never interleave) and sync outside it: a sync
//! that starts after a write returned covers it, so concurrent appenders share syncs the way
//! a group commit does. When the file reaches its cap it is truncated to zero under the
//! lock (the peer's "trim"), so a run on `/dev/shm` does not eat the machine's memory.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::peer::{unique_path, Baseline, PeerConfig, PeerError, PeerLog};

/// Bytes of a frame header: payload length (u32 LE) and CRC-32 of the payload (u32 LE).
pub const FRAME_HEADER_BYTES: usize = 8;

/// The file log. See the module documentation.
#[derive(Debug)]
pub struct FileLog {
    path: PathBuf,
    /// The file and its length; the lock orders writes and truncation.
    file: Mutex<Appender>,
    /// A second handle to the same file, so syncs run outside the write lock.
    sync_handle: File,
    cap_bytes: u64,
    recycles: AtomicU64,
    removed: bool,
    /// Removed by the interrupt handler on Ctrl-C while this lives.
    _registered: crate::interrupt::Registered,
}

#[derive(Debug)]
struct Appender {
    file: File,
    len_bytes: u64,
}

thread_local! {
    /// Frames of one call, reused across calls.
    static FRAME_BUFFER: std::cell::RefCell<Vec<u8>> = const {
        std::cell::RefCell::new(Vec::new())
    };
}

impl FileLog {
    /// Creates a fresh log file in `config.dir`, capped at `config.space_bytes`.
    pub fn create(config: &PeerConfig) -> Result<FileLog, PeerError> {
        let path = unique_path(&config.dir, Baseline::Fdatasync, ".log");
        let io_error = |op, source| PeerError::Io {
            baseline: Baseline::Fdatasync,
            op,
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io_error("create", e))?;
        let sync_handle = file.try_clone().map_err(|e| io_error("dup", e))?;
        Ok(FileLog {
            _registered: crate::interrupt::register(&path),
            path: path.clone(),
            file: Mutex::new(Appender { file, len_bytes: 0 }),
            sync_handle,
            cap_bytes: config.space_bytes.max(1 << 20) as u64,
            recycles: AtomicU64::new(0),
            removed: false,
        })
    }

    fn io_error(&self, op: &'static str, source: std::io::Error) -> PeerError {
        PeerError::Io {
            baseline: Baseline::Fdatasync,
            op,
            path: self.path.clone(),
            source,
        }
    }

    /// Writes the frames of `payloads` with one `write`, then `fdatasync`s.
    fn write_and_sync(&self, payloads: &[&[u8]]) -> Result<(), PeerError> {
        FRAME_BUFFER.with(|buffer| {
            let mut frames = buffer.borrow_mut();
            frames.clear();
            frames.reserve(payloads.iter().map(|p| FRAME_HEADER_BYTES + p.len()).sum());
            for payload in payloads {
                let len = u32::try_from(payload.len()).map_err(|_| PeerError::Unsupported {
                    baseline: Baseline::Fdatasync,
                    reason: format!("payload of {} bytes does not fit a frame", payload.len()),
                })?;
                frames.extend_from_slice(&len.to_le_bytes());
                frames.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
                frames.extend_from_slice(payload);
            }
            self.write_frames(&frames)
        })?;
        // IMPORTANT: the acknowledgement waits for fdatasync of everything written so far.
        self.sync_handle
            .sync_data()
            .map_err(|e| self.io_error("fdatasync", e))
    }

    fn write_frames(&self, frames: &[u8]) -> Result<(), PeerError> {
        let mut appender = self.file.lock();
        if appender.len_bytes + frames.len() as u64 > self.cap_bytes {
            appender
                .file
                .set_len(0)
                .map_err(|e| self.io_error("truncate", e))?;
            appender.len_bytes = 0;
            self.recycles.fetch_add(1, Ordering::Relaxed);
        }
        appender
            .file
            .write_all(frames)
            .map_err(|e| self.io_error("write", e))?;
        appender.len_bytes += frames.len() as u64;
        Ok(())
    }
}

impl PeerLog for FileLog {
    fn append(&self, payload: &[u8]) -> Result<(), PeerError> {
        self.write_and_sync(&[payload])
    }

    fn append_batch(&self, payloads: &[&[u8]]) -> Result<(), PeerError> {
        self.write_and_sync(payloads)
    }

    fn mode(&self) -> String {
        "write + fdatasync per call (file opened with O_APPEND, framed records)".to_string()
    }

    fn recycles(&self) -> u64 {
        self.recycles.load(Ordering::Relaxed)
    }

    fn remove(mut self: Box<Self>) -> Result<(), PeerError> {
        self.removed = true;
        std::fs::remove_file(&self.path).map_err(|e| self.io_error("remove", e))
    }
}

impl Drop for FileLog {
    fn drop(&mut self) {
        if !self.removed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn frames_are_written_and_the_file_recycles_at_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let config = PeerConfig {
            dir: dir.path().to_path_buf(),
            space_bytes: 1 << 20,
        };
        let log = FileLog::create(&config).unwrap();
        log.append(b"hello").unwrap();
        log.append_batch(&[b"a", b"bc"]).unwrap();
        let bytes = std::fs::read(&log.path).unwrap();
        assert_eq!(bytes.len(), 3 * FRAME_HEADER_BYTES + 5 + 1 + 2);
        assert_eq!(&bytes[..4], &5u32.to_le_bytes());
        assert_eq!(&bytes[4..8], &crc32fast::hash(b"hello").to_le_bytes());
        assert_eq!(&bytes[8..13], b"hello");
        let big = vec![7u8; 300 << 10];
        for _ in 0..4 {
            log.append(&big).unwrap();
        }
        assert_eq!(log.recycles(), 1);
        let len = std::fs::metadata(&log.path).unwrap().len();
        assert_eq!(len, (FRAME_HEADER_BYTES + big.len()) as u64);
        Box::new(log).remove().unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}

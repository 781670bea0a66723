//! Removal of a run's temporary files when it is interrupted (Ctrl-C, SIGINT or SIGTERM).
//!
//! The benchmarks create pool files of up to several GiB, by default in `/dev/shm` (memory).
//! Each one is registered here for as long as it exists ([`register`]); the handler that
//! [`install`] sets removes every registered path and exits with status 130.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// Exit status of a run interrupted by a signal (128 + SIGINT).
pub const INTERRUPTED_EXIT_CODE: i32 = 130;

/// Temporary paths by registration number.
static REGISTERED: Mutex<BTreeMap<u64, PathBuf>> = Mutex::new(BTreeMap::new());
static NEXT_KEY: AtomicU64 = AtomicU64::new(0);

/// A registered temporary path: removed by the interrupt handler while this lives.
#[derive(Debug)]
#[must_use = "the path is unregistered when this is dropped"]
pub struct Registered(u64);

impl Drop for Registered {
    fn drop(&mut self) {
        REGISTERED.lock().remove(&self.0);
    }
}

/// Registers `path` (a file or a directory) for removal if the run is interrupted.
pub fn register(path: &Path) -> Registered {
    let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
    REGISTERED.lock().insert(key, path.to_path_buf());
    Registered(key)
}

/// Installs the handler of Ctrl-C, SIGINT and SIGTERM: it removes every registered path,
/// says so on stderr and exits with [`INTERRUPTED_EXIT_CODE`].
pub fn install() -> Result<(), ctrlc::Error> {
    ctrlc::set_handler(|| {
        let paths: Vec<PathBuf> = REGISTERED.lock().values().cloned().collect();
        for path in &paths {
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(path)
            } else {
                std::fs::remove_file(path)
            };
            match removed {
                Ok(()) => eprintln!("pstream: interrupted: removed {}", path.display()),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => eprintln!(
                    "pstream: interrupted: cannot remove {}: {error}",
                    path.display()
                ),
            }
        }
        std::process::exit(INTERRUPTED_EXIT_CODE);
    })
}

/// A temporary file (a benchmark's pool): registered with the interrupt handler while it
/// lives, removed on drop (error paths) or by [`TempFile::remove`] (which reports failure).
#[derive(Debug)]
pub struct TempFile {
    /// `None` once removed.
    path: Option<PathBuf>,
    _registered: Registered,
}

impl TempFile {
    /// Takes charge of `path` (which need not exist yet).
    pub fn new(path: PathBuf) -> TempFile {
        let registered = register(&path);
        TempFile {
            path: Some(path),
            _registered: registered,
        }
    }

    /// Removes the file now.
    pub fn remove(mut self) -> std::io::Result<()> {
        match self.path.take() {
            Some(path) => std::fs::remove_file(path),
            None => Ok(()),
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            if let Err(error) = std::fs::remove_file(&path) {
                if error.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), %error, "cannot remove temporary pool");
                }
            }
        }
    }
}

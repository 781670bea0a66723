//! Errors of pool files: creating, opening, validating and closing an [`MmapPool`].
//!
//! Every variant carries the pool path and the figures that explain it, so a message read in a
//! log is enough to know which file is wrong and how.
//!
//! [`MmapPool`]: crate::MmapPool

use std::io;
use std::path::{Path, PathBuf};

use crate::flush::FlushOverrideError;

/// The path the header decoder puts into its errors; [`PmemError::with_path`] replaces it.
pub(crate) const UNKNOWN_PATH: &str = "<header buffer>";

/// Why a pool file could not be created, opened or closed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum PmemError {
    /// The pool file (or, for `create`, its parent directory) does not exist.
    #[error("pool {path}: no such file or directory")]
    PathMissing { path: PathBuf },

    /// The path names something other than a regular file.
    #[error("pool {path}: not a regular file (it is a {kind})")]
    NotRegularFile { path: PathBuf, kind: &'static str },

    /// `create` was asked for a file that already exists.
    #[error("pool {path}: already exists; refusing to overwrite it")]
    AlreadyExists { path: PathBuf },

    /// The data region is smaller than the minimum (one page).
    #[error(
        "pool {path}: data region of {data_len_bytes} bytes is too small (minimum {min_bytes})"
    )]
    TooSmall {
        path: PathBuf,
        data_len_bytes: u64,
        min_bytes: u64,
    },

    /// The data region is larger than this build supports.
    #[error(
        "pool {path}: data region of {data_len_bytes} bytes is too large (maximum {max_bytes})"
    )]
    TooLarge {
        path: PathBuf,
        data_len_bytes: u64,
        max_bytes: u64,
    },

    /// The data region is not a whole number of pages.
    #[error(
        "pool {path}: data region of {data_len_bytes} bytes is not a multiple of the page size \
         ({page_size_bytes} bytes)"
    )]
    NotPageMultiple {
        path: PathBuf,
        data_len_bytes: u64,
        page_size_bytes: u64,
    },

    /// The file does not start with the pool magic: it is not a pstream pool.
    #[error(
        "pool {path}: wrong magic {found:02x?} (expected {expected:02x?}): not a pstream pool"
    )]
    WrongMagic {
        path: PathBuf,
        found: [u8; 8],
        expected: [u8; 8],
    },

    /// The pool was written by a format version this build cannot read.
    #[error("pool {path}: unsupported format version {found} (this build reads {supported})")]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },

    /// The header checksum does not match its contents: the header is corrupt.
    #[error(
        "pool {path}: header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
    )]
    HeaderChecksum {
        path: PathBuf,
        stored: u32,
        computed: u32,
    },

    /// A header field has a value the format does not allow (its checksum was correct).
    #[error("pool {path}: invalid header field {field} = {value}: {reason}")]
    HeaderField {
        path: PathBuf,
        field: &'static str,
        value: u64,
        reason: &'static str,
    },

    /// The file length differs from what its header records (or is shorter than a header).
    #[error(
        "pool {path}: file is {actual_file_bytes} bytes but should be {expected_file_bytes} \
         (truncated or extended behind pstream's back)"
    )]
    Truncated {
        path: PathBuf,
        expected_file_bytes: u64,
        actual_file_bytes: u64,
    },

    /// The file cannot be opened for writing (mode bits, immutable flag, read-only mount).
    #[error("pool {path}: cannot open for reading and writing (read-only or permission denied)")]
    ReadOnly {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Another open pool (in this process or another one) holds the pool's lock.
    #[error("pool {path}: already open (locked by another open pool in this or another process)")]
    AlreadyOpen { path: PathBuf },

    /// The `PSTREAM_FLUSH` override names an instruction this machine cannot run.
    #[error("pool {path}: {source}")]
    FlushOverride {
        path: PathBuf,
        #[source]
        source: FlushOverrideError,
    },

    /// Any other failed system call, named by `op`.
    #[error("pool {path}: {op} failed: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

impl PmemError {
    /// The pool path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            PmemError::PathMissing { path }
            | PmemError::NotRegularFile { path, .. }
            | PmemError::AlreadyExists { path }
            | PmemError::TooSmall { path, .. }
            | PmemError::TooLarge { path, .. }
            | PmemError::NotPageMultiple { path, .. }
            | PmemError::WrongMagic { path, .. }
            | PmemError::UnsupportedVersion { path, .. }
            | PmemError::HeaderChecksum { path, .. }
            | PmemError::HeaderField { path, .. }
            | PmemError::Truncated { path, .. }
            | PmemError::ReadOnly { path, .. }
            | PmemError::AlreadyOpen { path }
            | PmemError::FlushOverride { path, .. }
            | PmemError::Io { path, .. } => path,
        }
    }

    /// Replaces the path the error names. The header decoder works on a byte buffer and does
    /// not know the file; the pool fills the path in.
    pub fn with_path(mut self, new_path: &Path) -> Self {
        match &mut self {
            PmemError::PathMissing { path }
            | PmemError::NotRegularFile { path, .. }
            | PmemError::AlreadyExists { path }
            | PmemError::TooSmall { path, .. }
            | PmemError::TooLarge { path, .. }
            | PmemError::NotPageMultiple { path, .. }
            | PmemError::WrongMagic { path, .. }
            | PmemError::UnsupportedVersion { path, .. }
            | PmemError::HeaderChecksum { path, .. }
            | PmemError::HeaderField { path, .. }
            | PmemError::Truncated { path, .. }
            | PmemError::ReadOnly { path, .. }
            | PmemError::AlreadyOpen { path }
            | PmemError::FlushOverride { path, .. }
            | PmemError::Io { path, .. } => *path = new_path.to_path_buf(),
        }
        self
    }

    /// Classifies a failed system call on `path`: missing and permission errors get their
    /// own variants, everything else becomes [`PmemError::Io`].
    pub(crate) fn from_io(path: &Path, op: &'static str, source: io::Error) -> Self {
        let path = path.to_path_buf();
        match source.kind() {
            io::ErrorKind::NotFound => PmemError::PathMissing { path },
            io::ErrorKind::AlreadyExists => PmemError::AlreadyExists { path },
            io::ErrorKind::PermissionDenied => PmemError::ReadOnly { path, source },
            _ if source.raw_os_error() == Some(libc::EROFS) => PmemError::ReadOnly { path, source },
            _ => PmemError::Io { path, op, source },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_names_the_path() {
        let path = Path::new("/pools/p1.pool");
        let errors = [
            PmemError::PathMissing { path: path.into() },
            PmemError::AlreadyOpen { path: path.into() },
            PmemError::TooSmall {
                path: path.into(),
                data_len_bytes: 0,
                min_bytes: 4096,
            },
            PmemError::Truncated {
                path: path.into(),
                expected_file_bytes: 8192,
                actual_file_bytes: 4096,
            },
            PmemError::from_io(path, "open", io::Error::from_raw_os_error(libc::EACCES)),
            PmemError::from_io(path, "mmap", io::Error::from_raw_os_error(libc::ENOMEM)),
        ];
        for error in errors {
            let message = error.to_string();
            assert!(message.contains("/pools/p1.pool"), "{message}");
            assert_eq!(error.path(), path);
        }
    }

    #[test]
    fn with_path_replaces_the_placeholder() {
        let error = PmemError::WrongMagic {
            path: UNKNOWN_PATH.into(),
            found: [0; 8],
            expected: crate::POOL_MAGIC,
        };
        let error = error.with_path(Path::new("/x.pool"));
        assert_eq!(error.path(), Path::new("/x.pool"));
        assert!(error.to_string().starts_with("pool /x.pool: wrong magic"));
    }

    #[test]
    fn io_errors_are_classified() {
        let path = Path::new("/p");
        let missing = io::Error::from(io::ErrorKind::NotFound);
        assert!(matches!(
            PmemError::from_io(path, "open", missing),
            PmemError::PathMissing { .. }
        ));
        let rofs = io::Error::from_raw_os_error(libc::EROFS);
        assert!(matches!(
            PmemError::from_io(path, "open", rofs),
            PmemError::ReadOnly { .. }
        ));
        let eio = io::Error::from_raw_os_error(libc::EIO);
        assert!(matches!(
            PmemError::from_io(path, "fsync", eio),
            PmemError::Io { op: "fsync", .. }
        ));
    }
}

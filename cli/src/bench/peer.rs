//! The peers pstream is measured against in `pstream bench append --baseline ...`: other
//! durable logs, driven with the same payloads, threads and batches, on the same directory.
//!
//! Every peer is a [`PeerLog`]: an append that returns once the payload is durable by the
//! peer's own definition, and a batched append that makes many payloads durable with one
//! persist (one `pmemlog_appendv`, one `fdatasync`, one okaywal commit). A peer that fills its
//! space recycles it inside the call (rewind, truncate, checkpoint), as pstream trims.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::file_log::FileLog;

/// The peer logs `--baseline` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Baseline {
    /// PMDK libpmemlog in pmem mode (`PMEM_IS_PMEM_FORCE=1`); needs the `pmdk` feature.
    Pmemlog,
    /// A file opened for append, `fdatasync` after every append or batch.
    Fdatasync,
    /// okaywal, a Rust write-ahead log with group commit; needs the `okaywal` feature.
    Okaywal,
}

impl Baseline {
    /// Every peer, in report order.
    pub const ALL: [Baseline; 3] = [Baseline::Pmemlog, Baseline::Fdatasync, Baseline::Okaywal];

    /// The stable name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Baseline::Pmemlog => "pmemlog",
            Baseline::Fdatasync => "fdatasync",
            Baseline::Okaywal => "okaywal",
        }
    }

    /// Whether this build can run the peer (its cargo feature is on).
    pub fn is_available(self) -> bool {
        match self {
            Baseline::Pmemlog => cfg!(feature = "pmdk"),
            Baseline::Fdatasync => true,
            Baseline::Okaywal => cfg!(feature = "okaywal"),
        }
    }
}

impl std::fmt::Display for Baseline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a peer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// This build leaves the peer out.
    #[error("baseline {baseline} is not in this build: {how}")]
    Unavailable {
        baseline: Baseline,
        how: &'static str,
    },
    /// A file operation of a file-based peer failed.
    #[error("{baseline}: {op} {path}: {source}")]
    Io {
        baseline: Baseline,
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A libpmemlog call failed; `message` is `pmemlog_errormsg()`.
    #[error("pmemlog: {op} failed: {message}")]
    Pmdk { op: &'static str, message: String },
    /// The payload or batch cannot be given to this peer.
    #[error("{baseline}: {reason}")]
    Unsupported { baseline: Baseline, reason: String },
}

/// A durable log driven by the benchmark. Shared by every appending thread.
pub trait PeerLog: Sync {
    /// Appends one payload; returns once it is durable.
    fn append(&self, payload: &[u8]) -> Result<(), PeerError>;

    /// Appends every payload and makes them durable with one persist.
    fn append_batch(&self, payloads: &[&[u8]]) -> Result<(), PeerError>;

    /// What the peer's acknowledgement means here (for the report).
    fn mode(&self) -> String;

    /// Times the peer recycled its space (rewind, truncate) so far.
    fn recycles(&self) -> u64;

    /// Removes the peer's files; also done (best effort) on drop.
    fn remove(self: Box<Self>) -> Result<(), PeerError>;
}

/// Sizes a peer is opened with.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Directory for the peer's files (the pstream pool's directory).
    pub dir: PathBuf,
    /// Space the peer may fill before it recycles (pool size, file cap).
    pub space_bytes: usize,
}

/// How to get the peers that the default build leaves out.
pub const PMDK_HOW: &str = "rebuild with `--features pmdk` after installing libpmemlog-dev \
     (Debian/Ubuntu: `apt-get install libpmemlog-dev`), e.g. \
     `cargo run --release --features pmdk -- bench append --baseline pmemlog`";
pub const OKAYWAL_HOW: &str = "rebuild with `--features okaywal`, e.g. \
     `cargo run --release --features okaywal -- bench append --baseline okaywal`";

/// `Ok` if this build can run `baseline`, else the error saying how to get it.
pub fn check_available(baseline: Baseline) -> Result<(), PeerError> {
    let how = match baseline {
        Baseline::Pmemlog => PMDK_HOW,
        Baseline::Okaywal => OKAYWAL_HOW,
        Baseline::Fdatasync => "",
    };
    if baseline.is_available() {
        Ok(())
    } else {
        Err(PeerError::Unavailable { baseline, how })
    }
}

/// Opens a fresh instance of `baseline` in `config.dir`, ready to append.
pub fn open_peer(baseline: Baseline, config: &PeerConfig) -> Result<Box<dyn PeerLog>, PeerError> {
    check_available(baseline)?;
    match baseline {
        Baseline::Fdatasync => Ok(Box::new(FileLog::create(config)?)),
        Baseline::Pmemlog => open_pmemlog(config),
        Baseline::Okaywal => open_okaywal(config),
    }
}

#[cfg(feature = "pmdk")]
fn open_pmemlog(config: &PeerConfig) -> Result<Box<dyn PeerLog>, PeerError> {
    Ok(Box::new(super::pmdk::PmemLog::create(config)?))
}

#[cfg(not(feature = "pmdk"))]
fn open_pmemlog(_config: &PeerConfig) -> Result<Box<dyn PeerLog>, PeerError> {
    Err(PeerError::Unavailable {
        baseline: Baseline::Pmemlog,
        how: PMDK_HOW,
    })
}

#[cfg(feature = "okaywal")]
fn open_okaywal(config: &PeerConfig) -> Result<Box<dyn PeerLog>, PeerError> {
    Ok(Box::new(super::okaywal_log::OkayWalLog::create(config)?))
}

#[cfg(not(feature = "okaywal"))]
fn open_okaywal(_config: &PeerConfig) -> Result<Box<dyn PeerLog>, PeerError> {
    Err(PeerError::Unavailable {
        baseline: Baseline::Okaywal,
        how: OKAYWAL_HOW,
    })
}

/// A file or directory name for a peer that no other run uses at the same time.
pub(crate) fn unique_path(dir: &Path, baseline: Baseline, suffix: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let sequence = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(
        "pstream-peer-{baseline}-{}-{sequence}{suffix}",
        std::process::id()
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_clap() {
        use clap::ValueEnum;
        for baseline in Baseline::ALL {
            let parsed = Baseline::from_str(baseline.as_str(), false).unwrap();
            assert_eq!(parsed, baseline);
            assert_eq!(
                serde_json::to_string(&baseline).unwrap(),
                format!("\"{baseline}\"")
            );
        }
    }

    #[test]
    fn unavailable_peers_say_how_to_enable_them() {
        let dir = tempfile::tempdir().unwrap();
        let config = PeerConfig {
            dir: dir.path().to_path_buf(),
            space_bytes: 4 << 20,
        };
        for baseline in Baseline::ALL {
            match open_peer(baseline, &config) {
                Ok(peer) => {
                    assert!(baseline.is_available());
                    peer.remove().unwrap();
                }
                Err(error) => {
                    assert!(!baseline.is_available(), "{baseline}: {error}");
                    let message = error.to_string();
                    assert!(message.contains("--features"), "{message}");
                }
            }
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}

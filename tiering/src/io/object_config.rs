//! The object-store tier's settings and the `--cold-url` classifier: plain data, compiled
//! with or without the `object-store` feature (a build without it refuses object URLs with a
//! typed configuration error instead of knowing nothing of them).

use std::path::PathBuf;

use crate::error::{Result, TieringError};

/// S3's smallest part (all but the last part of a multipart upload).
pub const MIN_PART_BYTES: usize = 5 << 20;

/// Access keys given in code (tests, tools). Without them the usual environment and
/// configuration of the store's SDK apply (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, instance metadata...). Never printed: `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ObjectCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for ObjectCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// How an `ObjectIo` (feature `object-store`) talks to its store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectTierConfig {
    /// Bytes per multipart part; an object up to this size is one PUT.
    pub part_bytes: usize,
    /// Parts of one upload sent at once.
    pub parts_in_flight: usize,
    /// Bound of one HTTP request (S3).
    pub request_timeout_ms: u64,
    /// Bound of one operation, its retries included.
    pub operation_timeout_ms: u64,
    /// Retries of a failed request by the S3 client (throttling, 5xx, connection errors).
    pub max_retries: usize,
    /// First backoff between retries; it doubles up to `backoff_max_ms`.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// Attempts of a ranged GET whose body failed after the client's own retries.
    pub read_attempts: u32,
    /// Worker threads of the private runtime.
    pub worker_threads: usize,
    pub credentials: Option<ObjectCredentials>,
    /// Benchmarks only: a delay added to every request (through `FaultyStore`),
    /// to measure how much of a slow store's latency the readahead hides. 0: none.
    pub inject_latency_ms: u64,
}

impl Default for ObjectTierConfig {
    fn default() -> ObjectTierConfig {
        ObjectTierConfig {
            part_bytes: 8 << 20,
            parts_in_flight: 4,
            request_timeout_ms: 30_000,
            operation_timeout_ms: 120_000,
            max_retries: 8,
            backoff_initial_ms: 50,
            backoff_max_ms: 2_000,
            read_attempts: 3,
            worker_threads: 2,
            credentials: None,
            inject_latency_ms: 0,
        }
    }
}

impl ObjectTierConfig {
    pub fn validate(&self) -> Result<()> {
        let fail = |what: String| Err(TieringError::InvalidConfig(what));
        if self.part_bytes < MIN_PART_BYTES {
            return fail(format!(
                "part_bytes {} is below the object store minimum {MIN_PART_BYTES}",
                self.part_bytes
            ));
        }
        if self.parts_in_flight == 0 || self.worker_threads == 0 || self.read_attempts == 0 {
            return fail("parts_in_flight, worker_threads and read_attempts must be >= 1".into());
        }
        if self.request_timeout_ms == 0 || self.operation_timeout_ms == 0 {
            return fail("timeouts must be > 0 ms".into());
        }
        Ok(())
    }
}

/// Where a cold tier lives, from a `--cold-url`: a directory (the io_uring SSD files) or an
/// object store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColdLocation {
    /// A directory path (no scheme).
    Dir(PathBuf),
    /// `s3://bucket/prefix?endpoint=URL&region=R`, `file:///dir`, `memory://[prefix]`.
    Object(String),
}

impl ColdLocation {
    /// Classifies `url`: anything with a `scheme://` is an object store URL (checked by
    /// `ObjectIo::open`), anything else a directory.
    pub fn parse(url: &str) -> ColdLocation {
        if url.contains("://") {
            ColdLocation::Object(url.to_owned())
        } else {
            ColdLocation::Dir(PathBuf::from(url))
        }
    }
}

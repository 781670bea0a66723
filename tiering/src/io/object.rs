//! [`ObjectIo`]: the cold tier on an object store — S3 or any server of its API (MinIO,
//! Ceph, Garage), a local directory through `object_store`'s file store, or memory — as a
//! [`SegmentIo`], so the writer, the store, its block cache and readahead and the engine's
//! migrator run on it unchanged.
//!
//! The tier's API stays synchronous: an `ObjectIo` owns a private tokio runtime (a few worker
//! threads) and every `SegmentIo` call blocks on it; no tokio type appears in a signature.
//!
//! # How the file operations map to objects
//!
//! | `SegmentIo` call                  | object store                                           |
//! |-----------------------------------|--------------------------------------------------------|
//! | `create("seg-<g>.pcold.tmp")`     | nothing yet: an upload to `seg-<g>.pcold` begins       |
//! | `write_at` (sequential only)      | buffered; every `part_bytes` a multipart part is sent, |
//! |                                   | up to `parts_in_flight` at once                        |
//! | `fdatasync`                       | the upload completes: one PUT for a small object,      |
//! |                                   | else the last part and CompleteMultipartUpload. The    |
//! |                                   | object appears whole, atomically, or not at all        |
//! | `rename(temp, final)` after it    | nothing to do: the upload already targeted `final`     |
//! | `rename` of other names           | copy and delete (quarantine to `.corrupt`)             |
//! | `sync_dir`                        | nothing: an acknowledged upload or delete is durable   |
//! | `read_at`, `read_stream`          | ranged GETs, several in flight; the byte count must    |
//! |                                   | match the range asked, else a typed error              |
//! | `list`                            | LIST of the prefix (one level)                         |
//! | `remove`                          | HEAD (to report a missing object) and DELETE           |
//!
//! A temp name is never an object: the "temp file" of the file tier is the upload in progress,
//! invisible until it completes. So an object under a final name is always complete, and the
//! store's open adopts it; if the engine's segment table does not point at it (a crash between
//! the upload and the table's update) the engine's recovery discards it as an orphan, exactly
//! like a renamed but unreferenced file of the SSD tier.
//!
//! # Faults
//!
//! Requests to S3 are retried by `object_store`'s client (throttling, 5xx, cut connections)
//! with exponential backoff, each request bounded by `request_timeout_ms`; on top of that
//! every operation has a deadline (`operation_timeout_ms`), and a ranged GET whose body was
//! cut is retried here `read_attempts` times. What still fails is
//! [`TieringError::ObjectStore`], naming the object and the byte range. A failed upload is
//! aborted (best effort; an upload a crash left behind is invisible and is reclaimed by the
//! bucket's lifecycle rule for incomplete multipart uploads).

use std::collections::{HashSet, VecDeque};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload};
use parking_lot::Mutex;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use super::{check_name, Completion, IoBuf, IoFile, ObjectTierConfig, SegmentIo, StreamShape};
use crate::error::{ByteRange, IoOp, Result, TieringError};
use crate::format::{classify_file_name, cold_file_name, FileKind};

/// An object of [`ObjectIo`]: read (its length known from HEAD) or being uploaded.
pub struct ObjectFile {
    name: String,
    location: ObjectPath,
    state: Mutex<FileState>,
}

struct FileState {
    len_bytes: u64,
    upload: Option<Upload>,
}

/// An upload in progress (a file created and not yet synced).
struct Upload {
    /// Bytes not yet sent as a part.
    pending: Vec<u8>,
    multipart: Option<Box<dyn MultipartUpload>>,
    parts: VecDeque<JoinHandle<object_store::Result<()>>>,
    /// Completed: the object exists under `location`.
    completed: bool,
    /// The name it was created under (a temp name whose object is the final name).
    created_as: String,
}

impl IoFile for ObjectFile {
    fn name(&self) -> &str {
        &self.name
    }
}

/// The object-store cold tier's I/O; see the module documentation.
pub struct ObjectIo {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    /// `scheme://bucket/prefix`, for messages and [`SegmentIo::dir`] (no credentials: they
    /// never come from the URL).
    label: PathBuf,
    runtime: Runtime,
    config: ObjectTierConfig,
    /// Temp names whose upload completed under their final name (the pending `rename`).
    completed_temps: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for ObjectIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectIo")
            .field("location", &self.label)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn setup_error(
    label: &str,
    what: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> TieringError {
    TieringError::ObjectStore {
        op: IoOp::Setup,
        object: label.to_owned(),
        range: ByteRange::Whole,
        source: what.into(),
    }
}

impl ObjectIo {
    /// Opens the object store named by `url` (see [`ColdLocation::Object`](crate::ColdLocation::Object)).
    pub fn open(url: &str, config: ObjectTierConfig) -> Result<ObjectIo> {
        config.validate()?;
        let parsed = url::Url::parse(url).map_err(|e| setup_error(url, e))?;
        let label = format!(
            "{}://{}{}",
            parsed.scheme(),
            parsed.host_str().unwrap_or(""),
            parsed.path()
        );
        let prefix_text = match parsed.scheme() {
            "s3" | "memory" => parsed.path().trim_matches('/').to_owned(),
            _ => String::new(),
        };
        let store: Arc<dyn ObjectStore> = match parsed.scheme() {
            "memory" => {
                let prefix = format!("{}{}", parsed.host_str().unwrap_or(""), parsed.path());
                let prefix = prefix.trim_matches('/').to_owned();
                return ObjectIo::with_store(
                    Arc::new(object_store::memory::InMemory::new()),
                    &prefix,
                    label,
                    config,
                );
            }
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| setup_error(url, "file URL without a local path"))?;
                std::fs::create_dir_all(&dir).map_err(|source| TieringError::Fs {
                    op: IoOp::Setup,
                    file: dir.display().to_string(),
                    source,
                })?;
                let local = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| setup_error(url, e))?;
                Arc::new(local)
            }
            "s3" => Arc::new(s3_store(&parsed, &config).map_err(|e| setup_error(&label, e))?),
            other => {
                return Err(TieringError::InvalidConfig(format!(
                    "cold URL scheme {other:?}: expected s3://, file://, memory:// or a directory"
                )))
            }
        };
        ObjectIo::with_store(store, &prefix_text, label, config)
    }

    /// An `ObjectIo` over a store built by the caller (tests wrap stores to inject faults).
    pub fn with_store(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        label: String,
        config: ObjectTierConfig,
    ) -> Result<ObjectIo> {
        config.validate()?;
        let store: Arc<dyn ObjectStore> = if config.inject_latency_ms > 0 {
            let slow = super::FaultyStore::new(store);
            slow.set_latency_ms(config.inject_latency_ms);
            Arc::new(slow)
        } else {
            store
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.worker_threads)
            .thread_name("pstream-object-io")
            .enable_all()
            .build()
            .map_err(|source| TieringError::Fs {
                op: IoOp::Setup,
                file: label.clone(),
                source,
            })?;
        Ok(ObjectIo {
            store,
            prefix: ObjectPath::from(prefix),
            label: PathBuf::from(label),
            runtime,
            config,
            completed_temps: Mutex::new(HashSet::new()),
        })
    }

    pub fn config(&self) -> &ObjectTierConfig {
        &self.config
    }

    fn location(&self, name: &str) -> Result<ObjectPath> {
        check_name(name)?;
        Ok(self.prefix.clone().join(name))
    }

    /// `scheme://bucket/prefix/name` (the prefix alone for an empty name).
    fn object_label(&self, name: &str) -> String {
        if name.is_empty() {
            self.label.display().to_string()
        } else {
            format!("{}/{name}", self.label.display())
        }
    }

    fn error(
        &self,
        op: IoOp,
        name: &str,
        range: ByteRange,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> TieringError {
        TieringError::ObjectStore {
            op,
            object: self.object_label(name),
            range,
            source: source.into(),
        }
    }

    /// Runs `future` on the private runtime, bounded by the operation timeout.
    fn run<T>(
        &self,
        op: IoOp,
        name: &str,
        range: ByteRange,
        future: impl std::future::Future<Output = object_store::Result<T>>,
    ) -> Result<T> {
        let deadline = Duration::from_millis(self.config.operation_timeout_ms);
        match self
            .runtime
            .block_on(async { tokio::time::timeout(deadline, future).await })
        {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(object_store::Error::NotFound { source, .. })) => Err(TieringError::Fs {
                op,
                file: self.object_label(name),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, source),
            }),
            Ok(Err(error)) => Err(self.error(op, name, range, error)),
            Err(elapsed) => Err(self.error(op, name, range, elapsed)),
        }
    }

    /// One ranged GET of `range` of `name`, checked to hold exactly the bytes asked, retried
    /// `read_attempts` times (the S3 client already retries each request).
    fn get_range(&self, name: &str, location: &ObjectPath, range: Range<u64>) -> Result<Bytes> {
        let span = ByteRange::Span {
            start: range.start,
            end: range.end,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let store = Arc::clone(&self.store);
            let result = self
                .run(
                    IoOp::Read,
                    name,
                    span,
                    store.get_range(location, range.clone()),
                )
                .and_then(|bytes| {
                    if bytes.len() as u64 == range.end - range.start {
                        Ok(bytes)
                    } else {
                        let message = format!(
                            "the store returned {} bytes for a range of {}",
                            bytes.len(),
                            range.end - range.start
                        );
                        Err(self.error(IoOp::Read, name, span, message))
                    }
                });
            match result {
                Err(TieringError::ObjectStore { .. }) if attempt < self.config.read_attempts => {
                    std::thread::sleep(self.backoff(attempt));
                }
                other => return other,
            }
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let ms = self
            .config
            .backoff_initial_ms
            .saturating_mul(1 << attempt.min(16))
            .min(self.config.backoff_max_ms);
        Duration::from_millis(ms)
    }

    /// Sends `part` of an upload, starting the multipart upload first if needed, and waits
    /// for the oldest part once `parts_in_flight` are out.
    fn send_part(&self, file: &ObjectFile, upload: &mut Upload, part: Vec<u8>) -> Result<()> {
        let name = file.name.as_str();
        if upload.multipart.is_none() {
            let store = Arc::clone(&self.store);
            let multipart = self.run(
                IoOp::Upload,
                name,
                ByteRange::Whole,
                store.put_multipart(&file.location),
            )?;
            upload.multipart = Some(multipart);
        }
        let Some(multipart) = upload.multipart.as_mut() else {
            return Err(self.error(IoOp::Upload, name, ByteRange::Whole, "no multipart upload"));
        };
        let part = multipart.put_part(PutPayload::from(Bytes::from(part)));
        upload.parts.push_back(self.runtime.spawn(part));
        while upload.parts.len() > self.config.parts_in_flight {
            self.wait_part(name, upload)?;
        }
        Ok(())
    }

    fn wait_part(&self, name: &str, upload: &mut Upload) -> Result<()> {
        let Some(part) = upload.parts.pop_front() else {
            return Ok(());
        };
        let joined = self.run(IoOp::Upload, name, ByteRange::Whole, async {
            part.await.unwrap_or_else(|join_error| {
                Err(object_store::Error::Generic {
                    store: "pstream",
                    source: Box::new(join_error),
                })
            })
        });
        joined
    }

    /// Completes an upload: one PUT, or the last part and the completion of the multipart.
    fn complete(&self, file: &ObjectFile, upload: &mut Upload) -> Result<()> {
        let name = file.name.as_str();
        let pending = std::mem::take(&mut upload.pending);
        if upload.multipart.is_none() {
            let store = Arc::clone(&self.store);
            let payload = PutPayload::from(Bytes::from(pending));
            self.run(
                IoOp::Upload,
                name,
                ByteRange::Whole,
                store.put(&file.location, payload),
            )?;
            return Ok(());
        }
        if !pending.is_empty() {
            self.send_part(file, upload, pending)?;
        }
        while !upload.parts.is_empty() {
            self.wait_part(name, upload)?;
        }
        let Some(multipart) = upload.multipart.as_mut() else {
            return Err(self.error(IoOp::Upload, name, ByteRange::Whole, "no multipart upload"));
        };
        self.run(IoOp::Upload, name, ByteRange::Whole, multipart.complete())?;
        Ok(())
    }

    /// Aborts a failed upload (best effort: an incomplete upload is invisible anyway).
    fn abort(&self, name: &str, upload: &mut Upload) {
        for part in upload.parts.drain(..) {
            part.abort();
        }
        if let Some(mut multipart) = upload.multipart.take() {
            let deadline = Duration::from_millis(self.config.request_timeout_ms);
            let aborted = self
                .runtime
                .block_on(async { tokio::time::timeout(deadline, multipart.abort()).await });
            if !matches!(aborted, Ok(Ok(()))) {
                tracing::warn!(
                    object = self.object_label(name),
                    "could not abort an upload"
                );
            }
        }
    }
}

/// The S3 client of `url`: bucket and prefix from the URL, `endpoint` and `region` from its
/// query, credentials from `config` or the environment.
fn s3_store(
    url: &url::Url,
    config: &ObjectTierConfig,
) -> std::result::Result<object_store::aws::AmazonS3, Box<dyn std::error::Error + Send + Sync>> {
    use object_store::aws::AmazonS3Builder;
    use object_store::{BackoffConfig, ClientOptions, RetryConfig};
    // TLS through rustls with ring; a second install (another ObjectIo) is refused, harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bucket = url.host_str().ok_or("s3 URL without a bucket")?;
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    let mut allow_http = false;
    for (key, value) in url.query_pairs() {
        builder = match key.as_ref() {
            "endpoint" => {
                allow_http = value.starts_with("http://");
                builder
                    .with_endpoint(value.as_ref())
                    .with_virtual_hosted_style_request(false)
            }
            "region" => builder.with_region(value.as_ref()),
            other => return Err(format!("unknown s3 URL parameter {other:?}").into()),
        };
    }
    if let Some(credentials) = &config.credentials {
        builder = builder
            .with_access_key_id(&credentials.access_key_id)
            .with_secret_access_key(&credentials.secret_access_key);
    }
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(config.backoff_initial_ms),
            max_backoff: Duration::from_millis(config.backoff_max_ms),
            base: 2.0,
        },
        max_retries: config.max_retries,
        retry_timeout: Duration::from_millis(config.operation_timeout_ms),
    };
    // Client options replace the builder's: plain HTTP is allowed here, for an `http://`
    // endpoint only.
    let options = ClientOptions::new()
        .with_allow_http(allow_http)
        .with_timeout(Duration::from_millis(config.request_timeout_ms))
        .with_connect_timeout(Duration::from_millis(config.request_timeout_ms.min(10_000)));
    Ok(builder
        .with_retry(retry)
        .with_client_options(options)
        .build()?)
}

impl SegmentIo for ObjectIo {
    type File = ObjectFile;

    fn dir(&self) -> &Path {
        &self.label
    }

    fn is_direct(&self) -> bool {
        false
    }

    fn create(&self, name: &str) -> Result<ObjectFile> {
        // The temp phase is the upload itself: it targets the final name.
        let target = match classify_file_name(name) {
            FileKind::Temp(segment_gen) => cold_file_name(segment_gen),
            _ => name.to_owned(),
        };
        let location = self.location(&target)?;
        self.completed_temps.lock().remove(name);
        Ok(ObjectFile {
            name: name.to_owned(),
            location,
            state: Mutex::new(FileState {
                len_bytes: 0,
                upload: Some(Upload {
                    pending: Vec::new(),
                    multipart: None,
                    parts: VecDeque::new(),
                    completed: false,
                    created_as: name.to_owned(),
                }),
            }),
        })
    }

    fn open(&self, name: &str) -> Result<ObjectFile> {
        let location = self.location(name)?;
        let store = Arc::clone(&self.store);
        let meta = self.run(IoOp::Open, name, ByteRange::Whole, store.head(&location))?;
        Ok(ObjectFile {
            name: name.to_owned(),
            location,
            state: Mutex::new(FileState {
                len_bytes: meta.size,
                upload: None,
            }),
        })
    }

    fn file_len(&self, file: &ObjectFile) -> Result<u64> {
        Ok(file.state.lock().len_bytes)
    }

    fn write_at(&self, file: &ObjectFile, buf: IoBuf, offset_bytes: u64) -> Completion {
        let result = (|| {
            let mut state = file.state.lock();
            let written = state.len_bytes;
            let Some(upload) = state.upload.as_mut().filter(|upload| !upload.completed) else {
                return Err(self.error(
                    IoOp::Write,
                    &file.name,
                    ByteRange::Whole,
                    "not an upload in progress",
                ));
            };
            if offset_bytes != written {
                let message =
                    format!("object writes are sequential: at {offset_bytes}, expected {written}");
                return Err(self.error(IoOp::Write, &file.name, ByteRange::Whole, message));
            }
            upload.pending.extend_from_slice(buf.as_slice());
            let mut failed = None;
            while upload.pending.len() >= self.config.part_bytes && failed.is_none() {
                let rest = upload.pending.split_off(self.config.part_bytes);
                let part = std::mem::replace(&mut upload.pending, rest);
                failed = self.send_part(file, upload, part).err();
            }
            if let Some(error) = failed {
                self.abort(&file.name, upload);
                state.upload = None;
                return Err(error);
            }
            state.len_bytes += buf.len() as u64;
            Ok(buf.len())
        })();
        (result, buf)
    }

    fn read_at(&self, file: &ObjectFile, mut buf: IoBuf, offset_bytes: u64) -> Completion {
        let len_bytes = file.state.lock().len_bytes;
        let end = (offset_bytes + buf.len() as u64).min(len_bytes);
        if offset_bytes >= end {
            return (Ok(0), buf);
        }
        match self.get_range(&file.name, &file.location, offset_bytes..end) {
            Ok(bytes) => {
                buf.as_mut_slice()[..bytes.len()].copy_from_slice(&bytes);
                (Ok(bytes.len()), buf)
            }
            Err(error) => (Err(error), buf),
        }
    }

    fn fdatasync(&self, file: &ObjectFile) -> Result<()> {
        let mut state = file.state.lock();
        let Some(upload) = state.upload.as_mut() else {
            return Err(self.error(
                IoOp::Upload,
                &file.name,
                ByteRange::Whole,
                "no upload in progress (it failed)",
            ));
        };
        if upload.completed {
            return Ok(());
        }
        match self.complete(file, upload) {
            Ok(()) => {
                upload.completed = true;
                self.completed_temps
                    .lock()
                    .insert(upload.created_as.clone());
                Ok(())
            }
            Err(error) => {
                self.abort(&file.name, upload);
                state.upload = None;
                Err(error)
            }
        }
    }

    fn sync_dir(&self) -> Result<()> {
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        let completed_as = match classify_file_name(from) {
            FileKind::Temp(segment_gen) => Some(cold_file_name(segment_gen)),
            _ => None,
        };
        if completed_as.as_deref() == Some(to) && self.completed_temps.lock().remove(from) {
            return Ok(());
        }
        let (source, target) = (self.location(from)?, self.location(to)?);
        let store = Arc::clone(&self.store);
        self.run(IoOp::Rename, from, ByteRange::Whole, async move {
            store.rename(&source, &target).await
        })
    }

    fn remove(&self, name: &str) -> Result<()> {
        let location = self.location(name)?;
        let store = Arc::clone(&self.store);
        // S3 acknowledges a DELETE of a missing key: look first, to report it as missing.
        self.run(IoOp::Remove, name, ByteRange::Whole, async move {
            store.head(&location).await?;
            store.delete(&location).await
        })
    }

    fn list(&self) -> Result<Vec<String>> {
        let store = Arc::clone(&self.store);
        let prefix = self.prefix.clone();
        let listed = self.run(IoOp::List, "", ByteRange::Whole, async move {
            let prefix = (prefix.as_ref() != "").then_some(&prefix);
            store.list_with_delimiter(prefix).await
        })?;
        Ok(listed
            .objects
            .into_iter()
            .filter_map(|meta| meta.location.filename().map(str::to_owned))
            .collect())
    }

    fn read_batch(&self, file: &ObjectFile, requests: Vec<(u64, IoBuf)>) -> Vec<Completion> {
        // Every GET at once (each on its own scoped thread, as `read_at` blocks), results in
        // request order.
        std::thread::scope(|scope| {
            let reads: Vec<_> = requests
                .into_iter()
                .map(|(offset, buf)| scope.spawn(move || self.read_at(file, buf, offset)))
                .collect();
            reads
                .into_iter()
                .map(|read| {
                    read.join().unwrap_or_else(|_| {
                        let error =
                            self.error(IoOp::Read, &file.name, ByteRange::Whole, "reader panicked");
                        (Err(error), IoBuf::with_capacity(0))
                    })
                })
                .collect()
        })
    }

    fn read_stream<F>(
        &self,
        file: &ObjectFile,
        offset_bytes: u64,
        len_bytes: u64,
        shape: StreamShape,
        mut consume: F,
    ) -> Result<()>
    where
        F: FnMut(u64, &[u8]) -> Result<()>,
    {
        shape.validate()?;
        let object_len = file.state.lock().len_bytes;
        let end = (offset_bytes + len_bytes).min(object_len);
        let chunk = shape.chunk_bytes as u64;
        let mut next = offset_bytes;
        let mut in_flight: VecDeque<(Range<u64>, JoinHandle<object_store::Result<Bytes>>)> =
            VecDeque::new();
        loop {
            while in_flight.len() < shape.depth && next < end {
                let range = next..(next + chunk).min(end);
                next = range.end;
                let store = Arc::clone(&self.store);
                let location = file.location.clone();
                let request = range.clone();
                let get = self
                    .runtime
                    .spawn(async move { store.get_range(&location, request).await });
                in_flight.push_back((range, get));
            }
            let Some((range, get)) = in_flight.pop_front() else {
                break;
            };
            let span = ByteRange::Span {
                start: range.start,
                end: range.end,
            };
            let fetched = self.run(IoOp::Read, &file.name, span, async {
                get.await.unwrap_or_else(|join_error| {
                    Err(object_store::Error::Generic {
                        store: "pstream",
                        source: Box::new(join_error),
                    })
                })
            });
            let bytes = match fetched {
                Ok(bytes) if bytes.len() as u64 == range.end - range.start => bytes,
                // A cut body or a short answer: one more try of this range alone.
                _ => self.get_range(&file.name, &file.location, range.clone())?,
            };
            if let Err(error) = consume(range.start, &bytes) {
                for (_, get) in in_flight {
                    get.abort();
                }
                return Err(error);
            }
        }
        Ok(())
    }
}

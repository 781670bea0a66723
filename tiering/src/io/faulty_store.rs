//! [`FaultyStore`]: an object store wrapper that injects the faults of the object-store crash
//! model at the request level, for crash and fault tests and for latency benchmarks.
//!
//! Every request (PUT, multipart create / part / complete, GET and HEAD, LIST, DELETE, COPY)
//! counts as one operation. A [`StoreFault`] armed at operation `k`:
//!
//! - `Error`: the request fails (as after the client's retries), once or from then on;
//! - `Garbage`: a GET answers with one byte flipped (a corruption on the way: the reader's
//!   checksums must catch it);
//! - `Crash`: the process dies at request `k`: that request happens or not (by the seed),
//!   every later one fails until [`FaultyStore::restart`]. What a crash leaves is exactly
//!   the completed requests: an upload whose completion did not happen is not an object.
//!
//! Plus a fixed delay per request (`set_latency_ms`), for the latency benchmark.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
    UploadPart,
};
use parking_lot::Mutex;

use crate::error::{ByteRange, IoOp, TieringError};
use pmem_emul::SplitMix64;

/// What an armed fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFault {
    Error,
    Garbage,
    Crash,
}

#[derive(Debug, Default)]
struct StoreState {
    /// Requests seen.
    ops: u64,
    armed: Option<(u64, StoreFault, bool)>,
    crashed: bool,
    seed: u64,
    injected: u64,
}

enum Decision {
    Proceed,
    Fail,
    Garbage,
    /// The crash request: it happens (then the caller sees an error) or not.
    CrashAfter,
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    state: Arc<Mutex<StoreState>>,
    latency_ms: Arc<AtomicU64>,
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

fn injected(what: &'static str) -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultyStore",
        source: what.into(),
    }
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> FaultyStore {
        FaultyStore {
            inner,
            state: Arc::new(Mutex::new(StoreState::default())),
            latency_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Faults over a fresh in-memory store.
    pub fn in_memory() -> FaultyStore {
        FaultyStore::new(Arc::new(object_store::memory::InMemory::new()))
    }

    /// A copy of every object of the store under the faults (its durable state: completed
    /// uploads only), in a fresh in-memory store without faults. Call from outside any
    /// tokio runtime.
    pub fn snapshot(&self) -> crate::Result<FaultyStore> {
        let setup = |source: Box<dyn std::error::Error + Send + Sync>| TieringError::ObjectStore {
            op: IoOp::List,
            object: self.inner.to_string(),
            range: ByteRange::Whole,
            source,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e: std::io::Error| setup(e.into()))?;
        let copy = object_store::memory::InMemory::new();
        runtime
            .block_on(async {
                let objects: Vec<ObjectMeta> = self.inner.list(None).try_collect().await?;
                for meta in objects {
                    let bytes = self.inner.get(&meta.location).await?.bytes().await?;
                    copy.put(&meta.location, PutPayload::from(bytes)).await?;
                }
                object_store::Result::Ok(())
            })
            .map_err(|e: object_store::Error| setup(e.into()))?;
        Ok(FaultyStore::new(Arc::new(copy)))
    }

    /// The store under the faults (what survives a crash).
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// Arms `fault` at the `fail_at`-th request from now (1-based), once or, if
    /// `persistent`, for every request from then on; `None` disarms.
    pub fn arm(&self, fault: Option<(u64, StoreFault, bool)>, seed: u64) {
        let mut state = self.state.lock();
        state.seed = seed;
        state.armed = fault
            .map(|(fail_at, fault, persistent)| (state.ops + fail_at.max(1), fault, persistent));
    }

    pub fn set_latency_ms(&self, latency_ms: u64) {
        self.latency_ms.store(latency_ms, Ordering::Relaxed);
    }

    /// After a crash: the process restarted; requests work again, nothing is armed.
    pub fn restart(&self) {
        let mut state = self.state.lock();
        state.crashed = false;
        state.armed = None;
    }

    pub fn crashed(&self) -> bool {
        self.state.lock().crashed
    }

    /// Requests seen so far.
    pub fn ops(&self) -> u64 {
        self.state.lock().ops
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.state.lock().injected
    }

    fn decide(&self) -> Decision {
        let mut state = self.state.lock();
        state.ops += 1;
        if state.crashed {
            return Decision::Fail;
        }
        let Some((at, fault, persistent)) = state.armed else {
            return Decision::Proceed;
        };
        let hit = state.ops == at || (persistent && state.ops > at);
        if !hit {
            return Decision::Proceed;
        }
        state.injected += 1;
        match fault {
            StoreFault::Error => Decision::Fail,
            StoreFault::Garbage => Decision::Garbage,
            StoreFault::Crash => {
                state.crashed = true;
                let happens = SplitMix64::new(state.seed ^ state.ops).below(2) == 0;
                if happens {
                    Decision::CrashAfter
                } else {
                    Decision::Fail
                }
            }
        }
    }

    async fn delay(&self) {
        let latency_ms = self.latency_ms.load(Ordering::Relaxed);
        if latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(latency_ms)).await;
        }
    }

    /// Runs a request under the fault decision.
    async fn request<T>(
        &self,
        call: impl std::future::Future<Output = object_store::Result<T>>,
    ) -> object_store::Result<T> {
        self.delay().await;
        match self.decide() {
            Decision::Proceed | Decision::Garbage => call.await,
            Decision::Fail => Err(injected("injected request failure")),
            Decision::CrashAfter => {
                let _ = call.await;
                Err(injected("injected crash after the request"))
            }
        }
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.request(self.inner.put_opts(location, payload, opts))
            .await
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let upload = self
            .request(self.inner.put_multipart_opts(location, opts))
            .await?;
        Ok(Box::new(FaultyUpload {
            inner: upload,
            store: self.clone(),
        }))
    }

    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.delay().await;
        match self.decide() {
            Decision::Proceed => self.inner.get_opts(location, options).await,
            Decision::Fail | Decision::CrashAfter => Err(injected("injected GET failure")),
            Decision::Garbage => {
                let mut result = self.inner.get_opts(location, options).await?;
                let bytes = match result.payload {
                    GetResultPayload::Stream(stream) => stream.try_collect::<Vec<Bytes>>().await?,
                    #[allow(unreachable_patterns)]
                    other => {
                        result.payload = other;
                        return Ok(result);
                    }
                };
                let mut joined: Vec<u8> = bytes.concat();
                let middle = joined.len() / 2;
                if let Some(byte) = joined.get_mut(middle) {
                    *byte ^= 0x10;
                }
                let chunk: object_store::Result<Bytes> = Ok(Bytes::from(joined));
                result.payload =
                    GetResultPayload::Stream(futures_util::stream::iter([chunk]).boxed());
                Ok(result)
            }
        }
    }

    async fn get_ranges(
        &self,
        location: &ObjectPath,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        let mut out = Vec::with_capacity(ranges.len());
        for range in ranges {
            let options = GetOptions {
                range: Some(range.clone().into()),
                ..GetOptions::default()
            };
            out.push(self.get_opts(location, options).await?.bytes().await?);
        }
        Ok(out)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
        let this = self.clone();
        let checked = locations
            .and_then(move |location| {
                let this = this.clone();
                async move {
                    this.delay().await;
                    match this.decide() {
                        Decision::Proceed | Decision::Garbage => Ok(location),
                        // A crash at a delete: it happened or not; either way an error.
                        Decision::CrashAfter => {
                            let _ = this
                                .inner
                                .delete_stream(futures_util::stream::iter([Ok(location)]).boxed())
                                .collect::<Vec<_>>()
                                .await;
                            Err(injected("injected crash after a DELETE"))
                        }
                        Decision::Fail => Err(injected("injected DELETE failure")),
                    }
                }
            })
            .boxed();
        self.inner.delete_stream(checked)
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        match self.decide() {
            Decision::Proceed | Decision::Garbage => self.inner.list(prefix),
            _ => futures_util::stream::iter([Err(injected("injected LIST failure"))]).boxed(),
        }
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<ListResult> {
        self.request(self.inner.list_with_delimiter(prefix)).await
    }

    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.request(self.inner.copy_opts(from, to, options)).await
    }
}

/// A multipart upload whose parts and completion are requests of the [`FaultyStore`].
#[derive(Debug)]
struct FaultyUpload {
    inner: Box<dyn MultipartUpload>,
    store: FaultyStore,
}

#[async_trait]
impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let part = self.inner.put_part(data);
        let store = self.store.clone();
        Box::pin(async move { store.request(part).await })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let store = self.store.clone();
        store.request(self.inner.complete()).await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        let store = self.store.clone();
        store.request(self.inner.abort()).await
    }
}

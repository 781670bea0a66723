//! A real S3 server for the object-store tests, started in-process on 127.0.0.1: `s3s` (the
//! S3 protocol: SigV4 auth, routing, XML) over `s3s-fs` (buckets as directories), served by
//! hyper on a tokio runtime of its own, with fault injection between the client and the
//! server: throttling (503 SlowDown), cut connections (the server drops the connection
//! without an answer), GET bodies cut half way, and a delay per request.
//!
//! Nothing is installed: `cargo test` builds the server as a dev-dependency.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use pstream_tiering::{ObjectCredentials, ObjectIo, ObjectTierConfig};
use s3s::service::S3ServiceBuilder;

pub const BUCKET: &str = "pstream-test";
pub const ACCESS_KEY: &str = "pstream-test-key";
pub const SECRET_KEY: &str = "pstream-test-secret";

/// Faults the server injects, each counter consumed one request at a time.
#[derive(Default)]
pub struct Faults {
    /// The next n requests are answered 503 SlowDown.
    pub throttle_next: AtomicU32,
    /// The next n requests lose their connection without an answer.
    pub cut_next: AtomicU32,
    /// The next n successful GETs send half their body and then cut the connection.
    pub truncate_next_gets: AtomicU32,
    /// The next n upload requests (PUT, POST) lose their connection without an answer.
    pub cut_next_uploads: AtomicU32,
    /// Milliseconds added to every request.
    pub delay_ms: AtomicU64,
    /// Requests served (faulted or not).
    pub requests: AtomicU64,
    /// Faults injected.
    pub injected: AtomicU64,
    /// Upload requests (PUT and POST) seen.
    pub uploads: AtomicU64,
}

fn take(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// The server: stopped when dropped (its runtime shuts down).
pub struct S3Server {
    pub addr: SocketAddr,
    pub faults: Arc<Faults>,
    pub root: tempfile::TempDir,
    runtime: Option<tokio::runtime::Runtime>,
}

impl S3Server {
    /// Starts a server over a fresh directory holding one bucket, [`BUCKET`].
    pub fn start() -> S3Server {
        let root = tempfile::tempdir().expect("server root");
        std::fs::create_dir_all(root.path().join(BUCKET)).expect("bucket dir");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3-test-server")
            .enable_all()
            .build()
            .expect("server runtime");
        let faults = Arc::new(Faults::default());
        let service = {
            let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs");
            let mut builder = S3ServiceBuilder::new(fs);
            builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
            builder.build()
        };
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local addr");
        let accept_faults = Arc::clone(&faults);
        runtime.spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                // Small answers go out at once (no Nagle delay against delayed ACKs).
                let _ = socket.set_nodelay(true);
                let service = service.clone();
                let faults = Arc::clone(&accept_faults);
                let handler = hyper::service::service_fn(move |request: Request<Incoming>| {
                    serve(service.clone(), Arc::clone(&faults), request)
                });
                let connection = http
                    .serve_connection(TokioIo::new(socket), handler)
                    .into_owned();
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
        });
        S3Server {
            addr,
            faults,
            root,
            runtime: Some(runtime),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The cold URL of `prefix` in the test bucket.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}?endpoint={}", self.endpoint())
    }

    /// Where the server keeps the objects of `prefix` (to damage or inspect them).
    pub fn object_dir(&self, prefix: &str) -> std::path::PathBuf {
        self.root.path().join(BUCKET).join(prefix)
    }

    /// Opens an `ObjectIo` on `prefix` with the test credentials and short timeouts.
    pub fn io(&self, prefix: &str) -> ObjectIo {
        ObjectIo::open(&self.url(prefix), test_config()).expect("open object io")
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Short timeouts and backoffs (the tests inject faults on purpose), and the test keys.
pub fn test_config() -> ObjectTierConfig {
    ObjectTierConfig {
        request_timeout_ms: 5_000,
        operation_timeout_ms: 20_000,
        max_retries: 6,
        backoff_initial_ms: 5,
        backoff_max_ms: 50,
        credentials: Some(ObjectCredentials {
            access_key_id: ACCESS_KEY.into(),
            secret_access_key: SECRET_KEY.into(),
        }),
        ..ObjectTierConfig::default()
    }
}

#[derive(Debug)]
struct Injected(&'static str);

impl std::fmt::Display for Injected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "injected fault: {}", self.0)
    }
}

impl std::error::Error for Injected {}

type Served = Result<Response<s3s::Body>, Box<dyn std::error::Error + Send + Sync>>;

async fn serve(
    service: s3s::service::S3Service,
    faults: Arc<Faults>,
    request: Request<Incoming>,
) -> Served {
    faults.requests.fetch_add(1, Ordering::Relaxed);
    let delay_ms = faults.delay_ms.load(Ordering::Relaxed);
    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
    let upload = matches!(*request.method(), Method::PUT | Method::POST);
    if upload {
        faults.uploads.fetch_add(1, Ordering::Relaxed);
    }
    if take(&faults.throttle_next) {
        faults.injected.fetch_add(1, Ordering::Relaxed);
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
            <Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
        let response = Response::builder()
            .status(503)
            .header("content-type", "application/xml")
            .body(s3s::Body::from(body.to_owned()))?;
        return Ok(response);
    }
    if take(&faults.cut_next) || (upload && take(&faults.cut_next_uploads)) {
        faults.injected.fetch_add(1, Ordering::Relaxed);
        // Read (part of) the request, then drop the connection without an answer.
        let _ = request.into_body().frame().await;
        return Err(Box::new(Injected("connection cut")));
    }
    let get = *request.method() == Method::GET;
    let response = service.call(request.map(s3s::Body::from)).await?;
    if get && response.status().is_success() && take(&faults.truncate_next_gets) {
        faults.injected.fetch_add(1, Ordering::Relaxed);
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await?.to_bytes();
        let half = bytes.slice(..bytes.len() / 2);
        let frames: Vec<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>> = vec![
            Ok(Frame::data(half)),
            Err(Box::new(Injected("GET body cut"))),
        ];
        let stream = futures_util::stream::iter(frames);
        let body = s3s::Body::http_body(http_body_util::StreamBody::new(stream));
        return Ok(Response::from_parts(parts, body));
    }
    Ok(response)
}

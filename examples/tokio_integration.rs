//! pstream in an async service: the engine and the agent layer are synchronous (an append
//! returns when it is durable, after a flush and a fence), so an async task calls them
//! through `tokio::task::spawn_blocking`, sharing the store through an `Arc`. Many tasks
//! append concurrently; each awaits its own acknowledgement.
//!
//! Run: `cargo run --example tokio_integration` (tokio is a dev-dependency of the examples
//! only; the library has no runtime).

use std::sync::Arc;

use pstream::agent::{Caller, Metadata, PageLimit, StreamDefaults, StreamSpec};
use pstream::AgentStore;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().to_path_buf();
    // Opening runs recovery: blocking work, off the async threads.
    let (store, _report) =
        tokio::task::spawn_blocking(move || AgentStore::open_or_create(path, "async.example"))
            .await??;
    let store = Arc::new(store);
    store.add_user("sensor")?;
    let sensor = Caller::user("sensor")?;
    let bundle = store.create_bundle(
        &sensor,
        "readings",
        Metadata::new(),
        StreamDefaults::default(),
    )?;
    let stream = store.create_stream(&sensor, &bundle, StreamSpec::continuous("temperature"))?;

    // 100 concurrent tasks, each appending one reading and awaiting its durability.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100u32 {
        let store = Arc::clone(&store);
        let sensor = sensor.clone();
        let bundle = bundle.clone();
        tasks.spawn(async move {
            tokio::task::spawn_blocking(move || {
                store.append(&sensor, &bundle, stream, format!("reading {i}").as_bytes())
            })
            .await
        });
    }
    let mut acknowledged = 0;
    while let Some(joined) = tasks.join_next().await {
        joined???;
        acknowledged += 1;
    }
    println!("{acknowledged} readings durable");

    let page = store.fetch(
        &sensor,
        &bundle,
        None,
        PageLimit {
            records_max: 1000,
            ..PageLimit::default()
        },
    )?;
    assert_eq!(page.items.len(), 100);
    println!("read back {} readings", page.items.len());

    // Closing unmaps the pool: take the store back from the Arc, then close off-thread.
    let store = Arc::into_inner(store).ok_or("a task still holds the store")?;
    tokio::task::spawn_blocking(move || store.close()).await??;
    Ok(())
}

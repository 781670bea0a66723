//! The engine alone: create a pool file, append to two streams, read back zero-copy, close,
//! reopen (recovery) and find every acknowledged record.
//!
//! Run: `cargo run --example engine_quick_start [DIR]` (default: a temporary directory).

use pstream::engine::{Log, LogConfig, OpenOptions};
use pstream::pmem_emul::{MmapPool, Pmem, PoolOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let temp = tempfile::tempdir()?;
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| temp.path().to_path_buf(), Into::into);
    let path = dir.join("quick-start.pool");

    // A 64 MiB pool file; on /dev/shm or a DAX file system it behaves like persistent memory.
    let pool = MmapPool::create(&path, 64 << 20, PoolOptions::default())?;
    let log = Log::create(pool, LogConfig::default(), OpenOptions::default())?;
    println!(
        "created {} ({})",
        path.display(),
        log.pmem().guarantee().as_str()
    );

    let chat = log.create_stream(b"chat")?;
    let metrics = log.create_stream(b"metrics")?;
    for i in 0..1000u32 {
        // Durable when it returns: flushed and fenced.
        log.append(chat, format!("message {i}").as_bytes())?;
    }
    let seq = log.append(metrics, &42u64.to_le_bytes())?;
    let record = log.read(metrics, seq)?; // a zero-copy borrow of the pool, checksummed
    println!("metrics[{seq}] = {:?}", record.payload());
    drop(record);

    // Close and reopen: recovery finds exactly what was acknowledged.
    let pool = log.close();
    pool.close()?;
    let pool = MmapPool::open(&path, PoolOptions::default())?;
    let (log, report) = Log::open(pool, OpenOptions::default())?;
    println!("reopened: {report:?}");
    let last = log.read(chat, 999)?;
    assert_eq!(last.payload(), b"message 999");
    println!("chat[999] = {:?}", String::from_utf8_lossy(last.payload()));
    Ok(())
}

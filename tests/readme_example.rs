//! The embedding example of README.md, kept compiling and passing.

use pstream::engine::{Log, LogConfig, OpenOptions};
use pstream::pmem_emul::{MmapPool, PoolOptions};

#[test]
fn readme_embedding_example() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("my.pool");
    let pool = MmapPool::create(&path, 256 << 20, PoolOptions::default())?;
    let log = Log::create(pool, LogConfig::default(), OpenOptions::default())?;
    let chat = log.create_stream(b"chat")?;
    let seq = log.append(chat, b"hello")?; // durable when it returns
    assert_eq!(log.read(chat, seq)?.payload(), b"hello"); // zero-copy borrow
    let pool = log.close();
    let (log, report) = Log::open(pool, OpenOptions::default())?; // recovery after any crash
    assert_eq!(report.live_records, 1);
    assert_eq!(log.read(chat, 0)?.payload(), b"hello");
    Ok(())
}

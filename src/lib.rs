//! pstream: a crash-consistent append log for persistent memory, with SSD tiering and a
//! persistent-streams agent layer.
//!
//! This facade crate re-exports the member crates, one per layer:
//!
//! * [`pmem_emul`]: the persistence seam (the `Pmem` trait, mmap pools, crash simulator);
//! * [`engine`]: the durable append log, generic over `Pmem`;
//! * [`tiering`]: demotion of cold segments from persistent memory to SSD files;
//! * [`agent`]: the persistent-streams agent data model on top of the log;
//!
//! and it sets an agent store up in one call: [`AgentStore::open_or_create`] opens (with
//! recovery) or creates the pool file in a directory, its cold tier of SSD files and a
//! background migrator between them.
//!
//! The `pstream` command line tool (demo, ceiling, benchmarks) is the `pstream-cli` crate;
//! depending on this crate compiles none of it. The `examples/` directory of the repository
//! shows the engine alone, an agent store, tokio integration and tiering.
//!
//! # Examples
//!
//! The engine alone, on a pool file:
//!
//! ```
//! use pstream::engine::{Log, LogConfig, OpenOptions};
//! use pstream::pmem_emul::{MmapPool, PoolOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let pool = MmapPool::create(dir.path().join("my.pool"), 64 << 20, PoolOptions::default())?;
//! let log = Log::create(pool, LogConfig::default(), OpenOptions::default())?;
//! let chat = log.create_stream(b"chat")?;
//! let seq = log.append(chat, b"hello")?; // durable when it returns
//! assert_eq!(log.read(chat, seq)?.payload(), b"hello"); // zero-copy borrow
//! let pool = log.close();
//! let (log, _report) = Log::open(pool, OpenOptions::default())?; // recovery
//! assert_eq!(log.read(chat, seq)?.payload(), b"hello");
//! # Ok(())
//! # }
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod store;

pub use pmem_emul;
pub use pstream_agent as agent;
pub use pstream_engine as engine;
pub use pstream_tiering as tiering;
pub use store::{AgentStore, StoreError, StoreOptions, TieredAgent, POOL_FILE_NAME};

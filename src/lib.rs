//! pstream: a crash-consistent append log for persistent memory, with SSD tiering and a
//! persistent-streams agent layer.
//!
//! This facade crate re-exports the member crates, one per layer:
//!
//! * [`pmem_emul`]: the persistence seam (the `Pmem` trait, mmap pools, crash simulator);
//! * [`engine`]: the durable append log, generic over `Pmem`;
//! * [`tiering`]: demotion of cold segments from persistent memory to SSD files;
//! * [`agent`]: the persistent-streams agent data model on top of the log.
//!
//! The `pstream` command line tool (demo, ceiling, benchmarks) is the `pstream-cli` crate.
#![deny(unsafe_code)]

pub use pmem_emul;
pub use pstream_agent as agent;
pub use pstream_engine as engine;
pub use pstream_tiering as tiering;

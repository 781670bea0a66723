//! The harness's error type: what kept a case from running at all. A crash-oracle violation
//! is not an error but a finding, reported in [`crate::Violation`].

use std::path::PathBuf;

use pmem_emul::PmemError;
use pstream_agent::AgentError;
use pstream_engine::EngineError;
use pstream_tiering::TieringError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CrashtestError {
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    #[error("pool: {0}")]
    Pmem(#[from] PmemError),
    #[error("cold tier: {0}")]
    Tiering(#[from] TieringError),
    #[error("agent: {0}")]
    Agent(#[from] AgentError),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kill round {round}: {detail}")]
    Child { round: u64, detail: String },
    #[error("invalid configuration: {0}")]
    Config(String),
}

pub type Result<T, E = CrashtestError> = std::result::Result<T, E>;

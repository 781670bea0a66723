//! [`AgentStore`]: an agent store in a directory, set up in one call: the pool file, its
//! cold tier of SSD files and a background migrator that demotes idle segments to it.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;

use pmem_emul::{MmapPool, PmemError, PoolOptions};
use pstream_agent::{Agent, AgentConfig, AgentError, OpenReport};
use pstream_tiering::{
    default_cold_dir, open_cold_tier, EngineColdTier, Migrator, MigratorPolicy, TierConfig,
    TieredError, UringIo,
};

/// The agent type an [`AgentStore`] holds: a mapped pool with SSD files as its cold tier.
pub type TieredAgent = Agent<MmapPool, EngineColdTier<UringIo>>;

/// Name of the pool file inside the store's directory (its cold tier is `agent.pool.cold/`).
pub const POOL_FILE_NAME: &str = "agent.pool";

/// How [`AgentStore::open_or_create_with`] sets a store up. [`StoreOptions::default`] is a
/// 256 MiB pool, the agent layer's default configuration, the default cold tier and a
/// migrator that demotes segments idle for a minute, or sooner when the pool fills up.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Size of the pool file when it is created (an existing pool keeps its size).
    pub pool_bytes: usize,
    /// How the pool file is mapped and what its flushes promise.
    pub pool: PoolOptions,
    /// The agent layer's configuration (log geometry, limits).
    pub agent: AgentConfig,
    /// The cold tier's configuration (compression, I/O depth, cache).
    pub tier: TierConfig,
    /// When the background migrator demotes segments; `None` runs no migrator (segments
    /// then stay in the pool until [`AgentStore::migrate_now`]).
    pub migrator: Option<MigratorPolicy>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            pool_bytes: 256 << 20,
            pool: PoolOptions::default(),
            agent: AgentConfig::default(),
            tier: TierConfig::default(),
            migrator: Some(MigratorPolicy::default()),
        }
    }
}

/// Why an [`AgentStore`] could not be opened or closed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store's directory could not be created.
    #[error("cannot create the store directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// The pool file could not be created, opened or closed (the message names its path).
    #[error("{0}")]
    Pool(#[from] PmemError),
    /// The cold tier directory could not be opened.
    #[error("cold tier {path}: {source}")]
    Cold {
        /// The cold tier's directory.
        path: PathBuf,
        /// Why.
        source: TieredError,
    },
    /// The agent layer refused the pool (recovery failed, not an agent store, bad name).
    #[error("agent store {path}: {source}")]
    Agent {
        /// The pool file.
        path: PathBuf,
        /// Why.
        source: AgentError,
    },
    /// The background migrator thread panicked; the store was still closed.
    #[error("the background migrator of {path} panicked")]
    MigratorPanicked {
        /// The pool file.
        path: PathBuf,
    },
}

/// An agent store in one directory: pool file, cold tier and background migrator, opened
/// (with recovery) or created in one call. It dereferences to the [`Agent`], the API for
/// users, bundles, streams and deliveries.
///
/// # Examples
///
/// ```
/// use pstream::agent::{Caller, Metadata, StreamDefaults, StreamSpec};
/// use pstream::AgentStore;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let (store, report) = AgentStore::open_or_create(dir.path(), "example.org")?;
/// assert!(report.created);
/// store.add_user("alice")?;
/// let alice = Caller::user("alice")?;
/// let notes = store.create_bundle(&alice, "notes", Metadata::new(), StreamDefaults::default())?;
/// let todo = store.create_stream(&alice, &notes, StreamSpec::continuous("todo"))?;
/// store.append(&alice, &notes, todo, b"write the docs")?; // durable when it returns
/// store.close()?;
///
/// // Reopening recovers everything acknowledged.
/// let (store, report) = AgentStore::open_or_create(dir.path(), "example.org")?;
/// assert!(!report.created);
/// assert_eq!(store.stats().users, 1);
/// store.close()?;
/// # Ok(())
/// # }
/// ```
pub struct AgentStore {
    /// `Some` until [`AgentStore::close`] or drop takes it.
    agent: Option<Arc<TieredAgent>>,
    migrator: Option<BackgroundMigrator>,
    pool_path: PathBuf,
}

/// The migrator thread and the channel that stops it (dropping the sender wakes it).
struct BackgroundMigrator {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl AgentStore {
    /// Opens the agent store in `dir`, or creates it for the agent `agent_name` (host-like,
    /// e.g. `"example.org"`), with [`StoreOptions::default`]. An existing store keeps its
    /// name. Creates `dir` if missing.
    pub fn open_or_create(
        dir: impl AsRef<Path>,
        agent_name: &str,
    ) -> Result<(AgentStore, OpenReport), StoreError> {
        AgentStore::open_or_create_with(dir, agent_name, StoreOptions::default())
    }

    /// [`AgentStore::open_or_create`] with explicit options.
    pub fn open_or_create_with(
        dir: impl AsRef<Path>,
        agent_name: &str,
        options: StoreOptions,
    ) -> Result<(AgentStore, OpenReport), StoreError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let pool_path = dir.join(POOL_FILE_NAME);
        let pool = if pool_path.exists() {
            MmapPool::open(&pool_path, options.pool)?
        } else {
            MmapPool::create(&pool_path, options.pool_bytes, options.pool)?
        };
        let cold_dir = default_cold_dir(&pool_path);
        let cold = open_cold_tier(&cold_dir, &options.tier).map_err(|source| StoreError::Cold {
            path: cold_dir.clone(),
            source,
        })?;
        let (agent, report) =
            Agent::open_or_create_with_cold(pool, cold, agent_name, options.agent).map_err(
                |source| StoreError::Agent {
                    path: pool_path.clone(),
                    source,
                },
            )?;
        let agent = Arc::new(agent);
        let migrator = options
            .migrator
            .map(|policy| BackgroundMigrator::start(Arc::clone(&agent), policy));
        Ok((
            AgentStore {
                agent: Some(agent),
                migrator,
                pool_path,
            },
            report,
        ))
    }

    /// The agent: users, bundles, streams, deliveries (also reachable through `Deref`).
    pub fn agent(&self) -> &TieredAgent {
        // `agent` is `None` only inside `close` and `drop`, which own `self`.
        self.agent
            .as_deref()
            .unwrap_or_else(|| unreachable!("the agent is taken only by close and drop"))
    }

    /// The pool file.
    pub fn pool_path(&self) -> &Path {
        &self.pool_path
    }

    /// Runs one migration pass now, demoting every sealed segment (idle or not) to the cold
    /// tier; returns how many segments it migrated.
    pub fn migrate_now(&self) -> u64 {
        let pass = Migrator::new(MigratorPolicy {
            min_idle_ms: 0,
            ..MigratorPolicy::default()
        });
        pass.run_once(self.agent().engine()).migrated
    }

    /// Stops the migrator, closes the agent and unmaps the pool. Everything acknowledged
    /// was durable already; closing only releases the pool (dropping the store does the
    /// same, ignoring errors).
    pub fn close(mut self) -> Result<(), StoreError> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> Result<(), StoreError> {
        let mut panicked = false;
        if let Some(migrator) = self.migrator.take() {
            drop(migrator.stop);
            panicked = migrator.thread.join().is_err();
        }
        if let Some(agent) = self.agent.take() {
            // The migrator thread held the only other reference and has been joined.
            if let Ok(agent) = Arc::try_unwrap(agent) {
                let (pool, _cold) = agent.close_with_cold();
                pool.close()?;
            }
        }
        if panicked {
            return Err(StoreError::MigratorPanicked {
                path: self.pool_path.clone(),
            });
        }
        Ok(())
    }
}

impl std::ops::Deref for AgentStore {
    type Target = TieredAgent;

    fn deref(&self) -> &TieredAgent {
        self.agent()
    }
}

impl Drop for AgentStore {
    fn drop(&mut self) {
        // Errors cannot be returned from drop; `close` reports them.
        let _ = self.shut_down();
    }
}

impl std::fmt::Debug for AgentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentStore")
            .field("pool_path", &self.pool_path)
            .field("migrator", &self.migrator.is_some())
            .finish_non_exhaustive()
    }
}

impl BackgroundMigrator {
    fn start(agent: Arc<TieredAgent>, policy: MigratorPolicy) -> BackgroundMigrator {
        let (stop, stopped) = mpsc::channel::<()>();
        let interval = policy.interval;
        let migrator = Migrator::new(policy);
        let thread = std::thread::spawn(move || loop {
            migrator.run_once(agent.engine());
            match stopped.recv_timeout(interval) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
        });
        BackgroundMigrator { stop, thread }
    }
}

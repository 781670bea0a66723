//! The migration case over the object-store cold tier: `EngineColdTier<ObjectIo>` on an
//! in-memory object store behind a [`FaultyStore`] (request-level faults).
//!
//! * At every fence, crash images are recovered with a copy of the object store as it is at
//!   that instant: its completed objects (an upload that did not complete is no object).
//! * Faulty migrations: the countdown of the fault spec counts requests; EIO, ENOSPC and
//!   short writes fail the request (as after the client's retries), misdirected I/O answers
//!   a GET with a flipped byte (caught by the read-back verification).
//! * System crashes mid-migration: the process dies at the k-th request, which happens or
//!   not; the store then holds exactly the completed requests, and the recovered engine
//!   must remove an object its segment table does not point at (or adopt it if it does).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pstream_tiering::{
    ColdStoreConfig, Compression, CountdownFault, EngineColdTier, FaultSpec, FaultyStore, ObjectIo,
    ObjectTierConfig, StoreFault,
};

use crate::engine_case::{ColdEnv, ImageChecker};
use crate::error::Result;
use crate::migration_case::check_recovered;
use crate::tiering_case::small_config;

/// The cold tier of an object-store migration case.
pub type ObjectTier = EngineColdTier<ObjectIo>;

/// An in-memory bucket under request faults.
pub struct ObjectCold {
    store: FaultyStore,
    config: ColdStoreConfig,
    armed: AtomicBool,
}

/// One worker thread, short timeouts, one read attempt (injected faults surface at once).
fn tier_config() -> ObjectTierConfig {
    ObjectTierConfig {
        worker_threads: 1,
        operation_timeout_ms: 10_000,
        request_timeout_ms: 10_000,
        read_attempts: 1,
        ..ObjectTierConfig::default()
    }
}

fn open_io(store: &FaultyStore) -> pstream_tiering::Result<ObjectIo> {
    ObjectIo::with_store(
        Arc::new(store.clone()),
        "cold",
        "memory://cold".to_owned(),
        tier_config(),
    )
}

impl ObjectCold {
    pub fn create(compression: Compression) -> Result<(Arc<ObjectCold>, ObjectTier)> {
        let store = FaultyStore::in_memory();
        let mut config = small_config(compression);
        // A GET answered with garbage is caught by reading the object back before commit.
        config.writer.verify_after_write = true;
        let (tier, _) = EngineColdTier::open(open_io(&store)?, config.clone())?;
        let env = ObjectCold {
            store,
            config,
            armed: AtomicBool::new(false),
        };
        Ok((Arc::new(env), tier))
    }
}

impl ColdEnv for ObjectCold {
    type Tier = ObjectTier;
    const NESTED_RECOVERY_CRASHES: bool = false;

    fn image_checker(&self, lane_count: usize) -> ImageChecker {
        let config = self.config.clone();
        match self.store.snapshot() {
            Ok(durable) => Box::new(move |image, model| {
                // Each image recovers its own copy (recovery removes orphans).
                let copy = durable
                    .snapshot()
                    .map_err(|e| format!("object store snapshot: {e}"))?;
                let io = open_io(&copy).map_err(|e| format!("object io: {e}"))?;
                check_recovered(image, io, &config, model, lane_count)
            }),
            Err(error) => {
                let detail = error.to_string();
                Box::new(move |_, _| Err(format!("object store snapshot: {detail}")))
            }
        }
    }

    fn arm(&self, spec: Option<FaultSpec>) {
        self.armed.store(spec.is_some(), Ordering::Relaxed);
        let seed = spec.as_ref().map_or(0, |spec| spec.seed);
        let fault = spec.and_then(|spec| spec.countdown).map(|countdown| {
            let fault = match countdown.fault {
                CountdownFault::Crash => StoreFault::Crash,
                CountdownFault::Misdirect => StoreFault::Garbage,
                CountdownFault::Eio | CountdownFault::Enospc | CountdownFault::ShortWrite => {
                    StoreFault::Error
                }
            };
            (countdown.fail_at_op, fault, countdown.persistent)
        });
        self.store.arm(fault, seed);
    }

    fn armed(&self) -> bool {
        self.armed.load(Ordering::Relaxed)
    }

    fn reboot(&self, _seed: u64) -> std::result::Result<ObjectTier, String> {
        // What the crash left is what the store holds: every completed request.
        self.store.restart();
        self.armed.store(false, Ordering::Relaxed);
        let io = open_io(&self.store).map_err(|e| format!("object io: {e}"))?;
        let (tier, _) = EngineColdTier::open(io, self.config.clone())
            .map_err(|e| format!("cold tier recovery after a crash failed: {e}"))?;
        Ok(tier)
    }

    fn faults_injected(&self) -> u64 {
        self.store.injected()
    }
}

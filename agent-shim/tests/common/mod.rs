//! Shared test scaffolding: small simulated pools, callers, a restartable environment, and
//! the crash harness (crash images at fence points, each recovered with `Agent::open`).
#![allow(dead_code)]

use std::ops::ControlFlow;
use std::sync::Arc;

use parking_lot::Mutex;
use pmem_emul::{CrashPoint, SimPmem};
use pstream_agent::{Agent, AgentConfig, Caller};
use pstream_engine::{LogConfig, OpenOptions};

pub const POOL_BYTES: usize = 1 << 20;

pub fn config() -> AgentConfig {
    AgentConfig {
        log: LogConfig {
            segment_size_bytes: 16 * 1024,
            stream_slot_count: 256,
        },
        open: OpenOptions { lane_count: 2 },
        snapshot_every_changes: 16,
    }
}

pub fn user(name: &str) -> Caller {
    Caller::user(name).expect("valid user name")
}

pub fn client(user: &str, client: &str) -> Caller {
    Caller::client(user, client).expect("valid names")
}

/// How the scenario runs: straight, with restarts (close + open), or with restarts and
/// crash images checked at fence points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Plain,
    Reopen,
    Crash(Budget),
}

/// Which fences to inspect and how many images each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Inspect fences whose index is a multiple of this.
    pub fence_stride: u64,
    /// Enumerate every image when there are at most this many.
    pub exhaustive_max: u64,
    /// Otherwise draw this many seeded samples.
    pub samples: u64,
    /// Stop checking after this many images in total.
    pub images_max: u64,
    pub seed: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            fence_stride: 1,
            exhaustive_max: 256,
            samples: 12,
            images_max: 8000,
            seed: 0x5eed,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub fences_seen: u64,
    pub fences_checked: u64,
    pub images_checked: u64,
    pub recoveries_rerun: u64,
    /// Images taken at fences of a recovery, recovered again.
    pub nested_images_checked: u64,
    pub failures: Vec<String>,
}

type Check<O> = dyn Fn(&Agent<SimPmem>, &O) -> Result<(), String> + Send + Sync;

/// A restartable agent on a simulated pool, with an oracle shared with the crash hook.
pub struct Env<O: Send + 'static> {
    agent: Option<Agent<SimPmem>>,
    pub mode: Mode,
    pub oracle: Arc<Mutex<O>>,
    pub tally: Arc<Mutex<Tally>>,
    check: Arc<Check<O>>,
    pub restarts: u64,
}

impl<O: Send + 'static> Env<O> {
    pub fn new(
        agent_name: &str,
        mode: Mode,
        oracle: O,
        check: impl Fn(&Agent<SimPmem>, &O) -> Result<(), String> + Send + Sync + 'static,
    ) -> Env<O> {
        let agent =
            Agent::create(SimPmem::new(POOL_BYTES), agent_name, config()).expect("create agent");
        let mut env = Env {
            agent: Some(agent),
            mode,
            oracle: Arc::new(Mutex::new(oracle)),
            tally: Arc::new(Mutex::new(Tally::default())),
            check: Arc::new(check),
            restarts: 0,
        };
        env.install_hook();
        env
    }

    pub fn agent(&self) -> &Agent<SimPmem> {
        self.agent.as_ref().expect("agent is open")
    }

    fn install_hook(&mut self) {
        let Mode::Crash(budget) = self.mode else {
            return;
        };
        let oracle = Arc::clone(&self.oracle);
        let tally = Arc::clone(&self.tally);
        let check = Arc::clone(&self.check);
        let hook = move |point: &CrashPoint<'_>| {
            let fence = point.fence_index().unwrap_or(0);
            let mut t = tally.lock();
            t.fences_seen += 1;
            if fence % budget.fence_stride != 0 || t.images_checked >= budget.images_max {
                return;
            }
            t.fences_checked += 1;
            drop(t);
            let oracle = oracle.lock();
            point.for_each_image(
                budget.exhaustive_max,
                budget.samples,
                budget.seed ^ fence,
                |image| {
                    let mut t = tally.lock();
                    t.images_checked += 1;
                    let rerun = t.images_checked % 8 == 0;
                    let nested = t.images_checked % 16 == 1;
                    drop(t);
                    if nested {
                        match crash_during_recovery(image, &*oracle, &*check) {
                            Ok(count) => tally.lock().nested_images_checked += count,
                            Err(failure) => {
                                tally
                                    .lock()
                                    .failures
                                    .push(format!("fence {fence}, crash in recovery: {failure}"));
                                return ControlFlow::Break(());
                            }
                        }
                    }
                    if let Err(failure) = recover_and_check(image, rerun, &*oracle, &*check) {
                        tally
                            .lock()
                            .failures
                            .push(format!("fence {fence}: {failure}"));
                        return ControlFlow::Break(());
                    }
                    if rerun {
                        tally.lock().recoveries_rerun += 1;
                    }
                    ControlFlow::Continue(())
                },
            );
        };
        self.agent()
            .engine()
            .pmem()
            .set_fence_hook(Some(Box::new(hook)));
    }

    /// Close and open again (in `Plain` mode: nothing).
    pub fn restart(&mut self) {
        if self.mode == Mode::Plain {
            return;
        }
        let agent = self.agent.take().expect("agent is open");
        let pmem = agent.close();
        let (agent, _report) = Agent::open(pmem, config()).expect("reopen");
        self.agent = Some(agent);
        self.restarts += 1;
    }

    /// Runs the oracle check on the live agent, then on a reopened one.
    pub fn check_now(&mut self) {
        {
            let oracle = self.oracle.lock();
            if let Err(failure) = (self.check)(self.agent(), &oracle) {
                panic!("live check failed: {failure}");
            }
        }
        if self.mode != Mode::Plain {
            self.restart();
            let oracle = self.oracle.lock();
            if let Err(failure) = (self.check)(self.agent(), &oracle) {
                panic!("check after reopen failed: {failure}");
            }
        }
    }

    /// Removes the hook and asserts no crash image failed; returns the tally.
    pub fn finish(mut self) -> Tally {
        self.check_now();
        self.agent().engine().pmem().set_fence_hook(None);
        let tally = self.tally.lock().clone();
        assert!(
            tally.failures.is_empty(),
            "crash images failed: {:#?}",
            tally.failures
        );
        if let Mode::Crash(_) = self.mode {
            assert!(tally.images_checked > 0, "no crash image was checked");
        }
        tally
    }
}

/// Recovers a crash image and checks it; with `rerun`, recovers the recovered pool once
/// more (recovery must be repeatable).
fn recover_and_check<O>(
    image: &[u8],
    rerun: bool,
    oracle: &O,
    check: &Check<O>,
) -> Result<(), String> {
    let (agent, _) = Agent::open(SimPmem::from_image(image.to_vec()), config())
        .map_err(|e| format!("recovery failed: {e}"))?;
    check(&agent, oracle).map_err(|e| format!("after recovery: {e}"))?;
    if rerun {
        let pmem = agent.close();
        let (again, _) =
            Agent::open(pmem, config()).map_err(|e| format!("second recovery failed: {e}"))?;
        check(&again, oracle).map_err(|e| format!("after second recovery: {e}"))?;
    }
    Ok(())
}

/// Crashes a recovery of `image` at each of its fences (both extreme images), then
/// recovers those and checks them: recovery interrupted by a crash must recover again.
fn crash_during_recovery<O>(image: &[u8], oracle: &O, check: &Check<O>) -> Result<u64, String> {
    const RECOVERY_FENCES_MAX: usize = 6;
    let images: Arc<Mutex<Vec<Vec<u8>>>> = Arc::new(Mutex::new(Vec::new()));
    let sim = SimPmem::from_image(image.to_vec());
    let collected = Arc::clone(&images);
    sim.set_fence_hook(Some(Box::new(move |point: &CrashPoint<'_>| {
        if collected.lock().len() >= 2 * RECOVERY_FENCES_MAX {
            return;
        }
        // Samples 0 and 1 are "nothing pending persisted" and "everything persisted".
        point.for_each_image(0, 2, 0, |img| {
            collected.lock().push(img.to_vec());
            ControlFlow::Continue(())
        });
    })));
    let (agent, _) = Agent::open(sim, config()).map_err(|e| format!("recovery failed: {e}"))?;
    agent.engine().pmem().set_fence_hook(None);
    drop(agent);
    let images = std::mem::take(&mut *images.lock());
    for image in &images {
        recover_and_check(image, false, oracle, check)?;
    }
    Ok(images.len() as u64)
}

/// `Ok` when `cond`, else the formatted message.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            return Err(format!($($arg)*));
        }
    };
}

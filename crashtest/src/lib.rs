//! pstream-crashtest: the fault-injection harness of pstream.
//!
//! One harness exercises the engine, the cold tier and the agent shim against the oracle of
//! `docs/CRASH-MODEL.md`:
//!
//! * **Persistent memory**: seeded workloads run on the crash simulator
//!   ([`pmem_emul::SimPmem`]); at *every fence* a hook recovers crash images (all of them
//!   when few cache lines are dirty, seeded samples otherwise) and checks the oracle
//!   ([`oracle`] for the engine, a differential observation oracle for the shim), some of
//!   them also crashed during their own recovery and recovered again.
//! * **SSD**: a crash before every I/O of a migration, SSD crash images (unsynced sectors
//!   present, absent or garbage), countdown fault loops and read faults ([`tiering_case`]).
//! * **Both tiers**: migrations of sealed segments to cold files checked at every fence with
//!   the cold directory of that instant, faulty migrations, system crashes mid-migration
//!   ([`migration_case`]); every other migration case runs over the object-store cold tier
//!   with request faults and crashes at the k-th request (`object_cold`, feature
//!   `object-store`, on by default).
//! * **Processes**: kill -9 rounds of a child on a real mmap pool and cold directory
//!   ([`kill`]).
//!
//! Everything is seeded and deterministic: the same seed gives the same operations, the
//! same crash images and the same verdicts, summed up in a trace hash (except the case with
//! real threads, whose interleaving is the scheduler's). A violation reports its seed, its
//! crash point and the shortest operation trace found that reproduces it; `pstream
//! crashtest --replay SEED` replays it ([`run_case`]).

#![deny(unsafe_code)]

pub mod campaign;
pub mod engine_case;
mod error;
pub mod hash;
pub mod kill;
pub mod kill9;
pub mod kit;
pub mod media_case;
pub mod migration_case;
pub mod mutants;
#[cfg(feature = "object-store")]
pub mod object_cold;
pub mod oracle;
mod report;
pub mod shim_case;
pub mod shrink;
pub mod threads_case;
pub mod tiering_case;

pub use campaign::{run_campaign, run_case, Budgets, CampaignConfig, CampaignReport, Progress};
pub use error::{CrashtestError, Result};
pub use report::{CaseKind, CaseReport, Tally, Violation};

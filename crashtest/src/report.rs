//! What a case and a campaign report: counters, violations, trace hashes.

use std::fmt;
use std::ops::AddAssign;

use serde::Serialize;

/// Counters of crash checking. Every field counts across all cases it was added over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Fences seen by the fence hook (crash points of persistent memory).
    pub fences: u64,
    /// Fences whose crash images were checked.
    pub fences_checked: u64,
    /// Fences whose crash images were all enumerated (not sampled).
    pub exhaustive_fences: u64,
    /// Persistent-memory crash images recovered and checked against the oracle.
    pub images: u64,
    /// Images taken at fences of a recovery (crash during recovery), recovered again.
    pub recovery_crash_images: u64,
    /// SSD crash points of migrations (a crash before the k-th I/O of a cold write or of
    /// cold-store recovery).
    pub migration_crash_points: u64,
    /// SSD crash images materialized and recovered.
    pub cold_images: u64,
    /// I/O faults injected (countdown and probabilistic).
    pub io_faults_injected: u64,
    /// Operations executed.
    pub ops: u64,
}

impl Tally {
    /// Crash images of any kind that were recovered and checked.
    pub fn crash_images_checked(&self) -> u64 {
        self.images + self.recovery_crash_images + self.cold_images
    }
}

impl AddAssign for Tally {
    fn add_assign(&mut self, other: Tally) {
        self.fences += other.fences;
        self.fences_checked += other.fences_checked;
        self.exhaustive_fences += other.exhaustive_fences;
        self.images += other.images;
        self.recovery_crash_images += other.recovery_crash_images;
        self.migration_crash_points += other.migration_crash_points;
        self.cold_images += other.cold_images;
        self.io_faults_injected += other.io_faults_injected;
        self.ops += other.ops;
    }
}

/// A crash-oracle violation: where it happened and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The crash point: index of the fence (persistent memory) or of the I/O operation (SSD)
    /// the crash happened before; `None` when the live state itself was wrong.
    pub crash_point: Option<u64>,
    /// Index of the operation in flight.
    pub op_index: Option<usize>,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.crash_point {
            Some(point) => write!(f, "crash point {point}")?,
            None => write!(f, "no crash (live state)")?,
        }
        if let Some(op) = self.op_index {
            write!(f, ", during op #{op}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// Which workload a case runs; decided by its seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseKind {
    /// Random multi-stream creates, appends (single and batched, crafted payloads), trims,
    /// deletes and reopens by one writer.
    EngineRandom,
    /// Several logical writers, their whole operations interleaved round-robin.
    EngineInterleaved,
    /// Two OS threads appending concurrently (sampled images; the interleaving is the
    /// scheduler's, so the trace hash covers the operations only).
    EngineThreads,
    /// Agent shim operations: bundles, recipients, grants, streams, ephemeral takes, acks.
    Shim,
    /// Cold-tier migrations: a crash before every I/O, countdown faults, read faults.
    Tiering,
    /// Engine and cold tier together: crash images at every fence of migrations recovered
    /// with the cold files of that instant, faulty migrations, system crashes mid-migration.
    Migration,
}

impl CaseKind {
    pub const ALL: [CaseKind; 6] = [
        CaseKind::EngineRandom,
        CaseKind::EngineInterleaved,
        CaseKind::EngineThreads,
        CaseKind::Shim,
        CaseKind::Tiering,
        CaseKind::Migration,
    ];

    /// The kind a case seed runs.
    pub fn of_seed(seed: u64) -> CaseKind {
        CaseKind::ALL[(seed % CaseKind::ALL.len() as u64) as usize]
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CaseKind::EngineRandom => "engine_random",
            CaseKind::EngineInterleaved => "engine_interleaved",
            CaseKind::EngineThreads => "engine_threads",
            CaseKind::Shim => "shim",
            CaseKind::Tiering => "tiering",
            CaseKind::Migration => "migration",
        }
    }

    /// Whether the same seed replays the same crash images (not with real threads).
    pub fn is_deterministic(self) -> bool {
        self != CaseKind::EngineThreads
    }
}

impl fmt::Display for CaseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaseReport {
    pub seed: u64,
    pub kind: CaseKind,
    pub tally: Tally,
    /// Hash of the operations, crash points and verdicts of the case.
    pub trace_hash: u64,
    pub violation: Option<Violation>,
    /// The shortest operation trace found that reproduces the violation (empty if none).
    pub shrunk_trace: Vec<String>,
}

impl CaseReport {
    /// A multi-line description of a violation: seed, crash point, trace, how to replay.
    pub fn describe_violation(&self) -> Option<String> {
        let violation = self.violation.as_ref()?;
        let mut text = format!(
            "VIOLATION in case seed {} ({}): {violation}\n",
            self.seed, self.kind
        );
        if !self.shrunk_trace.is_empty() {
            text.push_str(&format!(
                "shortest reproducing trace ({} ops):\n",
                self.shrunk_trace.len()
            ));
            for (index, op) in self.shrunk_trace.iter().enumerate() {
                text.push_str(&format!("  #{index:<3} {op}\n"));
            }
        }
        text.push_str(&format!(
            "replay: pstream crashtest --replay {}\n",
            self.seed
        ));
        Some(text)
    }
}

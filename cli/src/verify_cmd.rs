//! `pstream verify`: a read-only check of a pool and its cold files, reporting every fault
//! with its location. Exit status: 0 clean, 1 corruption found, 2 could not run (bad path,
//! locked pool, unreadable file, a pool that is not a formatted pstream log).

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use pstream::engine::{EngineError, VerifyReport};
use pstream::pmem_emul::{MmapPool, PmemError, PoolOptions};
use pstream::tiering::{
    default_cold_dir, ColdStore, ColdStoreConfig, DirectIo, TieringError, UringConfig, UringIo,
};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The pool file to check
    #[arg(long, value_name = "PATH")]
    pool: PathBuf,
    /// Cold directory whose files are checked too [default: PATH.cold, if it exists]
    #[arg(long = "cold-dir", value_name = "DIR")]
    cold_dir: Option<PathBuf>,
    /// Print one JSON object as the last line of stdout
    #[arg(long)]
    json: bool,
}

/// Why `verify` could not run (exit 2), or that it found corruption (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// `PmemError` messages already name the pool's path.
    #[error("{0}")]
    Pool(#[from] PmemError),
    #[error("pool {path}: {source}")]
    Engine { path: PathBuf, source: EngineError },
    #[error("cold directory {path}: {source}")]
    Cold { path: PathBuf, source: TieringError },
    #[error("cannot write to stdout: {0}")]
    Stdout(#[source] std::io::Error),
    #[error("pool {path} is corrupt: {faults} fault(s) found")]
    Corrupt { path: PathBuf, faults: usize },
}

impl VerifyError {
    /// Whether this is a finding (corruption) rather than a failure to run.
    pub fn is_finding(&self) -> bool {
        matches!(self, VerifyError::Corrupt { .. })
    }
}

/// One fault: where, what kind, and the full message.
#[derive(Debug, Clone, serde::Serialize)]
struct Fault {
    /// `pool` or `cold`.
    area: &'static str,
    location: String,
    kind: String,
    message: String,
}

impl Fault {
    fn engine(error: &EngineError) -> Fault {
        match error {
            EngineError::Corruption { location, kind, .. } => Fault {
                area: "pool",
                location: location.to_string(),
                kind: kind.to_string(),
                message: error.to_string(),
            },
            other => Fault {
                area: "pool",
                location: "pool".to_owned(),
                kind: "error".to_owned(),
                message: other.to_string(),
            },
        }
    }

    fn cold(name: &str, error: &TieringError) -> Fault {
        let (location, kind) = match error {
            TieringError::Corrupt {
                file,
                offset_bytes,
                kind,
                ..
            } => (format!("{file} offset {offset_bytes}"), kind.to_string()),
            _ => (name.to_owned(), "error".to_owned()),
        };
        Fault {
            area: "cold",
            location,
            kind,
            message: error.to_string(),
        }
    }
}

#[derive(Debug, Default, serde::Serialize)]
struct ColdSummary {
    dir: Option<String>,
    files_checked: u64,
    records_checked: u64,
    temp_files: Vec<String>,
}

pub fn run(args: &VerifyArgs) -> Result<(), VerifyError> {
    let path = args.pool.clone();
    let pool = MmapPool::open(&path, PoolOptions::default())?;
    let mut faults = Vec::new();
    let report = match pstream::engine::verify(&pool) {
        Ok(report) => report,
        // No superblock copy checks: that is corruption found, not a failure to run.
        Err(error @ EngineError::Corruption { .. }) => {
            faults.push(Fault::engine(&error));
            VerifyReport::default()
        }
        Err(source) => return Err(VerifyError::Engine { path, source }),
    };
    faults.extend(report.problems.iter().map(Fault::engine));
    let cold = check_cold(args, &mut faults)?;
    drop(pool);

    let mut out = std::io::stdout().lock();
    if args.json {
        let json = serde_json::json!({
            "pool": path.display().to_string(),
            "clean": faults.is_empty(),
            "stream_slots_checked": report.stream_slots_checked,
            "segments_checked": report.segments_checked,
            "records_checked": report.records_checked,
            "bytes_checked": report.bytes_checked,
            "segments_by_state": report.segments_by_state.iter().map(|(s, n)| (s.to_string(), *n)).collect::<std::collections::BTreeMap<_, _>>(),
            "cold": cold,
            "faults": faults,
            "problems": faults.iter().map(|f| f.message.clone()).collect::<Vec<_>>(),
        });
        writeln!(out, "{json}").map_err(VerifyError::Stdout)?;
    } else {
        let mut lines = vec![format!(
            "checked {} stream slots, {} segments, {} records, {} bytes",
            report.stream_slots_checked,
            report.segments_checked,
            report.records_checked,
            report.bytes_checked
        )];
        for (state, count) in &report.segments_by_state {
            lines.push(format!("  {state:<10} {count} segment(s)"));
        }
        match &cold.dir {
            Some(dir) => lines.push(format!(
                "cold directory {dir}: {} file(s), {} record(s) checked",
                cold.files_checked, cold.records_checked
            )),
            None => lines.push("no cold directory".to_owned()),
        }
        for name in &cold.temp_files {
            lines.push(format!(
                "  {name}: an interrupted migration's temp file (not a fault; open removes it)"
            ));
        }
        for fault in &faults {
            lines.push(format!("CORRUPT: {}: {}", fault.location, fault.message));
        }
        if faults.is_empty() {
            lines.push("clean".to_owned());
        }
        for line in lines {
            writeln!(out, "{line}").map_err(VerifyError::Stdout)?;
        }
    }
    if faults.is_empty() {
        Ok(())
    } else {
        Err(VerifyError::Corrupt {
            path,
            faults: faults.len(),
        })
    }
}

/// Checks every file of the cold directory without changing it: trailer, header and footer
/// of each (the cold store's own validator, opened read-only), then every block and record
/// crc. Damaged files, and `.corrupt` files an earlier open quarantined, are faults.
fn check_cold(args: &VerifyArgs, faults: &mut Vec<Fault>) -> Result<ColdSummary, VerifyError> {
    let explicit = args.cold_dir.is_some();
    let dir = args
        .cold_dir
        .clone()
        .unwrap_or_else(|| default_cold_dir(&args.pool));
    if !dir.is_dir() {
        if explicit {
            return Err(VerifyError::Cold {
                path: dir,
                source: TieringError::Fs {
                    op: pstream::tiering::IoOp::Open,
                    file: "cold directory".to_owned(),
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                },
            });
        }
        return Ok(ColdSummary::default());
    }
    let cold_error = |source| VerifyError::Cold {
        path: dir.clone(),
        source,
    };
    // No O_DIRECT probe: it would create a file in the directory.
    let io = UringIo::open(
        &dir,
        UringConfig {
            direct_io: DirectIo::Off,
            ..UringConfig::default()
        },
    )
    .map_err(cold_error)?;
    let (store, opened) =
        ColdStore::open_read_only(io, ColdStoreConfig::default()).map_err(cold_error)?;
    let mut summary = ColdSummary {
        dir: Some(dir.display().to_string()),
        temp_files: opened.temp_kept.clone(),
        ..ColdSummary::default()
    };
    for damaged in &opened.damaged_kept {
        faults.push(Fault::cold(&damaged.name, &damaged.error));
    }
    for segment_gen in &opened.corrupt_files {
        faults.push(Fault {
            area: "cold",
            location: format!("seg-{segment_gen:016x}.pcold.corrupt"),
            kind: "quarantined".to_owned(),
            message: format!(
                "cold file of segment generation {segment_gen:#x} was found damaged and \
                 quarantined by an earlier open"
            ),
        });
    }
    for index in &opened.files {
        let segment_gen = index.segment_gen();
        summary.files_checked += 1;
        match store.verify(segment_gen) {
            Ok(records) => summary.records_checked += records,
            Err(error) if error.is_corruption() => faults.push(Fault::cold(
                &format!("seg-{segment_gen:016x}.pcold"),
                &error,
            )),
            Err(error) => return Err(cold_error(error)),
        }
    }
    Ok(summary)
}

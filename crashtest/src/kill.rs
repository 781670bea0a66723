//! Process crashes on real files: `kill -9` rounds.
//!
//! A child process ([`run_child`]; `pstream crashtest --child POOL` in the CLI) opens (or
//! creates) an mmap pool and a cold-tier directory, appends from two threads and migrates
//! segments to cold files from a third, and prints one line per acknowledgement. The parent
//! ([`run_kill_rounds`]) SIGKILLs it at a random instant, reopens pool and directory, and
//! checks every acknowledgement: records present byte for byte, streams dense, `verify`
//! clean, cold files complete. Several rounds reuse the same files, so later rounds also
//! recover from the earlier kills (and may be killed during that recovery).
//!
//! On an emulated pool the page cache outlives the process, so this tests process crashes;
//! power-loss states come from the simulator (see `docs/CRASH-MODEL.md`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pmem_emul::{MmapPool, PoolOptions, SplitMix64};
use pstream_engine::{Log, LogConfig, OpenOptions, Probe, StreamId};
use pstream_tiering::{
    ColdStore, ColdStoreConfig, SegmentIo, SourceSegment, StdIo, UringConfig, UringIo,
};

use crate::error::{CrashtestError, Result};
use crate::report::Violation;
use crate::tiering_case::{check_readback, make_records, small_config, ColdRecord};

const POOL_BYTES: usize = 32 << 20;
const STREAM_COUNT: u8 = 3;
const LANE_COUNT: usize = 4;
/// A child stops by itself after this long, should its parent be gone.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);
/// Records per cold segment the child writes.
const COLD_RECORDS: usize = 24;

/// The pool file and cold directory of a kill campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillFiles {
    pub pool: PathBuf,
    pub cold_dir: PathBuf,
}

impl KillFiles {
    /// The files of a campaign in `dir`.
    pub fn in_dir(dir: &Path) -> KillFiles {
        KillFiles::for_pool(&dir.join("crashtest.pool"))
    }

    /// The pool file and its cold directory `POOL.cold` (what the child derives from the
    /// pool path it is given).
    pub fn for_pool(pool: &Path) -> KillFiles {
        let mut cold_dir = pool.as_os_str().to_owned();
        cold_dir.push(".cold");
        KillFiles {
            pool: pool.to_path_buf(),
            cold_dir: PathBuf::from(cold_dir),
        }
    }
}

/// The payload of `seq` in stream `label`: recomputable by the parent.
pub fn kill_payload(label: u8, seq: u64) -> Vec<u8> {
    let len = ((seq * 37 + u64::from(label) * 11) % 700) as usize;
    (0..len).map(|i| (seq as usize + i) as u8 ^ label).collect()
}

/// The records of cold segment `segment_gen`: recomputable by the parent.
pub fn cold_records(segment_gen: u64) -> Vec<ColdRecord> {
    make_records(segment_gen, COLD_RECORDS, 2000)
}

fn cold_config() -> ColdStoreConfig {
    small_config(pstream_tiering::Compression::None)
}

fn source(segment_gen: u64) -> SourceSegment {
    SourceSegment {
        segment_index: 0,
        segment_gen,
        pool_nonce: 0x6b11_6b11,
    }
}

fn open_or_create(path: &Path) -> Result<Log<MmapPool>> {
    let options = OpenOptions {
        lane_count: LANE_COUNT,
    };
    let config = LogConfig {
        segment_size_bytes: 1 << 20,
        stream_slot_count: 16,
    };
    if path.exists() {
        let pool = MmapPool::open(path, PoolOptions::default())?;
        // A kill during the format leaves a pool that probes Blank: format it again.
        if let Probe::Blank { .. } = pstream_engine::probe(&pool)? {
            return Ok(Log::create(pool, config, options)?);
        }
        Ok(Log::open(pool, options)?.0)
    } else {
        let pool = MmapPool::create(path, POOL_BYTES, PoolOptions::default())?;
        Ok(Log::create(pool, config, options)?)
    }
}

fn say(line: &str) {
    // The parent parses whole lines ending in " ." and ignores anything else, so a line
    // cut short by the kill is never misread. Stdout gone means the parent is gone: stop.
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line} .")
        .and_then(|()| out.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

/// Child mode: append and migrate until killed (or for at most a minute). Prints
/// `ack <label> <seq> <seq_guess> .` per acknowledged record and `cold <gen> .` per committed
/// cold segment.
pub fn run_child(files: &KillFiles) -> Result<()> {
    let log = open_or_create(&files.pool)?;
    let mut labels: Vec<u8> = log.list_streams().iter().map(|s| s.label[0]).collect();
    while (labels.len() as u8) < STREAM_COUNT {
        let label = b'0' + labels.len() as u8;
        log.create_stream(&[label])?;
        labels.push(label);
    }
    let streams: Vec<(StreamId, u8)> = log
        .list_streams()
        .into_iter()
        .map(|s| (s.id, s.label[0] - b'0'))
        .collect();
    let io = UringIo::open(&files.cold_dir, UringConfig::default())?;
    let (cold, report) = ColdStore::open(io, cold_config())?;
    let mut next_gen = report
        .files
        .iter()
        .map(|f| f.segment_gen() + 1)
        .max()
        .unwrap_or(1);
    // The parent checked these after the previous round; deleting them keeps the directory
    // small over a long campaign (and puts deletes under the kill too).
    for file in &report.files {
        cold.delete(file.segment_gen())?;
    }
    say("ready");
    let started = Instant::now();
    std::thread::scope(|scope| -> Result<()> {
        let appenders: Vec<_> = (0..2u64)
            .map(|t| {
                let (log, streams) = (&log, &streams);
                scope.spawn(move || append_until(log, streams, t, started))
            })
            .collect();
        while started.elapsed() < CHILD_LIFETIME {
            cold.write_segment(&source(next_gen), cold_input(&cold_records(next_gen)))?;
            say(&format!("cold {next_gen}"));
            next_gen += 1;
            std::thread::sleep(Duration::from_millis(15));
        }
        for appender in appenders {
            appender.join().map_err(|_| CrashtestError::Child {
                round: 0,
                detail: "an appending thread panicked".to_owned(),
            })??;
        }
        Ok(())
    })
}

fn cold_input(records: &[ColdRecord]) -> impl Iterator<Item = (u64, u64, &[u8])> {
    records.iter().map(|(s, q, p)| (*s, *q, p.as_slice()))
}

fn append_until(
    log: &Log<MmapPool>,
    streams: &[(StreamId, u8)],
    thread: u64,
    started: Instant,
) -> Result<()> {
    let mut rng = SplitMix64::new(thread ^ u64::from(std::process::id()) << 8);
    while started.elapsed() < CHILD_LIFETIME {
        let (id, label) = streams[rng.below(streams.len() as u64) as usize];
        // Trims keep the pool from filling.
        let (first, next) = log.bounds(id)?;
        if next - first > 2000 {
            log.trim(id, next - 1000)?;
        }
        // Concurrent appenders on one stream: the seq is known only on return, so the
        // payload is keyed by a guess and checked by content.
        let seq_guess = log.bounds(id)?.1;
        let seq = log.append(id, &kill_payload(label, seq_guess))?;
        say(&format!("ack {label} {seq} {seq_guess}"));
    }
    Ok(())
}

/// What the child reported before it died.
#[derive(Debug, Default)]
struct Reported {
    /// (label, seq, seq_guess)
    acks: Vec<(u8, u64, u64)>,
    cold_gens: Vec<u64>,
}

fn parse(lines: impl Iterator<Item = String>) -> Reported {
    let mut reported = Reported::default();
    for line in lines {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["ack", label, seq, guess, "."] => {
                if let (Ok(label), Ok(seq), Ok(guess)) = (label.parse(), seq.parse(), guess.parse())
                {
                    reported.acks.push((label, seq, guess));
                }
            }
            ["cold", segment_gen, "."] => {
                if let Ok(segment_gen) = segment_gen.parse() {
                    reported.cold_gens.push(segment_gen);
                }
            }
            _ => {}
        }
    }
    reported
}

/// Counters of a kill campaign.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KillReport {
    pub rounds: u64,
    pub acks_checked: u64,
    pub cold_segments_checked: u64,
    pub violation: Option<Violation>,
}

/// Runs `rounds` kill -9 rounds on `files`; `child` makes the command that runs
/// [`run_child`] on them. Stops at the first violation.
pub fn run_kill_rounds(
    files: &KillFiles,
    rounds: u64,
    seed: u64,
    child: &dyn Fn(&KillFiles) -> Command,
    progress: &mut dyn FnMut(u64),
) -> Result<KillReport> {
    let mut rng = SplitMix64::new(seed ^ 0x9_1111);
    let mut report = KillReport::default();
    for round in 0..rounds {
        let reported = run_one_child(
            files,
            round,
            Duration::from_millis(80 + rng.below(300)),
            child,
        )?;
        report.rounds += 1;
        report.acks_checked += reported.acks.len() as u64;
        report.cold_segments_checked += reported.cold_gens.len() as u64;
        if let Err(detail) = check_after_kill(files, &reported) {
            report.violation = Some(Violation {
                crash_point: Some(round),
                op_index: None,
                detail: format!("kill round {round} (seed {seed}): {detail}"),
            });
            break;
        }
        progress(round + 1);
    }
    Ok(report)
}

fn run_one_child(
    files: &KillFiles,
    round: u64,
    run_for: Duration,
    child: &dyn Fn(&KillFiles) -> Command,
) -> Result<Reported> {
    let mut process = child(files)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| CrashtestError::Child {
            round,
            detail: format!("cannot start the child: {source}"),
        })?;
    let Some(stdout) = process.stdout.take() else {
        return Err(CrashtestError::Child {
            round,
            detail: "no stdout pipe".to_owned(),
        });
    };
    let reader = std::thread::spawn(move || {
        parse(
            BufReader::new(stdout)
                .lines()
                .map_while(std::io::Result::ok),
        )
    });
    std::thread::sleep(run_for);
    // SIGKILL (a child that already exited is fine: kill then reports an error we ignore,
    // and wait returns its status).
    let _ = process.kill();
    process.wait().map_err(|source| CrashtestError::Child {
        round,
        detail: format!("cannot reap the child: {source}"),
    })?;
    reader.join().map_err(|_| CrashtestError::Child {
        round,
        detail: "the output reader panicked".to_owned(),
    })
}

fn check_after_kill(files: &KillFiles, reported: &Reported) -> std::result::Result<(), String> {
    if files.pool.exists() {
        let pool = MmapPool::open(&files.pool, PoolOptions::default())
            .map_err(|e| format!("reopen after kill: {e}"))?;
        let probed = pstream_engine::probe(&pool).map_err(|e| format!("probe after kill: {e}"))?;
        if let Probe::Blank { .. } = probed {
            // Killed during the format: nothing can have been acknowledged.
            if !reported.acks.is_empty() {
                return Err("the pool probes blank, yet appends were acknowledged".to_owned());
            }
            pool.close().map_err(|e| format!("close: {e}"))?;
        } else {
            let (log, _) = Log::open(
                pool,
                OpenOptions {
                    lane_count: LANE_COUNT,
                },
            )
            .map_err(|e| format!("recovery after kill: {e}"))?;
            let checked = check_acks(&log, &reported.acks);
            let verified = pstream_engine::verify(log.pmem());
            let closed = log.close().close();
            checked?;
            match verified {
                Ok(report) if report.is_clean() => {}
                Ok(report) => return Err(format!("verify after kill: {:?}", report.problems)),
                Err(error) => return Err(format!("verify after kill: {error}")),
            }
            closed.map_err(|e| format!("close: {e}"))?;
        }
    } else if !reported.acks.is_empty() {
        return Err("the pool file is gone, yet appends were acknowledged".to_owned());
    }
    if files.cold_dir.exists() {
        check_cold(&files.cold_dir, &reported.cold_gens)?;
    } else if !reported.cold_gens.is_empty() {
        return Err("the cold directory is gone, yet migrations were acknowledged".to_owned());
    }
    Ok(())
}

fn check_acks(log: &Log<MmapPool>, acks: &[(u8, u64, u64)]) -> std::result::Result<(), String> {
    let by_label: HashMap<u8, StreamId> = log
        .list_streams()
        .into_iter()
        .filter_map(|s| Some((s.label.first()?.wrapping_sub(b'0'), s.id)))
        .collect();
    for &(label, seq, guess) in acks {
        let Some(&id) = by_label.get(&label) else {
            return Err(format!("stream {label} with acknowledged records is gone"));
        };
        let (first, next) = log.bounds(id).map_err(|e| e.to_string())?;
        if seq >= next {
            return Err(format!(
                "acknowledged record {label}/{seq} lost (next seq {next})"
            ));
        }
        if seq >= first {
            let record = log
                .read(id, seq)
                .map_err(|e| format!("read acknowledged {label}/{seq}: {e}"))?;
            if record.payload() != kill_payload(label, guess).as_slice() {
                return Err(format!("acknowledged record {label}/{seq} differs"));
            }
        }
    }
    for (&label, &id) in &by_label {
        let (first, next) = log.bounds(id).map_err(|e| e.to_string())?;
        let iterated = log.iter(id, first).map_err(|e| e.to_string())?.count() as u64;
        if iterated != next - first {
            return Err(format!(
                "stream {label} is not dense: {iterated} records iterated in {first}..{next}"
            ));
        }
    }
    Ok(())
}

fn check_cold(dir: &Path, cold_gens: &[u64]) -> std::result::Result<(), String> {
    let io = StdIo::open(dir).map_err(|e| format!("open cold dir: {e}"))?;
    let (store, report) = ColdStore::open(io, cold_config())
        .map_err(|e| format!("cold store recovery after kill: {e}"))?;
    if let Some(file) = report.quarantined.first() {
        return Err(format!(
            "damaged cold file {} after kill: {}",
            file.name, file.error
        ));
    }
    let names = store.io().list().map_err(|e| e.to_string())?;
    if names.iter().any(|name| name.ends_with(".tmp")) {
        return Err(format!("temp cold files left after recovery: {names:?}"));
    }
    for &segment_gen in cold_gens {
        let records = cold_records(segment_gen);
        match store.index(segment_gen) {
            None => return Err(format!("acknowledged cold segment {segment_gen} lost")),
            Some(index) if index.record_count() != records.len() as u64 => {
                return Err(format!(
                    "cold segment {segment_gen} holds {} records, {} were written",
                    index.record_count(),
                    records.len()
                ))
            }
            Some(_) => check_readback(&store, segment_gen, &records)
                .map_err(|e| format!("cold segment {segment_gen}: {e}"))?,
        }
    }
    Ok(())
}

//! `pstream demo`: the agent store end to end.
//!
//! Creates (or reopens) an agent store in a pool file under `--dir`, runs the paper's three
//! use cases through the agent shim (microblog, live stream, exam file drop), pushes a burst
//! of traffic, closes and reopens the store, checks that everything acknowledged is still
//! there, and prints a summary. Every run adds its own bundles (`*-r<run>`), so running it
//! twice exercises the reopen path with the first run's data in place.
//!
//! The store is tiered: cold segments go to SSD files in `<pool>.cold/`. A migrator runs in
//! the background during the use cases (demoting sealed segments idle for a while), and
//! before the restart one more pass demotes every sealed segment, as if the data had aged;
//! the checks after the restart then read those records back from the SSD files.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use pstream::agent::{
    Address, Agent, AgentConfig, AgentError, BundleRef, Caller, Creators, Event, Metadata,
    OpenReport, PageLimit, Position, StreamDefaults, StreamNo, StreamPolicy, StreamSpec,
};
use pstream::engine::{LogConfig, TierStats};
use pstream::pmem_emul::{MmapPool, Pmem, PmemError, PoolOptions};
use pstream::tiering::{
    default_cold_dir, open_cold_tier_url, ColdIo, EngineColdTier, Migrator, MigratorPolicy,
    MigratorStats, TierConfig, TieredError,
};

/// The demo's agent store: a pool file plus its cold directory.
type Store = Agent<MmapPool, EngineColdTier<ColdIo>>;

const MIB_BYTES: usize = 1 << 20;
const AGENT_NAME: &str = "demo.local";
const POOL_FILE: &str = "agent.pool";
const POSTS: usize = 50;
const FRAMES: u64 = 600;
const FRAME_BATCH: u64 = 10;
const FRAME_BYTES: usize = 1024;
const BURST_RECORD_BYTES: usize = 1024;
const BURST_BATCH: u64 = 64;
/// The background migrator demotes sealed segments idle this long.
const BACKGROUND_IDLE_MS: u64 = 10;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory of the agent store [default: ./pstream-data]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Pool size in MiB when the store is created
    #[arg(long = "pool-mib", value_name = "N", default_value_t = 256)]
    pool_mib: usize,
    /// Cold tier on an object store (s3://bucket/prefix?endpoint=URL, file:///dir) instead
    /// of the cold directory POOL.cold; credentials from the environment
    #[arg(long = "cold-url", value_name = "URL")]
    cold_url: Option<String>,
    /// Records (1 KiB each) in the traffic burst
    #[arg(long = "burst", value_name = "N", default_value_t = 20_000)]
    burst_records: u64,
    /// Print one JSON object as the last line of stdout
    #[arg(long)]
    json: bool,
}

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("pool {path}: {source}")]
    Pool { path: PathBuf, source: PmemError },
    #[error("agent store: {0}")]
    Agent(#[from] AgentError),
    #[error("cold tier {path}: {source}")]
    Cold { path: PathBuf, source: TieredError },
    #[error("cannot create the directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--pool-mib {pool_mib} is out of range ({min_mib} to {max_mib})")]
    PoolSize {
        pool_mib: usize,
        min_mib: usize,
        max_mib: usize,
    },
    #[error("check failed: {0}")]
    Check(String),
    #[error("cannot write to stdout: {0}")]
    Stdout(std::io::Error),
}

/// Fails the demo with a message unless `cond` holds.
fn ensure(cond: bool, message: impl FnOnce() -> String) -> Result<(), DemoError> {
    if cond {
        Ok(())
    } else {
        Err(DemoError::Check(message()))
    }
}

/// One phase's figures.
#[derive(Debug, Clone, Default)]
struct Phase {
    name: &'static str,
    operations: u64,
    bytes: u64,
    duration: Duration,
    note: String,
}

impl Phase {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "operations": self.operations,
            "bytes": self.bytes,
            "seconds": self.duration.as_secs_f64(),
            "note": self.note,
        })
    }
}

fn caller(user: &str) -> Result<Caller, DemoError> {
    Ok(Caller::user(user).map_err(AgentError::from)?)
}

fn app(user: &str, client: &str) -> Result<Caller, DemoError> {
    Ok(Caller::client(user, client).map_err(AgentError::from)?)
}

fn address(text: &str) -> Result<Address, DemoError> {
    Ok(Address::parse(text).map_err(AgentError::from)?)
}

fn agent_config() -> AgentConfig {
    AgentConfig {
        log: LogConfig {
            segment_size_bytes: 1 << 20,
            stream_slot_count: 16 * 1024,
        },
        ..AgentConfig::default()
    }
}

/// Runs the demo.
pub fn run(args: &DemoArgs) -> Result<(), DemoError> {
    const POOL_MIB_MIN: usize = 64;
    const POOL_MIB_MAX: usize = 1 << 20;
    if !(POOL_MIB_MIN..=POOL_MIB_MAX).contains(&args.pool_mib) {
        return Err(DemoError::PoolSize {
            pool_mib: args.pool_mib,
            min_mib: POOL_MIB_MIN,
            max_mib: POOL_MIB_MAX,
        });
    }
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("pstream-data"));
    std::fs::create_dir_all(&dir).map_err(|source| DemoError::Dir {
        path: dir.clone(),
        source,
    })?;
    let path = dir.join(POOL_FILE);
    let out = Output { json: args.json };
    let started = Instant::now();

    // A directory or an object store URL (kept as given: `open_cold_tier_url` parses it).
    let cold_dir = args
        .cold_url
        .clone()
        .map(PathBuf::from)
        .unwrap_or_else(|| default_cold_dir(&path));
    let (agent, opened) = open_store(&path, &cold_dir, args.pool_mib)?;
    let run = count_runs(&agent)? + 1;
    let guarantee = agent.engine().pmem().guarantee().as_str();
    out.line(&format!(
        "pstream demo: agent {AGENT_NAME} in {} ({}, run {run}, durability: {guarantee})",
        path.display(),
        if opened.created {
            "new store"
        } else {
            "reopened store"
        },
    ))?;
    if !opened.created {
        let stats = agent.stats();
        out.line(&format!(
            "  found {} users, {} bundles, {} streams from earlier runs (recovered in {:.1} ms)",
            stats.users,
            stats.bundles,
            stats.streams,
            opened.duration.as_secs_f64() * 1e3
        ))?;
    }
    setup_users(&agent)?;

    // The use cases, with the migrator demoting idle sealed segments in the background.
    let background = Migrator::new(MigratorPolicy {
        min_idle_ms: BACKGROUND_IDLE_MS,
        interval: Duration::from_millis(20),
        ..MigratorPolicy::default()
    });
    let stop = AtomicBool::new(false);
    let (use_cases, background_stats) = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Acquire) {
                background.run_once(agent.engine());
                std::thread::sleep(background.policy().interval);
            }
        });
        let result = use_cases(&agent, run, args.burst_records, &out);
        stop.store(true, Ordering::Release);
        (result, background.stats())
    });
    let (mut phases, microblog, exam, burst) = use_cases?;
    phases.push(age_out(&agent, &background_stats, &out)?);
    let hot_bytes_before = agent.stats().hot_bytes;
    let tier_before = agent.engine().tier_stats();

    // Restart: close the store (msync) and open it again, cold tier included.
    let restart_started = Instant::now();
    close_store(agent, &path)?;
    let (agent, report) = reopen_store(&path, &cold_dir)?;
    let reopen_duration = restart_started.elapsed();
    let verify = verify_after_restart(&agent, &microblog, &exam, &burst, &out)?;
    phases.push(Phase {
        duration: reopen_duration,
        ..verify.clone()
    });
    let stats = agent.stats();
    let tier = agent.engine().tier_stats();
    // Migrated records were read back from the SSD files, not from a hot copy.
    ensure(
        tier_before.cold_live_bytes == 0 || tier.cold_reads > 0,
        || "records were migrated, yet the checks read none from the cold tier".to_owned(),
    )?;
    close_store(agent, &path)?;

    let total = started.elapsed();
    if args.json {
        let json = serde_json::json!({
            "store": path.display().to_string(),
            "agent": AGENT_NAME,
            "run": run,
            "created": opened.created,
            "durability": guarantee,
            "phases": phases.iter().map(Phase::json).collect::<Vec<_>>(),
            "recovery": recovery_json(&report),
            "hot_bytes_before_restart": hot_bytes_before,
            "hot_bytes": stats.hot_bytes,
            "cold_dir": cold_dir.display().to_string(),
            "cold_segments": tier.cold_segments,
            "cold_stored_bytes": tier.cold_stored_bytes,
            "cold_live_bytes": tier.cold_live_bytes,
            "bytes_migrated": tier_before.bytes_migrated,
            "bytes_dropped_dead": tier_before.bytes_dropped_dead,
            "migrations": tier_before.migrations,
            "cold_reads_after_restart": tier.cold_reads,
            "users": stats.users,
            "bundles": stats.bundles,
            "streams": stats.streams,
            "verified": true,
            "seconds": total.as_secs_f64(),
        });
        println!("{json}");
        return Ok(());
    }
    print_summary(
        &phases,
        &report,
        hot_bytes_before,
        stats.hot_bytes,
        &tier,
        total,
    )
    .map_err(DemoError::Stdout)?;
    out.line(&format!(
        "store now holds {} users, {} bundles, {} streams; run `pstream demo` again to reopen it",
        stats.users, stats.bundles, stats.streams
    ))
}

/// Line output that stays quiet in JSON mode (the JSON object is the only stdout line then).
struct Output {
    json: bool,
}

impl Output {
    fn line(&self, text: &str) -> Result<(), DemoError> {
        if self.json {
            return Ok(());
        }
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{text}")
            .and_then(|()| stdout.flush())
            .map_err(DemoError::Stdout)
    }

    fn bar(&self, len: u64, label: &'static str) -> ProgressBar {
        if self.json || !std::io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        if let Ok(style) =
            ProgressStyle::with_template("{msg:<12} [{bar:40}] {pos}/{len} {elapsed}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(label);
        bar
    }
}

fn cold_tier(cold_dir: &Path) -> Result<EngineColdTier<ColdIo>, DemoError> {
    let location = cold_dir.to_string_lossy();
    open_cold_tier_url(&location, &TierConfig::default()).map_err(|source| DemoError::Cold {
        path: cold_dir.to_path_buf(),
        source,
    })
}

fn open_store(
    path: &Path,
    cold_dir: &Path,
    pool_mib: usize,
) -> Result<(Store, OpenReport), DemoError> {
    let pool = if path.exists() {
        MmapPool::open(path, PoolOptions::default())
    } else {
        MmapPool::create(path, pool_mib * MIB_BYTES, PoolOptions::default())
    }
    .map_err(|source| DemoError::Pool {
        path: path.to_path_buf(),
        source,
    })?;
    let cold = cold_tier(cold_dir)?;
    Ok(Agent::open_or_create_with_cold(
        pool,
        cold,
        AGENT_NAME,
        agent_config(),
    )?)
}

fn reopen_store(path: &Path, cold_dir: &Path) -> Result<(Store, OpenReport), DemoError> {
    let pool = MmapPool::open(path, PoolOptions::default()).map_err(|source| DemoError::Pool {
        path: path.to_path_buf(),
        source,
    })?;
    let cold = cold_tier(cold_dir)?;
    Ok(Agent::open_with_cold(pool, cold, agent_config())?)
}

fn close_store(agent: Store, path: &Path) -> Result<(), DemoError> {
    let (pool, _cold) = agent.close_with_cold();
    pool.close().map_err(|source| DemoError::Pool {
        path: path.to_path_buf(),
        source,
    })
}

/// The three use cases and the burst, in order.
fn use_cases(
    agent: &Store,
    run: u64,
    burst_records: u64,
    out: &Output,
) -> Result<(Vec<Phase>, MicroblogRun, ExamRun, BurstRun), DemoError> {
    let microblog = microblog(agent, run, out)?;
    let live = live_stream(agent, run, out)?;
    let exam = exam_drop(agent, run, out)?;
    let burst = burst(agent, run, burst_records, out)?;
    let phases = vec![
        microblog.phase.clone(),
        live,
        exam.phase.clone(),
        burst.phase.clone(),
    ];
    Ok((phases, microblog, exam, burst))
}

/// Demotes every sealed segment now, as if all data had aged past the idle threshold, and
/// reports what the background migrator and this pass did.
fn age_out(agent: &Store, background: &MigratorStats, out: &Output) -> Result<Phase, DemoError> {
    let started = Instant::now();
    let before = agent.engine().tier_stats();
    let pass = Migrator::new(MigratorPolicy {
        min_idle_ms: 0,
        ..MigratorPolicy::default()
    })
    .run_once(agent.engine());
    ensure(pass.failed == 0, || {
        format!("{} migrations failed in the age-out pass", pass.failed)
    })?;
    // `run_once` has freed the migrated segments' persistent-memory copies already.
    let after = agent.engine().tier_stats();
    let phase = Phase {
        name: "tiering",
        operations: after.migrations,
        bytes: after.bytes_migrated,
        duration: started.elapsed(),
        note: format!(
            "{} segments to SSD ({} in the background, {} aged out), {:.1} MiB migrated, \
             {:.1} MiB of taken ephemeral data dropped",
            after.cold_segments,
            background.migrations,
            after.migrations - before.migrations,
            after.bytes_migrated as f64 / MIB_BYTES as f64,
            after.bytes_dropped_dead as f64 / MIB_BYTES as f64,
        ),
    };
    out.line(&format!("  tiering      {}", phase.note))?;
    Ok(phase)
}

/// Earlier runs left one `desn-r<n>` bundle each.
fn count_runs(agent: &Store) -> Result<u64, DemoError> {
    if !agent.users().iter().any(|u| u == "alice") {
        return Ok(0);
    }
    let bundles = agent.list_bundles(&caller("alice")?)?;
    Ok(bundles
        .iter()
        .filter(|b| b.id().starts_with("desn-r"))
        .count() as u64)
}

fn setup_users(agent: &Store) -> Result<(), DemoError> {
    for user in ["alice", "bob", "carol", "dave", "teacher", "sam", "tia"] {
        match agent.add_user(user) {
            Ok(_) | Err(AgentError::UserExists { .. }) => {}
            Err(error) => return Err(error.into()),
        }
    }
    for (user, client) in [
        ("alice", "desn"),
        ("bob", "desn"),
        ("carol", "desn"),
        ("carol", "chat"),
    ] {
        match agent.register_client(&caller(user)?, client) {
            Ok(()) | Err(AgentError::ClientExists { .. }) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

fn data_events(events: Vec<Event>, bundle: &BundleRef) -> Vec<pstream::agent::Delivery> {
    events
        .into_iter()
        .filter_map(|e| match e {
            Event::Data(d) if d.bundle == *bundle => Some(d),
            _ => None,
        })
        .collect()
}

struct MicroblogRun {
    phase: Phase,
    bundle: BundleRef,
    posts: Vec<(StreamNo, Vec<u8>)>,
}

/// Use case 1: a post to the DeSN clients of bob and carol only.
fn microblog(agent: &Store, run: u64, out: &Output) -> Result<MicroblogRun, DemoError> {
    let started = Instant::now();
    let mut phase = Phase {
        name: "microblog",
        ..Phase::default()
    };
    let desn_alice = app("alice", "desn")?;
    let metadata = Metadata::new()
        .with("app", "desn")
        .with("run", run.to_string());
    let bundle = agent.create_bundle(
        &desn_alice,
        &format!("desn-r{run}"),
        metadata,
        StreamDefaults::default(),
    )?;
    let recipients = [
        address(&format!("desn:bob@{AGENT_NAME}"))?,
        address(&format!("desn:carol@{AGENT_NAME}"))?,
    ];
    agent.set_recipients(&desn_alice, &bundle, &recipients)?;
    agent.respond(&caller("bob")?, &bundle, true)?;
    agent.respond(&caller("carol")?, &bundle, true)?;
    let carol_desn = agent.subscribe(&app("carol", "desn")?)?;
    let carol_chat = agent.subscribe(&app("carol", "chat")?)?;
    phase.operations += 6;

    let bar = out.bar(POSTS as u64, "microblog");
    let mut posts = Vec::new();
    for i in 0..POSTS {
        let text = format!("run {run} post {i}: persistent streams, now on persistent memory")
            .into_bytes();
        let no = agent.put_discrete(&desn_alice, &bundle, b"post", &[&text])?;
        phase.operations += 1;
        phase.bytes += text.len() as u64;
        posts.push((no, text));
        bar.inc(1);
    }
    bar.finish_and_clear();

    // Bob's DeSN client pages through everything after its cursor and acknowledges it.
    let desn_bob = app("bob", "desn")?;
    let mut bob_got = 0;
    loop {
        let page = agent.fetch(
            &desn_bob,
            &bundle,
            None,
            PageLimit {
                records_max: 20,
                bytes_max: MIB_BYTES,
            },
        )?;
        phase.operations += 2;
        if page.items.is_empty() {
            break;
        }
        bob_got += page.items.len();
        agent.ack(&desn_bob, &bundle, &page.next)?;
    }
    ensure(bob_got == POSTS, || {
        format!("bob's DeSN client got {bob_got} of {POSTS} posts")
    })?;
    // Carol's DeSN client had them pushed; her chat client saw nothing and may not fetch.
    let pushed = data_events(carol_desn.drain(), &bundle);
    ensure(pushed.len() == POSTS, || {
        format!("carol's DeSN client got {} pushed posts", pushed.len())
    })?;
    let mut carol_position = Position::default();
    for delivery in &pushed {
        carol_position.set(delivery.stream, delivery.seq + 1);
    }
    agent.ack(&app("carol", "desn")?, &bundle, &carol_position)?;
    let chat_pushed = data_events(carol_chat.drain(), &bundle).len();
    let chat_fetch = agent.fetch(&app("carol", "chat")?, &bundle, None, PageLimit::default());
    ensure(
        chat_pushed == 0 && matches!(chat_fetch, Err(AgentError::UnknownBundle { .. })),
        || {
            format!(
                "carol's chat client saw the post ({chat_pushed} pushed, fetch {:?})",
                chat_fetch.map(|p| p.items.len())
            )
        },
    )?;
    phase.operations += 2;
    phase.duration = started.elapsed();
    phase.note = format!("{POSTS} posts to desn:bob, desn:carol; chat:carol saw 0");
    out.line(&format!("  microblog    {}", phase.note))?;
    Ok(MicroblogRun {
        phase,
        bundle,
        posts,
    })
}

fn frame(index: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(FRAME_BYTES);
    bytes.extend_from_slice(&(index * 33_333_333).to_le_bytes()); // capture time, ns
    bytes.extend_from_slice(&index.to_le_bytes());
    bytes.resize(FRAME_BYTES, (index % 251) as u8);
    bytes
}

/// In-order check of one viewer's frames (seq and timestamp strictly increasing).
struct Viewer {
    last_seq: Option<u64>,
    frames: u64,
}

impl Viewer {
    fn saw(&mut self, name: &str, seq: u64, payload: &[u8]) -> Result<(), DemoError> {
        ensure(payload == frame(seq).as_slice(), || {
            format!("{name} got a damaged frame {seq}")
        })?;
        ensure(self.last_seq.is_none_or(|last| seq > last), || {
            format!("{name}: frame {seq} out of order")
        })?;
        self.last_seq = Some(seq);
        self.frames += 1;
        Ok(())
    }
}

/// Use case 2: timestamped frames, ordered delivery, a late joiner, frames dropped once
/// every viewer took them.
fn live_stream(agent: &Store, run: u64, out: &Output) -> Result<Phase, DemoError> {
    let started = Instant::now();
    let mut phase = Phase {
        name: "live stream",
        ..Phase::default()
    };
    let alice = caller("alice")?;
    let defaults = StreamDefaults {
        policy: StreamPolicy::EPHEMERAL_SHARED,
        ..StreamDefaults::default()
    };
    let bundle = agent.create_bundle(
        &alice,
        &format!("live-r{run}"),
        Metadata::new().with("title", "launch"),
        defaults,
    )?;
    let viewers = [
        address(&format!("bob@{AGENT_NAME}"))?,
        address(&format!("carol@{AGENT_NAME}"))?,
    ];
    agent.set_recipients(&alice, &bundle, &viewers)?;
    agent.respond(&caller("bob")?, &bundle, true)?;
    agent.respond(&caller("carol")?, &bundle, true)?;
    let cam = agent.create_stream(&alice, &bundle, StreamSpec::continuous("cam"))?;
    let bob_feed = agent.subscribe(&caller("bob")?)?;
    phase.operations += 6;

    let (mut bob, mut carol, mut dave) = (
        Viewer {
            last_seq: None,
            frames: 0,
        },
        Viewer {
            last_seq: None,
            frames: 0,
        },
        Viewer {
            last_seq: None,
            frames: 0,
        },
    );
    let mut dave_joined = false;
    let bar = out.bar(FRAMES, "live stream");
    let mut next = 0;
    while next < FRAMES {
        let frames: Vec<Vec<u8>> = (next..next + FRAME_BATCH).map(frame).collect();
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        agent.append_batch(&alice, &bundle, cam, &refs)?;
        next += FRAME_BATCH;
        phase.operations += 1;
        phase.bytes += (FRAME_BATCH as usize * FRAME_BYTES) as u64;
        // Bob plays pushed frames and acknowledges them; carol takes pages.
        let mut played = Position::default();
        for delivery in data_events(bob_feed.drain(), &bundle) {
            bob.saw("bob", delivery.seq, &delivery.payload)?;
            played.set(delivery.stream, delivery.seq + 1);
        }
        agent.ack(&caller("bob")?, &bundle, &played)?;
        for delivery in agent
            .take(
                &caller("carol")?,
                &bundle,
                PageLimit {
                    records_max: 10,
                    bytes_max: MIB_BYTES,
                },
            )?
            .items
        {
            carol.saw("carol", delivery.seq, &delivery.payload)?;
        }
        phase.operations += 2;
        if next == FRAMES / 2 {
            // Dave joins late and starts five frames behind the live edge.
            let mut all = viewers.to_vec();
            all.push(address(&format!("dave@{AGENT_NAME}"))?);
            agent.set_recipients(&alice, &bundle, &all)?;
            agent.respond(&caller("dave")?, &bundle, true)?;
            let mut from = Position::default();
            from.set(cam, next - 5);
            let page = agent.fetch(&caller("dave")?, &bundle, Some(&from), PageLimit::default())?;
            for delivery in &page.items {
                dave.saw("dave", delivery.seq, &delivery.payload)?;
            }
            agent.ack(&caller("dave")?, &bundle, &page.next)?;
            phase.operations += 4;
            dave_joined = true;
        } else if dave_joined {
            for delivery in agent
                .take(&caller("dave")?, &bundle, PageLimit::default())?
                .items
            {
                dave.saw("dave", delivery.seq, &delivery.payload)?;
            }
            phase.operations += 1;
        }
        bar.inc(FRAME_BATCH);
    }
    bar.finish_and_clear();
    let info = agent
        .list_streams(&alice, &bundle)?
        .into_iter()
        .find(|s| s.no == cam);
    let dropped = info
        .as_ref()
        .is_some_and(|s| s.first_seq == s.next_seq && s.next_seq == FRAMES);
    ensure(dropped, || {
        format!("frames not dropped after every viewer took them: {info:?}")
    })?;
    ensure(bob.frames == FRAMES && carol.frames == FRAMES, || {
        format!(
            "bob got {} and carol {} of {FRAMES} frames",
            bob.frames, carol.frames
        )
    })?;
    agent.seal(&alice, &bundle, cam)?;
    phase.operations += 2;
    phase.duration = started.elapsed();
    phase.note = format!(
        "{FRAMES} frames in order to 2 viewers, late joiner got {}, all dropped once taken",
        dave.frames
    );
    out.line(&format!("  live stream  {}", phase.note))?;
    Ok(phase)
}

struct ExamRun {
    phase: Phase,
    bundle: BundleRef,
    latest: Vec<(String, StreamNo, Vec<u8>)>,
    submissions: usize,
}

/// Use case 3: write-once submissions into the teacher's bundle; the teacher picks the latest.
fn exam_drop(agent: &Store, run: u64, out: &Output) -> Result<ExamRun, DemoError> {
    let started = Instant::now();
    let mut phase = Phase {
        name: "exam drop",
        ..Phase::default()
    };
    let teacher = caller("teacher")?;
    let defaults = StreamDefaults {
        creators: Creators::Users(["sam".to_owned(), "tia".to_owned()].into()),
        policy: StreamPolicy::INTERNALLY_PERSISTENT_EXTERNALLY_EPHEMERAL,
        write_once: true,
    };
    let bundle = agent.create_bundle(
        &teacher,
        &format!("exam-r{run}"),
        Metadata::new().with("course", "storage"),
        defaults,
    )?;
    phase.operations += 1;
    let plan = [("sam", 1), ("tia", 1), ("sam", 2), ("sam", 3), ("tia", 2)];
    for (student, version) in plan {
        let file = format!(
            "{student}: solution v{version} (run {run})\n{}",
            "answer ".repeat(200)
        )
        .into_bytes();
        let no = agent.put_discrete(&caller(student)?, &bundle, b"solution.txt", &[&file])?;
        phase.operations += 1;
        phase.bytes += file.len() as u64;
        // Neither changed nor read back.
        let change = agent.append(&caller(student)?, &bundle, no, b"late fix");
        let read_back = agent.read(&caller(student)?, &bundle, no, 0);
        ensure(
            matches!(change, Err(AgentError::StreamSealed { .. })),
            || format!("{student} changed a submission"),
        )?;
        ensure(
            matches!(read_back, Err(AgentError::PermissionDenied { .. })),
            || format!("{student} read a submission back"),
        )?;
        phase.operations += 2;
    }
    let draft = agent.create_stream(&caller("sam")?, &bundle, StreamSpec::discrete("draft"));
    ensure(
        matches!(draft, Err(AgentError::PermissionDenied { .. })),
        || "an open submission was allowed".to_owned(),
    )?;
    // The teacher reads them all and picks each student's latest.
    let mut latest: Vec<(String, StreamNo, Vec<u8>)> = Vec::new();
    let streams = agent.list_streams(&teacher, &bundle)?;
    for info in &streams {
        let file = agent.read(&teacher, &bundle, info.no, 0)?;
        phase.operations += 1;
        let student = info.creator.user().to_owned();
        latest.retain(|(s, _, _)| *s != student);
        latest.push((student, info.no, file));
    }
    let picked_ok = latest.iter().all(|(student, _, file)| {
        let expected = if student == "sam" { "v3" } else { "v2" };
        String::from_utf8_lossy(file).contains(expected)
    });
    ensure(picked_ok && latest.len() == 2, || {
        "the teacher did not get each student's latest".to_owned()
    })?;
    phase.operations += 2;
    phase.duration = started.elapsed();
    phase.note = format!(
        "{} write-once submissions, teacher picked the latest of 2 students",
        streams.len()
    );
    out.line(&format!("  exam drop    {}", phase.note))?;
    Ok(ExamRun {
        phase,
        bundle,
        latest,
        submissions: streams.len(),
    })
}

fn burst_record(seq: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(BURST_RECORD_BYTES);
    while bytes.len() < BURST_RECORD_BYTES {
        bytes.extend_from_slice(
            &(seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ bytes.len() as u64).to_le_bytes(),
        );
    }
    bytes.truncate(BURST_RECORD_BYTES);
    bytes
}

struct BurstRun {
    phase: Phase,
    bundle: BundleRef,
    stream: StreamNo,
    records: u64,
    carol_taken: u64,
}

/// A burst of 1 KiB records into an ephemeral stream with two viewers: bob takes all of it,
/// carol half (the other half must survive the restart).
fn burst(agent: &Store, run: u64, records: u64, out: &Output) -> Result<BurstRun, DemoError> {
    let started = Instant::now();
    let mut phase = Phase {
        name: "burst",
        ..Phase::default()
    };
    let alice = caller("alice")?;
    let defaults = StreamDefaults {
        policy: StreamPolicy::EPHEMERAL_SHARED,
        ..StreamDefaults::default()
    };
    let bundle =
        agent.create_bundle(&alice, &format!("burst-r{run}"), Metadata::new(), defaults)?;
    let viewers = [
        address(&format!("bob@{AGENT_NAME}"))?,
        address(&format!("carol@{AGENT_NAME}"))?,
    ];
    agent.set_recipients(&alice, &bundle, &viewers)?;
    agent.respond(&caller("bob")?, &bundle, true)?;
    agent.respond(&caller("carol")?, &bundle, true)?;
    let stream = agent.create_stream(&alice, &bundle, StreamSpec::continuous("telemetry"))?;
    phase.operations += 5;
    let bar = out.bar(records, "burst");
    let mut next = 0;
    while next < records {
        let end = (next + BURST_BATCH).min(records);
        let batch: Vec<Vec<u8>> = (next..end).map(burst_record).collect();
        let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        agent.append_batch(&alice, &bundle, stream, &refs)?;
        phase.operations += 1;
        phase.bytes += ((end - next) as usize * BURST_RECORD_BYTES) as u64;
        next = end;
        bar.set_position(next);
    }
    bar.finish_and_clear();
    let page_limit = PageLimit {
        records_max: 1000,
        bytes_max: 4 * MIB_BYTES,
    };
    let mut bob_taken = 0;
    loop {
        let page = agent.take(&caller("bob")?, &bundle, page_limit)?;
        phase.operations += 1;
        if page.items.is_empty() {
            break;
        }
        bob_taken += page.items.len() as u64;
    }
    let carol_taken = records / 2;
    let mut position = Position::default();
    position.set(stream, carol_taken);
    agent.ack(&caller("carol")?, &bundle, &position)?;
    phase.operations += 1;
    ensure(bob_taken == records, || {
        format!("bob took {bob_taken} of {records}")
    })?;
    phase.duration = started.elapsed();
    let seconds = phase.duration.as_secs_f64().max(1e-9);
    phase.note = format!(
        "{records} x 1 KiB appended, {:.0} records/s incl. delivery; bob took all, carol half",
        records as f64 / seconds
    );
    out.line(&format!("  burst        {}", phase.note))?;
    Ok(BurstRun {
        phase,
        bundle,
        stream,
        records,
        carol_taken,
    })
}

/// After the restart: every acknowledged post, submission and untaken record is there.
fn verify_after_restart(
    agent: &Store,
    microblog: &MicroblogRun,
    exam: &ExamRun,
    burst: &BurstRun,
    out: &Output,
) -> Result<Phase, DemoError> {
    let mut phase = Phase {
        name: "reopen+check",
        ..Phase::default()
    };
    let all = Position::default();
    let everything = PageLimit {
        records_max: usize::MAX,
        bytes_max: usize::MAX,
    };
    let page = agent.fetch(
        &app("bob", "desn")?,
        &microblog.bundle,
        Some(&all),
        everything,
    )?;
    let posts: Vec<(StreamNo, Vec<u8>)> = page
        .items
        .into_iter()
        .map(|d| (d.stream, d.payload))
        .collect();
    ensure(posts == microblog.posts, || {
        format!("{} of {POSTS} posts after the restart", posts.len())
    })?;
    phase.operations += 1;
    phase.bytes += posts.iter().map(|(_, p)| p.len() as u64).sum::<u64>();
    let teacher = caller("teacher")?;
    ensure(
        agent.list_streams(&teacher, &exam.bundle)?.len() == exam.submissions,
        || "submissions lost".to_owned(),
    )?;
    for (student, no, file) in &exam.latest {
        let read = agent.read(&teacher, &exam.bundle, *no, 0)?;
        ensure(read == *file, || {
            format!("{student}'s latest submission changed")
        })?;
        phase.operations += 1;
        phase.bytes += read.len() as u64;
    }
    // Carol's untaken half of the burst is still there, byte for byte; then she takes it.
    let carol = caller("carol")?;
    let mut seq = burst.carol_taken;
    loop {
        let page = agent.take(
            &carol,
            &burst.bundle,
            PageLimit {
                records_max: 1000,
                bytes_max: 4 * MIB_BYTES,
            },
        )?;
        phase.operations += 1;
        if page.items.is_empty() {
            break;
        }
        for delivery in page.items {
            ensure(
                delivery.seq == seq && delivery.payload == burst_record(seq),
                || format!("burst record {seq} missing or damaged after the restart"),
            )?;
            phase.bytes += delivery.payload.len() as u64;
            seq += 1;
        }
    }
    ensure(seq == burst.records, || {
        format!(
            "carol found {} of {} untaken records",
            seq - burst.carol_taken,
            burst.records - burst.carol_taken
        )
    })?;
    let info = agent
        .list_streams(&caller("alice")?, &burst.bundle)?
        .into_iter()
        .find(|s| s.no == burst.stream);
    ensure(info.is_some_and(|s| s.first_seq == burst.records), || {
        "the burst was not reclaimed once taken".to_owned()
    })?;
    agent.reclaim();
    phase.note = format!(
        "{POSTS} posts, {} submissions, {} untaken burst records intact",
        exam.submissions,
        burst.records - burst.carol_taken
    );
    out.line(&format!("  restart      {}", phase.note))?;
    Ok(phase)
}

fn recovery_json(report: &OpenReport) -> serde_json::Value {
    serde_json::json!({
        "seconds": report.duration.as_secs_f64(),
        "sys_records_replayed": report.sys_records_replayed,
        "snapshot_loaded": report.snapshot_loaded,
        "orphan_streams_deleted": report.orphan_streams_deleted,
        "streams_trimmed": report.streams_trimmed,
        "engine_records": report.engine.live_records,
        "engine_seconds": report.engine.duration.as_secs_f64(),
    })
}

fn print_summary(
    phases: &[Phase],
    report: &OpenReport,
    hot_bytes_before: u64,
    hot_bytes: u64,
    tier: &TierStats,
    total: Duration,
) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out)?;
    writeln!(
        out,
        "{:<14} {:>11} {:>12} {:>10}",
        "phase", "operations", "bytes", "seconds"
    )?;
    for phase in phases {
        writeln!(
            out,
            "{:<14} {:>11} {:>12} {:>10.3}",
            phase.name,
            phase.operations,
            phase.bytes,
            phase.duration.as_secs_f64()
        )?;
    }
    let operations: u64 = phases.iter().map(|p| p.operations).sum();
    let bytes: u64 = phases.iter().map(|p| p.bytes).sum();
    writeln!(
        out,
        "{:<14} {:>11} {:>12} {:>10.3}",
        "total",
        operations,
        bytes,
        total.as_secs_f64()
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "recovery: {:.1} ms, {} metadata records replayed (snapshot: {}), {} live engine records",
        report.duration.as_secs_f64() * 1e3,
        report.sys_records_replayed,
        if report.snapshot_loaded { "yes" } else { "no" },
        report.engine.live_records
    )?;
    writeln!(
        out,
        "hot (NVRAM pool): {hot_bytes} bytes live ({hot_bytes_before} before the restart); \
         cold (SSD): {} segments, {} bytes live, {} bytes stored; {} records read back from SSD",
        tier.cold_segments, tier.cold_live_bytes, tier.cold_stored_bytes, tier.cold_reads
    )?;
    out.flush()
}

//! `pstream bench agent`: the persistent-streams agent layer (`pstream-agent`) on a pool
//! file, measured end to end.
//!
//! * **Fan-out**: the owner of a bundle with N recipients (1, 10, 100 by default) appends one
//!   message to a persistent shared stream; every recipient then fetches it from its cursor
//!   and acknowledges it (a durable cursor change). One fan-out is done when the last
//!   recipient's acknowledgement returned: that is the latency measured, and
//!   `messages_per_sec` counts such fan-outs.
//! * **Ephemeral round trip**: the owner appends one message to an ephemeral stream with one
//!   recipient, which consumes it, either with `take` (fetch and acknowledge in one call: at
//!   most once) or with `fetch` then `ack` (at least once). One round trip is append plus
//!   consume; once consumed the record is gone for the reader and its space is trimmed.
//!
//! Every call is durable on return. The agent serializes calls with one lock, so the
//! benchmark runs on one thread; `fences_per_message` says how many persist fences one
//! round costs in the engine below.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pmem_emul::{Durability, MmapPool, Pmem, PoolOptions};
use pstream_agent::{
    Address, Agent, AgentConfig, AgentError, BundleRef, Caller, Metadata, PageLimit,
    StreamDefaults, StreamNo, StreamPolicy, StreamSpec, RECIPIENTS_MAX,
};
use serde::Serialize;

use super::{BenchError, LatencyNs, Totals};

/// Recipient counts measured when the caller does not choose (issue 7's 1, 10 and 100).
pub const DEFAULT_FANOUTS: [usize; 3] = [1, 10, 100];
/// Largest recipient count: the agent's limit per bundle.
pub const FANOUT_MAX: usize = RECIPIENTS_MAX;

/// What to run.
#[derive(Debug, Clone)]
pub struct AgentBenchConfig {
    pub dir: PathBuf,
    pub fanouts: Vec<usize>,
    pub payload_bytes: usize,
    /// Seconds per measurement (each fan-out size, each ephemeral mode).
    pub seconds: f64,
    pub pool_bytes: usize,
}

impl AgentBenchConfig {
    pub fn new(dir: &Path) -> Self {
        AgentBenchConfig {
            dir: dir.to_path_buf(),
            fanouts: DEFAULT_FANOUTS.to_vec(),
            payload_bytes: 256,
            seconds: 1.0,
            pool_bytes: 1 << 30,
        }
    }
}

/// One fan-out size.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutPoint {
    pub recipients: usize,
    /// Messages appended and acknowledged by every recipient.
    pub messages: u64,
    pub seconds: f64,
    pub messages_per_sec: f64,
    /// Deliveries (message x recipient) acknowledged per second.
    pub deliveries_per_sec: f64,
    /// From the append to the last recipient's acknowledgement.
    pub latency_ns: LatencyNs,
    /// Engine fences per message (append, and every recipient's cursor change).
    pub fences_per_message: f64,
}

/// One way of consuming ephemeral messages.
#[derive(Debug, Clone, Serialize)]
pub struct EphemeralPoint {
    /// `take` or `fetch_ack`.
    pub mode: &'static str,
    pub round_trips: u64,
    pub seconds: f64,
    pub round_trips_per_sec: f64,
    /// From the append to the consumer's acknowledgement.
    pub latency_ns: LatencyNs,
    pub fences_per_round_trip: f64,
}

/// The result of [`run_agent_bench`].
#[derive(Debug, Clone, Serialize)]
pub struct AgentBenchReport {
    pub bench: &'static str,
    pub payload_bytes: usize,
    pub seconds: f64,
    pub fanout: Vec<FanoutPoint>,
    pub ephemeral: Vec<EphemeralPoint>,
    pub guarantee: &'static str,
    pub dir: String,
}

fn validate(config: &AgentBenchConfig) -> Result<(), BenchError> {
    let bad = |what: String| Err(BenchError::Config(what));
    if config.fanouts.iter().any(|&n| n == 0 || n > FANOUT_MAX) {
        return bad(format!(
            "fan-outs {:?} must be 1..={FANOUT_MAX} recipients each (the agent's limit per \
             bundle)",
            config.fanouts
        ));
    }
    if !(config.seconds.is_finite() && config.seconds > 0.0 && config.seconds <= 3600.0) {
        return bad(format!("seconds {} must be in (0, 3600]", config.seconds));
    }
    if config.payload_bytes > pstream_engine::MAX_PAYLOAD_BYTES {
        return bad(format!(
            "payload {} exceeds {}",
            config.payload_bytes,
            pstream_engine::MAX_PAYLOAD_BYTES
        ));
    }
    Ok(())
}

/// Runs every measurement on a fresh agent store in `config.dir` (removed afterwards).
/// `progress(step, steps)` after each measurement.
pub fn run_agent_bench(
    config: &AgentBenchConfig,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<AgentBenchReport, BenchError> {
    validate(config)?;
    let path = config
        .dir
        .join(format!("pstream-bench-agent-{}.pool", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let options = PoolOptions {
        durability: Durability::Process,
        try_dax: true,
    };
    let pool = MmapPool::create(&path, config.pool_bytes, options)?;
    let cleanup = crate::interrupt::TempFile::new(path.clone());
    pool.zero_nt(0, pool.len_bytes());
    pool.fence();
    let guarantee = pool.guarantee().as_str();
    let agent = Agent::create(pool, "bench", AgentConfig::default())?;
    let recipients_max = config.fanouts.iter().copied().max().unwrap_or(1).max(1);
    let owner = Caller::user("owner")?;
    agent.add_user("owner")?;
    let mut readers = Vec::with_capacity(recipients_max);
    for i in 0..recipients_max {
        let name = format!("r{i}");
        let address = agent.add_user(&name)?;
        readers.push((Caller::user(&name)?, address));
    }
    let payload: Vec<u8> = (0..config.payload_bytes).map(|i| (i % 239) as u8).collect();
    let budget = Duration::from_secs_f64(config.seconds);
    let steps = config.fanouts.len() + 2;
    let mut fanout = Vec::with_capacity(config.fanouts.len());
    for (step, &recipients) in config.fanouts.iter().enumerate() {
        let bench = Bench {
            agent: &agent,
            owner: &owner,
            payload: &payload,
            budget,
        };
        fanout.push(bench.fanout(&readers[..recipients])?);
        progress(step + 1, steps);
    }
    let mut ephemeral = Vec::with_capacity(2);
    for (i, mode) in [ConsumeMode::Take, ConsumeMode::FetchAck]
        .into_iter()
        .enumerate()
    {
        let bench = Bench {
            agent: &agent,
            owner: &owner,
            payload: &payload,
            budget,
        };
        ephemeral.push(bench.ephemeral(&readers[0], mode)?);
        progress(config.fanouts.len() + i + 1, steps);
    }
    drop(agent.close());
    cleanup.remove().map_err(|source| BenchError::Remove {
        path: path.clone(),
        source,
    })?;
    Ok(AgentBenchReport {
        bench: "agent",
        payload_bytes: config.payload_bytes,
        seconds: config.seconds,
        fanout,
        ephemeral,
        guarantee,
        dir: config.dir.display().to_string(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConsumeMode {
    Take,
    FetchAck,
}

/// One page of at most one message.
const ONE: PageLimit = PageLimit {
    records_max: 1,
    bytes_max: usize::MAX,
};

struct Bench<'a, P: Pmem> {
    agent: &'a Agent<P>,
    owner: &'a Caller,
    payload: &'a [u8],
    budget: Duration,
}

impl<P: Pmem> Bench<'_, P> {
    /// A bundle of the owner's with `readers` as accepted recipients and one stream.
    fn bundle(
        &self,
        id: &str,
        readers: &[(Caller, Address)],
        policy: StreamPolicy,
    ) -> Result<(BundleRef, StreamNo), BenchError> {
        let defaults = StreamDefaults {
            policy,
            ..StreamDefaults::default()
        };
        let key = self
            .agent
            .create_bundle(self.owner, id, Metadata::new(), defaults)?;
        let addresses: Vec<Address> = readers.iter().map(|(_, a)| a.clone()).collect();
        self.agent.set_recipients(self.owner, &key, &addresses)?;
        for (caller, _) in readers {
            self.agent.respond(caller, &key, true)?;
        }
        let spec = StreamSpec::continuous("bench").with_policy(policy);
        let stream = self.agent.create_stream(self.owner, &key, spec)?;
        Ok((key, stream))
    }

    /// Repeats `round` until the budget is spent; each round's latency is sampled.
    fn rounds(
        &self,
        mut round: impl FnMut() -> Result<(), BenchError>,
    ) -> Result<(Totals, u64), BenchError> {
        let fences_before = self.agent.engine().stats().fences;
        let started = Instant::now();
        let mut totals = Totals::default();
        while started.elapsed() < self.budget {
            // Every round is timed: a round is many durable calls, the clock is noise.
            let t0 = Instant::now();
            round()?;
            totals.record_latency(t0.elapsed());
            totals.calls += 1;
            totals.records += 1;
        }
        totals.seconds = started.elapsed().as_secs_f64();
        let fences = self.agent.engine().stats().fences - fences_before;
        Ok((totals, fences))
    }

    fn fanout(&self, readers: &[(Caller, Address)]) -> Result<FanoutPoint, BenchError> {
        let id = format!("fanout-{}", readers.len());
        let (key, stream) = self.bundle(&id, readers, StreamPolicy::PERSISTENT_SHARED)?;
        let (totals, fences) = self.rounds(|| {
            let seq = self.agent.append(self.owner, &key, stream, self.payload)?;
            for (reader, _) in readers {
                let page = self.agent.fetch(reader, &key, None, ONE)?;
                expect_one(&page.items, seq)?;
                self.agent.ack(reader, &key, &page.next)?;
            }
            Ok(())
        })?;
        let (messages_per_sec, _) = totals.rates(0);
        Ok(FanoutPoint {
            recipients: readers.len(),
            messages: totals.records,
            seconds: totals.seconds,
            messages_per_sec,
            deliveries_per_sec: messages_per_sec * readers.len() as f64,
            latency_ns: totals.percentiles(),
            fences_per_message: fences as f64 / totals.records.max(1) as f64,
        })
    }

    fn ephemeral(
        &self,
        reader: &(Caller, Address),
        mode: ConsumeMode,
    ) -> Result<EphemeralPoint, BenchError> {
        let (id, name) = match mode {
            ConsumeMode::Take => ("ephemeral-take", "take"),
            ConsumeMode::FetchAck => ("ephemeral-fetch-ack", "fetch_ack"),
        };
        let readers = std::slice::from_ref(reader);
        let (key, stream) = self.bundle(id, readers, StreamPolicy::EPHEMERAL_SHARED)?;
        let caller = &reader.0;
        let (totals, fences) = self.rounds(|| {
            let seq = self.agent.append(self.owner, &key, stream, self.payload)?;
            let page = match mode {
                ConsumeMode::Take => self.agent.take(caller, &key, ONE)?,
                ConsumeMode::FetchAck => {
                    let page = self.agent.fetch(caller, &key, None, ONE)?;
                    self.agent.ack(caller, &key, &page.next)?;
                    page
                }
            };
            expect_one(&page.items, seq)
        })?;
        let (round_trips_per_sec, _) = totals.rates(0);
        Ok(EphemeralPoint {
            mode: name,
            round_trips: totals.records,
            seconds: totals.seconds,
            round_trips_per_sec,
            latency_ns: totals.percentiles(),
            fences_per_round_trip: fences as f64 / totals.records.max(1) as f64,
        })
    }
}

/// The page must hold exactly the message just appended.
fn expect_one(items: &[pstream_agent::Delivery], seq: u64) -> Result<(), BenchError> {
    match items {
        [only] if only.seq == seq => Ok(()),
        _ => Err(BenchError::Check(format!(
            "expected message {seq} alone, got seqs {:?}",
            items.iter().map(|d| d.seq).collect::<Vec<_>>()
        ))),
    }
}

impl From<AgentError> for BenchError {
    fn from(error: AgentError) -> Self {
        BenchError::Agent(Box::new(error))
    }
}

impl From<pstream_agent::AddressError> for BenchError {
    fn from(error: pstream_agent::AddressError) -> Self {
        BenchError::Agent(Box::new(AgentError::InvalidName(error)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn fanout_and_ephemeral_rounds_complete_and_clean_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = AgentBenchConfig::new(dir.path());
        config.fanouts = vec![1, 3];
        config.seconds = 0.05;
        config.pool_bytes = 64 << 20;
        let mut steps = Vec::new();
        let report = run_agent_bench(&config, &mut |step, of| steps.push((step, of))).unwrap();
        assert_eq!(steps.last(), Some(&(4, 4)));
        assert_eq!(report.fanout.len(), 2);
        for point in &report.fanout {
            assert!(point.messages > 0, "{point:?}");
            assert!(point.fences_per_message >= (1 + point.recipients) as f64);
        }
        let modes: Vec<_> = report.ephemeral.iter().map(|p| p.mode).collect();
        assert_eq!(modes, ["take", "fetch_ack"]);
        assert!(report.ephemeral.iter().all(|p| p.round_trips > 0));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn bad_settings_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = AgentBenchConfig::new(dir.path());
        config.fanouts = vec![0];
        assert!(matches!(
            run_agent_bench(&config, &mut |_, _| {}),
            Err(BenchError::Config(_))
        ));
    }
}

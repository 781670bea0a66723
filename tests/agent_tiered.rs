//! An agent store over a tiered log: records the migrator demoted to SSD files are fetched
//! byte for byte after a restart, through the cold tier; ephemeral records every recipient
//! took are dropped, not migrated.

use pstream::agent::{
    Address, Agent, AgentConfig, Caller, Metadata, PageLimit, StreamDefaults, StreamPolicy,
    StreamSpec,
};
use pstream::engine::LogConfig;
use pstream::pmem_emul::{MmapPool, PoolOptions};
use pstream::tiering::{open_cold_tier, Migrator, MigratorPolicy, TierConfig};

const RECORDS: u64 = 600;
const RECORD_BYTES: usize = 700;

fn config() -> AgentConfig {
    AgentConfig {
        log: LogConfig {
            segment_size_bytes: 64 * 1024,
            stream_slot_count: 256,
        },
        ..AgentConfig::default()
    }
}

fn record(i: u64) -> Vec<u8> {
    (0..RECORD_BYTES)
        .map(|j| (i as usize * 31 + j) as u8)
        .collect()
}

fn age_out() -> Migrator {
    Migrator::new(MigratorPolicy {
        min_idle_ms: 0,
        ..MigratorPolicy::default()
    })
}

#[test]
fn migrated_records_are_fetched_from_ssd_after_restart_and_taken_ones_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let pool_path = dir.path().join("agent.pool");
    let cold_dir = dir.path().join("agent.pool.cold");
    let pool = MmapPool::create(&pool_path, 8 << 20, PoolOptions::default()).unwrap();
    let cold = open_cold_tier(&cold_dir, &TierConfig::default()).unwrap();
    let agent = Agent::create_with_cold(pool, cold, "tier.test", config()).unwrap();
    for user in ["alice", "bob"] {
        agent.add_user(user).unwrap();
    }
    let alice = Caller::user("alice").unwrap();
    let bob = Caller::user("bob").unwrap();
    let bob_address = Address::parse("bob@tier.test").unwrap();

    // A persistent bundle and an ephemeral one, both to bob.
    let kept = agent
        .create_bundle(&alice, "kept", Metadata::new(), StreamDefaults::default())
        .unwrap();
    let ephemeral_defaults = StreamDefaults {
        policy: StreamPolicy::EPHEMERAL_SHARED,
        ..StreamDefaults::default()
    };
    let passing = agent
        .create_bundle(&alice, "passing", Metadata::new(), ephemeral_defaults)
        .unwrap();
    for bundle in [&kept, &passing] {
        agent
            .set_recipients(&alice, bundle, std::slice::from_ref(&bob_address))
            .unwrap();
        agent.respond(&bob, bundle, true).unwrap();
    }
    let log_stream = agent
        .create_stream(&alice, &kept, StreamSpec::continuous("log"))
        .unwrap();
    let feed = agent
        .create_stream(&alice, &passing, StreamSpec::continuous("feed"))
        .unwrap();
    for i in 0..RECORDS {
        agent.append(&alice, &kept, log_stream, &record(i)).unwrap();
        agent
            .append(&alice, &passing, feed, &record(i + 7))
            .unwrap();
    }
    // Bob takes the whole ephemeral feed: nobody can read it any more.
    loop {
        let page = agent.take(&bob, &passing, PageLimit::default()).unwrap();
        if page.items.is_empty() {
            break;
        }
    }
    let pass = age_out().run_once(agent.engine());
    assert_eq!(pass.failed, 0, "{pass:?}");
    assert!(pass.migrated > 0, "{pass:?}");
    let tier = agent.engine().tier_stats();
    // Only the persistent records went to SSD: the taken feed was not copied.
    let kept_bytes = RECORDS * RECORD_BYTES as u64;
    assert!(
        tier.bytes_migrated < kept_bytes + kept_bytes / 2,
        "{tier:?}"
    );
    assert!(tier.cold_segments > 0, "{tier:?}");

    // Restart, cold tier included; bob fetches everything of the kept bundle.
    let (pool, _cold) = agent.close_with_cold();
    pool.close().unwrap();
    let pool = MmapPool::open(&pool_path, PoolOptions::default()).unwrap();
    let cold = open_cold_tier(&cold_dir, &TierConfig::default()).unwrap();
    let (agent, report) = Agent::open_with_cold(pool, cold, config()).unwrap();
    assert!(report.engine.cold_segments > 0, "{report:?}");
    let page = agent
        .fetch(
            &bob,
            &kept,
            None,
            PageLimit {
                records_max: usize::MAX,
                bytes_max: usize::MAX,
            },
        )
        .unwrap();
    let got: Vec<(u64, Vec<u8>)> = page
        .items
        .into_iter()
        .filter(|d| d.stream == log_stream)
        .map(|d| (d.seq, d.payload))
        .collect();
    assert_eq!(got.len() as u64, RECORDS);
    for (seq, payload) in got {
        assert_eq!(payload, record(seq), "record {seq}");
    }
    assert!(agent.engine().tier_stats().cold_reads > 0);
    let page = agent.take(&bob, &passing, PageLimit::default()).unwrap();
    assert!(page.items.is_empty(), "taken ephemeral records came back");
}

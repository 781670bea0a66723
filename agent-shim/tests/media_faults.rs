//! Media faults under an agent store (issue 12, "the shim never initializes over data"):
//! a flipped bit in the superblock never reformats (the other copy repairs it), a damaged
//! pool is an error that writes nothing, and metadata that is missing or lost changes is a
//! typed error that deletes no user stream.

mod common;

use common::{config, user, POOL_BYTES};
use pmem_emul::{MmapPool, PoolOptions, SimPmem};
use pstream_agent::{
    Agent, AgentError, BundleRef, Metadata, MetadataFault, StreamDefaults, StreamNo, StreamSpec,
    DATA_STREAM_LABEL, SYS_STREAM_LABEL,
};
use pstream_engine::{EngineError, Location, Log, StreamId};

const STREAM_COUNT: u64 = 3;
const RECORDS_PER_STREAM: u64 = 4;

fn payload(stream: u64, seq: u64) -> Vec<u8> {
    format!("stream {stream} record {seq}").into_bytes()
}

/// Adds `count` streams with records to the store's bundle `b` of alice.
fn add_streams(agent: &Agent<SimPmem>, first: u64, count: u64) {
    let alice = user("alice");
    let bundle = agent.bundle_ref("alice", "b").expect("bundle ref");
    for stream in first..first + count {
        let no = agent
            .create_stream(
                &alice,
                &bundle,
                StreamSpec::continuous(&format!("s{stream}")),
            )
            .expect("create stream");
        assert_eq!(no, StreamNo(stream));
        for seq in 0..RECORDS_PER_STREAM {
            agent
                .append(&alice, &bundle, no, &payload(stream, seq))
                .expect("append");
        }
    }
}

/// A store with one user, one bundle and `STREAM_COUNT` streams of records.
fn populated() -> Agent<SimPmem> {
    let (agent, report) =
        Agent::open_or_create(SimPmem::new(POOL_BYTES), "x.example", config()).expect("create");
    assert!(report.created);
    agent.add_user("alice").expect("user");
    agent
        .create_bundle(
            &user("alice"),
            "b",
            Metadata::new(),
            StreamDefaults::default(),
        )
        .expect("bundle");
    add_streams(&agent, 0, STREAM_COUNT);
    agent
}

fn assert_intact(agent: &Agent<SimPmem>, stream_count: u64) {
    let alice = user("alice");
    let bundle: BundleRef = agent.bundle_ref("alice", "b").expect("bundle ref");
    for stream in 0..stream_count {
        for seq in 0..RECORDS_PER_STREAM {
            assert_eq!(
                agent
                    .read(&alice, &bundle, StreamNo(stream), seq)
                    .expect("read"),
                payload(stream, seq)
            );
        }
    }
}

/// Engine streams with the shim's data label in `image`.
fn data_stream_count(image: &[u8]) -> usize {
    let (log, _) =
        Log::open(SimPmem::from_image(image.to_vec()), config().open).expect("engine opens");
    log.list_streams()
        .iter()
        .filter(|s| s.label == DATA_STREAM_LABEL)
        .count()
}

#[test]
fn a_flipped_bit_in_the_superblock_never_reformats() {
    let image = populated().close().persisted_image();
    for copy_offset in [0usize, 4096] {
        for byte in [0usize, 8, 17, 40, 100, 126] {
            let mut bad = image.clone();
            bad[copy_offset + byte] ^= 0x20;
            let (agent, report) =
                Agent::open_or_create(SimPmem::from_image(bad), "other.example", config())
                    .expect("opens");
            assert!(
                !report.created,
                "reformatted after a flip at {copy_offset}+{byte}"
            );
            assert_eq!(report.engine.superblock_copies_repaired, 1);
            assert_eq!(agent.name(), "x.example");
            assert_intact(&agent, STREAM_COUNT);
        }
    }
}

#[test]
fn a_pool_with_both_superblock_copies_damaged_is_an_error_and_is_not_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.pool");
    let pool = MmapPool::create(&path, POOL_BYTES, PoolOptions::default()).expect("pool");
    let (agent, _) = Agent::open_or_create(pool, "x.example", config()).expect("create");
    agent.add_user("alice").expect("user");
    agent.close().close().expect("close");
    let mut bytes = std::fs::read(&path).expect("read pool");
    // The pool file's header takes the first page; the data region follows.
    let data_start = bytes.len() - POOL_BYTES;
    bytes[data_start + 20] ^= 1;
    bytes[data_start + 4096 + 20] ^= 1;
    std::fs::write(&path, &bytes).expect("write pool");
    let pool = MmapPool::open(&path, PoolOptions::default()).expect("pool opens");
    let result = Agent::open_or_create(pool, "x.example", config());
    assert!(
        matches!(
            result,
            Err(AgentError::Engine(EngineError::Corruption {
                location: Location::Superblock,
                ..
            }))
        ),
        "{result:?}"
    );
    drop(result);
    assert_eq!(
        std::fs::read(&path).expect("read pool"),
        bytes,
        "the pool was written"
    );
}

#[test]
fn a_missing_system_stream_under_data_streams_is_refused_and_deletes_nothing() {
    let image = populated().close().persisted_image();
    let (log, _) = Log::open(SimPmem::from_image(image), config().open).expect("engine");
    let sys = system_stream(&log);
    log.delete_stream(sys).expect("delete");
    let image = log.close().persisted_image();
    let result = Agent::open_or_create(SimPmem::from_image(image.clone()), "x.example", config());
    assert!(
        matches!(
            result,
            Err(AgentError::MetadataLost {
                fault: MetadataFault::NoSystemStream,
                data_stream_count: STREAM_COUNT,
            })
        ),
        "{result:?}"
    );
    assert!(Agent::open(SimPmem::from_image(image.clone()), config()).is_err());
    assert_eq!(data_stream_count(&image), STREAM_COUNT as usize);
}

#[test]
fn an_emptied_system_stream_is_refused_not_initialized() {
    let image = populated().close().persisted_image();
    let (log, _) = Log::open(SimPmem::from_image(image), config().open).expect("engine");
    let sys = system_stream(&log);
    let (_, next_seq) = log.bounds(sys).expect("bounds");
    log.trim(sys, next_seq).expect("trim");
    let image = log.close().persisted_image();
    let result = Agent::open_or_create(SimPmem::from_image(image.clone()), "x.example", config());
    assert!(
        matches!(
            result,
            Err(AgentError::MetadataLost {
                fault: MetadataFault::NoAgentRecord { .. },
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(data_stream_count(&image), STREAM_COUNT as usize);
}

/// The engine id of the agent's system stream.
fn system_stream(log: &Log<SimPmem>) -> StreamId {
    log.list_streams()
        .into_iter()
        .find(|s| s.label == SYS_STREAM_LABEL)
        .expect("system stream")
        .id
}

/// Replaces the system stream of `image` by one holding `sys_records`.
fn with_system_records(image: Vec<u8>, sys_records: &[Vec<u8>]) -> Vec<u8> {
    let (log, _) = Log::open(SimPmem::from_image(image), config().open).expect("engine");
    let sys = system_stream(&log);
    log.delete_stream(sys).expect("delete");
    let sys = log.create_stream(SYS_STREAM_LABEL).expect("create");
    for record in sys_records {
        log.append(sys, record).expect("append");
    }
    log.close().persisted_image()
}

fn system_records(agent: &Agent<SimPmem>) -> Vec<Vec<u8>> {
    let log = agent.engine();
    let sys = system_stream(log);
    log.iter(sys, 0)
        .expect("iter")
        .map(|r| r.expect("record").payload().to_vec())
        .collect()
}

#[test]
fn metadata_that_lost_its_last_changes_deletes_no_user_stream() {
    let agent = populated();
    // The metadata as it was before three more streams were created...
    let earlier = system_records(&agent);
    add_streams(&agent, STREAM_COUNT, 3);
    let image = agent.close().persisted_image();
    // ...put back, as a fault that silently dropped the last changes would leave it.
    let image = with_system_records(image, &earlier);
    let result = Agent::open_or_create(SimPmem::from_image(image.clone()), "x.example", config());
    assert!(
        matches!(
            result,
            Err(AgentError::MetadataLost {
                fault: MetadataFault::UnexplainedOrphans {
                    orphan_count: 3,
                    crash_max: 1
                },
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(data_stream_count(&image), STREAM_COUNT as usize + 3);
}

#[test]
fn the_one_orphan_a_crash_leaves_is_still_deleted_and_foreign_streams_are_kept() {
    let image = populated().close().persisted_image();
    let (log, _) = Log::open(SimPmem::from_image(image), config().open).expect("engine");
    let orphan = log.create_stream(DATA_STREAM_LABEL).expect("orphan");
    log.append(orphan, b"never recorded").expect("append");
    let foreign = log.create_stream(b"someone else").expect("foreign");
    let image = log.close().persisted_image();
    let (agent, report) = Agent::open(SimPmem::from_image(image), config()).expect("opens");
    assert_eq!(report.orphan_streams_deleted, 1);
    assert_eq!(report.foreign_streams_kept, 1);
    assert!(agent.engine().bounds(orphan).is_err());
    assert_eq!(agent.engine().bounds(foreign).expect("kept"), (0, 0));
    assert_intact(&agent, STREAM_COUNT);
}

#[test]
fn a_creation_interrupted_before_its_first_record_is_completed() {
    let log = Log::create(SimPmem::new(POOL_BYTES), config().log, config().open).expect("engine");
    log.create_stream(SYS_STREAM_LABEL).expect("sys");
    let (agent, report) =
        Agent::open_or_create(log.close(), "x.example", config()).expect("created");
    assert!(report.created);
    assert_eq!(agent.name(), "x.example");
}

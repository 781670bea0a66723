//! Bad input and refused calls: every one gets a typed error and changes nothing; damaged
//! stored metadata is a typed error on open, never a panic; snapshots keep replay short.

mod common;

use std::collections::BTreeSet;

use common::{client, config, user, POOL_BYTES};
use pmem_emul::SimPmem;
use pstream_agent::{
    Address, AddressError, Agent, AgentConfig, AgentError, Caller, Creators, Envelope, Metadata,
    NamePart, PageLimit, Position, StreamDefaults, StreamNo, StreamSpec, METADATA_ENTRIES_MAX,
    METADATA_TOTAL_MAX_BYTES, METADATA_VALUE_MAX_BYTES, RECIPIENTS_MAX, STREAM_LABEL_MAX_BYTES,
    SYS_STREAM_LABEL,
};
use pstream_engine::{EngineError, Log};

/// What a refused call must leave untouched.
fn fingerprint(agent: &Agent<SimPmem>) -> (u64, u64, u64, u64, u64) {
    let stats = agent.stats();
    (
        stats.changes_logged,
        stats.engine.streams,
        stats.engine.records_appended,
        stats.bundles,
        stats.streams,
    )
}

macro_rules! refused {
    ($agent:expr, $call:expr, $pattern:pat) => {{
        let before = fingerprint($agent);
        let result = $call;
        assert!(
            matches!(result, Err($pattern)),
            "{} gave {:?}",
            stringify!($call),
            result
        );
        assert_eq!(
            fingerprint($agent),
            before,
            "{} changed something",
            stringify!($call)
        );
    }};
}

fn agent_with_users() -> Agent<SimPmem> {
    let agent = Agent::create(SimPmem::new(POOL_BYTES), "x.example", config()).expect("create");
    for name in ["alice", "bob"] {
        agent.add_user(name).expect("user");
    }
    agent
        .register_client(&user("alice"), "app")
        .expect("client");
    agent
}

#[test]
fn malformed_names_and_addresses_are_typed_errors() {
    assert!(matches!(
        Address::parse("bob"),
        Err(AddressError::MissingAt { .. })
    ));
    assert!(matches!(
        Address::parse("a:b:c@d"),
        Err(AddressError::TooManyColons { .. })
    ));
    assert!(matches!(
        Address::parse("bob@"),
        Err(AddressError::Empty {
            part: NamePart::Agent
        })
    ));
    assert!(matches!(
        Address::parse("b ob@x"),
        Err(AddressError::BadChar { ch: ' ', .. })
    ));
    assert!(matches!(
        Caller::user(""),
        Err(AddressError::Empty {
            part: NamePart::User
        })
    ));
    assert!(matches!(
        Caller::client("bob", "Chat"),
        Err(AddressError::BadChar {
            part: NamePart::Client,
            ..
        })
    ));

    let agent = agent_with_users();
    refused!(
        &agent,
        agent.add_user("Alice"),
        AgentError::InvalidName(AddressError::BadChar { .. })
    );
    refused!(
        &agent,
        agent.add_user(&"u".repeat(33)),
        AgentError::InvalidName(AddressError::TooLong { .. })
    );
    refused!(
        &agent,
        agent.add_user("alice"),
        AgentError::UserExists { .. }
    );
    refused!(
        &agent,
        agent.register_client(&user("alice"), "-app"),
        AgentError::InvalidName(AddressError::BadStart { .. })
    );
    refused!(
        &agent,
        agent.register_client(&user("alice"), "app"),
        AgentError::ClientExists { .. }
    );
    refused!(
        &agent,
        agent.register_client(&user("nobody"), "app"),
        AgentError::UnknownUser { .. }
    );
    refused!(
        &agent,
        agent.create_bundle(
            &user("alice"),
            "Bad Id",
            Metadata::new(),
            StreamDefaults::default()
        ),
        AgentError::InvalidName(_)
    );
    assert!(matches!(
        Agent::create(SimPmem::new(POOL_BYTES), "no_underscores", config()),
        Err(AgentError::InvalidName(_))
    ));
}

#[test]
fn limits_are_enforced_without_effect() {
    let agent = agent_with_users();
    let alice = user("alice");
    let bundle = agent
        .create_bundle(&alice, "b", Metadata::new(), StreamDefaults::default())
        .expect("bundle");
    refused!(
        &agent,
        agent.create_bundle(&alice, "b", Metadata::new(), StreamDefaults::default()),
        AgentError::BundleExists { .. }
    );

    let too_many =
        (0..=METADATA_ENTRIES_MAX).fold(Metadata::new(), |m, i| m.with(&format!("k{i}"), "v"));
    refused!(
        &agent,
        agent.set_metadata(&alice, &bundle, too_many),
        AgentError::MetadataLimit {
            what: "entry count",
            ..
        }
    );
    let too_big = Metadata::new().with("k", vec![0u8; METADATA_VALUE_MAX_BYTES + 1]);
    refused!(
        &agent,
        agent.set_metadata(&alice, &bundle, too_big),
        AgentError::MetadataLimit {
            what: "value bytes",
            ..
        }
    );
    let too_much = (0..9).fold(Metadata::new(), |m, i| {
        m.with(
            &format!("k{i}"),
            vec![0u8; METADATA_TOTAL_MAX_BYTES / 9 + 1],
        )
    });
    refused!(
        &agent,
        agent.set_metadata(&alice, &bundle, too_much),
        AgentError::MetadataLimit {
            what: "total bytes",
            ..
        }
    );
    refused!(
        &agent,
        agent.set_metadata(&alice, &bundle, Metadata::new().with("Key", "v")),
        AgentError::InvalidName(_)
    );

    let many: Vec<Address> = (0..=RECIPIENTS_MAX)
        .map(|i| Address::parse(&format!("u{i}@y.example")).expect("valid"))
        .collect();
    refused!(
        &agent,
        agent.set_recipients(&alice, &bundle, &many),
        AgentError::TooManyRecipients { .. }
    );
    let alice_address = Address::parse("alice@x.example").expect("valid");
    refused!(
        &agent,
        agent.set_recipients(&alice, &bundle, &[alice_address]),
        AgentError::OwnerAsRecipient { .. }
    );
    let twice = ["bob@x.example", "app:bob@x.example"].map(|a| Address::parse(a).expect("valid"));
    refused!(
        &agent,
        agent.set_recipients(&alice, &bundle, &twice),
        AgentError::DuplicateRecipient { .. }
    );
    let ghost = Address::parse("ghost@x.example").expect("valid");
    refused!(
        &agent,
        agent.set_recipients(&alice, &bundle, &[ghost]),
        AgentError::UnknownUser { .. }
    );

    let long_label = StreamSpec {
        label: vec![b'l'; STREAM_LABEL_MAX_BYTES + 1],
        ..StreamSpec::discrete("x")
    };
    refused!(
        &agent,
        agent.create_stream(&alice, &bundle, long_label),
        AgentError::LabelTooLong { .. }
    );
    let stream = agent
        .create_stream(&alice, &bundle, StreamSpec::continuous("s"))
        .expect("stream");
    let huge = vec![0u8; agent.engine().max_payload_bytes() + 1];
    refused!(
        &agent,
        agent.append(&alice, &bundle, stream, &huge),
        AgentError::PayloadTooLarge { .. }
    );
    refused!(
        &agent,
        agent.append_batch(&alice, &bundle, stream, &[b"ok", &huge]),
        AgentError::PayloadTooLarge { .. }
    );
    refused!(
        &agent,
        agent.put_discrete(&alice, &bundle, b"f", &[&huge]),
        AgentError::PayloadTooLarge { .. }
    );
    // Each record fits, together they exceed one atomic engine batch: refused whole.
    let half = vec![1u8; agent.engine().max_payload_bytes() / 2 + 1];
    refused!(
        &agent,
        agent.append_batch(&alice, &bundle, stream, &[&half, &half]),
        AgentError::Engine(pstream_engine::EngineError::BatchTooLarge { .. })
    );
    // A discrete put is atomic through its change record, not one batch: it may be larger.
    let big = agent
        .put_discrete(&alice, &bundle, b"big", &[&half, &half])
        .expect("a discrete put larger than one batch");
    assert_ne!(big, stream);
    refused!(
        &agent,
        agent.append(&alice, &bundle, StreamNo(7), b"x"),
        AgentError::UnknownStream { .. }
    );
    let other = agent.bundle_ref("alice", "nope").expect("valid");
    refused!(
        &agent,
        agent.append(&alice, &other, stream, b"x"),
        AgentError::UnknownBundle { .. }
    );

    agent
        .append(&alice, &bundle, stream, b"one")
        .expect("append");
    let mut beyond = Position::default();
    beyond.set(stream, 2);
    refused!(
        &agent,
        agent.ack(&alice, &bundle, &beyond),
        AgentError::AckBeyondTail { .. }
    );
    let mut unknown = Position::default();
    unknown.set(StreamNo(5), 1);
    refused!(
        &agent,
        agent.ack(&alice, &bundle, &unknown),
        AgentError::UnknownStream { .. }
    );
    refused!(
        &agent,
        agent.read(&alice, &bundle, stream, 1),
        AgentError::SeqOutOfRange { .. }
    );
    agent.seal(&alice, &bundle, stream).expect("seal");
    refused!(
        &agent,
        agent.append(&alice, &bundle, stream, b"x"),
        AgentError::StreamSealed { .. }
    );
    refused!(
        &agent,
        agent.seal(&alice, &bundle, stream),
        AgentError::StreamSealed { .. }
    );
}

#[test]
fn callers_are_checked_on_every_call() {
    let agent = agent_with_users();
    let alice = user("alice");
    let bob = user("bob");
    let bundle = agent
        .create_bundle(&alice, "b", Metadata::new(), StreamDefaults::default())
        .expect("bundle");
    let stream = agent
        .create_stream(&alice, &bundle, StreamSpec::continuous("s"))
        .expect("stream");
    agent
        .append(&alice, &bundle, stream, b"private")
        .expect("append");

    // A client the user did not grant sees nothing (the bundle is answered as if it did
    // not exist); an unregistered one does not exist.
    let app = client("alice", "app");
    refused!(
        &agent,
        agent.append(&app, &bundle, stream, b"x"),
        AgentError::UnknownBundle { .. }
    );
    refused!(
        &agent,
        agent.fetch(&app, &bundle, None, PageLimit::default()),
        AgentError::UnknownBundle { .. }
    );
    refused!(
        &agent,
        agent.read(&client("alice", "ghost"), &bundle, stream, 0),
        AgentError::UnknownClient { .. }
    );
    refused!(
        &agent,
        agent.register_client(&app, "other"),
        AgentError::PermissionDenied { .. }
    );
    refused!(
        &agent,
        agent.grant(&app, "app", &bundle),
        AgentError::PermissionDenied { .. }
    );
    agent.grant(&alice, "app", &bundle).expect("grant");
    assert_eq!(
        agent.read(&app, &bundle, stream, 0).expect("granted read"),
        b"private"
    );

    // Other users: not the owner, not invited, not the creator. The bundle does not
    // concern them, and they are told exactly what they would be told if it did not exist.
    refused!(
        &agent,
        agent.read(&bob, &bundle, stream, 0),
        AgentError::UnknownBundle { .. }
    );
    refused!(
        &agent,
        agent.fetch(&bob, &bundle, None, PageLimit::default()),
        AgentError::UnknownBundle { .. }
    );
    refused!(
        &agent,
        agent.append(&bob, &bundle, stream, b"x"),
        AgentError::UnknownBundle { .. }
    );
    refused!(
        &agent,
        agent.seal(&bob, &bundle, stream),
        AgentError::UnknownBundle { .. }
    );
    refused!(
        &agent,
        agent.set_metadata(&bob, &bundle, Metadata::new()),
        AgentError::UnknownBundle { .. }
    );
    refused!(
        &agent,
        agent.set_recipients(&bob, &bundle, &[]),
        AgentError::UnknownBundle { .. }
    );
    refused!(
        &agent,
        agent.delete_stream(&bob, &bundle, stream),
        AgentError::UnknownBundle { .. }
    );
    refused!(
        &agent,
        agent.create_stream(&bob, &bundle, StreamSpec::discrete("x")),
        AgentError::UnknownBundle { .. }
    );
    refused!(
        &agent,
        agent.bundle_info(&bob, &bundle),
        AgentError::UnknownBundle { .. }
    );
    refused!(
        &agent,
        agent.respond(&bob, &bundle, true),
        AgentError::NotInvited { .. }
    );
    refused!(
        &agent,
        agent.grant(&alice, "nope", &bundle),
        AgentError::UnknownClient { .. }
    );

    // Invited but not accepted: still no data; the owner stays the only writer.
    agent
        .set_recipients(
            &alice,
            &bundle,
            &[Address::parse("bob@x.example").expect("valid")],
        )
        .expect("invite");
    refused!(
        &agent,
        agent.fetch(&bob, &bundle, None, PageLimit::default()),
        AgentError::PermissionDenied { .. }
    );
    agent.respond(&bob, &bundle, true).expect("accept");
    assert_eq!(
        agent
            .fetch(&bob, &bundle, None, PageLimit::default())
            .expect("fetch")
            .items
            .len(),
        1
    );
    refused!(
        &agent,
        agent.append(&bob, &bundle, stream, b"x"),
        AgentError::PermissionDenied { .. }
    );
    refused!(
        &agent,
        agent.respond(&client("bob", "app"), &bundle, false),
        AgentError::UnknownClient { .. }
    );

    // Default permissions grant creation, not more.
    let defaults = StreamDefaults {
        creators: Creators::Users(BTreeSet::from(["bob".to_owned()])),
        ..StreamDefaults::default()
    };
    agent
        .set_defaults(&alice, &bundle, defaults)
        .expect("defaults");
    let bobs = agent
        .create_stream(&bob, &bundle, StreamSpec::continuous("bob's"))
        .expect("bob creates");
    refused!(
        &agent,
        agent.append(&alice, &bundle, bobs, b"x"),
        AgentError::PermissionDenied { .. }
    );
    agent
        .append(&bob, &bundle, bobs, b"mine")
        .expect("creator writes");
}

#[test]
fn envelopes_and_stored_records_never_panic_on_bad_bytes() {
    let owner = Address::parse("alice@a.example").expect("valid");
    let bundle = pstream_agent::BundleRef::new(&owner, "b").expect("valid");
    let envelope = Envelope::Response {
        bundle,
        recipient: Address::parse("bob@b.example").expect("valid"),
        accepted: true,
    };
    let bytes = envelope.encode();
    assert_eq!(Envelope::decode(&bytes).expect("decodes"), envelope);
    for len in 0..bytes.len() {
        assert!(Envelope::decode(&bytes[..len]).is_err());
    }
    assert!(Envelope::decode(&[pstream_agent::ENVELOPE_VERSION + 1, 0, 0]).is_err());
    let mut garbage = 0x1234_5678_9abc_def0u64;
    for _ in 0..2000 {
        garbage ^= garbage << 13;
        garbage ^= garbage >> 7;
        garbage ^= garbage << 17;
        let len = (garbage % 64) as usize;
        let bytes: Vec<u8> = (0..len).map(|i| (garbage >> (i % 8 * 8)) as u8).collect();
        let _ = Envelope::decode(&bytes);
    }

    // A damaged system record: open reports a typed error.
    let agent = agent_with_users();
    let pmem = agent.close();
    let (log, _) = Log::open(pmem, config().open).expect("engine open");
    let sys = log
        .list_streams()
        .into_iter()
        .find(|s| s.label == SYS_STREAM_LABEL)
        .expect("sys stream")
        .id;
    log.append(sys, b"\x01\x01\x00\x00\x05\x00\x00\x00garbage!")
        .expect("append garbage");
    let pmem = log.close();
    assert!(matches!(
        Agent::open(pmem, config()),
        Err(AgentError::Decode(_))
    ));

    // Not an agent store at all.
    let log = Log::create(SimPmem::new(POOL_BYTES), config().log, config().open).expect("engine");
    assert!(matches!(
        Agent::open(log.close(), config()),
        Err(AgentError::NotAnAgentStore)
    ));
    assert!(matches!(
        Agent::open(SimPmem::new(POOL_BYTES), config()),
        Err(AgentError::Engine(EngineError::Unformatted))
    ));
}

#[test]
fn snapshots_keep_replay_short_and_exact() {
    let config = AgentConfig {
        snapshot_every_changes: 8,
        ..config()
    };
    let agent = Agent::create(SimPmem::new(POOL_BYTES), "x.example", config).expect("create");
    let names: Vec<String> = (0..40).map(|i| format!("user{i}")).collect();
    for name in &names {
        agent.add_user(name).expect("user");
        agent.register_client(&user(name), "app").expect("client");
    }
    let before = agent.stats();
    assert!(before.snapshots_written >= 9, "{before:?}");
    let (reopened, report) = Agent::open(agent.close(), config).expect("reopen");
    assert!(report.snapshot_loaded);
    assert!(
        report.sys_records_replayed <= 1 + 8,
        "replayed {} records",
        report.sys_records_replayed
    );
    assert_eq!(reopened.users().len(), 40);
    for name in &names {
        reopened
            .register_client(&user(name), "app")
            .expect_err("client survived the snapshot");
    }
    // Interrupted creation (no first record yet) is finished by open_or_create.
    let log = Log::create(SimPmem::new(POOL_BYTES), config.log, config.open).expect("engine");
    let (agent, report) =
        Agent::open_or_create(log.close(), "x.example", config).expect("finish creation");
    assert!(report.created);
    assert_eq!(agent.name(), "x.example");
}

//! Two in-process agents joined through their outboxes: invitations and answers travel as
//! envelopes, accepted recipients on the other agent get every update, redelivery is
//! harmless, both sides survive restarts, and the receiving side survives crashes.

#[macro_use]
mod common;

use common::{client, config, user, Budget, Env, Mode, POOL_BYTES};
use pmem_emul::SimPmem;
use pstream_agent::{
    Address, Agent, AgentError, BundleRef, Envelope, Event, Metadata, PageLimit, Position,
    RecipientStatus, StreamDefaults, StreamNo, StreamPolicy, StreamSpec,
};

const ALL: PageLimit = PageLimit {
    records_max: usize::MAX,
    bytes_max: usize::MAX,
};
const SMALL: PageLimit = PageLimit {
    records_max: 2,
    bytes_max: 1 << 20,
};

/// Moves everything `from` has for `to` (in batches of `limit`); returns envelopes moved.
fn pump(from: &Agent<SimPmem>, to: &Agent<SimPmem>, limit: PageLimit) -> usize {
    let (from_name, to_name) = (from.name(), to.name());
    let mut moved = 0;
    loop {
        let batch = from.outbox_fetch(&to_name, limit).expect("outbox fetch");
        if batch.is_empty() {
            return moved;
        }
        to.receive(&from_name, &batch.envelopes).expect("receive");
        from.outbox_ack(&batch).expect("outbox ack");
        moved += batch.envelopes.len();
    }
}

fn reopen(agent: Agent<SimPmem>) -> Agent<SimPmem> {
    Agent::open(agent.close(), config()).expect("reopen").0
}

fn status_of(agent: &Agent<SimPmem>, bundle: &BundleRef, recipient: &str) -> RecipientStatus {
    let info = agent.bundle_info(&user("alice"), bundle).expect("info");
    info.recipients
        .iter()
        .find(|(a, _)| a.to_string() == recipient)
        .map(|(_, s)| *s)
        .expect("recipient")
}

#[test]
fn two_agents_exchange_bundles_through_their_outboxes() {
    let mut a = Agent::create(SimPmem::new(POOL_BYTES), "a.example", config()).expect("agent a");
    let mut b = Agent::create(SimPmem::new(POOL_BYTES), "b.example", config()).expect("agent b");
    a.add_user("alice").expect("user");
    for name in ["bob", "carol"] {
        b.add_user(name).expect("user");
    }
    b.register_client(&user("bob"), "desn").expect("client");
    let alice = user("alice");
    let bundle = a
        .create_bundle(
            &alice,
            "news",
            Metadata::new().with("topic", "nvram"),
            StreamDefaults::default(),
        )
        .expect("bundle");
    let recipients = ["desn:bob@b.example", "carol@b.example", "zed@b.example"]
        .map(|r| Address::parse(r).expect("valid"));
    a.set_recipients(&alice, &bundle, &recipients)
        .expect("recipients");
    assert_eq!(a.outbox_peers(), vec!["b.example".to_owned()]);

    // Invitations travel; the queue survives a restart of the sender.
    a = reopen(a);
    assert_eq!(pump(&a, &b, SMALL), 3);
    assert_eq!(
        pump(&a, &b, SMALL),
        0,
        "acknowledged envelopes are not sent again"
    );
    assert_eq!(b.inbox(&client("bob", "desn")).expect("inbox").len(), 1);
    assert_eq!(b.inbox(&user("carol")).expect("inbox").len(), 1);
    b.respond(&user("bob"), &bundle, true).expect("accept");
    b.respond(&user("carol"), &bundle, false).expect("reject");
    b = reopen(b);
    assert_eq!(
        pump(&b, &a, SMALL),
        3,
        "two answers and the automatic no for the unknown zed"
    );
    assert_eq!(
        status_of(&a, &bundle, "desn:bob@b.example"),
        RecipientStatus::Accepted
    );
    assert_eq!(
        status_of(&a, &bundle, "carol@b.example"),
        RecipientStatus::Rejected
    );
    assert_eq!(
        status_of(&a, &bundle, "zed@b.example"),
        RecipientStatus::Rejected
    );

    // Updates of every stream are pushed to the accepted recipient's agent.
    let desn_bob = client("bob", "desn");
    let feed = b.subscribe(&desn_bob).expect("subscribe");
    let post = a
        .put_discrete(&alice, &bundle, b"post", &[b"hello b"])
        .expect("post");
    let ticker_spec = StreamSpec::continuous("ticker").with_policy(StreamPolicy::EPHEMERAL_SHARED);
    let ticker = a
        .create_stream(&alice, &bundle, ticker_spec)
        .expect("stream");
    for i in 0..5u8 {
        a.append(&alice, &bundle, ticker, &[i; 16]).expect("tick");
    }
    // Lost acknowledgement: the same batch arrives twice, and nothing doubles.
    let batch = a.outbox_fetch("b.example", SMALL).expect("fetch");
    let first = b.receive("a.example", &batch.envelopes).expect("receive");
    let again = b
        .receive("a.example", &batch.envelopes)
        .expect("receive again");
    assert_eq!(again.envelopes_applied, 0);
    assert_eq!(again.duplicates, first.envelopes_applied + first.duplicates);
    a.outbox_ack(&batch).expect("ack");
    pump(&a, &b, SMALL);

    let pushed: Vec<(StreamNo, u64)> = feed
        .drain()
        .into_iter()
        .filter_map(|e| match e {
            Event::Data(d) => Some((d.stream, d.seq)),
            _ => None,
        })
        .collect();
    let expected: Vec<(StreamNo, u64)> = std::iter::once((post, 0))
        .chain((0..5).map(|seq| (ticker, seq)))
        .collect();
    assert_eq!(pushed, expected);
    // The sender dropped the ticks once the peer stored them (nobody else reads them)...
    let sender_ticker = a
        .list_streams(&alice, &bundle)
        .expect("list")
        .into_iter()
        .find(|s| s.no == ticker)
        .expect("ticker");
    assert_eq!((sender_ticker.first_seq, sender_ticker.next_seq), (5, 5));
    // ...and the receiver drops them once bob took them.
    let page = b.take(&desn_bob, &bundle, ALL).expect("take");
    assert_eq!(page.items.len(), 6);
    assert_eq!(
        b.read(&desn_bob, &bundle, post, 0)
            .expect("persistent post"),
        b"hello b"
    );
    let mirrored = b
        .list_streams(&desn_bob, &bundle)
        .expect("list")
        .into_iter()
        .find(|s| s.no == ticker)
        .expect("ticker");
    assert_eq!(mirrored.first_seq, 5);
    b = reopen(b);

    // Later changes follow: more ticks, the seal, metadata, a deletion.
    a.append(&alice, &bundle, ticker, b"late tick")
        .expect("tick");
    a.seal(&alice, &bundle, ticker).expect("seal");
    a.set_metadata(&alice, &bundle, Metadata::new().with("topic", "pmem"))
        .expect("metadata");
    a.delete_stream(&alice, &bundle, post).expect("delete");
    pump(&a, &b, SMALL);
    let info = b.bundle_info(&desn_bob, &bundle).expect("info");
    assert!(info.mirror);
    assert_eq!(info.metadata.get("topic"), Some(&b"pmem"[..]));
    let streams = b.list_streams(&desn_bob, &bundle).expect("list");
    assert_eq!(streams.len(), 1, "the deleted post is gone on b too");
    assert_eq!(streams[0].sealed_at, Some(6));
    let page = b.fetch(&desn_bob, &bundle, None, ALL).expect("fetch");
    assert_eq!(
        page.items
            .iter()
            .map(|d| d.payload.clone())
            .collect::<Vec<_>>(),
        vec![b"late tick".to_vec()]
    );

    // Removing the recipient reaches b as well.
    a.set_recipients(&alice, &bundle, &recipients[1..])
        .expect("recipients");
    pump(&a, &b, SMALL);
    assert!(matches!(
        b.fetch(&desn_bob, &bundle, None, ALL),
        Err(AgentError::UnknownBundle { .. })
    ));

    // Only the owner's agent may speak for a bundle; a refused delivery changes nothing.
    let forged = Envelope::Data {
        bundle: bundle.clone(),
        stream: StreamNo(9),
        descriptor: pstream_agent::StreamDescriptor {
            creator: Address::parse("alice@a.example").expect("valid"),
            kind: pstream_agent::StreamKind::Continuous,
            policy: StreamPolicy::PERSISTENT_SHARED,
            label: b"x".to_vec(),
        },
        seq: 0,
        payload: b"forged".to_vec(),
    };
    let before = b.stats().changes_logged;
    assert!(matches!(
        b.receive("c.example", &[forged]),
        Err(AgentError::Protocol { .. })
    ));
    assert_eq!(b.stats().changes_logged, before);
}

#[derive(Debug, Default)]
struct ReceiverOracle {
    bundle: Option<BundleRef>,
    invited: bool,
    accepted: bool,
    /// Records whose delivery the receiver acknowledged (stream, seq, payload).
    stored: Vec<(StreamNo, u64, Vec<u8>)>,
}

fn check_receiver(b: &Agent<SimPmem>, o: &ReceiverOracle) -> Result<(), String> {
    let Some(bundle) = &o.bundle else {
        return Ok(());
    };
    let bob = user("bob");
    if o.invited && !o.accepted {
        // Either still waiting in the inbox, or the acceptance in flight made it.
        let inbox = b.inbox(&bob).map_err(|e| format!("inbox: {e}"))?;
        let accepted_in_flight = b.fetch(&bob, bundle, None, ALL).is_ok();
        ensure!(
            inbox.iter().any(|i| i.bundle == *bundle) || accepted_in_flight,
            "acknowledged invitation lost"
        );
    }
    if o.accepted {
        let page = b
            .fetch(&bob, bundle, Some(&Position::default()), ALL)
            .map_err(|e| format!("fetch: {e}"))?;
        for (stream, seq, payload) in &o.stored {
            ensure!(
                page.items
                    .iter()
                    .any(|d| d.stream == *stream && d.seq == *seq && d.payload == *payload),
                "stored record {stream}/{seq} lost"
            );
        }
    }
    Ok(())
}

#[test]
fn receiving_agent_survives_crashes_at_fence_points() {
    let a = Agent::create(SimPmem::new(POOL_BYTES), "a.example", config()).expect("agent a");
    a.add_user("alice").expect("user");
    let alice = user("alice");
    let bundle = a
        .create_bundle(&alice, "diary", Metadata::new(), StreamDefaults::default())
        .expect("bundle");
    let budget = Budget::default();
    let mut env = Env::new(
        "b.example",
        Mode::Crash(budget),
        ReceiverOracle::default(),
        check_receiver,
    );
    env.agent().add_user("bob").expect("user");
    env.oracle.lock().bundle = Some(bundle.clone());
    a.set_recipients(
        &alice,
        &bundle,
        &[Address::parse("bob@b.example").expect("valid")],
    )
    .expect("recipients");
    pump(&a, env.agent(), SMALL);
    env.oracle.lock().invited = true;
    env.agent()
        .respond(&user("bob"), &bundle, true)
        .expect("accept");
    env.oracle.lock().accepted = true;
    pump(env.agent(), &a, SMALL);

    let diary = a
        .create_stream(&alice, &bundle, StreamSpec::continuous("diary"))
        .expect("stream");
    for round in 0..6u8 {
        a.put_discrete(&alice, &bundle, b"photo", &[&[round; 300]])
            .expect("post");
        for entry in 0..3u8 {
            a.append(&alice, &bundle, diary, &[round, entry, 7])
                .expect("entry");
        }
        loop {
            let batch = a.outbox_fetch("b.example", SMALL).expect("fetch");
            if batch.is_empty() {
                break;
            }
            env.agent()
                .receive("a.example", &batch.envelopes)
                .expect("receive");
            // Acknowledged by the receiver: from here on it must survive any crash.
            let mut o = env.oracle.lock();
            for envelope in &batch.envelopes {
                if let Envelope::Data {
                    stream,
                    seq,
                    payload,
                    ..
                } = envelope
                {
                    o.stored.push((*stream, *seq, payload.clone()));
                }
            }
            drop(o);
            a.outbox_ack(&batch).expect("ack");
        }
        if round % 2 == 1 {
            env.restart();
        }
    }
    let stored = env.oracle.lock().stored.len();
    assert_eq!(stored, 6 + 18);
    let tally = env.finish();
    eprintln!("receiver crash tally: {tally:?}");
}

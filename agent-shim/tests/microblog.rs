//! Use case 1, the microblog (DeSN): user A posts to the DeSN clients of B and C only; C's
//! other client never sees the posts. Run straight, with restarts, and with crash images.

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{client, user, Budget, Env, Mode};
use pmem_emul::SimPmem;
use pstream_agent::{
    Address, Agent, AgentError, BundleRef, Event, Metadata, PageLimit, Position, StreamDefaults,
    StreamNo,
};

#[derive(Debug, Default)]
struct Oracle {
    bundle: Option<BundleRef>,
    /// Users whose acceptance was acknowledged.
    accepted: BTreeSet<String>,
    /// Acknowledged posts.
    posts: Vec<(StreamNo, Vec<u8>)>,
    /// The post being written (may or may not survive a crash, but only whole).
    pending_post: Option<Vec<u8>>,
    /// Acknowledged cursors.
    acked: BTreeMap<String, Position>,
}

const ALL: PageLimit = PageLimit {
    records_max: usize::MAX,
    bytes_max: usize::MAX,
};

fn check(agent: &Agent<SimPmem>, o: &Oracle) -> Result<(), String> {
    let Some(bundle) = &o.bundle else {
        return Ok(());
    };
    let alice = client("alice", "desn");
    let streams = agent
        .list_streams(&alice, bundle)
        .map_err(|e| format!("list: {e}"))?;
    for (no, payload) in &o.posts {
        let info = streams
            .iter()
            .find(|s| s.no == *no)
            .ok_or(format!("post {no} lost"))?;
        ensure!(
            info.sealed_at == Some(1),
            "post {no} sealed at {:?}",
            info.sealed_at
        );
        let read = agent
            .read(&alice, bundle, *no, 0)
            .map_err(|e| format!("read {no}: {e}"))?;
        ensure!(read == *payload, "post {no} changed");
    }
    for info in streams
        .iter()
        .filter(|s| !o.posts.iter().any(|(no, _)| *no == s.no))
    {
        let pending = o
            .pending_post
            .as_ref()
            .ok_or(format!("unacknowledged post {} appeared", info.no))?;
        ensure!(
            info.sealed_at == Some(1),
            "half-made post {} (sealed at {:?})",
            info.no,
            info.sealed_at
        );
        let read = agent
            .read(&alice, bundle, info.no, 0)
            .map_err(|e| format!("read pending: {e}"))?;
        ensure!(
            read == *pending,
            "pending post {} is not what was written",
            info.no
        );
    }
    for reader in &o.accepted {
        let desn = client(reader, "desn");
        let page = agent
            .fetch(&desn, bundle, Some(&Position::default()), ALL)
            .map_err(|e| format!("{reader}: {e}"))?;
        for (no, payload) in &o.posts {
            ensure!(
                page.items
                    .iter()
                    .any(|d| d.stream == *no && d.payload == *payload),
                "{reader}'s DeSN client misses post {no}"
            );
        }
        let cursor = agent
            .cursor(&desn, bundle)
            .map_err(|e| format!("cursor: {e}"))?;
        if let Some(acked) = o.acked.get(reader) {
            for (stream, next_seq) in &acked.0 {
                ensure!(
                    cursor.next_seq(*stream) >= *next_seq,
                    "{reader}'s acknowledged cursor went back"
                );
            }
        }
    }
    let chat = client("carol", "chat");
    match agent.fetch(&chat, bundle, None, ALL) {
        Err(AgentError::UnknownBundle { .. }) => {}
        other => {
            return Err(format!(
                "carol's chat client fetched the DeSN bundle: {other:?}"
            ))
        }
    }
    let visible = agent
        .list_bundles(&chat)
        .map_err(|e| format!("list bundles: {e}"))?;
    ensure!(
        !visible.contains(bundle),
        "carol's chat client lists the DeSN bundle"
    );
    Ok(())
}

fn scenario(mode: Mode, post_count: usize) -> common::Tally {
    let mut env = Env::new("a.example", mode, Oracle::default(), check);
    for name in ["alice", "bob", "carol"] {
        env.agent().add_user(name).expect("add user");
    }
    env.agent()
        .register_client(&user("alice"), "desn")
        .expect("register");
    env.agent()
        .register_client(&user("bob"), "desn")
        .expect("register");
    env.agent()
        .register_client(&user("carol"), "desn")
        .expect("register");
    env.agent()
        .register_client(&user("carol"), "chat")
        .expect("register");

    // The DeSN app creates a bundle for this group of recipients (and is granted it).
    let desn_alice = client("alice", "desn");
    let metadata = Metadata::new()
        .with("app", "desn")
        .with("group", "close-friends");
    let bundle = env
        .agent()
        .create_bundle(
            &desn_alice,
            "close-friends",
            metadata,
            StreamDefaults::default(),
        )
        .expect("bundle");
    let recipients = [
        Address::parse("desn:bob@a.example").expect("valid"),
        Address::parse("desn:carol@a.example").expect("valid"),
    ];
    env.agent()
        .set_recipients(&desn_alice, &bundle, &recipients)
        .expect("recipients");
    env.oracle.lock().bundle = Some(bundle.clone());

    // Each recipient is informed once; the invitation goes to the DeSN client only.
    assert_eq!(
        env.agent()
            .inbox(&client("carol", "desn"))
            .expect("inbox")
            .len(),
        1
    );
    assert!(env
        .agent()
        .inbox(&client("carol", "chat"))
        .expect("inbox")
        .is_empty());
    let carol_desn_feed = env
        .agent()
        .subscribe(&client("carol", "desn"))
        .expect("subscribe");
    let carol_chat_feed = env
        .agent()
        .subscribe(&client("carol", "chat"))
        .expect("subscribe");
    for name in ["bob", "carol"] {
        env.agent()
            .respond(&user(name), &bundle, true)
            .expect("accept");
        env.oracle.lock().accepted.insert(name.to_owned());
    }
    // Carol's chat client gets nothing even when she grants it the bundle: it was addressed
    // to her DeSN client.
    env.agent()
        .grant(&user("carol"), "chat", &bundle)
        .expect("grant");
    env.restart();

    let mut posted = Vec::new();
    for i in 0..post_count {
        let payload = format!("post {i}: hello from alice {}", "!".repeat(i % 7)).into_bytes();
        env.oracle.lock().pending_post = Some(payload.clone());
        let no = env
            .agent()
            .put_discrete(&desn_alice, &bundle, b"post", &[&payload])
            .expect("post");
        {
            let mut o = env.oracle.lock();
            o.posts.push((no, payload.clone()));
            o.pending_post = None;
        }
        posted.push((no, payload));
        if i % 3 == 2 {
            // Bob's DeSN client pages through what it misses and acknowledges it.
            let desn_bob = client("bob", "desn");
            let page = env
                .agent()
                .fetch(
                    &desn_bob,
                    &bundle,
                    None,
                    PageLimit {
                        records_max: 2,
                        bytes_max: 1 << 20,
                    },
                )
                .expect("fetch");
            assert!(!page.items.is_empty());
            env.agent()
                .ack(&desn_bob, &bundle, &page.next)
                .expect("ack");
            env.oracle
                .lock()
                .acked
                .insert("bob".into(), page.next.clone());
        }
        if i % 4 == 3 {
            env.restart();
        }
    }
    if mode == Mode::Plain {
        // Push delivery while online: carol's DeSN client got every post in order; her chat
        // client got nothing.
        let pushed: Vec<(StreamNo, Vec<u8>)> = carol_desn_feed
            .drain()
            .into_iter()
            .filter_map(|e| match e {
                Event::Data(d) => Some((d.stream, d.payload)),
                _ => None,
            })
            .collect();
        assert_eq!(pushed, posted);
        assert!(carol_chat_feed
            .drain()
            .iter()
            .all(|e| !matches!(e, Event::Data(_))));
    }
    // Resuming after a restart: a new subscription starts from the durable cursor.
    let desn_bob = client("bob", "desn");
    let resumed = env.agent().subscribe(&desn_bob).expect("subscribe");
    let backlog: Vec<StreamNo> = resumed
        .drain()
        .into_iter()
        .filter_map(|e| match e {
            Event::Data(d) => Some(d.stream),
            _ => None,
        })
        .collect();
    let acked = env
        .oracle
        .lock()
        .acked
        .get("bob")
        .cloned()
        .unwrap_or_default();
    let expected: Vec<StreamNo> = posted
        .iter()
        .map(|(no, _)| *no)
        .filter(|no| acked.next_seq(*no) == 0)
        .collect();
    assert_eq!(backlog, expected, "bob's backlog resumes from his cursor");
    env.finish()
}

#[test]
fn microblog_reaches_only_the_desn_clients() {
    scenario(Mode::Plain, 9);
}

#[test]
fn microblog_survives_reopen() {
    let tally = scenario(Mode::Reopen, 9);
    assert!(tally.failures.is_empty());
}

#[test]
fn microblog_survives_crashes_at_fence_points() {
    let tally = scenario(Mode::Crash(Budget::default()), 9);
    eprintln!("microblog crash tally: {tally:?}");
}

//! Finding 2 of issue 17 ("readable once per user" broke on re-adding a recipient): when a
//! bundle's owner removed a recipient and later added them back, their cursor started over,
//! and ephemeral records they had already taken (still stored because another recipient
//! had not taken them) were handed to them again. A user's "taken up to" position now
//! survives removal and re-adding, durably (it is a cursor in the metadata, replayed and
//! snapshotted like any other).

mod common;

use common::{config, user, POOL_BYTES};
use pmem_emul::SimPmem;
use pstream_agent::{
    Agent, AgentError, Metadata, PageLimit, StreamDefaults, StreamPolicy, StreamSpec,
};

#[test]
fn what_a_user_took_is_not_served_again_after_removal_and_readding() {
    let agent = Agent::create(SimPmem::new(POOL_BYTES), "a.example", config()).expect("create");
    for name in ["alice", "bob", "carol"] {
        agent.add_user(name).expect("user");
    }
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    let bundle = agent
        .create_bundle(&alice, "live", Metadata::new(), StreamDefaults::default())
        .expect("bundle");
    let stream = agent
        .create_stream(
            &alice,
            &bundle,
            StreamSpec::continuous("cam").with_policy(StreamPolicy::EPHEMERAL_SHARED),
        )
        .expect("stream");
    let both = [
        agent.address_of("bob").expect("bob"),
        agent.address_of("carol").expect("carol"),
    ];
    agent
        .set_recipients(&alice, &bundle, &both)
        .expect("invite");
    agent.respond(&bob, &bundle, true).expect("bob accepts");
    agent.respond(&carol, &bundle, true).expect("carol accepts");
    for frame in 0..3u8 {
        agent
            .append(&alice, &bundle, stream, &[frame])
            .expect("frame");
    }
    let taken = agent
        .take(&bob, &bundle, PageLimit::default())
        .expect("take");
    assert_eq!(taken.items.len(), 3);

    // Carol has not taken them, so they stay stored. Bob goes and comes back.
    agent
        .set_recipients(&alice, &bundle, &both[1..])
        .expect("remove bob");
    agent
        .set_recipients(&alice, &bundle, &both)
        .expect("add bob back");
    agent
        .respond(&bob, &bundle, true)
        .expect("bob accepts again");
    let check = |agent: &Agent<SimPmem>| {
        let page = agent
            .fetch(&bob, &bundle, None, PageLimit::default())
            .expect("fetch");
        assert!(page.items.is_empty(), "served again: {:?}", page.items);
        assert!(matches!(
            agent.read(&bob, &bundle, stream, 0),
            Err(AgentError::AlreadyTaken { .. })
        ));
        let carols = agent
            .fetch(&carol, &bundle, None, PageLimit::default())
            .expect("carol");
        assert_eq!(carols.items.len(), 3, "carol still has hers");
    };
    check(&agent);
    agent.snapshot().expect("snapshot");
    let (agent, _) = Agent::open(agent.close(), config()).expect("reopen");
    check(&agent);

    // A new frame reaches bob once.
    agent.append(&alice, &bundle, stream, &[9]).expect("frame");
    let page = agent
        .take(&bob, &bundle, PageLimit::default())
        .expect("take");
    assert_eq!(
        page.items.iter().map(|d| d.seq).collect::<Vec<_>>(),
        vec![3]
    );
}

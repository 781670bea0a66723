//! Finding 4 of issue 17 (smaller leaks): `bundle_info` told a student how many streams
//! (other students' submissions) the exam bundle held; reading another user's stream and
//! reading a stream that does not exist gave different errors (an existence oracle, for
//! bundles too); a user who rejected an invitation could still pull the bundle's current
//! metadata. Counts now include only what the caller sees, and what the caller may not see
//! is answered exactly like what does not exist.

mod common;

use std::collections::BTreeSet;

use common::{config, user, POOL_BYTES};
use pmem_emul::SimPmem;
use pstream_agent::{
    Agent, AgentError, Creators, Metadata, StreamDefaults, StreamNo, StreamPolicy,
};

fn kind<T: std::fmt::Debug>(result: Result<T, AgentError>) -> String {
    match result {
        Ok(value) => format!("Ok({value:?})"),
        Err(error) => format!("{error:?}")
            .split([' ', '{', '('])
            .next()
            .unwrap_or_default()
            .to_owned(),
    }
}

#[test]
fn counts_and_errors_reveal_nothing_the_caller_may_not_see() {
    let agent = Agent::create(SimPmem::new(POOL_BYTES), "s.example", config()).expect("create");
    for name in ["teacher", "sam", "tia", "eve"] {
        agent.add_user(name).expect("user");
    }
    let (teacher, sam, tia, eve) = (user("teacher"), user("sam"), user("tia"), user("eve"));
    let exam = agent
        .create_bundle(
            &teacher,
            "exam",
            Metadata::new().with("title", "final"),
            StreamDefaults {
                creators: Creators::Users(BTreeSet::from(["sam".to_owned(), "tia".to_owned()])),
                policy: StreamPolicy::INTERNALLY_PERSISTENT_EXTERNALLY_EPHEMERAL,
                write_once: true,
            },
        )
        .expect("bundle");
    let sams = agent
        .put_discrete(&sam, &exam, b"sam.txt", &[b"answer"])
        .expect("sam submits");
    let tias = agent
        .put_discrete(&tia, &exam, b"tia.txt", &[b"answer"])
        .expect("tia submits");
    agent
        .put_discrete(&tia, &exam, b"tia2.txt", &[b"better"])
        .expect("tia submits again");

    // The count: the teacher sees three, each student their own.
    let count = |caller| agent.bundle_info(caller, &exam).expect("info").stream_count;
    assert_eq!(count(&teacher), 3);
    assert_eq!(count(&sam), 1);
    assert_eq!(count(&tia), 2);
    assert_eq!(agent.list_streams(&sam, &exam).expect("list").len(), 1);

    // Another student's submission reads like one that does not exist.
    let missing = StreamNo(99);
    assert_eq!(
        kind(agent.read(&sam, &exam, tias, 0)),
        kind(agent.read(&sam, &exam, missing, 0))
    );
    assert_eq!(kind(agent.read(&sam, &exam, tias, 0)), "UnknownStream");
    assert_eq!(
        kind(agent.append(&sam, &exam, tias, b"x")),
        kind(agent.append(&sam, &exam, missing, b"x"))
    );
    // Sam's own submission: he knows it exists, and may not read it back.
    assert_eq!(kind(agent.read(&sam, &exam, sams, 0)), "PermissionDenied");

    // A bundle that does not concern eve reads like one that does not exist.
    let nowhere = agent.bundle_ref("teacher", "nowhere").expect("valid");
    for (concerning, absent) in [
        (
            kind(agent.bundle_info(&eve, &exam)),
            kind(agent.bundle_info(&eve, &nowhere)),
        ),
        (
            kind(agent.list_streams(&eve, &exam)),
            kind(agent.list_streams(&eve, &nowhere)),
        ),
        (
            kind(agent.read(&eve, &exam, sams, 0)),
            kind(agent.read(&eve, &nowhere, sams, 0)),
        ),
        (
            kind(agent.respond(&eve, &exam, true)),
            kind(agent.respond(&eve, &nowhere, true)),
        ),
        (
            kind(agent.grant(&eve, "app", &exam)),
            kind(agent.grant(&eve, "app", &nowhere)),
        ),
    ] {
        assert_eq!(concerning, absent);
    }

    // A rejecter cannot pull the metadata any more.
    let eve_address = agent.address_of("eve").expect("eve");
    agent
        .set_recipients(&teacher, &exam, &[eve_address])
        .expect("invite eve");
    assert!(
        agent.bundle_info(&eve, &exam).is_ok(),
        "invited: may look before answering"
    );
    agent.respond(&eve, &exam, false).expect("reject");
    agent
        .set_metadata(
            &teacher,
            &exam,
            Metadata::new().with("title", "final, room 2"),
        )
        .expect("metadata");
    assert_eq!(kind(agent.bundle_info(&eve, &exam)), "UnknownBundle");
    assert_eq!(kind(agent.list_streams(&eve, &exam)), "UnknownBundle");
    assert!(agent.list_bundles(&eve).expect("list").is_empty());
}

//! Finding 1 of issue 17 (impersonation through a peer): `receive` accepted a `Data` (or
//! `Sealed`) envelope for the peer's own bundle whose stream descriptor named a creator on
//! another agent, a user of the receiving agent included. The store recorded the stream as
//! written by that user, and since a stream's creator reads it, the named local user became
//! a reader of a bundle nobody invited them to (`list_bundles`, `read`, `fetch`). A peer
//! speaks only for its own users: such envelopes are refused, and change nothing.

mod common;

use common::{config, user, POOL_BYTES};
use pmem_emul::SimPmem;
use pstream_agent::{
    Address, Agent, AgentError, BundleRef, Envelope, Metadata, PageLimit, StreamDescriptor,
    StreamKind, StreamNo, StreamPolicy,
};

fn receiver() -> (Agent<SimPmem>, BundleRef) {
    let b = Agent::create(SimPmem::new(POOL_BYTES), "b.example", config()).expect("create");
    b.add_user("bob").expect("bob");
    b.add_user("carol").expect("carol");
    let owner = Address::parse("alice@a.example").expect("valid");
    let bundle = BundleRef::new(&owner, "posts").expect("valid");
    let invite = Envelope::Invite {
        bundle: bundle.clone(),
        recipient: Address::parse("bob@b.example").expect("valid"),
        metadata: Metadata::new(),
    };
    b.receive("a.example", &[invite]).expect("invitation");
    b.respond(&user("bob"), &bundle, true).expect("accept");
    (b, bundle)
}

fn descriptor(creator: &str) -> StreamDescriptor {
    StreamDescriptor {
        creator: Address::parse(creator).expect("valid"),
        kind: StreamKind::Continuous,
        policy: StreamPolicy::PERSISTENT_SHARED,
        label: b"forged".to_vec(),
    }
}

fn assert_carol_sees_nothing(b: &Agent<SimPmem>, bundle: &BundleRef) {
    let carol = user("carol");
    assert_eq!(
        b.list_bundles(&carol).expect("list"),
        Vec::<BundleRef>::new()
    );
    assert!(matches!(
        b.fetch(&carol, bundle, None, PageLimit::default()),
        Err(AgentError::UnknownBundle { .. })
    ));
    assert!(matches!(
        b.read(&carol, bundle, StreamNo(0), 0),
        Err(AgentError::UnknownBundle { .. })
    ));
}

#[test]
fn a_peer_cannot_write_a_stream_as_a_user_of_the_receiving_agent() {
    let (b, bundle) = receiver();
    let changes = b.stats().changes_logged;
    for creator in ["carol@b.example", "mallory@c.example"] {
        let forged = Envelope::Data {
            bundle: bundle.clone(),
            stream: StreamNo(0),
            descriptor: descriptor(creator),
            seq: 0,
            payload: b"written by somebody else".to_vec(),
        };
        let refused = b.receive("a.example", &[forged]);
        assert!(
            matches!(refused, Err(AgentError::Protocol { .. })),
            "creator {creator}: {refused:?}"
        );
        let sealed = Envelope::Sealed {
            bundle: bundle.clone(),
            stream: StreamNo(1),
            descriptor: descriptor(creator),
            record_count: 0,
        };
        assert!(matches!(
            b.receive("a.example", &[sealed]),
            Err(AgentError::Protocol { .. })
        ));
    }
    assert_eq!(
        b.stats().changes_logged,
        changes,
        "a refused delivery changes nothing"
    );
    assert_carol_sees_nothing(&b, &bundle);
    assert!(b
        .list_streams(&user("bob"), &bundle)
        .expect("list")
        .is_empty());

    // The owner's agent speaking for its own user is accepted.
    let genuine = Envelope::Data {
        bundle: bundle.clone(),
        stream: StreamNo(0),
        descriptor: descriptor("alice@a.example"),
        seq: 0,
        payload: b"hello".to_vec(),
    };
    b.receive("a.example", &[genuine]).expect("genuine data");
    let (b, _) = Agent::open(b.close(), config()).expect("reopen");
    assert_carol_sees_nothing(&b, &bundle);
    let page = b
        .fetch(&user("bob"), &bundle, None, PageLimit::default())
        .expect("bob reads");
    assert_eq!(page.items.len(), 1);
}

#[test]
fn a_peer_cannot_speak_for_other_agents_bundles_or_users() {
    let (b, bundle) = receiver();
    let changes = b.stats().changes_logged;
    let carol_at_b = Address::parse("carol@b.example").expect("valid");
    let foreign = [
        // Another agent's bundle.
        (
            "c.example",
            Envelope::Metadata {
                bundle: bundle.clone(),
                metadata: Metadata::new().with("k", "v"),
            },
        ),
        // A removal for somebody who is not here.
        (
            "a.example",
            Envelope::RecipientRemoved {
                bundle: bundle.clone(),
                recipient: Address::parse("dan@c.example").expect("valid"),
            },
        ),
        // An answer for a user of another agent, about a bundle that is not ours.
        (
            "c.example",
            Envelope::Response {
                bundle: bundle.clone(),
                recipient: Address::parse("bob@b.example").expect("valid"),
                accepted: false,
            },
        ),
        // An invitation for a user of another agent.
        (
            "a.example",
            Envelope::Invite {
                bundle: bundle.clone(),
                recipient: Address::parse("dan@c.example").expect("valid"),
                metadata: Metadata::new(),
            },
        ),
    ];
    for (peer, envelope) in foreign {
        let refused = b.receive(peer, std::slice::from_ref(&envelope));
        assert!(
            matches!(refused, Err(AgentError::Protocol { .. })),
            "{peer}: {envelope:?}: {refused:?}"
        );
    }
    assert_eq!(b.stats().changes_logged, changes);
    assert!(b.inbox(&user("carol")).expect("inbox").is_empty());
    let _ = carol_at_b;
}

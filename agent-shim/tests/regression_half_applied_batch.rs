//! Finding 3 of issue 17 (a refused `receive` batch was half applied): envelopes were
//! checked one by one against limits and addressing, then applied in order, and a check
//! that depends on state (a gap in seqs, a record after a seal, a seal below what is held)
//! failed after earlier envelopes of the batch were durable. A batch is now checked whole
//! against the state it will meet before any of it is applied: a refused batch changes
//! nothing, on reopen too.

mod common;

use common::{config, user, POOL_BYTES};
use pmem_emul::SimPmem;
use pstream_agent::{
    Address, Agent, AgentError, BundleRef, Caller, Envelope, Metadata, PageLimit, StreamDescriptor,
    StreamKind, StreamNo, StreamPolicy,
};

fn data(bundle: &BundleRef, stream: u64, seq: u64) -> Envelope {
    Envelope::Data {
        bundle: bundle.clone(),
        stream: StreamNo(stream),
        descriptor: descriptor(),
        seq,
        payload: vec![seq as u8; 8],
    }
}

fn descriptor() -> StreamDescriptor {
    StreamDescriptor {
        creator: Address::parse("alice@a.example").expect("valid"),
        kind: StreamKind::Discrete,
        policy: StreamPolicy::PERSISTENT_SHARED,
        label: b"f".to_vec(),
    }
}

/// Agent b.example with user bob, who accepted alice@a.example's bundle `f` (a mirror
/// here, with no stream yet).
fn bob_mirrors_alices_bundle() -> (Agent<SimPmem>, Caller, BundleRef) {
    let b = Agent::create(SimPmem::new(POOL_BYTES), "b.example", config()).expect("create");
    b.add_user("bob").expect("bob");
    let bob = user("bob");
    let bundle =
        BundleRef::new(&Address::parse("alice@a.example").expect("valid"), "f").expect("valid");
    let invite = Envelope::Invite {
        bundle: bundle.clone(),
        recipient: Address::parse("bob@b.example").expect("valid"),
        metadata: Metadata::new(),
    };
    b.receive("a.example", &[invite]).expect("invite");
    b.respond(&bob, &bundle, true).expect("accept");
    (b, bob, bundle)
}

#[test]
fn a_refused_batch_changes_nothing() {
    let (b, bob, bundle) = bob_mirrors_alices_bundle();
    let sealed = |count| Envelope::Sealed {
        bundle: bundle.clone(),
        stream: StreamNo(0),
        descriptor: descriptor(),
        record_count: count,
    };
    let mut renamed = data(&bundle, 0, 1);
    if let Envelope::Data { descriptor, .. } = &mut renamed {
        descriptor.label = b"other".to_vec();
    }
    let refused_batches: Vec<Vec<Envelope>> = vec![
        // A gap after valid records.
        vec![
            data(&bundle, 0, 0),
            data(&bundle, 0, 1),
            data(&bundle, 0, 3),
        ],
        // A record after the seal the same batch delivered.
        vec![data(&bundle, 0, 0), sealed(1), data(&bundle, 0, 1)],
        // A seal below what the batch itself stored.
        vec![data(&bundle, 0, 0), data(&bundle, 0, 1), sealed(1)],
        // A stream whose descriptor changes midway.
        vec![data(&bundle, 0, 0), renamed],
        // A valid invitation, then data for a bundle never shared.
        vec![
            Envelope::Invite {
                bundle: BundleRef::new(&Address::parse("alice@a.example").expect("valid"), "other")
                    .expect("valid"),
                recipient: Address::parse("bob@b.example").expect("valid"),
                metadata: Metadata::new(),
            },
            data(
                &BundleRef::new(&Address::parse("alice@a.example").expect("valid"), "third")
                    .expect("valid"),
                0,
                0,
            ),
        ],
    ];
    let changes = b.stats().changes_logged;
    let live_bytes = b.stats().hot_bytes;
    for batch in &refused_batches {
        let refused = b.receive("a.example", batch);
        assert!(
            matches!(refused, Err(AgentError::Protocol { .. })),
            "{batch:?}: {refused:?}"
        );
        assert_eq!(
            b.stats().changes_logged,
            changes,
            "{batch:?} changed metadata"
        );
        assert_eq!(b.stats().hot_bytes, live_bytes, "{batch:?} stored records");
    }
    let (b, _) = Agent::open(b.close(), config()).expect("reopen");
    assert!(b.list_streams(&bob, &bundle).expect("list").is_empty());
    assert!(b.inbox(&bob).expect("inbox").is_empty());
    assert_eq!(b.list_bundles(&bob).expect("list"), vec![bundle.clone()]);

    // The same records in order, then the seal, are accepted; a replay is all duplicates.
    let good = vec![data(&bundle, 0, 0), data(&bundle, 0, 1), sealed(2)];
    let report = b.receive("a.example", &good).expect("good batch");
    assert_eq!(report.envelopes_applied, 3);
    let replay = b.receive("a.example", &good).expect("replay");
    assert_eq!((replay.envelopes_applied, replay.duplicates), (0, 3));
    let page = b
        .fetch(&bob, &bundle, None, PageLimit::default())
        .expect("fetch");
    assert_eq!(page.items.len(), 2);
}

/// Found by the shim's proptest model (seed in `model.proptest-regressions`): a batch that
/// deletes a stream this agent holds no copy of yet, then carries records of it, was
/// planned as "deleted, records ignored" but applied as "unknown deletion ignored, then a new
/// copy": its first record became visible before a later one failed on a gap. A mirror now
/// remembers a deletion of a stream it never held, durably, so the plan and the apply agree.
#[test]
fn a_deletion_before_any_record_is_remembered_and_later_records_are_ignored() {
    let (b, bob, bundle) = bob_mirrors_alices_bundle();
    let batch = vec![
        Envelope::StreamDeleted {
            bundle: bundle.clone(),
            stream: StreamNo(1),
        },
        data(&bundle, 1, 0),
        data(&bundle, 1, 2),
    ];
    let report = b
        .receive("a.example", &batch)
        .expect("a deletion and late records");
    assert_eq!((report.envelopes_applied, report.duplicates), (1, 2));
    let check = |b: &Agent<SimPmem>| {
        assert!(b.list_streams(&bob, &bundle).expect("list").is_empty());
        let page = b
            .fetch(&bob, &bundle, None, PageLimit::default())
            .expect("fetch");
        assert!(page.items.is_empty(), "{:?}", page.items);
    };
    check(&b);
    let (b, _) = Agent::open(b.close(), config()).expect("reopen");
    check(&b);
    // Still remembered after the reopen: late records stay ignored.
    let late = b
        .receive("a.example", &[data(&bundle, 1, 0)])
        .expect("late");
    assert_eq!((late.envelopes_applied, late.duplicates), (0, 1));
    check(&b);
}

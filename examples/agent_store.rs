//! An agent store, the main way in: open (or create) a store in a directory, add users,
//! create a bundle with a stream, invite a recipient, append, and deliver: fetch a page,
//! acknowledge it (the cursor is durable), reopen and see the cursor kept.
//!
//! Run: `cargo run --example agent_store [DIR]` (default: a temporary directory).

use pstream::agent::{Address, Caller, Metadata, PageLimit, StreamDefaults, StreamSpec};
use pstream::AgentStore;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let temp = tempfile::tempdir()?;
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| temp.path().to_path_buf(), Into::into);

    // Pool file, cold tier and background migrator, with defaults; recovery if it exists.
    let (store, report) = AgentStore::open_or_create(&dir, "example.org")?;
    println!(
        "{} {} in {:.1} ms",
        if report.created {
            "created"
        } else {
            "reopened"
        },
        store.pool_path().display(),
        report.duration.as_secs_f64() * 1e3
    );

    for user in ["alice", "bob"] {
        if !store.users().iter().any(|known| known == user) {
            store.add_user(user)?;
        }
    }
    let alice = Caller::user("alice")?;
    let bob = Caller::user("bob")?;

    // Alice's bundle "trip" with one continuous stream, shared with bob.
    let metadata = Metadata::new().with("title", "Summer trip");
    let trip = match store
        .list_bundles(&alice)?
        .into_iter()
        .find(|b| b.id() == "trip")
    {
        Some(existing) => existing,
        None => {
            let trip = store.create_bundle(&alice, "trip", metadata, StreamDefaults::default())?;
            store.set_recipients(&alice, &trip, &[Address::parse("bob@example.org")?])?;
            // Bob sees the invitation in his inbox and accepts it.
            for invitation in store.inbox(&bob)? {
                println!("bob is invited to {}", invitation.bundle);
            }
            store.respond(&bob, &trip, true)?;
            trip
        }
    };
    let photos = store.create_stream(&alice, &trip, StreamSpec::continuous("photos"))?;
    for i in 0..3 {
        store.append(&alice, &trip, photos, format!("photo {i}").as_bytes())?;
    }

    // Delivery: bob fetches a page after his durable cursor and acknowledges it.
    let page = store.fetch(&bob, &trip, None, PageLimit::default())?;
    for delivery in &page.items {
        println!(
            "bob got stream {} seq {}: {}",
            delivery.stream,
            delivery.seq,
            String::from_utf8_lossy(&delivery.payload)
        );
    }
    store.ack(&bob, &trip, &page.next)?;
    store.close()?;

    // After a restart, bob's cursor is where he left it: nothing new to fetch.
    let (store, _report) = AgentStore::open_or_create(&dir, "example.org")?;
    let page = store.fetch(&bob, &trip, None, PageLimit::default())?;
    assert!(
        page.items.is_empty(),
        "bob's acknowledged cursor survived the restart"
    );
    println!(
        "after reopen: {} users, nothing left for bob",
        store.stats().users
    );
    store.close()?;
    Ok(())
}

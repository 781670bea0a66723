//! The agent is shared between threads: writers on several streams and a subscriber see
//! every record once, in per-stream order.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{config, user, POOL_BYTES};
use pmem_emul::SimPmem;
use pstream_agent::{Address, Agent, Event, Metadata, StreamDefaults, StreamSpec};

const fn assert_send_sync<T: Send + Sync>() {}
const _: () = assert_send_sync::<Agent<SimPmem>>();
const _: () = assert_send_sync::<Agent<pmem_emul::MmapPool>>();

#[test]
fn writers_and_a_subscriber_on_several_threads() {
    const WRITERS: u64 = 3;
    const RECORDS_PER_WRITER: u64 = 200;
    let agent =
        Arc::new(Agent::create(SimPmem::new(POOL_BYTES), "t.example", config()).expect("create"));
    agent.add_user("alice").expect("user");
    agent.add_user("bob").expect("user");
    let alice = user("alice");
    let bundle = agent
        .create_bundle(&alice, "feed", Metadata::new(), StreamDefaults::default())
        .expect("bundle");
    agent
        .set_recipients(
            &alice,
            &bundle,
            &[Address::parse("bob@t.example").expect("valid")],
        )
        .expect("recipients");
    agent.respond(&user("bob"), &bundle, true).expect("accept");
    let streams: Vec<_> = (0..WRITERS)
        .map(|i| {
            agent
                .create_stream(&alice, &bundle, StreamSpec::continuous(&format!("s{i}")))
                .expect("stream")
        })
        .collect();
    let feed = agent.subscribe(&user("bob")).expect("subscribe");

    let writers: Vec<_> = streams
        .iter()
        .map(|&stream| {
            let (agent, bundle, alice) = (Arc::clone(&agent), bundle.clone(), alice.clone());
            std::thread::spawn(move || {
                for i in 0..RECORDS_PER_WRITER {
                    let seq = agent
                        .append(&alice, &bundle, stream, &i.to_le_bytes())
                        .expect("append");
                    assert_eq!(seq, i);
                }
            })
        })
        .collect();
    let mut next_expected = vec![0u64; WRITERS as usize];
    let mut received = 0;
    while received < WRITERS * RECORDS_PER_WRITER {
        let Some(Event::Data(delivery)) = feed.next_timeout(Duration::from_secs(10)) else {
            panic!("subscription stalled after {received} records");
        };
        let index = streams
            .iter()
            .position(|s| *s == delivery.stream)
            .expect("known stream");
        assert_eq!(delivery.seq, next_expected[index], "per-stream order");
        assert_eq!(delivery.payload, delivery.seq.to_le_bytes());
        next_expected[index] += 1;
        received += 1;
    }
    for writer in writers {
        writer.join().expect("writer");
    }
    assert!(feed.drain().is_empty(), "no record is pushed twice");
}

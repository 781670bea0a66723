//! Use case 2, live streaming: a continuous stream of timestamped frames, delivered in order
//! to subscribers, a late joiner starting from a position, and real-time frames dropped
//! once every viewer took them. Run straight, with restarts, and with crash images.

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{user, Budget, Env, Mode};
use pmem_emul::SimPmem;
use pstream_agent::{
    Address, Agent, AgentError, BundleRef, Event, Metadata, PageLimit, Position, Retention,
    StreamDefaults, StreamNo, StreamPolicy, StreamSpec,
};

const FRAME_INTERVAL_NS: u64 = 33_333_333;

/// Frame `index`: capture timestamp (ns), index, then filler.
fn frame(index: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&(1_000_000_000 + index * FRAME_INTERVAL_NS).to_le_bytes());
    bytes.extend_from_slice(&index.to_le_bytes());
    bytes.extend(std::iter::repeat_n(
        (index % 251) as u8,
        40 + (index % 90) as usize,
    ));
    bytes
}

fn frame_timestamp_ns(payload: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&payload[..8]);
    u64::from_le_bytes(word)
}

#[derive(Debug, Default)]
struct Oracle {
    bundle: Option<BundleRef>,
    stream: Option<StreamNo>,
    /// Frames whose append was acknowledged: seqs 0..frames_acked.
    frames_acked: u64,
    /// Frames of the append in flight.
    frames_pending: u64,
    accepted: BTreeSet<String>,
    /// Acknowledged take positions of the stream per viewer.
    taken: BTreeMap<String, u64>,
    /// Late joiners: the first frame still present when they joined.
    joined_at: BTreeMap<String, u64>,
}

const ALL: PageLimit = PageLimit {
    records_max: usize::MAX,
    bytes_max: usize::MAX,
};

fn check(agent: &Agent<SimPmem>, o: &Oracle) -> Result<(), String> {
    let (Some(bundle), Some(stream)) = (&o.bundle, o.stream) else {
        return Ok(());
    };
    let streams = agent
        .list_streams(&user("alice"), bundle)
        .map_err(|e| format!("list: {e}"))?;
    let info = streams
        .iter()
        .find(|s| s.no == stream)
        .ok_or("the stream is lost")?;
    ensure!(
        info.next_seq >= o.frames_acked,
        "acknowledged frames lost: next {} < {}",
        info.next_seq,
        o.frames_acked
    );
    ensure!(
        info.next_seq <= o.frames_acked + o.frames_pending,
        "frames that were never written: next {}",
        info.next_seq
    );
    for viewer in &o.accepted {
        let caller = user(viewer);
        let taken = o.taken.get(viewer).copied().unwrap_or(0);
        let cursor = agent
            .cursor(&caller, bundle)
            .map_err(|e| format!("cursor: {e}"))?
            .next_seq(stream);
        ensure!(
            cursor >= taken,
            "{viewer}'s acknowledged take went back: {cursor} < {taken}"
        );
        // Asking for everything must not hand out a frame this viewer acknowledged.
        let page = agent
            .fetch(&caller, bundle, Some(&Position::default()), ALL)
            .map_err(|e| format!("fetch: {e}"))?;
        let seqs: Vec<u64> = page
            .items
            .iter()
            .filter(|d| d.stream == stream)
            .map(|d| d.seq)
            .collect();
        ensure!(
            seqs.iter().all(|&s| s >= cursor),
            "{viewer} got a frame again after taking it: {seqs:?}"
        );
        // Nothing this viewer has not taken may be lost (frames dropped before a late joiner
        // joined excepted), and frames arrive dense and in order.
        let floor = cursor.max(o.joined_at.get(viewer).copied().unwrap_or(0));
        ensure!(
            info.first_seq <= floor,
            "{viewer} lost frames {floor}..{} it never took",
            info.first_seq
        );
        let expected: Vec<u64> = (cursor.max(info.first_seq)..info.next_seq).collect();
        ensure!(
            seqs == expected,
            "{viewer} sees {seqs:?}, expected {expected:?}"
        );
        for delivery in &page.items {
            ensure!(
                delivery.payload == frame(delivery.seq),
                "frame {} corrupted",
                delivery.seq
            );
        }
    }
    Ok(())
}

struct Viewer {
    name: &'static str,
    last_seq: Option<u64>,
    last_timestamp_ns: u64,
}

impl Viewer {
    fn saw(&mut self, seq: u64, payload: &[u8]) {
        assert_eq!(payload, frame(seq), "{} got a wrong frame", self.name);
        if let Some(last) = self.last_seq {
            assert!(seq > last, "{}: frame {seq} after {last}", self.name);
        }
        let timestamp_ns = frame_timestamp_ns(payload);
        assert!(
            timestamp_ns > self.last_timestamp_ns,
            "{}: timestamps go back",
            self.name
        );
        self.last_seq = Some(seq);
        self.last_timestamp_ns = timestamp_ns;
    }
}

fn scenario(mode: Mode, rounds: u64) -> common::Tally {
    let mut env = Env::new("live.example", mode, Oracle::default(), check);
    for name in ["alice", "bob", "carol", "dave"] {
        env.agent().add_user(name).expect("add user");
    }
    let alice = user("alice");
    let defaults = StreamDefaults {
        policy: StreamPolicy::EPHEMERAL_SHARED,
        ..StreamDefaults::default()
    };
    let bundle = env
        .agent()
        .create_bundle(
            &alice,
            "live",
            Metadata::new().with("title", "launch"),
            defaults,
        )
        .expect("bundle");
    let viewers = [
        Address::parse("bob@live.example").expect("valid"),
        Address::parse("carol@live.example").expect("valid"),
    ];
    env.agent()
        .set_recipients(&alice, &bundle, &viewers)
        .expect("recipients");
    for name in ["bob", "carol"] {
        env.agent()
            .respond(&user(name), &bundle, true)
            .expect("accept");
        env.oracle.lock().accepted.insert(name.into());
    }
    let stream = env
        .agent()
        .create_stream(&alice, &bundle, StreamSpec::continuous("cam"))
        .expect("stream");
    {
        let mut o = env.oracle.lock();
        o.bundle = Some(bundle.clone());
        o.stream = Some(stream);
    }
    let mut carol_feed = Some(env.agent().subscribe(&user("carol")).expect("subscribe"));
    let mut bob = Viewer {
        name: "bob",
        last_seq: None,
        last_timestamp_ns: 0,
    };
    let mut carol = Viewer {
        name: "carol",
        last_seq: None,
        last_timestamp_ns: 0,
    };
    let mut dave = Viewer {
        name: "dave",
        last_seq: None,
        last_timestamp_ns: 0,
    };
    let mut next_frame = 0u64;
    let mut dropped = 0u64;

    for round in 0..rounds {
        // The streamer sends a burst of frames with one fence.
        let burst = 1 + round % 3;
        let frames: Vec<Vec<u8>> = (next_frame..next_frame + burst).map(frame).collect();
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        env.oracle.lock().frames_pending = burst;
        let seqs = env
            .agent()
            .append_batch(&alice, &bundle, stream, &refs)
            .expect("frames");
        assert_eq!(seqs, (next_frame..next_frame + burst).collect::<Vec<_>>());
        next_frame += burst;
        {
            let mut o = env.oracle.lock();
            o.frames_acked = next_frame;
            o.frames_pending = 0;
        }

        // Bob takes (fetch + ack in one call) a small page.
        let page = env
            .agent()
            .take(
                &user("bob"),
                &bundle,
                PageLimit {
                    records_max: 2,
                    bytes_max: 4096,
                },
            )
            .expect("take");
        for delivery in &page.items {
            assert_eq!(delivery.retention, Retention::Ephemeral);
            bob.saw(delivery.seq, &delivery.payload);
        }
        env.oracle
            .lock()
            .taken
            .insert("bob".into(), page.next.next_seq(stream));

        // Carol watches pushed frames and acknowledges what she played.
        if let Some(feed) = &carol_feed {
            let mut played = None;
            for event in feed.drain() {
                if let Event::Data(delivery) = event {
                    carol.saw(delivery.seq, &delivery.payload);
                    played = Some(delivery.seq + 1);
                }
            }
            if let Some(next_seq) = played {
                let mut position = Position::default();
                position.set(stream, next_seq);
                env.agent()
                    .ack(&user("carol"), &bundle, &position)
                    .expect("ack");
                env.oracle.lock().taken.insert("carol".into(), next_seq);
            }
        }

        if round == rounds / 2 {
            // Dave joins late and starts near the live edge, not at the beginning.
            let mut all = viewers.to_vec();
            all.push(Address::parse("dave@live.example").expect("valid"));
            let present = env.agent().list_streams(&alice, &bundle).expect("list")[0].first_seq;
            env.agent()
                .set_recipients(&alice, &bundle, &all)
                .expect("add dave");
            env.agent()
                .respond(&user("dave"), &bundle, true)
                .expect("accept");
            {
                let mut o = env.oracle.lock();
                o.accepted.insert("dave".into());
                o.joined_at.insert("dave".into(), present);
            }
            let mut from = Position::default();
            from.set(stream, next_frame.saturating_sub(2));
            let page = env
                .agent()
                .fetch(&user("dave"), &bundle, Some(&from), PageLimit::default())
                .expect("fetch");
            // He starts at his position, or at what is still there if viewers took more.
            let start = next_frame.saturating_sub(2).max(present);
            dropped = present;
            let expected: Vec<u64> = (start..next_frame).collect();
            assert_eq!(
                page.items.iter().map(|d| d.seq).collect::<Vec<_>>(),
                expected
            );
            for delivery in &page.items {
                dave.saw(delivery.seq, &delivery.payload);
            }
            env.agent()
                .ack(&user("dave"), &bundle, &page.next)
                .expect("ack");
            env.oracle
                .lock()
                .taken
                .insert("dave".into(), page.next.next_seq(stream));
        } else if round > rounds / 2 {
            let page = env
                .agent()
                .take(&user("dave"), &bundle, PageLimit::default())
                .expect("take");
            for delivery in &page.items {
                dave.saw(delivery.seq, &delivery.payload);
            }
            env.oracle
                .lock()
                .taken
                .insert("dave".into(), page.next.next_seq(stream));
        }

        // Real-time frames are gone once every viewer took them.
        let info = env
            .agent()
            .list_streams(&alice, &bundle)
            .expect("list")
            .into_iter()
            .find(|s| s.no == stream)
            .expect("stream");
        let taken = env.oracle.lock().taken.clone();
        let accepted = env.oracle.lock().accepted.clone();
        let everybody_took = accepted
            .iter()
            .map(|v| taken.get(v).copied().unwrap_or(0))
            .min()
            .unwrap_or(0);
        // (A late joiner's position can lie below what was dropped before he joined.)
        let expected_first = everybody_took.max(dropped);
        assert_eq!(
            info.first_seq, expected_first,
            "round {round}: frames not dropped (or dropped early)"
        );
        dropped = expected_first;

        if round % 5 == 4 {
            env.restart();
            // Carol reconnects: her subscription resumes from her cursor.
            carol_feed = Some(env.agent().subscribe(&user("carol")).expect("subscribe"));
        }
    }

    // The streamer took its own frames by writing them; a viewer cannot read a frame twice.
    assert!(matches!(
        env.agent().read(&alice, &bundle, stream, next_frame - 1),
        Err(AgentError::PermissionDenied { .. })
    ));
    if let Some(last) = bob.last_seq {
        assert!(matches!(
            env.agent().read(&user("bob"), &bundle, stream, last),
            Err(AgentError::AlreadyTaken { .. } | AgentError::SeqOutOfRange { .. })
        ));
    }
    assert!(bob.last_seq.is_some() && carol.last_seq.is_some() && dave.last_seq.is_some());
    env.finish()
}

#[test]
fn live_frames_are_ordered_and_dropped_once_taken() {
    scenario(Mode::Plain, 16);
}

#[test]
fn live_stream_survives_reopen() {
    scenario(Mode::Reopen, 16);
}

#[test]
fn live_stream_survives_crashes_at_fence_points() {
    let tally = scenario(Mode::Crash(Budget::default()), 16);
    eprintln!("live stream crash tally: {tally:?}");
}

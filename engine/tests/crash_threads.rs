//! Crash consistency with two threads appending concurrently (to their own streams and to
//! a shared one, single and batched): seeded sampled crash images at every fence recover
//! to the oracle. A failure names the seed and fence; rerun with the same seed.

use pstream_crashtest::kit as common;

use std::sync::Arc;

use common::{Budget, CrashChecker, Pending};
use pmem_emul::{SimPmem, SplitMix64};
use pstream_engine::{Log, StreamId};

fn run(seed: u64) -> common::CrashTally {
    let budget = Budget {
        exhaustive_max: 64,
        samples: 12,
        seed,
        lane_count: 2,
        recovery_crash_every: 0,
    };
    let log = Arc::new(
        Log::create(
            SimPmem::new(512 * 1024),
            common::small_config(),
            common::options(2),
        )
        .expect("create"),
    );
    let streams: Vec<StreamId> = (0..3)
        .map(|i| log.create_stream(format!("t{i}").as_bytes()).unwrap())
        .collect();
    let checker = Arc::new(CrashChecker::install(log.pmem(), budget));
    for (i, id) in streams.iter().enumerate() {
        let label = format!("t{i}").into_bytes();
        checker.model.lock().streams.insert(
            *id,
            common::StreamModel {
                label,
                ..Default::default()
            },
        );
    }
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            let (log, checker, streams) = (Arc::clone(&log), Arc::clone(&checker), streams.clone());
            std::thread::spawn(move || {
                let mut rng = SplitMix64::new(seed * 1000 + t);
                for i in 0..40u64 {
                    let target = |rng: &mut SplitMix64| {
                        if rng.below(2) == 0 {
                            streams[t as usize]
                        } else {
                            streams[2]
                        }
                    };
                    let count = 1 + rng.below(3) as usize;
                    let records: Vec<(StreamId, Vec<u8>)> = (0..count)
                        .map(|k| {
                            let len = 8 + rng.below(200) as usize;
                            let tag = [t as u8, i as u8, k as u8];
                            (
                                target(&mut rng),
                                tag.iter().copied().cycle().take(len).collect(),
                            )
                        })
                        .collect();
                    let op = Pending::Append {
                        records: records.clone(),
                    };
                    checker.model.lock().pending.push(op);
                    let borrowed: Vec<(StreamId, &[u8])> =
                        records.iter().map(|(s, p)| (*s, p.as_slice())).collect();
                    let seqs = if count == 1 {
                        vec![log.append(borrowed[0].0, borrowed[0].1).expect("append")]
                    } else {
                        log.append_batch(&borrowed).expect("batch")
                    };
                    let mut model = checker.model.lock();
                    // Acknowledged now: move from in-flight to the stream, at its seq.
                    let position = model
                        .pending
                        .iter()
                        .position(|p| matches!(p, Pending::Append { records: r } if *r == records))
                        .expect("registered");
                    model.pending.remove(position);
                    for ((stream, bytes), seq) in records.into_iter().zip(seqs) {
                        let entry = model.streams.get_mut(&stream).expect("modelled");
                        let offset = (seq - entry.first_seq) as usize;
                        while entry.acked.len() <= offset {
                            let placeholder = entry.first_seq + entry.acked.len() as u64;
                            entry.placeholder_seqs.insert(placeholder);
                            entry.acked.push(Vec::new());
                        }
                        entry.placeholder_seqs.remove(&seq);
                        entry.acked[offset] = bytes;
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("thread");
    }
    checker.assert_clean();
    let tally = *checker.tally.lock();
    tally
}

#[test]
fn concurrent_appends_recover_to_the_oracle() {
    let mut images = 0;
    for seed in [11, 12] {
        let tally = run(seed);
        images += tally.images;
    }
    println!("threaded crash images checked: {images}");
    assert!(images >= 1000);
}

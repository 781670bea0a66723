//! Crash consistency, single writer: at every fence of a workload (appends, multi-stream
//! batches, batches that do not fit their segment's rest, refused oversized batches, trims,
//! deletes, creates, segment roll-overs, crafted payloads), every crash image the simulator
//! can produce (exhaustively where there are few, seeded samples otherwise) recovers to the
//! oracle. Some images are crashed again during their own recovery.

use pstream_crashtest::kit as common;

use common::{Budget, CrashChecker, Pending};
use pmem_emul::{SimPmem, SplitMix64};
use pstream_engine::{EngineError, Log, StreamId};

const POOL_BYTES: usize = 256 * 1024;

fn run_workload(seed: u64, op_count: usize, budget: Budget) -> common::CrashTally {
    let log = Log::create(
        SimPmem::new(POOL_BYTES),
        common::small_config(),
        common::options(budget.lane_count),
    )
    .expect("create");
    let nonce = common::pool_nonce(log.pmem());
    let checker = CrashChecker::install(log.pmem(), budget);
    let mut rng = SplitMix64::new(seed);
    let mut streams: Vec<StreamId> = Vec::new();
    let mut next_label = 0u32;

    for op in 0..op_count {
        let choice = if streams.is_empty() {
            0
        } else {
            rng.below(100)
        };
        match choice {
            0..=7 if streams.len() < 4 => {
                let label = format!("s{next_label}").into_bytes();
                next_label += 1;
                streams.push(common::create_modelled(&log, &checker.model, &label));
            }
            8..=10 if streams.len() > 1 => {
                let victim = streams.swap_remove(rng.below(streams.len() as u64) as usize);
                checker.model.lock().pending = vec![Pending::Delete { stream: victim }];
                log.delete_stream(victim).expect("delete");
                let mut model = checker.model.lock();
                model.pending.clear();
                model.streams.remove(&victim);
            }
            11..=14 => {
                let stream = streams[rng.below(streams.len() as u64) as usize];
                let (first, next) = log.bounds(stream).expect("bounds");
                let to = first + rng.below(next - first + 1);
                checker.model.lock().pending = vec![Pending::Trim {
                    stream,
                    first_seq: to,
                }];
                log.trim(stream, to).expect("trim");
                log.reclaim();
                let mut model = checker.model.lock();
                model.pending.clear();
                let entry = model.streams.get_mut(&stream).expect("modelled");
                let drop_count = (to - entry.first_seq) as usize;
                entry.acked.drain(..drop_count);
                entry.first_seq = to;
            }
            15..=29 => {
                let count = 1 + rng.below(4) as usize;
                let records: Vec<(StreamId, Vec<u8>)> = (0..count)
                    .map(|i| {
                        let stream = streams[rng.below(streams.len() as u64) as usize];
                        (stream, payload(&mut rng, op, i))
                    })
                    .collect();
                checker.model.lock().pending = vec![Pending::Append {
                    records: records.clone(),
                }];
                let borrowed: Vec<(StreamId, &[u8])> =
                    records.iter().map(|(s, p)| (*s, p.as_slice())).collect();
                let seqs = match log.append_batch(&borrowed) {
                    Ok(seqs) => seqs,
                    Err(EngineError::BatchTooLarge { batch_bytes, .. }) => {
                        // Refused whole: nothing written, nothing to model.
                        assert!(batch_bytes > log.batch_capacity_bytes());
                        checker.model.lock().pending.clear();
                        continue;
                    }
                    Err(error) => panic!("batch: {error}"),
                };
                let mut model = checker.model.lock();
                model.pending.clear();
                for ((stream, bytes), seq) in records.into_iter().zip(seqs) {
                    let entry = model.streams.get_mut(&stream).expect("modelled");
                    assert_eq!(seq, entry.next_seq());
                    entry.acked.push(bytes);
                }
            }
            _ => {
                let stream = streams[rng.below(streams.len() as u64) as usize];
                let bytes = if rng.below(6) == 0 {
                    let next = log.bounds(stream).expect("bounds").1;
                    common::crafted_payload(nonce, stream, next + 1, 1..12)
                } else {
                    payload(&mut rng, op, 0)
                };
                checker.model.lock().pending = vec![Pending::Append {
                    records: vec![(stream, bytes.clone())],
                }];
                let seq = log.append(stream, &bytes).expect("append");
                assert!(
                    log.pmem().check_all_persisted().is_ok(),
                    "append returned with stores pending"
                );
                let mut model = checker.model.lock();
                model.pending.clear();
                let entry = model.streams.get_mut(&stream).expect("modelled");
                assert_eq!(seq, entry.next_seq());
                entry.acked.push(bytes);
            }
        }
    }
    checker.assert_clean();
    let tally = *checker.tally.lock();
    // The final state, crash-free, is the model too.
    common::check_image(
        &log.pmem().volatile_image(),
        &checker.model.lock(),
        budget.lane_count,
    )
    .expect("final image");
    tally
}

fn payload(rng: &mut SplitMix64, op: usize, i: usize) -> Vec<u8> {
    let len = match rng.below(10) {
        0 => 0,
        1..=6 => 1 + rng.below(100) as usize,
        7 | 8 => 100 + rng.below(400) as usize,
        _ => 2000 + rng.below(3000) as usize,
    };
    (0..len).map(|j| (op * 31 + i * 7 + j) as u8 | 1).collect()
}

#[test]
fn every_crash_image_at_every_fence_recovers_to_the_oracle() {
    let mut total = common::CrashTally::default();
    for seed in 1..=3 {
        let budget = Budget {
            exhaustive_max: 2048,
            samples: 48,
            seed,
            lane_count: 2,
            recovery_crash_every: 97,
        };
        let tally = run_workload(seed, 60, budget);
        total.fences += tally.fences;
        total.images += tally.images;
        total.exhaustive_fences += tally.exhaustive_fences;
        total.recovery_crash_images += tally.recovery_crash_images;
    }
    println!("crash images checked: {total:?}");
    assert!(total.images >= 5_000, "too few images: {total:?}");
    assert!(
        total.exhaustive_fences * 2 >= total.fences,
        "mostly sampled: {total:?}"
    );
    assert!(total.recovery_crash_images > 0);
}

#[test]
fn segment_rollover_and_reuse_under_crashes() {
    // Many appends into 16 KiB segments with trims: segments fill, seal, die, get scrubbed
    // and reused, all while every fence is checked (sampled).
    let budget = Budget {
        exhaustive_max: 256,
        samples: 8,
        seed: 99,
        lane_count: 1,
        recovery_crash_every: 0,
    };
    let log = Log::create(
        SimPmem::new(POOL_BYTES),
        common::small_config(),
        common::options(1),
    )
    .expect("create");
    let checker = CrashChecker::install(log.pmem(), budget);
    let stream = common::create_modelled(&log, &checker.model, b"roll");
    let mut rng = SplitMix64::new(5);
    for i in 0..400usize {
        let bytes: Vec<u8> = (0..800)
            .map(|j| (i + j) as u8 ^ (rng.below(2) as u8))
            .collect();
        checker.model.lock().pending = vec![Pending::Append {
            records: vec![(stream, bytes.clone())],
        }];
        let seq = log.append(stream, &bytes).expect("append");
        {
            let mut model = checker.model.lock();
            model.pending.clear();
            let entry = model.streams.get_mut(&stream).expect("modelled");
            assert_eq!(seq, entry.next_seq());
            entry.acked.push(bytes);
        }
        if i % 40 == 39 {
            let to = seq - 5;
            checker.model.lock().pending = vec![Pending::Trim {
                stream,
                first_seq: to,
            }];
            log.trim(stream, to).expect("trim");
            log.reclaim();
            let mut model = checker.model.lock();
            model.pending.clear();
            let entry = model.streams.get_mut(&stream).expect("modelled");
            let count = (to - entry.first_seq) as usize;
            entry.acked.drain(..count);
            entry.first_seq = to;
        }
    }
    checker.assert_clean();
    let stats = log.stats();
    // More bytes went through than the pool holds: segments were sealed, scrubbed, reused.
    assert!(
        stats.bytes_appended > stats.segments_total * stats.segment_size_bytes,
        "{stats:?}"
    );
    println!("rollover: {:?} stats {stats:?}", *checker.tally.lock());
}

//! kill -9 on the real mmap backend: a child process (this test binary, re-executed) appends
//! from two threads and reports each acknowledgement on stdout; the parent SIGKILLs it at a
//! random instant, reopens the pool and checks that every acknowledged record is there,
//! byte for byte, and that every stream is dense. Several rounds on the same pool.

use std::path::Path;
use std::time::Duration;

use pmem_emul::{MmapPool, PoolOptions, SplitMix64};
use pstream_engine::{Log, LogConfig, OpenOptions, StreamId};

use pstream_crashtest::kill9 as kill9_support;

const CHILD_ENV: &str = "PSTREAM_KILL9_CHILD_POOL";
const POOL_BYTES: usize = 32 << 20;

/// The payload of `seq` in stream `label`: recomputable by the parent.
fn payload(label: u8, seq: u64) -> Vec<u8> {
    let len = ((seq * 37 + u64::from(label) * 11) % 700) as usize;
    (0..len).map(|i| (seq as usize + i) as u8 ^ label).collect()
}

fn open_or_create(path: &Path) -> Log<MmapPool> {
    let config = LogConfig {
        segment_size_bytes: 1 << 20,
        stream_slot_count: 16,
    };
    if path.exists() {
        let pool = MmapPool::open(path, PoolOptions::default()).expect("open pool");
        Log::open(pool, OpenOptions { lane_count: 4 })
            .expect("recover")
            .0
    } else {
        let pool = MmapPool::create(path, POOL_BYTES, PoolOptions::default()).expect("create pool");
        Log::create(pool, config, OpenOptions { lane_count: 4 }).expect("format")
    }
}

/// Child mode: append until killed. Prints `ack <label> <seq>` per acknowledged record.
#[test]
fn kill9_child_entry() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let log = open_or_create(Path::new(&path));
    let mut ids: Vec<StreamId> = log.list_streams().into_iter().map(|s| s.id).collect();
    while ids.len() < 3 {
        ids.push(
            log.create_stream(&[b'0' + ids.len() as u8])
                .expect("create"),
        );
    }
    let labels: Vec<(StreamId, u8)> = log
        .list_streams()
        .into_iter()
        .map(|s| (s.id, s.label[0] - b'0'))
        .collect();
    println!("ready");
    std::thread::scope(|scope| {
        for t in 0..2u64 {
            let (log, labels) = (&log, &labels);
            scope.spawn(move || {
                let mut rng = SplitMix64::new(t + std::process::id() as u64);
                loop {
                    let (id, label) = labels[rng.below(labels.len() as u64) as usize];
                    // Trims keep the pool from filling; the seq to write is next_seq.
                    let (first, next) = log.bounds(id).expect("bounds");
                    if next - first > 2000 {
                        log.trim(id, next - 1000).expect("trim");
                    }
                    // Concurrent appenders on one stream: seq is known only on return, so
                    // the payload is keyed by a reserved guess and checked by content.
                    let seq_guess = log.bounds(id).expect("bounds").1;
                    let bytes = payload(label, seq_guess);
                    match log.append(id, &bytes) {
                        Ok(seq) => println!("ack {label} {seq} {seq_guess}"),
                        Err(e) => panic!("append failed: {e}"),
                    }
                }
            });
        }
    });
}

#[test]
fn kill9_rounds_lose_no_acknowledged_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pool_path = dir.path().join("kill9.pool");
    let rounds: u64 = std::env::var("PSTREAM_KILL9_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let mut rng = SplitMix64::new(0x9_1111);
    let mut total_acks = 0usize;
    for round in 0..rounds {
        let run_for = Duration::from_millis(50 + rng.below(250));
        let acks = kill9_support::run_child_until_killed(
            "kill9_child_entry",
            CHILD_ENV,
            &pool_path,
            run_for,
            |words| match words {
                ["ack", label, seq, guess] => Some((
                    label.parse::<u8>().ok()?,
                    seq.parse::<u64>().ok()?,
                    guess.parse::<u64>().ok()?,
                )),
                _ => None,
            },
        );
        total_acks += acks.len();

        let pool = MmapPool::open(&pool_path, PoolOptions::default()).expect("reopen after kill");
        let (log, _) = Log::open(pool, OpenOptions { lane_count: 4 }).expect("recover after kill");
        let by_label: std::collections::HashMap<u8, StreamId> = log
            .list_streams()
            .into_iter()
            .map(|s| (s.label[0] - b'0', s.id))
            .collect();
        for (label, seq, guess) in &acks {
            let id = by_label[label];
            let (first, next) = log.bounds(id).expect("bounds");
            assert!(
                *seq < next,
                "round {round}: acknowledged {label}/{seq} lost (next {next})"
            );
            if *seq >= first {
                let record = log.read(id, *seq).expect("read acknowledged");
                assert_eq!(
                    record.payload(),
                    payload(*label, *guess).as_slice(),
                    "round {round}: {label}/{seq}"
                );
            }
        }
        assert!(pstream_engine::verify(log.pmem())
            .expect("verify")
            .is_clean());
        log.close().close().expect("close");
    }
    println!("kill -9 rounds: {rounds}, acknowledgements checked: {total_acks}");
    assert!(total_acks > 0, "the child never acknowledged anything");
}

//! Criterion: durable appends of pstream side by side with its peers, one thread, on files in
//! /dev/shm (or the temp dir): payloads of 64 B, 1 KiB and 4 KiB, single appends and batches
//! of 16. Each iteration is one acknowledged append (or batch); throughput is in records.
//!
//! Peers: the `fdatasync` file log always; libpmemlog with `--features pmdk`; okaywal with
//! `--features okaywal`. The engine's own thread-scaling bench is `engine/benches/append.rs`
//! (`cargo bench -p pstream-engine --bench append`); the interleaved same-run comparison
//! with ratios is `pstream bench append --baseline ...`.

use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pstream::engine::{EngineError, Log, LogConfig, OpenOptions, StreamId};
use pstream::pmem_emul::{MmapPool, Pmem, PoolOptions};
use pstream_cli::bench::peer::{open_peer, Baseline, PeerConfig, PeerLog};

const POOL_BYTES: usize = 256 << 20;
const PAYLOADS_BYTES: [usize; 3] = [64, 1024, 4096];
const BATCHES: [usize; 2] = [1, 16];

fn pool_dir() -> PathBuf {
    pstream_cli::ceiling::default_dir()
}

struct Fixture {
    log: Log<MmapPool>,
    stream: StreamId,
    path: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn fixture() -> Fixture {
    let path = pool_dir().join(format!("pstream-crit-append-{}.pool", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let pool = MmapPool::create(&path, POOL_BYTES, PoolOptions::default()).expect("pool");
    pool.zero_nt(0, pool.len_bytes());
    pool.fence();
    let log = Log::create(pool, LogConfig::default(), OpenOptions { lane_count: 4 }).expect("log");
    let stream = log.create_stream(b"crit").expect("stream");
    Fixture { log, stream, path }
}

/// One pstream call; on a full pool trims the stream and reclaims (steady state).
fn pstream_call(fixture: &Fixture, batch: &[(StreamId, &[u8])]) {
    let log = &fixture.log;
    let outcome = if batch.len() == 1 {
        log.append(batch[0].0, batch[0].1).map(|_| ())
    } else {
        log.append_batch(batch).map(|_| ())
    };
    match outcome {
        Ok(()) => {}
        Err(EngineError::PoolFull { .. }) => {
            let (_, next) = log.bounds(fixture.stream).expect("bounds");
            log.trim(fixture.stream, next).expect("trim");
            log.reclaim();
        }
        Err(error) => panic!("append failed: {error}"),
    }
}

fn peer_call(peer: &dyn PeerLog, batch: &[&[u8]]) {
    let outcome = if batch.len() == 1 {
        peer.append(batch[0])
    } else {
        peer.append_batch(batch)
    };
    if let Err(error) = outcome {
        panic!("peer append failed: {error}");
    }
}

fn appends(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_vs_peers");
    group
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(300))
        .sample_size(20);
    let fixture = fixture();
    let peers: Vec<(Baseline, Box<dyn PeerLog>)> = Baseline::ALL
        .into_iter()
        .filter(|b| b.is_available())
        .map(|b| {
            let config = PeerConfig {
                dir: pool_dir(),
                space_bytes: POOL_BYTES,
            };
            (b, open_peer(b, &config).expect("peer"))
        })
        .collect();
    for payload_bytes in PAYLOADS_BYTES {
        let payload = vec![0xA5u8; payload_bytes];
        for batch in BATCHES {
            group.throughput(Throughput::Elements(batch as u64));
            let parameter = format!("{payload_bytes}B_batch{batch}");
            let items: Vec<(StreamId, &[u8])> = (0..batch)
                .map(|_| (fixture.stream, payload.as_slice()))
                .collect();
            group.bench_function(BenchmarkId::new("pstream", &parameter), |b| {
                b.iter(|| pstream_call(&fixture, &items));
            });
            let slices: Vec<&[u8]> = vec![payload.as_slice(); batch];
            for (baseline, peer) in &peers {
                group.bench_function(BenchmarkId::new(baseline.as_str(), &parameter), |b| {
                    b.iter(|| peer_call(peer.as_ref(), &slices));
                });
            }
        }
    }
    group.finish();
    for (_, peer) in peers {
        peer.remove().expect("remove peer");
    }
}

criterion_group!(benches, appends);
criterion_main!(benches);

//! Criterion: engine appends on an mmap pool in /dev/shm (or the temp dir): payloads of 64 B,
//! 1 KiB and 4 KiB; 1 and 2 threads; single appends and batches of 16. Each iteration is one
//! acknowledged (durable) append or batch. Throughput is in records.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pmem_emul::{MmapPool, Pmem, PoolOptions};
use pstream_engine::{EngineError, Log, LogConfig, OpenOptions, StreamId};

const POOL_BYTES: usize = 512 << 20;

fn pool_dir() -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

struct Fixture {
    log: Arc<Log<MmapPool>>,
    path: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn fixture(tag: &str) -> Fixture {
    let path = pool_dir().join(format!("pstream-crit-{tag}-{}.pool", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let pool = MmapPool::create(&path, POOL_BYTES, PoolOptions::default()).expect("pool");
    pool.zero_nt(0, pool.len_bytes());
    pool.fence();
    let config = LogConfig {
        segment_size_bytes: 4 << 20,
        stream_slot_count: 256,
    };
    let log = Log::create(pool, config, OpenOptions { lane_count: 4 }).expect("log");
    Fixture {
        log: Arc::new(log),
        path,
    }
}

/// Appends; on a full pool trims the streams and reclaims (steady state).
fn append_or_recycle(log: &Log<MmapPool>, streams: &[StreamId], batch: &[(StreamId, &[u8])]) {
    let outcome = if batch.len() == 1 {
        log.append(batch[0].0, batch[0].1).map(|_| ())
    } else {
        log.append_batch(batch).map(|_| ())
    };
    match outcome {
        Ok(()) => {}
        Err(EngineError::PoolFull { .. }) => {
            for &s in streams {
                let (_, next) = log.bounds(s).expect("bounds");
                log.trim(s, next).expect("trim");
            }
            log.reclaim();
        }
        Err(error) => panic!("append failed: {error}"),
    }
}

fn appends(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine_append");
    group
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(20);
    for &payload_bytes in &[64usize, 1024, 4096] {
        for &batch in &[1usize, 16] {
            for &threads in &[1usize, 2] {
                let fixture = fixture(&format!("{payload_bytes}-{batch}-{threads}"));
                let streams: Vec<StreamId> = (0..threads)
                    .map(|t| {
                        fixture
                            .log
                            .create_stream(format!("t{t}").as_bytes())
                            .expect("stream")
                    })
                    .collect();
                let payload = vec![0xA5u8; payload_bytes];
                group.throughput(Throughput::Elements((batch * threads) as u64));
                let id = BenchmarkId::new(
                    format!("{payload_bytes}B_batch{batch}"),
                    format!("{threads}t"),
                );
                group.bench_function(id, |b| {
                    b.iter_custom(|iters| {
                        let started = Instant::now();
                        std::thread::scope(|scope| {
                            for t in 0..threads {
                                let (log, streams, payload) = (&fixture.log, &streams, &payload);
                                scope.spawn(move || {
                                    let items: Vec<(StreamId, &[u8])> = (0..batch)
                                        .map(|_| (streams[t], payload.as_slice()))
                                        .collect();
                                    for _ in 0..iters {
                                        append_or_recycle(log, &streams[t..t + 1], &items);
                                    }
                                });
                            }
                        });
                        started.elapsed()
                    });
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, appends);
criterion_main!(benches);

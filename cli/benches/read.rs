//! Criterion: hot-tier reads (zero-copy borrows of the pool, checksums verified) from a
//! stream of 64 B or 1 KiB records on an mmap pool in /dev/shm (or the temp dir):
//! sequential (`Log::iter` over the whole stream) and random (`Log::read` of a random seq).
//! Each iteration is one record; throughput is in records. Cold reads (after migration to
//! SSD) belong to the tiering crate's `cold_io` bench.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pstream::engine::{Log, LogConfig, OpenOptions, StreamId};
use pstream::pmem_emul::{MmapPool, PoolOptions, SplitMix64};

const POOL_BYTES: usize = 512 << 20;
/// Bytes of payload per stream: well beyond the last-level cache.
const STREAM_PAYLOAD_BYTES: usize = 128 << 20;

struct Fixture {
    log: Log<MmapPool>,
    stream: StreamId,
    records: u64,
    path: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn fixture(payload_bytes: usize) -> Fixture {
    let path = pstream_cli::ceiling::default_dir().join(format!(
        "pstream-crit-read-{payload_bytes}-{}.pool",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    let pool = MmapPool::create(&path, POOL_BYTES, PoolOptions::default()).expect("pool");
    let log = Log::create(pool, LogConfig::default(), OpenOptions::default()).expect("log");
    let stream = log.create_stream(b"crit-read").expect("stream");
    let payload = vec![0x3Cu8; payload_bytes];
    let records = (STREAM_PAYLOAD_BYTES / payload_bytes) as u64;
    let batch: Vec<(StreamId, &[u8])> = (0..64).map(|_| (stream, payload.as_slice())).collect();
    for _ in 0..records / 64 {
        log.append_batch(&batch).expect("fill");
    }
    Fixture {
        log,
        stream,
        records: records / 64 * 64,
        path,
    }
}

fn reads(c: &mut Criterion) {
    let mut group = c.benchmark_group("read_hot");
    group
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(300))
        .sample_size(20)
        .throughput(Throughput::Elements(1));
    for payload_bytes in [64usize, 1024] {
        let fixture = fixture(payload_bytes);
        let (log, stream, records) = (&fixture.log, fixture.stream, fixture.records);
        group.bench_function(
            BenchmarkId::new("sequential", format!("{payload_bytes}B")),
            |b| {
                b.iter_custom(|iters| {
                    let started = Instant::now();
                    let mut done = 0u64;
                    while done < iters {
                        for record in log
                            .iter(stream, 0)
                            .expect("iter")
                            .take((iters - done) as usize)
                        {
                            black_box(record.expect("read").payload());
                            done += 1;
                        }
                    }
                    started.elapsed()
                });
            },
        );
        let mut rng = SplitMix64::new(7);
        group.bench_function(
            BenchmarkId::new("random", format!("{payload_bytes}B")),
            |b| {
                b.iter(|| {
                    let seq = rng.below(records);
                    black_box(log.read(stream, seq).expect("read").payload().len())
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, reads);
criterion_main!(benches);

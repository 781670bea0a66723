//! Criterion: recovery, i.e. `MmapPool::open` + `Log::open` of a closed pool holding 64 MiB
//! or 256 MiB of live 1 KiB records over 16 streams, in /dev/shm (or the temp dir). Each
//! iteration is one open (throughput in live payload bytes). `pstream bench recovery` runs
//! the larger sizes with the memory-bandwidth floor beside them.

use std::path::PathBuf;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pstream::engine::{Log, LogConfig, OpenOptions, StreamId};
use pstream::pmem_emul::{MmapPool, PoolOptions};

const PAYLOAD_BYTES: usize = 1024;
const STREAMS: usize = 16;

struct PoolFile(PathBuf);

impl Drop for PoolFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A closed pool with `live_mib` MiB of live payload.
fn filled_pool(live_mib: usize) -> PoolFile {
    let path = pstream_cli::ceiling::default_dir().join(format!(
        "pstream-crit-recovery-{live_mib}-{}.pool",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    let pool_bytes = (live_mib + live_mib / 4 + 32) << 20;
    let pool = MmapPool::create(&path, pool_bytes, PoolOptions::default()).expect("pool");
    let file = PoolFile(path);
    let log = Log::create(pool, LogConfig::default(), OpenOptions { lane_count: 4 }).expect("log");
    let streams: Vec<StreamId> = (0..STREAMS)
        .map(|i| {
            log.create_stream(format!("r{i}").as_bytes())
                .expect("stream")
        })
        .collect();
    let payload = vec![0x5Au8; PAYLOAD_BYTES];
    let batch: Vec<(StreamId, &[u8])> = (0..64)
        .map(|i| (streams[i % STREAMS], payload.as_slice()))
        .collect();
    for _ in 0..(live_mib << 20) / PAYLOAD_BYTES / batch.len() {
        log.append_batch(&batch).expect("fill");
    }
    log.close().close().expect("close");
    file
}

fn recovery(c: &mut Criterion) {
    let mut group = c.benchmark_group("recovery");
    group
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(10);
    for live_mib in [64usize, 256] {
        let file = filled_pool(live_mib);
        group.throughput(Throughput::Bytes((live_mib << 20) as u64));
        group.bench_function(BenchmarkId::new("open", format!("{live_mib}MiB")), |b| {
            b.iter(|| {
                let pool = MmapPool::open(&file.0, PoolOptions::default()).expect("open pool");
                let (log, report) = Log::open(pool, OpenOptions::default()).expect("recover");
                black_box(report.live_records);
                drop(log);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, recovery);
criterion_main!(benches);

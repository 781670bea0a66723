//! Cold tier I/O: migration write throughput and cold read throughput, next to the raw
//! sequential bandwidth of the same directory with the same I/O size.
//!
//! The directory is `PSTREAM_BENCH_DIR` if set, else a temporary directory under /tmp.
//! Segment size: `PSTREAM_BENCH_SEGMENT_MIB` (default 32).

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pstream_tiering::{
    measure_raw_ssd, ColdRecord, ColdStore, ColdStoreConfig, ColdWriterConfig, Compression,
    SourceSegment, UringConfig, UringIo,
};

type Record = (u64, u64, Vec<u8>);

fn bench_dir() -> (Option<tempfile::TempDir>, PathBuf) {
    match std::env::var_os("PSTREAM_BENCH_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir).join("pstream-tiering-bench");
            (None, dir)
        }
        None => {
            let temp = tempfile::tempdir().expect("tempdir");
            let path = temp.path().to_path_buf();
            (Some(temp), path)
        }
    }
}

fn segment_bytes() -> usize {
    let mib = std::env::var("PSTREAM_BENCH_SEGMENT_MIB")
        .ok()
        .and_then(|v| v.parse().ok());
    mib.unwrap_or(32usize) << 20
}

/// Records of 256 B..4 KiB over 8 streams; `compressible` ones are text-like.
fn make_segment(total_bytes: usize, compressible: bool) -> Vec<Record> {
    let mut state = 0x1234_5678_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let words: [&[u8]; 6] = [
        b"message ",
        b"stream ",
        b"agent ",
        b"{\"seq\": ",
        b"payload ",
        b"42, ",
    ];
    let mut seqs = [0u64; 8];
    let mut records = Vec::new();
    let mut bytes = 0;
    while bytes < total_bytes {
        let stream = (next() % 8) as usize;
        let len = 256 + (next() % 3840) as usize;
        let mut payload = Vec::with_capacity(len);
        while payload.len() < len {
            if compressible {
                payload.extend_from_slice(words[(next() % 6) as usize]);
            } else {
                payload.extend_from_slice(&next().to_le_bytes());
            }
        }
        payload.truncate(len);
        records.push((stream as u64 + 1, seqs[stream], payload));
        seqs[stream] += 1;
        bytes += len;
    }
    records
}

fn payload_bytes(records: &[Record]) -> u64 {
    records.iter().map(|record| record.2.len() as u64).sum()
}

fn source(segment_gen: u64) -> SourceSegment {
    SourceSegment {
        segment_index: 0,
        segment_gen,
        pool_nonce: 1,
    }
}

fn store(
    dir: &std::path::Path,
    compression: Compression,
    uring: UringConfig,
) -> ColdStore<UringIo> {
    let io = UringIo::open(dir, uring).expect("io");
    let config = ColdStoreConfig {
        writer: ColdWriterConfig {
            compression,
            ..ColdWriterConfig::default()
        },
        cache_capacity_bytes: 0,
        ..ColdStoreConfig::default()
    };
    let (store, _) = ColdStore::open(io, config).expect("store");
    for gen in store.segment_gens() {
        store.delete(gen).expect("clean up an earlier run");
    }
    store
}

static NEXT_GEN: AtomicU64 = AtomicU64::new(1);

fn migration(c: &mut Criterion) {
    let (_temp, dir) = bench_dir();
    let segment = segment_bytes();
    let io_size = ColdWriterConfig::default().chunk_bytes;
    match measure_raw_ssd(&dir, io_size, (4 * segment) as u64) {
        Ok((write, read)) => eprintln!(
            "raw SSD at {}: write {write:.0} MiB/s, read {read:.0} MiB/s ({io_size} B I/Os)",
            dir.display()
        ),
        Err(error) => eprintln!("raw SSD measurement failed: {error}"),
    }
    let random = make_segment(segment, false);
    let text = make_segment(segment, true);
    let mut group = c.benchmark_group("migration");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    let crcs = |records: &[Record]| -> Vec<u32> {
        records
            .iter()
            .map(|record| crc32fast::hash(&record.2))
            .collect()
    };
    let (random_crcs, text_crcs) = (crcs(&random), crcs(&text));
    let uring = UringConfig::default();
    let pwrite = UringConfig {
        force_std_fallback: true,
        ..UringConfig::default()
    };
    let (none, zstd1, zstd3) = (
        Compression::None,
        Compression::Zstd { level: 1 },
        Compression::Zstd { level: 3 },
    );
    let cases = [
        (
            "uring/none/random",
            none,
            &uring,
            (&random, &random_crcs),
            false,
        ),
        (
            "uring/none/random/engine-crc",
            none,
            &uring,
            (&random, &random_crcs),
            true,
        ),
        (
            "uring/zstd1/text",
            zstd1,
            &uring,
            (&text, &text_crcs),
            false,
        ),
        (
            "uring/zstd3/text",
            zstd3,
            &uring,
            (&text, &text_crcs),
            false,
        ),
        (
            "pwrite/none/random",
            none,
            &pwrite,
            (&random, &random_crcs),
            false,
        ),
    ];
    for (name, compression, uring, (records, record_crcs), engine_crc) in cases {
        let store = store(&dir, compression, uring.clone());
        group.throughput(Throughput::Bytes(payload_bytes(records)));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let gen = NEXT_GEN.fetch_add(1, Ordering::Relaxed);
                    let input = records.iter().zip(record_crcs).map(|((s, q, p), crc)| {
                        let payload_crc = engine_crc.then_some(*crc);
                        ColdRecord {
                            stream_id: *s,
                            seq: *q,
                            payload: p,
                            payload_crc,
                        }
                    });
                    let start = Instant::now();
                    black_box(store.write_segment(&source(gen), input).expect("migrate"));
                    elapsed += start.elapsed();
                    store.delete(gen).expect("delete");
                }
                elapsed
            })
        });
    }
    group.finish();
}

fn cold_reads(c: &mut Criterion) {
    let (_temp, dir) = bench_dir();
    let random = make_segment(segment_bytes(), false);
    let text = make_segment(segment_bytes(), true);
    let mut group = c.benchmark_group("cold_read");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(6));
    let cases = [
        ("none/random", Compression::None, &random),
        ("zstd3/text", Compression::Zstd { level: 3 }, &text),
    ];
    for (name, compression, records) in cases {
        let store = store(&dir, compression, UringConfig::default());
        let gen = NEXT_GEN.fetch_add(1, Ordering::Relaxed);
        let input = records.iter().map(|(s, q, p)| (*s, *q, p.as_slice()));
        store.write_segment(&source(gen), input).expect("migrate");
        group.throughput(Throughput::Bytes(payload_bytes(records)));
        group.bench_function(BenchmarkId::new("scan", name), |b| {
            b.iter(|| {
                black_box(store.scan_segment(gen, |_, payload| {
                    black_box(payload);
                }))
            })
        });
        // Point reads of records spread over the file, cache disabled: one block read each.
        let picks: Vec<&Record> = records.iter().step_by(records.len() / 256 + 1).collect();
        group.throughput(Throughput::Elements(picks.len() as u64));
        group.bench_function(BenchmarkId::new("read_record", name), |b| {
            b.iter(|| {
                for (stream, seq, _) in &picks {
                    black_box(store.read_record(gen, *stream, *seq).expect("read"));
                }
            })
        });
        store.delete(gen).expect("delete");
    }
    group.finish();
}

criterion_group!(benches, migration, cold_reads);
criterion_main!(benches);

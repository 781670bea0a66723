//! Probe: raw persist costs on this machine, to explain benchmark figures.
//! * with and without an atomic RMW per iteration (does it make the drain synchronous?);
//! * one vs two threads persisting to disjoint regions (does the raw persist scale?).
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use pmem_emul::{MmapPool, Pmem, PoolOptions};

fn run(pool: &MmapPool, region: usize, size: usize, rmw: bool, counter: &AtomicU64) -> f64 {
    let payload = vec![7u8; size];
    let n = 1_000_000usize;
    let mut offset = 0usize;
    let started = Instant::now();
    for _ in 0..n {
        pool.write(region + offset, &payload);
        pool.flush(region + offset, size);
        pool.fence();
        if rmw {
            counter.fetch_add(1, Ordering::AcqRel);
        }
        offset = (offset + size.next_multiple_of(64)) % (28 << 20);
    }
    started.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    let path = std::path::Path::new("/dev/shm/drain-probe.pool");
    let _ = std::fs::remove_file(path);
    let pool = MmapPool::create(path, 64 << 20, PoolOptions::default()).expect("pool");
    pool.zero_nt(0, pool.len_bytes());
    pool.fence();
    for size in [64usize, 128] {
        for rmw in [false, true] {
            let counters = [AtomicU64::new(0), AtomicU64::new(0)];
            let one = run(&pool, 0, size, rmw, &counters[0]);
            let two: Vec<f64> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..2)
                    .map(|t| {
                        let (pool, counter) = (&pool, &counters[t]);
                        s.spawn(move || run(pool, t * (32 << 20), size, rmw, counter))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("thread"))
                    .collect()
            });
            let two_rate = two.iter().map(|ns| 1e3 / ns).sum::<f64>();
            println!(
                "{size:>4} B rmw={rmw:<5} 1 thread {:6.2} M/s   2 threads {:6.2} M/s   scaling {:.2}x",
                1e3 / one,
                two_rate,
                two_rate * one / 1e3
            );
        }
    }
    let _ = std::fs::remove_file(path);
}

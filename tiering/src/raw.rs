//! Raw sequential bandwidth of the SSD directory, measured through the same I/O path, I/O
//! size and queue depth the cold tier uses, so migration and cold-read throughput can be
//! stated as a fraction of it.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::io::{align_up, Fill, SegmentIo, StreamShape, UringConfig, UringIo};
use pmem_emul::SplitMix64;

/// Scratch file of the measurement, removed afterwards.
pub const RAW_PROBE_NAME: &str = ".pstream-raw-ssd.tmp";

/// Reads or writes kept in flight by [`measure_raw_ssd`] (the cold tier's default depth).
pub const RAW_DEPTH: usize = 8;

/// Result of [`measure_raw_ssd_with`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawSsdBandwidth {
    pub write_mib_per_sec: f64,
    pub read_mib_per_sec: f64,
    pub bytes: u64,
    pub io_size_bytes: usize,
    pub direct_io: bool,
}

/// Sequential write (then fdatasync) and read bandwidth of `dir` in MiB/s, with
/// `io_size_bytes` per operation (rounded up to 4096) over about `total_bytes`, through
/// [`UringIo`] (or its fallback) with O_DIRECT where the file system supports it.
pub fn measure_raw_ssd(dir: &Path, io_size_bytes: usize, total_bytes: u64) -> Result<(f64, f64)> {
    let io = UringIo::open(dir, UringConfig::default())?;
    let bandwidth = measure_raw_ssd_with(&io, io_size_bytes, total_bytes, RAW_DEPTH)?;
    Ok((bandwidth.write_mib_per_sec, bandwidth.read_mib_per_sec))
}

/// [`measure_raw_ssd`] through any [`SegmentIo`] and queue depth.
pub fn measure_raw_ssd_with<I: SegmentIo>(
    io: &I,
    io_size_bytes: usize,
    total_bytes: u64,
    depth: usize,
) -> Result<RawSsdBandwidth> {
    let io_size = align_up(io_size_bytes.clamp(1, crate::io::MAX_IO_BYTES));
    let chunk_count = total_bytes.div_ceil(io_size as u64).max(1);
    let bytes = chunk_count * io_size as u64;
    let shape = StreamShape {
        chunk_bytes: io_size,
        depth,
    };
    shape.validate()?;
    let mut pattern = vec![0u8; io_size];
    SplitMix64::new(0x5eed).fill(&mut pattern);

    let file = io.create(RAW_PROBE_NAME)?;
    let result = (|| {
        let mut written = 0u64;
        let write_start = Instant::now();
        io.write_stream_synced(&file, 0, shape, |buf| {
            buf.extend_from_slice(&pattern);
            written += 1;
            Ok(if written == chunk_count {
                Fill::Last
            } else {
                Fill::More
            })
        })?;
        let write_time = write_start.elapsed();
        io.evict_cache(&file)?;
        let read_time = read_sequential(io, &file, bytes, io_size, depth)?;
        Ok(RawSsdBandwidth {
            write_mib_per_sec: mib_per_sec(bytes, write_time),
            read_mib_per_sec: mib_per_sec(bytes, read_time),
            bytes,
            io_size_bytes: io_size,
            direct_io: io.is_direct(),
        })
    })();
    drop(file);
    if let Err(error) = io.remove(RAW_PROBE_NAME) {
        tracing::warn!(%error, "could not remove the raw bandwidth probe file");
    }
    result
}

fn read_sequential<I: SegmentIo>(
    io: &I,
    file: &I::File,
    bytes: u64,
    io_size: usize,
    depth: usize,
) -> Result<Duration> {
    let start = Instant::now();
    let shape = StreamShape {
        chunk_bytes: io_size,
        depth,
    };
    let mut read_bytes = 0u64;
    io.read_stream(file, 0, bytes, shape, |_, chunk| {
        read_bytes += chunk.len() as u64;
        std::hint::black_box(chunk);
        Ok(())
    })?;
    debug_assert_eq!(read_bytes, bytes);
    Ok(start.elapsed())
}

pub(crate) fn mib_per_sec(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / (1u64 << 20) as f64 / elapsed.as_secs_f64().max(1e-9)
}

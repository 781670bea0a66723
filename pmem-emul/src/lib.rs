//! The persistence seam of pstream.
//!
//! Everything above this crate (the engine, the tiering migrator, the agent shim) is generic
//! over one small trait, [`Pmem`]: store bytes, write back cache lines, fence, copy with
//! non-temporal stores, and borrow bytes for reading. Two backends implement it:
//!
//! * [`MmapPool`]: a pool file mapped with `mmap`. On a real DAX file system the mapping is
//!   made with `MAP_SHARED_VALIDATE | MAP_SYNC`, so flush + fence is power-fail durable.
//!   Elsewhere the pool is *emulated* and its [`Durability`] setting says what survives.
//! * [`SimPmem`]: a crash simulator that keeps a volatile image, a persisted image and the
//!   pending 8-byte stores of every dirty cache line, and can produce every crash image that
//!   x86 persistent memory allows (see `docs/CRASH-MODEL.md`).
//!
//! The trait is used through generics (`Log<P: Pmem>`), never through `dyn`, so the append
//! path compiles down to the flush and fence instructions themselves.

#![deny(unsafe_code)]

mod error;
#[expect(
    unsafe_code,
    reason = "CPU flush, fence and non-temporal store intrinsics; each block has its SAFETY"
)]
mod flush;
#[expect(
    unsafe_code,
    reason = "mapping the pool file and handing out its bytes; each block has its SAFETY"
)]
mod mmap;
mod pool_header;
#[expect(
    unsafe_code,
    reason = "the simulator's volatile image is shared memory with atomic 8-byte cells"
)]
mod sim;

pub use error::PmemError;
pub use flush::FlushInstruction;
pub use mmap::{Durability, MmapPool, PoolOptions};
pub use pool_header::{POOL_HEADER_BYTES, POOL_MAGIC, POOL_VERSION};
pub use sim::{CrashPoint, ImageRun, SimCounters, SimPmem, SplitMix64, UnpersistedStores};

/// Size of a CPU cache line: the unit that flush instructions write back.
pub const CACHE_LINE_BYTES: usize = 64;
/// Size of the largest store that persistent memory guarantees not to tear.
pub const ATOMIC_STORE_BYTES: usize = 8;

const _: () = assert!(CACHE_LINE_BYTES % ATOMIC_STORE_BYTES == 0);
const _: () = assert!(CACHE_LINE_BYTES.is_power_of_two());

/// What a pool's flush + fence protects against.
///
/// Reported by [`Pmem::guarantee`] so that callers (and `pstream` output) can say honestly
/// what an acknowledgement means on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Guarantee {
    /// A real DAX mapping with `MAP_SYNC`: flush + fence reaches the persistence domain.
    PowerFailDax,
    /// An emulated pool that also `msync`s every flushed range: survives power loss, slowly.
    PowerFailMsync,
    /// An emulated pool with flush + fence only: survives a process crash (the page cache
    /// outlives the process), not a power loss or kernel crash.
    ProcessCrash,
    /// The crash simulator: durability is whatever the simulated persisted image holds.
    Simulated,
}

impl Guarantee {
    /// A short stable name for CLI and JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Guarantee::PowerFailDax => "power-fail (dax)",
            Guarantee::PowerFailMsync => "power-fail (msync)",
            Guarantee::ProcessCrash => "process-crash",
            Guarantee::Simulated => "simulated",
        }
    }
}

/// Byte-addressable persistent memory, as the engine sees it.
///
/// # Contract
/// * Offsets are relative to the start of the pool's data region and `offset + len` must not
///   exceed [`Pmem::len_bytes`]; violating that is a programming error and panics.
/// * Stores ([`Pmem::write`], [`Pmem::write_u64`], [`Pmem::write_nt`]) are visible to loads at
///   once but durable only after the lines holding them were written back
///   ([`Pmem::flush`], or non-temporal stores) *and* a [`Pmem::fence`] completed.
/// * Stores to one cache line reach persistence in program order; stores to different lines
///   in any order until fenced. Only an aligned [`Pmem::write_u64`] is guaranteed not to tear.
/// * Concurrent callers must write disjoint ranges, and must not read a range while another
///   thread writes it. The engine upholds this by construction: a range is read only after
///   its writer published it, and space is reused only after every reader left (epochs).
pub trait Pmem: Send + Sync + 'static {
    /// Length of the data region in bytes.
    fn len_bytes(&self) -> usize;

    /// Borrows `len` bytes at `offset` (zero copy).
    fn read(&self, offset: usize, len: usize) -> &[u8];

    /// An atomic aligned 8-byte load (little-endian on media).
    fn read_u64(&self, offset: usize) -> u64;

    /// Ordinary (cached) stores of `data` at `offset`, in ascending address order.
    fn write(&self, offset: usize, data: &[u8]);

    /// One aligned 8-byte store that cannot tear (little-endian on media). `offset` must be
    /// 8-byte aligned. Use it for every word whose value decides validity.
    fn write_u64(&self, offset: usize, value: u64);

    /// Copies `data` to `offset` with non-temporal stores where the hardware has them, so the
    /// data needs no flush, only a fence. Lines only partly covered are written with ordinary
    /// stores and flushed, so after the next [`Pmem::fence`] all of `data` is durable.
    fn write_nt(&self, offset: usize, data: &[u8]);

    /// Starts the write-back of every cache line overlapping `[offset, offset + len)`.
    fn flush(&self, offset: usize, len: usize);

    /// Store fence: every earlier flush and non-temporal store is durable when it returns.
    fn fence(&self);

    /// `flush` then `fence`.
    #[inline]
    fn persist(&self, offset: usize, len: usize) {
        self.flush(offset, len);
        self.fence();
    }

    /// Sets `[offset, offset + len)` to zero with stores that are durable after the next
    /// fence. Used to scrub space before reuse.
    fn zero_nt(&self, offset: usize, len: usize) {
        const CHUNK_BYTES: usize = 64 * 1024;
        static ZEROS: [u8; CHUNK_BYTES] = [0; CHUNK_BYTES];
        let mut done_bytes = 0;
        while done_bytes < len {
            let chunk_bytes = (len - done_bytes).min(CHUNK_BYTES);
            self.write_nt(offset + done_bytes, &ZEROS[..chunk_bytes]);
            done_bytes += chunk_bytes;
        }
    }

    /// What an acknowledged flush + fence survives on this pool.
    fn guarantee(&self) -> Guarantee;
}

/// Panics unless `[offset, offset + len)` lies inside a region of `region_len` bytes.
#[inline]
#[track_caller]
pub(crate) fn check_range(offset: usize, len: usize, region_len: usize) {
    let end = offset.checked_add(len);
    assert!(
        matches!(end, Some(end) if end <= region_len),
        "pmem access out of range: offset {offset} len {len} region {region_len}"
    );
}

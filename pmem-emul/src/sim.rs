//! The crash simulator: a [`Pmem`] that knows every state persistent memory could be left in.
//!
//! It keeps exactly the model of `docs/CRASH-MODEL.md`:
//! * a **volatile image**: what loads see (all stores applied);
//! * a **persisted image**: what survives a crash for certain;
//! * per dirty cache line, its **pending 8-byte stores** in program order, and how many of
//!   them a flush has covered.
//!
//! A fence moves every flushed pending store into the persisted image. A crash leaves the
//! persisted image plus, for every dirty line independently, *any prefix* of that line's
//! pending stores. With `N` dirty lines holding `k_i` pending stores there are
//! `prod(k_i + 1)` distinct crash images; [`CrashPoint::for_each_image`] enumerates them all
//! when that product is small and draws seeded samples otherwise.
//!
//! A crash just before a fence covers every crash between that fence and the previous one:
//! the pending stores of an earlier instant are a prefix of the later ones, line by line.
//! So a test that inspects the images at every fence (see [`SimPmem::set_fence_hook`]) has
//! covered every instant of the run.

use std::cell::UnsafeCell;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::{check_range, Guarantee, Pmem, ATOMIC_STORE_BYTES, CACHE_LINE_BYTES};

const WORDS_PER_LINE: usize = CACHE_LINE_BYTES / ATOMIC_STORE_BYTES;

/// Operation counts of a simulator since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimCounters {
    /// 8-byte stores through the cache (`write`, `write_u64`).
    pub stores: u64,
    /// 8-byte non-temporal stores (`write_nt`).
    pub nt_stores: u64,
    /// Cache lines named by `flush` calls.
    pub line_flushes: u64,
    /// Line flushes of lines that had no unflushed pending store: wasted work.
    pub redundant_line_flushes: u64,
    /// `fence` calls.
    pub fences: u64,
}

/// Stores that an operation claiming durability left unpersisted (like pmemcheck's report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpersistedStores {
    /// Byte offsets of the dirty cache lines, ascending.
    pub line_offsets: Vec<usize>,
    /// Pending 8-byte stores across those lines.
    pub store_count: usize,
}

impl fmt::Display for UnpersistedStores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<String> = self
            .line_offsets
            .iter()
            .take(8)
            .map(|o| format!("{o:#x}"))
            .collect();
        write!(
            f,
            "{} store(s) in {} cache line(s) not persisted (lines at {}{})",
            self.store_count,
            self.line_offsets.len(),
            shown.join(", "),
            if self.line_offsets.len() > 8 {
                ", ..."
            } else {
                ""
            }
        )
    }
}

impl std::error::Error for UnpersistedStores {}

/// One pending 8-byte store: which word of its line, and the value stored.
#[derive(Debug, Clone, Copy)]
struct PendingStore {
    word_in_line: u8,
    value: u64,
}

#[derive(Debug, Default, Clone)]
struct DirtyLine {
    /// Stores since the line's last write-back, in program order.
    pending: Vec<PendingStore>,
    /// How many of `pending` (a prefix) a flush has covered; the next fence persists them.
    flushed_count: usize,
}

type FenceHook = Box<dyn FnMut(&CrashPoint<'_>) + Send>;

struct SimState {
    persisted: Vec<u8>,
    /// Dirty lines by line index; ordered so enumeration is deterministic.
    dirty: BTreeMap<usize, DirtyLine>,
    counters: SimCounters,
    fence_hook: Option<FenceHook>,
}

/// The crash simulator backend. See the module documentation.
pub struct SimPmem {
    /// The volatile image, as 8-byte words so atomic word access is aligned.
    volatile: Box<[UnsafeCell<u64>]>,
    len_bytes: usize,
    state: Mutex<SimState>,
}

// SAFETY: the volatile image is only written while `state` is locked, and the `Pmem`
// contract forbids reading a range while another thread writes it; word-sized accesses that
// may race (read_u64/write_u64) go through `AtomicU64`.
unsafe impl Sync for SimPmem {}
// SAFETY: `SimPmem` owns its buffers; nothing in it is tied to a thread.
unsafe impl Send for SimPmem {}

impl fmt::Debug for SimPmem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("SimPmem")
            .field("len_bytes", &self.len_bytes)
            .field("dirty_lines", &state.dirty.len())
            .field("counters", &state.counters)
            .finish()
    }
}

impl SimPmem {
    /// A zeroed simulated pool of `len_bytes` (a positive multiple of the cache line size).
    pub fn new(len_bytes: usize) -> Self {
        Self::from_image(vec![0; len_bytes])
    }

    /// A simulated pool whose volatile and persisted images both start as `image`, as after
    /// a crash and restart. `image.len()` must be a positive multiple of the cache line size.
    pub fn from_image(image: Vec<u8>) -> Self {
        let len_bytes = image.len();
        assert!(
            len_bytes > 0 && len_bytes % CACHE_LINE_BYTES == 0,
            "simulated pool length {len_bytes} must be a positive multiple of {CACHE_LINE_BYTES}"
        );
        let volatile: Box<[UnsafeCell<u64>]> = image
            .chunks_exact(ATOMIC_STORE_BYTES)
            .map(|word| UnsafeCell::new(word_bytes_to_cell(word)))
            .collect();
        SimPmem {
            volatile,
            len_bytes,
            state: Mutex::new(SimState {
                persisted: image,
                dirty: BTreeMap::new(),
                counters: SimCounters::default(),
                fence_hook: None,
            }),
        }
    }

    /// Counts of stores, flushes and fences so far.
    pub fn counters(&self) -> SimCounters {
        self.state.lock().counters
    }

    /// Installs (or removes) a hook called at every fence, *before* the fence takes effect,
    /// with the crash point of that instant. The hook must not call back into this simulator
    /// (its state is locked while the hook runs); it typically enumerates crash images and
    /// recovers each on a fresh `SimPmem`.
    pub fn set_fence_hook(&self, hook: Option<FenceHook>) {
        self.state.lock().fence_hook = hook;
    }

    /// Runs `f` on the crash point of this instant (a crash right now).
    pub fn with_crash_point<R>(&self, f: impl FnOnce(&CrashPoint<'_>) -> R) -> R {
        let state = self.state.lock();
        let point = CrashPoint {
            persisted: &state.persisted,
            dirty: &state.dirty,
            fence_index: None,
        };
        f(&point)
    }

    /// The image that survives a crash for certain (no pending store applied).
    pub fn persisted_image(&self) -> Vec<u8> {
        self.state.lock().persisted.clone()
    }

    /// What loads see now (every store applied).
    pub fn volatile_image(&self) -> Vec<u8> {
        let _state = self.state.lock();
        self.read(0, self.len_bytes).to_vec()
    }

    /// Number of cache lines holding stores that are not yet persisted.
    pub fn dirty_line_count(&self) -> usize {
        self.state.lock().dirty.len()
    }

    /// `Ok` when every store so far is persisted: what a durable operation asserts on return.
    pub fn check_all_persisted(&self) -> Result<(), UnpersistedStores> {
        self.check_persisted(0, self.len_bytes)
    }

    /// `Ok` when no store to a cache line overlapping `[offset, offset + len)` is pending.
    pub fn check_persisted(&self, offset: usize, len: usize) -> Result<(), UnpersistedStores> {
        check_range(offset, len, self.len_bytes);
        let state = self.state.lock();
        let (first_line, end_line) = line_span(offset, len);
        let mut report = UnpersistedStores {
            line_offsets: Vec::new(),
            store_count: 0,
        };
        for (line, dirty) in state.dirty.range(first_line..end_line) {
            report.line_offsets.push(line * CACHE_LINE_BYTES);
            report.store_count += dirty.pending.len();
        }
        if report.line_offsets.is_empty() {
            Ok(())
        } else {
            Err(report)
        }
    }

    fn word_cell(&self, offset: usize) -> &AtomicU64 {
        debug_assert_eq!(offset % ATOMIC_STORE_BYTES, 0);
        let cell = &self.volatile[offset / ATOMIC_STORE_BYTES];
        // SAFETY: the cell is 8-byte aligned and lives as long as `self`; `AtomicU64` has the
        // same size and alignment as `u64`, and all racing word accesses go through atomics.
        unsafe { AtomicU64::from_ptr(cell.get()) }
    }

    fn base_ptr(&self) -> *mut u8 {
        // `UnsafeCell<u64>` is `repr(transparent)`, so the slice is a contiguous run of words.
        UnsafeCell::raw_get(self.volatile.as_ptr()).cast::<u8>()
    }

    /// Applies `data` at `offset` to the volatile image and records one pending store per
    /// touched word. `flushed` marks them covered by a write-back already (non-temporal).
    fn store_bytes(&self, state: &mut SimState, offset: usize, data: &[u8], flushed: bool) {
        if data.is_empty() {
            return;
        }
        // SAFETY: the range was bounds-checked by the caller; the state lock is held, so no
        // other simulator write runs, and the `Pmem` contract forbids concurrent readers.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.base_ptr().add(offset), data.len());
        }
        let first_word = offset / ATOMIC_STORE_BYTES;
        let end_word = (offset + data.len()).div_ceil(ATOMIC_STORE_BYTES);
        for word in first_word..end_word {
            let value = self
                .word_cell(word * ATOMIC_STORE_BYTES)
                .load(Ordering::Relaxed);
            self.record_store(state, word, value, flushed);
        }
    }

    fn record_store(&self, state: &mut SimState, word: usize, value: u64, flushed: bool) {
        let line = word / WORDS_PER_LINE;
        let dirty = state.dirty.entry(line).or_default();
        // Non-temporal stores only count as flushed when nothing unflushed precedes them in
        // the line; otherwise the prefix model keeps them pending behind those stores.
        let covered = flushed && dirty.flushed_count == dirty.pending.len();
        dirty.pending.push(PendingStore {
            word_in_line: (word % WORDS_PER_LINE) as u8,
            value,
        });
        if covered {
            dirty.flushed_count = dirty.pending.len();
        }
        if flushed {
            state.counters.nt_stores += 1;
        } else {
            state.counters.stores += 1;
        }
    }
}

impl Pmem for SimPmem {
    fn len_bytes(&self) -> usize {
        self.len_bytes
    }

    fn read(&self, offset: usize, len: usize) -> &[u8] {
        check_range(offset, len, self.len_bytes);
        // SAFETY: in bounds (checked above); the buffer lives as long as `self`; the `Pmem`
        // contract forbids writes to this range while the borrow is alive.
        unsafe { std::slice::from_raw_parts(self.base_ptr().add(offset), len) }
    }

    fn read_u64(&self, offset: usize) -> u64 {
        check_range(offset, ATOMIC_STORE_BYTES, self.len_bytes);
        assert_eq!(
            offset % ATOMIC_STORE_BYTES,
            0,
            "unaligned read_u64 at {offset}"
        );
        u64::from_le(self.word_cell(offset).load(Ordering::Acquire))
    }

    fn write(&self, offset: usize, data: &[u8]) {
        check_range(offset, data.len(), self.len_bytes);
        let mut state = self.state.lock();
        self.store_bytes(&mut state, offset, data, false);
    }

    fn write_u64(&self, offset: usize, value: u64) {
        check_range(offset, ATOMIC_STORE_BYTES, self.len_bytes);
        assert_eq!(
            offset % ATOMIC_STORE_BYTES,
            0,
            "unaligned write_u64 at {offset}"
        );
        let mut state = self.state.lock();
        let stored = value.to_le();
        self.word_cell(offset).store(stored, Ordering::Release);
        self.record_store(&mut state, offset / ATOMIC_STORE_BYTES, stored, false);
    }

    fn write_nt(&self, offset: usize, data: &[u8]) {
        check_range(offset, data.len(), self.len_bytes);
        let mut state = self.state.lock();
        self.store_bytes(&mut state, offset, data, true);
    }

    fn flush(&self, offset: usize, len: usize) {
        check_range(offset, len, self.len_bytes);
        let mut state = self.state.lock();
        let (first_line, end_line) = line_span(offset, len);
        let mut flushed_lines = 0u64;
        for (_, dirty) in state.dirty.range_mut(first_line..end_line) {
            if dirty.flushed_count < dirty.pending.len() {
                dirty.flushed_count = dirty.pending.len();
                flushed_lines += 1;
            }
        }
        let named_lines = (end_line - first_line) as u64;
        state.counters.line_flushes += named_lines;
        state.counters.redundant_line_flushes += named_lines - flushed_lines;
    }

    fn fence(&self) {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        state.counters.fences += 1;
        if let Some(hook) = state.fence_hook.as_mut() {
            let point = CrashPoint {
                persisted: &state.persisted,
                dirty: &state.dirty,
                fence_index: Some(state.counters.fences - 1),
            };
            hook(&point);
        }
        let persisted = &mut state.persisted;
        state.dirty.retain(|&line, dirty| {
            for store in &dirty.pending[..dirty.flushed_count] {
                apply_store(persisted, line, *store);
            }
            dirty.pending.drain(..dirty.flushed_count);
            dirty.flushed_count = 0;
            !dirty.pending.is_empty()
        });
    }

    fn guarantee(&self) -> Guarantee {
        Guarantee::Simulated
    }
}

/// The state of a simulated pool at one instant, from which crash images are drawn.
pub struct CrashPoint<'a> {
    persisted: &'a [u8],
    dirty: &'a BTreeMap<usize, DirtyLine>,
    fence_index: Option<u64>,
}

/// How [`CrashPoint::for_each_image`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageRun {
    /// Images handed to the callback.
    pub images_visited: u64,
    /// Whether every distinct crash image was visited (not a sample).
    pub exhaustive: bool,
}

impl CrashPoint<'_> {
    /// Index of the fence about to complete (0-based), or `None` for "right now".
    pub fn fence_index(&self) -> Option<u64> {
        self.fence_index
    }

    /// Number of dirty cache lines.
    pub fn dirty_line_count(&self) -> usize {
        self.dirty.len()
    }

    /// Number of distinct crash images, `prod(pending_i + 1)`, saturating at `u128::MAX`.
    pub fn image_count(&self) -> u128 {
        self.dirty.values().fold(1u128, |count, line| {
            count.saturating_mul(line.pending.len() as u128 + 1)
        })
    }

    /// Visits crash images: all of them when there are at most `exhaustive_max`, else
    /// `samples` images drawn with a generator seeded by `seed` (the same seed gives the same
    /// images), the first two being "nothing pending persisted" and "everything persisted".
    /// The callback may stop the run early with `ControlFlow::Break`.
    pub fn for_each_image(
        &self,
        exhaustive_max: u64,
        samples: u64,
        seed: u64,
        mut visit: impl FnMut(&[u8]) -> ControlFlow<()>,
    ) -> ImageRun {
        let lines: Vec<(usize, &DirtyLine)> = self.dirty.iter().map(|(l, d)| (*l, d)).collect();
        let mut image = self.persisted.to_vec();
        let mut prefix_lens = vec![0usize; lines.len()];
        let exhaustive = self.image_count() <= u128::from(exhaustive_max);
        let mut images_visited = 0u64;
        if exhaustive {
            loop {
                self.compose(&mut image, &lines, &prefix_lens);
                images_visited += 1;
                if visit(&image).is_break() || !advance_mixed_radix(&mut prefix_lens, &lines) {
                    break;
                }
            }
        } else {
            let mut rng = SplitMix64::new(seed);
            for sample in 0..samples {
                for (prefix_len, (_, dirty)) in prefix_lens.iter_mut().zip(&lines) {
                    let pending = dirty.pending.len();
                    *prefix_len = match sample {
                        0 => 0,
                        1 => pending,
                        // Torn states at the extremes are the likeliest to expose bugs, so a
                        // quarter of the draws pick none or all of a line's stores.
                        _ => match rng.next_u64() % 8 {
                            0 => 0,
                            1 => pending,
                            _ => rng.below(pending as u64 + 1) as usize,
                        },
                    };
                }
                self.compose(&mut image, &lines, &prefix_lens);
                images_visited += 1;
                if visit(&image).is_break() {
                    break;
                }
            }
        }
        ImageRun {
            images_visited,
            exhaustive,
        }
    }

    /// Rewrites the dirty lines of `image` as persisted + the chosen prefix of each.
    fn compose(&self, image: &mut [u8], lines: &[(usize, &DirtyLine)], prefix_lens: &[usize]) {
        for ((line, dirty), prefix_len) in lines.iter().zip(prefix_lens) {
            let start = line * CACHE_LINE_BYTES;
            image[start..start + CACHE_LINE_BYTES]
                .copy_from_slice(&self.persisted[start..start + CACHE_LINE_BYTES]);
            for store in &dirty.pending[..*prefix_len] {
                apply_store(image, *line, *store);
            }
        }
    }
}

/// Steps the per-line prefix lengths like an odometer; false once every combination was seen.
fn advance_mixed_radix(prefix_lens: &mut [usize], lines: &[(usize, &DirtyLine)]) -> bool {
    for (prefix_len, (_, dirty)) in prefix_lens.iter_mut().zip(lines) {
        if *prefix_len < dirty.pending.len() {
            *prefix_len += 1;
            return true;
        }
        *prefix_len = 0;
    }
    false
}

// Words are copied bit for bit between the image and the word cells, so native order is
// the right one here: the cell holds the bytes as they appear in memory.
#[allow(clippy::host_endian_bytes)]
fn apply_store(image: &mut [u8], line: usize, store: PendingStore) {
    let start = line * CACHE_LINE_BYTES + usize::from(store.word_in_line) * ATOMIC_STORE_BYTES;
    image[start..start + ATOMIC_STORE_BYTES].copy_from_slice(&store.value.to_ne_bytes());
}

/// `[first_line, end_line)` of the cache lines overlapping `[offset, offset + len)`.
fn line_span(offset: usize, len: usize) -> (usize, usize) {
    let first_line = offset / CACHE_LINE_BYTES;
    let end_line = if len == 0 {
        first_line
    } else {
        (offset + len).div_ceil(CACHE_LINE_BYTES)
    };
    (first_line, end_line)
}

#[allow(clippy::host_endian_bytes)]
fn word_bytes_to_cell(word: &[u8]) -> u64 {
    u64::from_ne_bytes(word_array(word))
}

fn word_array(word: &[u8]) -> [u8; ATOMIC_STORE_BYTES] {
    let mut bytes = [0u8; ATOMIC_STORE_BYTES];
    bytes.copy_from_slice(word);
    bytes
}

/// A small, fast, seedable generator (SplitMix64) for reproducible crash sampling: the
/// project's one PRNG (the cold tier's fault injection and the test kit use it too).
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose whole output is decided by `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..bound` (`bound > 0`), without modulo bias worth caring about here.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "SplitMix64::below(0)");
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// True with probability `probability` (clamped to 0..=1).
    pub fn chance(&mut self, probability: f64) -> bool {
        if probability <= 0.0 {
            return false;
        }
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit < probability
    }

    /// Fills `bytes` with the next draws, eight little-endian bytes per draw.
    pub fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images(sim: &SimPmem, exhaustive_max: u64, samples: u64, seed: u64) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        sim.with_crash_point(|point| {
            point.for_each_image(exhaustive_max, samples, seed, |image| {
                out.push(image.to_vec());
                ControlFlow::Continue(())
            })
        });
        out
    }

    #[test]
    fn fenced_store_survives_every_crash_image() {
        let sim = SimPmem::new(4096);
        sim.write(128, b"durable!");
        sim.persist(128, 8);
        sim.write(0, &[7u8; 64]);
        sim.write(1024, &[9u8; 24]);
        let all = images(&sim, 1 << 20, 0, 0);
        assert_eq!(all.len(), 9 * 4);
        for image in &all {
            assert_eq!(&image[128..136], b"durable!");
        }
        assert!(sim.check_persisted(128, 8).is_ok());
    }

    #[test]
    fn unflushed_store_is_missing_in_some_image() {
        let sim = SimPmem::new(4096);
        sim.write(256, &[0xAB; 16]);
        let all = images(&sim, 1 << 20, 0, 0);
        assert!(all.iter().any(|image| image[256..272] != [0xAB; 16]));
        assert!(all.iter().any(|image| image[256..272] == [0xAB; 16]));
        let report = sim.check_all_persisted().unwrap_err();
        assert_eq!(report.line_offsets, vec![256]);
        assert_eq!(report.store_count, 2);
    }

    #[test]
    fn flush_without_fence_is_not_durable() {
        let sim = SimPmem::new(4096);
        sim.write(0, &[1; 8]);
        sim.flush(0, 8);
        assert!(sim.check_all_persisted().is_err());
        assert!(sim.persisted_image()[..8].iter().all(|&b| b == 0));
        sim.fence();
        assert!(sim.check_all_persisted().is_ok());
        assert_eq!(&sim.persisted_image()[..8], &[1; 8]);
    }

    #[test]
    fn dirty_line_tears_only_as_8_byte_prefix() {
        let sim = SimPmem::new(4096);
        let line: Vec<u8> = (1..=64).collect();
        sim.write(64, &line);
        let all = images(&sim, 1 << 20, 0, 0);
        assert_eq!(all.len(), WORDS_PER_LINE + 1);
        for image in &all {
            let got = &image[64..128];
            let words_kept = got
                .chunks(8)
                .take_while(|w| w.iter().any(|&b| b != 0))
                .count();
            assert_eq!(
                &got[..words_kept * 8],
                &line[..words_kept * 8],
                "not a prefix"
            );
            assert!(
                got[words_kept * 8..].iter().all(|&b| b == 0),
                "torn inside a word"
            );
        }
    }

    #[test]
    fn image_count_matches_product_formula() {
        let sim = SimPmem::new(8192);
        sim.write(0, &[1; 24]); // 3 stores in line 0
        sim.write(64, &[2; 8]); // 1 store in line 1
        sim.write_u64(64, 5); // 2nd store in line 1
        sim.write(4096, &[3; 40]); // 5 stores in line 64
        sim.with_crash_point(|point| assert_eq!(point.image_count(), 4 * 3 * 6));
        let all = images(&sim, 1 << 20, 0, 0);
        assert_eq!(all.len(), 72);
        let distinct: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), 72);
    }

    #[test]
    fn stores_after_flush_stay_pending_after_fence() {
        let sim = SimPmem::new(4096);
        sim.write_u64(0, 1);
        sim.flush(0, 8);
        sim.write_u64(8, 2);
        sim.fence();
        assert_eq!(sim.persisted_image()[0], 1);
        assert_eq!(sim.persisted_image()[8], 0);
        let report = sim.check_all_persisted().unwrap_err();
        assert_eq!(report.store_count, 1);
    }

    #[test]
    fn nt_stores_need_only_a_fence() {
        let sim = SimPmem::new(4096);
        sim.write_nt(192, &[4; 128]);
        assert!(sim.check_all_persisted().is_err());
        sim.fence();
        assert!(sim.check_all_persisted().is_ok());
        assert_eq!(&sim.persisted_image()[192..320], &[4; 128][..]);
    }

    #[test]
    fn nt_store_behind_unflushed_store_waits_for_flush() {
        let sim = SimPmem::new(4096);
        sim.write_u64(0, 1);
        sim.write_nt(8, &[2; 8]);
        sim.fence();
        assert!(
            sim.check_all_persisted().is_err(),
            "line order keeps the nt store pending"
        );
        sim.persist(0, 64);
        assert!(sim.check_all_persisted().is_ok());
    }

    #[test]
    fn sampling_is_reproducible_and_respects_the_model() {
        let sim = SimPmem::new(1 << 16);
        for line in 0..40 {
            sim.write(line * 64, &[line as u8 + 1; 64]);
        }
        sim.with_crash_point(|point| assert!(point.image_count() > 1 << 20));
        let first = images(&sim, 1 << 10, 50, 42);
        let again = images(&sim, 1 << 10, 50, 42);
        let other = images(&sim, 1 << 10, 50, 43);
        assert_eq!(first.len(), 50);
        assert_eq!(first, again);
        assert_ne!(first, other);
        assert!(first[0].iter().all(|&b| b == 0));
        assert_eq!(first[1], sim.volatile_image());
        for image in &first {
            for line in 0..40 {
                let got = &image[line * 64..line * 64 + 64];
                let kept = got.chunks(8).take_while(|w| w[0] != 0).count();
                assert!(got[kept * 8..].iter().all(|&b| b == 0));
            }
        }
    }

    #[test]
    fn counters_count_redundant_flushes() {
        let sim = SimPmem::new(4096);
        sim.write(0, &[1; 16]);
        sim.flush(0, 128); // line 0 dirty, line 1 clean
        sim.flush(0, 64); // already flushed
        sim.fence();
        let counters = sim.counters();
        assert_eq!(counters.stores, 2);
        assert_eq!(counters.line_flushes, 3);
        assert_eq!(counters.redundant_line_flushes, 2);
        assert_eq!(counters.fences, 1);
    }

    #[test]
    fn fence_hook_sees_state_before_the_fence() {
        use std::sync::Arc;
        let sim = SimPmem::new(4096);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen_in_hook = Arc::clone(&seen);
        sim.set_fence_hook(Some(Box::new(move |point: &CrashPoint<'_>| {
            seen_in_hook
                .lock()
                .push((point.fence_index(), point.image_count()));
        })));
        sim.write(0, &[1; 16]);
        sim.persist(0, 16);
        sim.fence();
        assert_eq!(*seen.lock(), vec![(Some(0), 3), (Some(1), 1)]);
    }

    #[test]
    fn from_image_starts_clean() {
        let mut image = vec![0u8; 1024];
        image[100] = 42;
        let sim = SimPmem::from_image(image.clone());
        assert_eq!(sim.read(100, 1), &[42]);
        assert_eq!(sim.persisted_image(), image);
        assert!(sim.check_all_persisted().is_ok());
    }

    #[test]
    fn read_u64_round_trips_little_endian() {
        let sim = SimPmem::new(1024);
        sim.write_u64(16, 0x0102_0304_0506_0708);
        assert_eq!(sim.read_u64(16), 0x0102_0304_0506_0708);
        assert_eq!(sim.read(16, 8), &0x0102_0304_0506_0708u64.to_le_bytes());
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn out_of_range_access_panics() {
        let sim = SimPmem::new(1024);
        sim.write(1020, &[0; 8]);
    }
}

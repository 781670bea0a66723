//! Cache-line write-back, store fence and non-temporal copy: the instructions that make stores
//! to persistent memory durable.
//!
//! On x86-64 the flush instruction is picked at run time from CPUID: `clwb` (writes the line
//! back and may keep it cached), else `clflushopt` (writes back and evicts, weakly ordered),
//! else `clflush` (writes back and evicts, ordered against other stores, slowest). Elsewhere
//! there is no user-space cache flush and the mmap backend `msync`s instead
//! ([`FlushInstruction::Msync`]).
//!
//! For testing, the environment variable `FLUSH_ENV_VAR` (`PSTREAM_FLUSH`) forces one of
//! `clwb`, `clflushopt`, `clflush`; a choice the CPU cannot run is an error, never a silent
//! fallback.

use crate::CACHE_LINE_BYTES;

/// Environment variable that overrides the detected flush instruction.
pub const FLUSH_ENV_VAR: &str = "PSTREAM_FLUSH";

/// How cache lines are written back to the persistence domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlushInstruction {
    /// `clwb`: write back, line may stay cached. Weakly ordered; needs `sfence`.
    Clwb,
    /// `clflushopt`: write back and invalidate. Weakly ordered; needs `sfence`.
    Clflushopt,
    /// `clflush`: write back and invalidate, ordered with stores; slow.
    Clflush,
    /// No cache-flush instruction (non-x86 targets): `flush_range` does nothing and the
    /// mmap backend makes ranges durable with `msync`.
    Msync,
}

/// Why the `FLUSH_ENV_VAR` override cannot be honoured.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlushOverrideError {
    /// The value names no flush instruction.
    #[error("{FLUSH_ENV_VAR}={value:?} is not one of clwb, clflushopt, clflush")]
    Unknown { value: String },
    /// The value names an instruction this CPU does not have.
    #[error("{FLUSH_ENV_VAR}={value}: this CPU does not support {value}")]
    Unsupported { value: String },
}

impl FlushInstruction {
    /// The best flush instruction of this CPU (ignores `FLUSH_ENV_VAR`).
    pub fn detect() -> Self {
        if cpu::has_clwb() {
            FlushInstruction::Clwb
        } else if cpu::has_clflushopt() {
            FlushInstruction::Clflushopt
        } else if cpu::has_clflush() {
            FlushInstruction::Clflush
        } else {
            FlushInstruction::Msync
        }
    }

    /// The instruction to use: the `FLUSH_ENV_VAR` override if set, else [`Self::detect`].
    pub fn select() -> Result<Self, FlushOverrideError> {
        match std::env::var_os(FLUSH_ENV_VAR) {
            None => Ok(Self::detect()),
            Some(value) => Self::from_override(&value.to_string_lossy()),
        }
    }

    /// Parses an override value and checks that this CPU can run it.
    pub fn from_override(value: &str) -> Result<Self, FlushOverrideError> {
        let instruction = match value.trim() {
            "clwb" => FlushInstruction::Clwb,
            "clflushopt" => FlushInstruction::Clflushopt,
            "clflush" => FlushInstruction::Clflush,
            _ => {
                return Err(FlushOverrideError::Unknown {
                    value: value.to_owned(),
                })
            }
        };
        if !instruction.is_supported() {
            return Err(FlushOverrideError::Unsupported {
                value: value.trim().to_owned(),
            });
        }
        Ok(instruction)
    }

    /// Whether this CPU can run the instruction ([`FlushInstruction::Msync`] always can).
    pub fn is_supported(self) -> bool {
        match self {
            FlushInstruction::Clwb => cpu::has_clwb(),
            FlushInstruction::Clflushopt => cpu::has_clflushopt(),
            FlushInstruction::Clflush => cpu::has_clflush(),
            FlushInstruction::Msync => true,
        }
    }

    /// A short stable name for logs, CLI and JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            FlushInstruction::Clwb => "clwb",
            FlushInstruction::Clflushopt => "clflushopt",
            FlushInstruction::Clflush => "clflush",
            FlushInstruction::Msync => "msync",
        }
    }
}

impl std::fmt::Display for FlushInstruction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Starts the write-back of every cache line overlapping `[ptr, ptr + len)`. Does nothing
/// for `len == 0` and for [`FlushInstruction::Msync`].
///
/// # Safety
/// `[ptr, ptr + len)` must lie inside one live memory mapping or allocation, and
/// `instruction` must be supported by this CPU ([`FlushInstruction::is_supported`]).
#[inline]
pub unsafe fn flush_range(instruction: FlushInstruction, ptr: *const u8, len: usize) {
    if len == 0 {
        return;
    }
    debug_assert!(instruction.is_supported());
    let first_line = (ptr as usize) & !(CACHE_LINE_BYTES - 1);
    let end = (ptr as usize).checked_add(len);
    assert!(end.is_some(), "flush range wraps the address space");
    let end = end.unwrap_or(usize::MAX);
    match instruction {
        FlushInstruction::Clwb => {
            for line in (first_line..end).step_by(CACHE_LINE_BYTES) {
                // SAFETY: `line` is in a cache line that overlaps `[ptr, ptr + len)`, which the
                // caller guarantees is mapped; the caller guarantees the CPU has clwb.
                unsafe { x86::clwb(line as *const u8) };
            }
        }
        FlushInstruction::Clflushopt => {
            for line in (first_line..end).step_by(CACHE_LINE_BYTES) {
                // SAFETY: as for clwb above, with clflushopt.
                unsafe { x86::clflushopt(line as *const u8) };
            }
        }
        FlushInstruction::Clflush => {
            for line in (first_line..end).step_by(CACHE_LINE_BYTES) {
                // SAFETY: as for clwb above, with clflush.
                unsafe { x86::clflush(line as *const u8) };
            }
        }
        FlushInstruction::Msync => {}
    }
}

/// Store fence: every earlier flush and non-temporal store is complete when it returns.
/// Also a compiler barrier. On non-x86 targets a sequentially consistent fence.
#[inline]
pub fn sfence() {
    x86::sfence();
}

/// Copies `len` bytes from `src` to `dst` so that after the next [`sfence`] they are written
/// back: whole cache lines of `dst` with non-temporal stores (32-byte AVX stores when the CPU
/// has AVX, else 16-byte SSE2 stores), the partly covered first and last lines with ordinary
/// stores followed by `flush_range`. With [`FlushInstruction::Msync`] it is a plain copy
/// (the mmap backend `msync`s the range).
///
/// # Safety
/// `src` must be valid for reads and `dst` for writes of `len` bytes, the two ranges must not
/// overlap, `dst` must lie inside one live mapping or allocation, and `instruction` must be
/// supported by this CPU.
#[inline]
pub unsafe fn copy_nt(instruction: FlushInstruction, dst: *mut u8, src: *const u8, len: usize) {
    if len == 0 {
        return;
    }
    if instruction == FlushInstruction::Msync || !cfg!(target_arch = "x86_64") {
        // SAFETY: the caller guarantees both ranges are valid and disjoint.
        unsafe { core::ptr::copy_nonoverlapping(src, dst, len) };
        return;
    }
    let misalignment = (dst as usize) % CACHE_LINE_BYTES;
    let head_len = if misalignment == 0 {
        0
    } else {
        (CACHE_LINE_BYTES - misalignment).min(len)
    };
    let body_len = (len - head_len) / CACHE_LINE_BYTES * CACHE_LINE_BYTES;
    let tail_len = len - head_len - body_len;
    assert_eq!(head_len + body_len + tail_len, len);
    if head_len > 0 {
        // SAFETY: the head is the first `head_len <= len` bytes of both valid, disjoint ranges;
        // the caller guarantees `instruction` is supported.
        unsafe {
            core::ptr::copy_nonoverlapping(src, dst, head_len);
            flush_range(instruction, dst, head_len);
        }
    }
    if body_len > 0 {
        // SAFETY: `head_len + body_len <= len`, so the body lies inside both ranges, and
        // `dst + head_len` is cache-line aligned (so 16- and 32-byte aligned).
        unsafe { x86::stream_lines(dst.add(head_len), src.add(head_len), body_len) };
    }
    if tail_len > 0 {
        let offset = head_len + body_len;
        // SAFETY: the tail is the last `tail_len` bytes of both ranges.
        unsafe {
            core::ptr::copy_nonoverlapping(src.add(offset), dst.add(offset), tail_len);
            flush_range(instruction, dst.add(offset), tail_len);
        }
    }
}

/// CPU feature detection from CPUID (std's `is_x86_feature_detected!` does not know the
/// flush instructions).
#[cfg(target_arch = "x86_64")]
mod cpu {
    use std::sync::OnceLock;

    #[derive(Clone, Copy)]
    struct Features {
        clflush: bool,
        clflushopt: bool,
        clwb: bool,
    }

    fn features() -> Features {
        static FEATURES: OnceLock<Features> = OnceLock::new();
        *FEATURES.get_or_init(|| {
            // `__cpuid_count` is a safe function in newer Rust releases and unsafe in older
            // ones; the block keeps both compiling.
            #[allow(unused_unsafe)]
            // SAFETY: CPUID exists on every x86-64 CPU; leaves 0, 1 and 7 have no side effects.
            let (max_leaf, leaf1, leaf7) = unsafe {
                use core::arch::x86_64::__cpuid_count;
                let max_leaf = __cpuid_count(0, 0).eax;
                let leaf1 = __cpuid_count(1, 0);
                let leaf7 = if max_leaf >= 7 {
                    Some(__cpuid_count(7, 0))
                } else {
                    None
                };
                (max_leaf, leaf1, leaf7)
            };
            debug_assert!(max_leaf >= 1);
            Features {
                // CPUID.01H:EDX[19] CLFSH, CPUID.(EAX=07H,ECX=0):EBX[23] CLFLUSHOPT, EBX[24] CLWB.
                clflush: leaf1.edx & (1 << 19) != 0,
                clflushopt: leaf7.is_some_and(|leaf| leaf.ebx & (1 << 23) != 0),
                clwb: leaf7.is_some_and(|leaf| leaf.ebx & (1 << 24) != 0),
            }
        })
    }

    pub(super) fn has_clflush() -> bool {
        features().clflush
    }
    pub(super) fn has_clflushopt() -> bool {
        features().clflushopt
    }
    pub(super) fn has_clwb() -> bool {
        features().clwb
    }
    pub(super) fn has_avx() -> bool {
        std::arch::is_x86_feature_detected!("avx")
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod cpu {
    pub(super) fn has_clflush() -> bool {
        false
    }
    pub(super) fn has_clflushopt() -> bool {
        false
    }
    pub(super) fn has_clwb() -> bool {
        false
    }
}

/// The instructions themselves.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::asm;
    use core::arch::x86_64::{
        __m128i, __m256i, _mm256_loadu_si256, _mm256_stream_si256, _mm_clflush, _mm_loadu_si128,
        _mm_stream_si128,
    };

    /// # Safety
    /// `line` must point into mapped memory and the CPU must have clwb.
    #[inline(always)]
    pub(super) unsafe fn clwb(line: *const u8) {
        // SAFETY: the caller guarantees the address is mapped and clwb exists. No `nomem`:
        // the asm must stay ordered after the stores it writes back.
        unsafe { asm!("clwb [{0}]", in(reg) line, options(nostack, preserves_flags)) };
    }

    /// # Safety
    /// `line` must point into mapped memory and the CPU must have clflushopt.
    #[inline(always)]
    pub(super) unsafe fn clflushopt(line: *const u8) {
        // SAFETY: as for `clwb`.
        unsafe { asm!("clflushopt [{0}]", in(reg) line, options(nostack, preserves_flags)) };
    }

    /// # Safety
    /// `line` must point into mapped memory (clflush is baseline on x86-64).
    #[inline(always)]
    pub(super) unsafe fn clflush(line: *const u8) {
        // SAFETY: the caller guarantees the address is mapped; SSE2 is baseline on x86-64.
        unsafe { _mm_clflush(line) };
    }

    #[inline(always)]
    pub(super) fn sfence() {
        // SAFETY: sfence has no operands and is baseline on x86-64. No `nomem`: it is also a
        // compiler barrier, so no store moves across it.
        unsafe { asm!("sfence", options(nostack, preserves_flags)) };
    }

    /// Non-temporal copy of whole cache lines.
    ///
    /// # Safety
    /// `dst` must be 64-byte aligned and valid for `len` bytes of writes, `src` valid for `len`
    /// bytes of reads, the ranges disjoint, and `len` a multiple of 64.
    #[inline]
    pub(super) unsafe fn stream_lines(dst: *mut u8, src: *const u8, len: usize) {
        debug_assert_eq!(dst as usize % crate::CACHE_LINE_BYTES, 0);
        debug_assert_eq!(len % crate::CACHE_LINE_BYTES, 0);
        if super::cpu::has_avx() {
            // SAFETY: the CPU has AVX (checked just above); the caller's contract is passed on.
            unsafe { stream_lines_avx(dst, src, len) };
        } else {
            // SAFETY: SSE2 is baseline on x86-64; the caller's contract is passed on.
            unsafe { stream_lines_sse2(dst, src, len) };
        }
    }

    /// # Safety
    /// As [`stream_lines`].
    #[inline]
    unsafe fn stream_lines_sse2(dst: *mut u8, src: *const u8, len: usize) {
        const STEP_BYTES: usize = 16;
        let mut done_bytes = 0;
        while done_bytes < len {
            // SAFETY: `done_bytes + 16 <= len` because `len` is a multiple of 64; `dst` is
            // 64-byte aligned so `dst + done_bytes` is 16-byte aligned as the store requires;
            // the load is unaligned-tolerant.
            unsafe {
                let value = _mm_loadu_si128(src.add(done_bytes).cast::<__m128i>());
                _mm_stream_si128(dst.add(done_bytes).cast::<__m128i>(), value);
            }
            done_bytes += STEP_BYTES;
        }
    }

    /// # Safety
    /// As [`stream_lines`], and the CPU must have AVX.
    #[target_feature(enable = "avx")]
    unsafe fn stream_lines_avx(dst: *mut u8, src: *const u8, len: usize) {
        const STEP_BYTES: usize = 32;
        let mut done_bytes = 0;
        while done_bytes < len {
            // SAFETY: `done_bytes + 32 <= len` because `len` is a multiple of 64; `dst` is
            // 64-byte aligned so `dst + done_bytes` is 32-byte aligned as the store requires;
            // the load is unaligned-tolerant; the caller guarantees AVX.
            unsafe {
                let value = _mm256_loadu_si256(src.add(done_bytes).cast::<__m256i>());
                _mm256_stream_si256(dst.add(done_bytes).cast::<__m256i>(), value);
            }
            done_bytes += STEP_BYTES;
        }
    }
}

/// Portable stand-ins: no flush instruction exists, so [`FlushInstruction::detect`] returns
/// `Msync` and `flush_range`/`copy_nt` never reach these.
#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    pub(super) unsafe fn clwb(_line: *const u8) {
        unreachable!("clwb on a non-x86 target")
    }
    pub(super) unsafe fn clflushopt(_line: *const u8) {
        unreachable!("clflushopt on a non-x86 target")
    }
    pub(super) unsafe fn clflush(_line: *const u8) {
        unreachable!("clflush on a non-x86 target")
    }
    pub(super) fn sfence() {
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }
    pub(super) unsafe fn stream_lines(_dst: *mut u8, _src: *const u8, _len: usize) {
        unreachable!("non-temporal stores on a non-x86 target")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn supported() -> Vec<FlushInstruction> {
        [
            FlushInstruction::Clwb,
            FlushInstruction::Clflushopt,
            FlushInstruction::Clflush,
            FlushInstruction::Msync,
        ]
        .into_iter()
        .filter(|instruction| instruction.is_supported())
        .collect()
    }

    #[test]
    fn detect_picks_a_supported_instruction() {
        let detected = FlushInstruction::detect();
        assert!(detected.is_supported());
        if cfg!(target_arch = "x86_64") {
            assert_ne!(
                detected,
                FlushInstruction::Msync,
                "every x86-64 CPU has clflush"
            );
        }
    }

    #[test]
    fn override_values() {
        for instruction in supported() {
            if instruction != FlushInstruction::Msync {
                let parsed = FlushInstruction::from_override(instruction.as_str()).unwrap();
                assert_eq!(parsed, instruction);
            }
        }
        let error = FlushInstruction::from_override("clfoo").unwrap_err();
        assert_eq!(
            error,
            FlushOverrideError::Unknown {
                value: "clfoo".into()
            }
        );
        assert!(error.to_string().contains("PSTREAM_FLUSH"));
        assert!(FlushInstruction::from_override("msync").is_err());
        assert!(FlushInstruction::from_override("").is_err());
    }

    #[test]
    fn flush_every_alignment_with_every_instruction() {
        let buffer = vec![7u8; 4096];
        for instruction in supported() {
            for (start, len) in [(0, 0), (0, 1), (1, 63), (63, 2), (5, 1000), (0, 4096)] {
                // SAFETY: the range lies inside `buffer`; the instruction is supported.
                unsafe { flush_range(instruction, buffer.as_ptr().add(start), len) };
            }
            sfence();
        }
        assert!(buffer.iter().all(|&b| b == 7));
    }

    #[test]
    fn copy_nt_copies_every_shape() {
        let src: Vec<u8> = (0..3000u32).map(|i| (i * 7 + 3) as u8).collect();
        for instruction in supported() {
            for dst_offset in [0usize, 1, 8, 16, 31, 32, 63] {
                for len in [
                    0usize, 1, 15, 16, 63, 64, 65, 127, 128, 129, 200, 1000, 2048,
                ] {
                    for src_offset in [0usize, 3] {
                        let mut dst = vec![0xEEu8; 2400];
                        // Align the destination's reference point to a cache line.
                        let base = dst.as_ptr().align_offset(64);
                        let at = base + dst_offset;
                        // SAFETY: `at + len <= 63 + 63 + 2048 < 2400`; the ranges are in
                        // different vectors; the instruction is supported.
                        unsafe {
                            let dst_ptr = dst.as_mut_ptr().add(at);
                            copy_nt(instruction, dst_ptr, src.as_ptr().add(src_offset), len);
                        }
                        sfence();
                        assert_eq!(&dst[at..at + len], &src[src_offset..src_offset + len]);
                        assert!(dst[..at].iter().all(|&b| b == 0xEE));
                        assert!(dst[at + len..].iter().all(|&b| b == 0xEE));
                    }
                }
            }
        }
    }
}

//! The libpmemlog peer: PMDK's classic persistent-memory log (Debian package
//! libpmemlog-dev), through FFI. Built only with the `pmdk` feature, whose build script
//! links `-lpmemlog`.
//!
//! This module is the only one in the `pstream` package with unsafe code: the `sys`
//! declarations mirror `<libpmemlog.h>` (PMDK 1.12), and [`PmemLog`] is the safe wrapper the
//! benchmark uses. Every unsafe block has its `// SAFETY:` argument directly above it.
//!
//! libpmemlog is driven in its pmem mode: `PMEM_IS_PMEM_FORCE=1` is put in the process
//! environment before the first `pmemlog_create`, so libpmem treats the mapping as
//! persistent memory and persists with cache-line flushes and fences (as pstream's
//! emulated pool does) instead of `msync`. libpmemlog serializes appends with one lock
//! inside the pool; [`PmemLog`] is shared by every appending thread as is.

use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use super::peer::{unique_path, Baseline, PeerConfig, PeerError, PeerLog};

/// The C interface of libpmemlog 1.12 (`<libpmemlog.h>`), as far as the benchmark needs it.
pub mod sys {
    use std::ffi::{c_char, c_int, c_longlong, c_uint, c_void};

    /// `PMEMlogpool`: opaque, owned by the library.
    #[repr(C)]
    pub struct PmemLogPool {
        _opaque: [u8; 0],
    }

    /// `PMEMLOG_MIN_POOL`: the smallest pool libpmemlog creates.
    pub const PMEMLOG_MIN_POOL: usize = 2 << 20;
    /// `PMEMLOG_MAJOR_VERSION` / `PMEMLOG_MINOR_VERSION` of the header this mirrors.
    pub const PMEMLOG_MAJOR_VERSION: c_uint = 1;
    pub const PMEMLOG_MINOR_VERSION: c_uint = 1;

    /// The callback of `pmemlog_walk`: return 0 to stop, 1 to go on.
    pub type ProcessChunk =
        unsafe extern "C" fn(buf: *const c_void, len: usize, arg: *mut c_void) -> c_int;

    extern "C" {
        pub fn pmemlog_check_version(
            major_required: c_uint,
            minor_required: c_uint,
        ) -> *const c_char;
        pub fn pmemlog_create(
            path: *const c_char,
            poolsize: usize,
            mode: libc::mode_t,
        ) -> *mut PmemLogPool;
        pub fn pmemlog_open(path: *const c_char) -> *mut PmemLogPool;
        pub fn pmemlog_close(plp: *mut PmemLogPool);
        pub fn pmemlog_nbyte(plp: *mut PmemLogPool) -> usize;
        pub fn pmemlog_append(plp: *mut PmemLogPool, buf: *const c_void, count: usize) -> c_int;
        pub fn pmemlog_appendv(
            plp: *mut PmemLogPool,
            iov: *const libc::iovec,
            iovcnt: c_int,
        ) -> c_int;
        pub fn pmemlog_tell(plp: *mut PmemLogPool) -> c_longlong;
        pub fn pmemlog_rewind(plp: *mut PmemLogPool);
        pub fn pmemlog_walk(
            plp: *mut PmemLogPool,
            chunksize: usize,
            process_chunk: Option<ProcessChunk>,
            arg: *mut c_void,
        );
        pub fn pmemlog_errormsg() -> *const c_char;
    }
}

/// The environment variable that makes libpmem treat any mapping as persistent memory.
pub const PMEM_IS_PMEM_FORCE: &str = "PMEM_IS_PMEM_FORCE";
/// Chunk size of the pre-faulting pass (one `pmemlog_append` each).
const PREFAULT_CHUNK_BYTES: usize = 1 << 20;
/// Largest `iovcnt` passed to one `pmemlog_appendv`.
const IOVEC_COUNT_MAX: usize = 1024;

/// An open libpmemlog pool. Closed (and its file removed) on drop.
#[derive(Debug)]
pub struct PmemLog {
    pool: NonNull<sys::PmemLogPool>,
    path: PathBuf,
    rewinds: AtomicU64,
    force: String,
    remove_on_drop: bool,
}

#[expect(unsafe_code, reason = "FFI handle of a thread-safe C library")]
// SAFETY: a `PMEMlogpool` handle is not tied to the thread that opened it; libpmemlog keeps
// no thread-local state about it.
unsafe impl Send for PmemLog {}
#[expect(unsafe_code, reason = "FFI handle of a thread-safe C library")]
// SAFETY: libpmemlog is thread-safe: append, appendv, tell, rewind and walk take the pool's
// internal rwlock (pmemlog(7)); only close must not race, and it needs `&mut`/ownership.
unsafe impl Sync for PmemLog {}

/// `pmemlog_errormsg()` as an owned string.
#[expect(unsafe_code, reason = "FFI call")]
fn last_error_message() -> String {
    // SAFETY: pmemlog_errormsg takes no arguments and returns a pointer to a thread-local,
    // NUL-terminated buffer (or NULL), valid until the next libpmemlog call on this thread;
    // it is copied out at once.
    let message = unsafe { sys::pmemlog_errormsg() };
    if message.is_null() {
        return String::from("(no message)");
    }
    // SAFETY: `message` is non-null and NUL-terminated (see above).
    let text = unsafe { CStr::from_ptr(message) };
    text.to_string_lossy().into_owned()
}

fn c_path(path: &Path) -> Result<CString, PeerError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| PeerError::Unsupported {
        baseline: Baseline::Pmemlog,
        reason: format!("path {} contains a NUL byte", path.display()),
    })
}

/// Puts `PMEM_IS_PMEM_FORCE=1` in the environment unless the user set it; returns its value.
fn force_pmem_mode() -> String {
    match std::env::var(PMEM_IS_PMEM_FORCE) {
        Ok(value) => value,
        Err(_) => {
            // Set before the first pmemlog_create, which is when libpmem reads it. The
            // benchmark does this before it starts any appending thread.
            std::env::set_var(PMEM_IS_PMEM_FORCE, "1");
            String::from("1")
        }
    }
}

impl PmemLog {
    /// Checks that the loaded libpmemlog speaks the 1.1 interface this module mirrors.
    #[expect(unsafe_code, reason = "FFI call")]
    pub fn check_version() -> Result<(), PeerError> {
        // SAFETY: plain integers in; the result is NULL or a static NUL-terminated message.
        let mismatch = unsafe {
            sys::pmemlog_check_version(sys::PMEMLOG_MAJOR_VERSION, sys::PMEMLOG_MINOR_VERSION)
        };
        if mismatch.is_null() {
            Ok(())
        } else {
            Err(PeerError::Pmdk {
                op: "pmemlog_check_version",
                message: last_error_message(),
            })
        }
    }

    /// Creates a fresh pool of `config.space_bytes` in `config.dir`, in pmem mode, and
    /// pre-faults it (fills it once, then rewinds), as pstream's pool is pre-faulted.
    pub fn create(config: &PeerConfig) -> Result<PmemLog, PeerError> {
        Self::check_version()?;
        let force = force_pmem_mode();
        let path = unique_path(&config.dir, Baseline::Pmemlog, ".pool");
        let log = Self::create_at(&path, config.space_bytes.max(sys::PMEMLOG_MIN_POOL), force)?;
        log.prefault()?;
        Ok(log)
    }

    #[expect(unsafe_code, reason = "FFI call")]
    fn create_at(path: &Path, pool_bytes: usize, force: String) -> Result<PmemLog, PeerError> {
        let c_path = c_path(path)?;
        // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call; the size
        // and mode are plain integers. The result is NULL or a pool handle we now own.
        let pool = unsafe { sys::pmemlog_create(c_path.as_ptr(), pool_bytes, 0o644) };
        let Some(pool) = NonNull::new(pool) else {
            return Err(PeerError::Pmdk {
                op: "pmemlog_create",
                message: format!("{}: {}", path.display(), last_error_message()),
            });
        };
        Ok(PmemLog {
            pool,
            path: path.to_path_buf(),
            rewinds: AtomicU64::new(0),
            force,
            remove_on_drop: true,
        })
    }

    /// Opens an existing pool (it is not removed on drop).
    #[expect(unsafe_code, reason = "FFI call")]
    pub fn open(path: &Path) -> Result<PmemLog, PeerError> {
        let force = force_pmem_mode();
        let c_path = c_path(path)?;
        // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call. The
        // result is NULL or a pool handle we now own.
        let pool = unsafe { sys::pmemlog_open(c_path.as_ptr()) };
        let Some(pool) = NonNull::new(pool) else {
            return Err(PeerError::Pmdk {
                op: "pmemlog_open",
                message: format!("{}: {}", path.display(), last_error_message()),
            });
        };
        Ok(PmemLog {
            pool,
            path: path.to_path_buf(),
            rewinds: AtomicU64::new(0),
            force,
            remove_on_drop: false,
        })
    }

    /// The pool file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Usable bytes of the log (`pmemlog_nbyte`).
    #[expect(unsafe_code, reason = "FFI call")]
    pub fn capacity_bytes(&self) -> usize {
        // SAFETY: `pool` is a live handle owned by `self`; nbyte only reads the pool header.
        unsafe { sys::pmemlog_nbyte(self.pool.as_ptr()) }
    }

    /// Bytes appended since the last rewind (`pmemlog_tell`).
    #[expect(unsafe_code, reason = "FFI call")]
    pub fn tell_bytes(&self) -> u64 {
        // SAFETY: `pool` is a live handle owned by `self`; tell takes the pool's read lock.
        let offset = unsafe { sys::pmemlog_tell(self.pool.as_ptr()) };
        u64::try_from(offset).unwrap_or(0)
    }

    /// Empties the log (`pmemlog_rewind`).
    #[expect(unsafe_code, reason = "FFI call")]
    pub fn rewind(&self) {
        // SAFETY: `pool` is a live handle owned by `self`; rewind takes the pool's write lock.
        unsafe { sys::pmemlog_rewind(self.pool.as_ptr()) };
        self.rewinds.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends `data` durably; `Ok(false)` if the log is full.
    #[expect(unsafe_code, reason = "FFI call")]
    fn try_append(&self, data: &[u8]) -> Result<bool, PeerError> {
        // SAFETY: `pool` is a live handle; `data` is a valid readable range of `data.len()`
        // bytes for the duration of the call (libpmemlog copies it and keeps no pointer).
        let rc =
            unsafe { sys::pmemlog_append(self.pool.as_ptr(), data.as_ptr().cast(), data.len()) };
        self.outcome("pmemlog_append", rc)
    }

    /// Appends every slice of `iovecs` durably with one persist; `Ok(false)` if full.
    #[expect(unsafe_code, reason = "FFI call")]
    fn try_appendv(&self, iovecs: &[libc::iovec]) -> Result<bool, PeerError> {
        debug_assert!(iovecs.len() <= IOVEC_COUNT_MAX);
        let count = iovecs.len() as std::ffi::c_int;
        // SAFETY: `pool` is a live handle; `iovecs` holds `count` valid iovecs whose buffers
        // are borrowed slices of the caller's payloads, alive for the duration of the call
        // (libpmemlog copies them and keeps no pointer).
        let rc = unsafe { sys::pmemlog_appendv(self.pool.as_ptr(), iovecs.as_ptr(), count) };
        self.outcome("pmemlog_appendv", rc)
    }

    fn outcome(&self, op: &'static str, rc: std::ffi::c_int) -> Result<bool, PeerError> {
        if rc == 0 {
            return Ok(true);
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::ENOSPC) {
            return Ok(false);
        }
        Err(PeerError::Pmdk {
            op,
            message: format!("{error}: {}", last_error_message()),
        })
    }

    /// Appends, rewinding once if the log is full.
    fn append_or_rewind(
        &self,
        append: impl Fn() -> Result<bool, PeerError>,
    ) -> Result<(), PeerError> {
        if append()? {
            return Ok(());
        }
        self.rewind();
        if append()? {
            return Ok(());
        }
        Err(PeerError::Unsupported {
            baseline: Baseline::Pmemlog,
            reason: format!(
                "an append does not fit an empty log of {} bytes",
                self.capacity_bytes()
            ),
        })
    }

    /// Touches every page of the pool once (fills the log, then rewinds).
    fn prefault(&self) -> Result<(), PeerError> {
        let chunk = vec![0u8; PREFAULT_CHUNK_BYTES];
        let chunks = self.capacity_bytes() / PREFAULT_CHUNK_BYTES + 1;
        for _ in 0..chunks {
            if !self.try_append(&chunk)? {
                break;
            }
        }
        self.rewind();
        self.rewinds.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Calls `f` with the log's content, in chunks of at most `chunk_bytes` (0: all at once).
    #[expect(unsafe_code, reason = "FFI call with a callback")]
    pub fn walk(&self, chunk_bytes: usize, f: &mut dyn FnMut(&[u8]) -> bool) {
        unsafe extern "C" fn trampoline(
            buf: *const std::ffi::c_void,
            len: usize,
            arg: *mut std::ffi::c_void,
        ) -> std::ffi::c_int {
            // SAFETY: `arg` is the `&mut &mut dyn FnMut` passed to pmemlog_walk below, alive
            // and not otherwise borrowed for the duration of the walk.
            let f = unsafe { &mut *arg.cast::<&mut dyn FnMut(&[u8]) -> bool>() };
            let chunk = if len == 0 {
                &[][..]
            } else {
                // SAFETY: libpmemlog passes `len` readable bytes at `buf`, valid during the
                // callback (it holds the pool's read lock).
                unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) }
            };
            std::ffi::c_int::from(f(chunk))
        }
        let mut f = f;
        let arg: *mut &mut dyn FnMut(&[u8]) -> bool = &mut f;
        // SAFETY: `pool` is a live handle; the callback only dereferences `arg`, which points
        // to `f` on this stack frame for the whole (synchronous) walk.
        unsafe {
            sys::pmemlog_walk(
                self.pool.as_ptr(),
                chunk_bytes,
                Some(trampoline),
                arg.cast(),
            );
        }
    }
}

thread_local! {
    /// iovecs of one `appendv`, reused across calls.
    static IOVECS: std::cell::RefCell<Vec<libc::iovec>> = const {
        std::cell::RefCell::new(Vec::new())
    };
}

impl PeerLog for PmemLog {
    fn append(&self, payload: &[u8]) -> Result<(), PeerError> {
        self.append_or_rewind(|| self.try_append(payload))
    }

    fn append_batch(&self, payloads: &[&[u8]]) -> Result<(), PeerError> {
        for group in payloads.chunks(IOVEC_COUNT_MAX) {
            IOVECS.with(|iovecs| {
                let mut iovecs = iovecs.borrow_mut();
                iovecs.clear();
                iovecs.extend(group.iter().map(|payload| libc::iovec {
                    iov_base: payload.as_ptr().cast_mut().cast(),
                    iov_len: payload.len(),
                }));
                self.append_or_rewind(|| self.try_appendv(&iovecs))
            })?;
        }
        Ok(())
    }

    fn mode(&self) -> String {
        let mode = if self.force == "1" {
            "pmem"
        } else {
            "libpmem's own"
        };
        format!(
            "pmemlog_append/appendv in {mode} mode ({PMEM_IS_PMEM_FORCE}={})",
            self.force
        )
    }

    fn recycles(&self) -> u64 {
        self.rewinds.load(Ordering::Relaxed)
    }

    fn remove(self: Box<Self>) -> Result<(), PeerError> {
        let path = self.path.clone();
        let remove = self.remove_on_drop;
        let mut this = *self;
        this.remove_on_drop = false;
        drop(this);
        if !remove {
            return Ok(());
        }
        std::fs::remove_file(&path).map_err(|source| PeerError::Io {
            baseline: Baseline::Pmemlog,
            op: "remove",
            path,
            source,
        })
    }
}

impl Drop for PmemLog {
    #[expect(unsafe_code, reason = "FFI call")]
    fn drop(&mut self) {
        // SAFETY: `pool` is the live handle this value owns; nothing uses it after close
        // (drop has exclusive access, so no other thread is inside a libpmemlog call on it).
        unsafe { sys::pmemlog_close(self.pool.as_ptr()) };
        if self.remove_on_drop {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn config(dir: &Path) -> PeerConfig {
        PeerConfig {
            dir: dir.to_path_buf(),
            space_bytes: 4 << 20,
        }
    }

    #[test]
    fn appends_are_walked_back_in_order_and_reopen_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = PmemLog::create(&config(dir.path())).unwrap();
        assert_eq!(log.tell_bytes(), 0);
        log.append(b"abc").unwrap();
        log.append_batch(&[b"de", b"f"]).unwrap();
        assert_eq!(log.tell_bytes(), 6);
        let mut seen = Vec::new();
        log.walk(0, &mut |chunk| {
            seen.extend_from_slice(chunk);
            true
        });
        assert_eq!(seen, b"abcdef");
        // Keep the file past this handle's close, then reopen it.
        log.remove_on_drop = false;
        let path = log.path().to_path_buf();
        drop(log);
        let reopened = PmemLog::open(&path).unwrap();
        assert_eq!(reopened.tell_bytes(), 6);
        drop(reopened);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_full_log_rewinds_and_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let log = PmemLog::create(&config(dir.path())).unwrap();
        let chunk = vec![1u8; 512 << 10];
        let appends = log.capacity_bytes() / chunk.len() + 2;
        for _ in 0..appends {
            log.append(&chunk).unwrap();
        }
        assert_eq!(log.recycles(), 1);
        let huge = vec![0u8; log.capacity_bytes() + 1];
        assert!(matches!(
            log.append(&huge),
            Err(PeerError::Unsupported { .. })
        ));
        Box::new(log).remove().unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}

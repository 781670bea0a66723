//! [`MmapPool`]: a pool file mapped into memory, the real-hardware backend of [`Pmem`].
//!
//! The file is one header page ([`crate::pool_header`]) and the data region. The mapping
//! covers the whole file; [`Pmem`] offsets start after the header.
//!
//! Mapping strategy: first `mmap(MAP_SHARED_VALIDATE | MAP_SYNC)`, which only a DAX file
//! system accepts; there cache-line flush + fence reaches the persistence domain. Anywhere
//! else the kernel answers `EOPNOTSUPP` (or `EINVAL` on old kernels) and the pool falls back to
//! an ordinary shared mapping (memmap2). That pool is *emulated*: flush + fence survives a
//! process crash, and only with [`Durability::Power`] (an `msync` per flush) a power loss.
//!
//! One open per pool: an advisory `flock(LOCK_EX | LOCK_NB)` on the file makes a second open,
//! through another descriptor in this process or from another process, fail with
//! [`PmemError::AlreadyOpen`].

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::flush::{self, FlushInstruction};
use crate::pool_header::{check_data_len, PoolHeader, POOL_HEADER_BYTES};
use crate::{check_range, Guarantee, Pmem, PmemError, ATOMIC_STORE_BYTES};

/// What an emulated pool's flush + fence must survive. Ignored on a real DAX mapping, where
/// flush + fence is power-fail durable anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Durability {
    /// Flush + fence only. Survives a process crash (the page cache outlives the process),
    /// not a power loss or kernel crash. Fast.
    #[default]
    Process,
    /// Additionally `msync(MS_SYNC)` the pages of every flushed range. Survives power loss;
    /// costs a system call and a device write per flush.
    Power,
}

impl Durability {
    /// A short stable name for CLI and JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Process => "process",
            Durability::Power => "power",
        }
    }
}

/// How to create or open a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOptions {
    /// What an emulated pool's flush + fence must survive.
    pub durability: Durability,
    /// Try a `MAP_SYNC` (DAX) mapping first. `false` always maps the file as emulated.
    pub try_dax: bool,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            durability: Durability::Process,
            try_dax: true,
        }
    }
}

/// A pool file mapped into memory.
///
/// Writes go through `&self` (the [`Pmem`] contract lets concurrent callers write disjoint
/// ranges), so the mapping is held as a raw base pointer rather than a `&mut [u8]`.
#[derive(Debug)]
pub struct MmapPool {
    /// Start of the mapping (the header page); the data region starts
    /// [`POOL_HEADER_BYTES`] later.
    base: NonNull<u8>,
    /// Bytes of the data region.
    data_len_bytes: usize,
    /// `Some` until `close` takes it; dropping it unmaps.
    mapping: Option<Mapping>,
    /// The open pool file with its `flock`. Declared after `mapping`, so a dropped pool
    /// unmaps before it unlocks.
    file: LockedFile,
    path: PathBuf,
    instruction: FlushInstruction,
    durability: Durability,
    /// Whether flush must also `msync` (see [`MmapPool::needs_msync`]).
    msync_on_flush: bool,
    page_size_bytes: usize,
}

// SAFETY: `MmapPool` owns its mapping; the raw pointer is only a handle to it and stays valid
// until drop. Moving the pool to another thread moves that ownership.
unsafe impl Send for MmapPool {}
// SAFETY: shared access only reads through the mapping, writes ranges the `Pmem` contract
// makes disjoint between threads, or uses atomics for 8-byte words; no `&self` method hands
// out a mutable reference.
unsafe impl Sync for MmapPool {}

/// The two kinds of mapping, so that each is unmapped the way it was mapped.
#[derive(Debug)]
enum Mapping {
    /// A `libc::mmap` with `MAP_SYNC`.
    Dax(DaxMap),
    /// An ordinary shared mapping; `base` was taken from it with `as_mut_ptr`.
    Emulated {
        map: memmap2::MmapMut,
        base: NonNull<u8>,
    },
}

/// A `MAP_SYNC` mapping, unmapped on drop.
#[derive(Debug)]
struct DaxMap {
    base: NonNull<u8>,
    len_bytes: usize,
}

impl Mapping {
    fn base(&self) -> NonNull<u8> {
        match self {
            Mapping::Dax(dax) => dax.base,
            Mapping::Emulated { base, .. } => *base,
        }
    }

    fn is_dax(&self) -> bool {
        matches!(self, Mapping::Dax(_))
    }

    /// `msync(MS_SYNC)` of `[offset, offset + len)` of the mapping, widened to whole pages.
    fn sync_range(&self, offset: usize, len: usize, page_size_bytes: usize) -> io::Result<()> {
        assert!(page_size_bytes.is_power_of_two());
        match self {
            Mapping::Dax(dax) => {
                check_range(offset, len, dax.len_bytes);
                let start = offset & !(page_size_bytes - 1);
                let end = (offset + len)
                    .next_multiple_of(page_size_bytes)
                    .min(dax.len_bytes);
                // SAFETY: `start` is page aligned and `[start, end)` lies inside the mapping,
                // which stays mapped while `self` lives.
                let rc = unsafe {
                    libc::msync(
                        dax.base.as_ptr().add(start).cast(),
                        end - start,
                        libc::MS_SYNC,
                    )
                };
                if rc == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            }
            // memmap2 widens the range to page boundaries itself.
            Mapping::Emulated { map, .. } => map.flush_range(offset, len),
        }
    }

    /// Unmaps, reporting the error that `Drop` would have to swallow.
    fn unmap(self) -> io::Result<()> {
        match self {
            Mapping::Dax(dax) => dax.unmap(),
            Mapping::Emulated { map, .. } => {
                // memmap2 ignores munmap errors; an unmap of a valid mapping cannot fail.
                drop(map);
                Ok(())
            }
        }
    }
}

impl DaxMap {
    fn unmap(self) -> io::Result<()> {
        // Keep `Drop` from unmapping a second time.
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `base`/`len_bytes` are exactly what `mmap` returned, and nothing uses the
        // mapping after this (the pool gave up the `Mapping`).
        let rc = unsafe { libc::munmap(this.base.as_ptr().cast(), this.len_bytes) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl Drop for DaxMap {
    fn drop(&mut self) {
        // SAFETY: `base`/`len_bytes` are exactly what `mmap` returned; after drop nothing
        // uses the mapping.
        let rc = unsafe { libc::munmap(self.base.as_ptr().cast(), self.len_bytes) };
        if rc != 0 {
            tracing::warn!(error = %io::Error::last_os_error(), "munmap of DAX pool failed");
        }
    }
}

impl MmapPool {
    /// Creates a new pool file with a data region of `data_len_bytes` and opens it.
    ///
    /// Fails if the file exists. `data_len_bytes` must be a positive multiple of the page
    /// size. The header and length are made durable (file and parent directory `fsync`ed)
    /// before this returns; if any step fails the half-made file is removed.
    pub fn create(
        path: impl AsRef<Path>,
        data_len_bytes: usize,
        opts: PoolOptions,
    ) -> Result<Self, PmemError> {
        let path = path.as_ref();
        let page_size_bytes = page_size_bytes();
        check_data_len(path, data_len_bytes as u64, page_size_bytes as u64)?;
        let page_size_u32 = u32::try_from(page_size_bytes).unwrap_or(u32::MAX);
        let header = PoolHeader::new(data_len_bytes as u64, page_size_u32);
        let flush_instruction = select_flush(path)?;

        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(path)
            .map_err(|error| PmemError::from_io(path, "create", error))?;
        // From here on a failure must not leave a half-made pool behind.
        let made =
            lock(file, path).and_then(|file| write_new_pool(&file, path, &header).map(|()| file));
        let file = match made {
            Ok(file) => file,
            Err(error) => {
                // If somebody else locked the file meanwhile, it is theirs now: leave it.
                let ours = !matches!(error, PmemError::AlreadyOpen { .. });
                if ours {
                    if let Err(remove_error) = std::fs::remove_file(path) {
                        tracing::warn!(path = %path.display(), %remove_error, "cannot remove pool");
                    }
                }
                return Err(error);
            }
        };
        tracing::info!(path = %path.display(), data_len_bytes, "created pool");
        Self::map(file, path, header, flush_instruction, opts)
    }

    /// Opens an existing pool file created by [`MmapPool::create`].
    ///
    /// Checks that the path is a regular file opened for reading and writing, that no other
    /// open holds the pool, that the header is intact and of a known version, and that the file
    /// length is exactly what the header records.
    pub fn open(path: impl AsRef<Path>, opts: PoolOptions) -> Result<Self, PmemError> {
        let path = path.as_ref();
        let metadata =
            std::fs::metadata(path).map_err(|error| PmemError::from_io(path, "stat", error))?;
        if !metadata.is_file() {
            let kind = file_kind(&metadata.file_type());
            return Err(PmemError::NotRegularFile {
                path: path.to_path_buf(),
                kind,
            });
        }
        let flush_instruction = select_flush(path)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|error| PmemError::from_io(path, "open", error))?;
        let file = lock(file, path)?;
        // Measure the file through the descriptor: the path could have been replaced since the
        // `stat` above.
        let file_len_bytes = file
            .metadata()
            .map_err(|error| PmemError::from_io(path, "fstat", error))?
            .len();
        let header = read_header(&file, path, file_len_bytes)?;
        if file_len_bytes != header.file_len_bytes() {
            return Err(PmemError::Truncated {
                path: path.to_path_buf(),
                expected_file_bytes: header.file_len_bytes(),
                actual_file_bytes: file_len_bytes,
            });
        }
        Self::map(file, path, header, flush_instruction, opts)
    }

    /// Makes every byte of the pool durable (`msync`), releases the lock and unmaps, reporting
    /// any failure. Dropping the pool instead unmaps and unlocks without the `msync`.
    pub fn close(mut self) -> Result<(), PmemError> {
        let path = self.path.clone();
        let Some(mapping) = self.mapping.take() else {
            return Ok(());
        };
        let map_len_bytes = POOL_HEADER_BYTES + self.data_len_bytes;
        let synced = mapping.sync_range(0, map_len_bytes, self.page_size_bytes);
        let unmapped = mapping.unmap();
        synced.map_err(|error| PmemError::from_io(&path, "msync", error))?;
        unmapped.map_err(|error| PmemError::from_io(&path, "munmap", error))?;
        self.file
            .unlock()
            .map_err(|error| PmemError::from_io(&path, "flock(LOCK_UN)", error))?;
        tracing::debug!(path = %path.display(), "closed pool");
        Ok(())
    }

    /// The pool file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the pool is a real DAX mapping (`MAP_SYNC`).
    pub fn is_dax(&self) -> bool {
        self.mapping.as_ref().is_some_and(Mapping::is_dax)
    }

    /// The instruction [`Pmem::flush`] uses.
    pub fn flush_instruction(&self) -> FlushInstruction {
        self.instruction
    }

    /// The durability the pool was opened with.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Maps a locked, validated pool file.
    fn map(
        file: LockedFile,
        path: &Path,
        header: PoolHeader,
        instruction: FlushInstruction,
        opts: PoolOptions,
    ) -> Result<Self, PmemError> {
        let file_len_bytes = header.file_len_bytes();
        let too_large = || PmemError::TooLarge {
            path: path.to_path_buf(),
            data_len_bytes: header.data_len_bytes,
            max_bytes: isize::MAX as u64 - POOL_HEADER_BYTES as u64,
        };
        let map_len_bytes = usize::try_from(file_len_bytes).map_err(|_| too_large())?;
        if map_len_bytes > isize::MAX as usize {
            return Err(too_large());
        }
        let data_len_bytes = map_len_bytes - POOL_HEADER_BYTES;
        let mapping = if opts.try_dax {
            map_dax(&file, path, map_len_bytes)?
        } else {
            None
        };
        let mapping = match mapping {
            Some(mapping) => mapping,
            None => map_emulated(&file, path, map_len_bytes)?,
        };
        let dax = mapping.is_dax();
        let msync_on_flush = Self::needs_msync(dax, opts.durability, instruction);
        tracing::info!(
            path = %path.display(),
            dax,
            flush = instruction.as_str(),
            durability = opts.durability.as_str(),
            msync_on_flush,
            "mapped pool"
        );
        let pool = MmapPool {
            base: mapping.base(),
            data_len_bytes,
            mapping: Some(mapping),
            file,
            path: path.to_path_buf(),
            instruction,
            durability: opts.durability,
            msync_on_flush,
            page_size_bytes: page_size_bytes(),
        };
        // Paired assertion: the mapped header is the one we validated.
        debug_assert_eq!(
            PoolHeader::decode(pool.header_bytes())
                .ok()
                .map(|h| h.data_len_bytes),
            Some(header.data_len_bytes)
        );
        Ok(pool)
    }

    /// Whether `flush` must `msync` besides the cache-line write-back:
    /// * emulated pool, [`Durability::Power`]: the page cache must reach the device;
    /// * DAX pool without a flush instruction (non-x86): `msync` is the only write-back.
    ///
    /// An emulated pool with [`Durability::Process`] needs neither: the page cache already
    /// holds every store.
    fn needs_msync(dax: bool, durability: Durability, instruction: FlushInstruction) -> bool {
        if dax {
            instruction == FlushInstruction::Msync
        } else {
            durability == Durability::Power
        }
    }

    /// The header page as mapped.
    fn header_bytes(&self) -> &[u8] {
        // SAFETY: the mapping starts with the header page and lives as long as `self`; the
        // header is never written after `create`.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr(), POOL_HEADER_BYTES) }
    }

    /// Address of data-region byte `offset`. The caller has bounds-checked the access.
    #[inline]
    fn data_ptr(&self, offset: usize) -> *mut u8 {
        debug_assert!(offset <= self.data_len_bytes);
        // SAFETY: `POOL_HEADER_BYTES + offset <= POOL_HEADER_BYTES + data_len_bytes`, the
        // mapping's length, so the result stays inside (or one past) the mapping.
        unsafe { self.base.as_ptr().add(POOL_HEADER_BYTES + offset) }
    }

    /// `msync` for [`Durability::Power`]. A failure means the data is not durable and the
    /// caller is about to acknowledge it, which must not happen: so it panics.
    fn sync_data_range(&self, offset: usize, len: usize) {
        if len == 0 {
            return;
        }
        let Some(mapping) = self.mapping.as_ref() else {
            unreachable!("pool used after close");
        };
        let result = mapping.sync_range(POOL_HEADER_BYTES + offset, len, self.page_size_bytes);
        if let Err(error) = result {
            // IMPORTANT: never return from a flush whose data did not reach the device.
            panic!(
                "pool {}: msync failed, data is not durable: {error}",
                self.path.display()
            );
        }
    }
}

impl Pmem for MmapPool {
    #[inline]
    fn len_bytes(&self) -> usize {
        self.data_len_bytes
    }

    #[inline]
    fn read(&self, offset: usize, len: usize) -> &[u8] {
        check_range(offset, len, self.data_len_bytes);
        // SAFETY: the range is inside the data region, mapped for the lifetime of `self`; the
        // `Pmem` contract forbids writing a range while it is borrowed for reading.
        unsafe { std::slice::from_raw_parts(self.data_ptr(offset), len) }
    }

    #[inline]
    fn read_u64(&self, offset: usize) -> u64 {
        check_range(offset, ATOMIC_STORE_BYTES, self.data_len_bytes);
        assert_eq!(
            offset % ATOMIC_STORE_BYTES,
            0,
            "read_u64 at unaligned offset {offset}"
        );
        // SAFETY: the word is inside the mapping and 8-byte aligned (the mapping is page
        // aligned and the header a whole number of pages); all concurrent accesses to it are
        // atomic by the `Pmem` contract.
        let word = unsafe { AtomicU64::from_ptr(self.data_ptr(offset).cast::<u64>()) };
        u64::from_le(word.load(Ordering::Acquire))
    }

    #[inline]
    fn write(&self, offset: usize, data: &[u8]) {
        check_range(offset, data.len(), self.data_len_bytes);
        let dst = self.data_ptr(offset);
        debug_assert!(
            data.as_ptr_range().end <= dst.cast_const()
                || dst.wrapping_add(data.len()).cast_const() <= data.as_ptr(),
            "write source overlaps its destination"
        );
        // SAFETY: the destination is inside the mapping; the `Pmem` contract makes it disjoint
        // from every range other threads access and from `data`.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
    }

    #[inline]
    fn write_u64(&self, offset: usize, value: u64) {
        check_range(offset, ATOMIC_STORE_BYTES, self.data_len_bytes);
        assert_eq!(
            offset % ATOMIC_STORE_BYTES,
            0,
            "write_u64 at unaligned offset {offset}"
        );
        // SAFETY: as in `read_u64`.
        let word = unsafe { AtomicU64::from_ptr(self.data_ptr(offset).cast::<u64>()) };
        word.store(value.to_le(), Ordering::Release);
    }

    #[inline]
    fn write_nt(&self, offset: usize, data: &[u8]) {
        check_range(offset, data.len(), self.data_len_bytes);
        // SAFETY: the destination is inside the mapping and disjoint from `data` (as in
        // `write`); the flush instruction was checked to be supported when the pool opened.
        unsafe {
            flush::copy_nt(
                self.instruction,
                self.data_ptr(offset),
                data.as_ptr(),
                data.len(),
            )
        };
        if self.msync_on_flush {
            self.sync_data_range(offset, data.len());
        }
    }

    #[inline]
    fn flush(&self, offset: usize, len: usize) {
        check_range(offset, len, self.data_len_bytes);
        // SAFETY: the range is inside the mapping; the instruction is supported (checked when
        // the pool opened).
        unsafe { flush::flush_range(self.instruction, self.data_ptr(offset), len) };
        if self.msync_on_flush {
            self.sync_data_range(offset, len);
        }
    }

    #[inline]
    fn fence(&self) {
        flush::sfence();
    }

    fn guarantee(&self) -> Guarantee {
        if self.is_dax() {
            Guarantee::PowerFailDax
        } else {
            match self.durability {
                Durability::Process => Guarantee::ProcessCrash,
                Durability::Power => Guarantee::PowerFailMsync,
            }
        }
    }
}

/// The system page size.
fn page_size_bytes() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let value = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    match usize::try_from(value) {
        Ok(size) if size.is_power_of_two() && size >= 4096 => size,
        _ => 4096,
    }
}

fn select_flush(path: &Path) -> Result<FlushInstruction, PmemError> {
    FlushInstruction::select().map_err(|source| PmemError::FlushOverride {
        path: path.to_path_buf(),
        source,
    })
}

fn file_kind(file_type: &std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "directory"
    } else if file_type.is_symlink() {
        "symbolic link"
    } else if file_type.is_block_device() {
        "block device"
    } else if file_type.is_char_device() {
        "character device"
    } else if file_type.is_fifo() {
        "fifo"
    } else if file_type.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

/// A pool file this process holds the exclusive `flock` of. Dropping it releases the lock
/// explicitly rather than leaving that to the close of the descriptor: a child process
/// spawned meanwhile by another thread shares the open file description (and so the lock)
/// until it execs, so a dropped pool, or an open that failed after locking, would otherwise
/// keep the pool locked a moment longer and a reopen would fail with `AlreadyOpen`.
#[derive(Debug)]
struct LockedFile(File);

impl LockedFile {
    fn unlock(&self) -> io::Result<()> {
        // SAFETY: `flock` on a descriptor this value owns; no memory is involved.
        let rc = unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl std::ops::Deref for LockedFile {
    type Target = File;

    fn deref(&self) -> &File {
        &self.0
    }
}

impl Drop for LockedFile {
    fn drop(&mut self) {
        // After a successful `close` this unlocks an unlocked file: a no-op.
        if let Err(error) = self.unlock() {
            tracing::warn!(%error, "flock(LOCK_UN) of a pool file failed");
        }
    }
}

/// Takes the pool's exclusive advisory lock, without waiting.
fn lock(file: File, path: &Path) -> Result<LockedFile, PmemError> {
    // SAFETY: `flock` on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(LockedFile(file));
    }
    let error = io::Error::last_os_error();
    if error.kind() == io::ErrorKind::WouldBlock {
        Err(PmemError::AlreadyOpen {
            path: path.to_path_buf(),
        })
    } else {
        Err(PmemError::from_io(path, "flock", error))
    }
}

/// Gives a freshly created, locked file its length and header and makes both durable.
fn write_new_pool(file: &File, path: &Path, header: &PoolHeader) -> Result<(), PmemError> {
    let io_error = |op| move |error| PmemError::from_io(path, op, error);
    file.set_len(header.file_len_bytes())
        .map_err(io_error("set_len"))?;
    file.write_all_at(&header.encode(), 0)
        .map_err(io_error("write header"))?;
    // IMPORTANT: fsync the file (header and length), then its directory (the new name).
    file.sync_all().map_err(io_error("fsync"))?;
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let directory = File::open(parent).map_err(io_error("open parent directory"))?;
    directory
        .sync_all()
        .map_err(io_error("fsync parent directory"))
}

/// Reads and decodes the header page of an open pool file of `file_len_bytes`.
fn read_header(file: &File, path: &Path, file_len_bytes: u64) -> Result<PoolHeader, PmemError> {
    if file_len_bytes < POOL_HEADER_BYTES as u64 {
        return Err(PmemError::Truncated {
            path: path.to_path_buf(),
            expected_file_bytes: POOL_HEADER_BYTES as u64,
            actual_file_bytes: file_len_bytes,
        });
    }
    let mut page = vec![0u8; POOL_HEADER_BYTES];
    file.read_exact_at(&mut page, 0)
        .map_err(|error| PmemError::from_io(path, "read header", error))?;
    PoolHeader::decode(&page).map_err(|error| error.with_path(path))
}

/// Tries a `MAP_SYNC` mapping. `Ok(None)` when the file system is not DAX.
#[cfg(target_os = "linux")]
fn map_dax(file: &File, path: &Path, map_len_bytes: usize) -> Result<Option<Mapping>, PmemError> {
    // SAFETY: a fresh shared mapping of a file we hold open and locked; the kernel chooses the
    // address, so no existing memory is affected.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            map_len_bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED_VALIDATE | libc::MAP_SYNC,
            file.as_raw_fd(),
            0,
        )
    };
    if base == libc::MAP_FAILED {
        let error = io::Error::last_os_error();
        return match error.raw_os_error() {
            Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) => {
                tracing::debug!(path = %path.display(), %error, "no MAP_SYNC: emulated pool");
                Ok(None)
            }
            _ => Err(PmemError::from_io(path, "mmap(MAP_SYNC)", error)),
        };
    }
    match NonNull::new(base.cast::<u8>()) {
        Some(base) => Ok(Some(Mapping::Dax(DaxMap {
            base,
            len_bytes: map_len_bytes,
        }))),
        None => unreachable!("mmap returned a null mapping without MAP_FIXED"),
    }
}

#[cfg(not(target_os = "linux"))]
fn map_dax(_file: &File, _path: &Path, _len: usize) -> Result<Option<Mapping>, PmemError> {
    Ok(None)
}

/// An ordinary shared mapping of the whole file.
fn map_emulated(file: &File, path: &Path, map_len_bytes: usize) -> Result<Mapping, PmemError> {
    // SAFETY: memmap2 requires that nobody else truncates or modifies the file while it is
    // mapped. The pool holds an exclusive `flock` that every pstream open honours; a process
    // ignoring the lock is outside what any mmap-based store can defend against.
    let map = unsafe { memmap2::MmapOptions::new().len(map_len_bytes).map_mut(file) };
    let mut map = map.map_err(|error| PmemError::from_io(path, "mmap", error))?;
    assert_eq!(map.len(), map_len_bytes);
    match NonNull::new(map.as_mut_ptr()) {
        Some(base) => Ok(Mapping::Emulated { map, base }),
        None => unreachable!("memmap2 returned a null mapping"),
    }
}

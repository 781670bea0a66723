//! [`UringIo`]: reads, writes and syncs through io_uring.
//!
//! - A small set of rings (one per concurrent caller, up to `max_rings`): a caller takes a ring
//!   for the length of one call, so a migration streaming a segment and a cold read run on
//!   different rings, and several segments can be written at once from several threads.
//! - Batched submissions: a streamed write keeps up to `depth` chunk writes in flight while
//!   the caller produces the next chunk; a read batch keeps up to the ring size in flight.
//! - The final write of a stream is linked (`IOSQE_IO_LINK`) to the fdatasync, and carries
//!   `IOSQE_IO_DRAIN` so it starts only after every earlier write of the stream completed:
//!   the sync is ordered after all writes without serialising the writes among themselves.
//!   If the linked write fails or is short, the kernel cancels the sync.
//! - Registered buffers: one [`FixedPool`] is registered with every ring at the same indices,
//!   so a buffer from [`SegmentIo::alloc_buf`] uses `WRITE_FIXED` / `READ_FIXED` on any ring.
//! - O_DIRECT when the directory's file system accepts it (probed), buffered otherwise.
//! - Buffer ownership: an operation's buffer lives in the driver's slot table from submission
//!   until its completion is reaped; the driver reaps every in-flight operation before it
//!   returns (also when unwinding), and if the ring itself fails it leaks the buffers instead
//!   of freeing memory the kernel may still write.
//! - Where io_uring cannot be set up (old kernel, seccomp, `io_uring_disabled`, or the
//!   [`FORCE_STD_IO_ENV`] variable) every call goes to [`StdIo`], with one `warn!`.
//!
//! Metadata operations (create, open, rename, remove, list, stat) are rare and go through
//! [`StdIo`] in both modes.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use io_uring::{opcode, squeue, types, IoUring, Probe};
use parking_lot::{Condvar, Mutex};

use super::buf::FixedPool;
use super::std_io::probe_direct;
use super::{
    check_full_write, Completion, DirectIo, Fill, IoBuf, IoFile, SegmentIo, StdFile, StdIo,
    StreamShape, IO_ALIGN_BYTES, MAX_IO_BYTES,
};
use crate::error::{IoOp, Result, TieringError};

/// Set this environment variable (to anything but "0") to make [`UringIo::open`] use the
/// [`StdIo`] fallback, as if io_uring were unavailable.
pub const FORCE_STD_IO_ENV: &str = "PSTREAM_TIERING_FORCE_STD_IO";

const SYNC_USER_DATA: u64 = u64::MAX;

#[derive(Debug, Clone)]
pub struct UringConfig {
    /// Submission queue entries of each ring (the completion queue is twice as large).
    pub ring_entries: u32,
    /// Rings created on demand for concurrent callers.
    pub max_rings: usize,
    /// Registered buffers shared by all rings; 0 disables registration.
    pub fixed_buffer_count: usize,
    pub fixed_buffer_bytes: usize,
    pub direct_io: DirectIo,
    /// Use the [`StdIo`] fallback even where io_uring works (tests, comparisons).
    pub force_std_fallback: bool,
}

impl Default for UringConfig {
    fn default() -> UringConfig {
        UringConfig {
            ring_entries: 64,
            max_rings: 4,
            fixed_buffer_count: 16,
            fixed_buffer_bytes: 1 << 20,
            direct_io: DirectIo::Auto,
            force_std_fallback: false,
        }
    }
}

/// io_uring I/O on a directory, or the [`StdIo`] fallback where io_uring is unavailable.
pub struct UringIo {
    rings: Option<RingSet>,
    std: StdIo,
}

impl std::fmt::Debug for UringIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringIo")
            .field("dir", &self.std.dir())
            .field("uring_active", &self.rings.is_some())
            .field("direct", &self.std.is_direct())
            .finish()
    }
}

impl UringIo {
    /// Opens `dir` (created if missing). Never fails because io_uring is unavailable: it then
    /// logs a warning and uses [`StdIo`]; see [`UringIo::is_uring_active`].
    pub fn open(dir: impl AsRef<Path>, config: UringConfig) -> Result<UringIo> {
        let dir: PathBuf = dir.as_ref().to_path_buf();
        let dir_name = dir.display().to_string();
        std::fs::create_dir_all(&dir).map_err(|source| TieringError::Fs {
            op: IoOp::Setup,
            file: dir_name.clone(),
            source,
        })?;
        let dir_file = File::open(&dir).map_err(|source| TieringError::Fs {
            op: IoOp::Open,
            file: dir_name,
            source,
        })?;
        let direct = match config.direct_io {
            DirectIo::Off => false,
            DirectIo::Auto => probe_direct(&dir),
        };
        let std = StdIo::with_direct(dir, dir_file, direct);
        let forced = config.force_std_fallback
            || std::env::var(FORCE_STD_IO_ENV).is_ok_and(|value| value != "0");
        let dir_shown = std.dir().display();
        let rings = if forced {
            tracing::warn!(dir = %dir_shown, "io_uring disabled by configuration: pread/pwrite");
            None
        } else {
            match RingSet::new(&config) {
                Ok(rings) => Some(rings),
                Err(error) => {
                    tracing::warn!(dir = %dir_shown, %error, "io_uring unavailable: pread/pwrite");
                    None
                }
            }
        };
        Ok(UringIo { rings, std })
    }

    /// True when I/O goes through io_uring, false when the [`StdIo`] fallback is in use.
    pub fn is_uring_active(&self) -> bool {
        self.rings.is_some()
    }

    /// True when the rings use registered buffers.
    pub fn has_registered_buffers(&self) -> bool {
        self.rings
            .as_ref()
            .is_some_and(|rings| rings.pool.is_some())
    }

    fn io_error(op: IoOp, file: &str, offset_bytes: u64, source: io::Error) -> TieringError {
        TieringError::Io {
            op,
            file: file.to_owned(),
            offset_bytes,
            source,
        }
    }

    /// A sync on a ring, or `None` when no ring is available (callers then fall back).
    fn sync_on_ring(&self, fd: i32, datasync: bool, op: IoOp, name: &str) -> Option<Result<()>> {
        let mut guard = self.rings.as_ref().and_then(RingSet::acquire)?;
        let sync_failed = |source| TieringError::SyncFailed {
            op,
            file: name.to_owned(),
            source,
        };
        let mut driver = Driver::new(guard.ring(), fd);
        let outcome = driver
            .start_sync(datasync, squeue::Flags::empty())
            .and_then(|()| {
                let mut sync_result = None;
                while driver.in_flight > 0 {
                    for done in driver.reap()? {
                        if let Reaped::Sync(result) = done {
                            sync_result = Some(result);
                        }
                    }
                }
                Ok(sync_result)
            });
        drop(driver);
        Some(match outcome {
            Ok(Some(result)) => result.map_err(sync_failed),
            Ok(None) => Err(sync_failed(io::Error::other("sync completion missing"))),
            Err(error) => Err(sync_failed(error)),
        })
    }
}

impl SegmentIo for UringIo {
    type File = StdFile;

    fn dir(&self) -> &Path {
        self.std.dir()
    }

    fn is_direct(&self) -> bool {
        self.std.is_direct()
    }

    fn alloc_buf(&self, capacity_bytes: usize) -> IoBuf {
        let pool = self.rings.as_ref().and_then(|rings| rings.pool.as_ref());
        match pool {
            Some(pool) if capacity_bytes <= pool.buffer_bytes() => pool
                .take()
                .unwrap_or_else(|| IoBuf::with_capacity(capacity_bytes)),
            _ => IoBuf::with_capacity(capacity_bytes),
        }
    }

    fn create(&self, name: &str) -> Result<StdFile> {
        self.std.create(name)
    }

    fn open(&self, name: &str) -> Result<StdFile> {
        self.std.open(name)
    }

    fn file_len(&self, file: &StdFile) -> Result<u64> {
        self.std.file_len(file)
    }

    fn write_at(&self, file: &StdFile, buf: IoBuf, offset_bytes: u64) -> Completion {
        if self.rings.is_none() {
            return self.std.write_at(file, buf, offset_bytes);
        }
        let mut results = self.run_ops(file, OpKind::Write, vec![(offset_bytes, buf)]);
        results
            .pop()
            .unwrap_or_else(|| unreachable_completion(file, offset_bytes))
    }

    fn read_at(&self, file: &StdFile, buf: IoBuf, offset_bytes: u64) -> Completion {
        if self.rings.is_none() {
            return self.std.read_at(file, buf, offset_bytes);
        }
        let mut results = self.run_ops(file, OpKind::Read, vec![(offset_bytes, buf)]);
        results
            .pop()
            .unwrap_or_else(|| unreachable_completion(file, offset_bytes))
    }

    fn fdatasync(&self, file: &StdFile) -> Result<()> {
        match self.sync_on_ring(file.raw_fd(), true, IoOp::Fdatasync, file.name()) {
            Some(result) => result,
            None => self.std.fdatasync(file),
        }
    }

    fn sync_dir(&self) -> Result<()> {
        let name = self.std.dir().display().to_string();
        match self.sync_on_ring(self.std.dir_fd(), false, IoOp::SyncDir, &name) {
            Some(result) => result,
            None => self.std.sync_dir(),
        }
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.std.rename(from, to)
    }

    fn remove(&self, name: &str) -> Result<()> {
        self.std.remove(name)
    }

    fn list(&self) -> Result<Vec<String>> {
        self.std.list()
    }

    fn evict_cache(&self, file: &StdFile) -> Result<()> {
        self.std.evict_cache(file)
    }

    fn write_stream_synced<F>(
        &self,
        file: &StdFile,
        offset_bytes: u64,
        shape: StreamShape,
        fill: F,
    ) -> Result<u64>
    where
        F: FnMut(&mut IoBuf) -> Result<Fill>,
    {
        shape.validate()?;
        let Some(mut guard) = self.rings.as_ref().and_then(RingSet::acquire) else {
            return self
                .std
                .write_stream_synced(file, offset_bytes, shape, fill);
        };
        let outcome = stream_on_ring(self, &mut guard, file, offset_bytes, shape, fill);
        drop(guard);
        outcome
    }

    fn read_batch(&self, file: &StdFile, requests: Vec<(u64, IoBuf)>) -> Vec<Completion> {
        if self.rings.is_none() {
            return self.std.read_batch(file, requests);
        }
        self.run_ops(file, OpKind::Read, requests)
    }

    fn read_stream<F>(
        &self,
        file: &StdFile,
        offset_bytes: u64,
        len_bytes: u64,
        shape: StreamShape,
        consume: F,
    ) -> Result<()>
    where
        F: FnMut(u64, &[u8]) -> Result<()>,
    {
        shape.validate()?;
        let Some(mut guard) = self.rings.as_ref().and_then(RingSet::acquire) else {
            return self
                .std
                .read_stream(file, offset_bytes, len_bytes, shape, consume);
        };
        let range = offset_bytes..offset_bytes + len_bytes;
        read_stream_on_ring(self, &mut guard, file, range, shape, consume)
    }
}

/// The streamed read on one ring: see [`SegmentIo::read_stream`]. Completions arrive in any
/// order; chunks are consumed in file order, each buffer reused for a later chunk.
fn read_stream_on_ring<F>(
    io: &UringIo,
    guard: &mut RingGuard<'_>,
    file: &StdFile,
    range: std::ops::Range<u64>,
    shape: StreamShape,
    mut consume: F,
) -> Result<()>
where
    F: FnMut(u64, &[u8]) -> Result<()>,
{
    let depth = shape.depth.min(guard.depth()).max(1);
    let direct = io.is_direct();
    let mut driver = Driver::new(guard.ring(), file.raw_fd());
    let mut spare_bufs: Vec<IoBuf> = Vec::new();
    let mut done: std::collections::BTreeMap<usize, (Op, i32)> = std::collections::BTreeMap::new();
    let (mut next_offset, mut next_issue, mut next_consume) = (range.start, 0usize, 0usize);
    let mut stop = false;
    let mut first_error: Option<TieringError> = None;
    loop {
        while !stop && driver.in_flight < depth && next_offset < range.end {
            let len = (shape.chunk_bytes as u64).min(range.end - next_offset) as usize;
            let mut buf = spare_bufs
                .pop()
                .unwrap_or_else(|| io.alloc_buf(shape.chunk_bytes));
            buf.set_len(len);
            if let Some(error) = check_op(&buf, next_offset, direct) {
                first_error = Some(UringIo::io_error(
                    IoOp::Read,
                    file.name(),
                    next_offset,
                    error,
                ));
                stop = true;
                break;
            }
            let op = Op {
                buf,
                offset_bytes: next_offset,
                done_bytes: 0,
                kind: OpKind::Read,
                request: next_issue,
            };
            if let Err((error, op)) = driver.start(op, squeue::Flags::empty()) {
                first_error = Some(UringIo::io_error(
                    IoOp::Read,
                    file.name(),
                    op.offset_bytes,
                    error,
                ));
                stop = true;
                break;
            }
            next_issue += 1;
            next_offset += len as u64;
        }
        // Consume what is ready, in order.
        while let Some((op, result)) = done.remove(&next_consume) {
            next_consume += 1;
            if stop {
                continue;
            }
            let outcome = op_outcome(&op, result, IoOp::Read, file.name()).and_then(|read| {
                consume(op.offset_bytes, &op.buf.as_slice()[..read]).map(|()| read)
            });
            match outcome {
                Ok(read) if read < op.buf.len() => stop = true,
                Ok(_) => {}
                Err(error) => {
                    first_error = Some(error);
                    stop = true;
                }
            }
            spare_bufs.push(op.buf);
        }
        if driver.in_flight == 0 && (stop || next_offset >= range.end) {
            break;
        }
        if driver.in_flight == 0 {
            continue;
        }
        match driver.reap() {
            Ok(reaped) => {
                for reaped in reaped {
                    let Reaped::Op(op, result) = reaped else {
                        continue;
                    };
                    if let Some(op) = driver.continue_read(op, result, direct) {
                        done.insert(op.request, (op, result));
                    }
                }
            }
            Err(error) => {
                first_error.get_or_insert(UringIo::io_error(
                    IoOp::Read,
                    file.name(),
                    next_offset,
                    error,
                ));
                break;
            }
        }
    }
    drop(driver);
    match first_error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

fn unreachable_completion(file: &StdFile, offset_bytes: u64) -> Completion {
    let error = io::Error::other("operation produced no completion");
    let buf = IoBuf::with_capacity(0);
    (
        Err(UringIo::io_error(
            IoOp::Read,
            file.name(),
            offset_bytes,
            error,
        )),
        buf,
    )
}

impl UringIo {
    /// Runs independent reads or writes with up to the ring size in flight; results in
    /// request order.
    fn run_ops(
        &self,
        file: &StdFile,
        kind: OpKind,
        requests: Vec<(u64, IoBuf)>,
    ) -> Vec<Completion> {
        let op_name = match kind {
            OpKind::Read => IoOp::Read,
            OpKind::Write => IoOp::Write,
        };
        let Some(mut guard) = self.rings.as_ref().and_then(RingSet::acquire) else {
            return match kind {
                OpKind::Read => self.std.read_batch(file, requests),
                OpKind::Write => requests
                    .into_iter()
                    .map(|(offset, buf)| self.std.write_at(file, buf, offset))
                    .collect(),
            };
        };
        let request_count = requests.len();
        let mut results: Vec<Option<Completion>> = (0..request_count).map(|_| None).collect();
        let depth = guard.depth();
        let direct = self.is_direct();
        let mut driver = Driver::new(guard.ring(), file.raw_fd());
        let mut queue = requests.into_iter().enumerate();
        let mut ring_error = None;
        loop {
            while ring_error.is_none() && driver.in_flight < depth {
                let Some((request, (offset_bytes, buf))) = queue.next() else {
                    break;
                };
                if let Some(error) = check_op(&buf, offset_bytes, direct) {
                    let error = UringIo::io_error(op_name, file.name(), offset_bytes, error);
                    results[request] = Some((Err(error), buf));
                    continue;
                }
                let op = Op {
                    buf,
                    offset_bytes,
                    done_bytes: 0,
                    kind,
                    request,
                };
                if let Err((error, op)) = driver.start(op, squeue::Flags::empty()) {
                    let error = UringIo::io_error(op_name, file.name(), op.offset_bytes, error);
                    results[op.request] = Some((Err(error), op.buf));
                    ring_error = Some(());
                }
            }
            if driver.in_flight == 0 {
                break;
            }
            let reaped = match driver.reap() {
                Ok(reaped) => reaped,
                Err(_) => break,
            };
            for done in reaped {
                let Reaped::Op(op, result) = done else {
                    continue;
                };
                if let Some(op) = driver.continue_read(op, result, direct) {
                    let outcome = op_outcome(&op, result, op_name, file.name());
                    results[op.request] = Some((outcome, op.buf));
                }
            }
        }
        // Requests never started (ring failure) come back with an error and their buffer.
        for (request, (offset_bytes, buf)) in queue {
            let error = io::Error::other("io_uring ring failed before this operation started");
            results[request] = Some((
                Err(UringIo::io_error(op_name, file.name(), offset_bytes, error)),
                buf,
            ));
        }
        drop(driver);
        results
            .into_iter()
            .map(|slot| slot.unwrap_or_else(|| unreachable_completion(file, 0)))
            .collect()
    }
}

/// The caller-side contract of an operation, checked before the kernel sees it.
fn check_op(buf: &IoBuf, offset_bytes: u64, direct: bool) -> Option<io::Error> {
    if buf.len() > MAX_IO_BYTES {
        return Some(io::Error::new(
            io::ErrorKind::InvalidInput,
            "operation too large",
        ));
    }
    let aligned = buf.is_aligned_for_direct() && offset_bytes % IO_ALIGN_BYTES as u64 == 0;
    if direct && !aligned {
        return Some(io::Error::new(
            io::ErrorKind::InvalidInput,
            "unaligned O_DIRECT operation",
        ));
    }
    None
}

fn op_outcome(op: &Op, result: i32, op_name: IoOp, file: &str) -> Result<usize> {
    if result < 0 {
        let source = io::Error::from_raw_os_error(-result);
        return Err(UringIo::io_error(
            op_name,
            file,
            op.offset_bytes + op.done_bytes as u64,
            source,
        ));
    }
    Ok(op.done_bytes + result as usize)
}

/// The streamed write on one ring: see [`SegmentIo::write_stream_synced`].
fn stream_on_ring<F>(
    io: &UringIo,
    guard: &mut RingGuard<'_>,
    file: &StdFile,
    offset_bytes: u64,
    shape: StreamShape,
    mut fill: F,
) -> Result<u64>
where
    F: FnMut(&mut IoBuf) -> Result<Fill>,
{
    // One submission slot stays free for the fdatasync.
    let depth = shape.depth.min(guard.depth().saturating_sub(1)).max(1);
    let direct = io.is_direct();
    let mut driver = Driver::new(guard.ring(), file.raw_fd());
    let mut spare_bufs: Vec<IoBuf> = Vec::new();
    let mut offset = offset_bytes;
    let mut producing = true;
    let mut first_error: Option<TieringError> = None;
    let mut sync_result: Option<io::Result<()>> = None;
    loop {
        while producing && first_error.is_none() && driver.in_flight < depth {
            let mut buf = spare_bufs
                .pop()
                .unwrap_or_else(|| io.alloc_buf(shape.chunk_bytes));
            buf.clear();
            let filled = match fill(&mut buf) {
                Ok(filled) => filled,
                Err(error) => {
                    first_error = Some(error);
                    break;
                }
            };
            let last = filled == Fill::Last;
            producing = !last;
            let len = buf.len();
            if let Some(error) = check_op(&buf, offset, direct) {
                first_error = Some(UringIo::io_error(IoOp::Write, file.name(), offset, error));
                break;
            }
            if len > 0 {
                // IMPORTANT: the last write drains every earlier write and links to the sync.
                let flags = if last {
                    squeue::Flags::IO_LINK | squeue::Flags::IO_DRAIN
                } else {
                    squeue::Flags::empty()
                };
                let op = Op {
                    buf,
                    offset_bytes: offset,
                    done_bytes: 0,
                    kind: OpKind::Write,
                    request: 0,
                };
                if let Err((error, op)) = driver.start(op, flags) {
                    first_error = Some(UringIo::io_error(
                        IoOp::Write,
                        file.name(),
                        op.offset_bytes,
                        error,
                    ));
                    break;
                }
                // Start the device on this chunk while the next one is being encoded.
                if !last {
                    if let Err(error) = driver.submit() {
                        first_error =
                            Some(UringIo::io_error(IoOp::Write, file.name(), offset, error));
                        break;
                    }
                }
                offset += len as u64;
            }
            if last {
                let flags = if len > 0 {
                    squeue::Flags::empty()
                } else {
                    squeue::Flags::IO_DRAIN
                };
                if let Err(error) = driver.start_sync(true, flags) {
                    first_error = Some(UringIo::io_error(
                        IoOp::Fdatasync,
                        file.name(),
                        offset,
                        error,
                    ));
                }
            }
        }
        if driver.in_flight == 0 {
            break;
        }
        let reaped = match driver.reap() {
            Ok(reaped) => reaped,
            Err(error) => {
                first_error.get_or_insert(UringIo::io_error(
                    IoOp::Write,
                    file.name(),
                    offset,
                    error,
                ));
                break;
            }
        };
        for done in reaped {
            match done {
                Reaped::Sync(result) => sync_result = Some(result),
                Reaped::Op(op, result) => {
                    let outcome =
                        op_outcome(&op, result, IoOp::Write, file.name()).and_then(|written| {
                            check_full_write(file.name(), op.offset_bytes, op.buf.len(), written)
                        });
                    if let Err(error) = outcome {
                        first_error.get_or_insert(error);
                    }
                    spare_bufs.push(op.buf);
                }
            }
        }
    }
    drop(driver);
    if let Some(error) = first_error {
        return Err(error);
    }
    match sync_result {
        Some(Ok(())) => Ok(offset - offset_bytes),
        Some(Err(source)) => Err(TieringError::SyncFailed {
            op: IoOp::Fdatasync,
            file: file.name().to_owned(),
            source,
        }),
        None => Err(TieringError::SyncFailed {
            op: IoOp::Fdatasync,
            file: file.name().to_owned(),
            source: io::Error::other("fdatasync was never completed"),
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Rings.

struct Ring {
    ring: IoUring,
    sq_entries: usize,
    fixed: bool,
    /// Waiting on the ring failed and in-flight buffers were leaked: replace the ring.
    poisoned: bool,
    // Declared after `ring`: dropped after it, so the registered memory outlives the
    // registration.
    pool: Option<Arc<FixedPool>>,
}

impl Ring {
    fn new(entries: u32, pool: Option<&Arc<FixedPool>>) -> io::Result<Ring> {
        let ring = IoUring::builder().build(entries)?;
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        for code in [opcode::Read::CODE, opcode::Write::CODE, opcode::Fsync::CODE] {
            if !probe.is_supported(code) {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "io_uring opcode missing",
                ));
            }
        }
        let sq_entries = ring.params().sq_entries() as usize;
        let mut ring = Ring {
            ring,
            sq_entries,
            fixed: false,
            poisoned: false,
            pool: None,
        };
        ring.check_nop()?;
        if let Some(pool) = pool {
            ring.register(pool);
        }
        Ok(ring)
    }

    /// A seccomp filter may allow io_uring_setup but not io_uring_enter: prove a round trip.
    #[expect(unsafe_code, reason = "pushing a submission queue entry is unsafe")]
    fn check_nop(&mut self) -> io::Result<()> {
        let entry = opcode::Nop::new().build().user_data(SYNC_USER_DATA - 1);
        // SAFETY: a NOP references no memory.
        unsafe { self.ring.submission().push(&entry) }
            .map_err(|_| io::Error::other("submission queue full on a new ring"))?;
        submit_and_wait_retrying(&self.ring)?;
        let result = self.ring.completion().next().map(|cqe| cqe.result());
        match result {
            Some(code) if code >= 0 => Ok(()),
            Some(code) => Err(io::Error::from_raw_os_error(-code)),
            None => Err(io::Error::other("no completion for a NOP")),
        }
    }

    #[expect(
        unsafe_code,
        reason = "registering buffers hands their memory to the kernel"
    )]
    fn register(&mut self, pool: &Arc<FixedPool>) {
        let iovecs: Vec<libc::iovec> = pool
            .regions()
            .into_iter()
            .map(|(address, len)| libc::iovec {
                iov_base: address as *mut libc::c_void,
                iov_len: len,
            })
            .collect();
        // Each iovec is the aligned window of one slot of `pool`. Slot memory is allocated
        // for the pool's whole life (lent slots are owned by their IoBuf and return on drop),
        // and `self.pool` keeps the pool alive until after `self.ring` is dropped, which
        // unregisters the buffers.
        // SAFETY: every registered iovec stays valid memory for as long as it is registered.
        let registered = unsafe { self.ring.submitter().register_buffers(&iovecs) };
        match registered {
            Ok(()) => {
                self.fixed = true;
                self.pool = Some(Arc::clone(pool));
            }
            Err(error) => {
                tracing::warn!(%error, "io_uring buffer registration failed, unregistered buffers");
            }
        }
    }
}

fn submit_and_wait_retrying(ring: &IoUring) -> io::Result<()> {
    loop {
        match ring.submit_and_wait(1) {
            Ok(_) => return Ok(()),
            Err(error) if error.raw_os_error() == Some(libc::EINTR) => continue,
            // The completion queue needs draining first; the caller drains it.
            Err(error) if error.raw_os_error() == Some(libc::EBUSY) => return Ok(()),
            Err(error) => return Err(error),
        }
    }
}

struct RingSet {
    state: Mutex<RingState>,
    ring_idle: Condvar,
    pool: Option<Arc<FixedPool>>,
    ring_entries: u32,
    max_rings: usize,
}

struct RingState {
    idle: Vec<Ring>,
    created: usize,
    can_grow: bool,
}

impl RingSet {
    fn new(config: &UringConfig) -> io::Result<RingSet> {
        let ring_entries = config.ring_entries.clamp(4, 4096);
        let wanted_pool = (config.fixed_buffer_count > 0)
            .then(|| FixedPool::new(config.fixed_buffer_count, config.fixed_buffer_bytes));
        let first = Ring::new(ring_entries, wanted_pool.as_ref())?;
        // Without registration on the first ring, do not hand out pool buffers at all.
        let pool = if first.fixed { wanted_pool } else { None };
        let state = RingState {
            idle: vec![first],
            created: 1,
            can_grow: true,
        };
        Ok(RingSet {
            state: Mutex::new(state),
            ring_idle: Condvar::new(),
            pool,
            ring_entries,
            max_rings: config.max_rings.max(1),
        })
    }

    /// Takes an idle ring, creating one if allowed, else waits. `None` only when no ring is
    /// left at all (every one failed), in which case callers use the fallback.
    fn acquire(&self) -> Option<RingGuard<'_>> {
        let mut state = self.state.lock();
        loop {
            if let Some(ring) = state.idle.pop() {
                return Some(RingGuard {
                    set: self,
                    ring: Some(ring),
                });
            }
            if state.can_grow && state.created < self.max_rings {
                state.created += 1;
                drop(state);
                match Ring::new(self.ring_entries, self.pool.as_ref()) {
                    Ok(ring) => {
                        return Some(RingGuard {
                            set: self,
                            ring: Some(ring),
                        })
                    }
                    Err(error) => {
                        tracing::debug!(%error, "no further io_uring ring");
                        state = self.state.lock();
                        state.created -= 1;
                        state.can_grow = false;
                        continue;
                    }
                }
            }
            if state.created == 0 {
                return None;
            }
            self.ring_idle.wait(&mut state);
        }
    }
}

struct RingGuard<'s> {
    set: &'s RingSet,
    ring: Option<Ring>,
}

impl RingGuard<'_> {
    fn ring(&mut self) -> &mut Ring {
        match self.ring.as_mut() {
            Some(ring) => ring,
            None => unreachable!("a guard holds its ring until dropped"),
        }
    }

    /// Operations one call may keep in flight on this ring.
    fn depth(&self) -> usize {
        self.ring.as_ref().map_or(1, |ring| ring.sq_entries)
    }
}

impl Drop for RingGuard<'_> {
    fn drop(&mut self) {
        let Some(ring) = self.ring.take() else { return };
        let mut state = self.set.state.lock();
        if ring.poisoned {
            // Its in-flight buffers were leaked; the ring itself is closed and replaced.
            state.created -= 1;
            state.can_grow = true;
            drop(state);
            drop(ring);
        } else {
            state.idle.push(ring);
            drop(state);
        }
        self.set.ring_idle.notify_one();
    }
}

// ---------------------------------------------------------------------------------------------
// The driver: owns every in-flight operation's buffer until its completion is reaped.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Read,
    Write,
}

struct Op {
    buf: IoBuf,
    offset_bytes: u64,
    /// Bytes already transferred by earlier completions (a read continued after a short one).
    done_bytes: usize,
    kind: OpKind,
    request: usize,
}

enum Reaped {
    Op(Op, i32),
    Sync(io::Result<()>),
}

struct Driver<'r> {
    ring: &'r mut Ring,
    fd: i32,
    slots: Vec<Option<Op>>,
    free_slots: Vec<usize>,
    in_flight: usize,
}

impl<'r> Driver<'r> {
    fn new(ring: &'r mut Ring, fd: i32) -> Driver<'r> {
        Driver {
            ring,
            fd,
            slots: Vec::new(),
            free_slots: Vec::new(),
            in_flight: 0,
        }
    }

    /// Submits `op`. On failure the operation was not queued and comes back with the error.
    fn start(&mut self, op: Op, flags: squeue::Flags) -> std::result::Result<(), (io::Error, Op)> {
        assert!(
            op.done_bytes < op.buf.len(),
            "an operation must have bytes left to transfer"
        );
        assert!(op.buf.len() <= MAX_IO_BYTES);
        let slot = match self.free_slots.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        debug_assert!(self.slots[slot].is_none());
        let op = self.slots[slot].insert(op);
        let len = (op.buf.len() - op.done_bytes) as u32;
        let offset = op.offset_bytes + op.done_bytes as u64;
        let fixed = match (&self.ring.pool, self.ring.fixed) {
            (Some(pool), true) => op.buf.fixed_index_in(pool),
            _ => None,
        };
        let fd = types::Fd(self.fd);
        let entry = match op.kind {
            OpKind::Write => {
                let address = op.buf.as_ptr().wrapping_add(op.done_bytes);
                match fixed {
                    Some(index) => opcode::WriteFixed::new(fd, address, len, index)
                        .offset(offset)
                        .build(),
                    None => opcode::Write::new(fd, address, len).offset(offset).build(),
                }
            }
            OpKind::Read => {
                let address = op.buf.as_mut_ptr().wrapping_add(op.done_bytes);
                match fixed {
                    Some(index) => opcode::ReadFixed::new(fd, address, len, index)
                        .offset(offset)
                        .build(),
                    None => opcode::Read::new(fd, address, len).offset(offset).build(),
                }
            }
        };
        let entry = entry.flags(flags).user_data(slot as u64);
        if let Err(error) = self.push(&entry) {
            let op = self.slots[slot].take();
            self.free_slots.push(slot);
            return match op {
                Some(op) => Err((error, op)),
                None => unreachable!("the slot was filled above"),
            };
        }
        self.in_flight += 1;
        Ok(())
    }

    fn start_sync(&mut self, datasync: bool, flags: squeue::Flags) -> io::Result<()> {
        let sync_flags = if datasync {
            types::FsyncFlags::DATASYNC
        } else {
            types::FsyncFlags::empty()
        };
        let entry = opcode::Fsync::new(types::Fd(self.fd))
            .flags(sync_flags)
            .build()
            .flags(flags)
            .user_data(SYNC_USER_DATA);
        self.push(&entry)?;
        self.in_flight += 1;
        Ok(())
    }

    #[expect(unsafe_code, reason = "pushing a submission queue entry is unsafe")]
    fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        for _attempt in 0..2 {
            // `entry` references at most one buffer: the one of the operation stored in
            // `self.slots` under the entry's user data (or none for a sync), by an address
            // and length inside that buffer's initialized window (`start` checks the length
            // and offsets the address by the bytes already transferred). That slot is
            // emptied only in `reap`, when the kernel has posted the operation's completion;
            // `Drop` reaps everything still in flight, and when the ring fails it leaks the
            // buffers, so the memory outlives every kernel access. The fd is borrowed from a
            // file the caller holds for the whole call.
            // SAFETY: the entry's buffer and fd outlive the kernel's use of them (above).
            let pushed = unsafe { self.ring.ring.submission().push(entry) };
            if pushed.is_ok() {
                return Ok(());
            }
            self.submit()?;
        }
        Err(io::Error::other("io_uring submission queue stays full"))
    }

    fn submit(&mut self) -> io::Result<()> {
        loop {
            match self.ring.ring.submit() {
                Ok(_) => return Ok(()),
                Err(error) if error.raw_os_error() == Some(libc::EINTR) => continue,
                Err(error) if error.raw_os_error() == Some(libc::EBUSY) => return Ok(()),
                Err(error) => return Err(error),
            }
        }
    }

    /// Submits what is queued, waits for at least one completion, and returns all available.
    fn reap(&mut self) -> io::Result<Vec<Reaped>> {
        debug_assert!(self.in_flight > 0);
        if let Err(error) = submit_and_wait_retrying(&self.ring.ring) {
            self.leak_in_flight();
            return Err(error);
        }
        let raw: Vec<(u64, i32)> = self
            .ring
            .ring
            .completion()
            .map(|cqe| (cqe.user_data(), cqe.result()))
            .collect();
        let mut reaped = Vec::with_capacity(raw.len());
        for (user_data, result) in raw {
            self.in_flight -= 1;
            if user_data == SYNC_USER_DATA {
                let outcome = if result < 0 {
                    Err(io::Error::from_raw_os_error(-result))
                } else {
                    Ok(())
                };
                reaped.push(Reaped::Sync(outcome));
                continue;
            }
            let slot = usize::try_from(user_data).unwrap_or(usize::MAX);
            let op = self.slots.get_mut(slot).and_then(Option::take);
            assert!(
                op.is_some(),
                "completion for unknown io_uring operation {user_data}"
            );
            if let Some(op) = op {
                self.free_slots.push(slot);
                reaped.push(Reaped::Op(op, result));
            }
        }
        Ok(reaped)
    }

    /// After a read completed with `result`: resubmits the rest of a short read (buffered
    /// I/O, or an aligned remainder under O_DIRECT) and returns `None`, or hands the
    /// finished operation back.
    fn continue_read(&mut self, mut op: Op, result: i32, direct: bool) -> Option<Op> {
        if op.kind != OpKind::Read || result <= 0 {
            return Some(op);
        }
        let done = op.done_bytes + result as usize;
        let aligned = done % IO_ALIGN_BYTES == 0;
        if done >= op.buf.len() || (direct && !aligned) {
            return Some(op);
        }
        op.done_bytes = done;
        match self.start(op, squeue::Flags::empty()) {
            Ok(()) => None,
            Err((_error, mut op)) => {
                // Report what was read; the caller sees a short read.
                op.done_bytes = done - result as usize;
                Some(op)
            }
        }
    }

    /// The ring cannot be waited on any more: the kernel may still write into in-flight
    /// buffers, so they are leaked rather than freed.
    fn leak_in_flight(&mut self) {
        for op in self.slots.iter_mut().filter_map(Option::take) {
            std::mem::forget(op);
        }
        self.in_flight = 0;
        self.ring.poisoned = true;
    }
}

impl Drop for Driver<'_> {
    fn drop(&mut self) {
        // Normally everything was reaped; after a panic in a caller's callback it is not.
        while self.in_flight > 0 {
            if self.reap().is_err() {
                break;
            }
        }
    }
}

//! The SSD seam: [`SegmentIo`], one small trait for everything the cold tier does to its
//! directory, with three implementations:
//!
//! - [`UringIo`]: io_uring with batched submissions, several operations in flight, the final
//!   write linked to its fdatasync, registered buffers and O_DIRECT where the file system
//!   allows; falls back to [`StdIo`] (with a warning) where io_uring cannot be set up.
//! - [`StdIo`]: plain pread, pwrite and fdatasync.
//! - [`FaultyIo`]: wraps another implementation and injects the faults of the crash model
//!   (`docs/CRASH-MODEL.md`, SSD part), keeping a model of what was made durable.
//!
//! Everything above this module is generic over `I: SegmentIo`: the same writer and store run
//! on real I/O and on injected faults, with no dynamic dispatch on the I/O path.
//!
//! Buffers are passed by ownership and handed back with the result, so a buffer is owned by
//! its operation until the completion arrives.

mod buf;
mod cold_io;
mod faulty;
#[cfg(feature = "object-store")]
mod faulty_store;
#[cfg(feature = "object-store")]
mod object;
mod object_config;
mod std_io;
mod uring;

pub use buf::{align_down_u64, align_up, align_up_u64, IoBuf, IO_ALIGN_BYTES};
pub use cold_io::{ColdIo, ColdIoFile};
pub use faulty::{
    Countdown, CountdownFault, CrashImageReport, FaultCounters, FaultEvent, FaultSpec, FaultyFile,
    FaultyIo,
};
#[cfg(feature = "object-store")]
pub use faulty_store::{FaultyStore, StoreFault};
#[cfg(feature = "object-store")]
pub use object::{ObjectFile, ObjectIo};
pub use object_config::{ColdLocation, ObjectCredentials, ObjectTierConfig, MIN_PART_BYTES};
pub use std_io::{DirectIo, StdFile, StdIo};
pub use uring::{UringConfig, UringIo, FORCE_STD_IO_ENV};

use std::path::Path;

use crate::error::{Result, TieringError};

/// A file handle of some [`SegmentIo`]; it knows its name for error messages.
pub trait IoFile: Send + Sync + 'static {
    /// The name (inside the I/O directory) the file was created or opened under.
    fn name(&self) -> &str;
}

/// What a `fill` callback of [`SegmentIo::write_stream_synced`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// The buffer holds a chunk and more chunks follow.
    More,
    /// The buffer holds the final chunk (possibly empty); no more calls follow.
    Last,
}

/// Shape of a streamed write: chunk size and how many chunks may be in flight at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamShape {
    pub chunk_bytes: usize,
    pub depth: usize,
}

impl StreamShape {
    pub fn validate(&self) -> Result<()> {
        let chunk_ok = self.chunk_bytes >= IO_ALIGN_BYTES
            && self.chunk_bytes % IO_ALIGN_BYTES == 0
            && self.chunk_bytes <= MAX_IO_BYTES;
        if !chunk_ok {
            return Err(TieringError::InvalidConfig(format!(
                "chunk_bytes {} must be a multiple of {IO_ALIGN_BYTES} in {IO_ALIGN_BYTES}..={}",
                self.chunk_bytes, MAX_IO_BYTES
            )));
        }
        if !(1..=MAX_DEPTH).contains(&self.depth) {
            return Err(TieringError::InvalidConfig(format!(
                "depth {} must be in 1..={MAX_DEPTH}",
                self.depth
            )));
        }
        Ok(())
    }
}

/// The largest single read or write (io_uring lengths are u32).
pub const MAX_IO_BYTES: usize = 1 << 30;
/// The most operations one call keeps in flight.
pub const MAX_DEPTH: usize = 256;

/// The result of one operation of a batch: its outcome and its buffer, handed back.
pub type Completion = (Result<usize>, IoBuf);

/// Every I/O the cold tier performs on its directory. All names are plain file names inside
/// [`SegmentIo::dir`] (no separators).
///
/// Contract for implementations:
/// - `write_at` / `read_at` perform one positional operation and may be short; callers treat a
///   short write as an error and a short read as missing bytes.
/// - Under [`SegmentIo::is_direct`], buffers, offsets and lengths are multiples of
///   [`IO_ALIGN_BYTES`]; callers guarantee it.
/// - `fdatasync` failing means the data written since the last successful sync is NOT durable,
///   and a later successful sync does not make it so.
/// - New names and renames are durable only after a successful `sync_dir`.
pub trait SegmentIo: Send + Sync + Sized + 'static {
    type File: IoFile;

    /// The directory this instance serves.
    fn dir(&self) -> &Path;

    /// True when files are opened with O_DIRECT (alignment rules apply).
    fn is_direct(&self) -> bool;

    /// A buffer for an operation of up to `capacity_bytes`; a registered one when possible.
    fn alloc_buf(&self, capacity_bytes: usize) -> IoBuf {
        IoBuf::with_capacity(capacity_bytes)
    }

    /// Creates `name` for reading and writing, truncating an existing file.
    fn create(&self, name: &str) -> Result<Self::File>;

    /// Opens an existing `name` read-only.
    fn open(&self, name: &str) -> Result<Self::File>;

    fn file_len(&self, file: &Self::File) -> Result<u64>;

    fn write_at(&self, file: &Self::File, buf: IoBuf, offset_bytes: u64) -> Completion;

    /// Reads up to `buf.len()` bytes at `offset_bytes`; returns how many were read.
    fn read_at(&self, file: &Self::File, buf: IoBuf, offset_bytes: u64) -> Completion;

    /// Makes the file's data durable; see the trait contract for what a failure means.
    fn fdatasync(&self, file: &Self::File) -> Result<()>;

    /// Makes creations, renames and removals in the directory durable.
    fn sync_dir(&self) -> Result<()>;

    fn rename(&self, from: &str, to: &str) -> Result<()>;

    fn remove(&self, name: &str) -> Result<()>;

    /// Names of the regular files in the directory.
    fn list(&self) -> Result<Vec<String>>;

    /// Drops the file's clean pages from the page cache (benchmarks measure the device).
    fn evict_cache(&self, _file: &Self::File) -> Result<()> {
        Ok(())
    }

    /// Writes a stream of chunks starting at `offset_bytes` and then fdatasyncs the file.
    /// `fill` is called with an empty buffer of `shape.chunk_bytes` capacity and fills it;
    /// up to `shape.depth` chunks are in flight while it produces the next. Returns the bytes
    /// written. Success means every chunk was written in full and the fdatasync succeeded
    /// after all of them; any error means nothing written here may be assumed durable.
    ///
    /// The default runs one operation at a time; [`UringIo`] overrides it.
    fn write_stream_synced<F>(
        &self,
        file: &Self::File,
        offset_bytes: u64,
        shape: StreamShape,
        mut fill: F,
    ) -> Result<u64>
    where
        F: FnMut(&mut IoBuf) -> Result<Fill>,
    {
        shape.validate()?;
        let mut offset = offset_bytes;
        let mut buf = self.alloc_buf(shape.chunk_bytes);
        loop {
            buf.clear();
            let fill_result = fill(&mut buf)?;
            let len = buf.len();
            if len > 0 {
                let (result, returned) = self.write_at(file, buf, offset);
                buf = returned;
                check_full_write(file.name(), offset, len, result?)?;
                offset += len as u64;
            }
            if fill_result == Fill::Last {
                break;
            }
        }
        self.fdatasync(file)?;
        Ok(offset - offset_bytes)
    }

    /// Runs several reads; results come back in request order. The default runs them one at
    /// a time; [`UringIo`] keeps up to its ring depth in flight.
    fn read_batch(&self, file: &Self::File, requests: Vec<(u64, IoBuf)>) -> Vec<Completion> {
        requests
            .into_iter()
            .map(|(offset, buf)| self.read_at(file, buf, offset))
            .collect()
    }

    /// Reads `[offset_bytes, offset_bytes + len_bytes)` in chunks of `shape.chunk_bytes`,
    /// keeping up to `shape.depth` reads in flight, and calls `consume(chunk_offset, bytes)`
    /// for each chunk in file order while later chunks are still being read. A chunk shorter
    /// than asked means end of file: it is the last one consumed. Offsets and lengths follow
    /// the alignment rules of [`SegmentIo::is_direct`]. The default reads one chunk at a
    /// time; [`UringIo`] overrides it.
    fn read_stream<F>(
        &self,
        file: &Self::File,
        offset_bytes: u64,
        len_bytes: u64,
        shape: StreamShape,
        mut consume: F,
    ) -> Result<()>
    where
        F: FnMut(u64, &[u8]) -> Result<()>,
    {
        shape.validate()?;
        let end = offset_bytes + len_bytes;
        let mut offset = offset_bytes;
        let mut buf = self.alloc_buf(shape.chunk_bytes);
        while offset < end {
            let len = (shape.chunk_bytes as u64).min(end - offset) as usize;
            buf.set_len(len);
            let (result, returned) = self.read_at(file, buf, offset);
            buf = returned;
            let read = result?;
            consume(offset, &buf.as_slice()[..read])?;
            if read < len {
                break;
            }
            offset += len as u64;
        }
        Ok(())
    }
}

/// Turns a write's byte count into an error unless it stored everything.
pub(crate) fn check_full_write(
    file: &str,
    offset_bytes: u64,
    expected_bytes: usize,
    written_bytes: usize,
) -> Result<()> {
    if written_bytes == expected_bytes {
        Ok(())
    } else {
        Err(TieringError::ShortWrite {
            file: file.to_owned(),
            offset_bytes,
            expected_bytes: expected_bytes as u64,
            written_bytes: written_bytes as u64,
        })
    }
}

/// Rejects names that are not plain file names of the directory.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0');
    if plain {
        Ok(())
    } else {
        Err(TieringError::InvalidConfig(format!(
            "{name:?} is not a plain file name"
        )))
    }
}

/// A shared I/O layer is an I/O layer: tests keep a handle on a [`FaultyIo`] the store owns,
/// and several stores or benchmarks may share one [`UringIo`].
impl<T: SegmentIo> SegmentIo for std::sync::Arc<T> {
    type File = T::File;

    fn dir(&self) -> &Path {
        (**self).dir()
    }

    fn is_direct(&self) -> bool {
        (**self).is_direct()
    }

    fn alloc_buf(&self, capacity_bytes: usize) -> IoBuf {
        (**self).alloc_buf(capacity_bytes)
    }

    fn create(&self, name: &str) -> Result<Self::File> {
        (**self).create(name)
    }

    fn open(&self, name: &str) -> Result<Self::File> {
        (**self).open(name)
    }

    fn file_len(&self, file: &Self::File) -> Result<u64> {
        (**self).file_len(file)
    }

    fn write_at(&self, file: &Self::File, buf: IoBuf, offset_bytes: u64) -> Completion {
        (**self).write_at(file, buf, offset_bytes)
    }

    fn read_at(&self, file: &Self::File, buf: IoBuf, offset_bytes: u64) -> Completion {
        (**self).read_at(file, buf, offset_bytes)
    }

    fn fdatasync(&self, file: &Self::File) -> Result<()> {
        (**self).fdatasync(file)
    }

    fn sync_dir(&self) -> Result<()> {
        (**self).sync_dir()
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        (**self).rename(from, to)
    }

    fn remove(&self, name: &str) -> Result<()> {
        (**self).remove(name)
    }

    fn list(&self) -> Result<Vec<String>> {
        (**self).list()
    }

    fn evict_cache(&self, file: &Self::File) -> Result<()> {
        (**self).evict_cache(file)
    }

    fn write_stream_synced<F>(
        &self,
        file: &Self::File,
        offset_bytes: u64,
        shape: StreamShape,
        fill: F,
    ) -> Result<u64>
    where
        F: FnMut(&mut IoBuf) -> Result<Fill>,
    {
        (**self).write_stream_synced(file, offset_bytes, shape, fill)
    }

    fn read_batch(&self, file: &Self::File, requests: Vec<(u64, IoBuf)>) -> Vec<Completion> {
        (**self).read_batch(file, requests)
    }

    fn read_stream<F>(
        &self,
        file: &Self::File,
        offset_bytes: u64,
        len_bytes: u64,
        shape: StreamShape,
        consume: F,
    ) -> Result<()>
    where
        F: FnMut(u64, &[u8]) -> Result<()>,
    {
        (**self).read_stream(file, offset_bytes, len_bytes, shape, consume)
    }
}

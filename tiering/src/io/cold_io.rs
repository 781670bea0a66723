//! [`ColdIo`]: the I/O of a cold tier chosen at run time from a `--cold-url` — SSD files
//! through io_uring for a directory path, an object store for `s3://`, `file://` and
//! `memory://` URLs. One `match` per call on the cold I/O path (never on the append path).

use std::path::Path;

use super::{
    Completion, Fill, IoBuf, IoFile, ObjectTierConfig, SegmentIo, StdFile, StreamShape,
    UringConfig, UringIo,
};
#[cfg(feature = "object-store")]
use super::{ObjectFile, ObjectIo};
use crate::error::{Result, TieringError};
use crate::io::ColdLocation;

/// SSD files or an object store.
#[derive(Debug)]
pub enum ColdIo {
    Files(UringIo),
    /// Boxed: an `ObjectIo` (its runtime) is much larger than a `UringIo`.
    #[cfg(feature = "object-store")]
    Object(Box<ObjectIo>),
}

/// A file of [`ColdIo`].
pub enum ColdIoFile {
    Files(StdFile),
    #[cfg(feature = "object-store")]
    Object(ObjectFile),
}

impl IoFile for ColdIoFile {
    fn name(&self) -> &str {
        match self {
            ColdIoFile::Files(file) => file.name(),
            #[cfg(feature = "object-store")]
            ColdIoFile::Object(file) => file.name(),
        }
    }
}

impl ColdIo {
    /// Opens the cold tier at `url`: a directory path (created if missing) or an object store
    /// URL (see [`ColdLocation`]).
    pub fn open(url: &str, uring: UringConfig, object: ObjectTierConfig) -> Result<ColdIo> {
        match ColdLocation::parse(url) {
            ColdLocation::Dir(dir) => Ok(ColdIo::Files(UringIo::open(dir, uring)?)),
            #[cfg(feature = "object-store")]
            ColdLocation::Object(url) => {
                Ok(ColdIo::Object(Box::new(ObjectIo::open(&url, object)?)))
            }
            #[cfg(not(feature = "object-store"))]
            ColdLocation::Object(url) => {
                let _ = object;
                Err(TieringError::InvalidConfig(format!(
                    "{url} is an object store URL, and this build of pstream-tiering has no \
                     object store support (feature `object-store`)"
                )))
            }
        }
    }

    pub fn is_object_store(&self) -> bool {
        #[cfg(feature = "object-store")]
        {
            matches!(self, ColdIo::Object(_))
        }
        #[cfg(not(feature = "object-store"))]
        {
            false
        }
    }
}

#[cfg(feature = "object-store")]
fn wrong_file(name: &str) -> TieringError {
    TieringError::InvalidConfig(format!("{name} belongs to another kind of cold tier"))
}

/// Forwards a call taking a file to the matching variant.
macro_rules! with_file {
    ($self:expr, $file:expr, |$io:ident, $f:ident| $call:expr, $mismatch:expr) => {
        match ($self, $file) {
            (ColdIo::Files($io), ColdIoFile::Files($f)) => $call,
            #[cfg(feature = "object-store")]
            (ColdIo::Object($io), ColdIoFile::Object($f)) => $call,
            #[cfg(feature = "object-store")]
            _ => $mismatch,
        }
    };
}

impl SegmentIo for ColdIo {
    type File = ColdIoFile;

    fn dir(&self) -> &Path {
        match self {
            ColdIo::Files(io) => io.dir(),
            #[cfg(feature = "object-store")]
            ColdIo::Object(io) => io.dir(),
        }
    }

    fn is_direct(&self) -> bool {
        match self {
            ColdIo::Files(io) => io.is_direct(),
            #[cfg(feature = "object-store")]
            ColdIo::Object(io) => io.is_direct(),
        }
    }

    fn alloc_buf(&self, capacity_bytes: usize) -> IoBuf {
        match self {
            ColdIo::Files(io) => io.alloc_buf(capacity_bytes),
            #[cfg(feature = "object-store")]
            ColdIo::Object(io) => io.alloc_buf(capacity_bytes),
        }
    }

    fn create(&self, name: &str) -> Result<ColdIoFile> {
        match self {
            ColdIo::Files(io) => io.create(name).map(ColdIoFile::Files),
            #[cfg(feature = "object-store")]
            ColdIo::Object(io) => io.create(name).map(ColdIoFile::Object),
        }
    }

    fn open(&self, name: &str) -> Result<ColdIoFile> {
        match self {
            ColdIo::Files(io) => io.open(name).map(ColdIoFile::Files),
            #[cfg(feature = "object-store")]
            ColdIo::Object(io) => io.open(name).map(ColdIoFile::Object),
        }
    }

    fn file_len(&self, file: &ColdIoFile) -> Result<u64> {
        with_file!(
            self,
            file,
            |io, f| io.file_len(f),
            Err(wrong_file(file.name()))
        )
    }

    fn write_at(&self, file: &ColdIoFile, buf: IoBuf, offset_bytes: u64) -> Completion {
        with_file!(
            self,
            file,
            |io, f| io.write_at(f, buf, offset_bytes),
            (Err(wrong_file(file.name())), buf)
        )
    }

    fn read_at(&self, file: &ColdIoFile, buf: IoBuf, offset_bytes: u64) -> Completion {
        with_file!(
            self,
            file,
            |io, f| io.read_at(f, buf, offset_bytes),
            (Err(wrong_file(file.name())), buf)
        )
    }

    fn fdatasync(&self, file: &ColdIoFile) -> Result<()> {
        with_file!(
            self,
            file,
            |io, f| io.fdatasync(f),
            Err(wrong_file(file.name()))
        )
    }

    fn sync_dir(&self) -> Result<()> {
        match self {
            ColdIo::Files(io) => io.sync_dir(),
            #[cfg(feature = "object-store")]
            ColdIo::Object(io) => io.sync_dir(),
        }
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        match self {
            ColdIo::Files(io) => io.rename(from, to),
            #[cfg(feature = "object-store")]
            ColdIo::Object(io) => io.rename(from, to),
        }
    }

    fn remove(&self, name: &str) -> Result<()> {
        match self {
            ColdIo::Files(io) => io.remove(name),
            #[cfg(feature = "object-store")]
            ColdIo::Object(io) => io.remove(name),
        }
    }

    fn list(&self) -> Result<Vec<String>> {
        match self {
            ColdIo::Files(io) => io.list(),
            #[cfg(feature = "object-store")]
            ColdIo::Object(io) => io.list(),
        }
    }

    fn evict_cache(&self, file: &ColdIoFile) -> Result<()> {
        with_file!(
            self,
            file,
            |io, f| io.evict_cache(f),
            Err(wrong_file(file.name()))
        )
    }

    fn write_stream_synced<F>(
        &self,
        file: &ColdIoFile,
        offset_bytes: u64,
        shape: StreamShape,
        fill: F,
    ) -> Result<u64>
    where
        F: FnMut(&mut IoBuf) -> Result<Fill>,
    {
        with_file!(
            self,
            file,
            |io, f| io.write_stream_synced(f, offset_bytes, shape, fill),
            Err(wrong_file(file.name()))
        )
    }

    fn read_batch(&self, file: &ColdIoFile, requests: Vec<(u64, IoBuf)>) -> Vec<Completion> {
        with_file!(
            self,
            file,
            |io, f| io.read_batch(f, requests),
            requests
                .into_iter()
                .map(|(_, buf)| (Err(wrong_file(file.name())), buf))
                .collect()
        )
    }

    fn read_stream<F>(
        &self,
        file: &ColdIoFile,
        offset_bytes: u64,
        len_bytes: u64,
        shape: StreamShape,
        consume: F,
    ) -> Result<()>
    where
        F: FnMut(u64, &[u8]) -> Result<()>,
    {
        with_file!(
            self,
            file,
            |io, f| io.read_stream(f, offset_bytes, len_bytes, shape, consume),
            Err(wrong_file(file.name()))
        )
    }
}

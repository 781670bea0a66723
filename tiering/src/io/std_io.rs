//! [`StdIo`]: the portable implementation, pread/pwrite/fdatasync through `std::fs`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{check_name, Completion, IoBuf, IoFile, SegmentIo, IO_ALIGN_BYTES};
use crate::error::{IoOp, Result, TieringError};

/// Whether files are opened with O_DIRECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DirectIo {
    /// Probe the directory: O_DIRECT when the file system accepts an aligned direct write,
    /// buffered I/O otherwise (tmpfs, some overlay set-ups).
    #[default]
    Auto,
    /// Always buffered I/O.
    Off,
}

/// Name of the scratch file the O_DIRECT probe writes and removes.
pub(crate) const DIRECT_PROBE_NAME: &str = ".pstream-direct-probe";

/// A file of [`StdIo`] or [`super::UringIo`].
#[derive(Debug)]
pub struct StdFile {
    pub(crate) file: File,
    name: String,
}

impl IoFile for StdFile {
    fn name(&self) -> &str {
        &self.name
    }
}

impl StdFile {
    pub(crate) fn raw_fd(&self) -> i32 {
        self.file.as_raw_fd()
    }
}

/// pread/pwrite/fdatasync on a directory.
#[derive(Debug)]
pub struct StdIo {
    dir: PathBuf,
    dir_file: File,
    direct: bool,
}

impl StdIo {
    /// Buffered I/O on `dir` (created if missing).
    pub fn open(dir: impl AsRef<Path>) -> Result<StdIo> {
        StdIo::open_with(dir, DirectIo::Off)
    }

    /// I/O on `dir` (created if missing) with the given O_DIRECT policy.
    pub fn open_with(dir: impl AsRef<Path>, direct_io: DirectIo) -> Result<StdIo> {
        let dir = dir.as_ref().to_path_buf();
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
        let direct = match direct_io {
            DirectIo::Off => false,
            DirectIo::Auto => probe_direct(&dir),
        };
        Ok(StdIo {
            dir,
            dir_file,
            direct,
        })
    }

    pub(crate) fn with_direct(dir: PathBuf, dir_file: File, direct: bool) -> StdIo {
        StdIo {
            dir,
            dir_file,
            direct,
        }
    }

    pub(crate) fn dir_fd(&self) -> i32 {
        self.dir_file.as_raw_fd()
    }

    fn path(&self, name: &str) -> Result<PathBuf> {
        check_name(name)?;
        Ok(self.dir.join(name))
    }

    fn open_options(&self) -> OpenOptions {
        let mut options = OpenOptions::new();
        if self.direct {
            options.custom_flags(libc::O_DIRECT);
        }
        options
    }
}

/// True when `dir` accepts an aligned O_DIRECT write. Any failure means "no" (and buffered
/// I/O is used), never an error.
pub(crate) fn probe_direct(dir: &Path) -> bool {
    let path = dir.join(DIRECT_PROBE_NAME);
    let result = (|| -> io::Result<()> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)?;
        let mut buf = IoBuf::with_capacity(IO_ALIGN_BYTES);
        buf.set_len(IO_ALIGN_BYTES);
        let written = file.write_at(buf.as_slice(), 0)?;
        let read = file.read_at(buf.as_mut_slice(), 0)?;
        if written == IO_ALIGN_BYTES && read == IO_ALIGN_BYTES {
            Ok(())
        } else {
            Err(io::Error::other("short direct I/O"))
        }
    })();
    let _ignored = std::fs::remove_file(&path);
    match result {
        Ok(()) => true,
        Err(error) => {
            tracing::info!(dir = %dir.display(), %error, "O_DIRECT not usable, buffered I/O");
            false
        }
    }
}

/// Drops clean cached pages of `file` (posix_fadvise DONTNEED).
#[expect(unsafe_code, reason = "posix_fadvise is an FFI call")]
pub(crate) fn fadvise_dontneed(file: &StdFile) -> Result<()> {
    // SAFETY: posix_fadvise only reads its integer arguments; the fd is open for the whole
    // call because `file` borrows it.
    let code = unsafe { libc::posix_fadvise(file.raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if code == 0 {
        Ok(())
    } else {
        Err(TieringError::Fs {
            op: IoOp::Stat,
            file: file.name.clone(),
            source: io::Error::from_raw_os_error(code),
        })
    }
}

fn retry_interrupted<T>(mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match op() {
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

impl SegmentIo for StdIo {
    type File = StdFile;

    fn dir(&self) -> &Path {
        &self.dir
    }

    fn is_direct(&self) -> bool {
        self.direct
    }

    fn create(&self, name: &str) -> Result<StdFile> {
        let path = self.path(name)?;
        let file = self
            .open_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(path)
            .map_err(|source| TieringError::Fs {
                op: IoOp::Create,
                file: name.into(),
                source,
            })?;
        Ok(StdFile {
            file,
            name: name.to_owned(),
        })
    }

    fn open(&self, name: &str) -> Result<StdFile> {
        let path = self.path(name)?;
        let file = self
            .open_options()
            .read(true)
            .open(path)
            .map_err(|source| TieringError::Fs {
                op: IoOp::Open,
                file: name.into(),
                source,
            })?;
        Ok(StdFile {
            file,
            name: name.to_owned(),
        })
    }

    fn file_len(&self, file: &StdFile) -> Result<u64> {
        let metadata = file.file.metadata().map_err(|source| TieringError::Fs {
            op: IoOp::Stat,
            file: file.name.clone(),
            source,
        })?;
        Ok(metadata.len())
    }

    fn write_at(&self, file: &StdFile, buf: IoBuf, offset_bytes: u64) -> Completion {
        debug_assert!(!self.direct || buf.is_aligned_for_direct());
        let result = retry_interrupted(|| file.file.write_at(buf.as_slice(), offset_bytes));
        let result = result.map_err(|source| TieringError::Io {
            op: IoOp::Write,
            file: file.name.clone(),
            offset_bytes,
            source,
        });
        (result, buf)
    }

    fn read_at(&self, file: &StdFile, mut buf: IoBuf, offset_bytes: u64) -> Completion {
        debug_assert!(!self.direct || buf.is_aligned_for_direct());
        // pread on a regular file is short only at end of file or on a signal; loop so that
        // "short" means "end of file".
        let mut done = 0usize;
        let result = loop {
            if done == buf.len() {
                break Ok(done);
            }
            let target = &mut buf.as_mut_slice()[done..];
            match retry_interrupted(|| file.file.read_at(target, offset_bytes + done as u64)) {
                Ok(0) => break Ok(done),
                Ok(n) => done += n,
                Err(source) => {
                    break Err(TieringError::Io {
                        op: IoOp::Read,
                        file: file.name.clone(),
                        offset_bytes: offset_bytes + done as u64,
                        source,
                    })
                }
            }
        };
        (result, buf)
    }

    fn fdatasync(&self, file: &StdFile) -> Result<()> {
        file.file
            .sync_data()
            .map_err(|source| TieringError::SyncFailed {
                op: IoOp::Fdatasync,
                file: file.name.clone(),
                source,
            })
    }

    fn sync_dir(&self) -> Result<()> {
        self.dir_file
            .sync_all()
            .map_err(|source| TieringError::SyncFailed {
                op: IoOp::SyncDir,
                file: self.dir.display().to_string(),
                source,
            })
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        let from_path = self.path(from)?;
        let to_path = self.path(to)?;
        std::fs::rename(from_path, to_path).map_err(|source| TieringError::Fs {
            op: IoOp::Rename,
            file: format!("{from} -> {to}"),
            source,
        })
    }

    fn remove(&self, name: &str) -> Result<()> {
        let path = self.path(name)?;
        std::fs::remove_file(path).map_err(|source| TieringError::Fs {
            op: IoOp::Remove,
            file: name.into(),
            source,
        })
    }

    fn list(&self) -> Result<Vec<String>> {
        let dir_name = || self.dir.display().to_string();
        let entries = std::fs::read_dir(&self.dir).map_err(|source| TieringError::Fs {
            op: IoOp::List,
            file: dir_name(),
            source,
        })?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| TieringError::Fs {
                op: IoOp::List,
                file: dir_name(),
                source,
            })?;
            let is_file = entry
                .file_type()
                .map(|kind| kind.is_file())
                .unwrap_or(false);
            if let (true, Some(name)) = (is_file, entry.file_name().to_str()) {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn evict_cache(&self, file: &StdFile) -> Result<()> {
        fadvise_dontneed(file)
    }
}

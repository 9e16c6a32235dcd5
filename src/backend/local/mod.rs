//! A repository in a local directory. Every object is reached from the root's descriptor one
//! component at a time (`openat` with `O_NOFOLLOW`), so a symbolic link anywhere inside is
//! refused, never followed. A save writes a private temporary file in `.wqm-backend/tmp/`,
//! fsyncs it, renames it into place (`RENAME_NOREPLACE` for `save_new`) and fsyncs the
//! directory: a reader sees the old object or the whole new one, and after a crash at most a
//! temporary file is left, which `unfinished` reports.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use rustix::fs::AtFlags;

mod paths;
mod read;
mod remove;
mod write;

use super::{Backend, BackendError, ByteStream, Entry, Name, ObjectInfo, Unfinished, RESERVED};

/// How much one read of a loaded file hands over.
const READ_PIECE: usize = 256 * 1024;

/// A local directory holding a repository.
#[derive(Clone, Debug)]
pub struct LocalBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
}

impl LocalBackend {
    /// The repository in `root`, made (private, `0700`) when missing.
    pub fn open(root: &Path) -> Result<Self, BackendError> {
        crate::fs::create_private_dir_all(root).map_err(|source| BackendError::Io {
            what: "cannot create the repository directory",
            path: root.display().to_string(),
            source,
        })?;
        Self::existing(root)
    }

    /// The directory `root` as it is, for reading: nothing is made (a missing one is
    /// `NotFound`). `root` itself may be reached through a link (the user named it); nothing
    /// inside it is.
    pub fn existing(root: &Path) -> Result<Self, BackendError> {
        let backend = LocalBackend {
            inner: Arc::new(Inner {
                root: root.to_path_buf(),
            }),
        };
        match backend.inner.root_fd() {
            Ok(_) => Ok(backend),
            Err(BackendError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Err(backend.inner.not_found(""))
            }
            Err(e) => Err(e),
        }
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The object `name` opened from blocking code, at the file itself (no runtime, no thread
    /// hop: a local repository's reads are file reads), and its size. As `load`: no link
    /// followed, only a regular file.
    pub fn open_blocking(&self, name: &Name) -> Result<(File, u64), BackendError> {
        self.inner.open(name)
    }

    /// `stat` from blocking code.
    pub fn stat_blocking(&self, name: &Name) -> Result<ObjectInfo, BackendError> {
        self.inner.stat(name)
    }

    /// What `name` itself is (a link reported as one, not followed), from blocking code; a link
    /// in a directory above it is refused (`BackendError::Link`).
    pub fn entry_blocking(&self, name: &Name) -> Result<Entry, BackendError> {
        self.inner.entry(name)
    }

    /// Everything under the root whose name starts with `prefix`, from blocking code, sorted:
    /// objects, and what `list` leaves out — directories (empty ones too), links, other
    /// special files, names that are not UTF-8 (shown lossily). Links are reported, never
    /// entered.
    pub fn entries_blocking(&self, prefix: &str) -> Result<Vec<Entry>, BackendError> {
        self.inner.entries(prefix)
    }

    /// `entries_blocking` handed over one at a time (a directory's after another, unsorted),
    /// held nowhere: a directory is entered when `found` says so.
    pub fn visit_blocking(
        &self,
        prefix: &str,
        found: impl FnMut(Entry) -> bool,
    ) -> Result<(), BackendError> {
        self.inner.walk(prefix, found)
    }

    /// The regular file `name` opened for reading and writing, no link followed, for a
    /// `flock`: NFS emulates it with byte-range locks, which a read-only descriptor cannot take.
    /// A read-only file system is `BackendError::Io` with its `EROFS`.
    pub fn open_for_lock_blocking(&self, name: &Name) -> Result<File, BackendError> {
        self.inner.open_for_lock(name)
    }

    /// The `flock` of the regular file `name` (opened as by `open_for_lock_blocking`), taken
    /// without waiting: `None` when another holds it.
    pub fn try_lock_blocking(&self, name: &Name) -> Result<Option<File>, BackendError> {
        let file = self.inner.open_for_lock(name)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(self.inner.io("cannot lock", name.as_str(), e))
            }
        }
    }

    /// Renames `from` (an object or a directory, a link as itself) to `to`, which must be free,
    /// in one step, and syncs the directories: a local commit's or deletion's atomic move, which
    /// a repository on S3 has no way to make.
    pub fn rename_blocking(&self, from: &Name, to: &Name) -> Result<(), BackendError> {
        self.inner.rename(from, to)
    }

    /// `save` from blocking code.
    pub fn save_blocking(&self, name: &Name, bytes: &[u8]) -> Result<(), BackendError> {
        self.inner.save(name, bytes)
    }

    /// A new private file `name` to write, its directories made, nothing there before and no
    /// link on the way: a local run's own file (a lock, a staged file, a chunk before it is
    /// named), which it fsyncs, renames and makes durable itself (`sync_dir_blocking`).
    pub fn create_new_blocking(&self, name: &Name) -> Result<File, BackendError> {
        self.inner.create_new(name)
    }

    /// The directory `name` (and those above it), made private where missing; synced by the
    /// caller when it must last (`sync_dir_blocking` of its parent).
    pub fn create_dir_blocking(&self, name: &Name) -> Result<(), BackendError> {
        self.inner.create_dir(name)
    }

    /// Renames the file `from` over `to` without syncing: names landed in a batch (a run's
    /// chunks) are made durable by one `sync_dir_blocking` of each directory, and of the parent
    /// of each directory made for them.
    pub fn rename_over_blocking(&self, from: &Name, to: &Name) -> Result<(), BackendError> {
        self.inner.rename_over(from, to)
    }

    /// Makes what is named in the directory `dir` (`""`: the root) durable.
    pub fn sync_dir_blocking(&self, dir: &str) -> Result<(), BackendError> {
        self.inner.sync_dir(dir)
    }

    /// Swaps `a` and `b` in one atomic step (`RENAME_EXCHANGE`; `Unsupported` where it is not
    /// available) and syncs their directories: a local `--force` commit.
    pub fn exchange_blocking(&self, a: &Name, b: &Name) -> Result<(), BackendError> {
        self.inner.exchange(a, b)
    }

    /// `remove_under` from blocking code: the objects removed and their bytes.
    pub fn remove_under_blocking(&self, dir: &str) -> Result<(u64, u64), BackendError> {
        self.inner.remove_under(dir)
    }

    /// `list` from blocking code.
    pub fn list_blocking(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        self.inner.list(prefix)
    }

    /// `remove_all` from blocking code.
    pub fn remove_all_blocking(&self, names: &[Name]) -> Result<(), BackendError> {
        self.inner.remove_all(names)
    }

    /// `copy` from blocking code.
    pub fn copy_blocking(&self, from: &Name, to: &Name) -> Result<u64, BackendError> {
        self.inner.copy(from, to)
    }

    /// `remove` from blocking code.
    pub fn remove_blocking(&self, name: &Name) -> Result<(), BackendError> {
        self.inner.remove(name)
    }

    /// A save written a piece at a time from blocking code (a pack filling): its temporary file,
    /// given its name by `Saving::commit`, removed if it is dropped first.
    pub fn begin_save_blocking(&self) -> Result<Saving, BackendError> {
        Ok(Saving {
            backend: self.clone(),
            temp: self.inner.create_temp()?,
        })
    }

    /// Removes the temporary file of every save under way (`unfinished`), from blocking code:
    /// only where no run can be saving (under the repository's exclusive lock), when each is
    /// a killed run's. How many went.
    pub fn remove_unfinished_blocking(&self) -> Result<usize, BackendError> {
        let unfinished = self.inner.unfinished()?;
        for upload in &unfinished {
            self.inner.abort(upload)?;
        }
        Ok(unfinished.len())
    }

    /// Runs blocking file work on tokio's blocking threads.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> Result<T, BackendError> + Send + 'static,
    ) -> Result<T, BackendError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || work(&inner))
            .await
            .map_err(|e| BackendError::Other {
                repository: self.describe(),
                what: "a file operation".to_string(),
                reason: e.to_string(),
            })?
    }

    async fn save_mode(
        &self,
        name: &Name,
        mut data: ByteStream,
        replace: bool,
    ) -> Result<u64, BackendError> {
        let temp = self.blocking(|inner| inner.create_temp()).await?;
        let mut temp = Some(temp);
        let mut written = 0u64;
        while let Some(piece) = data.next().await {
            let piece = piece.map_err(|source| BackendError::Io {
                what: "the data to save failed",
                path: self.inner.shown(name.as_str()),
                source,
            })?;
            written += piece.len() as u64;
            let mut current = temp
                .take()
                .expect("the temporary file is back after each write");
            current = self
                .blocking(move |inner| {
                    current
                        .file
                        .write_all(&piece)
                        .map_err(|e| inner.io("cannot write", RESERVED, e))?;
                    Ok(current)
                })
                .await?;
            temp = Some(current);
        }
        let temp = temp.expect("the temporary file is back after each write");
        let name = name.clone();
        self.blocking(move |inner| inner.commit(temp, &name, replace))
            .await?;
        Ok(written)
    }
}

/// A save under way from blocking code (`LocalBackend::begin_save_blocking`).
pub struct Saving {
    backend: LocalBackend,
    temp: Temp,
}

impl Saving {
    /// The temporary file, to write the object's bytes into.
    pub fn file(&mut self) -> &mut File {
        &mut self.temp.file
    }

    /// Makes it the object `name` as a save does: fsynced, renamed into place (over an object
    /// there), the directory fsynced.
    pub fn commit(self, name: &Name) -> Result<(), BackendError> {
        self.backend.inner.commit(self.temp, name, true)
    }
}

/// A temporary file being written; removed when dropped unless it was renamed into place.
struct Temp {
    tmp_dir: OwnedFd,
    name: String,
    file: File,
    done: bool,
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.done {
            let _ = rustix::fs::unlinkat(&self.tmp_dir, self.name.as_str(), AtFlags::empty());
        }
    }
}

#[async_trait::async_trait]
impl Backend for LocalBackend {
    fn describe(&self) -> String {
        self.inner.root.display().to_string()
    }

    async fn save(&self, name: &Name, data: ByteStream) -> Result<u64, BackendError> {
        self.save_mode(name, data, true).await
    }

    async fn save_new(&self, name: &Name, data: Bytes) -> Result<(), BackendError> {
        self.save_mode(name, super::once(data), false)
            .await
            .map(|_| ())
    }

    async fn load(
        &self,
        name: &Name,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, BackendError> {
        let name = name.clone();
        let (file, left) = self
            .blocking(move |inner| {
                let (mut file, size) = inner.open(&name)?;
                let range = range.unwrap_or(0..size);
                let start = range.start.min(size);
                let end = range.end.clamp(start, size);
                file.seek(SeekFrom::Start(start))
                    .map_err(|e| inner.io("cannot read", name.as_str(), e))?;
                Ok((file, end - start))
            })
            .await?;
        let pieces = stream::try_unfold((file, left), |(mut file, left)| async move {
            if left == 0 {
                return Ok(None);
            }
            let (file, piece) = tokio::task::spawn_blocking(move || {
                let want = (left as usize).min(READ_PIECE);
                let mut buffer = vec![0u8; want];
                let mut got = 0;
                while got < want {
                    match file.read(&mut buffer[got..]) {
                        Ok(0) => break,
                        Ok(n) => got += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                if got < want {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file shrank while it was read",
                    ));
                }
                buffer.truncate(got);
                Ok((file, Bytes::from(buffer)))
            })
            .await
            .map_err(io::Error::other)??;
            let left = left - piece.len() as u64;
            Ok(Some((piece, (file, left))))
        });
        Ok(pieces.boxed())
    }

    async fn stat(&self, name: &Name) -> Result<ObjectInfo, BackendError> {
        let name = name.clone();
        self.blocking(move |inner| inner.stat(&name)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        let prefix = prefix.to_string();
        self.blocking(move |inner| inner.list(&prefix)).await
    }

    /// A hard link (`Inner::link`); the bytes copied across file systems.
    async fn copy(&self, from: &Name, to: &Name) -> Result<u64, BackendError> {
        let (from, to) = (from.clone(), to.clone());
        self.blocking(move |inner| inner.copy(&from, &to)).await
    }

    async fn remove(&self, name: &Name) -> Result<(), BackendError> {
        let name = name.clone();
        self.blocking(move |inner| inner.remove(&name)).await
    }

    /// The directory goes whole (`Inner::remove_under`).
    async fn remove_under(&self, dir: &str) -> Result<usize, BackendError> {
        let dir = dir.to_string();
        let (objects, _) = self.blocking(move |inner| inner.remove_under(&dir)).await?;
        Ok(objects as usize)
    }

    /// Each directory synced once, and those left empty removed (`Inner::remove_all`).
    async fn remove_all(&self, names: &[Name]) -> Result<(), BackendError> {
        let names = names.to_vec();
        self.blocking(move |inner| inner.remove_all(&names)).await
    }

    async fn top_level(&self) -> Result<Vec<String>, BackendError> {
        self.blocking(|inner| inner.top_level()).await
    }

    async fn unfinished(&self) -> Result<Vec<Unfinished>, BackendError> {
        self.blocking(|inner| inner.unfinished()).await
    }

    /// A link or an exclusive create: always.
    async fn refuses_taken_names(&self) -> Result<bool, BackendError> {
        Ok(true)
    }

    async fn abort(&self, upload: &Unfinished) -> Result<(), BackendError> {
        let upload = upload.clone();
        self.blocking(move |inner| inner.abort(&upload)).await
    }
}

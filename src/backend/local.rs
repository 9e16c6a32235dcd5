//! A repository in a local directory. Every object is reached from the root's descriptor one
//! component at a time (`openat` with `O_NOFOLLOW`), so a symbolic link anywhere inside is
//! refused, never followed. A save writes a private temporary file in `.wqm-backend/tmp/`,
//! fsyncs it, renames it into place (`RENAME_NOREPLACE` for `save_new`) and fsyncs the
//! directory: a reader sees the old object or the whole new one, and after a crash at most a
//! temporary file is left, which `unfinished` reports.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::{
    Backend, BackendError, ByteStream, Entry, Kind, Name, ObjectInfo, Unfinished, RESERVED,
};

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

    /// Renames `from` (an object or a directory, a link as itself) to `to`, which must be free,
    /// in one step, and syncs the directories: a local commit's or deletion's atomic move, which
    /// a repository on S3 has no way to make.
    pub fn rename_blocking(&self, from: &Name, to: &Name) -> Result<(), BackendError> {
        self.inner.rename(from, to)
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

impl Inner {
    fn shown(&self, name: &str) -> String {
        self.root.join(name).display().to_string()
    }

    fn io(&self, what: &'static str, name: &str, source: io::Error) -> BackendError {
        BackendError::Io {
            what,
            path: self.shown(name),
            source,
        }
    }

    fn not_found(&self, name: &str) -> BackendError {
        BackendError::NotFound {
            repository: self.root.display().to_string(),
            name: name.to_string(),
        }
    }

    fn root_fd(&self) -> Result<OwnedFd, BackendError> {
        rustix::fs::open(
            &self.root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.io("cannot open the repository directory", "", e.into()))
    }

    /// The directory `dirs` below the root, each component a real directory (made, `0700`,
    /// when `create`). `Ok(None)` when one is missing and not made.
    fn dir(
        &self,
        dirs: &[&str],
        create: bool,
        name: &str,
    ) -> Result<Option<OwnedFd>, BackendError> {
        let mut dir = self.root_fd()?;
        for part in dirs {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let next = match rustix::fs::openat(&dir, *part, flags, Mode::empty()) {
                Err(rustix::io::Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&dir, *part, Mode::from_raw_mode(0o700)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => {
                            return Err(self.io("cannot create a directory for", name, e.into()))
                        }
                    }
                    rustix::fs::fsync(&dir).map_err(|e| self.io("cannot sync", name, e.into()))?;
                    rustix::fs::openat(&dir, *part, flags, Mode::empty())
                }
                other => other,
            };
            dir = match next {
                Ok(fd) => fd,
                Err(rustix::io::Errno::NOENT) => return Ok(None),
                Err(e) => return Err(self.through_link(&dir, part, name, e)),
            };
        }
        Ok(Some(dir))
    }

    /// A failed open of `part` in `dir`: a link there is refused as such.
    fn through_link(
        &self,
        dir: &OwnedFd,
        part: &str,
        name: &str,
        e: rustix::io::Errno,
    ) -> BackendError {
        let link = e == rustix::io::Errno::LOOP
            || rustix::fs::statat(dir, part, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Symlink);
        if link {
            BackendError::Link {
                repository: self.root.display().to_string(),
                name: name.to_string(),
                link: part.to_string(),
            }
        } else if e == rustix::io::Errno::NOTDIR {
            self.not_found(name)
        } else {
            self.io("cannot open", name, e.into())
        }
    }

    /// The directory holding `name`'s last component, and that component.
    fn parent<'n>(
        &self,
        name: &'n Name,
        create: bool,
    ) -> Result<(Option<OwnedFd>, &'n str), BackendError> {
        let mut parts: Vec<&str> = name.as_str().split('/').collect();
        let last = parts.pop().expect("a name has a component");
        Ok((self.dir(&parts, create, name.as_str())?, last))
    }

    fn tmp_dir(&self) -> Result<OwnedFd, BackendError> {
        Ok(self
            .dir(&[RESERVED, "tmp"], true, RESERVED)?
            .expect("made when missing"))
    }

    fn create_temp(&self) -> Result<Temp, BackendError> {
        let tmp_dir = self.tmp_dir()?;
        let name = super::random_id();
        let fd = rustix::fs::openat(
            &tmp_dir,
            name.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| self.io("cannot create a temporary file in", RESERVED, e.into()))?;
        Ok(Temp {
            tmp_dir,
            name,
            file: File::from(fd),
            done: false,
        })
    }

    /// fsync, rename into place (never over an object when `!replace`), fsync the directory.
    fn commit(&self, mut temp: Temp, name: &Name, replace: bool) -> Result<(), BackendError> {
        temp.file
            .sync_all()
            .map_err(|e| self.io("cannot sync", name.as_str(), e))?;
        // A `remove_all` emptying the directory may take it away between its open and the
        // rename (ENOENT): then it is made again.
        let mut attempts = 0;
        let (dir, renamed) = loop {
            let (dir, last) = self.parent(name, true)?;
            let dir = dir.expect("made when missing");
            let renamed = if replace {
                rustix::fs::renameat(&temp.tmp_dir, temp.name.as_str(), &dir, last)
            } else {
                rename_noreplace(&temp.tmp_dir, temp.name.as_str(), &dir, last)
            };
            attempts += 1;
            if renamed != Err(rustix::io::Errno::NOENT) || attempts == 3 {
                break (dir, renamed);
            }
        };
        match renamed {
            Ok(()) => temp.done = true,
            Err(rustix::io::Errno::EXIST) if !replace => {
                return Err(BackendError::AlreadyExists {
                    repository: self.root.display().to_string(),
                    name: name.to_string(),
                })
            }
            Err(e) if e == rustix::io::Errno::ISDIR || e == rustix::io::Errno::NOTEMPTY => {
                return Err(self.io("a directory is in the way of", name.as_str(), e.into()))
            }
            Err(e) => return Err(self.io("cannot rename into place", name.as_str(), e.into())),
        }
        rustix::fs::fsync(&dir)
            .map_err(|e| self.io("cannot sync the directory of", name.as_str(), e.into()))
    }

    fn rename(&self, from: &Name, to: &Name) -> Result<(), BackendError> {
        let (from_dir, from_last) = self.parent(from, false)?;
        let from_dir = from_dir.ok_or_else(|| self.not_found(from.as_str()))?;
        let (to_dir, to_last) = self.parent(to, true)?;
        let to_dir = to_dir.expect("made when missing");
        match rename_noreplace(&from_dir, from_last, &to_dir, to_last) {
            Ok(()) => {}
            Err(rustix::io::Errno::NOENT) => return Err(self.not_found(from.as_str())),
            Err(rustix::io::Errno::EXIST | rustix::io::Errno::NOTEMPTY) => {
                return Err(BackendError::AlreadyExists {
                    repository: self.root.display().to_string(),
                    name: to.to_string(),
                })
            }
            Err(e) => return Err(self.io("cannot rename", from.as_str(), e.into())),
        }
        for (dir, name) in [(&to_dir, to), (&from_dir, from)] {
            rustix::fs::fsync(dir)
                .map_err(|e| self.io("cannot sync the directory of", name.as_str(), e.into()))?;
        }
        Ok(())
    }

    /// The regular file `name`, opened without following a link, and its size.
    fn open(&self, name: &Name) -> Result<(File, u64), BackendError> {
        self.open_with(name, OFlags::RDONLY)
    }

    fn open_for_lock(&self, name: &Name) -> Result<File, BackendError> {
        Ok(self.open_with(name, OFlags::RDWR)?.0)
    }

    /// `open` with the access `mode` (`RDONLY`, `RDWR`).
    fn open_with(&self, name: &Name, mode: OFlags) -> Result<(File, u64), BackendError> {
        let (dir, last) = self.parent(name, false)?;
        let dir = dir.ok_or_else(|| self.not_found(name.as_str()))?;
        // O_NONBLOCK: a FIFO planted in a repository must not hang the open.
        let flags = mode | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let fd = match rustix::fs::openat(&dir, last, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Err(self.not_found(name.as_str())),
            Err(e) => return Err(self.through_link(&dir, last, name.as_str(), e)),
        };
        let file = File::from(fd);
        let meta = file
            .metadata()
            .map_err(|e| self.io("cannot read", name.as_str(), e))?;
        if meta.is_dir() {
            // A directory holds objects; it is none itself.
            return Err(self.not_found(name.as_str()));
        }
        if !meta.is_file() {
            return Err(self.not_a_file(name.as_str()));
        }
        Ok((file, meta.len()))
    }

    fn not_a_file(&self, name: &str) -> BackendError {
        BackendError::NotAFile {
            repository: self.root.display().to_string(),
            name: name.to_string(),
        }
    }

    fn entry(&self, name: &Name) -> Result<Entry, BackendError> {
        let (dir, last) = self.parent(name, false)?;
        let dir = dir.ok_or_else(|| self.not_found(name.as_str()))?;
        let stat = match rustix::fs::statat(&dir, last, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(rustix::io::Errno::NOENT) => return Err(self.not_found(name.as_str())),
            Err(e) => return Err(self.io("cannot stat", name.as_str(), e.into())),
        };
        Ok(Entry {
            name: name.to_string(),
            kind: kind_of(&stat),
            size: stat.st_size as u64,
        })
    }

    fn stat(&self, name: &Name) -> Result<ObjectInfo, BackendError> {
        let entry = self.entry(name)?;
        match entry.kind {
            Kind::File => Ok(ObjectInfo {
                name: entry.name,
                size: entry.size,
            }),
            Kind::Dir => Err(self.not_found(name.as_str())),
            Kind::Symlink => Err(BackendError::Link {
                repository: self.root.display().to_string(),
                name: name.to_string(),
                link: name.to_string(),
            }),
            Kind::Other => Err(self.not_a_file(name.as_str())),
        }
    }

    /// `to` made a second name of `from`'s file (a hard link, through a temporary name renamed
    /// over whatever is at `to`): no byte is copied, and an object is never changed in place
    /// (a save renames a new file over its name), so the two stay apart. `None` where no link
    /// can be made (a mount inside the repository, a file system without hard links, a file
    /// with too many): then it is copied.
    fn link(&self, from: &Name, to: &Name) -> Result<Option<u64>, BackendError> {
        let size = self.stat(from)?.size;
        let (from_dir, from_last) = self.parent(from, false)?;
        let from_dir = from_dir.ok_or_else(|| self.not_found(from.as_str()))?;
        let tmp_dir = self.tmp_dir()?;
        let temp = super::random_id();
        match rustix::fs::linkat(
            &from_dir,
            from_last,
            &tmp_dir,
            temp.as_str(),
            AtFlags::empty(),
        ) {
            Ok(()) => {}
            Err(
                rustix::io::Errno::XDEV
                | rustix::io::Errno::PERM
                | rustix::io::Errno::OPNOTSUPP
                | rustix::io::Errno::MLINK,
            ) => return Ok(None),
            Err(rustix::io::Errno::NOENT) => return Err(self.not_found(from.as_str())),
            Err(e) => return Err(self.io("cannot link", to.as_str(), e.into())),
        }
        let placed = self.parent(to, true).and_then(|(dir, last)| {
            let dir = dir.expect("made when missing");
            match rustix::fs::renameat(&tmp_dir, temp.as_str(), &dir, last) {
                Ok(()) => Ok(Some(dir)),
                Err(rustix::io::Errno::XDEV) => Ok(None),
                Err(e) => Err(self.io("cannot rename into place", to.as_str(), e.into())),
            }
        });
        let Ok(Some(dir)) = placed else {
            let _ = rustix::fs::unlinkat(&tmp_dir, temp.as_str(), AtFlags::empty());
            return placed.map(|_| None);
        };
        rustix::fs::fsync(&dir)
            .map_err(|e| self.io("cannot sync the directory of", to.as_str(), e.into()))?;
        Ok(Some(size))
    }

    /// `to` made a copy of `from`: a link (`link`), else its bytes copied into a new file
    /// renamed over `to`.
    fn copy(&self, from: &Name, to: &Name) -> Result<u64, BackendError> {
        if let Some(size) = self.link(from, to)? {
            return Ok(size);
        }
        let (mut file, size) = self.open(from)?;
        let mut temp = self.create_temp()?;
        io::copy(&mut file, &mut temp.file).map_err(|e| self.io("cannot copy", to.as_str(), e))?;
        self.commit(temp, to, true)?;
        Ok(size)
    }

    fn remove(&self, name: &Name) -> Result<(), BackendError> {
        let (dir, last) = self.parent(name, false)?;
        let Some(dir) = dir else { return Ok(()) };
        match rustix::fs::unlinkat(&dir, last, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(self.io("cannot remove", name.as_str(), e.into())),
        }
        rustix::fs::fsync(&dir)
            .map_err(|e| self.io("cannot sync the directory of", name.as_str(), e.into()))
    }

    /// Removes every object of `names` (a missing one is no error), then each directory that
    /// held one and is left empty (not those above it): directories are implied by objects
    /// here as on S3, so a collection leaves no empty fan-out directory behind. Each
    /// directory is synced once when the names of one directory come together (a garbage
    /// collection's, by fan-out directory), not once per object; one is open at a time.
    fn remove_all(&self, names: &[Name]) -> Result<(), BackendError> {
        self.remove_paths(names.iter().map(Name::as_str))
    }

    /// `remove_all` of names as `walk` found them: a name no object can have (a backslash, a
    /// control character) is removed too.
    fn remove_paths<'n>(&self, names: impl Iterator<Item = &'n str>) -> Result<(), BackendError> {
        let mut held: BTreeSet<Vec<String>> = BTreeSet::new();
        let mut open: Option<(Vec<String>, OwnedFd)> = None;
        for name in names {
            let mut parts: Vec<String> = name.split('/').map(String::from).collect();
            let last = parts.pop().expect("a name has a component");
            if open.as_ref().is_none_or(|(dir, _)| *dir != parts) {
                if let Some((dir, fd)) = open.take() {
                    self.sync(&dir, fd)?;
                }
                let dirs: Vec<&str> = parts.iter().map(String::as_str).collect();
                match self.dir(&dirs, false, name)? {
                    Some(fd) => open = Some((parts.clone(), fd)),
                    None => continue,
                }
                held.insert(parts);
            }
            let (_, dir) = open.as_ref().expect("opened above");
            match rustix::fs::unlinkat(dir, last.as_str(), AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(self.io("cannot remove", name, e.into())),
            }
            if cfg!(debug_assertions) {
                // `local:removed-from:.wqm-chunks`: after each chunk a collection removes.
                let top = name.split('/').next().unwrap_or_default();
                crate::failpoint::hit(&format!("local:removed-from:{top}"))
                    .map_err(|e| self.io("cannot remove", name, e))?;
            }
        }
        if let Some((dir, fd)) = open {
            self.sync(&dir, fd)?;
        }
        for parts in held {
            self.remove_if_empty(&parts)?;
        }
        Ok(())
    }

    /// Makes the removals in the directory `parts` durable.
    fn sync(&self, parts: &[String], dir: OwnedFd) -> Result<(), BackendError> {
        rustix::fs::fsync(&dir).map_err(|e| self.io("cannot sync", &parts.join("/"), e.into()))
    }

    /// Removes the directory `dir` and everything in it (links removed as links, never
    /// followed; the directory above it stays); returns how many objects went and their bytes.
    fn remove_under(&self, dir: &str) -> Result<(u64, u64), BackendError> {
        Name::new(dir)?;
        let entries = self.entries(&format!("{dir}/"))?;
        let (dirs, others): (Vec<Entry>, Vec<Entry>) =
            entries.into_iter().partition(|e| e.kind == Kind::Dir);
        let objects = others.iter().filter(|e| e.kind == Kind::File);
        let objects = (
            objects.clone().count() as u64,
            objects.map(|e| e.size).sum(),
        );
        self.remove_paths(others.iter().map(|e| e.name.as_str()))?;
        // What `remove_all` left: directories that held no object, deepest first.
        let dirs = dirs.iter().rev().map(|d| d.name.as_str()).chain([dir]);
        for empty in dirs {
            let parts: Vec<String> = empty.split('/').map(String::from).collect();
            self.remove_if_empty(&parts)?;
        }
        Ok(objects)
    }

    /// Removes the directory `parts` (never the root or the backend's own) if it is empty; one
    /// still holding something stays. Never the one above it: a run may be about to make
    /// something in it (`tmp/` of the chunk store, say), and must not find it gone.
    fn remove_if_empty(&self, parts: &[String]) -> Result<(), BackendError> {
        let Some((last, above)) = parts.split_last() else {
            return Ok(());
        };
        if above.is_empty() && last == RESERVED {
            return Ok(());
        }
        let above: Vec<&str> = above.iter().map(String::as_str).collect();
        let Some(parent) = self.dir(&above, false, last)? else {
            return Ok(());
        };
        match rustix::fs::unlinkat(&parent, last.as_str(), AtFlags::REMOVEDIR) {
            Ok(()) => rustix::fs::fsync(&parent)
                .map_err(|e| self.io("cannot sync", &above.join("/"), e.into())),
            Err(
                rustix::io::Errno::NOTEMPTY
                | rustix::io::Errno::EXIST
                | rustix::io::Errno::NOENT
                | rustix::io::Errno::NOTDIR,
            ) => Ok(()),
            Err(e) => Err(self.io("cannot remove the directory", last, e.into())),
        }
    }

    /// The directories right under the root (never a link), as `Backend::top_level`.
    fn top_level(&self) -> Result<Vec<String>, BackendError> {
        let root = self.root_fd()?;
        let entries =
            rustix::fs::Dir::read_from(&root).map_err(|e| self.io("cannot list", "", e.into()))?;
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| self.io("cannot list", "", e.into()))?;
            let Ok(name) = entry.file_name().to_str() else {
                continue; // Not UTF-8: not a name wqm writes.
            };
            if matches!(name, "." | ".." | RESERVED) {
                continue;
            }
            match rustix::fs::statat(&root, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Directory => {
                    found.push(name.to_string())
                }
                Ok(_) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(self.io("cannot stat", name, e.into())),
            }
        }
        found.sort();
        Ok(found)
    }

    /// Every regular file under the root whose name starts with `prefix` (`walk`).
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        let mut found = Vec::new();
        self.walk(prefix, |entry| {
            if entry.kind == Kind::File {
                found.push(ObjectInfo {
                    name: entry.name,
                    size: entry.size,
                })
            }
            true
        })?;
        Ok(found)
    }

    fn entries(&self, prefix: &str) -> Result<Vec<Entry>, BackendError> {
        let mut found = Vec::new();
        self.walk(prefix, |entry| {
            found.push(entry);
            true
        })?;
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    /// Hands `found` every entry under the root whose name starts with `prefix` (a directory's
    /// name without its `/`), one directory's after another, the backend's own directory left
    /// out; a directory is entered when `found` says so, one not on the prefix's way never,
    /// a link never. One directory is open at a time, whatever their number.
    fn walk(&self, prefix: &str, mut found: impl FnMut(Entry) -> bool) -> Result<(), BackendError> {
        let mut pending = vec![String::new()];
        while let Some(path) = pending.pop() {
            let parts: Vec<&str> = path.split_terminator('/').collect();
            // Gone meanwhile: nothing of it is listed (made a link meanwhile: refused).
            let Some(dir) = self.dir(&parts, false, &path)? else {
                continue;
            };
            let entries = rustix::fs::Dir::read_from(&dir)
                .map_err(|e| self.io("cannot list", &path, e.into()))?;
            for entry in entries {
                let entry = entry.map_err(|e| self.io("cannot list", &path, e.into()))?;
                let raw = entry.file_name();
                let file_name = String::from_utf8_lossy(raw.to_bytes());
                if file_name == "."
                    || file_name == ".."
                    || (path.is_empty() && file_name == RESERVED)
                {
                    continue;
                }
                let name = format!("{path}{file_name}");
                let stat = match rustix::fs::statat(&dir, raw, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(stat) => stat,
                    Err(rustix::io::Errno::NOENT) => continue, // Removed meanwhile.
                    Err(e) => return Err(self.io("cannot stat", &name, e.into())),
                };
                // A name that is not UTF-8 is none wqm writes: shown, never reached by name.
                let kind = match raw.to_str() {
                    Ok(_) => kind_of(&stat),
                    Err(_) => Kind::Other,
                };
                let below = format!("{name}/");
                let enter = if name.starts_with(prefix) {
                    found(Entry {
                        name,
                        kind,
                        size: stat.st_size as u64,
                    })
                } else {
                    prefix.starts_with(&below)
                };
                if kind == Kind::Dir && enter {
                    pending.push(below);
                }
            }
        }
        Ok(())
    }

    fn unfinished(&self) -> Result<Vec<Unfinished>, BackendError> {
        let Some(dir) = self.dir(&[RESERVED, "tmp"], false, RESERVED)? else {
            return Ok(Vec::new());
        };
        let mut found = Vec::new();
        let entries = rustix::fs::Dir::read_from(&dir)
            .map_err(|e| self.io("cannot list", RESERVED, e.into()))?;
        for entry in entries {
            let entry = entry.map_err(|e| self.io("cannot list", RESERVED, e.into()))?;
            let Ok(id) = entry.file_name().to_str() else {
                continue;
            };
            if !is_id(id) {
                continue;
            }
            let Ok(stat) = rustix::fs::statat(&dir, id, AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            found.push(Unfinished {
                id: id.to_string(),
                name: None,
                started: stat.st_mtime as f64,
            });
        }
        Ok(found)
    }

    fn abort(&self, upload: &Unfinished) -> Result<(), BackendError> {
        if !is_id(&upload.id) {
            return Err(BackendError::BadName {
                name: crate::format::names::shown(&upload.id),
                reason: "is not the id of a temporary file",
            });
        }
        let Some(dir) = self.dir(&[RESERVED, "tmp"], false, RESERVED)? else {
            return Ok(());
        };
        match rustix::fs::unlinkat(&dir, upload.id.as_str(), AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(self.io("cannot remove a temporary file in", RESERVED, e.into())),
        }
    }
}

/// What `stat` says an entry is, by itself.
fn kind_of(stat: &rustix::fs::Stat) -> Kind {
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => Kind::File,
        FileType::Directory => Kind::Dir,
        FileType::Symlink => Kind::Symlink,
        _ => Kind::Other,
    }
}

/// A temporary file's name: what `random_id` makes.
fn is_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn rename_noreplace(
    from_dir: impl AsFd,
    from: &str,
    to_dir: impl AsFd,
    to: &str,
) -> rustix::io::Result<()> {
    rustix::fs::renameat_with(
        from_dir,
        from,
        to_dir,
        to,
        rustix::fs::RenameFlags::NOREPLACE,
    )
}

/// Elsewhere: a hard link fails when the name is taken; then the temporary name goes.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn rename_noreplace(
    from_dir: impl AsFd,
    from: &str,
    to_dir: impl AsFd,
    to: &str,
) -> rustix::io::Result<()> {
    rustix::fs::linkat(&from_dir, from, &to_dir, to, AtFlags::empty())?;
    rustix::fs::unlinkat(&from_dir, from, AtFlags::empty())
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

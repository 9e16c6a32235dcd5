//! Walking backups and the chunk store: every step relative to an open directory, never following
//! a link (`openat` with `O_NOFOLLOW`, `fstatat`/`unlinkat` on the entry itself). Reading a
//! backup's files, garbage collection and the cleanup of dead runs' temporary chunks go only
//! through these, so a link planted anywhere (in a backup, `chunks`, `tmp`, a fan-out directory)
//! leads nowhere.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, CWD};

pub use crate::backend::Kind;

/// One entry of a directory: its name, what it is and its size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub kind: Kind,
    pub len: u64,
}

/// An open directory.
#[derive(Debug)]
pub struct Dir(OwnedFd);

fn flags(directory: bool) -> OFlags {
    let base = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    if directory {
        base | OFlags::DIRECTORY
    } else {
        base | OFlags::NONBLOCK
    }
}

/// Why an entry was not opened.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("`{0}` is a symbolic link; wqm never follows links")]
    Link(String),
    #[error("`{0}` is not a regular file")]
    NotAFile(String),
}

impl Refused {
    fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }
}

/// `open` on a link with `O_NOFOLLOW`: ELOOP (Linux), EMLINK (FreeBSD); `O_DIRECTORY` on one
/// may say ENOTDIR instead, hence the look at the entry itself.
fn link_refused(name: &str) -> io::Error {
    Refused::Link(name.to_string()).into_io()
}

impl Dir {
    /// The directory at `path`; its last component must not be a link (the ones above it,
    /// given by the user, may be).
    pub fn open(path: &Path) -> io::Result<Dir> {
        let fd = rustix::fs::openat(CWD, path, flags(true), Mode::empty()).map_err(|e| {
            match rustix::fs::statat(CWD, path, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(s) if FileType::from_raw_mode(s.st_mode) == FileType::Symlink => {
                    link_refused(&path.display().to_string())
                }
                _ => io::Error::from(e),
            }
        })?;
        Ok(Dir(fd))
    }

    /// The directory `name` in this one, not through a link.
    pub fn open_dir(&self, name: &str) -> io::Result<Dir> {
        rustix::fs::openat(&self.0, name, flags(true), Mode::empty())
            .map(Dir)
            .map_err(|e| self.refused(name, e))
    }

    /// The regular file `name` in this one, for reading, not through a link.
    pub fn open_file(&self, name: &str) -> io::Result<File> {
        let file = File::from(
            rustix::fs::openat(&self.0, name, flags(false), Mode::empty())
                .map_err(|e| self.refused(name, e))?,
        );
        if !file.metadata()?.is_file() {
            return Err(Refused::NotAFile(name.to_string()).into_io());
        }
        Ok(file)
    }

    fn refused(&self, name: &str, e: rustix::io::Errno) -> io::Error {
        if self.kind(name).is_ok_and(|k| k == Kind::Symlink) {
            link_refused(name)
        } else {
            e.into()
        }
    }

    /// What `name` in this directory is, itself.
    pub fn kind(&self, name: &str) -> io::Result<Kind> {
        Ok(self.stat(name)?.0)
    }

    /// What `name` in this directory is, itself, and its size.
    pub fn stat(&self, name: &str) -> io::Result<(Kind, u64)> {
        let stat = rustix::fs::statat(&self.0, name, AtFlags::SYMLINK_NOFOLLOW)?;
        let kind = match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            _ => Kind::Other,
        };
        Ok((kind, u64::try_from(stat.st_size).unwrap_or(0)))
    }

    /// Every entry but `.` and `..`, sorted by name; a name that is not UTF-8 is shown lossily
    /// (and, being no name wqm makes, is only ever reported).
    pub fn entries(&self) -> io::Result<Vec<Entry>> {
        let mut found = Vec::new();
        for entry in rustix::fs::Dir::read_from(&self.0)? {
            let entry = entry?;
            let bytes = entry.file_name().to_bytes();
            if bytes == b"." || bytes == b".." {
                continue;
            }
            let name = OsStr::from_bytes(bytes).to_string_lossy().into_owned();
            let (kind, len) = match self.stat(&name) {
                Ok(found) => found,
                // Gone meanwhile (a concurrent cleanup), or a name that is not UTF-8.
                Err(_) => (Kind::Other, 0),
            };
            found.push(Entry { name, kind, len });
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    /// Deletes the file (or link: the link itself) `name`; gone already is fine.
    pub fn remove_file(&self, name: &str) -> io::Result<()> {
        match rustix::fs::unlinkat(&self.0, name, AtFlags::empty()) {
            Err(rustix::io::Errno::NOENT) => Ok(()),
            other => other.map_err(io::Error::from),
        }
    }

    /// Deletes the directory `name` and everything in it, descending only into real
    /// directories (a link inside is deleted as a link); returns the files and bytes removed.
    pub fn remove_tree(&self, name: &str) -> io::Result<(u64, u64)> {
        let dir = match self.open_dir(name) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
            other => other?,
        };
        let (mut files, mut bytes) = (0, 0);
        for entry in dir.entries()? {
            if entry.kind == Kind::Dir {
                let (f, b) = dir.remove_tree(&entry.name)?;
                files += f;
                bytes += b;
            } else {
                dir.remove_file(&entry.name)?;
                files += 1;
                bytes += entry.len;
            }
        }
        drop(dir);
        match rustix::fs::unlinkat(&self.0, name, AtFlags::REMOVEDIR) {
            Err(rustix::io::Errno::NOENT) | Ok(()) => Ok((files, bytes)),
            Err(e) => Err(e.into()),
        }
    }

    /// The regular file `name` in this one, not through a link, opened for writing so that it
    /// can be locked anywhere: NFS emulates `flock` with byte-range locks, which a read-only
    /// descriptor cannot take.
    pub fn open_for_lock(&self, name: &str) -> io::Result<File> {
        let writable = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let file = File::from(
            rustix::fs::openat(&self.0, name, writable, Mode::empty())
                .map_err(|e| self.refused(name, e))?,
        );
        if !file.metadata()?.is_file() {
            return Err(Refused::NotAFile(name.to_string()).into_io());
        }
        Ok(file)
    }

    /// Takes the exclusive lock of the regular file `name` here without waiting: `None` when
    /// another process holds it. The lock lasts as long as the returned file.
    pub fn try_lock(&self, name: &str) -> io::Result<Option<File>> {
        let file = self.open_for_lock(name)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn nothing_is_followed_or_deleted_through_a_link() {
        let root = tempfile::tempdir().unwrap();
        let outside = root.path().join("outside");
        fs::create_dir_all(outside.join("deep")).unwrap();
        fs::write(outside.join("deep/precious"), "keep").unwrap();
        let tree = root.path().join("tree");
        fs::create_dir_all(tree.join("a/b")).unwrap();
        fs::write(tree.join("a/b/file"), "12345").unwrap();
        symlink(&outside, tree.join("a/link")).unwrap();
        symlink(&outside, root.path().join("linked")).unwrap();

        assert!(Dir::open(&root.path().join("linked"))
            .unwrap_err()
            .to_string()
            .contains("symbolic link"));
        let top = Dir::open(root.path()).unwrap();
        let tree_dir = top.open_dir("tree").unwrap();
        let a = tree_dir.open_dir("a").unwrap();
        assert_eq!(a.kind("link").unwrap(), Kind::Symlink);
        assert!(a
            .open_dir("link")
            .unwrap_err()
            .to_string()
            .contains("symbolic link"));
        assert_eq!(
            a.entries().unwrap(),
            [
                Entry {
                    name: "b".into(),
                    kind: Kind::Dir,
                    len: a.stat("b").unwrap().1
                },
                Entry {
                    name: "link".into(),
                    kind: Kind::Symlink,
                    len: a.stat("link").unwrap().1
                },
            ]
        );
        drop(a);
        assert_eq!(
            top.remove_tree("tree").unwrap(),
            (2, 5 + a_link_len(&outside))
        );
        assert!(!tree.exists());
        assert_eq!(
            fs::read_to_string(outside.join("deep/precious")).unwrap(),
            "keep"
        );
        assert_eq!(top.remove_tree("tree").unwrap(), (0, 0), "gone already");
    }

    /// A link's own size is the length of its target's path.
    fn a_link_len(target: &Path) -> u64 {
        target.as_os_str().len() as u64
    }
}

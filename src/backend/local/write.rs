//! Saves (a temporary file fsynced and renamed into place), renames, links and copies, and
//! the temporary files a killed save leaves.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{AtFlags, Mode, OFlags};

use super::paths::Make;
use super::{Inner, Temp};
use crate::backend::{BackendError, Name, Unfinished, RESERVED};

/// A directory, and the last component of a name in it.
type Parent<'n> = (OwnedFd, &'n str);

impl Inner {
    pub(super) fn create_temp(&self) -> Result<Temp, BackendError> {
        let tmp_dir = self.tmp_dir()?;
        let name = crate::backend::random_id();
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
    pub(super) fn commit(
        &self,
        mut temp: Temp,
        name: &Name,
        replace: bool,
    ) -> Result<(), BackendError> {
        temp.file
            .sync_all()
            .map_err(|e| self.io("cannot sync", name.as_str(), e))?;
        let place: Vec<&str> = name.as_str().splitn(3, '/').take(2).collect();
        crate::failpoint::hit(&format!("local:before-rename:{}", place.join("/")))
            .map_err(|e| self.io("failpoint", name.as_str(), e))?;
        // A `remove_all` emptying the directory may take it away between its open and the
        // rename (ENOENT): then it is made again.
        let mut attempts = 0;
        let (dir, renamed) = loop {
            let (dir, last) = self.parent(name, Make::Synced)?;
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

    /// `bytes` saved as `name`, replacing what is there (`commit`).
    pub(super) fn save(&self, name: &Name, bytes: &[u8]) -> Result<(), BackendError> {
        let mut temp = self.create_temp()?;
        temp.file
            .write_all(bytes)
            .map_err(|e| self.io("cannot write", name.as_str(), e))?;
        self.commit(temp, name, true)
    }

    /// A new private (`0600`) file `name`, its directories made (not synced): never over
    /// anything there, never through a link.
    pub(super) fn create_new(&self, name: &Name) -> Result<File, BackendError> {
        let (dir, last) = self.parent(name, Make::Unsynced)?;
        let dir = dir.expect("made when missing");
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::openat(&dir, last, flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => Ok(File::from(fd)),
            Err(rustix::io::Errno::EXIST) => Err(BackendError::AlreadyExists {
                repository: self.root.display().to_string(),
                name: name.to_string(),
            }),
            Err(e) => Err(self.io("cannot create", name.as_str(), e.into())),
        }
    }

    /// The directory `name` and those above it, made (`0700`) where missing, not synced; a link
    /// on the way is refused.
    pub(super) fn create_dir(&self, name: &Name) -> Result<(), BackendError> {
        let parts: Vec<&str> = name.as_str().split('/').collect();
        self.dir(&parts, Make::Unsynced, name.as_str())?;
        Ok(())
    }

    /// Renames `from` over `to` (whatever file is there goes), `to`'s directories made; nothing
    /// synced: the caller syncs `to`'s directory (`sync_dir`), once for a batch, and the parent
    /// of any directory that was made for it.
    pub(super) fn rename_over(&self, from: &Name, to: &Name) -> Result<(), BackendError> {
        let ((from_dir, from_last), (to_dir, to_last)) = self.parents(from, to, Make::Unsynced)?;
        match rustix::fs::renameat(&from_dir, from_last, &to_dir, to_last) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::NOENT) => Err(self.not_found(from.as_str())),
            Err(e) if e == rustix::io::Errno::ISDIR || e == rustix::io::Errno::NOTEMPTY => {
                Err(self.io("a directory is in the way of", to.as_str(), e.into()))
            }
            Err(e) => Err(self.io("cannot rename into place", to.as_str(), e.into())),
        }
    }

    /// Makes the entries of the directory `dir` (`""`: the root) durable.
    pub(super) fn sync_dir(&self, dir: &str) -> Result<(), BackendError> {
        let parts: Vec<&str> = dir.split_terminator('/').collect();
        let fd = self
            .dir(&parts, Make::No, dir)?
            .ok_or_else(|| self.not_found(dir))?;
        rustix::fs::fsync(&fd).map_err(|e| self.io("cannot sync", dir, e.into()))?;
        crate::fs::note_synced(&self.root.join(dir));
        Ok(())
    }

    /// Swaps `a` and `b` in one step (`RENAME_EXCHANGE`) and syncs their directories;
    /// `Io` with `Unsupported` where the system or the file system cannot.
    pub(super) fn exchange(&self, a: &Name, b: &Name) -> Result<(), BackendError> {
        let ((a_dir, a_last), (b_dir, b_last)) = self.parents(a, b, Make::No)?;
        match exchange(&a_dir, a_last, &b_dir, b_last) {
            Ok(()) => {}
            Err(rustix::io::Errno::NOENT) => return Err(self.not_found(a.as_str())),
            Err(e) => return Err(self.io("cannot exchange", a.as_str(), e.into())),
        }
        self.sync_moved([(&b_dir, b), (&a_dir, a)])
    }

    /// The directories holding `from` (which must be there) and `to` (made as `make` says), and
    /// the names' last components.
    fn parents<'n>(
        &self,
        from: &'n Name,
        to: &'n Name,
        make: Make,
    ) -> Result<(Parent<'n>, Parent<'n>), BackendError> {
        let (from_dir, from_last) = self.parent(from, Make::No)?;
        let from_dir = from_dir.ok_or_else(|| self.not_found(from.as_str()))?;
        let (to_dir, to_last) = self.parent(to, make)?;
        let to_dir = to_dir.ok_or_else(|| self.not_found(to.as_str()))?;
        Ok(((from_dir, from_last), (to_dir, to_last)))
    }

    /// Makes a move durable: each directory synced, in the order given.
    fn sync_moved(&self, dirs: [(&OwnedFd, &Name); 2]) -> Result<(), BackendError> {
        for (dir, name) in dirs {
            rustix::fs::fsync(dir)
                .map_err(|e| self.io("cannot sync the directory of", name.as_str(), e.into()))?;
        }
        Ok(())
    }

    pub(super) fn rename(&self, from: &Name, to: &Name) -> Result<(), BackendError> {
        let ((from_dir, from_last), (to_dir, to_last)) = self.parents(from, to, Make::Synced)?;
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
        self.sync_moved([(&to_dir, to), (&from_dir, from)])
    }

    /// `to` made a second name of `from`'s file (a hard link, through a temporary name renamed
    /// over whatever is at `to`): no byte is copied, and an object is never changed in place
    /// (a save renames a new file over its name), so the two stay apart. `None` where no link
    /// can be made (a mount inside the repository, a file system without hard links, a file
    /// with too many): then it is copied.
    pub(super) fn link(&self, from: &Name, to: &Name) -> Result<Option<u64>, BackendError> {
        let size = self.stat(from)?.size;
        let (from_dir, from_last) = self.parent(from, Make::No)?;
        let from_dir = from_dir.ok_or_else(|| self.not_found(from.as_str()))?;
        let tmp_dir = self.tmp_dir()?;
        let temp = crate::backend::random_id();
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
        let placed = self.parent(to, Make::Synced).and_then(|(dir, last)| {
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
    pub(super) fn copy(&self, from: &Name, to: &Name) -> Result<u64, BackendError> {
        if let Some(size) = self.link(from, to)? {
            return Ok(size);
        }
        let (mut file, size) = self.open(from)?;
        let mut temp = self.create_temp()?;
        io::copy(&mut file, &mut temp.file).map_err(|e| self.io("cannot copy", to.as_str(), e))?;
        self.commit(temp, to, true)?;
        Ok(size)
    }

    pub(super) fn unfinished(&self) -> Result<Vec<Unfinished>, BackendError> {
        let Some(dir) = self.dir(&[RESERVED, "tmp"], Make::No, RESERVED)? else {
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

    pub(super) fn abort(&self, upload: &Unfinished) -> Result<(), BackendError> {
        if !is_id(&upload.id) {
            return Err(BackendError::BadName {
                name: crate::format::names::shown(&upload.id),
                reason: "is not the id of a temporary file",
            });
        }
        let Some(dir) = self.dir(&[RESERVED, "tmp"], Make::No, RESERVED)? else {
            return Ok(());
        };
        match rustix::fs::unlinkat(&dir, upload.id.as_str(), AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(self.io("cannot remove a temporary file in", RESERVED, e.into())),
        }
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

#[cfg(target_os = "linux")]
fn exchange(a_dir: impl AsFd, a: &str, b_dir: impl AsFd, b: &str) -> rustix::io::Result<()> {
    rustix::fs::renameat_with(a_dir, a, b_dir, b, rustix::fs::RenameFlags::EXCHANGE)
}

#[cfg(not(target_os = "linux"))]
fn exchange(_a_dir: impl AsFd, _a: &str, _b_dir: impl AsFd, _b: &str) -> rustix::io::Result<()> {
    Err(rustix::io::Errno::NOTSUP)
}

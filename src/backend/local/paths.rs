//! Reaching a name below the root one component at a time, never through a link.

use std::io;
use std::os::fd::OwnedFd;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::Inner;
use crate::backend::{BackendError, Name, RESERVED};

/// Whether a missing directory on the way is made, and made durable at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Make {
    No,
    /// Each made directory synced in its parent: what a save makes lasts with it.
    Synced,
    /// Not synced: the caller syncs what must last (a batch of chunks' fan-out directories and
    /// their parent once; a staged backup's every directory at its commit), or nothing need
    /// (a run's temporary directories).
    Unsynced,
}

impl Inner {
    pub(super) fn shown(&self, name: &str) -> String {
        self.root.join(name).display().to_string()
    }

    pub(super) fn io(&self, what: &'static str, name: &str, source: io::Error) -> BackendError {
        BackendError::Io {
            what,
            path: self.shown(name),
            source,
        }
    }

    pub(super) fn not_found(&self, name: &str) -> BackendError {
        BackendError::NotFound {
            repository: self.root.display().to_string(),
            name: name.to_string(),
        }
    }

    pub(super) fn root_fd(&self) -> Result<OwnedFd, BackendError> {
        rustix::fs::open(
            &self.root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.io("cannot open the repository directory", "", e.into()))
    }

    /// The directory `dirs` below the root, each component a real directory (made, `0700`,
    /// as `make` says). `Ok(None)` when one is missing and not made.
    pub(super) fn dir(
        &self,
        dirs: &[&str],
        make: Make,
        name: &str,
    ) -> Result<Option<OwnedFd>, BackendError> {
        let mut dir = self.root_fd()?;
        for part in dirs {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let next = match rustix::fs::openat(&dir, *part, flags, Mode::empty()) {
                Err(rustix::io::Errno::NOENT) if make != Make::No => {
                    match rustix::fs::mkdirat(&dir, *part, Mode::from_raw_mode(0o700)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => {
                            return Err(self.io("cannot create a directory for", name, e.into()))
                        }
                    }
                    if make == Make::Synced {
                        rustix::fs::fsync(&dir)
                            .map_err(|e| self.io("cannot sync", name, e.into()))?;
                    }
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
    pub(super) fn through_link(
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
    pub(super) fn parent<'n>(
        &self,
        name: &'n Name,
        make: Make,
    ) -> Result<(Option<OwnedFd>, &'n str), BackendError> {
        let mut parts: Vec<&str> = name.as_str().split('/').collect();
        let last = parts.pop().expect("a name has a component");
        Ok((self.dir(&parts, make, name.as_str())?, last))
    }

    pub(super) fn tmp_dir(&self) -> Result<OwnedFd, BackendError> {
        Ok(self
            .dir(&[RESERVED, "tmp"], Make::Synced, RESERVED)?
            .expect("made when missing"))
    }
}

//! Opening, looking at and listing what is under the root.

use std::fs::File;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::paths::Make;
use super::Inner;
use crate::backend::{BackendError, Entry, Kind, Name, ObjectInfo, RESERVED};

impl Inner {
    /// The regular file `name`, opened without following a link, and its size.
    pub(super) fn open(&self, name: &Name) -> Result<(File, u64), BackendError> {
        self.open_with(name, OFlags::RDONLY)
    }

    pub(super) fn open_for_lock(&self, name: &Name) -> Result<File, BackendError> {
        Ok(self.open_with(name, OFlags::RDWR)?.0)
    }

    /// `open` with the access `mode` (`RDONLY`, `RDWR`).
    pub(super) fn open_with(&self, name: &Name, mode: OFlags) -> Result<(File, u64), BackendError> {
        let (dir, last) = self.parent(name, Make::No)?;
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

    pub(super) fn not_a_file(&self, name: &str) -> BackendError {
        BackendError::NotAFile {
            repository: self.root.display().to_string(),
            name: name.to_string(),
        }
    }

    pub(super) fn entry(&self, name: &Name) -> Result<Entry, BackendError> {
        let (dir, last) = self.parent(name, Make::No)?;
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

    pub(super) fn stat(&self, name: &Name) -> Result<ObjectInfo, BackendError> {
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

    /// The directories right under the root (never a link), as `Backend::top_level`.
    pub(super) fn top_level(&self) -> Result<Vec<String>, BackendError> {
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
    pub(super) fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
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

    pub(super) fn entries(&self, prefix: &str) -> Result<Vec<Entry>, BackendError> {
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
    pub(super) fn walk(
        &self,
        prefix: &str,
        mut found: impl FnMut(Entry) -> bool,
    ) -> Result<(), BackendError> {
        let mut pending = vec![String::new()];
        while let Some(path) = pending.pop() {
            let parts: Vec<&str> = path.split_terminator('/').collect();
            // Gone meanwhile: nothing of it is listed (made a link meanwhile: refused).
            let Some(dir) = self.dir(&parts, Make::No, &path)? else {
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

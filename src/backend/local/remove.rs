//! Removing objects and the directories they leave empty.

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;

use rustix::fs::AtFlags;

use super::paths::Make;
use super::Inner;
use crate::backend::{BackendError, Entry, Kind, Name, RESERVED};

impl Inner {
    pub(super) fn remove(&self, name: &Name) -> Result<(), BackendError> {
        let (dir, last) = self.parent(name, Make::No)?;
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
    pub(super) fn remove_all(&self, names: &[Name]) -> Result<(), BackendError> {
        self.remove_paths(names.iter().map(Name::as_str))
    }

    /// `remove_all` of names as `walk` found them: a name no object can have (a backslash, a
    /// control character) is removed too.
    pub(super) fn remove_paths<'n>(
        &self,
        names: impl Iterator<Item = &'n str>,
    ) -> Result<(), BackendError> {
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
                match self.dir(&dirs, Make::No, name)? {
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
    pub(super) fn sync(&self, parts: &[String], dir: OwnedFd) -> Result<(), BackendError> {
        rustix::fs::fsync(&dir).map_err(|e| self.io("cannot sync", &parts.join("/"), e.into()))
    }

    /// Removes the directory `dir` and everything in it (links removed as links, never
    /// followed; the directory above it stays); returns how many objects went and their bytes.
    pub(super) fn remove_under(&self, dir: &str) -> Result<(u64, u64), BackendError> {
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
    pub(super) fn remove_if_empty(&self, parts: &[String]) -> Result<(), BackendError> {
        let Some((last, above)) = parts.split_last() else {
            return Ok(());
        };
        if above.is_empty() && last == RESERVED {
            return Ok(());
        }
        let above: Vec<&str> = above.iter().map(String::as_str).collect();
        let Some(parent) = self.dir(&above, Make::No, last)? else {
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
}

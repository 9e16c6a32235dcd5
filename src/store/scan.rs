//! The one scanner of a backups directory, local or on a backend: what in it is a backup.

use std::io;
use std::path::{Path, PathBuf};

use super::{chunks, BackupDir, Kind, Remote, Repository};
use crate::format::layout;
use crate::format::manifest::ManifestError;

/// What `scan` made of one entry of a backups directory.
#[derive(Debug)]
pub enum Seen {
    Backup(Box<BackupDir>),
    /// Looks like a backup (it has `metadata/`) but its manifest cannot be read.
    Unreadable(String),
    /// Not a backup, or not one to touch: the reason.
    Other(String),
}

#[derive(Debug)]
pub struct Entry {
    pub name: String,
    pub path: PathBuf,
    pub seen: Seen,
}

/// Every entry directly in a backups directory, by name, and what it is.
#[derive(Debug, Default)]
pub struct Scan {
    pub entries: Vec<Entry>,
}

impl Scan {
    pub fn backups(&self) -> impl Iterator<Item = &BackupDir> {
        self.entries.iter().filter_map(|e| match &e.seen {
            Seen::Backup(found) => Some(&**found),
            _ => None,
        })
    }
}

/// Whether `name` in a backups directory is one of wqm's own parts of it, never a backup.
fn is_repository_part(name: &str) -> bool {
    let locks = crate::backend::lock::LOCKS.trim_end_matches('/');
    [
        chunks::STORE_DIR,
        locks,
        crate::backend::RESERVED,
        layout::REPO_DIR,
    ]
    .contains(&name)
}

/// The one scanner of a backups directory (`list`, `prune`). One rule for what is a backup:
/// a directory (never a symlink: none is followed) that is not hidden (staging and working
/// directories are) and not being written, whose manifest reads. Plain files are left out.
pub fn scan(dir: &Path) -> io::Result<Scan> {
    let mut listed = Vec::new();
    super::files_of(dir)?
        .visit_blocking("", |entry| {
            listed.push(entry);
            false
        })
        .map_err(|e| super::in_backup(e, ""))?;
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    let mut scan = Scan::default();
    for entry in listed {
        let name = entry.name;
        let path = dir.join(&name);
        let seen = if layout::is_hidden(&name) {
            // The chunk store holds the incremental backups' data, the others the runs' locks,
            // the local backend's temporary files and the repository's config and keys: none
            // is a backup.
            if entry.kind != Kind::Dir || is_repository_part(&name) {
                continue;
            }
            Seen::Other("hidden (a backup being written, or not wqm's)".to_string())
        } else if entry.kind == Kind::Symlink {
            Seen::Other("a symlink; wqm never follows symlinks".to_string())
        } else if entry.kind != Kind::Dir {
            continue;
        } else if layout::being_written(&path) {
            Seen::Other("being written (its staging directory is locked)".to_string())
        } else {
            match BackupDir::read_manifest(&path) {
                Ok(manifest) => Seen::Backup(Box::new(BackupDir::local(path.clone(), manifest))),
                Err(e) if !path.join(layout::METADATA_DIR).is_dir() => {
                    Seen::Other(format!("not a wqm backup ({e})"))
                }
                Err(e @ ManifestError::Missing { .. }) => {
                    Seen::Unreadable(format!("incomplete backup: {e}"))
                }
                Err(e) => Seen::Unreadable(e.to_string()),
            }
        };
        scan.entries.push(Entry { name, path, seen });
    }
    Ok(scan)
}

/// `scan` of a repository on a backend: one listing, grouped by the first component of each
/// name. A backup is a name, not hidden, with a manifest that reads; a name with objects but
/// no manifest is no backup (a killed run's, or one being written: the manifest is written
/// last). The names are looked at `LOOKERS` at a time (three requests each), in their order.
pub fn scan_remote(repository: &Remote) -> io::Result<Scan> {
    // The names at the top, then each one's manifest: never a listing of every chunk.
    // A backup `create --force` is putting in place may have no object of its own for a moment.
    let mut names: Vec<String> = repository
        .top_level()?
        .into_iter()
        .chain(repository.replaced_names()?)
        .filter(|name| !layout::is_hidden(name))
        .collect();
    names.sort();
    names.dedup();
    let mut scan = Scan::default();
    for entry in crate::parallel::map_in_order(&names, LOOKERS, |name| look_at(repository, name)) {
        scan.entries.extend(entry?);
    }
    Ok(scan)
}

/// Names of a repository on a backend looked at at once by `scan_remote`.
const LOOKERS: usize = 8;

/// What the name `name` of a repository on a backend is; `None` for a prefix the server still
/// lists whose objects are all gone.
fn look_at(repository: &Remote, name: &str) -> io::Result<Option<Entry>> {
    let path = repository.shown(name);
    let seen = match repository.locate(name) {
        Ok(Some(root)) => match repository.backup_at(name, root) {
            Ok(backup) => match backup.read_manifest() {
                Ok(manifest) => Seen::Backup(Box::new(BackupDir::of_remote(backup, manifest))),
                Err(e) => Seen::Unreadable(e.to_string()),
            },
            Err(e) => Seen::Unreadable(e.to_string()),
        },
        // Some servers (SeaweedFS) still list a prefix whose objects are all gone.
        Ok(None) if repository.list(&format!("{name}/"))?.is_empty() => return Ok(None),
        Ok(None) => Seen::Other("no manifest: not a backup, or one being written".to_string()),
        // A name no backup of wqm's can have.
        Err(e) if e.kind() == io::ErrorKind::InvalidData => Seen::Other(e.to_string()),
        Err(e) => return Err(e),
    };
    Ok(Some(Entry {
        name: name.to_string(),
        path,
        seen,
    }))
}

/// `scan` of a local directory or a remote repository.
pub fn scan_at(repository: &Repository) -> io::Result<Scan> {
    match repository {
        Repository::Local(dir) => scan(dir),
        Repository::Remote(remote) => scan_remote(remote),
    }
}

//! The storage seam, read side: how a backup's entries are opened, looked at and listed. Every
//! read of a backup file goes through `BackupDir` (verify, restore, info), and one rule holds
//! here: **no symlink inside a backup is ever followed** — each component of an entry's path is
//! opened with `O_NOFOLLOW` (`openat`, one directory at a time), so a link anywhere, the
//! manifest included, is refused instead of leading outside. A chunk store would implement the
//! same operations (read the manifest, open an entry, list) over its own storage.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::local::LocalBackend;
use crate::backend::{BackendError, Name};
use crate::compress::Stored;
use crate::format::layout::{self, MANIFEST_PATH};
use crate::format::manifest::{self, FileEntry, Manifest, ManifestError};
use crate::format::names::EntryPath;

mod checked;
pub mod chunks;
pub mod lock;
mod remote;
mod scan;
pub mod seal;
mod sink;
mod staging;
pub use checked::{content_matches, stored_checksum_matches, Checked, Compare, Damaged};
use chunks::{ChunkError, ChunkReader, ChunkStore};
pub use remote::{occupant, replacement_of, Occupant, Remote, RemoteBackup, REPLACING};
pub use scan::{scan, scan_at, scan_remote, Entry, Scan, Seen};
use seal::Seal;
pub use sink::FileSink;
pub use staging::{checked_backup_name, Staging};

/// A backup directory and its manifest.
#[derive(Clone, Debug)]
pub struct BackupDir {
    /// Where it is: a local directory, or as shown for a remote one (`s3://bucket/prefix/NAME`).
    pub path: PathBuf,
    pub manifest: Manifest,
    /// A backup on a backend: every read goes there, `path` only names it.
    pub remote: Option<RemoteBackup>,
}

/// Where a backup the user named is.
#[derive(Clone, Debug)]
pub enum Place {
    Local(PathBuf),
    Remote(RemoteBackup),
}

impl Place {
    /// The backup as a path to show.
    pub fn shown(&self) -> PathBuf {
        match self {
            Place::Local(path) => path.clone(),
            Place::Remote(remote) => remote.shown(),
        }
    }
}

/// Where the backups of a directory are.
#[derive(Clone, Debug)]
pub enum Repository {
    Local(PathBuf),
    Remote(Remote),
}

impl Repository {
    /// The repository as a path to show (`s3://bucket/prefix` for a remote one).
    pub fn shown(&self) -> PathBuf {
        match self {
            Repository::Local(dir) => dir.clone(),
            Repository::Remote(remote) => PathBuf::from(remote.shown_root()),
        }
    }
}

/// What `stat` tells about an entry (the entry itself, never what a link points at).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub kind: Kind,
    pub len: u64,
}

pub use crate::backend::Kind;

impl BackupDir {
    /// Opens an existing backup: the directory must exist and its manifest must parse.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        layout::refuse_unfinished(path)?;
        layout::ensure_backup_dir(path)?;
        let manifest = Self::read_manifest(path)?;
        Ok(Self::local(path.to_path_buf(), manifest))
    }

    /// The local backup at `path` whose manifest is `manifest`.
    pub fn local(path: PathBuf, manifest: Manifest) -> Self {
        BackupDir {
            path,
            manifest,
            remote: None,
        }
    }

    /// Opens the backup at `place`: locally as `open`; remotely its manifest must be there (a
    /// name without one is no backup, or one still being written).
    pub fn open_at(place: &Place) -> anyhow::Result<Self> {
        match place {
            Place::Local(path) => Self::open(path),
            Place::Remote(remote) => {
                if !remote.exists() {
                    return Err(layout::LayoutError::NotFound {
                        path: remote.shown(),
                    }
                    .into());
                }
                Ok(Self::of_remote(
                    remote.clone(),
                    Self::read_manifest_at(place)?,
                ))
            }
        }
    }

    /// The remote backup `remote` whose manifest is `manifest`.
    pub fn of_remote(remote: RemoteBackup, manifest: Manifest) -> Self {
        BackupDir {
            path: remote.shown(),
            manifest,
            remote: Some(remote),
        }
    }

    /// The manifest of the backup at `place` (`read_manifest` for a local one).
    pub fn read_manifest_at(place: &Place) -> Result<Manifest, ManifestError> {
        match place {
            Place::Local(path) => Self::read_manifest(path),
            Place::Remote(remote) => remote.read_manifest(),
        }
    }

    /// Where this backup is.
    pub fn place(&self) -> Place {
        match &self.remote {
            None => Place::Local(self.path.clone()),
            Some(remote) => Place::Remote(remote.clone()),
        }
    }

    /// The bytes the backup occupies (its own files; an incremental backup's chunks are
    /// beside it).
    pub fn size(&self) -> io::Result<u64> {
        match &self.remote {
            None => Ok(files_of(&self.path)?
                .list_blocking("")
                .map_err(|e| in_backup(e, ""))?
                .iter()
                .map(|o| o.size)
                .sum()),
            Some(remote) => Ok(remote.size()),
        }
    }

    /// Reads `metadata/manifest.json` of the backup at `root`: no link followed, its size
    /// checked before it is read (`manifest::MAX_MANIFEST_BYTES`), every name in it checked.
    /// In an encrypted repository it is decrypted and authenticated as this backup's.
    pub fn read_manifest(root: &Path) -> Result<Manifest, ManifestError> {
        let path = root.join(MANIFEST_PATH);
        let file = open_in(root, MANIFEST_PATH).map_err(|e| manifest::load_error(&path, e))?;
        match seal::of_local(backups_dir_of(root)) {
            None => Manifest::read_opened(file, &path),
            Some(seal) => {
                let identity = crate::crypto::Identity::manifest(&backup_name_of(root));
                let reader = seal
                    .reader(BufReader::new(file), &identity)
                    .map_err(|e| manifest::load_error(&path, e))?;
                Manifest::read_from(reader, &path)
            }
        }
    }

    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string())
    }

    /// The key of the encrypted repository this backup is in, when this run unlocked it.
    fn seal(&self) -> Option<Seal> {
        match &self.remote {
            None => seal::of_local(self.backups_dir()),
            Some(remote) => remote.repository.seal(),
        }
    }

    /// The name this backup's objects are bound to when encrypted: its name in its repository
    /// (a staged backup's is its target's).
    fn sealed_name(&self) -> String {
        match &self.remote {
            None => backup_name_of(&self.path),
            Some(remote) => remote.name.clone(),
        }
    }

    /// Opens a stored file for reading: a regular file reached without following any link.
    pub fn open_entry(&self, entry: &FileEntry) -> io::Result<Box<dyn Read + Send>> {
        let path =
            EntryPath::parse(&entry.path).map_err(|reason| unsafe_path(&entry.path, reason))?;
        self.open_file(path.as_str())
    }

    /// Wraps a reader of `entry`'s stored bytes (from `open_entry`) so it yields the content:
    /// decompressed, or for a chunked file its chunks from the store beside the backup, each
    /// checked against its name as it is read.
    pub fn decode<'a, R: Read + Send + 'a>(
        &self,
        entry: &FileEntry,
        stored: R,
    ) -> io::Result<Box<dyn Read + Send + 'a>> {
        self.decoded(entry, stored, true)
    }

    /// `decode`, checking each chunk against its name or not (`check_names`).
    fn decoded<'a, R: Read + Send + 'a>(
        &self,
        entry: &FileEntry,
        stored: R,
        check_names: bool,
    ) -> io::Result<Box<dyn Read + Send + 'a>> {
        match entry.compression {
            Stored::Chunked => Ok(Box::new(ChunkReader::new(
                self.chunk_store()?,
                BufReader::new(stored),
                check_names,
            )?)),
            Stored::Plain(compression) => compression.decoder(stored),
        }
    }

    /// The one checked reader of an entry's content (restore, export): the content as the
    /// manifest describes it — decompressed, or a chunked file's chunks in order from the store
    /// beside the backup — hashed while it is read, refused past the manifest's `content_size`
    /// (a hostile index may name one chunk a million times), and at its end compared with the
    /// manifest's size and sha256. Reaching the end (`read` returning 0) means it matched; every
    /// problem is one `Damaged` (inside the `io::Error`: `Damaged::from_read`). A chunk is not
    /// checked against its name as well: the whole content's sha256 catches the same damage.
    pub fn open_checked(&self, entry: &FileEntry) -> Result<Checked, Damaged> {
        self.open_compared(entry, Compare::Content)
    }

    /// `open_checked`, comparing what `compare` says at the content's end. `Compare::Stored`:
    /// the stored bytes' checksum (a chunked file's index) instead of the content's sha256, and
    /// no chunk against its name: the content's sha256 is for its reader to compare (Qdrant).
    pub fn open_compared(&self, entry: &FileEntry, compare: Compare) -> Result<Checked, Damaged> {
        let opened = || -> io::Result<Checked> {
            let (stored, tally) = checked::tallied(self.open_entry(entry)?, entry, compare);
            // No chunk against its name: the content's sha256, or Qdrant's, catches the same.
            let content = self.decoded(entry, stored, false)?;
            Ok(Checked::new(content, entry, tally))
        };
        opened().map_err(|e| Damaged::new(&entry.path, format!("cannot read: {e}")))
    }

    /// A small file's whole content (a configuration), checked (`open_checked`), at most
    /// `limit` bytes however large the manifest says it is: memory is bounded before it is read.
    pub fn read_small_content(&self, entry: &FileEntry, limit: u64) -> Result<Vec<u8>, Damaged> {
        if entry.content_size > limit {
            return Err(Damaged::new(
                &entry.path,
                format!(
                    "cannot read: its manifest says {} bytes, more than the {limit} wqm reads of such a file",
                    entry.content_size
                ),
            ));
        }
        let mut bytes = Vec::new();
        self.open_checked(entry)?
            .read_to_end(&mut bytes)
            .map_err(|e| Damaged::from_read(&entry.path, e))?;
        Ok(bytes)
    }

    /// The chunk store of the backups beside this one, held shared while the result lives.
    pub fn chunk_store(&self) -> io::Result<Arc<ChunkStore>> {
        self.open_chunk_store().map_err(|e| {
            let kind = if e.is_busy() {
                io::ErrorKind::WouldBlock
            } else {
                io::ErrorKind::InvalidData
            };
            // The `ChunkError` stays inside, so its exit code and hint reach the edge.
            io::Error::new(kind, e)
        })
    }

    /// The chunk store of the backups beside this one (`chunk_store` with the store's error).
    pub fn open_chunk_store(&self) -> Result<Arc<ChunkStore>, ChunkError> {
        match &self.remote {
            None => ChunkStore::open_for_reading(self.backups_dir()),
            Some(remote) => ChunkStore::open_remote(&remote.repository),
        }
    }

    /// The backups beside this one (in its directory, or its remote repository).
    pub fn siblings(&self) -> io::Result<Scan> {
        match &self.remote {
            None => scan(self.backups_dir()),
            Some(remote) => scan_remote(&remote.repository),
        }
    }

    /// The directory this backup belongs to (a staged backup: the one its target will be in).
    pub(crate) fn backups_dir(&self) -> &Path {
        backups_dir_of(&self.path)
    }

    /// Opens a file of the fixed layout (a legacy backup's `sqlite/state.db`, ...): its stored
    /// bytes, decrypted and authenticated as they are read in an encrypted repository.
    pub fn open_file(&self, rel: &str) -> io::Result<Box<dyn Read + Send>> {
        let seal = self.seal();
        let at = stored_name(seal.as_ref(), rel);
        let stored: Box<dyn Read + Send> = match &self.remote {
            None => Box::new(open_in(&self.path, &at)?),
            Some(remote) => {
                object_in(&at)?;
                remote.open(&at)?
            }
        };
        match seal {
            None => Ok(stored),
            Some(seal) => {
                let identity = crate::crypto::Identity::file(&self.sealed_name(), rel);
                Ok(Box::new(seal.reader(BufReader::new(stored), &identity)?))
            }
        }
    }

    /// The entry at `rel` itself (a link is reported as a link; remotely, a name with objects
    /// under it is a directory).
    pub fn stat(&self, rel: &str) -> io::Result<Stat> {
        let at = stored_name(self.seal().as_ref(), rel);
        match &self.remote {
            None => stat_in(&self.path, &at),
            Some(remote) => remote.stat(&at),
        }
    }

    /// Whether the backup is in an encrypted repository (which this run opened).
    pub fn is_encrypted(&self) -> bool {
        self.seal().is_some()
    }

    /// How many bytes a file of `size` stored bytes occupies: more when encrypted (a header,
    /// and a tag per segment).
    pub fn stored_len(&self, size: u64) -> u64 {
        match self.seal() {
            None => size,
            Some(_) => seal::sealed_len(size),
        }
    }

    /// Every entry that is not a directory (files, links, anything else), relative and
    /// `/`-separated, sorted. Directories are walked without following links.
    /// In an encrypted repository each stored name is shown as the path the manifest gives it
    /// (a stored name no entry has is shown as it is).
    pub fn list(&self) -> Vec<String> {
        let stored = match &self.remote {
            None => list_in(&self.path),
            Some(remote) => remote.list(),
        };
        let Some(seal) = self.seal() else {
            return stored;
        };
        let paths: std::collections::HashMap<String, &str> = self
            .manifest
            .files
            .iter()
            .map(|f| (seal.stored_name(&f.path), f.path.as_str()))
            .collect();
        let mut shown: Vec<String> = stored
            .into_iter()
            .map(|at| paths.get(&at).map_or(at, |path| path.to_string()))
            .collect();
        shown.sort();
        shown
    }
}

/// Where the file `rel` of a backup is stored: under its keyed name in an encrypted repository.
fn stored_name(seal: Option<&Seal>, rel: &str) -> String {
    match seal {
        None => rel.to_string(),
        Some(seal) => seal.stored_name(rel),
    }
}

/// The directory the backup at `path` belongs to (a staged backup: the one its target will be
/// in).
fn backups_dir_of(path: &Path) -> &Path {
    let parent = crate::fs::parent_dir(path);
    if layout::is_staging(parent) {
        crate::fs::parent_dir(parent)
    } else {
        parent
    }
}

/// The backup's name in its repository: a staged backup (`.NAME.wqm-staging/backup`) is its
/// target's, `NAME`.
pub(crate) fn backup_name_of(path: &Path) -> String {
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let parent = crate::fs::parent_dir(path);
    if layout::is_staging(parent) {
        let staged = name(parent);
        let staged = staged.split(".new-").next().unwrap_or(&staged);
        return staged
            .strip_prefix('.')
            .and_then(|s| s.strip_suffix(layout::STAGING_SUFFIX))
            .unwrap_or(staged)
            .to_string();
    }
    name(path)
}

fn unsafe_path(rel: &str, reason: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("`{}` {reason}; not read", crate::format::names::shown(rel)),
    )
}

fn symlink_refused(rel: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "`{}` is a symbolic link or passes through one; wqm never follows links in a backup",
            crate::format::names::shown(rel)
        ),
    )
}

/// The local directory `root` (a backup, a repository) as a backend, to read from: `root`
/// itself as the user named it, nothing inside it through a link (`LocalBackend`).
fn files_of(root: &Path) -> io::Result<LocalBackend> {
    LocalBackend::existing(root).map_err(|e| in_backup(e, ""))
}

/// `rel` as the name of an object in a backup.
fn object_in(rel: &str) -> io::Result<Name> {
    Name::new(rel).map_err(|_| unsafe_path(rel, "is not a path inside the backup"))
}

/// An error of the backend said in a backup's terms: the path inside it, and why links are
/// refused; a missing one as the system says it.
fn in_backup(e: BackendError, rel: &str) -> io::Error {
    match e {
        BackendError::Link { .. } => symlink_refused(rel),
        BackendError::NotAFile { .. } => io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "`{}` is not a regular file",
                crate::format::names::shown(rel)
            ),
        ),
        BackendError::NotFound { .. } => rustix::io::Errno::NOENT.into(),
        BackendError::BadName { .. } => unsafe_path(rel, "is not a path inside the backup"),
        BackendError::Io { source, .. } => source,
        e => io::Error::other(e),
    }
}

/// Opens `rel` under `root` for reading: every component a real directory, the last a regular
/// file, no link followed.
pub fn open_in(root: &Path, rel: &str) -> io::Result<File> {
    let name = object_in(rel)?;
    let (file, _) = files_of(root)?
        .open_blocking(&name)
        .map_err(|e| in_backup(e, rel))?;
    Ok(file)
}

/// The entry `rel` under `root` itself; a link in a directory above it is an error.
pub fn stat_in(root: &Path, rel: &str) -> io::Result<Stat> {
    let name = object_in(rel)?;
    let entry = files_of(root)?
        .entry_blocking(&name)
        .map_err(|e| in_backup(e, rel))?;
    Ok(Stat {
        kind: entry.kind,
        len: entry.size,
    })
}

/// Removes the local directory `path` whole through its parent's backend (links inside removed
/// as links, never followed). One whose name no object can have (a backslash, a control
/// character: made by hand, never by wqm on S3) is removed by the file system, which follows
/// no link either. A missing one is no error.
pub fn remove_dir(path: &Path) -> io::Result<()> {
    match object_name(path) {
        Some(name) => files_of(crate::fs::parent_dir(path))?
            .remove_under_blocking(name.as_str())
            .map(drop)
            .map_err(|e| in_backup(e, name.as_str())),
        None => match std::fs::remove_dir_all(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        },
    }
}

/// The last component of `path` as an object name, when it can be one.
pub fn object_name(path: &Path) -> Option<Name> {
    Name::new(path.file_name()?.to_str()?).ok()
}

/// Every non-directory entry under `root`, relative, sorted; links are listed, not followed.
pub fn list_in(root: &Path) -> Vec<String> {
    let entries =
        files_of(root).and_then(|files| files.entries_blocking("").map_err(|e| in_backup(e, "")));
    entries
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.kind != Kind::Dir)
        .map(|e| e.name)
        .collect()
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    #[test]
    fn scan_reports_unreadable_backups_and_skips_other_things() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let staging = Staging::begin(&r.join("good"), false).unwrap();
        staging
            .write_manifest(&Manifest::new("0.3.0", 1.0))
            .unwrap();
        staging.commit().unwrap();
        fs::create_dir_all(r.join("broken/metadata")).unwrap();
        fs::write(r.join("broken/metadata/manifest.json"), "{").unwrap();
        fs::create_dir_all(r.join("incomplete/metadata")).unwrap();
        fs::create_dir_all(r.join("not-a-backup/stuff")).unwrap();
        fs::create_dir_all(r.join(".hidden/metadata")).unwrap();
        // wqm's own parts of the directory are not listed at all.
        for part in [".wqm-chunks", ".wqm-locks", ".wqm-backend"] {
            fs::create_dir_all(r.join(part).join("metadata")).unwrap();
        }
        fs::write(r.join("file.txt"), "x").unwrap();
        symlink(r.join("good"), r.join("link")).unwrap();
        let found = scan(r).unwrap();
        let seen: Vec<(&str, &str)> = found
            .entries
            .iter()
            .map(|e| {
                let what = match &e.seen {
                    Seen::Backup(_) => "backup",
                    Seen::Unreadable(_) => "unreadable",
                    Seen::Other(_) => "other",
                };
                (e.name.as_str(), what)
            })
            .collect();
        assert_eq!(
            seen,
            [
                (".hidden", "other"),
                ("broken", "unreadable"),
                ("good", "backup"),
                ("incomplete", "unreadable"),
                ("link", "other"),
                ("not-a-backup", "other"),
            ]
        );
    }

    #[test]
    fn links_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("b");
        let outside = dir.path().join("outside");
        fs::create_dir_all(root.join("collections")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), "secret").unwrap();
        fs::write(root.join("collections/a.snapshot"), "data").unwrap();
        symlink(
            outside.join("secret"),
            root.join("collections/link.snapshot"),
        )
        .unwrap();
        symlink(&outside, root.join("sqlite")).unwrap();

        let mut text = String::new();
        open_in(&root, "collections/a.snapshot")
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "data");
        for linked in ["collections/link.snapshot", "sqlite/secret"] {
            let err = open_in(&root, linked).unwrap_err();
            assert!(err.to_string().contains("symbolic link"), "{linked}: {err}");
        }
        assert_eq!(
            stat_in(&root, "collections/link.snapshot").unwrap().kind,
            Kind::Symlink
        );
        assert!(stat_in(&root, "sqlite/secret").is_err());
        assert_eq!(
            stat_in(&root, "collections/a.snapshot").unwrap(),
            Stat {
                kind: Kind::File,
                len: 4
            }
        );
        assert!(open_in(&root, "collections").is_err(), "a directory");
        assert!(open_in(&root, "../outside/secret").is_err());
        assert_eq!(
            list_in(&root),
            [
                "collections/a.snapshot",
                "collections/link.snapshot",
                "sqlite"
            ]
        );
    }

    #[test]
    fn a_fifo_does_not_hang_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("sqlite")).unwrap();
        let fifo = dir.path().join("sqlite/state.db");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let err = open_in(dir.path(), "sqlite/state.db").unwrap_err();
        assert_eq!(err.to_string(), "`sqlite/state.db` is not a regular file");
    }
}

//! The backup directory on disk: its layout, safe names, private permissions, the staged
//! writer that makes a backup appear only when complete, and finding backups in a directory.
//!
//! ```text
//! <backup>/metadata/manifest.json        written last; no manifest, no backup
//! <backup>/collections/<name>.snapshot[.zst]
//! <backup>/sqlite/state.db[.zst]          (and search.db, graph.db)
//! <backup>/config/config.yaml
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::checksum::{Algorithm, Digester, HashingWriter};
use crate::compress::{Compression, Encoder};
use crate::exit::{Classify, ExitCode};
use crate::manifest::{FileEntry, FileKind, Manifest, ManifestError};
use crate::store::BackupDir;
use crate::workdir::{self, Record, WorkDir, WorkDirError};

pub const METADATA_DIR: &str = "metadata";
pub const MANIFEST_PATH: &str = "metadata/manifest.json";
pub const COLLECTIONS_DIR: &str = "collections";
pub const SQLITE_DIR: &str = "sqlite";
pub const CONFIG_DIR: &str = "config";
/// Subdirectories every backup has (the Python layout).
pub const REQUIRED_DIRS: [&str; 3] = [METADATA_DIR, COLLECTIONS_DIR, SQLITE_DIR];

pub const STAGING_SUFFIX: &str = ".wqm-staging";
/// Inside a staging directory: the backup being written.
const STAGED_BACKUP_DIR: &str = "backup";
/// Inside a staging directory: the backup `--force` replaced, until it is removed.
const REPLACED_DIR: &str = "replaced";

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("Backup directory not found: {}", path.display())]
    NotFound { path: PathBuf },
    #[error("Invalid backup directory structure: `{}` is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error("`{}` is the staging directory of an unfinished backup, not a backup", path.display())]
    Unfinished { path: PathBuf },
    #[error("Backup directory already exists: {}", path.display())]
    AlreadyExists { path: PathBuf },
    #[error("`{}` exists and is not a wqm backup; refusing to replace it", path.display())]
    NotABackup { path: PathBuf },
    #[error("another wqm is writing `{}` (its staging directory `{}` is locked)", path.display(), lock.display())]
    Busy { path: PathBuf, lock: PathBuf },
    #[error(transparent)]
    Work(WorkDirError),
    #[error("unsafe name `{name}` in the manifest: {reason}")]
    UnsafeName { name: String, reason: &'static str },
    #[error("{action} `{}`: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl LayoutError {
    fn io<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> LayoutError + 'p {
        move |source| LayoutError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

impl Classify for LayoutError {
    fn exit_code(&self) -> ExitCode {
        match self {
            LayoutError::Work(e) => e.exit_code(),
            LayoutError::NotFound { .. }
            | LayoutError::NotADirectory { .. }
            | LayoutError::Unfinished { .. }
            | LayoutError::UnsafeName { .. } => ExitCode::InvalidBackup,
            LayoutError::AlreadyExists { .. }
            | LayoutError::NotABackup { .. }
            | LayoutError::Busy { .. }
            | LayoutError::Io { .. } => ExitCode::Failure,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            LayoutError::Work(e) => e.hint(),
            LayoutError::AlreadyExists { .. } => Some("Use --force to overwrite (the old backup is kept until the new one is complete), or choose another path".to_string()),
            LayoutError::NotABackup { .. } => Some("choose a new path, or a directory that holds a backup".to_string()),
            LayoutError::Busy { .. } => Some("wait for the other run to finish; runs into different targets can go at the same time".to_string()),
            LayoutError::Unfinished { .. } => Some("its run is still going or died before the backup was complete; use the finished backup beside it, and `wqm backup cleanup DIR` to remove a dead run's leftovers".to_string()),
            LayoutError::NotFound { .. } => Some("check the path; `wqm backup list DIR` shows the backups in a directory".to_string()),
            LayoutError::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull => {
                Some(crate::exit::DISK_FULL_HINT.to_string())
            }
            _ => None,
        }
    }
}

// ---- names -----------------------------------------------------------------------------------

/// A collection name from a manifest or from Qdrant, before it becomes part of a path
/// (`names::check_collection_name`).
pub fn check_name(name: &str) -> Result<(), LayoutError> {
    crate::names::check_collection_name(name).map_err(|reason| LayoutError::UnsafeName {
        name: crate::names::shown(name),
        reason,
    })
}

/// A `files[].path` of a manifest: relative, `/`-separated, inside the backup layout
/// (`names::EntryPath`).
pub fn check_relative_path(path: &str) -> Result<(), LayoutError> {
    crate::names::EntryPath::parse(path)
        .map(drop)
        .map_err(|reason| LayoutError::UnsafeName {
            name: crate::names::shown(path),
            reason,
        })
}

/// `collections/<name>.snapshot[.zst]`.
pub fn snapshot_path(collection: &str, compression: Compression) -> String {
    format!(
        "{COLLECTIONS_DIR}/{collection}.snapshot{}",
        compression.extension()
    )
}

/// `collections/<name>/shard-<id>.snapshot[.zst]`.
pub fn shard_snapshot_path(collection: &str, shard: u32, compression: Compression) -> String {
    format!(
        "{COLLECTIONS_DIR}/{collection}/shard-{shard}.snapshot{}",
        compression.extension()
    )
}

/// `sqlite/<file>[.zst]`.
pub fn database_path(file_name: &str, compression: Compression) -> String {
    format!("{SQLITE_DIR}/{file_name}{}", compression.extension())
}

/// `collections/<name>.config.json` of a legacy Python backup.
pub fn legacy_collection_config_path(collection: &str) -> String {
    format!("{COLLECTIONS_DIR}/{collection}.config.json")
}

/// Hidden entries (staging directories, locks) are never backups.
pub fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

// ---- permissions -----------------------------------------------------------------------------

/// Backups hold vectors, payloads and configuration: only the owner may read them.
pub fn create_private_dir_all(path: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

pub(crate) fn create_private_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Makes a rename or a new entry in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

// ---- writing a backup ------------------------------------------------------------------------

/// A backup being written in a hidden sibling of its target, `.NAME.wqm-staging`: a working
/// directory (lock, journal) whose `backup/` becomes the backup. Dropped without `commit`, it
/// removes itself, so a failed or interrupted run leaves nothing `list` or `validate` accepts;
/// a killed run leaves it for the next run's cleanup, which its journal guides.
pub struct Staging {
    target: PathBuf,
    work: WorkDir,
    dir: PathBuf,
}

/// Hidden sibling names of a target: `.NAME.wqm-staging`, ...
pub fn sibling(target: &Path, suffix: &str) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}{suffix}"))
}

/// `.NAME.wqm-staging`: where the backup `target` is being written.
pub fn staging_path(target: &Path) -> PathBuf {
    sibling(target, STAGING_SUFFIX)
}

/// Whether a live run is writing the backup `target` (a `create`, or a `--force` replacing it).
pub fn being_written(target: &Path) -> bool {
    workdir::is_live(&staging_path(target))
}

/// Whether `path` is, or is inside, a staging directory: never a backup, even when the run
/// that made it died after writing its manifest.
pub fn is_staging(path: &Path) -> bool {
    path.components().any(|c| {
        let name = c.as_os_str().to_string_lossy();
        let base = name.split(".new-").next().unwrap_or(&name);
        name.starts_with('.') && base.ends_with(STAGING_SUFFIX)
    })
}

/// Takes the lock file's exclusive lock without waiting: `None` when another holds it.
pub fn try_lock(lock: &Path) -> io::Result<Option<File>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Whether someone holds the lock of an existing lock file (a missing file is not held).
pub fn lock_is_held(lock: &Path) -> bool {
    let Ok(file) = OpenOptions::new().read(true).write(true).open(lock) else {
        return false;
    };
    matches!(file.try_lock(), Err(fs::TryLockError::WouldBlock))
}

impl Staging {
    /// Takes the target's staging directory and prepares it. Fails before any work when the
    /// target exists and `replace` is false, when another run is writing the target, or when
    /// a dead run's staging directory has not been cleaned up.
    pub fn begin(target: &Path, replace: bool) -> Result<Self, LayoutError> {
        if target.exists() {
            if !replace {
                return Err(LayoutError::AlreadyExists {
                    path: target.to_path_buf(),
                });
            }
            // --force replaces a backup, never an arbitrary directory.
            let is_backup = BackupDir::read_manifest(target).is_ok();
            let is_empty_dir = fs::read_dir(target).is_ok_and(|mut d| d.next().is_none());
            if !is_backup && !is_empty_dir {
                return Err(LayoutError::NotABackup {
                    path: target.to_path_buf(),
                });
            }
        }
        if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_private_dir_all(parent).map_err(LayoutError::io("cannot create", parent))?;
        }
        let staging = staging_path(target);
        let run = Record::Run {
            command: "create".to_string(),
            path: target.to_path_buf(),
            pid: std::process::id(),
            started: crate::now(),
        };
        let work = WorkDir::create(&staging, run).map_err(|e| match e {
            WorkDirError::Busy { .. } => LayoutError::Busy {
                path: target.to_path_buf(),
                lock: staging.clone(),
            },
            other => LayoutError::Work(other),
        })?;
        let dir = work.path().join(STAGED_BACKUP_DIR);
        for sub in REQUIRED_DIRS {
            let path = dir.join(sub);
            create_private_dir_all(&path).map_err(LayoutError::io("cannot create", &path))?;
        }
        Ok(Staging {
            target: target.to_path_buf(),
            work,
            dir,
        })
    }

    /// The directory the backup is written in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The run's journal: what it asked Qdrant to make.
    pub fn journal(&self) -> &WorkDir {
        &self.work
    }

    /// Opens `rel` (see `check_relative_path`) for streaming content into it.
    pub fn create_file(
        &self,
        rel: &str,
        kind: FileKind,
        compression: Compression,
        algorithm: Algorithm,
    ) -> Result<FileSink, LayoutError> {
        check_relative_path(rel)?;
        let path = self.dir.join(rel);
        if let Some(parent) = path.parent() {
            create_private_dir_all(parent).map_err(LayoutError::io("cannot create", parent))?;
        }
        let file = create_private_file(&path).map_err(LayoutError::io("cannot create", &path))?;
        let file = WritebackFile {
            file,
            written: 0,
            scheduled: 0,
        };
        let stored = HashingWriter::new(BufWriter::with_capacity(1 << 20, file), &[algorithm]);
        Ok(FileSink {
            rel: rel.to_string(),
            path: path.clone(),
            kind,
            compression,
            algorithm,
            content: Digester::new(&[Algorithm::Sha256]),
            writer: compression
                .encoder(stored)
                .map_err(LayoutError::io("cannot start compressing", &path))?,
        })
    }

    /// Writes the manifest (atomically); the last file of a backup.
    pub fn write_manifest(&self, manifest: &Manifest) -> Result<(), LayoutError> {
        let path = self.dir.join(MANIFEST_PATH);
        manifest
            .save(&path)
            .map_err(LayoutError::io("cannot write", &path))
    }

    /// Makes everything durable and moves the backup into place. An existing backup at the
    /// target is swapped out in one atomic step (see `swap_into_place`), so a crash at any
    /// instant leaves the old or the new backup under the name.
    pub fn commit(self) -> Result<PathBuf, LayoutError> {
        let manifest_path = self.dir.join(MANIFEST_PATH);
        if !manifest_path.is_file() {
            return Err(LayoutError::io("no manifest at", &manifest_path)(
                io::Error::from(io::ErrorKind::NotFound),
            ));
        }
        for sub in [METADATA_DIR, COLLECTIONS_DIR, SQLITE_DIR, CONFIG_DIR] {
            let path = self.dir.join(sub);
            if path.is_dir() {
                sync_dir(&path).map_err(LayoutError::io("cannot sync", &path))?;
            }
        }
        sync_dir(&self.dir).map_err(LayoutError::io("cannot sync", &self.dir))?;
        crate::failpoint::hit("create:before-rename")
            .map_err(LayoutError::io("failpoint", &self.dir))?;
        let parent = self
            .target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let replaced = if fs::symlink_metadata(&self.target).is_ok() {
            swap_into_place(&self.dir, &self.target, self.work.path())?;
            true
        } else {
            fs::rename(&self.dir, &self.target).map_err(LayoutError::io(
                "cannot move the new backup into place",
                &self.target,
            ))?;
            false
        };
        sync_dir(&parent).map_err(LayoutError::io("cannot sync", &parent))?;
        if replaced {
            // The old backup is now inside the staging directory, which goes with it.
            crate::failpoint::hit("create:replaced-not-removed")
                .map_err(LayoutError::io("failpoint", &self.dir))?;
        }
        let target = self.target.clone();
        drop(self);
        Ok(target)
    }
}

/// Puts the backup at `new` in place of the one at `target`; the old one ends up inside `work`.
/// On Linux one `renameat2(RENAME_EXCHANGE)` swaps the two directories atomically. Where that
/// is not available (other systems, filesystems without it) the old backup is first moved into
/// `work` and the new one renamed into place: a crash between the two leaves the old backup
/// inside the dead run's staging directory, and nothing under the name.
fn swap_into_place(new: &Path, target: &Path, work: &Path) -> Result<(), LayoutError> {
    if exchange(new, target).is_ok() {
        return Ok(());
    }
    let aside = work.join(REPLACED_DIR);
    fs::rename(target, &aside)
        .map_err(LayoutError::io("cannot move the old backup aside", target))?;
    fs::rename(new, target).map_err(LayoutError::io(
        "cannot move the new backup into place",
        target,
    ))
}

#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other);
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: both are valid NUL-terminated paths; the call only renames.
    let result = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_a: &Path, _b: &Path) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Streams one file into a staged backup: hashes the content (sha256), compresses, hashes the
/// stored bytes with the configured algorithm, and writes, all in one pass.
pub struct FileSink {
    rel: String,
    path: PathBuf,
    kind: FileKind,
    compression: Compression,
    algorithm: Algorithm,
    content: Digester,
    writer: Encoder<HashingWriter<BufWriter<WritebackFile>>>,
}

impl FileSink {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes, fsyncs and describes the file for the manifest.
    pub fn finish(self) -> Result<FileEntry, LayoutError> {
        let io = |action| LayoutError::io(action, &self.path);
        let stored = self.writer.finish().map_err(io("cannot finish writing"))?;
        let (buffered, stored_digests) = stored.into_parts();
        let file = buffered
            .into_inner()
            .map_err(|e| io("cannot write")(e.into_error()))?;
        file.file.sync_all().map_err(io("cannot sync"))?;
        let content = self.content.finish();
        Ok(FileEntry {
            path: self.rel,
            kind: self.kind,
            size: stored_digests.bytes,
            compression: self.compression,
            checksum: stored_digests.get(self.algorithm),
            content_size: content.bytes,
            content_sha256: content
                .get(Algorithm::Sha256)
                .map(|c| c.value)
                .unwrap_or_default(),
        })
    }
}

impl Write for FileSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.writer.write(buf)?;
        self.content.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

/// Writeback is started every this many bytes.
const WRITEBACK_EVERY: u64 = 8 << 20;

/// A file that asks the kernel to start writing its pages to disk every few MiB while it is
/// being written, so the final fsync waits for the tail only, not for the whole file.
struct WritebackFile {
    file: File,
    written: u64,
    scheduled: u64,
}

impl Write for WritebackFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.scheduled >= WRITEBACK_EVERY {
            start_writeback(&self.file, self.scheduled, self.written - self.scheduled);
            self.scheduled = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: the descriptor is open for the duration of the call, which only schedules
    // writeback of the range; a failure is harmless (the final fsync still runs).
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

/// Bytes available to an unprivileged user on the filesystem of `path`.
#[cfg(unix)]
pub fn available_space(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a valid NUL-terminated string and `stats` a writable statvfs.
    let result = unsafe { libc::statvfs(c_path.as_ptr(), stats.as_mut_ptr()) };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs succeeded, so it filled `stats`.
    let stats = unsafe { stats.assume_init() };
    // The field types differ between platforms (u32 on some), hence the casts.
    #[allow(clippy::unnecessary_cast)]
    Ok(stats.f_bavail as u64 * stats.f_frsize as u64)
}

// ---- reading backups -------------------------------------------------------------------------

/// Bytes of all regular files under `path`, symlinks not followed.
pub fn disk_usage(path: &Path) -> io::Result<u64> {
    let mut total = 0;
    let mut pending = vec![path.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                total += entry.metadata()?.len();
            }
        }
    }
    Ok(total)
}

/// Refuses a path given as a backup that is (inside) a staging directory: the run that made it
/// is still going or died, whatever its manifest says.
pub fn refuse_unfinished(path: &Path) -> Result<(), LayoutError> {
    let resolved = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if is_staging(&resolved) {
        return Err(LayoutError::Unfinished {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Fails unless `path` is an existing directory.
pub fn ensure_backup_dir(path: &Path) -> Result<(), LayoutError> {
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(LayoutError::NotADirectory {
            path: path.to_path_buf(),
        }),
        Err(_) => Err(LayoutError::NotFound {
            path: path.to_path_buf(),
        }),
    }
}

/// A backup found by `scan`.
#[derive(Debug)]
pub struct Found {
    pub backup: BackupDir,
    pub size: u64,
}

/// What `scan` saw in a directory.
#[derive(Debug, Default)]
pub struct Scan {
    pub backups: Vec<Found>,
    /// Entries that look like backups but cannot be read, with the reason.
    pub problems: Vec<(PathBuf, String)>,
}

/// Every backup directly in `dir`: new and legacy. Hidden entries (staging, locks) are skipped;
/// directories that have `metadata/` but no readable manifest are reported, not dropped.
pub fn scan(dir: &Path) -> io::Result<Scan> {
    let mut scan = Scan::default();
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if is_hidden(&name) || !path.is_dir() {
            continue;
        }
        let manifest_path = path.join(MANIFEST_PATH);
        if !manifest_path.exists() && !path.join(METADATA_DIR).exists() {
            continue;
        }
        match BackupDir::read_manifest(&path) {
            Ok(manifest) => {
                let size = disk_usage(&path).unwrap_or(0);
                scan.backups.push(Found {
                    backup: BackupDir { path, manifest },
                    size,
                });
            }
            Err(e @ ManifestError::Missing { .. }) => scan
                .problems
                .push((path, format!("incomplete backup: {e}"))),
            Err(e) => scan.problems.push((path, e.to_string())),
        }
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn finish(staging: Staging, timestamp: f64) {
        staging
            .write_manifest(&Manifest::new("0.3.0", timestamp))
            .unwrap();
        staging.commit().unwrap();
    }

    #[test]
    fn names_that_could_escape_are_refused() {
        for ok in ["projects", "my-notes_2", "a.b"] {
            check_name(ok).unwrap();
        }
        for bad in ["", "a/b", "a\\b", "..", ".", "a..b", "nul\0", ".hidden"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        check_relative_path("collections/a.snapshot").unwrap();
        for bad in [
            "/etc/passwd",
            "../x",
            "collections/../../x",
            "a\\b",
            "",
            "./a",
            "a\0b",
        ] {
            assert!(check_relative_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn staged_backup_appears_only_on_commit() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("b1");
        let staging = Staging::begin(&target, false).unwrap();
        let mut sink = staging
            .create_file(
                "sqlite/state.db.zst",
                FileKind::SqliteDatabase,
                Compression::Zstd,
                Algorithm::Md5,
            )
            .unwrap();
        sink.write_all(b"hello world").unwrap();
        let entry = sink.finish().unwrap();
        assert_eq!(entry.content_size, 11);
        assert_eq!(
            entry.content_sha256,
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        let stored = fs::read(staging.dir().join("sqlite/state.db.zst")).unwrap();
        assert_eq!(entry.size, stored.len() as u64);
        assert_eq!(
            entry.checksum.as_ref().unwrap(),
            &crate::checksum::digest(&stored, &[Algorithm::Md5])
                .get(Algorithm::Md5)
                .unwrap()
        );
        let mut plain = Vec::new();
        Compression::Zstd
            .decoder(&stored[..])
            .unwrap()
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, b"hello world");

        assert!(!target.exists());
        assert!(
            scan(root.path()).unwrap().backups.is_empty(),
            "staging is hidden"
        );
        // A second writer for the same target fails fast.
        assert!(matches!(
            Staging::begin(&target, true),
            Err(LayoutError::Busy { .. })
        ));

        let mut manifest = Manifest::new("0.3.0", 1.0);
        manifest.files.push(entry);
        staging.write_manifest(&manifest).unwrap();
        staging.commit().unwrap();
        assert!(target.join(MANIFEST_PATH).is_file());
        let found = scan(root.path()).unwrap();
        assert_eq!(found.backups.len(), 1);
        assert_eq!(found.backups[0].backup.manifest, manifest);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&target), 0o700);
            assert_eq!(mode(&target.join("sqlite")), 0o700);
            assert_eq!(mode(&target.join("sqlite/state.db.zst")), 0o600);
            assert_eq!(mode(&target.join(MANIFEST_PATH)), 0o600);
        }
    }

    #[test]
    fn an_abandoned_staging_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("b");
        {
            let staging = Staging::begin(&target, false).unwrap();
            let mut sink = staging
                .create_file(
                    "collections/a.snapshot",
                    FileKind::CollectionSnapshot,
                    Compression::None,
                    Algorithm::Sha256,
                )
                .unwrap();
            sink.write_all(b"partial").unwrap();
        }
        let names: Vec<_> = fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }

    #[test]
    fn existing_targets_need_replace_and_survive_until_commit() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("b");
        finish(Staging::begin(&target, false).unwrap(), 1.0);
        assert!(matches!(
            Staging::begin(&target, false),
            Err(LayoutError::AlreadyExists { .. })
        ));
        let staging = Staging::begin(&target, true).unwrap();
        assert_eq!(
            BackupDir::open(&target).unwrap().manifest.timestamp,
            1.0,
            "old backup intact while staging"
        );
        finish(staging, 2.0);
        assert_eq!(BackupDir::open(&target).unwrap().manifest.timestamp, 2.0);
        assert!(
            !staging_path(&target).exists(),
            "the old backup went with the staging dir"
        );
    }

    #[test]
    fn a_staging_directory_is_never_a_backup() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("b");
        let staging = Staging::begin(&target, false).unwrap();
        staging
            .write_manifest(&Manifest::new("0.3.0", 1.0))
            .unwrap();
        for path in [staging_path(&target), staging.dir().to_path_buf()] {
            assert!(is_staging(&path), "{}", path.display());
            assert!(matches!(
                refuse_unfinished(&path),
                Err(LayoutError::Unfinished { .. })
            ));
        }
        assert!(!is_staging(&target));
        assert!(is_staging(Path::new("/x/.b.wqm-staging.new-12/backup")));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn exchange_swaps_two_directories_in_one_step() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        fs::create_dir(&a).unwrap();
        fs::write(a.join("new"), "").unwrap();
        fs::create_dir(&b).unwrap();
        fs::write(b.join("old"), "").unwrap();
        exchange(&a, &b).unwrap();
        assert!(b.join("new").exists() && a.join("old").exists());
    }

    #[cfg(unix)]
    #[test]
    fn available_space_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        assert!(available_space(dir.path()).unwrap() > 0);
        assert!(available_space(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn force_never_replaces_something_that_is_not_a_backup() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("home");
        fs::create_dir_all(target.join("documents")).unwrap();
        assert!(matches!(
            Staging::begin(&target, true),
            Err(LayoutError::NotABackup { .. })
        ));
        assert!(target.join("documents").is_dir());
        let empty = root.path().join("empty");
        fs::create_dir_all(&empty).unwrap();
        finish(Staging::begin(&empty, true).unwrap(), 1.0);
        assert!(empty.join(MANIFEST_PATH).is_file());
    }

    #[test]
    fn scan_reports_unreadable_backups_and_skips_other_things() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        finish(Staging::begin(&r.join("good"), false).unwrap(), 1.0);
        fs::create_dir_all(r.join("broken/metadata")).unwrap();
        fs::write(r.join("broken/metadata/manifest.json"), "{").unwrap();
        fs::create_dir_all(r.join("incomplete/metadata")).unwrap();
        fs::create_dir_all(r.join("not-a-backup/stuff")).unwrap();
        fs::create_dir_all(r.join(".hidden/metadata")).unwrap();
        fs::write(r.join("file.txt"), "x").unwrap();
        let found = scan(r).unwrap();
        assert_eq!(found.backups.len(), 1);
        let problems: Vec<_> = found
            .problems
            .iter()
            .map(|(p, _)| p.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(problems, ["broken", "incomplete"]);
    }
}

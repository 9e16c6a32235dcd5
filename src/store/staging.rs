//! The storage seam, write side: a backup is written in a hidden sibling of its target
//! (`.NAME.wqm-staging/backup`, see `layout::staging_path`), each entry streamed through a
//! `FileSink` (content sha256, compression, the configured checksum of the stored bytes, all in
//! one pass), the manifest last; `commit` moves it into place atomically. A chunk store would
//! implement `create_file` over its own storage.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::checksum::{Algorithm, Digester, HashingWriter};
use crate::compress::{self, Encoder};
use crate::format::layout::{
    check_relative_path, staging_path, LayoutError, COLLECTIONS_DIR, CONFIG_DIR, MANIFEST_PATH,
    METADATA_DIR, REPLACED_DIR, REQUIRED_DIRS, SQLITE_DIR, STAGED_BACKUP_DIR,
};
use crate::format::manifest::{FileEntry, FileKind, Manifest};
use crate::fs::{create_private_dir_all, create_private_file};
use crate::workdir::{Record, WorkDir, WorkDirError};

use super::chunks::{Added, ChunkError, ChunkStore, ChunkWriter, Listed, Run, RunTemp, Selection};
use super::seal::{self, MaybeSealed, Seal};
use super::BackupDir;
use crate::crypto::Identity;
use crate::fs::sync_dir;

/// A backup being written in a hidden sibling of its target, `.NAME.wqm-staging`: a working
/// directory (lock, journal) whose `backup/` becomes the backup. Dropped without `commit`, it
/// removes itself, so a failed or interrupted run leaves nothing `list` or `validate` accepts;
/// a killed run leaves it for the next run's cleanup, which its journal guides.
pub struct Staging {
    target: PathBuf,
    work: WorkDir,
    dir: PathBuf,
    chunks: Option<Chunks>,
    /// The key of the encrypted repository the target is in: every file and the manifest are
    /// encrypted (`store::seal`).
    seal: Option<Seal>,
}

/// An incremental backup's share of the chunk store: the store (held shared for the whole run),
/// the run's temporary directory there, and what its files share (`chunks::Run`).
struct Chunks {
    store: Arc<ChunkStore>,
    temp: RunTemp,
    run: Arc<Run>,
}

impl Staging {
    /// Takes the target's staging directory and prepares it. Fails before any work when the
    /// target exists and `replace` is false, when another run is writing the target, or when
    /// a dead run's staging directory has not been cleaned up.
    pub fn begin(target: &Path, replace: bool) -> Result<Self, LayoutError> {
        Self::begin_as(target, replace, "create")
    }

    /// `begin` for the run `command` (`create`, `copy`), as its journal names it for a
    /// cleanup.
    pub fn begin_as(target: &Path, replace: bool, command: &str) -> Result<Self, LayoutError> {
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
        let parent = crate::fs::parent_dir(target);
        create_private_dir_all(parent).map_err(LayoutError::io("cannot create", parent))?;
        // Never plaintext into an encrypted repository this run did not unlock.
        let seal = seal::require_local(parent)?;
        let staging = staging_path(target);
        let run = Record::Run {
            command: command.to_string(),
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
            chunks: None,
            seal,
        })
    }

    /// The backup's name in its repository, which its encrypted objects are bound to.
    fn name(&self) -> String {
        super::backup_name_of(&self.target)
    }

    /// Makes this an incremental backup: files created as `Stored::Chunked` go to the
    /// chunk store of the target's directory (made with `avg_size` chunks when there is none),
    /// which this run holds shared until it ends, so no garbage collection runs meanwhile.
    /// With `listed` (a backup on its way to a repository on a backend), the store is a staging
    /// store with the repository's parameters, that gets only the chunks the repository lacks.
    pub fn use_chunk_store(
        &mut self,
        avg_size: usize,
        listed: Option<&Listed>,
    ) -> Result<(), ChunkError> {
        let dir = crate::fs::parent_dir(&self.target);
        let store = match listed {
            Some(listed) => ChunkStore::open_for_sending(dir, listed)?,
            None => ChunkStore::open_for_writing(dir, avg_size)?,
        };
        self.chunks = Some(Chunks {
            temp: store.temp_dir()?,
            store,
            run: Arc::default(),
        });
        Ok(())
    }

    /// What this run added to the chunk store so far, and the damaged chunks it stored again.
    pub fn chunks_added(&self) -> Added {
        self.chunks
            .as_ref()
            .map_or_else(Added::default, |c| c.run.added())
    }

    /// Compares only the reused chunks `share` picks with the data (see `chunks::Run`); set
    /// before the first file is written.
    pub fn compare_reused(&mut self, share: Selection) {
        if let Some(chunks) = &mut self.chunks {
            chunks.run = Arc::new(Run::comparing(share));
        }
    }

    /// How many chunks found in the store this run compared with its data.
    pub fn chunks_compared(&self) -> u64 {
        self.chunks.as_ref().map_or(0, |c| c.run.compared())
    }

    /// The chunks this run stored, new or repaired (see `chunks::Run::written`), that its
    /// verification reads back: all of them, but none where each was read back and checked as
    /// it landed (a night to S3, whose courier checks every chunk before it sends it; one that
    /// fails stops the run before its manifest).
    pub fn chunks_to_read_back(&self) -> std::collections::HashSet<super::chunks::ChunkId> {
        match &self.chunks {
            Some(chunks) if !chunks.store.checks_as_it_lands() => chunks.run.written(),
            _ => Default::default(),
        }
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
        compression: compress::Stored,
        algorithm: Algorithm,
    ) -> Result<FileSink, LayoutError> {
        check_relative_path(rel)?;
        // In an encrypted repository under its keyed name (`Seal::stored_name`).
        let path = self.dir.join(match &self.seal {
            None => rel.to_string(),
            Some(seal) => seal.stored_name(rel),
        });
        if let Some(parent) = path.parent() {
            create_private_dir_all(parent).map_err(LayoutError::io("cannot create", parent))?;
        }
        let file = create_private_file(&path).map_err(LayoutError::io("cannot create", &path))?;
        let file = WritebackFile {
            file,
            written: 0,
            scheduled: 0,
        };
        let buffered = BufWriter::with_capacity(1 << 20, file);
        let identity = Identity::file(&self.name(), rel);
        let sealed = MaybeSealed::new(buffered, self.seal.as_ref(), &identity)
            .map_err(LayoutError::io("cannot start encrypting", &path))?;
        let stored = HashingWriter::new(sealed, &[algorithm]);
        let body = match (compression, &self.chunks) {
            (compress::Stored::Chunked, Some(chunks)) => Body::Chunked(Box::new(
                ChunkWriter::new(
                    chunks.store.clone(),
                    chunks.run.clone(),
                    &chunks.temp,
                    stored,
                )
                .map_err(LayoutError::io("cannot start writing", &path))?,
            )),
            (compress::Stored::Chunked, None) => {
                let needs_store = io::Error::other(
                    "a chunked file is written through its chunk store (`use_chunk_store`)",
                );
                return Err(LayoutError::io("cannot start writing", &path)(needs_store));
            }
            (compress::Stored::Plain(compression), _) => Body::Encoded(
                compression
                    .encoder(stored)
                    .map_err(LayoutError::io("cannot start compressing", &path))?,
            ),
        };
        Ok(FileSink {
            rel: rel.to_string(),
            path: path.clone(),
            kind,
            compression,
            algorithm,
            content: Digester::new(&[Algorithm::Sha256]),
            body,
        })
    }

    /// Writes the manifest (atomically); the last file of a backup. Every chunk the backup
    /// reused is durable under its name first, and so is an incremental backup's reference
    /// list (`metadata/chunk-refs`), which the manifest records.
    pub fn write_manifest(&self, manifest: &Manifest) -> Result<(), LayoutError> {
        let path = self.dir.join(MANIFEST_PATH);
        if let Some(chunks) = &self.chunks {
            chunks
                .run
                .sync_reused(&chunks.store)
                .map_err(LayoutError::io("cannot sync the chunk store of", &path))?;
        }
        // An incremental backup's reference list, durable before the manifest records it.
        let mut manifest = manifest.clone();
        if self.chunks.is_some() {
            let refs = self.dir.join(super::chunks::REFS_PATH);
            manifest.chunk_refs = super::chunks::write_refs(&self.dir, &manifest)
                .map_err(LayoutError::io("cannot write", &refs))?;
        }
        match &self.seal {
            None => manifest.save(&path),
            Some(seal) => {
                let identity = Identity::manifest(&self.name());
                seal.seal(&identity, manifest.to_json().as_bytes())
                    .and_then(|sealed| crate::fs::write_atomic(&path, &sealed))
            }
        }
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
        // A cluster backup's shards: `collections/<name>/shard-<id>.snapshot…`.
        let collections = self.dir.join(COLLECTIONS_DIR);
        for entry in fs::read_dir(&collections).into_iter().flatten() {
            let entry = entry.map_err(LayoutError::io("cannot read", &collections))?;
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let path = entry.path();
                sync_dir(&path).map_err(LayoutError::io("cannot sync", &path))?;
            }
        }
        sync_dir(&self.dir).map_err(LayoutError::io("cannot sync", &self.dir))?;
        crate::failpoint::hit("create:before-rename")
            .map_err(LayoutError::io("failpoint", &self.dir))?;
        let parent = crate::fs::parent_dir(&self.target).to_path_buf();
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
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    Ok(renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE)?)
}

#[cfg(not(target_os = "linux"))]
fn exchange(_a: &Path, _b: &Path) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Streams one file into a staged backup: hashes the content (sha256), compresses (or cuts into
/// chunks for the chunk store), hashes the stored bytes with the configured algorithm, and
/// writes, all in one pass.
pub struct FileSink {
    rel: String,
    path: PathBuf,
    kind: FileKind,
    compression: compress::Stored,
    algorithm: Algorithm,
    content: Digester,
    body: Body,
}

/// The stored bytes of a file, hashed as they are written, then encrypted in an encrypted
/// repository.
type Stored = HashingWriter<MaybeSealed<BufWriter<WritebackFile>>>;

enum Body {
    /// The content itself, compressed or not.
    Encoded(Encoder<Stored>),
    /// The content's chunks go to the store; the file holds their index.
    Chunked(Box<ChunkWriter<Stored>>),
}

impl Body {
    fn finish(self) -> io::Result<Stored> {
        match self {
            Body::Encoded(encoder) => encoder.finish(),
            Body::Chunked(writer) => (*writer).finish(),
        }
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Body::Encoded(encoder) => encoder,
            Body::Chunked(writer) => &mut **writer,
        }
    }
}

impl FileSink {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes, fsyncs and describes the file for the manifest.
    pub fn finish(self) -> Result<FileEntry, LayoutError> {
        let io = |action| LayoutError::io(action, &self.path);
        let stored = self.body.finish().map_err(io("cannot finish writing"))?;
        let (sealed, stored_digests) = stored.into_parts();
        let file = sealed
            .finish()
            .map_err(io("cannot finish encrypting"))?
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
        let n = self.body.writer().write(buf)?;
        self.content.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.body.writer().flush()
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
    // rustix has no `sync_file_range`: the one raw call left.
    // SAFETY: the descriptor is open for the duration of the call, which only schedules
    // writeback of the range; a failure is harmless (the final fsync still runs).
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::layout::{is_staging, refuse_unfinished, LayoutError};
    use std::io::Read;

    fn finish(staging: Staging, timestamp: f64) {
        staging
            .write_manifest(&Manifest::new("0.3.0", timestamp))
            .unwrap();
        staging.commit().unwrap();
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
                compress::Stored::Plain(compress::Compression::Zstd),
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
        compress::Compression::Zstd
            .decoder(&stored[..])
            .unwrap()
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, b"hello world");

        assert!(!target.exists());
        assert!(
            crate::store::scan(root.path())
                .unwrap()
                .backups()
                .next()
                .is_none(),
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
        let found = crate::store::scan(root.path()).unwrap();
        let backups: Vec<_> = found.backups().collect();
        assert_eq!(backups.len(), 1);
        assert_eq!(backups[0].manifest, manifest);
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
                    compress::Stored::Plain(compress::Compression::None),
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

    /// The fan-out directory of each chunk an index names.
    fn fan_dirs(store: &Path, index: &str) -> std::collections::BTreeSet<PathBuf> {
        index
            .lines()
            .skip(1)
            .map(|line| store.join("chunks").join(&line[..2]))
            .collect()
    }

    /// An incremental backup of `target` being written, holding `data` as its state database.
    fn incremental_with(target: &Path, data: &[u8]) -> Staging {
        let mut staging = Staging::begin(target, false).unwrap();
        staging.use_chunk_store(4096, None).unwrap();
        let mut sink = staging
            .create_file(
                "sqlite/state.db.chunks",
                FileKind::SqliteDatabase,
                compress::Stored::Chunked,
                Algorithm::Sha256,
            )
            .unwrap();
        sink.write_all(data).unwrap();
        sink.finish().unwrap();
        staging
    }

    #[test]
    fn chunks_another_run_stored_are_durable_before_the_manifest_names_them() {
        let root = tempfile::tempdir().unwrap();
        let store_dir = root.path().join(crate::store::chunks::STORE_DIR);
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        // Another run stores the chunks (and may die before syncing their directories).
        drop(incremental_with(&root.path().join("other"), &data));
        crate::fs::take_synced();

        let staging = incremental_with(&root.path().join("b"), &data);
        assert_eq!(staging.chunks_added().chunks, 0, "every chunk reused");
        let chunks = store_dir.join("chunks");
        let synced = crate::fs::take_synced();
        assert!(
            !synced.iter().any(|dir| dir.starts_with(&chunks)),
            "nothing new to sync per file: {synced:?}"
        );
        staging
            .write_manifest(&Manifest::new("0.3.0", 1.0))
            .unwrap();
        let synced: std::collections::BTreeSet<PathBuf> = crate::fs::take_synced()
            .into_iter()
            .filter(|dir| dir.starts_with(&chunks))
            .collect();
        let index = fs::read_to_string(staging.dir().join("sqlite/state.db.chunks")).unwrap();
        let needed = fan_dirs(&store_dir, &index);
        assert!(needed.len() > 5, "{needed:?}");
        assert_eq!(synced, needed, "each reused chunk's directory, once");
    }

    #[test]
    fn commit_syncs_a_cluster_backups_collection_directories() {
        let root = tempfile::tempdir().unwrap();
        let staging = Staging::begin(&root.path().join("b"), false).unwrap();
        for rel in [
            "collections/a/shard-0.snapshot",
            "collections/b/shard-1.snapshot",
        ] {
            let mut sink = staging
                .create_file(
                    rel,
                    FileKind::ShardSnapshot,
                    compress::Stored::Plain(compress::Compression::None),
                    Algorithm::Sha256,
                )
                .unwrap();
            sink.write_all(b"shard").unwrap();
            sink.finish().unwrap();
        }
        staging
            .write_manifest(&Manifest::new("0.3.0", 1.0))
            .unwrap();
        let dir = staging.dir().to_path_buf();
        crate::fs::take_synced();
        staging.commit().unwrap();
        let synced = crate::fs::take_synced();
        for name in ["a", "b"] {
            let shards = dir.join("collections").join(name);
            assert!(synced.contains(&shards), "{shards:?} not in {synced:?}");
        }
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
}

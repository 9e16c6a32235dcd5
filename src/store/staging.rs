//! The storage seam, write side: a backup is written in a hidden sibling of its target
//! (`.NAME.wqm-staging/backup`, see `layout::staging_path`), each entry streamed through a
//! `FileSink` (content sha256, compression, the configured checksum of the stored bytes, all in
//! one pass), the manifest last; `commit` moves it into place atomically. Everything goes
//! through a `LocalBackend` over the backups directory: no link is followed or replaced.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::local::LocalBackend;
use crate::backend::{BackendError, Kind, Name};
use crate::checksum::Algorithm;
use crate::compress;
use crate::format::layout::{
    check_relative_path, staging_path, LayoutError, MANIFEST_PATH, REPLACED_DIR, REQUIRED_DIRS,
    STAGED_BACKUP_DIR,
};
use crate::format::manifest::{FileKind, Manifest};
use crate::workdir::{Record, WorkDir, WorkDirError};

use super::chunks::{Added, ChunkError, ChunkStore, Listed, Run, RunTemp, Selection};
use super::seal::{self, Seal};
use super::sink::{Encoding, FileSink};
use super::BackupDir;
use crate::crypto::Identity;

/// The name of the backup `target` in its repository: one S3 could hold too (a valid object
/// name), so that every local repository can be copied there.
pub fn checked_backup_name(target: &Path) -> Result<Name, LayoutError> {
    let bad = |reason| LayoutError::BadName {
        path: target.to_path_buf(),
        reason,
    };
    let name = match target.file_name().map(|name| name.to_str()) {
        None => return Err(bad("has no name of its own")),
        Some(None) => return Err(bad("is not UTF-8")),
        Some(Some(name)) => name,
    };
    match Name::new(name) {
        Ok(name) => Ok(name),
        Err(BackendError::BadName { reason, .. }) => Err(bad(reason)),
        Err(_) => Err(bad("is not a name")),
    }
}

/// A backup being written in a hidden sibling of its target, `.NAME.wqm-staging`: a working
/// directory (lock, journal) whose `backup/` becomes the backup. Dropped without `commit`, it
/// removes itself, so a failed or interrupted run leaves nothing `list` or `validate` accepts;
/// a killed run leaves it for the next run's cleanup, which its journal guides.
pub struct Staging {
    target: PathBuf,
    /// The backups directory the target is in, which every file is written through.
    files: LocalBackend,
    /// The target's name there (the backup's name, which its encrypted objects are bound to),
    /// and the staged backup's (`.NAME.wqm-staging/backup`).
    name: Name,
    staged: Name,
    /// Whether a backup at the target is replaced (`--force`).
    replace: bool,
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
        let name = checked_backup_name(target)?;
        let parent = crate::fs::parent_dir(target);
        let files = LocalBackend::open(parent)
            .map_err(|e| LayoutError::io("cannot create", parent)(e.into()))?;
        match files.entry_blocking(&name) {
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(LayoutError::io("cannot look at", target)(e.into())),
            Ok(_) if !replace => {
                return Err(LayoutError::AlreadyExists {
                    path: target.to_path_buf(),
                })
            }
            Ok(found) => {
                // --force replaces a backup, never an arbitrary directory (nor a link).
                let is_dir = found.kind == Kind::Dir;
                let is_backup = is_dir && BackupDir::read_manifest(target).is_ok();
                let is_empty_dir = is_dir
                    && files
                        .entries_blocking(&format!("{name}/"))
                        .is_ok_and(|entries| entries.is_empty());
                if !is_backup && !is_empty_dir {
                    return Err(LayoutError::NotABackup {
                        path: target.to_path_buf(),
                    });
                }
            }
        }
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
        let staged = staging
            .file_name()
            .and_then(|dir| dir.to_str())
            .and_then(|dir| Name::new(format!("{dir}/{STAGED_BACKUP_DIR}")).ok())
            .expect("the sibling of a valid name");
        let dir = work.path().join(STAGED_BACKUP_DIR);
        for sub in REQUIRED_DIRS {
            let path = dir.join(sub);
            Name::new(format!("{staged}/{sub}"))
                .and_then(|sub| files.create_dir_blocking(&sub))
                .map_err(|e| LayoutError::io("cannot create", &path)(e.into()))?;
        }
        Ok(Staging {
            target: target.to_path_buf(),
            files,
            name,
            staged,
            replace,
            work,
            dir,
            chunks: None,
            seal,
        })
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
        let stored_rel = match &self.seal {
            None => rel.to_string(),
            Some(seal) => seal.stored_name(rel),
        };
        let (file, path) = self.create_stored(&stored_rel)?;
        let encoding = match (compression, &self.chunks) {
            (compress::Stored::Chunked, Some(chunks)) => Encoding::Chunked {
                store: chunks.store.clone(),
                run: chunks.run.clone(),
                temp: &chunks.temp,
            },
            (compress::Stored::Chunked, None) => {
                let needs_store = io::Error::other(
                    "a chunked file is written through its chunk store (`use_chunk_store`)",
                );
                return Err(LayoutError::io("cannot start writing", &path)(needs_store));
            }
            (compress::Stored::Plain(compression), _) => Encoding::Plain(compression),
        };
        let identity = Identity::file(self.name.as_str(), rel);
        let sealed = self.seal.as_ref().map(|seal| (seal, &identity));
        FileSink::new(rel, path, file, kind, algorithm, sealed, encoding)
    }

    /// A new file `stored_rel` of the backup, to be written as it is stored (a copy's files,
    /// already encoded by the source), and its path to show; the writer fsyncs it.
    pub fn create_stored(&self, stored_rel: &str) -> Result<(File, PathBuf), LayoutError> {
        let path = self.dir.join(stored_rel);
        let name = Name::new(format!("{}/{stored_rel}", self.staged));
        let file = name
            .and_then(|name| self.files.create_new_blocking(&name))
            .map_err(|e| LayoutError::io("cannot create", &path)(e.into()))?;
        Ok((file, path))
    }

    /// The staged backup's object `rel` in the backups directory.
    fn staged_object(&self, rel: &str) -> Name {
        Name::new(format!("{}/{rel}", self.staged)).expect("a staged backup's own name")
    }

    /// Writes the manifest (atomically); the last file of a backup. Every chunk the backup
    /// reused is durable under its name first, and so is an incremental backup's reference
    /// list (`metadata/chunk-refs`), which the manifest records.
    pub fn write_manifest(&self, manifest: &Manifest) -> Result<(), LayoutError> {
        let path = self.dir.join(MANIFEST_PATH);
        if let Some(chunks) = &self.chunks {
            chunks
                .run
                .make_durable(&chunks.store)
                .map_err(LayoutError::io("cannot sync the chunk store of", &path))?;
        }
        // An incremental backup's reference list, durable before the manifest records it.
        let mut manifest = manifest.clone();
        if self.chunks.is_some() {
            let rel = super::chunks::REFS_PATH;
            let refs = self.dir.join(rel);
            let found = super::chunks::refs_of(&self.dir, &manifest);
            if let Some((bytes, record)) = found.map_err(LayoutError::io("cannot write", &refs))? {
                let identity = Identity::file(self.name.as_str(), rel);
                self.save(rel, &bytes, &identity)
                    .map_err(LayoutError::io("cannot write", &refs))?;
                manifest.chunk_refs = Some(record);
            }
        }
        let identity = Identity::manifest(self.name.as_str());
        self.save(MANIFEST_PATH, manifest.to_json().as_bytes(), &identity)
            .map_err(LayoutError::io("cannot write", &path))
    }

    /// `bytes` saved as the backup's `rel` (atomically), encrypted as `identity` in an
    /// encrypted repository.
    fn save(&self, rel: &str, bytes: &[u8], identity: &Identity) -> io::Result<()> {
        let sealed = match &self.seal {
            None => None,
            Some(seal) => Some(seal.seal(identity, bytes)?),
        };
        let bytes = sealed.as_deref().unwrap_or(bytes);
        Ok(self.files.save_blocking(&self.staged_object(rel), bytes)?)
    }

    /// Makes everything durable and moves the backup into place. An existing backup at the
    /// target is swapped out in one atomic step (see `swap_into_place`), so a crash at any
    /// instant leaves the old or the new backup under the name.
    pub fn commit(self) -> Result<PathBuf, LayoutError> {
        let in_place = |e: BackendError| {
            LayoutError::io("cannot move the new backup into place", &self.target)(e.into())
        };
        let manifest_path = self.dir.join(MANIFEST_PATH);
        if let Err(e) = self.files.stat_blocking(&self.staged_object(MANIFEST_PATH)) {
            return Err(LayoutError::io("no manifest at", &manifest_path)(e.into()));
        }
        // Every directory of the backup (a cluster backup's shards have their own,
        // `collections/<name>/`), then the backup's own.
        let synced = self
            .files
            .entries_blocking(&format!("{}/", self.staged))
            .and_then(|entries| {
                let dirs = entries.into_iter().filter(|e| e.kind == Kind::Dir);
                dirs.map(|dir| dir.name)
                    .chain([self.staged.to_string()])
                    .try_for_each(|dir| self.files.sync_dir_blocking(&dir))
            });
        synced.map_err(|e| LayoutError::io("cannot sync", &self.dir)(e.into()))?;
        crate::failpoint::hit("create:before-rename")
            .map_err(LayoutError::io("failpoint", &self.dir))?;
        let (target, staged) = (&self.name, &self.staged);
        let replaced = match self.files.entry_blocking(target) {
            Err(e) if e.is_not_found() => {
                self.files
                    .rename_blocking(staged, target)
                    .map_err(in_place)?;
                false
            }
            Err(e) => return Err(in_place(e)),
            // Made meanwhile by something else than a wqm run (those hold the staging
            // directory): kept, as `begin` would have.
            Ok(_) if !self.replace => {
                return Err(LayoutError::AlreadyExists {
                    path: self.target.clone(),
                })
            }
            Ok(found) if found.kind != Kind::Dir => {
                return Err(LayoutError::NotABackup {
                    path: self.target.clone(),
                })
            }
            Ok(_) => {
                self.swap_into_place(staged, target)?;
                true
            }
        };
        if replaced {
            // The old backup is now inside the staging directory, which goes with it.
            crate::failpoint::hit("create:replaced-not-removed")
                .map_err(LayoutError::io("failpoint", &self.dir))?;
        }
        let target = self.target.clone();
        drop(self);
        Ok(target)
    }

    /// Puts the staged backup `staged` in place of the one at `target`; the old one ends up
    /// inside the staging directory. On Linux one `renameat2(RENAME_EXCHANGE)` swaps the two
    /// directories atomically. Where that is not available (other systems, file systems
    /// without it) the old backup is first moved into the staging directory and the new one
    /// renamed into place: a crash between the two leaves the old backup inside the dead
    /// run's staging directory, and nothing under the name.
    fn swap_into_place(&self, staged: &Name, target: &Name) -> Result<(), LayoutError> {
        if self.files.exchange_blocking(staged, target).is_ok() {
            return Ok(());
        }
        let work = staged
            .as_str()
            .rsplit_once('/')
            .expect("inside its staging directory")
            .0;
        let aside = Name::new(format!("{work}/{REPLACED_DIR}")).expect("a staging directory's");
        self.files.rename_blocking(target, &aside).map_err(|e| {
            LayoutError::io("cannot move the old backup aside", &self.target)(e.into())
        })?;
        self.files.rename_blocking(staged, target).map_err(|e| {
            LayoutError::io("cannot move the new backup into place", &self.target)(e.into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::layout::{is_staging, refuse_unfinished, LayoutError};
    use std::fs;
    use std::io::{Read, Write};

    fn finish(staging: Staging, timestamp: f64) {
        staging
            .write_manifest(&Manifest::new("0.3.0", timestamp))
            .unwrap();
        staging.commit().unwrap();
    }

    /// A backup of `target` staged with nothing but its manifest.
    fn with_manifest(target: &Path, replace: bool, timestamp: f64) -> Staging {
        let staging = Staging::begin(target, replace).unwrap();
        staging
            .write_manifest(&Manifest::new("0.3.0", timestamp))
            .unwrap();
        staging
    }

    #[test]
    fn a_file_from_a_transfer_is_hashed_beside_and_stored_as_any_other() {
        let root = tempfile::tempdir().unwrap();
        let staging = Staging::begin(&root.path().join("b1"), false).unwrap();
        let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let stored = |from_a_transfer: bool| {
            let rel = format!("collections/c{from_a_transfer}.snapshot.zst");
            let mut sink = staging
                .create_file(
                    &rel,
                    FileKind::CollectionSnapshot,
                    compress::Stored::Plain(compress::Compression::Zstd),
                    Algorithm::Xxhash64,
                )
                .unwrap();
            match from_a_transfer {
                true => {
                    sink.from_a_transfer().unwrap();
                    for piece in content.chunks(400_000) {
                        sink.write_piece(bytes::Bytes::copy_from_slice(piece))
                            .unwrap();
                    }
                }
                false => sink.write_all(&content).unwrap(),
            }
            let entry = sink.finish().unwrap();
            let mut plain = Vec::new();
            compress::Compression::Zstd
                .decoder(&fs::read(staging.dir().join(&rel)).unwrap()[..])
                .unwrap()
                .read_to_end(&mut plain)
                .unwrap();
            assert!(plain == content);
            (entry.content_size, entry.content_sha256)
        };
        let sha256 = crate::checksum::to_hex(&crate::checksum::sha256(&content));
        assert_eq!(stored(true), (content.len() as u64, sha256.clone()));
        assert_eq!(stored(false), (content.len() as u64, sha256));
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
        let staging = with_manifest(&target, false, 1.0);
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
        // A store of loose chunks (made before pack files: a pack is durable once written).
        std::fs::create_dir(&store_dir).unwrap();
        let params = crate::store::chunks::Params::with_average(4096).loose();
        std::fs::write(store_dir.join("store.json"), params.to_json()).unwrap();
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
        let mut needed = fan_dirs(&store_dir, &index);
        assert!(needed.len() > 5, "{needed:?}");
        needed.insert(chunks);
        assert_eq!(
            synced, needed,
            "each reused chunk's directory once, and chunks/"
        );
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
    fn what_appears_at_the_target_meanwhile_is_replaced_only_by_force_and_never_a_link() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("b");
        let staging = with_manifest(&target, false, 1.0);
        fs::create_dir_all(target.join("mine")).unwrap();
        assert!(matches!(
            staging.commit(),
            Err(LayoutError::AlreadyExists { .. })
        ));
        assert!(target.join("mine").is_dir(), "kept");
        assert!(
            !staging_path(&target).exists(),
            "the staging directory went"
        );

        fs::remove_dir_all(&target).unwrap();
        let staging = with_manifest(&target, true, 2.0);
        let elsewhere = root.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &target).unwrap();
        assert!(matches!(
            staging.commit(),
            Err(LayoutError::NotABackup { .. })
        ));
        assert!(fs::symlink_metadata(&target).unwrap().is_symlink());
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

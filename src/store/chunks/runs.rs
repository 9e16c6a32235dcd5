//! What runs leave in and beside the store while they work: a store being made
//! (`.wqm-chunks.new-<pid>`) and each run's temporary chunks (`tmp/run-*`), and removing what
//! dead runs left, which needs no store lock: a run's temporary directory is locked by its run
//! for as long as the process lives, and a store being made belongs to its maker while it lives.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use super::{io_error, ChunkError, ChunkStore, Params, CHUNKS_DIR, LOCK_FILE, PARAMS_FILE};
use super::{STORE_DIR, TMP_DIR};
use crate::backend::local::LocalBackend;
use crate::backend::{BackendError, Kind, Name};

/// A store being made: `.wqm-chunks.new-<pid of its maker>`.
const NEW_STORE_INFIX: &str = ".new-";
/// A run's temporary directory in `tmp/`, once its lock is held (before: `.new-run-*`).
const RUN_PREFIX: &str = "run-";
const NEW_RUN_PREFIX: &str = ".new-run-";

/// Makes the store in `dir` (in a temporary directory renamed into place, so a store is never
/// seen half made; a concurrent run that made it first wins).
pub(super) fn make_store(dir: &Path, params: &Params) -> Result<(), ChunkError> {
    let root = ChunkStore::path_in(dir);
    let files = LocalBackend::open(dir).map_err(|e| io_error(dir)(e.into()))?;
    let temp = format!("{STORE_DIR}{NEW_STORE_INFIX}{}", std::process::id());
    let name = |part: &str| Name::new(format!("{temp}/{part}"));
    // Our pid's: left by a process long gone, nobody else builds under this name.
    let _ = files.remove_under_blocking(&temp);
    let made = (|| {
        // A store of pack files keeps no chunk loose.
        if !params.is_packed() {
            files.create_dir_blocking(&name(CHUNKS_DIR)?)?;
        }
        files.create_dir_blocking(&name(TMP_DIR)?)?;
        files.save_blocking(&name(PARAMS_FILE)?, params.to_json().as_bytes())?;
        crate::failpoint::hit("create:store-made").map_err(|e| BackendError::Io {
            what: "failpoint",
            path: temp.clone(),
            source: e,
        })?;
        files.sync_dir_blocking(&temp)?;
        files.rename_blocking(&Name::new(temp.as_str())?, &Name::new(STORE_DIR)?)
    })();
    match made {
        Ok(()) => Ok(()),
        // Another run made it meanwhile.
        Err(BackendError::AlreadyExists { .. }) if ChunkStore::exists_in(dir) => {
            let _ = files.remove_under_blocking(&temp);
            Ok(())
        }
        Err(e) => {
            let _ = files.remove_under_blocking(&temp);
            Err(io_error(&root)(e.into()))
        }
    }
}

/// A run's own directory in the store's `tmp/`, holding its new chunks until they are named.
/// It is made under a `.new-run-*` name and renamed to `run-*` only once its lock is held, so a
/// `run-*` whose lock is free is a dead run's; dropped, it is removed (then its lock released).
#[derive(Debug)]
pub struct RunTemp {
    dir: TempDir,
    _lock: File,
}

impl RunTemp {
    /// The directory as a path to show.
    pub fn path(&self) -> PathBuf {
        self.dir.files.root().join(&self.dir.name)
    }

    /// The name of `file` in this directory.
    pub(super) fn name_of(&self, file: &str) -> io::Result<Name> {
        self.dir.name_of(file)
    }

    /// The repository the directory is in.
    pub(super) fn files(&self) -> &LocalBackend {
        &self.dir.files
    }

    /// A directory of its own in this one (`file-*`), removed when dropped: files written side
    /// by side (a pipelined create) may store the same new chunk at the same moment.
    pub(super) fn file_dir(&self) -> io::Result<TempDir> {
        let name = format!("{}/file-{}", self.dir.name, crate::backend::random_id());
        self.dir
            .files
            .create_dir_blocking(&Name::new(name.as_str())?)?;
        Ok(TempDir {
            files: self.dir.files.clone(),
            name,
        })
    }
}

/// A directory of a run's own in a repository (`name` in `files`), removed when dropped.
#[derive(Debug)]
pub(super) struct TempDir {
    files: LocalBackend,
    name: String,
}

impl TempDir {
    /// The name of `file` in this directory.
    pub(super) fn name_of(&self, file: &str) -> io::Result<Name> {
        Ok(Name::new(format!("{}/{file}", self.name))?)
    }

    pub(super) fn files(&self) -> &LocalBackend {
        &self.files
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = self.files.remove_under_blocking(&self.name);
    }
}

impl ChunkStore {
    /// A private, locked directory for one run's chunks while they are written.
    pub fn temp_dir(&self) -> Result<RunTemp, ChunkError> {
        let tmp = self.root.join(TMP_DIR);
        let files = self.files().map_err(io_error(&tmp))?.clone();
        let suffix = crate::backend::random_id();
        let fresh = format!("{STORE_DIR}/{TMP_DIR}/{NEW_RUN_PREFIX}{suffix}");
        let name = format!("{STORE_DIR}/{TMP_DIR}/{RUN_PREFIX}{suffix}");
        let taken = (|| {
            let lock = files.create_new_blocking(&Name::new(format!("{fresh}/{LOCK_FILE}"))?)?;
            lock.try_lock()
                .map_err(|e| io::Error::other(e.to_string()))?;
            files.rename_blocking(&Name::new(fresh.as_str())?, &Name::new(name.as_str())?)?;
            Ok(lock)
        })();
        match taken {
            Ok(lock) => Ok(RunTemp {
                dir: TempDir { files, name },
                _lock: lock,
            }),
            Err(e) => {
                let _ = files.remove_under_blocking(&fresh);
                Err(io_error(&tmp)(e))
            }
        }
    }
}

/// What a cleanup removed of dead runs' leftovers in a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    pub path: PathBuf,
    /// Files removed (a run's: its temporary chunks) and their bytes.
    pub files: u64,
    pub bytes: u64,
}

/// Removes what dead runs left in the backups directory `dir`: each dead run's temporary
/// chunks in the store (unnamed, so no backup can need them) and a store whose maker died
/// while making it. A live run's are left alone; so is a temporary directory without a lock
/// (from a wqm before these locks, perhaps still running), which garbage collection removes.
/// Best effort: what cannot be removed stays for `prune`.
pub fn remove_dead(dir: &Path) -> Vec<Removed> {
    let mut removed = Vec::new();
    let Ok(files) = LocalBackend::existing(dir) else {
        return removed;
    };
    let remove = |name: &str, removed: &mut Vec<Removed>, is_run: bool| {
        if let Ok((objects, bytes)) = files.remove_under_blocking(name) {
            removed.push(Removed {
                path: dir.join(name),
                // A run's lock is no chunk.
                files: objects.saturating_sub(u64::from(is_run)),
                bytes,
            });
        }
    };
    for name in top_dirs(&files, &format!("{STORE_DIR}{NEW_STORE_INFIX}")) {
        let maker = name[STORE_DIR.len() + NEW_STORE_INFIX.len()..].parse::<u32>();
        if maker.is_ok_and(|pid| !crate::process::alive(pid)) {
            remove(&name, &mut removed, false);
        }
    }
    for run in top_dirs(&files, &format!("{STORE_DIR}/{TMP_DIR}/{RUN_PREFIX}")) {
        let Ok(lock) = Name::new(format!("{run}/{LOCK_FILE}")) else {
            continue;
        };
        // Held while the tree goes, so no run can take it meanwhile.
        if let Ok(Some(_held)) = files.try_lock_blocking(&lock) {
            remove(&run, &mut removed, true);
        }
    }
    removed
}

/// The directories whose names start with `prefix` (nothing below them listed).
fn top_dirs(files: &LocalBackend, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let _ = files.visit_blocking(prefix, |entry| {
        if entry.kind == Kind::Dir {
            found.push(entry.name);
        }
        false
    });
    found
}

/// Whether `name` in `tmp/` is a run's temporary directory (garbage collection, which holds the
/// store exclusively, removes every one: no run is alive).
pub(super) fn is_run_dir(name: &str) -> bool {
    name.starts_with(RUN_PREFIX) || name.starts_with(NEW_RUN_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::chunks::ChunkWriter;
    use std::fs;
    use std::io::Write;

    #[test]
    fn a_dead_runs_temporary_chunks_and_half_made_store_are_removed_a_live_ones_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open_for_writing(dir.path(), 4096).unwrap();
        let live = store.temp_dir().unwrap();
        let path = live.path();
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(RUN_PREFIX), "{name}");
        // A dead run's, as a killed process leaves it: its lock free, a chunk never named.
        let dead = ChunkStore::path_in(dir.path())
            .join(TMP_DIR)
            .join("run-dead");
        fs::create_dir_all(dead.join("file-1")).unwrap();
        fs::write(dead.join(LOCK_FILE), "").unwrap();
        fs::write(dead.join("file-1/chunk"), vec![1u8; 1000]).unwrap();
        // A store made by a process that is gone (pid 2^31-2 runs nowhere), and one being
        // made by a live process (this one).
        let half = dir.path().join(format!("{STORE_DIR}.new-2147483646"));
        fs::create_dir_all(half.join("chunks")).unwrap();
        let mine = dir
            .path()
            .join(format!("{STORE_DIR}.new-{}", std::process::id()));
        fs::create_dir_all(&mine).unwrap();

        let mut writer =
            ChunkWriter::new(store.clone(), Default::default(), &live, Vec::new()).unwrap();
        writer.write_all(&[7u8; 50_000]).unwrap();

        let removed = remove_dead(dir.path());
        let paths: Vec<&Path> = removed.iter().map(|r| r.path.as_path()).collect();
        assert_eq!(paths, [half.as_path(), dead.as_path()]);
        assert_eq!((removed[1].files, removed[1].bytes), (1, 1000));
        assert!(!dead.exists() && !half.exists());
        assert!(live.path().is_dir(), "a live run's directory stays");
        assert!(mine.is_dir(), "a store being made by a live process stays");
        writer.finish().unwrap();
        assert!(remove_dead(dir.path()).is_empty());
        let path = live.path().to_path_buf();
        drop(live);
        assert!(!path.exists(), "an ended run removes its directory");
    }
}

//! A run's private working directory: hidden, `0700`, holding the run's lock and its journal.
//!
//! Before wqm asks Qdrant for anything it will have to remove (a snapshot, an uploaded copy),
//! it appends a record to the journal and fsyncs it. The lock (`flock`) is held for as long
//! as the process lives, so a working directory whose lock nobody holds belongs to a run that
//! died — by `kill -9`, a power cut or a crash — and its journal says what that run left on
//! the server (see `cleanup`).
//!
//! ```text
//! .<name>.wqm-staging/lock            held while the run lives
//! .<name>.wqm-staging/journal.jsonl   one JSON record a line, fsynced each
//! .<name>.wqm-staging/backup/         (staging only) the backup being written
//! ```

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::backend::local::LocalBackend;
use crate::backend::{BackendError, Kind, Name};
use crate::exit::{Classify, ExitCode};

pub const LOCK_FILE: &str = "lock";
pub const JOURNAL_FILE: &str = "journal.jsonl";
/// A working directory is built under `<name>.new-<pid>` and renamed into place once locked.
const NEW_INFIX: &str = ".new-";
/// A journal is small (a few records per collection); more than this is not wqm's.
const MAX_JOURNAL_BYTES: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WorkDirError {
    #[error("another wqm is working in `{}` (its lock is held)", path.display())]
    Busy { path: PathBuf },
    #[error("`{}` was left by a wqm run that died and still names things to clean up", path.display())]
    Dead { path: PathBuf },
    #[error("{action} `{}`: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl Classify for WorkDirError {
    fn exit_code(&self) -> ExitCode {
        ExitCode::Failure
    }

    fn hint(&self) -> Option<String> {
        match self {
            WorkDirError::Busy { .. } => Some(
                "wait for the other run to finish; runs into different targets can go at the same time"
                    .to_string(),
            ),
            WorkDirError::Dead { path } => Some(format!(
                "run `wqm backup cleanup {}` (it deletes what the dead run left on the server), then try again",
                path.parent().unwrap_or(Path::new(".")).display()
            )),
            WorkDirError::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull => {
                Some(crate::exit::DISK_FULL_HINT.to_string())
            }
            WorkDirError::Io { .. } => None,
        }
    }
}

fn io_error<'p>(
    action: &'static str,
    path: &'p Path,
) -> impl FnOnce(io::Error) -> WorkDirError + 'p {
    move |source| WorkDirError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// What one Qdrant object a record is about lives on: a node (its URL without password), a
/// collection and, for a cluster, a shard.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Place {
    pub node: String,
    pub collection: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<u32>,
}

/// One line of a journal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Record {
    /// What the run is (`create TARGET`, `restore BACKUP`), first in every journal.
    Run {
        command: String,
        path: PathBuf,
        pid: u32,
        started: f64,
    },
    /// About to ask for a snapshot; Qdrant names it only when it is done.
    SnapshotRequested {
        #[serde(flatten)]
        place: Place,
        at: f64,
    },
    SnapshotMade {
        #[serde(flatten)]
        place: Place,
        name: String,
    },
    /// Qdrant answered the request with an error: no snapshot was made.
    SnapshotRefused {
        #[serde(flatten)]
        place: Place,
    },
    SnapshotDeleted {
        #[serde(flatten)]
        place: Place,
        name: String,
    },
    /// About to upload a snapshot under this name (wqm chooses it).
    UploadStarted {
        #[serde(flatten)]
        place: Place,
        name: String,
    },
    UploadDeleted {
        #[serde(flatten)]
        place: Place,
        name: String,
    },
    /// A step of a restore that changed the live system (or the complete safety backup).
    Done { text: String },
    /// The safety backup of a restore is complete at `path`.
    SafetyBackup { path: PathBuf },
    /// A restore stopped the daemon.
    DaemonStopped,
    /// A restore started again the daemon it had stopped. (wqm 0.3.0 wrote this as a
    /// `daemon-stopped` line with `"stopped": false`, which `read_journal` still reads as this.)
    DaemonStarted,
}

impl Record {
    /// One journal line, or `None` when it is not one (torn, or not wqm's).
    fn parse(line: &str) -> Option<Record> {
        let record = serde_json::from_str(line).ok()?;
        if record != Record::DaemonStopped {
            return Some(record);
        }
        /// wqm 0.3.0's `{"op": "daemon-stopped", "stopped": BOOL}`: `false` meant started again.
        #[derive(Deserialize)]
        struct Wqm030 {
            stopped: Option<bool>,
        }
        match serde_json::from_str(line) {
            Ok(Wqm030 {
                stopped: Some(false),
            }) => Some(Record::DaemonStarted),
            _ => Some(record),
        }
    }
}

/// A server object a journal says was (or may have been) made and not yet removed.
#[derive(Clone, Debug, PartialEq)]
pub struct Outstanding {
    pub place: Place,
    pub kind: ObjectKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ObjectKind {
    /// A snapshot with this exact name.
    Snapshot(String),
    /// A snapshot requested at this time whose name the run never learned.
    SnapshotRequested { at: f64 },
    /// An uploaded copy with this exact name.
    Upload(String),
}

/// What was made and never removed, in journal order.
pub fn outstanding(records: &[Record]) -> Vec<Outstanding> {
    let mut open: Vec<Outstanding> = Vec::new();
    let close = |open: &mut Vec<Outstanding>, place: &Place, kind: &ObjectKind| {
        open.retain(|o| !(&o.place == place && &o.kind == kind));
    };
    for record in records {
        match record {
            Record::SnapshotRequested { place, at } => open.push(Outstanding {
                place: place.clone(),
                kind: ObjectKind::SnapshotRequested { at: *at },
            }),
            Record::SnapshotMade { place, name } => {
                // The request it answers is resolved: its name is known now.
                open.retain(|o| {
                    !(&o.place == place && matches!(o.kind, ObjectKind::SnapshotRequested { .. }))
                });
                open.push(Outstanding {
                    place: place.clone(),
                    kind: ObjectKind::Snapshot(name.clone()),
                });
            }
            Record::SnapshotRefused { place } => open.retain(|o| {
                !(&o.place == place && matches!(o.kind, ObjectKind::SnapshotRequested { .. }))
            }),
            Record::SnapshotDeleted { place, name } => {
                close(&mut open, place, &ObjectKind::Snapshot(name.clone()))
            }
            Record::UploadStarted { place, name } => open.push(Outstanding {
                place: place.clone(),
                kind: ObjectKind::Upload(name.clone()),
            }),
            Record::UploadDeleted { place, name } => {
                close(&mut open, place, &ObjectKind::Upload(name.clone()))
            }
            Record::Run { .. }
            | Record::Done { .. }
            | Record::SafetyBackup { .. }
            | Record::DaemonStopped
            | Record::DaemonStarted => {}
        }
    }
    open
}

/// The directory `dir` is in, as a backend (nothing followed below it), and `dir`'s name there.
fn place_of(dir: &Path) -> io::Result<(LocalBackend, Name)> {
    let name = dir
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a UTF-8 name"))?;
    let name = Name::new(name)?;
    Ok((LocalBackend::existing(crate::fs::parent_dir(dir))?, name))
}

/// `dir/file` in `files`.
fn object(dir: &str, file: &str) -> io::Result<Name> {
    Ok(Name::new(format!("{dir}/{file}"))?)
}

/// Reads a journal; a torn last line (the run died while writing it) is ignored, and so is
/// anything past `MAX_JOURNAL_BYTES`.
pub fn read_journal(dir: &Path) -> io::Result<Vec<Record>> {
    let path = dir.join(JOURNAL_FILE);
    let opened = place_of(dir)
        .and_then(|(files, name)| Ok(files.open_blocking(&object(name.as_str(), JOURNAL_FILE)?)?));
    let file = match opened {
        Ok((file, _)) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    file.take(MAX_JOURNAL_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot read `{}`: {e}", path.display())))?;
    Ok(text.lines().filter_map(Record::parse).collect())
}

/// A live run's working directory. Dropping it removes the directory (unless `keep` was
/// called), so an ended run leaves nothing; a killed one leaves it for `cleanup`. It is reached
/// through a `LocalBackend` over the directory it is in: nothing in it is a link followed.
#[derive(Debug)]
pub struct WorkDir {
    files: LocalBackend,
    /// Its name in `files`.
    name: String,
    path: PathBuf,
    journal: Mutex<File>,
    _lock: File,
    keep: bool,
}

impl WorkDir {
    /// Makes `path` (a hidden name) and takes its lock. Fails with `Busy` when a live run has
    /// it and with `Dead` when a dead run's directory is still there (clean it up first).
    pub fn create(path: &Path, run: Record) -> Result<Self, WorkDirError> {
        let (files, name) = place_of(path).map_err(io_error("cannot create", path))?;
        match files.entry_blocking(&name) {
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(io_error("cannot look at", path)(e.into())),
            Ok(_) if is_live(path) => {
                return Err(WorkDirError::Busy {
                    path: path.to_path_buf(),
                })
            }
            Ok(_) => {
                return Err(WorkDirError::Dead {
                    path: path.to_path_buf(),
                })
            }
        }
        let fresh = format!("{name}{NEW_INFIX}{}", std::process::id());
        // Our pid's, from a process long gone: nobody else builds under this name.
        let _ = files.remove_under_blocking(&fresh);
        let fresh_path = path.with_file_name(&fresh);
        let built = (|| {
            let lock_path = fresh_path.join(LOCK_FILE);
            let lock = object(&fresh, LOCK_FILE)
                .and_then(|lock| Ok(files.create_new_blocking(&lock)?))
                .map_err(io_error("cannot create", &lock_path))?;
            match lock.try_lock() {
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(WorkDirError::Busy {
                        path: path.to_path_buf(),
                    })
                }
                Err(fs::TryLockError::Error(e)) => {
                    return Err(io_error("cannot lock", &lock_path)(e))
                }
            }
            let journal_path = fresh_path.join(JOURNAL_FILE);
            let journal = object(&fresh, JOURNAL_FILE)
                .and_then(|journal| Ok(files.create_new_blocking(&journal)?))
                .map_err(io_error("cannot create", &journal_path))?;
            let dir = WorkDir {
                files: files.clone(),
                name: fresh.clone(),
                path: fresh_path.clone(),
                journal: Mutex::new(journal),
                _lock: lock,
                keep: true,
            };
            dir.record(&run)?;
            Ok::<_, WorkDirError>(dir)
        })();
        let mut dir = match built {
            Ok(dir) => dir,
            Err(e) => {
                let _ = files.remove_under_blocking(&fresh);
                return Err(e);
            }
        };
        // Never over anything: whoever renamed first owns the name. Both names synced.
        let renamed = files.rename_blocking(
            &Name::new(fresh.as_str()).expect("a name and a suffix"),
            &name,
        );
        if let Err(e) = renamed {
            let _ = files.remove_under_blocking(&fresh);
            return Err(match e {
                BackendError::AlreadyExists { .. } => WorkDirError::Busy {
                    path: path.to_path_buf(),
                },
                e => io_error("cannot create", path)(e.into()),
            });
        }
        dir.name = name.to_string();
        dir.path = path.to_path_buf();
        dir.keep = false;
        if let Ok(mut live) = LIVE.lock() {
            live.push(dir.path.clone());
        }
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` and makes it durable before returning.
    pub fn record(&self, record: &Record) -> Result<(), WorkDirError> {
        let path = self.path.join(JOURNAL_FILE);
        let mut line =
            serde_json::to_vec(record).map_err(|e| io_error("cannot write", &path)(e.into()))?;
        line.push(b'\n');
        let mut file = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(&line)
            .and_then(|()| file.sync_data())
            .map_err(io_error("cannot write", &path))
    }

    /// Leaves the directory in place when dropped (the lock is still released).
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for WorkDir {
    /// An ended run removes its directory, unless its journal still names something on the
    /// server (a snapshot whose deletion failed): then only the lock and the journal stay, for
    /// the next run's cleanup to retry.
    fn drop(&mut self) {
        if let Ok(mut live) = LIVE.lock() {
            live.retain(|p| p != &self.path);
        }
        if self.keep {
            return;
        }
        let left_on_server = read_journal(&self.path)
            .map(|records| !outstanding(&records).is_empty())
            .unwrap_or(true);
        if !left_on_server {
            let _ = self.files.remove_under_blocking(&self.name);
            return;
        }
        let mut others = Vec::new();
        let _ = self
            .files
            .visit_blocking(&format!("{}/", self.name), |entry| {
                let file = entry.name.rsplit('/').next().unwrap_or_default();
                if file != LOCK_FILE && file != JOURNAL_FILE {
                    others.push(entry);
                }
                false
            });
        for entry in others {
            let _ = match Name::new(entry.name.as_str()) {
                Ok(name) if entry.kind != Kind::Dir => self.files.remove_blocking(&name),
                _ => self.files.remove_under_blocking(&entry.name).map(drop),
            };
        }
    }
}

/// Working directories of this process that are still there, for the message when a second
/// signal ends the run before its cleanup.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// This process's working directories, as they are now.
pub fn live() -> Vec<PathBuf> {
    LIVE.lock().map(|l| l.clone()).unwrap_or_default()
}

/// The lock of the working directory `dir`, taken without waiting (`Ok(None)`: a live process
/// holds it); made first when `make` and missing (a directory its builder died before locking).
fn try_lock(dir: &Path, make: bool) -> io::Result<Option<File>> {
    let (files, name) = place_of(dir)?;
    let lock = object(name.as_str(), LOCK_FILE)?;
    match files.try_lock_blocking(&lock) {
        Err(e) if e.is_not_found() && make => {
            files.create_new_blocking(&lock)?;
            Ok(files.try_lock_blocking(&lock)?)
        }
        taken => Ok(taken?),
    }
}

/// Whether a live process holds the lock of the working directory `dir`.
pub fn is_live(dir: &Path) -> bool {
    matches!(try_lock(dir, false), Ok(None))
}

/// The lock of the dead run's working directory `dir`, taken: whoever holds it cleans the
/// directory. `None` when a live process holds it (another cleaner, or the run itself).
pub fn take_dead(dir: &Path) -> Option<File> {
    try_lock(dir, true).ok().flatten()
}

/// Working directories in `dir` whose names end with one of `suffixes` (or are being built
/// under such a name) and whose run is dead, oldest name first.
pub fn dead_in(dir: &Path, suffixes: &[&str]) -> io::Result<Vec<PathBuf>> {
    let mut dead = Vec::new();
    let files = match LocalBackend::existing(dir) {
        Ok(files) => files,
        Err(e) if e.is_not_found() => return Ok(dead),
        Err(e) => return Err(e.into()),
    };
    let mut hidden = Vec::new();
    files.visit_blocking(".", |entry| {
        if entry.kind == Kind::Dir {
            hidden.push(entry.name);
        }
        false
    })?;
    for name in hidden {
        let (base, builder) = match name.rsplit_once(NEW_INFIX) {
            Some((base, pid)) => (base, pid.parse::<u32>().ok()),
            None => (name.as_str(), None),
        };
        if !suffixes.iter().any(|s| base.ends_with(s)) {
            continue;
        }
        // A directory still being built belongs to its builder while that process lives.
        if builder.is_some_and(crate::process::alive) {
            continue;
        }
        let path = dir.join(&name);
        if !is_live(&path) {
            dead.push(path);
        }
    }
    dead.sort();
    Ok(dead)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(collection: &str) -> Place {
        Place {
            node: "http://127.0.0.1:6333".to_string(),
            collection: collection.to_string(),
            shard: None,
        }
    }

    fn run() -> Record {
        Record::Run {
            command: "create".to_string(),
            path: PathBuf::from("b"),
            pid: 1,
            started: 0.0,
        }
    }

    #[test]
    fn outstanding_objects_are_those_made_and_not_removed() {
        let a = place("a");
        let b = place("b");
        let records = vec![
            run(),
            Record::SnapshotRequested {
                place: a.clone(),
                at: 1.0,
            },
            Record::SnapshotMade {
                place: a.clone(),
                name: "a-1.snapshot".into(),
            },
            Record::SnapshotDeleted {
                place: a.clone(),
                name: "a-1.snapshot".into(),
            },
            Record::SnapshotRequested {
                place: b.clone(),
                at: 2.0,
            },
            Record::UploadStarted {
                place: a.clone(),
                name: "wqm-restore-a.snapshot".into(),
            },
        ];
        assert_eq!(
            outstanding(&records),
            [
                Outstanding {
                    place: b.clone(),
                    kind: ObjectKind::SnapshotRequested { at: 2.0 }
                },
                Outstanding {
                    place: a.clone(),
                    kind: ObjectKind::Upload("wqm-restore-a.snapshot".into())
                },
            ]
        );
        let mut refused = records.clone();
        refused.push(Record::SnapshotRefused { place: b.clone() });
        assert_eq!(outstanding(&refused).len(), 1, "only the upload is left");
        let mut more = records.clone();
        more.push(Record::SnapshotMade {
            place: b.clone(),
            name: "b-1.snapshot".into(),
        });
        more.push(Record::UploadDeleted {
            place: a,
            name: "wqm-restore-a.snapshot".into(),
        });
        assert_eq!(
            outstanding(&more),
            [Outstanding {
                place: b,
                kind: ObjectKind::Snapshot("b-1.snapshot".into())
            }]
        );
    }

    #[test]
    fn a_live_dir_is_busy_a_dead_one_is_found_and_a_dropped_one_is_gone() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join(".b.wqm-staging");
        let dir = WorkDir::create(&path, run()).unwrap();
        dir.record(&Record::SnapshotRequested {
            place: place("a"),
            at: 5.0,
        })
        .unwrap();
        fs::create_dir(path.join("backup")).unwrap();
        assert!(matches!(
            WorkDir::create(&path, run()),
            Err(WorkDirError::Busy { .. })
        ));
        assert!(dead_in(root.path(), &[".wqm-staging"]).unwrap().is_empty());
        assert_eq!(read_journal(&path).unwrap().len(), 2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o700);
            assert_eq!(mode(&path.join(JOURNAL_FILE)), 0o600);
        }
        drop(dir);
        assert!(
            path.join(JOURNAL_FILE).exists() && !path.join("backup").exists(),
            "a run that left something on the server keeps its journal only"
        );
        fs::remove_dir_all(&path).unwrap();
        let dir = WorkDir::create(&path, run()).unwrap();
        fs::create_dir(path.join("backup")).unwrap();
        drop(dir);
        assert!(!path.exists(), "an ended run leaves nothing");

        let mut dir = WorkDir::create(&path, run()).unwrap();
        dir.keep();
        drop(dir); // as if killed: the lock is released, the directory stays
        assert_eq!(
            dead_in(root.path(), &[".wqm-staging"]).unwrap(),
            std::slice::from_ref(&path)
        );
        assert!(dead_in(root.path(), &[".wqm-restore"]).unwrap().is_empty());
        assert!(matches!(
            WorkDir::create(&path, run()),
            Err(WorkDirError::Dead { .. })
        ));
    }

    #[test]
    fn a_torn_last_line_is_ignored() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join(".x.wqm-staging");
        let mut dir = WorkDir::create(&path, run()).unwrap();
        dir.keep();
        drop(dir);
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(path.join(JOURNAL_FILE))
            .unwrap();
        file.write_all(b"{\"op\":\"snapshot-made\",\"node\":")
            .unwrap();
        assert_eq!(read_journal(&path).unwrap(), [run()]);
    }

    #[test]
    fn the_daemon_records_read_back_and_so_do_those_of_wqm_0_3_0() {
        for record in [Record::DaemonStopped, Record::DaemonStarted] {
            let line = serde_json::to_string(&record).unwrap();
            assert_eq!(Record::parse(&line), Some(record));
        }
        assert_eq!(
            serde_json::to_string(&Record::DaemonStarted).unwrap(),
            r#"{"op":"daemon-started"}"#
        );
        // What wqm 0.3.0 wrote for both: `stopped: false` was the daemon started again.
        assert_eq!(
            Record::parse(r#"{"op":"daemon-stopped","stopped":true}"#),
            Some(Record::DaemonStopped)
        );
        assert_eq!(
            Record::parse(r#"{"op":"daemon-stopped","stopped":false}"#),
            Some(Record::DaemonStarted)
        );
    }
}

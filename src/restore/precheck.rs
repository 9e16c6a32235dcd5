//! `verify_before_restore` beside the first upload. The upload checks its own snapshot as it
//! streams (`check::Inspected`) and holds its last piece back; the rest of the backup (the other
//! snapshots, the databases, the config) is read and checked meanwhile on a thread of its own,
//! and no upload sends its last piece, nor is any database or config put in place, before every
//! file of the backup has passed. So a damaged backup is still refused before the first change,
//! and the first upload's snapshot is read once instead of twice.
//!
//! Each file is checked by whoever reads it first: an upload claims the snapshot it streams, the
//! thread takes the files nobody claimed (the last collections first: the first ones are being
//! uploaded), and both mark what passed. A damaged file fails the whole check: every held-back
//! last piece is then withheld for good, so Qdrant never gets a complete upload.

use std::collections::HashSet;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::exit::Interrupted;
use crate::format::manifest::FileEntry;
use crate::progress;
use crate::store::{BackupDir, Damaged};

/// The pre-check of a restore, shared by its uploads and its checking thread.
pub(super) struct Precheck {
    source: BackupDir,
    /// Every file of the backup, in the manifest's order.
    files: Vec<FileEntry>,
    state: Mutex<State>,
    moved: Condvar,
    /// The restore ended: the checking thread stops at its next read.
    stop: AtomicBool,
}

#[derive(Default)]
struct State {
    started: bool,
    /// Files someone is reading (an upload or the checking thread).
    claimed: HashSet<String>,
    passed: HashSet<String>,
    /// The first damage found: the file and what is wrong with it.
    failed: Option<(String, String)>,
}

/// Why waiting for the pre-check ended without it passing.
pub(super) enum Refused {
    Damaged(Damaged),
    /// The waiter gave up (its upload stopped, or Ctrl-C).
    Cancelled,
}

/// Owns the pre-check for the restore's lifetime: dropping it stops the checking thread.
pub(super) struct Owner(pub(super) Arc<Precheck>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Relaxed);
        self.0.moved.notify_all();
    }
}

impl Precheck {
    /// The pre-check of every file of the backup in `source`.
    pub(super) fn for_backup(source: &BackupDir) -> Owner {
        Owner(Arc::new(Precheck {
            source: source.clone(),
            files: source.manifest.files.clone(),
            state: Mutex::default(),
            moved: Condvar::new(),
            stop: AtomicBool::new(false),
        }))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("pre-check lock")
    }

    /// An upload reads `path` and checks it itself; the checking thread starts (once), taking
    /// the files nobody claimed.
    pub(super) fn claim(self: &Arc<Self>, path: &str) {
        self.state().claimed.insert(path.to_string());
        self.start();
    }

    /// Starts the checking thread, unless it runs already.
    fn start(self: &Arc<Self>) {
        if std::mem::replace(&mut self.state().started, true) {
            return;
        }
        let precheck = Arc::clone(self);
        std::thread::spawn(move || precheck.check_unclaimed());
    }

    /// `path` was read to its end and matched the manifest.
    pub(super) fn passed(&self, path: &str) {
        self.state().passed.insert(path.to_string());
        self.moved.notify_all();
    }

    /// `damaged` fails the pre-check: no held-back piece is ever sent.
    pub(super) fn fail(&self, damaged: &Damaged) {
        self.state()
            .failed
            .get_or_insert_with(|| (damaged.path.clone(), damaged.problem.clone()));
        self.moved.notify_all();
    }

    /// Blocks until every file passed (`Ok`), one is damaged, or `cancelled` says to give up
    /// (asked every 50 ms).
    pub(super) fn wait_blocking(&self, cancelled: impl Fn() -> bool) -> Result<(), Refused> {
        let mut state = self.state();
        loop {
            if let Some((path, problem)) = &state.failed {
                return Err(Refused::Damaged(Damaged::new(path, problem)));
            }
            if self.files.iter().all(|f| state.passed.contains(&f.path)) {
                return Ok(());
            }
            if cancelled() {
                return Err(Refused::Cancelled);
            }
            state = self
                .moved
                .wait_timeout(state, Duration::from_millis(50))
                .expect("pre-check lock")
                .0;
        }
    }

    /// Waits, off the async workers, until the whole backup passed: before a change no upload
    /// guards (a database or the config put in place, a collection created for its shards).
    pub(super) async fn wait(self: &Arc<Self>) -> anyhow::Result<()> {
        self.start();
        let precheck = Arc::clone(self);
        let waited =
            tokio::task::spawn_blocking(move || precheck.wait_blocking(progress::is_interrupted))
                .await?;
        match waited {
            Ok(()) => Ok(()),
            Err(Refused::Damaged(damaged)) => Err(damaged.into()),
            Err(Refused::Cancelled) => Err(Interrupted.into()),
        }
    }

    /// The checking thread: each file nobody claimed, the manifest's last first, read through
    /// `open_checked` (its content's size and sha256 against the manifest).
    fn check_unclaimed(&self) {
        for entry in self.files.iter().rev() {
            {
                let mut state = self.state();
                if state.failed.is_some() || !state.claimed.insert(entry.path.clone()) {
                    continue;
                }
            }
            match self.check(entry) {
                Ok(()) => self.passed(&entry.path),
                Err(None) => return,
                Err(Some(damaged)) => {
                    self.fail(&damaged);
                    return;
                }
            }
        }
    }

    /// Reads `entry` to its end; `Err(None)` when the restore ended first.
    fn check(&self, entry: &FileEntry) -> Result<(), Option<Damaged>> {
        let mut content = self.source.open_checked(entry).map_err(Some)?;
        // Large reads: the content is only hashed (8 KiB reads cost 40 % more CPU).
        let mut buffer = vec![0; READ_SIZE];
        loop {
            if self.stop.load(Ordering::Relaxed) || progress::is_interrupted() {
                return Err(None);
            }
            match content.read(&mut buffer) {
                // The end: `open_checked` compared the content with the manifest.
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Some(Damaged::from_read(&entry.path, e))),
            }
        }
    }
}

/// How much the checking thread reads at a time.
const READ_SIZE: usize = 256 * 1024;

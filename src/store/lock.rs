//! The repository lock: every run that reads or writes the backups of a directory — a local one
//! or an S3 repository — holds a lock object there (`backend::lock`, under `.wqm-locks/`,
//! through the local backend or the repository's own) for its whole life — shared by
//! `restore`, `export`, `validate`, `info` and `list --check`, adding (shared, but a replace
//! need not wait for it) by `create` (full and incremental) and `copy`'s destination, replacing
//! while a `create --force` puts its new backup in place on S3; exclusive by `prune`, whose
//! deletions and garbage collection must not run under a reader or a create. One place takes it
//! (`RepoLock::shared`/`adding`/`replacing`/`exclusive`), waiting up
//! to `LOCK_WAIT` while a conflicting run holds the directory (Ctrl-C ends the wait), and
//! dropping it releases it, on errors and interruptions too.
//!
//! Lock objects replace the chunk store's `flock`: they work wherever files can be written
//! (NFS, and several hosts sharing one directory, whose locks do not reach each other), and a
//! lock left by a killed run is recognised as stale (see `backend::lock`).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Place, Remote, Repository};
use crate::backend::local::LocalBackend;
use crate::backend::lock::{Kind, Lock, LockError, LockInfo, Timing, LOCKS};
use crate::backend::{Backend, BackendError};
use crate::exit::{Classify, ExitCode};

/// How long a run waits for a conflicting run to finish before it gives up.
pub const LOCK_WAIT: Duration = Duration::from_secs(600);
/// How often a waiting run looks again: locally, and on S3 (where each look is a listing and a
/// request per lock object).
const POLL: Duration = Duration::from_millis(200);
const POLL_REMOTE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum RepoLockError {
    #[error("the backups directory `{}` stayed locked for {} s: {holder}", path.display(), LOCK_WAIT.as_secs())]
    Locked { path: PathBuf, holder: String },
    #[error("interrupted while waiting for the lock on the backups directory `{}`", path.display())]
    Interrupted { path: PathBuf },
    #[error("cannot lock the backups directory `{}`", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: LockError,
    },
}

impl Classify for RepoLockError {
    fn exit_code(&self) -> ExitCode {
        match self {
            RepoLockError::Locked { .. } => ExitCode::Failure,
            RepoLockError::Interrupted { .. } => crate::exit::signal_exit_code(),
            RepoLockError::Lock { source, .. } => source.exit_code(),
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            RepoLockError::Locked { .. } => Some(
                "run again when it is done; the lock of a run that died stops counting once stale (30 minutes without refresh, at once for a dead process of this host), and `wqm backup cleanup DIR` removes it".to_string(),
            ),
            RepoLockError::Interrupted { .. } => None,
            RepoLockError::Lock { source, .. } => source.hint(),
        }
    }
}

/// Where a lock is taken: a local backups directory, or a repository on a backend (S3).
#[derive(Clone, Copy, Debug)]
pub enum LockAt<'a> {
    Dir(&'a Path),
    Remote(&'a Remote),
}

impl<'a> From<&'a Path> for LockAt<'a> {
    fn from(dir: &'a Path) -> Self {
        LockAt::Dir(dir)
    }
}

impl<'a> From<&'a PathBuf> for LockAt<'a> {
    fn from(dir: &'a PathBuf) -> Self {
        LockAt::Dir(dir)
    }
}

impl<'a> From<&'a Remote> for LockAt<'a> {
    fn from(remote: &'a Remote) -> Self {
        LockAt::Remote(remote)
    }
}

impl<'a> From<&'a Repository> for LockAt<'a> {
    fn from(repository: &'a Repository) -> Self {
        match repository {
            Repository::Local(dir) => LockAt::Dir(dir),
            Repository::Remote(remote) => LockAt::Remote(remote),
        }
    }
}

/// A backup's repository: the directory it is in, or the repository it belongs to.
impl<'a> From<&'a Place> for LockAt<'a> {
    fn from(place: &'a Place) -> Self {
        match place {
            Place::Local(path) => LockAt::Dir(crate::fs::parent_dir(path)),
            Place::Remote(backup) => LockAt::Remote(&backup.repository),
        }
    }
}

impl LockAt<'_> {
    /// The repository as shown in messages.
    fn shown(&self) -> PathBuf {
        match self {
            LockAt::Dir(dir) => dir.to_path_buf(),
            LockAt::Remote(remote) => PathBuf::from(remote.shown_root()),
        }
    }

    /// The backend its lock objects are written through; `None` where nothing needs a lock: a
    /// local directory that does not exist (the command itself says what is missing; a create
    /// makes the directory before it locks it), or one on a read-only file system (nothing can
    /// be deleted there).
    fn backend(&self) -> Result<Option<Arc<dyn Backend>>, RepoLockError> {
        match self {
            LockAt::Dir(dir) => {
                if !std::fs::metadata(dir).is_ok_and(|m| m.is_dir()) {
                    return Ok(None);
                }
                match LocalBackend::open(dir) {
                    Ok(backend) => Ok(Some(Arc::new(backend))),
                    Err(e) if read_only(&e) => Ok(None),
                    Err(e) => Err(RepoLockError::Lock {
                        path: dir.to_path_buf(),
                        source: e.into(),
                    }),
                }
            }
            LockAt::Remote(remote) => Ok(Some(remote.shared_backend())),
        }
    }
}

/// A lock on a backups directory or an S3 repository, held until dropped.
#[derive(Debug)]
pub struct RepoLock {
    held: Option<(Lock, tokio::runtime::Handle)>,
}

impl RepoLock {
    /// A shared lock on the repository `at` (a local directory, an S3 repository, a backup's
    /// repository) for the run `command` (`backup create`, ...): waits while a prune holds it.
    /// Needs the tokio runtime (the lock is refreshed by a task); blocks.
    pub fn shared<'a>(at: impl Into<LockAt<'a>>, command: &str) -> Result<RepoLock, RepoLockError> {
        Self::take(at.into(), Kind::Shared, command)
    }

    /// The lock of a run that only adds backups (create, copy's destination): as `shared`, and
    /// a `create --force` may put a backup in place meanwhile (`replacing`).
    pub fn adding<'a>(at: impl Into<LockAt<'a>>, command: &str) -> Result<RepoLock, RepoLockError> {
        Self::take(at.into(), Kind::Adding, command)
    }

    /// The lock a `create --force` holds (beside its `adding` one) while it puts its new backup
    /// in place on S3: waits while a reader or a prune holds the repository.
    pub fn replacing<'a>(
        at: impl Into<LockAt<'a>>,
        command: &str,
    ) -> Result<RepoLock, RepoLockError> {
        Self::take(at.into(), Kind::Replacing, command)
    }

    /// The exclusive lock on the repository `at` (prune): waits while any other run holds it.
    pub fn exclusive<'a>(
        at: impl Into<LockAt<'a>>,
        command: &str,
    ) -> Result<RepoLock, RepoLockError> {
        Self::take(at.into(), Kind::Exclusive, command)
    }

    /// One path for every backend: the same lock objects, waits and errors locally and on S3.
    fn take(at: LockAt, kind: Kind, command: &str) -> Result<RepoLock, RepoLockError> {
        let Some(backend) = at.backend()? else {
            return Ok(RepoLock { held: None });
        };
        let path = at.shown();
        let lock_error = |source| RepoLockError::Lock {
            path: path.clone(),
            source,
        };
        let handle = tokio::runtime::Handle::current();
        let started = Instant::now();
        tokio::task::block_in_place(|| loop {
            match block_on(&handle, Lock::acquire(backend.clone(), kind, command)) {
                Ok(lock) => {
                    return Ok(RepoLock {
                        held: Some((lock, handle.clone())),
                    })
                }
                // Nothing can delete anything on a read-only file system: no lock is needed.
                Err(LockError::Backend(e)) if read_only(&e) => return Ok(RepoLock { held: None }),
                Err(LockError::Locked { holder, .. }) => {
                    if started.elapsed() > LOCK_WAIT {
                        return Err(RepoLockError::Locked {
                            path: path.clone(),
                            holder,
                        });
                    }
                }
                Err(e) => return Err(lock_error(e)),
            }
            if crate::progress::is_interrupted() {
                return Err(RepoLockError::Interrupted { path: path.clone() });
            }
            std::thread::sleep(match at {
                LockAt::Dir(_) => POLL,
                LockAt::Remote(_) => POLL_REMOTE,
            });
        })
    }

    /// Fails once the lock is lost (not refreshed for so long that another run may have taken
    /// it as stale): checked before a commit and before deleting, so the run stops instead.
    pub fn check(&self) -> Result<(), LockError> {
        match &self.held {
            Some((lock, _)) => lock.check(),
            None => Ok(()),
        }
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        if let Some((lock, handle)) = self.held.take() {
            // Removed now, not on a task the ending process may never run: another host would
            // otherwise wait for a lock nobody holds until it is stale.
            let _ = tokio::task::block_in_place(|| block_on(&handle, lock.release()));
        }
    }
}

/// Removes the stale locks of the repository `at` (`backend::lock::remove_stale`): those of
/// runs that died, or that stopped refreshing them. Returns what each was.
pub async fn remove_stale<'a>(at: impl Into<LockAt<'a>>) -> Result<Vec<LockInfo>, RepoLockError> {
    let at = at.into();
    // Nothing made where no run ever locked.
    if let LockAt::Dir(dir) = at {
        if !std::fs::symlink_metadata(dir.join(LOCKS)).is_ok_and(|m| m.is_dir()) {
            return Ok(Vec::new());
        }
    }
    let Some(backend) = at.backend()? else {
        return Ok(Vec::new());
    };
    crate::backend::lock::remove_stale(backend.as_ref(), Timing::default())
        .await
        .map_err(|e| RepoLockError::Lock {
            path: at.shown(),
            source: e.into(),
        })
}

/// Runs `future` to its end from blocking code (inside `block_in_place` or outside the runtime's
/// workers).
fn block_on<F: Future>(handle: &tokio::runtime::Handle, future: F) -> F::Output {
    handle.block_on(future)
}

fn read_only(e: &BackendError) -> bool {
    matches!(e, BackendError::Io { source, .. } if source.raw_os_error() == Some(rustix::io::Errno::ROFS.raw_os_error()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locks(dir: &Path) -> usize {
        std::fs::read_dir(dir.join(".wqm-locks"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shared_locks_go_together_an_exclusive_one_alone_and_dropping_releases() {
        let dir = tempfile::tempdir().unwrap();
        let a = RepoLock::shared(dir.path(), "backup create").unwrap();
        let b = RepoLock::shared(dir.path(), "backup validate").unwrap();
        assert_eq!(locks(dir.path()), 2);
        a.check().unwrap();
        drop((a, b));
        assert_eq!(locks(dir.path()), 0, "dropping a lock removes it at once");
        let held = RepoLock::exclusive(dir.path(), "backup prune").unwrap();
        assert_eq!(locks(dir.path()), 1);
        drop(held);
        assert_eq!(locks(dir.path()), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_directory_no_lock() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let lock = RepoLock::shared(&missing, "backup validate").unwrap();
        assert!(lock.held.is_none() && !missing.exists(), "nothing is made");
    }
}

//! The repository lock: every run that reads or writes the backups of a directory holds a lock
//! object there (`backend::lock`, under `.wqm-locks/`, through the local backend) for its whole
//! life — shared by `create` (full and incremental), `restore`, `export`, `validate`, `info` and
//! `list --check`; exclusive by `prune`, whose deletions and garbage collection must not run
//! under a reader or a create. One place takes it (`RepoLock::shared`/`exclusive`), waiting up
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

use crate::backend::local::LocalBackend;
use crate::backend::lock::{Lock, LockError, LockInfo, Timing, LOCKS};
use crate::backend::{Backend, BackendError};
use crate::exit::{Classify, ExitCode};

/// How long a run waits for a conflicting run to finish before it gives up.
pub const LOCK_WAIT: Duration = Duration::from_secs(600);
/// How often a waiting run looks again.
const POLL: Duration = Duration::from_millis(200);

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

/// A lock on a backups directory, held until dropped.
#[derive(Debug)]
pub struct RepoLock {
    held: Option<(Lock, tokio::runtime::Handle)>,
}

impl RepoLock {
    /// A shared lock on `dir` for the run `command` (`backup create`, ...): waits while a prune
    /// holds it. Needs the tokio runtime (the lock is refreshed by a task); blocks.
    pub fn shared(dir: &Path, command: &str) -> Result<RepoLock, RepoLockError> {
        Self::take(dir, false, command)
    }

    /// The exclusive lock on `dir` (prune): waits while any other run holds it.
    pub fn exclusive(dir: &Path, command: &str) -> Result<RepoLock, RepoLockError> {
        Self::take(dir, true, command)
    }

    fn take(dir: &Path, exclusive: bool, command: &str) -> Result<RepoLock, RepoLockError> {
        // No directory, no backups to protect: the command itself says what is missing (a
        // create makes the directory before it locks it).
        if !std::fs::metadata(dir).is_ok_and(|m| m.is_dir()) {
            return Ok(RepoLock { held: None });
        }
        let lock_error = |source| RepoLockError::Lock {
            path: dir.to_path_buf(),
            source,
        };
        let handle = tokio::runtime::Handle::current();
        let backend: Arc<dyn Backend> = match LocalBackend::open(dir) {
            Ok(backend) => Arc::new(backend),
            Err(e) if read_only(&e) => return Ok(RepoLock { held: None }),
            Err(e) => return Err(lock_error(e.into())),
        };
        let started = Instant::now();
        tokio::task::block_in_place(|| loop {
            match block_on(&handle, Lock::acquire(backend.clone(), exclusive, command)) {
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
                            path: dir.to_path_buf(),
                            holder,
                        });
                    }
                }
                Err(e) => return Err(lock_error(e)),
            }
            if crate::progress::is_interrupted() {
                return Err(RepoLockError::Interrupted {
                    path: dir.to_path_buf(),
                });
            }
            std::thread::sleep(POLL);
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

/// Removes the stale locks of the backups directory `dir` (`backend::lock::remove_stale`): those
/// of runs that died, or that stopped refreshing them. Returns what each was.
pub async fn remove_stale(dir: &Path) -> Result<Vec<LockInfo>, RepoLockError> {
    let lock_error = |source| RepoLockError::Lock {
        path: dir.to_path_buf(),
        source,
    };
    // Nothing made where no run ever locked.
    if !std::fs::symlink_metadata(dir.join(LOCKS)).is_ok_and(|m| m.is_dir()) {
        return Ok(Vec::new());
    }
    let backend = LocalBackend::open(dir).map_err(|e| lock_error(e.into()))?;
    crate::backend::lock::remove_stale(&backend, Timing::default())
        .await
        .map_err(|e| lock_error(e.into()))
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

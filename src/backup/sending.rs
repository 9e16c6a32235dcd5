//! A backup on its way to a repository on S3 (`create` and `export` there, and a restore's
//! safety backup beside a backup on S3): made and checked in a local temporary directory as any
//! backup, then sent (`remote::send`), its manifest last; an incremental one's new chunks first
//! (`remote::send_chunks`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};

use super::remote::{self, Claim, DeadRuns};
use crate::backend::Backend;
use crate::progress::Progress;
use crate::store::chunks::{self, Courier, Listed, Packer};
use crate::store::lock::RepoLock;
use crate::store::Remote;

pub struct Sending {
    pub repository: Remote,
    pub name: String,
    /// Removed with everything in it when the run ends.
    staged: tempfile::TempDir,
    /// The run's claim on the name (its run record), released before the lock.
    claim: Claim,
    /// The repository's adding lock, held from before the dead runs are cleaned up to the end:
    /// no prune runs meanwhile.
    lock: RepoLock,
    /// An incremental backup's: sends its new chunks as they land (`list_store`).
    courier: Option<Arc<Courier>>,
    /// Packs the new chunks of a store of pack files, for the courier and `send_chunks`.
    packer: Option<Arc<Packer>>,
}

impl Sending {
    /// What a backup sent to S3 needs before anything is made: a server that refuses taken
    /// names, the repository's adding lock (for the run `command`), dead runs' leftovers
    /// removed (returned, to be reported), the name claimed (no other run sends it)
    /// and free (with `replace`, a backup there is to be replaced), and the local staging
    /// directory (encrypted as it is written when the repository is).
    pub async fn prepare(
        (repository, name): (Remote, String),
        command: &str,
        replace: bool,
    ) -> Result<(Sending, DeadRuns)> {
        require_exclusive_names(repository.backend(), repository.shown_root()).await?;
        let lock = RepoLock::adding(&repository, command)?;
        let dead = remote::clean_dead_runs(repository.backend(), false).await?;
        let claim = remote::claim(repository.shared_backend(), &name, replace).await?;
        remove_dead_stagings(&std::env::temp_dir());
        let staged = tempfile::Builder::new()
            .prefix(&format!("{STAGING}{}-", std::process::id()))
            .tempdir()
            .context("cannot make a temporary directory for the backup on its way to S3")?;
        // Staged for an encrypted repository: encrypted as it is written, sent as it is.
        if let Some(seal) = repository.seal() {
            crate::store::seal::share(&staged.path().to_string_lossy(), &seal);
        }
        let sending = Sending {
            repository,
            name,
            staged,
            claim,
            lock,
            courier: None,
            packer: None,
        };
        Ok((sending, dead))
    }

    /// Where the backup is made before it is sent.
    pub fn staged_target(&self) -> PathBuf {
        self.staged.path().join(&self.name)
    }

    /// The repository's chunk store (made when missing), listed once: an incremental backup
    /// staged with it (`Request::listed`) stores only the chunks the repository lacks, and
    /// each of those is sent as soon as it lands (`chunks::Courier`).
    pub fn list_store(&mut self) -> Result<Listed> {
        let listed = Listed::of(&self.repository, chunks::DEFAULT_AVERAGE)?;
        let backend = self.repository.shared_backend();
        self.packer = listed
            .is_packed()
            .then(|| Arc::new(Packer::new(backend.clone(), self.repository.seal())));
        let courier = Arc::new(Courier::new(backend, self.packer.clone()));
        self.courier = Some(courier.clone());
        Ok(listed.sent_by(courier))
    }

    /// Sends the backup made at `local` (an incremental one: the chunks its staging store got,
    /// first), its manifest last; what a failure sent is removed. Returns where it now is.
    pub async fn send(
        &mut self,
        local: &Path,
        incremental: bool,
        progress: &dyn Progress,
    ) -> Result<PathBuf> {
        let backend = self.repository.backend();
        if incremental {
            let sent = match &self.courier {
                Some(courier) => courier
                    .finish()
                    .await
                    .context("cannot send the new chunks")?,
                None => HashSet::new(),
            };
            let packer = self.packer.as_deref();
            remote::send_chunks(backend, self.staged.path(), &sent, packer, progress).await?;
            if let Some(packer) = packer {
                packer
                    .finish()
                    .await
                    .context("cannot send the new chunks")?;
            }
        }
        let root = self.claim.root(&self.name);
        remote::send(
            backend,
            local,
            (&root, &mut self.claim),
            &self.lock,
            progress,
        )
        .await?;
        if self.claim.replacing {
            self.take_name(progress).await?;
        }
        Ok(self.repository.shown(&self.name))
    }

    /// Puts the new backup a `--force` sent in place of the old one (`replace::put_in_place`),
    /// holding the repository's replacing lock beside its adding one: it waits for readers
    /// and prunes, not for other runs that only add (nor for another `--force`). When the lock
    /// cannot be had the new backup is removed and the old one stays; when the swap fails
    /// part-way the record is kept, and the name reads the new backup from where it was sent
    /// until `cleanup` or a prune finishes it.
    async fn take_name(&mut self, progress: &dyn Progress) -> Result<()> {
        let backend = self.repository.backend();
        crate::failpoint::hit("create:s3-replacing")?;
        progress.step(&format!(
            "waiting for the repository's readers to finish, to replace `{}`",
            self.name
        ));
        let replacing = (|| -> Result<RepoLock> {
            let lock = RepoLock::replacing(&self.repository, "backup create --force")?;
            lock.check()?;
            self.lock.check()?;
            Ok(lock)
        })();
        let _replacing = match replacing {
            Ok(lock) => lock,
            Err(e) => {
                if super::replace::remove_replacement(backend, &self.name)
                    .await
                    .is_err()
                {
                    self.claim.keep();
                }
                return Err(e.context(format!(
                    "the new backup was sent but could not replace `{}`, which is unchanged",
                    self.name
                )));
            }
        };
        progress.step(&format!("replacing `{}`", self.name));
        if let Err(e) = super::replace::put_in_place(backend, &self.name).await {
            self.claim.keep();
            return Err(anyhow::Error::new(e).context(format!(
                "the new backup could not be put in place of `{}`: the name reads it from where it was sent until `wqm backup cleanup {}` finishes",
                self.name,
                self.repository.shown_root()
            )));
        }
        Ok(())
    }
}

/// How the local staging directories begin (in `$TMPDIR`), the pid of the run that made each
/// after it.
const STAGING: &str = ".wqm-s3-";

/// Removes the staging directories of this host's dead runs from `tmp` (by the next run that
/// sends a backup, and by `cleanup`); returns them. A killed run never removes its own, which
/// may hold a whole backup. One whose pid is alive is left alone (a run sending now, or a pid
/// reused: it goes once that process is gone).
pub fn remove_dead_stagings(tmp: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return removed;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix(STAGING))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid {
            // Not followed if it is a link: only the link goes.
            if pid != std::process::id()
                && !crate::process::alive(pid)
                && std::fs::remove_dir_all(entry.path()).is_ok()
            {
                removed.push(entry.path());
            }
        }
    }
    removed
}

/// Refuses a repository whose server does not refuse a second write of one name (`save_new`):
/// two runs there could write over each other.
pub async fn require_exclusive_names(backend: &dyn Backend, shown: &str) -> Result<()> {
    if backend.refuses_taken_names().await? {
        Ok(())
    } else {
        Err(crate::repo::RepoError::NoConditionalPut {
            repository: shown.to_string(),
        }
        .into())
    }
}

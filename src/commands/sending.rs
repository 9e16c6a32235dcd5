//! A backup on its way to S3 (`create` and `export` there): made and checked in a local
//! temporary directory as any backup, then sent (`backup::remote::send`), its manifest last.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::backup;
use crate::output::Ui;
use crate::progress::Progress;
use crate::store::lock::RepoLock;
use crate::store::Remote;

pub(super) struct Sending {
    pub(super) repository: Remote,
    pub(super) name: String,
    /// Removed with everything in it when the run ends.
    pub(super) staged: tempfile::TempDir,
    /// The run's claim on the name (its run record), released before the lock.
    claim: backup::remote::Claim,
    /// The repository's shared lock, held from before the dead runs are cleaned up to the end:
    /// no prune runs meanwhile.
    lock: RepoLock,
}

impl Sending {
    /// What a backup sent to S3 needs before anything is made: the repository's shared lock
    /// (for the run `command`), this host's dead runs' leftovers removed, the name claimed (no
    /// other run sends it) and free, and the local staging directory (encrypted as it is
    /// written when the repository is).
    pub(super) async fn prepare(
        (repository, name): (Remote, String),
        command: &str,
        ui: &Ui,
    ) -> Result<Sending> {
        super::require_exclusive_names(repository.backend(), repository.shown_root()).await?;
        let lock = RepoLock::shared(&repository, command)?;
        super::clean_remote_runs(&repository, ui).await?;
        let claim = backup::remote::claim(repository.shared_backend(), &name).await?;
        let staged = tempfile::Builder::new()
            .prefix(".wqm-s3-")
            .tempdir()
            .context("cannot make a temporary directory for the backup on its way to S3")?;
        // Staged for an encrypted repository: encrypted as it is written, sent as it is.
        if let Some(seal) = repository.seal() {
            crate::store::seal::share(&staged.path().to_string_lossy(), &seal);
        }
        Ok(Sending {
            repository,
            name,
            staged,
            claim,
            lock,
        })
    }

    /// Where the backup is made before it is sent.
    pub(super) fn staged_target(&self) -> PathBuf {
        self.staged.path().join(&self.name)
    }

    /// Sends the backup made at `local`, its manifest last (what a failure sent is removed);
    /// returns where it now is.
    pub(super) async fn send(&mut self, local: &Path, progress: &dyn Progress) -> Result<PathBuf> {
        let backend = self.repository.backend();
        let target = (self.name.as_str(), &mut self.claim);
        backup::remote::send(backend, local, target, &self.lock, progress).await?;
        Ok(self.repository.shown(&self.name))
    }
}

//! `wqm backup cleanup [DIR]`: clean up after runs that died (see `cleanup`).

use anyhow::Result;
use serde_json::json;

use crate::backend::lock::LockInfo;
use crate::backup;
use crate::cleanup;
use crate::cli::CleanupArgs;
use crate::config::Settings;
use crate::exit::ExitCode;
use crate::output::Ui;
use crate::store::lock as repo_lock;
use crate::store::Repository;

pub async fn run(
    args: &CleanupArgs,
    settings: &Settings,
    ui: &Ui,
    handle: &tokio::runtime::Handle,
) -> Result<ExitCode> {
    let given = args
        .directory
        .as_ref()
        .or(settings.backup.default_backup_directory.as_ref());
    let mut looked = Vec::new();
    let mut dirs = Vec::new();
    // On S3: what killed creates left.
    let mut remote_runs = backup::remote::DeadRuns::default();
    // On S3: the backups a killed prune was deleting, whose deletion this run finished.
    let mut deletions_finished = Vec::new();
    let mut local_dir = None;
    let repository = match given {
        Some(dir) => Some(super::repository(dir, settings, handle)?),
        None => None,
    };
    match &repository {
        Some(Repository::Local(dir)) => {
            super::backups_dir(dir)?;
            local_dir = Some(dir.as_path());
        }
        Some(Repository::Remote(remote)) => {
            remote_runs = backup::remote::clean_dead_runs(remote.backend(), false).await?;
            let deleting = crate::prune::remote::deletions_left(remote)?;
            if !remote_runs.waiting.is_empty() || deleting {
                // Putting a killed `--force`'s new backup in place, or removing what a killed
                // prune began to delete: no reader may be between two files of either.
                let _lock = repo_lock::RepoLock::exclusive(remote, "backup cleanup")?;
                let finished = backup::remote::clean_dead_runs(remote.backend(), true).await?;
                remote_runs.removed.extend(finished.removed);
                remote_runs.waiting = finished.waiting;
                deletions_finished = crate::prune::remote::finish_deletions(remote)?;
            }
            looked.push(format!("`{}`", remote.shown_root()));
        }
        None => {}
    }
    dirs.extend(local_dir);
    dirs.push(settings.data_dir.as_path());
    looked.extend(dirs.iter().map(|d| format!("`{}`", d.display())));
    let cleaned = cleanup::dead_runs(&dirs, settings).await;
    let unfinished = cleaned.iter().filter(|c| !c.complete).count();
    // The repository's locks that protect nothing any more (the data directory has none).
    let stale_locks = match &repository {
        Some(repository) => repo_lock::remove_stale(repository).await?,
        None => Vec::new(),
    };
    // A killed run's local copy of a backup it was sending to S3 (in `$TMPDIR`).
    let stagings = backup::remove_dead_stagings(&std::env::temp_dir());
    if ui.json {
        ui.json(&json!({ "directories": dirs, "cleaned": cleaned, "unfinished": unfinished, "stale_locks_removed": stale_locks, "remote_runs_removed": remote_runs.removed, "remote_runs_waiting": remote_runs.waiting, "remote_deletions_finished": deletions_finished, "staging_removed": stagings }));
    } else {
        for run in &cleaned {
            ui.line(run.report());
        }
        for lock in &stale_locks {
            ui.line(stale_line(lock));
        }
        for removed in &remote_runs.removed {
            ui.line(format!("Removed {}", removed.what("")));
        }
        for name in &deletions_finished {
            ui.line(format!(
                "Finished deleting `{name}`, which a killed prune began"
            ));
        }
        if let Some(Repository::Remote(remote)) = &repository {
            for name in &remote_runs.waiting {
                ui.warn_action(backup::remote::DeadRuns::waiting_line(
                    name,
                    remote.shown_root(),
                ));
            }
        }
        for staging in &stagings {
            ui.line(format!(
                "Removed a killed run's local copy of a backup it was sending to S3: `{}`",
                staging.display()
            ));
        }
        let looked = looked.join(" and ");
        ui.line(match cleaned.len() {
            0 => format!("No dead runs in {looked}"),
            n => format!("Cleaned up after {n} dead run(s) in {looked}; {unfinished} not finished"),
        });
    }
    // Something is still on a server or on disk: the operator has to look.
    Ok(if unfinished > 0 || !remote_runs.waiting.is_empty() {
        ExitCode::ActionNeeded
    } else {
        ExitCode::Success
    })
}

/// A stale lock removed: whose it was and when it was last refreshed.
fn stale_line(lock: &LockInfo) -> String {
    let kind = lock.kind().shown();
    let refreshed = crate::backend::lock::shown_time(lock.time);
    format!(
        "Removed a stale {kind} lock of `wqm {}` (pid {} on `{}`, last refreshed {refreshed})",
        lock.command, lock.pid, lock.host
    )
}

//! Carrying out a plan: the working directory, the safety backup, then the steps that change the
//! live system, in the order of the module doc.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};

use super::check::damaged;
use super::plan::{audit_files, config_entry, live_config};
use super::precheck::Precheck;
use super::report::{Outcome, Steps, Unfinished};
use super::unpack::unpack_databases;
use super::upload::Uploads;
use super::verify::{verify_restore, Verified};
use super::{AliasAction, CollectionAction, CollectionPlan, DatabaseAction, DatabasePlan, Plan};
use crate::backup;
use crate::cleanup;
use crate::config::Settings;
use crate::daemon;
use crate::progress::{self, Progress};
use crate::qdrant::Client;
use crate::sqlite;
use crate::store::Damaged;
use crate::transfer;
use crate::verify;
use crate::workdir::{Record, WorkDir};

/// Applies a plan that has no blockers.
pub async fn execute(
    client: &Client,
    settings: &Settings,
    plan: &Plan,
    progress: &dyn Progress,
) -> Result<Outcome, Unfinished> {
    let started = Instant::now();
    let mut steps = Steps::default();
    let mut phases = transfer::Phases::start();
    let result = apply(client, settings, plan, progress, &mut steps, &mut phases).await;
    match result {
        Ok(verification) => Ok(Outcome {
            steps,
            verification,
            seconds: started.elapsed().as_secs_f64(),
            phases: phases.done,
        }),
        Err(error) => {
            let error = refusal(plan, progress, &steps, error);
            Err(Unfinished { error, steps })
        }
    }
}

/// A backup found damaged before the restore changed anything (`verify_before_restore`, checked
/// beside the first upload) is refused as the plan refuses one: every file read for its
/// checksum, every problem listed. Content that differs from its manifest while its stored
/// checksum agrees (which the audit trusts) keeps the error that found it.
fn refusal(
    plan: &Plan,
    progress: &dyn Progress,
    steps: &Steps,
    error: anyhow::Error,
) -> anyhow::Error {
    let damaged = error.chain().any(|e| e.is::<Damaged>());
    let unchanged = !steps.changed && steps.uncertain.is_empty();
    if !(plan.precheck_deferred && damaged && unchanged) {
        return error;
    }
    match audit_files(&plan.source.place(), progress) {
        Ok(Some(refusal)) => refusal.into(),
        _ => error,
    }
}

/// The steps of a restore, in the order of the module doc.
async fn apply(
    client: &Client,
    settings: &Settings,
    plan: &Plan,
    progress: &dyn Progress,
    steps: &mut Steps,
    phases: &mut transfer::Phases,
) -> Result<Vec<Verified>> {
    let work = open_work_dir(settings, plan, steps).await?;
    phases.end("cleanup");
    // Dropped when the restore ends, which stops its reading.
    let uploads = plan.restored_collections().map(|c| c.snapshots.len()).sum();
    let precheck = plan
        .precheck_deferred
        .then(|| Precheck::for_backup(&plan.source, uploads));
    let mut run = Restoring {
        client,
        settings,
        plan,
        progress,
        work,
        steps,
        precheck: precheck.as_ref().map(|p| &p.0),
    };
    // Unpacked before anything changes: a damaged database stops the restore here.
    let unpacked = unpack_databases(plan, run.work.path(), progress)?;
    phases.end("unpack databases");
    run.safety_backup().await?;
    phases.end("safety backup");
    let changed = run.change(&unpacked, phases).await;
    if changed.is_err() {
        run.remove_unneeded_safety_backup();
        run.restart_unneeded_stop();
    }
    let shard_targets = changed?;
    progress.step("verifying");
    let verified = verify_restore(client, plan, &shard_targets).await;
    phases.end("verify");
    verified
}

impl Restoring<'_> {
    /// The steps that change the live system, after the safety backup. Returns where each
    /// shard went (`restore_collections`).
    async fn change(
        &mut self,
        unpacked: &BTreeMap<String, PathBuf>,
        phases: &mut transfer::Phases,
    ) -> Result<BTreeMap<String, Vec<(u32, u32)>>> {
        self.stop_daemon()?;
        let replacements = self.merge_databases(unpacked)?;
        phases.end("stop daemon, merge databases");
        let shard_targets = self.restore_collections().await?;
        phases.end("collections");
        if let Some(precheck) = self.precheck {
            // Passed already when a collection was uploaded.
            self.progress.step("checking the backup");
            precheck.wait().await?;
        }
        self.replace_databases(&replacements)?;
        self.set_aliases().await?;
        self.replace_config()?;
        self.start_daemon()?;
        phases.end("databases, aliases, config, start daemon");
        Ok(shard_targets)
    }

    /// A restore that stopped before it changed anything on the live system (a backup found
    /// damaged while it was uploaded, say) needs no way back: its safety backup would only pile
    /// up with each retry, so it goes (renamed to a hidden name first, as `prune` deletes).
    /// It stays when anything changed or may have (an upload Qdrant got all of), and when the
    /// run's journal still names something on the server (the next run reports the way back).
    fn remove_unneeded_safety_backup(&mut self) {
        if self.steps.changed || !self.steps.uncertain.is_empty() {
            return;
        }
        let Some(path) = self.steps.safety_backup.clone() else {
            return;
        };
        let left_on_server = crate::workdir::read_journal(self.work.path())
            .map(|records| !crate::workdir::outstanding(&records).is_empty())
            .unwrap_or(true);
        if left_on_server {
            return;
        }
        let remote = self
            .plan
            .safety_backup
            .as_ref()
            .and_then(|s| s.remote.as_ref());
        if let Some((repository, name)) = remote {
            // As `prune` deletes on S3: its manifest first, so it is no backup from then on; a
            // half-removed one is finished by the next prune there.
            if crate::prune::remove_remote(repository, name).is_err() {
                return;
            }
        } else {
            // Renamed away, it is no backup even when not all of it went: the next prune
            // finishes it.
            let _ = crate::prune::remove(&path);
            if fs::symlink_metadata(&path).is_ok() {
                return;
            }
        }
        let done = format!("safety backup: {}", path.display());
        self.steps.done.retain(|d| *d != done);
        self.steps.safety_backup = None;
        self.steps.safety_backup_removed = Some(path);
    }

    /// A restore that stopped before it changed anything (a backup found damaged while the
    /// first upload streamed, say) starts the daemon it stopped again: the live system is as it
    /// was. When that fails, the report says the daemon is left stopped.
    fn restart_unneeded_stop(&mut self) {
        if self.steps.changed || !self.steps.uncertain.is_empty() {
            return;
        }
        let _ = self.start_daemon();
    }
}

/// A safety backup on its way to the repository on S3 `target`: `Sending` prepared (the dead
/// runs it cleaned up noted in `steps`), and the repository's chunk store listed when it has
/// one (the safety backup is then incremental there).
async fn on_s3(
    target: (crate::store::Remote, String),
    steps: &mut Steps,
) -> Result<(backup::Sending, Option<crate::store::chunks::Listed>)> {
    let (mut sending, dead) = backup::Sending::prepare(target, "backup restore", false).await?;
    let repository = &sending.repository;
    let shown = repository.shown_root();
    steps
        .cleaned
        .extend(dead.removed.iter().map(|r| cleanup::Cleaned {
            path: repository.shown(&r.target),
            run: format!("a run sending `{}`", r.target),
            lines: vec![format!(
                "{} object(s) and {} unfinished upload(s) removed",
                r.objects, r.uploads
            )],
            complete: true,
            needs_action: false,
        }));
    steps
        .cleaned
        .extend(dead.waiting.iter().map(|name| cleanup::Cleaned {
            path: repository.shown(name),
            run: format!("a `create --force` of `{name}`"),
            lines: vec![backup::remote::DeadRuns::waiting_line(name, shown)],
            complete: false,
            needs_action: true,
        }));
    let with_store = crate::store::chunks::ChunkStore::exists_at(
        &crate::store::Repository::Remote(repository.clone()),
    );
    let listed = match with_store {
        true => Some(sending.list_store()?),
        false => None,
    };
    Ok((sending, listed))
}

/// Makes the restore's working directory beside the state database (`.wqm-restore`: lock,
/// journal), after cleaning up what dead restores left there.
async fn open_work_dir(settings: &Settings, plan: &Plan, steps: &mut Steps) -> Result<WorkDir> {
    // Where the live state database is, which need not be `data_dir` (`WQM_STATE_DB`).
    let state_dir = settings
        .state_db
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    crate::fs::create_private_dir_all(&state_dir)
        .with_context(|| format!("cannot create `{}`", state_dir.display()))?;
    // A restore that died here left uploaded copies on the server and unpacked databases.
    for cleaned in cleanup::dead_runs(&[state_dir.as_path()], settings).await {
        steps.cleaned.push(cleaned);
    }
    // The journal (fsynced per step) lets the next run report and finish what a killed one did.
    Ok(WorkDir::create(
        &state_dir.join(cleanup::RESTORE_WORK_DIR),
        Record::Run {
            command: "restore".to_string(),
            path: plan.backup.clone(),
            pid: std::process::id(),
            started: crate::now(),
        },
    )?)
}

/// A restore under way: what it restores with, its working directory (with the on-disk journal)
/// and the steps it took.
struct Restoring<'a> {
    client: &'a Client,
    settings: &'a Settings,
    plan: &'a Plan,
    progress: &'a dyn Progress,
    work: WorkDir,
    steps: &'a mut Steps,
    /// `verify_before_restore`, checked beside the first upload.
    precheck: Option<&'a Arc<Precheck>>,
}

impl<'a> Restoring<'a> {
    /// `backup::create` of what the restore replaces; only a complete one is named as the way back.
    async fn safety_backup(&mut self) -> Result<()> {
        let Some(safety) = &self.plan.safety_backup else {
            return Ok(());
        };
        progress::check_interrupted()?;
        self.progress
            .step(&format!("safety backup into {}", safety.path.display()));
        // On S3: made in a local staging directory, then sent (`backup::Sending`). Incremental
        // where the backups beside it are.
        let (mut sending, listed) = match &safety.remote {
            None => (None, None),
            Some(target) => {
                let (sending, listed) = on_s3(target.clone(), self.steps)
                    .await
                    .context("the safety backup failed; nothing was changed")?;
                (Some(sending), listed)
            }
        };
        let incremental = match &sending {
            None => {
                crate::store::chunks::ChunkStore::exists_in(crate::fs::parent_dir(&safety.path))
            }
            Some(_) => listed.is_some(),
        };
        let request = backup::Request {
            target: sending
                .as_ref()
                .map_or(safety.path.clone(), |s| s.staged_target()),
            replace: false,
            description: Some(format!(
                "Safety backup before restoring {}",
                self.plan.backup.display()
            )),
            collections: Some(safety.collections.clone()),
            partial: false,
            databases: if safety.databases.is_empty() {
                backup::Databases::None
            } else {
                backup::Databases::Only(safety.databases.clone())
            },
            config: safety.config,
            incremental,
            listed,
        };
        let made = backup::create(self.client, self.settings, &request, self.progress).await;
        let outcome = match (made, &mut sending) {
            (Ok(outcome), None) => outcome,
            (Ok(outcome), Some(sending)) => {
                let sent = sending
                    .send(&outcome.path, incremental, self.progress)
                    .await;
                sent.context("the safety backup failed; nothing was changed")?;
                outcome
            }
            (Err(e), _) => {
                let staging = crate::format::layout::staging_path(&request.target);
                let left = cleanup::left_on_server(&staging, self.settings);
                self.steps.leftovers.extend(left);
                return Err(e.context("the safety backup failed; nothing was changed"));
            }
        };
        self.steps.cleaned.extend(outcome.cleaned);
        self.steps.leftovers.extend(outcome.leftovers);
        self.work.record(&Record::SafetyBackup {
            path: safety.path.clone(),
        })?;
        self.steps.safety_backup = Some(safety.path.clone());
        self.steps
            .done
            .push(format!("safety backup: {}", safety.path.display()));
        crate::failpoint::hit("restore:safety-done")?;
        Ok(())
    }

    fn stop_daemon(&mut self) -> Result<()> {
        if !self.plan.daemon.will_stop_and_start {
            return Ok(());
        }
        self.progress.step("stopping the daemon");
        self.work.record(&Record::DaemonStopped)?;
        daemon::stop(&self.settings.backup.daemon, &self.settings.data_dir)?;
        self.steps.daemon_stopped = true;
        self.steps.done(&self.work, "daemon stopped".to_string())?;
        crate::failpoint::hit("restore:daemon-stopped")?;
        Ok(())
    }

    /// With the daemon stopped, merges the live rows and the backup's into a copy of the live
    /// database (`sqlite::merge`) for each database the plan merges. Returns, for each database
    /// the restore replaces or merges into, the file that takes its place.
    fn merge_databases(
        &self,
        unpacked: &BTreeMap<String, PathBuf>,
    ) -> Result<Vec<(PathBuf, &'a DatabasePlan)>> {
        let plan = self.plan;
        let mut replacements = Vec::new();
        for database in plan
            .databases
            .iter()
            .filter(|d| d.action != DatabaseAction::Keep)
        {
            let from_backup = unpacked
                .get(&database.name)
                .ok_or_else(|| anyhow!("`{}` was not unpacked", database.name))?;
            let replacement = match database.action {
                DatabaseAction::Merge => self.merge_database(database, from_backup)?,
                _ => from_backup.clone(),
            };
            replacements.push((replacement, database));
        }
        Ok(replacements)
    }

    /// The rows of the restored collections from `from_backup`, merged into a copy of the live
    /// database; returns the copy.
    fn merge_database(&self, database: &DatabasePlan, from_backup: &Path) -> Result<PathBuf> {
        self.progress.step(&format!(
            "merging rows of the restored collections into a copy of `{}`",
            database.live.display()
        ));
        let merged = self.work.path().join(format!("{}.merged", database.name));
        sqlite::backup_to(&database.live, &merged)
            .with_context(|| format!("cannot copy `{}`", database.live.display()))?;
        let collections: Vec<String> = self
            .plan
            .manifest
            .collection_names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        let report = sqlite::merge::merge_collections(&merged, from_backup, &collections)
            .with_context(|| {
                format!(
                    "cannot merge the backup's rows into `{}`",
                    database.live.display()
                )
            })?;
        self.progress.step(&format!(
            "merge: {} rows replaced, {} keys renumbered",
            report.inserted.values().sum::<usize>(),
            report.remapped
        ));
        Ok(merged)
    }

    /// Uploads each collection the plan restores (by shards when stored so), side by side as
    /// `backup.transfer.parallel` allows (`transfer::Lanes`: one upload being sent per node, the
    /// next one sent while Qdrant recovers the previous). A failure stops the uploads not yet
    /// all sent. Returns, per collection stored by shards, where each shard went (see
    /// `restore_shards`).
    async fn restore_collections(&mut self) -> Result<BTreeMap<String, Vec<(u32, u32)>>> {
        let (client, plan, progress) = (self.client, self.plan, self.progress);
        let transfer = &self.settings.backup.transfer;
        progress::check_interrupted()?;
        let collections: Vec<&CollectionPlan> = plan.restored_collections().collect();
        let lanes = transfer::Lanes::new(transfer.parallel.get());
        let uploads = Uploads {
            client,
            plan,
            transfer,
            work: &self.work,
            progress,
            lanes: &lanes,
            precheck: self.precheck,
        };
        let jobs = collections.iter().map(|collection| async {
            let began = Cell::new(false);
            let restore = async {
                let targets = uploads.restore_collection(collection, &began).await?;
                // On disk as soon as it is done, so a crash meanwhile is reported right.
                let text = format!("collection `{}` restored", collection.name);
                uploads.work.record(&Record::Done { text })?;
                Ok(targets)
            };
            let result = lanes.run(restore).await;
            (began.get(), result)
        });
        let results = futures_util::future::join_all(jobs).await;
        let mut shard_targets = BTreeMap::new();
        let mut failure = None;
        for (collection, (began, result)) in collections.iter().zip(results) {
            let name = &collection.name;
            match result {
                Ok(targets) => {
                    self.steps.changed = true;
                    shard_targets.extend(targets.map(|t| (name.clone(), t)));
                    if collection.action == CollectionAction::Create {
                        self.steps.created.push(name.clone());
                    }
                    // Recorded on disk when it was done; reported in the plan's order.
                    self.steps
                        .done
                        .push(format!("collection `{name}` restored"));
                }
                Err(e) if e.is::<transfer::OtherFailed>() || (!began && failure.is_some()) => {}
                Err(e) => {
                    if began {
                        // Qdrant may have swapped the collection in and then failed to answer (or died).
                        self.steps.changed = true;
                        self.steps.uncertain.push(format!(
                            "collection `{name}`: Qdrant may have restored it before the failure; check it, or rerun the restore with --overwrite"
                        ));
                    } else {
                        self.steps.unchanged.push(format!(
                            "collection `{name}`: not restored, left as it was (Qdrant did not get all of its snapshot)"
                        ));
                    }
                    failure
                        .get_or_insert(e.context(format!("restoring collection `{name}` failed")));
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(shard_targets),
        }
    }

    /// Puts each replacement (unpacked, or merged) in place of its live database
    /// (`sqlite::replace_live`).
    fn replace_databases(&mut self, replacements: &[(PathBuf, &DatabasePlan)]) -> Result<()> {
        for (replacement, database) in replacements {
            progress::check_interrupted()?;
            self.progress
                .step(&format!("putting `{}` in place", database.live.display()));
            self.steps.changed = true;
            sqlite::replace_live(replacement, &database.live)
                .with_context(|| format!("cannot replace `{}`", database.live.display()))?;
            let how = if database.action == DatabaseAction::Merge {
                "merged"
            } else {
                "replaced"
            };
            self.steps
                .done(&self.work, format!("`{}` {how}", database.live.display()))?;
            crate::failpoint::hit("restore:database-replaced")?;
        }
        Ok(())
    }

    async fn set_aliases(&mut self) -> Result<()> {
        for alias in self
            .plan
            .aliases
            .iter()
            .filter(|a| a.action != AliasAction::Keep)
        {
            let replace = matches!(alias.action, AliasAction::Repoint { .. });
            self.client
                .set_alias(&alias.alias, &alias.collection, replace)
                .await?;
            self.steps.done(
                &self.work,
                format!("alias `{}` → `{}`", alias.alias, alias.collection),
            )?;
            crate::failpoint::hit("restore:alias-set")?;
        }
        Ok(())
    }

    /// Writes the backup's config (checked as `validate --check-files` checks it, the secrets
    /// it left out taken from the live file) over the live one, when the plan says so.
    fn replace_config(&mut self) -> Result<()> {
        let plan = self.plan;
        let (true, Some(entry), Some(target)) = (
            plan.config.replace,
            config_entry(&plan.manifest),
            plan.config.target.as_ref(),
        ) else {
            return Ok(());
        };
        // Checked against the manifest as it is read (`open_checked`).
        let bytes = plan
            .source
            .read_small_content(entry, crate::format::manifest::MAX_MANIFEST_BYTES)?;
        // What `validate --check-files` checks of it, before it becomes the live configuration.
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| "not UTF-8 text".to_string())
            .and_then(|text| verify::check_config_text(text).map(|()| text))
            .map_err(|problem| damaged(&entry.path, problem))?;
        // The secrets the backup left out come from the live file.
        let text = crate::secrets::restore_config(
            text,
            &plan.manifest.config_redacted,
            live_config(self.settings).as_deref(),
        );
        self.steps.changed = true;
        crate::fs::write_atomic(target, text.as_bytes())
            .with_context(|| format!("cannot write `{}`", target.display()))?;
        self.steps.done(
            &self.work,
            format!("config `{}` replaced", target.display()),
        )?;
        Ok(())
    }

    /// Starts the daemon this restore stopped.
    fn start_daemon(&mut self) -> Result<()> {
        if !self.steps.daemon_stopped {
            return Ok(());
        }
        crate::failpoint::hit("restore:before-daemon-start")?;
        self.progress.step("starting the daemon");
        daemon::start(&self.settings.backup.daemon)?;
        self.work.record(&Record::DaemonStarted)?;
        self.steps.daemon_stopped = false;
        self.steps.done(&self.work, "daemon started".to_string())?;
        Ok(())
    }
}

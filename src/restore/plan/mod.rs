//! Working out a restore, reading only: the backup (validation, versions and migrations), the
//! server (cluster, collections, aliases, write access), this machine (databases, config, the
//! daemon, the safety backup, disk space) and the time it takes. Every problem becomes one of the
//! plan's blockers.

mod collections;
mod databases;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::{
    AliasAction, ClusterPlan, CollectionAction, ConfigPlan, DaemonPlan, DatabaseAction,
    MigrationStep, Plan, Request, SafetyPlan,
};
use crate::config::Settings;
use crate::daemon;
use crate::exit::{ExitCode, Failure};
use crate::format::compat::{self, Decision, Policy};
use crate::format::manifest::{FileKind, Manifest};
use crate::format::migrations::{self, WorkingCopy};
use crate::progress::Progress;
use crate::qdrant::cluster;
use crate::qdrant::{Client, QdrantError};
use crate::store::{BackupDir, Place, Remote};
use crate::verify::{self, Check, Severity};

use collections::{plan_aliases, plan_collections};
use databases::plan_databases;

pub(super) use collections::custom_sharding;

/// Qdrant restored a 321 MB snapshot by upload in 6.4 s on a 2-core machine: plan with 50 MB/s.
const RESTORE_BYTES_PER_SECOND: u64 = 50_000_000;

/// Validates the backup and works out everything the restore would do, reading only.
pub async fn plan(
    client: &Client,
    settings: &Settings,
    request: &Request,
    progress: &dyn Progress,
) -> Result<Plan> {
    let mut plan = Plan::new(BackupDir::open_at(&request.place)?);
    let policy = Policy::new(&settings.backup.validation, request.allow_downgrade);
    // 1. The backup: structure, manifest, files (and their checksums), versions. With
    // `verify_before_restore` the files are read here only for a dry run (which shows what is
    // damaged) and a legacy backup; otherwise beside the first upload (`Precheck`).
    let verify_files = settings.backup.verification.verify_before_restore;
    let files_now = verify_files && (request.dry_run || plan.source.manifest.is_legacy());
    plan_validation(&mut plan, settings, &policy, progress, files_now)?;
    plan_versions(&mut plan, &policy);
    // 2. Qdrant: the server, what exists, what conflicts.
    progress.step(&format!("asking Qdrant at {}", client.display_url()));
    plan_cluster(&mut plan, client, settings).await?;
    let existing = client.list_collections().await?;
    let aliases = client.aliases().await?;
    plan_collections(&mut plan, client, &existing, request).await?;
    if verify_files && !files_now {
        plan_precheck(&mut plan, progress)?;
    }
    plan_aliases(&mut plan, &aliases);
    plan_write_access(&mut plan, client).await?;
    // 3. This machine: databases, config, the daemon, the safety backup, disk space, time.
    plan_databases(&mut plan, settings);
    plan_config(&mut plan, settings, request);
    plan_daemon(&mut plan, settings);
    plan_safety_backup(&mut plan, settings, request.safety_repository.as_ref());
    plan_disk(&mut plan, settings);
    plan_time(&mut plan);
    Ok(plan)
}

impl Plan {
    /// A plan that does nothing yet, for the backup in `source`.
    fn new(source: BackupDir) -> Plan {
        let backup = &source.manifest;
        Plan {
            backup: source.path.clone(),
            version: backup.version.clone(),
            current_version: crate::VERSION.to_string(),
            format: backup.format_name(),
            formatted_timestamp: backup.formatted_timestamp(),
            partial: backup.partial_backup,
            compatibility: None,
            migrations: Vec::new(),
            collections: Vec::new(),
            aliases: Vec::new(),
            databases: Vec::new(),
            config: ConfigPlan {
                in_backup: false,
                replace: false,
                target: None,
                keeps_live: Vec::new(),
            },
            daemon: DaemonPlan {
                running: None,
                will_stop_and_start: false,
            },
            cluster: None,
            safety_backup: None,
            disk_free_bytes: None,
            disk_needed_bytes: 0,
            bytes_to_upload: 0,
            estimated_seconds: 0,
            warnings: Vec::new(),
            blockers: Vec::new(),
            manifest: backup.clone(),
            source,
            precheck_deferred: false,
            server_compares_checksum: false,
            topology: None,
        }
    }
}

/// `verify::audit` of the backup (reading every file for its checksum when `files`): damage
/// blocks the restore, warnings are passed on (compatibility is `plan_versions`').
fn plan_validation(
    plan: &mut Plan,
    settings: &Settings,
    policy: &Policy,
    progress: &dyn Progress,
    files: bool,
) -> Result<()> {
    progress.step("validating the backup");
    let validation = &settings.backup.validation;
    let depth = if files {
        verify::Depth::Checksums
    } else {
        verify::Depth::Structure
    };
    let options = verify::Options::new(depth, policy.clone())
        .warning_after(validation.version_warning_threshold);
    // Reading the whole backup blocks: off the async workers.
    let place = plan.source.place();
    let report = tokio::task::block_in_place(|| verify::audit_at(&place, &options, progress))?;
    let errors = report.damage();
    if !errors.is_empty() {
        plan.blockers
            .push(validation_failure(&plan.backup, &errors));
    }
    plan.warnings.extend(
        report
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Warning && f.check != Check::Compatibility)
            .map(|f| f.message.clone()),
    );
    Ok(())
}

/// `verify_before_restore` of a backup whose structure passed: beside the first upload when
/// the restore uploads a collection (`Precheck`: its snapshot is read once, the rest meanwhile),
/// or here, every file read for its checksum, when it restores none.
fn plan_precheck(plan: &mut Plan, progress: &dyn Progress) -> Result<()> {
    if plan.blocker().is_some() {
        return Ok(());
    }
    if plan.restored_collections().next().is_some() {
        plan.precheck_deferred = true;
        return Ok(());
    }
    if let Some(refusal) = audit_files(&plan.source.place(), progress)? {
        plan.blockers.push(refusal);
    }
    Ok(())
}

/// Every file of the backup at `place` (local or on S3) read for its checksum: the refusal,
/// when it is damaged.
pub(super) fn audit_files(place: &Place, progress: &dyn Progress) -> Result<Option<Failure>> {
    progress.step("checking the backup's files");
    // Damage only: compatibility is `plan_versions`', warnings the structure audit's.
    let options = verify::Options::new(verify::Depth::Checksums, Policy::default());
    let report = tokio::task::block_in_place(|| verify::audit_at(place, &options, progress))?;
    let errors = report.damage();
    Ok((!errors.is_empty()).then(|| validation_failure(&place.shown(), &errors)))
}

/// The refusal of a damaged backup, its `errors` listed (`verify::Report::damage`).
pub(super) fn validation_failure(backup: &Path, errors: &[String]) -> Failure {
    Failure {
        code: ExitCode::InvalidBackup,
        message: format!("Backup validation failed: {}\n{}", backup.display(), errors.join("\n")),
        hint: Some("restore another backup (`wqm backup list DIR`); `wqm backup validate PATH --check-files` shows every problem".to_string()),
    }
}

/// The backup's version against this one (`compat::decide` with the policy), and the migration
/// chain, run once, here, on the manifest: what the rest of the plan and the restore work from.
fn plan_versions(plan: &mut Plan, policy: &Policy) {
    let backup = plan.source.manifest.clone();
    let decision = migrations::decide(&backup.version, crate::VERSION, policy);
    plan.compatibility = compat::report(&backup.version, crate::VERSION, &decision).ok();
    match decision {
        Decision::Refuse(e) => {
            let hint = crate::exit::Classify::hint(&e);
            plan.block(crate::exit::Classify::exit_code(&e), e.to_string(), hint);
        }
        Decision::Proceed { notes, .. } => plan.warnings.extend(notes),
        Decision::Migrate => {}
    }
    if plan
        .blockers
        .iter()
        .any(|b| b.code == ExitCode::Incompatible)
    {
        return;
    }
    let chain = match migrations::for_backup(&backup, crate::VERSION) {
        Ok(chain) => chain,
        Err(e) => return plan.block(ExitCode::Incompatible, crate::exit::said(&e), None),
    };
    plan.migrations = chain
        .iter()
        .map(|m| MigrationStep {
            migration: m.label(),
            description: m.description.to_string(),
            warnings: (m.warnings)(&backup),
        })
        .collect();
    // A plain file of the backup, not a link (SQLite opens it by path).
    let legacy_state_db =
        crate::store::stat_in(&plan.backup, crate::format::layout::LEGACY_STATE_DB)
            .is_ok_and(|s| s.kind == crate::store::Kind::File)
            .then(|| plan.backup.join(crate::format::layout::LEGACY_STATE_DB));
    let mut migrated = WorkingCopy {
        manifest: backup,
        legacy_state_db,
    };
    match migrations::apply(&chain, &mut migrated) {
        Ok(()) => plan.manifest = migrated.manifest,
        Err(e) => plan.block(ExitCode::InvalidBackup, crate::exit::said(&e), None),
    }
}

/// The server restored into: its version against the snapshots', and its cluster (the nodes,
/// those that do not answer).
async fn plan_cluster(plan: &mut Plan, client: &Client, settings: &Settings) -> Result<()> {
    let server = client.server_info().await?;
    plan.server_compares_checksum = compares_checksum(&server.version);
    plan.topology = cluster::topology(client, settings).await?;
    if let Some(topology) = &plan.topology {
        plan.cluster = Some(ClusterPlan {
            nodes: topology.nodes.len(),
            down: topology.down.clone(),
        });
        if !topology.down.is_empty() {
            plan.warnings.push(format!(
                "nodes that do not answer: {}",
                topology.down.join(", ")
            ));
        }
    }
    if let Some(recorded) = &plan.manifest.qdrant_version {
        if minor_line(recorded) != minor_line(&server.version) {
            plan.warnings.push(format!(
                "the snapshots were made by Qdrant {recorded}; this server is {} (Qdrant supports restoring snapshots into the same minor version)",
                server.version
            ));
        }
    }
    Ok(())
}

/// A running daemon is stopped and started again when `backup.daemon.stop_command` says how;
/// without one it blocks the restore.
fn plan_daemon(plan: &mut Plan, settings: &Settings) {
    plan.daemon.running = daemon::running(&settings.backup.daemon, &settings.data_dir);
    let Some(reason) = &plan.daemon.running else {
        return;
    };
    if settings.backup.daemon.stop_command.is_some() {
        plan.daemon.will_stop_and_start = true;
    } else {
        let error = daemon::DaemonError::Running {
            reason: reason.clone(),
        };
        plan.block(
            ExitCode::Failure,
            error.to_string(),
            crate::exit::Classify::hint(&error),
        );
    }
}

/// Bytes to upload and a time estimate from them.
fn plan_time(plan: &mut Plan) {
    plan.bytes_to_upload = plan.restored_collections().map(|c| c.bytes).sum();
    plan.estimated_seconds = plan.bytes_to_upload / RESTORE_BYTES_PER_SECOND
        + 2 * plan.restored_collections().count() as u64
        + 1;
}

/// Restoring collections or aliases needs a key that may write (Qdrant's manage access): a
/// read-only key lists and downloads but gets 403 on upload, which would come after the safety
/// backup. An empty alias update needs the same access and changes nothing: the probe.
async fn plan_write_access(plan: &mut Plan, client: &Client) -> Result<()> {
    let writes = plan.restored_collections().next().is_some()
        || plan.aliases.iter().any(|a| a.action != AliasAction::Keep);
    if !writes {
        return Ok(());
    }
    match client.probe_write().await {
        Ok(()) => Ok(()),
        Err(QdrantError::Forbidden { message }) => {
            plan.block(
                ExitCode::Failure,
                format!(
                    "The API key cannot write to Qdrant at {}: {message}",
                    client.display_url()
                ),
                Some("a restore needs a key with write (manage) access: set QDRANT_API_KEY or `qdrant.api_key`; a read-only key can only list and download".to_string()),
            );
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// A Qdrant server's MAJOR.MINOR: Qdrant's versions are semver (wqm's own follow the Python
/// rules of `compat`).
/// Whether a Qdrant of `version` compares an upload with its `?checksum=` (1.8.0 and later);
/// not when its version cannot be read.
fn compares_checksum(version: &str) -> bool {
    semver::Version::parse(version).is_ok_and(|v| (v.major, v.minor) >= (1, 8))
}

fn minor_line(version: &str) -> Option<(u64, u64)> {
    semver::Version::parse(version)
        .ok()
        .map(|v| (v.major, v.minor))
}

fn plan_config(plan: &mut Plan, settings: &Settings, request: &Request) {
    plan.config.in_backup = config_entry(&plan.manifest).is_some();
    plan.config.target = settings.config_target.clone();
    plan.config.replace =
        request.with_config && plan.config.in_backup && plan.config.target.is_some();
    if request.with_config && !plan.config.in_backup {
        plan.warnings
            .push("--with-config: the backup holds no configuration file".to_string());
    }
    if plan.config.replace {
        let live = live_config(settings);
        let redactions = &plan.manifest.config_redacted;
        let missing = crate::secrets::missing_in_live(redactions, live.as_deref());
        plan.config.keeps_live = redactions
            .iter()
            .filter(|r| !missing.contains(r))
            .map(ToString::to_string)
            .collect();
        for redaction in missing {
            plan.warnings.push(format!(
                "the backup left out the secret {redaction} and the live config has none: it is written empty; set it in `{}`",
                settings.config_target.as_deref().unwrap_or(Path::new("-")).display()
            ));
        }
    }
}

/// The live config file's text, whose secrets a restored config keeps.
pub(super) fn live_config(settings: &Settings) -> Option<String> {
    fs::read_to_string(settings.config_target.as_ref()?).ok()
}

pub(super) fn config_entry(manifest: &Manifest) -> Option<&crate::format::manifest::FileEntry> {
    manifest.files.iter().find(|f| f.kind == FileKind::Config)
}

fn plan_safety_backup(plan: &mut Plan, settings: &Settings, on_s3: Option<&Remote>) {
    if !settings.backup.auto_backup_before_restore {
        plan.warnings
            .push("no safety backup: `backup.auto_backup_before_restore` is false".to_string());
        return;
    }
    let collections: Vec<String> = plan
        .collections
        .iter()
        // Qdrant cannot make a snapshot of a collection it cannot load (the plan warns of it).
        .filter(|c| c.action == CollectionAction::Overwrite && c.unreadable.is_none())
        .map(|c| c.name.clone())
        .collect();
    let databases: Vec<String> = plan
        .databases
        .iter()
        .filter(|d| d.action != DatabaseAction::Keep && d.live_exists)
        .map(|d| d.name.clone())
        .collect();
    let config = plan.config.replace && plan.config.target.as_ref().is_some_and(|t| t.is_file());
    if collections.is_empty() && databases.is_empty() && !config {
        return;
    }
    if !settings.backup.enabled {
        plan.block(
            ExitCode::Usage,
            "Backups are disabled: `backup.enabled` is false, and this restore needs a safety backup of what it replaces",
            Some("set `backup.enabled: true`, or `backup.auto_backup_before_restore: false` to restore without a safety backup".to_string()),
        );
        return;
    }
    let name = chrono::Local::now()
        .format(crate::prune::SAFETY_NAME)
        .to_string();
    // A local `backup.default_backup_directory` first, else beside the backup; for a backup on
    // S3, an S3 default directory, else its own repository (made locally, then sent there).
    let (path, remote) = match (
        settings.backup.local_backup_directory(),
        &plan.source.remote,
    ) {
        (Some(dir), _) => (unused_name(dir, &name), None),
        (None, None) => {
            let dir = plan.backup.parent().unwrap_or(Path::new("."));
            (unused_name(dir, &name), None)
        }
        (None, Some(backup)) => {
            let repository = on_s3.unwrap_or(&backup.repository).clone();
            (repository.shown(&name), Some((repository, name)))
        }
    };
    plan.safety_backup = Some(SafetyPlan {
        path,
        remote,
        collections,
        databases,
        config,
    });
}

/// A name in `dir` no file or directory has: `name`, else `name-1`, `name-2`, ...
fn unused_name(dir: &Path, name: &str) -> PathBuf {
    std::iter::once(dir.join(name))
        .chain((1..).map(|n| dir.join(format!("{name}-{n}"))))
        .find(|p| !p.exists())
        .expect("an unused name exists")
}

/// Local space: unpacked database copies beside the live ones, and the safety backup.
fn plan_disk(plan: &mut Plan, settings: &Settings) {
    let database_bytes: u64 = plan
        .databases
        .iter()
        .filter(|d| d.action != DatabaseAction::Keep)
        .map(|d| {
            let live = fs::metadata(&d.live).map_or(0, |m| m.len());
            d.unpacked_bytes
                + if d.action == DatabaseAction::Merge {
                    live
                } else {
                    0
                }
        })
        .sum();
    let safety_bytes: u64 = plan.safety_backup.as_ref().map_or(0, |s| {
        let collections: u64 = plan
            .collections
            .iter()
            .filter(|c| s.collections.contains(&c.name))
            .map(|c| c.bytes)
            .sum();
        let databases: u64 = plan
            .databases
            .iter()
            .filter(|d| s.databases.contains(&d.name))
            .map(|d| fs::metadata(&d.live).map_or(0, |m| m.len()))
            .sum();
        collections + databases
    });
    plan.disk_needed_bytes = database_bytes + safety_bytes;
    // The unpacked copies go beside the live state database (and `data_dir` may be elsewhere).
    let state_dir = settings.state_db.parent().unwrap_or(Path::new("."));
    let probe = existing_ancestor(state_dir);
    plan.disk_free_bytes = probe
        .as_deref()
        .and_then(|p| crate::fs::available_space(p).ok());
    if let Some(free) = plan.disk_free_bytes {
        if free < plan.disk_needed_bytes {
            plan.block(
                ExitCode::Failure,
                format!("Not enough disk space: the restore needs about {} bytes at `{}`, {free} are free", plan.disk_needed_bytes, state_dir.display()),
                Some("free disk space, or set `backup.default_backup_directory` to a disk with room for the safety backup".to_string()),
            );
        }
    }
}

fn existing_ancestor(path: &Path) -> Option<PathBuf> {
    path.ancestors().find(|p| p.exists()).map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qdrant_versions_are_compared_by_their_semver_minor_line() {
        assert_eq!(minor_line("1.18.3"), Some((1, 18)));
        assert_eq!(minor_line("1.18.0-rc.1"), minor_line("1.18.3"));
        assert_ne!(minor_line("1.17.9"), minor_line("1.18.3"));
        // Not semver: no line, so no warning either way.
        assert_eq!(minor_line("1.18"), None);
        assert_eq!(minor_line("0.3.0.dev1"), None);
    }

    #[test]
    fn qdrant_compares_an_uploads_checksum_from_1_8_on() {
        for version in ["1.8.0", "1.18.3", "1.19.0-rc.1", "2.0.0"] {
            assert!(compares_checksum(version), "{version}");
        }
        for version in ["1.7.4", "0.11.0", "1.18", "dev"] {
            assert!(!compares_checksum(version), "{version}");
        }
    }
}

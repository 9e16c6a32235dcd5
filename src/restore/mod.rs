//! Restoring a backup, plan first, then apply ("Restore, in order" of the design):
//! validate → plan → (confirm, at the edge) → safety backup → stop the daemon → collections →
//! databases → aliases → config → start the daemon → verify. Nothing is written before the
//! plan is confirmed; after the safety backup, a failure reports what was done and how to put
//! the safety backup back.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::backup;
use crate::checksum::{Algorithm, HashingReader};
use crate::cleanup::{self, Cleaned};
use crate::compat::{self, Decision, Policy};
use crate::config::{Settings, TransferSettings};
use crate::daemon;
use crate::exit::{ExitCode, Failure, Interrupted};
use crate::fs::CopyError;
use crate::manifest::{FileEntry, FileKind, Manifest};
use crate::migrations::{self, Migration, WorkingCopy};
use crate::names::{self, Database};
use crate::progress::{self, Progress};
use crate::qdrant::cluster;
use crate::qdrant::{Client, QdrantError, Scope};
use crate::sqlite;
use crate::store::BackupDir;
use crate::verify::{self, Check, Severity};
use crate::workdir::{Record, WorkDir};

/// Qdrant restored a 321 MB snapshot by upload in 6.4 s on a 2-core machine: plan with 50 MB/s.
const RESTORE_BYTES_PER_SECOND: u64 = 50_000_000;

/// What to restore, and how.
#[derive(Clone, Debug)]
pub struct Request {
    pub path: PathBuf,
    pub allow_downgrade: bool,
    pub overwrite: bool,
    pub with_config: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CollectionAction {
    Create,
    Overwrite,
    Conflict,
}

#[derive(Clone, Debug, Serialize)]
pub struct CollectionPlan {
    pub name: String,
    pub action: CollectionAction,
    pub points: u64,
    /// Bytes to upload (the uncompressed snapshot).
    pub bytes: u64,
    /// Shard snapshots to load (0: one collection snapshot).
    pub shards: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Qdrant lists the collection but cannot load it (its answer to reading it): a dirty
    /// shard after Qdrant died while recovering a snapshot, say. `--overwrite` replaces it; no
    /// safety backup can hold it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum AliasAction {
    Create,
    /// The alias exists and points at another collection.
    Repoint {
        from: String,
    },
    Keep,
}

#[derive(Clone, Debug, Serialize)]
pub struct AliasPlan {
    pub alias: String,
    pub collection: String,
    #[serde(flatten)]
    pub action: AliasAction,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DatabaseAction {
    Replace,
    Merge,
    Keep,
}

#[derive(Clone, Debug, Serialize)]
pub struct DatabasePlan {
    pub name: String,
    pub action: DatabaseAction,
    pub live: PathBuf,
    pub live_exists: bool,
    pub backup_schema: Option<i64>,
    pub live_schema: Option<i64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ConfigPlan {
    pub in_backup: bool,
    pub replace: bool,
    pub target: Option<PathBuf>,
    /// Secrets the backup left out (`qdrant.api_key`, …): the live file's values are kept.
    pub keeps_live: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DaemonPlan {
    /// Why we think the daemon runs; `None` when it does not.
    pub running: Option<String>,
    pub will_stop_and_start: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct ClusterPlan {
    pub nodes: usize,
    /// Configured nodes that do not answer.
    pub down: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SafetyPlan {
    pub path: PathBuf,
    pub collections: Vec<String>,
    /// The live databases the restore replaces or merges into (file names): exactly what the
    /// safety backup holds of them.
    pub databases: Vec<String>,
    pub config: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct MigrationStep {
    pub migration: String,
    pub description: String,
    pub warnings: Vec<String>,
}

/// Everything a restore would do, as `--dry-run` shows it.
#[derive(Debug, Serialize)]
pub struct Plan {
    pub backup: PathBuf,
    pub version: String,
    pub current_version: String,
    pub format: String,
    pub formatted_timestamp: String,
    pub partial: bool,
    pub compatibility: Option<compat::Report>,
    pub migrations: Vec<MigrationStep>,
    pub collections: Vec<CollectionPlan>,
    pub aliases: Vec<AliasPlan>,
    pub databases: Vec<DatabasePlan>,
    pub config: ConfigPlan,
    pub daemon: DaemonPlan,
    /// The Qdrant restored into is a cluster of this many reachable nodes.
    pub cluster: Option<ClusterPlan>,
    pub safety_backup: Option<SafetyPlan>,
    pub disk_free_bytes: Option<u64>,
    pub disk_needed_bytes: u64,
    pub bytes_to_upload: u64,
    pub estimated_seconds: u64,
    pub warnings: Vec<String>,
    /// Each reason the restore cannot go ahead, with the exit code it ends with.
    pub blockers: Vec<Failure>,
    #[serde(skip)]
    original: Manifest,
    /// Where every file of the backup is read from.
    #[serde(skip)]
    source: BackupDir,
    /// The manifest after the migrations (computed on the manifest alone).
    #[serde(skip)]
    manifest: Manifest,
    #[serde(skip)]
    chain: Vec<&'static Migration>,
    #[serde(skip)]
    topology: Option<cluster::Topology>,
}

impl Plan {
    /// The first problem that stops the restore.
    pub fn blocker(&self) -> Option<&Failure> {
        self.blockers.first()
    }

    fn block(&mut self, code: ExitCode, message: impl Into<String>, hint: Option<String>) {
        self.blockers.push(Failure {
            code,
            message: message.into(),
            hint,
        });
    }

    /// Collections the restore uploads.
    pub fn restored_collections(&self) -> impl Iterator<Item = &CollectionPlan> {
        self.collections
            .iter()
            .filter(|c| c.action != CollectionAction::Conflict)
    }

    /// Whether the restore changes anything at all.
    pub fn changes_anything(&self) -> bool {
        self.restored_collections().next().is_some()
            || self
                .databases
                .iter()
                .any(|d| d.action != DatabaseAction::Keep)
            || self.config.replace
    }
}

fn live_schema(path: &Path) -> Option<i64> {
    let conn = sqlite::open_read_only(path).ok()?;
    sqlite::schema_version(&conn).ok().flatten()
}

/// Validates the backup and works out everything the restore would do, reading only.
pub async fn plan(
    client: &Client,
    settings: &Settings,
    request: &Request,
    progress: &dyn Progress,
) -> Result<Plan> {
    let mut plan = Plan::new(BackupDir::open(&request.path)?);
    let policy = Policy::new(&settings.backup.validation, request.allow_downgrade);
    // 1. The backup: structure, manifest, files (and their checksums), versions.
    plan_validation(&mut plan, settings, &policy, progress)?;
    plan_versions(&mut plan, &policy);
    // 2. Qdrant: the server, what exists, what conflicts.
    progress.step(&format!("asking Qdrant at {}", client.display_url()));
    plan_cluster(&mut plan, client, settings).await?;
    let existing = client.list_collections().await?;
    let aliases = client.aliases().await?;
    plan_collections(&mut plan, client, &existing, request).await?;
    plan_aliases(&mut plan, &aliases);
    plan_write_access(&mut plan, client).await?;
    // 3. This machine: databases, config, the daemon, the safety backup, disk space, time.
    plan_databases(&mut plan, settings);
    plan_config(&mut plan, settings, request);
    plan_daemon(&mut plan, settings);
    plan_safety_backup(&mut plan, settings);
    plan_disk(&mut plan, settings);
    plan_time(&mut plan);
    Ok(plan)
}

impl Plan {
    /// A plan that does nothing yet, for the backup in `source`.
    fn new(source: BackupDir) -> Plan {
        let original = source.manifest.clone();
        Plan {
            backup: source.path.clone(),
            version: original.version.clone(),
            current_version: crate::VERSION.to_string(),
            format: original.format_name(),
            formatted_timestamp: original.formatted_timestamp(),
            partial: original.partial_backup,
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
            manifest: original.clone(),
            original,
            source,
            chain: Vec::new(),
            topology: None,
        }
    }
}

/// `verify::audit` of the backup (at checksum depth with `verify_before_restore`): damage blocks
/// the restore, warnings are passed on (compatibility is `plan_versions`').
fn plan_validation(
    plan: &mut Plan,
    settings: &Settings,
    policy: &Policy,
    progress: &dyn Progress,
) -> Result<()> {
    progress.step("validating the backup");
    let validation = &settings.backup.validation;
    let depth = if settings.backup.verification.verify_before_restore {
        verify::Depth::Checksums
    } else {
        verify::Depth::Structure
    };
    let options = verify::Options::new(depth, policy.clone())
        .warning_after(validation.version_warning_threshold);
    let report = verify::audit(&plan.backup, &options, progress)?;
    let errors = report.damage();
    if !errors.is_empty() {
        plan.block(
            ExitCode::InvalidBackup,
            format!("Backup validation failed: {}\n{}", plan.backup.display(), errors.join("\n")),
            Some("restore another backup (`wqm backup list DIR`); `wqm backup validate PATH --check-files` shows every problem".to_string()),
        );
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

/// The backup's version against this one (`compat::decide` with the policy), the migration
/// chain, and the chain applied to the manifest alone (the databases are migrated when unpacked).
fn plan_versions(plan: &mut Plan, policy: &Policy) {
    let decision = migrations::decide(&plan.original.version, crate::VERSION, policy);
    plan.compatibility = compat::report(&plan.original.version, crate::VERSION, &decision).ok();
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
        .all(|b| b.code != ExitCode::Incompatible)
    {
        match migrations::for_backup(&plan.original, crate::VERSION) {
            Ok(chain) => plan.chain = chain,
            Err(e) => plan.block(ExitCode::Incompatible, format!("{e:#}"), None),
        }
    }
    let mut migrated = WorkingCopy {
        manifest: plan.original.clone(),
        databases: BTreeMap::new(),
        backup_dir: plan.backup.clone(),
    };
    match migrations::apply(&plan.chain, &mut migrated) {
        Ok(()) => plan.manifest = migrated.manifest,
        Err(e) => plan.block(ExitCode::InvalidBackup, format!("{e:#}"), None),
    }
    plan.migrations = plan
        .chain
        .iter()
        .map(|m| MigrationStep {
            migration: m.label(),
            description: m.description.to_string(),
            warnings: (m.warnings)(&plan.original),
        })
        .collect();
}

/// The server restored into: its version against the snapshots', and its cluster (the nodes,
/// those that do not answer).
async fn plan_cluster(plan: &mut Plan, client: &Client, settings: &Settings) -> Result<()> {
    let server = client.server_info().await?;
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
fn minor_line(version: &str) -> Option<(u64, u64)> {
    semver::Version::parse(version)
        .ok()
        .map(|v| (v.major, v.minor))
}

/// The parts of a collection's parameters that Qdrant requires to match for a restore into it.
fn vector_config(params: &Value) -> Value {
    serde_json::json!({
        "vectors": params.get("vectors"),
        "sparse_vectors": params.get("sparse_vectors"),
        "shard_number": params.get("shard_number"),
    })
}

async fn plan_collections(
    plan: &mut Plan,
    client: &Client,
    existing: &[String],
    request: &Request,
) -> Result<()> {
    let mut conflicts = Vec::new();
    for (name, details) in &plan.manifest.collection_details {
        let bytes = details
            .snapshot_files()
            .iter()
            .filter_map(|f| plan.manifest.file(f))
            .map(|f| f.content_size)
            .sum();
        let mut entry = CollectionPlan {
            name: name.clone(),
            action: CollectionAction::Create,
            points: details.points_count,
            bytes,
            shards: details.shards.len(),
            reason: None,
            unreadable: None,
        };
        if custom_sharding(details) && plan.topology.is_none() {
            plan.warnings.push(format!(
                "`{name}` uses custom sharding, which a single Qdrant node cannot do: its {} shards are restored as automatic sharding (queries that name a shard key must drop it)",
                details.shards.len()
            ));
        }
        if existing.contains(name) {
            let live = match client.collection_info(name).await {
                Ok(live) => Some(live),
                // Listed, but Qdrant cannot load it: what it held cannot be read any more.
                Err(QdrantError::Server { status, message }) => {
                    let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
                    entry.unreadable = Some(format!("Qdrant cannot load it ({status}: {message})"));
                    None
                }
                Err(e) => return Err(e.into()),
            };
            if !request.overwrite {
                entry.action = CollectionAction::Conflict;
                let reason = match &entry.unreadable {
                    Some(unreadable) => format!("already exists, but {unreadable}"),
                    None => "already exists".to_string(),
                };
                conflicts.push(format!("Restore failed: Collection {name} {reason}"));
                entry.reason = Some(reason);
            } else if let Some(unreadable) = &entry.unreadable {
                entry.action = CollectionAction::Overwrite;
                entry.reason = Some(format!("{unreadable}: replaced by the backup's copy"));
                plan.warnings.push(format!("`{name}` exists but {unreadable}: the restore replaces it, and what it held can be in no safety backup (Qdrant cannot read it); if the backup's vector configuration differs from it, Qdrant refuses the upload"));
            } else if let Some(live) = live {
                match &details.params {
                    Some(params) if vector_config(params) != vector_config(&live.config.params) => {
                        entry.action = CollectionAction::Conflict;
                        entry.reason =
                            Some("exists with a different vector configuration".to_string());
                        conflicts.push(format!(
                            "Restore failed: Collection {name} exists with a different vector configuration (backup {}, server {})",
                            vector_config(params),
                            vector_config(&live.config.params)
                        ));
                    }
                    Some(_) => entry.action = CollectionAction::Overwrite,
                    None => {
                        entry.action = CollectionAction::Overwrite;
                        plan.warnings.push(format!("the backup does not record the vector configuration of `{name}`; Qdrant refuses the restore if it differs"));
                    }
                }
            }
        }
        plan.collections.push(entry);
    }
    if !conflicts.is_empty() {
        let hint = if request.overwrite {
            "delete those collections first, or restore into a Qdrant without them".to_string()
        } else {
            "--overwrite replaces existing collections (after a safety backup of them); or delete them first".to_string()
        };
        plan.block(ExitCode::Conflict, conflicts.join("\n"), Some(hint));
    }
    Ok(())
}

fn custom_sharding(details: &crate::manifest::CollectionDetails) -> bool {
    details.shards.iter().any(|s| s.key.is_some())
}

fn plan_aliases(plan: &mut Plan, existing: &[crate::qdrant::Alias]) {
    let restored: Vec<String> = plan
        .restored_collections()
        .map(|c| c.name.clone())
        .collect();
    for name in &restored {
        for alias in &plan.manifest.collection_details[name].aliases {
            let action = match existing.iter().find(|a| &a.alias_name == alias) {
                Some(a) if &a.collection_name == name => AliasAction::Keep,
                Some(a) => AliasAction::Repoint {
                    from: a.collection_name.clone(),
                },
                None => AliasAction::Create,
            };
            plan.aliases.push(AliasPlan {
                alias: alias.clone(),
                collection: name.clone(),
                action,
            });
        }
    }
}

fn plan_databases(plan: &mut Plan, settings: &Settings) {
    let check = settings.backup.validation.check_schema_compatibility;
    for database in plan.manifest.databases.clone() {
        // The live file comes from the settings; the manifest's name only picks which one.
        let live = match Database::parse(&database.name) {
            Ok(known) => known.live_path(&settings.state_db),
            Err(reason) => {
                plan.block(
                    ExitCode::InvalidBackup,
                    format!(
                        "the backup's database `{}` {reason}",
                        names::shown(&database.name)
                    ),
                    None,
                );
                continue;
            }
        };
        let live_exists = live.is_file();
        let live_schema = live_exists.then(|| live_schema(&live)).flatten();
        let schemas = (database.schema_version, live_schema);
        let (action, findings) =
            decide_database(plan.partial, &database.name, live_exists, check, schemas);
        for finding in findings {
            match finding {
                Finding::Warning(warning) => plan.warnings.push(warning),
                Finding::Blocker(failure) => plan.blockers.push(failure),
            }
        }
        if action == DatabaseAction::Merge && sqlite::has_unrestorable_rows(&live).unwrap_or(false)
        {
            plan.warnings.push(format!(
                "the live state database has a `{}` row: at its next start the daemon deletes and recreates the projects, libraries and images collections",
                sqlite::merge::NEVER_RESTORED
            ));
        }
        plan.databases.push(DatabasePlan {
            name: database.name.clone(),
            action,
            live,
            live_exists,
            backup_schema: database.schema_version,
            live_schema,
        });
    }
}

/// Something the plan of one database says beside its action.
#[derive(Debug)]
enum Finding {
    Warning(String),
    Blocker(Failure),
}

/// `plan_databases`' decision table, from its inputs alone: what the restore does with the
/// backup's database `name` (the backup partial or not, a live file or not), and what the schema
/// versions `(backup, live)` say about it when `check_schema` (`check_schema_compatibility`).
fn decide_database(
    partial: bool,
    name: &str,
    live_exists: bool,
    check_schema: bool,
    (backup, live): (Option<i64>, Option<i64>),
) -> (DatabaseAction, Vec<Finding>) {
    let mut findings = Vec::new();
    let action = match (partial, name, live_exists) {
        (true, "state.db", true) => DatabaseAction::Merge,
        (true, "state.db", false) => DatabaseAction::Replace,
        (true, _, _) => {
            findings.push(Finding::Warning(format!(
                "`{name}` is left as it is in a partial restore; the daemon reconciles it"
            )));
            DatabaseAction::Keep
        }
        (false, _, _) => DatabaseAction::Replace,
    };
    let (Some(backup), Some(current)) = (backup, live) else {
        return (action, findings);
    };
    if !check_schema || name != "state.db" {
        return (action, findings);
    }
    let incompatible = |message: String, hint: &str| {
        Finding::Blocker(Failure::new(ExitCode::Incompatible, message).with_hint(hint))
    };
    if action == DatabaseAction::Merge && backup != current {
        findings.push(incompatible(
            format!("A partial restore merges rows and needs the same state database schema: the backup has v{backup}, the live database v{current}"),
            "restore the full backup, or set `backup.validation.check_schema_compatibility: false` (unsafe)",
        ));
    } else if backup > current {
        findings.push(incompatible(
            format!("The backup's state database schema v{backup} is newer than the live one (v{current})"),
            "upgrade workspace-qdrant first, or set `backup.validation.check_schema_compatibility: false` (unsafe)",
        ));
    } else if backup < current {
        findings.push(Finding::Warning(format!("the backup's state database has schema v{backup}, older than the live v{current}; the daemon migrates it forward at its next start")));
    }
    (action, findings)
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
fn live_config(settings: &Settings) -> Option<String> {
    fs::read_to_string(settings.config_target.as_ref()?).ok()
}

fn config_entry(manifest: &Manifest) -> Option<&crate::manifest::FileEntry> {
    manifest.files.iter().find(|f| f.kind == FileKind::Config)
}

fn plan_safety_backup(plan: &mut Plan, settings: &Settings) {
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
    let dir = settings
        .backup
        .default_backup_directory
        .clone()
        .unwrap_or_else(|| plan.backup.parent().unwrap_or(Path::new(".")).to_path_buf());
    let name = chrono::Local::now()
        .format(crate::prune::SAFETY_NAME)
        .to_string();
    let path = std::iter::once(dir.join(&name))
        .chain((1..).map(|n| dir.join(format!("{name}-{n}"))))
        .find(|p| !p.exists())
        .expect("an unused name exists");
    plan.safety_backup = Some(SafetyPlan {
        path,
        collections,
        databases,
        config,
    });
}

/// Local space: unpacked database copies beside the live ones, and the safety backup.
fn plan_disk(plan: &mut Plan, settings: &Settings) {
    let database_bytes: u64 = plan
        .databases
        .iter()
        .filter(|d| d.action != DatabaseAction::Keep)
        .map(|d| {
            let unpacked = plan
                .manifest
                .file(
                    &plan
                        .manifest
                        .databases
                        .iter()
                        .find(|m| m.name == d.name)
                        .map(|m| m.file.clone())
                        .unwrap_or_default(),
                )
                .map_or(0, |f| f.content_size);
            let live = fs::metadata(&d.live).map_or(0, |m| m.len());
            unpacked
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

// ---- applying a plan -------------------------------------------------------------------------

/// What was done so far, for the report when a restore stops part-way.
#[derive(Debug, Default, Serialize)]
pub struct Journal {
    pub done: Vec<String>,
    pub safety_backup: Option<PathBuf>,
    /// Collections this restore created (a safety backup cannot hold them).
    pub created: Vec<String>,
    pub daemon_stopped: bool,
    /// Whether anything changed yet (or may have: an upload Qdrant got all of).
    pub changed: bool,
    /// The safety backup, removed because the restore stopped before changing anything.
    pub safety_backup_removed: Option<PathBuf>,
    /// Dead runs found and cleaned up first.
    pub cleaned: Vec<Cleaned>,
    /// Parts whose state the failure left unknown.
    pub uncertain: Vec<String>,
    /// Parts the failure stopped before they changed anything (an upload Qdrant did not get
    /// all of).
    pub unchanged: Vec<String>,
    /// Snapshots the safety backup could not delete from the server.
    pub leftovers: Vec<String>,
}

/// A restore that stopped after it began changing things.
#[derive(Debug)]
pub struct Stopped {
    pub error: anyhow::Error,
    pub journal: Journal,
}

/// One line of the verification table.
#[derive(Clone, Debug, Serialize)]
pub struct Verified {
    pub what: String,
    pub expected: String,
    pub actual: String,
    pub ok: bool,
}

#[derive(Debug, Serialize)]
pub struct Outcome {
    pub journal: Journal,
    pub verification: Vec<Verified>,
    pub seconds: f64,
    /// Where the time went, step by step.
    pub phases: Vec<backup::Phase>,
}

impl Outcome {
    pub fn verified(&self) -> bool {
        self.verification.iter().all(|v| v.ok)
    }
}

/// Applies a plan that has no blockers.
pub async fn execute(
    client: &Client,
    settings: &Settings,
    plan: &Plan,
    progress: &dyn Progress,
) -> Result<Outcome, Stopped> {
    let started = Instant::now();
    let mut journal = Journal::default();
    let mut phases = backup::Phases::start();
    let result = apply(client, settings, plan, progress, &mut journal, &mut phases).await;
    match result {
        Ok(verification) => Ok(Outcome {
            journal,
            verification,
            seconds: started.elapsed().as_secs_f64(),
            phases: phases.done,
        }),
        Err(error) => Err(Stopped { error, journal }),
    }
}

impl Journal {
    /// A step that changed the live system: reported, and recorded on disk before the next.
    fn done(&mut self, work: &WorkDir, text: String) -> Result<()> {
        work.record(&Record::Done { text: text.clone() })?;
        self.done.push(text);
        Ok(())
    }
}

/// The steps of a restore, in the order of "Restore, in order" (module doc).
async fn apply(
    client: &Client,
    settings: &Settings,
    plan: &Plan,
    progress: &dyn Progress,
    journal: &mut Journal,
    phases: &mut backup::Phases,
) -> Result<Vec<Verified>> {
    let work = open_work_dir(settings, plan, journal).await?;
    phases.end("cleanup");
    let mut run = Restoring {
        client,
        settings,
        plan,
        progress,
        work,
        journal,
    };
    // Unpacked before anything changes: a damaged database stops the restore here.
    let unpacked = unpack_databases(plan, run.work.path(), progress)?;
    phases.end("unpack databases");
    run.safety_backup().await?;
    phases.end("safety backup");
    let changed = run.change(&unpacked, phases).await;
    if changed.is_err() {
        run.remove_unneeded_safety_backup();
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
        phases: &mut backup::Phases,
    ) -> Result<BTreeMap<String, Vec<(u32, u32)>>> {
        self.stop_daemon()?;
        let replacements = self.merge_databases(unpacked)?;
        phases.end("stop daemon, merge databases");
        let shard_targets = self.restore_collections().await?;
        phases.end("collections");
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
        if self.journal.changed || !self.journal.uncertain.is_empty() {
            return;
        }
        let Some(path) = self.journal.safety_backup.clone() else {
            return;
        };
        let left_on_server = crate::workdir::read_journal(self.work.path())
            .map(|records| !crate::workdir::outstanding(&records).is_empty())
            .unwrap_or(true);
        if left_on_server {
            return;
        }
        let doomed = crate::layout::sibling(&path, crate::prune::DELETING_SUFFIX);
        if fs::rename(&path, &doomed).is_err() {
            return;
        }
        // Half removed, it is hidden; the next prune finishes it.
        let _ = fs::remove_dir_all(&doomed);
        let done = format!("safety backup: {}", path.display());
        self.journal.done.retain(|d| *d != done);
        self.journal.safety_backup = None;
        self.journal.safety_backup_removed = Some(path);
    }
}

/// Makes the restore's working directory beside the state database (`.wqm-restore`: lock,
/// journal), after cleaning up what dead restores left there.
async fn open_work_dir(settings: &Settings, plan: &Plan, journal: &mut Journal) -> Result<WorkDir> {
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
        journal.cleaned.push(cleaned);
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

/// A restore under way: what it restores with, its working directory and its journal.
struct Restoring<'a> {
    client: &'a Client,
    settings: &'a Settings,
    plan: &'a Plan,
    progress: &'a dyn Progress,
    work: WorkDir,
    journal: &'a mut Journal,
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
        let request = backup::Request {
            target: safety.path.clone(),
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
            // Incremental where the backups beside it are.
            incremental: crate::store::chunks::ChunkStore::exists_in(crate::fs::parent_dir(
                &safety.path,
            )),
        };
        let outcome =
            match backup::create(self.client, self.settings, &request, self.progress).await {
                Ok(outcome) => outcome,
                Err(e) => {
                    let staging = crate::layout::staging_path(&safety.path);
                    let left = cleanup::left_on_server(&staging, self.settings);
                    self.journal.leftovers.extend(left);
                    return Err(e.context("the safety backup failed; nothing was changed"));
                }
            };
        self.journal.cleaned.extend(outcome.cleaned);
        self.journal.leftovers.extend(outcome.leftovers);
        self.work.record(&Record::SafetyBackup {
            path: safety.path.clone(),
        })?;
        self.journal.safety_backup = Some(safety.path.clone());
        self.journal
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
        self.work.record(&Record::DaemonStopped { stopped: true })?;
        daemon::stop(&self.settings.backup.daemon, &self.settings.data_dir)?;
        self.journal.daemon_stopped = true;
        self.journal
            .done(&self.work, "daemon stopped".to_string())?;
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
    /// `backup.transfer.parallel` allows (`backup::Lanes`: one upload being sent per node, the
    /// next one sent while Qdrant recovers the previous). A failure stops the uploads not yet
    /// all sent. Returns, per collection stored by shards, where each shard went (see
    /// `restore_shards`).
    async fn restore_collections(&mut self) -> Result<BTreeMap<String, Vec<(u32, u32)>>> {
        let (client, plan, progress) = (self.client, self.plan, self.progress);
        let transfer = &self.settings.backup.transfer;
        progress::check_interrupted()?;
        let collections: Vec<&CollectionPlan> = plan.restored_collections().collect();
        let lanes = backup::Lanes::new(transfer.parallel.get());
        let uploads = Uploads {
            client,
            plan,
            transfer,
            work: &self.work,
            progress,
            lanes: &lanes,
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
                    self.journal.changed = true;
                    shard_targets.extend(targets.map(|t| (name.clone(), t)));
                    if collection.action == CollectionAction::Create {
                        self.journal.created.push(name.clone());
                    }
                    // Recorded on disk when it was done; reported in the plan's order.
                    self.journal
                        .done
                        .push(format!("collection `{name}` restored"));
                }
                Err(e) if e.is::<backup::Stopped>() || (!began && failure.is_some()) => {}
                Err(e) => {
                    if began {
                        // Qdrant may have swapped the collection in and then failed to answer (or died).
                        self.journal.changed = true;
                        self.journal.uncertain.push(format!(
                            "collection `{name}`: Qdrant may have restored it before the failure; check it, or rerun the restore with --overwrite"
                        ));
                    } else {
                        self.journal.unchanged.push(format!(
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
            self.journal.changed = true;
            sqlite::replace_live(replacement, &database.live)
                .with_context(|| format!("cannot replace `{}`", database.live.display()))?;
            let how = if database.action == DatabaseAction::Merge {
                "merged"
            } else {
                "replaced"
            };
            self.journal
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
            self.journal.done(
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
        let bytes = plan
            .source
            .read_small_content(entry, crate::manifest::MAX_MANIFEST_BYTES)
            .map_err(|e| damaged(&entry.path, format!("cannot read: {e}")))?;
        let digests = crate::checksum::digest(&bytes, &[Algorithm::Sha256]);
        verify::content_matches(entry, &digests).map_err(|p| damaged(&entry.path, p))?;
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
        self.journal.changed = true;
        crate::fs::write_atomic(target, text.as_bytes())
            .with_context(|| format!("cannot write `{}`", target.display()))?;
        self.journal.done(
            &self.work,
            format!("config `{}` replaced", target.display()),
        )?;
        Ok(())
    }

    /// Starts the daemon this restore stopped.
    fn start_daemon(&mut self) -> Result<()> {
        if !self.journal.daemon_stopped {
            return Ok(());
        }
        crate::failpoint::hit("restore:before-daemon-start")?;
        self.progress.step("starting the daemon");
        daemon::start(&self.settings.backup.daemon)?;
        self.work
            .record(&Record::DaemonStopped { stopped: false })?;
        self.journal.daemon_stopped = false;
        self.journal
            .done(&self.work, "daemon started".to_string())?;
        Ok(())
    }
}

/// Unpacks each database the restore needs into `dir`, the restore's working directory. An
/// *unpacked* database is the backup's copy decompressed there (checked against the manifest),
/// migrated, stripped of the rows a restore never brings back and integrity-checked: what
/// replaces, or merges into, the live one. (`migrations::WorkingCopy` holds the same copies while the
/// migrations run.)
fn unpack_databases(
    plan: &Plan,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<BTreeMap<String, PathBuf>> {
    let mut unpacked = BTreeMap::new();
    let wanted: Vec<&str> = plan
        .databases
        .iter()
        .filter(|d| d.action != DatabaseAction::Keep)
        .map(|d| d.name.as_str())
        .collect();
    for (database, entry) in database_sources(&plan.original) {
        let name = database.file_name();
        if !wanted.contains(&name) {
            continue;
        }
        progress::check_interrupted()?;
        progress.step(&format!("unpacking `{name}`"));
        // The copy's name is the known database's, never one from the manifest.
        let copy = dir.join(name);
        unpack_database(&plan.source, entry, &copy)?;
        unpacked.insert(name.to_string(), copy);
    }
    let mut migrated = WorkingCopy {
        manifest: plan.original.clone(),
        databases: unpacked,
        backup_dir: plan.backup.clone(),
    };
    migrations::apply(&plan.chain, &mut migrated)?;
    for path in migrated.databases.values() {
        let conn = rusqlite::Connection::open(path)?;
        sqlite::remove_unrestorable_rows(&conn)?;
        let problems = sqlite::integrity_problems(&conn)?;
        if !problems.is_empty() {
            return Err(damaged(
                &path.display().to_string(),
                format!(
                    "its unpacked copy fails PRAGMA integrity_check: {}",
                    problems.join("; ")
                ),
            ));
        }
    }
    Ok(migrated.databases)
}

/// A legacy backup's plain copy of the state database.
const LEGACY_STATE_DB: &str = "sqlite/state.db";

/// Decompresses one stored database into `copy`, checking its content against the manifest
/// as it goes (what `validate --check-files` checks, in the same pass).
fn unpack_database(source: &BackupDir, entry: Option<&FileEntry>, copy: &Path) -> Result<()> {
    let rel = entry.map_or(LEGACY_STATE_DB, |e| e.path.as_str());
    let decoder: Box<dyn Read> = match entry {
        Some(entry) => source.open_content(entry).map(|r| r as Box<dyn Read>),
        None => source
            .open_file(LEGACY_STATE_DB)
            .map(|f| Box::new(BufReader::new(f)) as Box<dyn Read>),
    }
    .map_err(|e| damaged(rel, format!("cannot read: {e}")))?;
    let mut content = HashingReader::new(decoder, &[Algorithm::Sha256]);
    let mut out = crate::fs::create_private_file(copy)
        .with_context(|| format!("cannot write `{}`", copy.display()))?;
    crate::fs::copy_apart(&mut content, &mut out).map_err(|e| match e {
        CopyError::Read(e) => damaged(rel, format!("cannot decompress: {e}")),
        CopyError::Write(e) => {
            anyhow::Error::from(e).context(format!("cannot write `{}`", copy.display()))
        }
    })?;
    out.sync_all()
        .with_context(|| format!("cannot write `{}`", copy.display()))?;
    let digests = content
        .finish()
        .map_err(|e| damaged(rel, format!("cannot decompress: {e}")))?;
    if let Some(entry) = entry {
        verify::content_matches(entry, &digests).map_err(|problem| damaged(rel, problem))?;
    }
    Ok(())
}

/// A file of the backup that turned out damaged or unsafe while it was read: exit 3.
fn damaged(rel: &str, problem: impl std::fmt::Display) -> anyhow::Error {
    Failure::new(
        ExitCode::InvalidBackup,
        format!("the backup's `{}` is damaged: {problem}", names::shown(rel)),
    )
    .with_hint("restore another backup (`wqm backup list DIR`); `wqm backup validate PATH --check-files` shows every problem")
    .into()
}

/// What the uploads of a restore share: where they go, what from, and how they are paced.
struct Uploads<'a> {
    client: &'a Client,
    plan: &'a Plan,
    transfer: &'a TransferSettings,
    work: &'a WorkDir,
    progress: &'a dyn Progress,
    lanes: &'a backup::Lanes,
}

impl Uploads<'_> {
    /// One collection: its snapshot uploaded, or its shards (`restore_shards`). `began` says
    /// whether it got as far as Qdrant may have changed anything (an upload Qdrant got all of,
    /// a collection created). Returns where its shards went.
    async fn restore_collection(
        &self,
        collection: &CollectionPlan,
        began: &Cell<bool>,
    ) -> Result<Option<Vec<(u32, u32)>>> {
        let name = collection.name.as_str();
        let details = &self.plan.manifest.collection_details[name];
        if !details.shards.is_empty() {
            return self.restore_shards(collection, began).await.map(Some);
        }
        let entry = self
            .plan
            .manifest
            .file(&details.snapshot)
            .ok_or_else(|| anyhow!("no file for `{name}`"))?;
        let mut turn = self.lanes.turn(self.client).await?;
        self.progress
            .step(&format!("restoring collection `{name}`"));
        self.upload(
            self.client,
            entry,
            Scope::Collection(name),
            &mut turn,
            began,
        )
        .await?;
        Ok(None)
    }

    /// Restores a collection stored by shards: creates it (with its shard keys and payload
    /// indexes) unless it exists, loads each shard snapshot into a node holding a replica of
    /// that shard (shards on different nodes side by side, one at a time per node), and in a
    /// cluster waits until every replica is active. Returns, for each shard of the backup, the
    /// id of the shard it went into.
    async fn restore_shards(
        &self,
        collection: &CollectionPlan,
        began: &Cell<bool>,
    ) -> Result<Vec<(u32, u32)>> {
        let (client, plan) = (self.client, self.plan);
        let name = collection.name.as_str();
        let details = &plan.manifest.collection_details[name];
        let topology = plan.topology.as_ref();
        let custom = custom_sharding(details);
        began.set(true);
        self.progress
            .step(&format!("restoring collection `{name}` by shards"));
        if collection.action == CollectionAction::Create {
            recreate_collection(client, name, details, custom && topology.is_some()).await?;
        }
        let live = cluster::shards(client, name).await?;
        let targets: Vec<u32> = if custom && topology.is_some() {
            details
                .shards
                .iter()
                .map(|s| {
                    live.iter()
                        .find(|l| l.key == s.key)
                        .map(|l| l.id)
                        .ok_or_else(|| anyhow!("`{name}` has no shard for key {:?}", s.key))
                })
                .collect::<Result<_>>()?
        } else if custom {
            // A single node cannot shard by key: the shards become automatic shards 0..n.
            (0..details.shards.len() as u32).collect()
        } else {
            details.shards.iter().map(|s| s.id).collect()
        };
        let live = &live;
        let jobs = details.shards.iter().zip(&targets).map(|(shard, &target)| {
            self.lanes.run(async move {
                let node = node_holding(client, topology, live, name, target)?;
                let entry = plan
                    .manifest
                    .file(&shard.snapshot)
                    .ok_or_else(|| anyhow!("no file for shard {} of `{name}`", shard.id))?;
                let mut turn = self.lanes.turn(node).await?;
                self.upload(node, entry, Scope::Shard(name, target), &mut turn, began)
                    .await
            })
        });
        backup::first_failure(futures_util::future::join_all(jobs).await)?;
        if topology.is_some() {
            self.progress.step(&format!(
                "waiting for every replica of `{name}` to be active"
            ));
            let timeout = Duration::from_secs(self.transfer.operation_timeout);
            wait_until_active(client, name, timeout).await?;
        }
        Ok(details.shards.iter().map(|s| s.id).zip(targets).collect())
    }
}

/// Creates collection `name` as the backup recorded it (`create_request`), with its shard keys
/// when it is sharded by key in a cluster (`by_key`), and its payload indexes.
async fn recreate_collection(
    client: &Client,
    name: &str,
    details: &crate::manifest::CollectionDetails,
    by_key: bool,
) -> Result<()> {
    let config = details
        .config
        .as_ref()
        .ok_or_else(|| anyhow!("the backup does not record the configuration of `{name}`"))?;
    client
        .create_collection(name, &create_request(config, details.shards.len(), by_key))
        .await?;
    if by_key {
        let mut keys: Vec<&Value> = Vec::new();
        for key in details.shards.iter().filter_map(|s| s.key.as_ref()) {
            if !keys.contains(&key) {
                client.create_shard_key(name, key).await?;
                keys.push(key);
            }
        }
    }
    if let Some(Value::Object(schema)) = &details.payload_schema {
        for (field, index) in schema {
            client
                .create_payload_index(name, field, &index_schema(index))
                .await?;
        }
    }
    Ok(())
}

/// The node to load shard `id` into: one holding a replica of it (the only node when single).
fn node_holding<'a>(
    client: &'a Client,
    topology: Option<&'a cluster::Topology>,
    live: &[cluster::Shard],
    name: &str,
    id: u32,
) -> Result<&'a Client> {
    let Some(topology) = topology else {
        return Ok(client);
    };
    live.iter()
        .find(|s| s.id == id)
        .and_then(|s| s.held_by(topology))
        .and_then(|peer| topology.node(peer))
        .ok_or_else(|| {
            cluster::ClusterError::NoReplicaToRestore {
                collection: name.to_string(),
                shard: id,
            }
            .into()
        })
}

/// The create-collection request that re-creates a collection from its recorded configuration.
fn create_request(config: &Value, shards: usize, custom_sharding: bool) -> Value {
    let params = &config["params"];
    let mut request = serde_json::Map::new();
    let present = |v: &&Value| !v.is_null();
    for key in [
        "vectors",
        "sparse_vectors",
        "shard_number",
        "replication_factor",
        "write_consistency_factor",
        "on_disk_payload",
    ] {
        if let Some(value) = params.get(key).filter(present) {
            request.insert(key.to_string(), value.clone());
        }
    }
    if custom_sharding {
        request.insert("sharding_method".to_string(), Value::from("custom"));
    } else if params.get("sharding_method").and_then(Value::as_str) == Some("custom") {
        request.insert("shard_number".to_string(), Value::from(shards));
    }
    for (reported, accepted) in [
        ("hnsw_config", "hnsw_config"),
        ("optimizer_config", "optimizers_config"),
        ("wal_config", "wal_config"),
        ("quantization_config", "quantization_config"),
    ] {
        if let Some(value) = config.get(reported).filter(present) {
            request.insert(accepted.to_string(), value.clone());
        }
    }
    Value::Object(request)
}

/// A payload index as `payload_schema` reports it (`{"data_type": "keyword", "params": …}`), as
/// the create-index request takes it.
fn index_schema(reported: &Value) -> Value {
    let data_type = reported.get("data_type").cloned().unwrap_or(Value::Null);
    match reported.get("params") {
        Some(Value::Object(params)) => {
            let mut schema = params.clone();
            schema.insert("type".to_string(), data_type);
            Value::Object(schema)
        }
        _ => data_type,
    }
}

/// Waits until every replica of every shard of `name` is active and no transfer runs.
async fn wait_until_active(client: &Client, name: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        progress::check_interrupted()?;
        let view = client.collection_cluster(name).await?;
        let settled = view.shard_transfers.is_empty()
            && view.local_shards.iter().all(|s| s.state == "Active")
            && view.remote_shards.iter().all(|s| s.state == "Active");
        if settled {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "the replicas of `{name}` did not all become active within {} s",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Each database the backup holds and its stored file (`None`: a legacy backup's plain
/// `sqlite/state.db`, unpacked when the restore wants it and it is there).
fn database_sources(manifest: &Manifest) -> Vec<(Database, Option<&FileEntry>)> {
    if manifest.is_legacy() {
        return vec![(Database::State, None)];
    }
    manifest
        .databases
        .iter()
        .filter_map(|d| {
            Some((
                Database::parse(&d.name).ok()?,
                Some(manifest.file(&d.file)?),
            ))
        })
        .collect()
}

impl Uploads<'_> {
    /// Uploads a collection snapshot streamed from disk (decompressed on the fly, constant
    /// memory) to `client`'s node in its turn (released once all is sent, so the node may take
    /// the next while it recovers this one), then deletes the uploaded copy Qdrant keeps. The
    /// stream passes `validate --check-files`' checks on its way (`Inspected`): a damaged or
    /// hostile snapshot fails the upload with exit 3 before Qdrant has received all of it. Another
    /// upload's failure stops this one while it is still being sent.
    async fn upload(
        &self,
        client: &Client,
        entry: &FileEntry,
        scope: Scope<'_>,
        turn: &mut backup::Turn<'_>,
        received: &Cell<bool>,
    ) -> Result<()> {
        upload(
            client,
            &self.plan.source,
            entry,
            scope,
            self.transfer,
            self.work,
            self.progress,
            (turn, self.lanes, received),
        )
        .await
    }
}

/// `Uploads::upload`; sets `received` once all of the snapshot was handed to Qdrant.
#[allow(clippy::too_many_arguments)]
async fn upload(
    client: &Client,
    source: &BackupDir,
    entry: &FileEntry,
    scope: Scope<'_>,
    transfer: &TransferSettings,
    work: &WorkDir,
    progress: &dyn Progress,
    (turn, lanes, received): (&mut backup::Turn<'_>, &backup::Lanes, &Cell<bool>),
) -> Result<()> {
    let content = source
        .open_content(entry)
        .map_err(|e| damaged(&entry.path, format!("cannot read: {e}")))?;
    // The download's bridge (`backup::ChannelSink`) advances `progress` as each chunk passes on
    // the async side. Here the bytes pass only through the blocking reader thread and the body
    // stream reqwest owns, both `'static`, so neither can borrow `&dyn Progress`: they count into
    // `sent`, which this task reports every 100 ms. One scheme for both would need an owned
    // (`Arc`) progress throughout; memory is bounded by the channel either way.
    let sent = Arc::new(AtomicU64::new(0));
    let (sender, mut receiver) = mpsc::channel::<io::Result<Bytes>>(8);
    let stream = Inspected {
        entry: entry.clone(),
        sender,
        sent: sent.clone(),
    };
    let reader = tokio::task::spawn_blocking(move || stream.run(content));
    let body = futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx));
    let file_name = upload_name(scope);
    let place = backup::place_of(client, scope);
    work.record(&Record::UploadStarted {
        place: place.clone(),
        name: file_name.clone(),
    })?;
    crate::failpoint::hit("restore:uploading")?;
    let bar = progress.begin_transfer(&scope.to_string(), Some(entry.content_size));
    let mut uploading = Box::pin(client.upload_snapshot(
        scope,
        &file_name,
        body,
        entry.content_size,
        transfer.checksum.then_some(entry.content_sha256.as_str()),
    ));
    let mut reported = 0;
    let result = loop {
        let all_sent = sent.load(Ordering::Relaxed) == entry.content_size;
        tokio::select! {
            result = &mut uploading => break result.map_err(anyhow::Error::from),
            _ = progress::interrupted() => break Err(Interrupted.into()),
            // Once all is sent Qdrant recovers it: that is waited for, whatever else failed.
            () = lanes.until_stopped(), if !all_sent => break Err(backup::Stopped.into()),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                let now = sent.load(Ordering::Relaxed);
                progress.advance_transfer(bar, now - reported);
                reported = now;
                if reported == entry.content_size {
                    turn.release_node();
                }
            }
        }
    };
    progress.end_transfer(bar);
    // Dropping the request drops the body: a reader still sending stops at once.
    drop(uploading);
    // Qdrant never recovers a snapshot it did not get all of (the last piece waits for the
    // checks), so an upload that ended short of it changed nothing.
    if sent.load(Ordering::Relaxed) == entry.content_size {
        received.set(true);
    }
    let checked = reader.await;
    let result = match checked {
        Ok(Err(Problem::Damaged(problem))) => Err(damaged(&entry.path, problem)),
        Err(e) if result.is_ok() => Err(anyhow!("reading `{}` failed: {e}", entry.path)),
        _ => result,
    };
    crate::failpoint::hit("restore:uploaded")?;
    // Qdrant keeps an uploaded collection snapshot among the collection's snapshots: delete it.
    match client.delete_snapshot(scope, &file_name).await {
        Ok(()) | Err(QdrantError::NotFound { .. }) => {
            work.record(&Record::UploadDeleted {
                place,
                name: file_name.clone(),
            })?;
        }
        Err(e) if result.is_ok() => {
            return Err(anyhow::Error::from(e)
                .context(format!("cannot delete the uploaded snapshot `{file_name}`")))
        }
        Err(_) => {}
    }
    result
}

/// The name an upload of `scope` gets on the server: built from a checked collection name and
/// numbers only.
fn upload_name(scope: Scope<'_>) -> String {
    match scope {
        Scope::Collection(c) => format!("wqm-restore-{c}-{}.snapshot", std::process::id()),
        Scope::Shard(c, id) => {
            format!("wqm-restore-{c}-shard-{id}-{}.snapshot", std::process::id())
        }
    }
}

/// How much decompressed snapshot is sent at a time; the last piece waits for the check.
const UPLOAD_CHUNK: usize = 256 * 1024;

/// Why reading a snapshot for an upload stopped.
enum Problem {
    /// The backup's file is damaged or unsafe (exit 3).
    Damaged(String),
    /// The upload ended first (it failed or was interrupted); its own error is reported.
    Stopped,
}

/// A stored snapshot on its way to Qdrant, read once: decompressed, checked as `validate
/// --check-files` checks it (`snapshot::inspect`: tar structure, member paths and types, nested
/// segments, sizes), hashed and counted against the manifest — and sent on as it is read.
struct Inspected {
    entry: FileEntry,
    sender: mpsc::Sender<io::Result<Bytes>>,
    sent: Arc<AtomicU64>,
}

impl Inspected {
    fn run(self, content: Box<dyn Read + Send>) -> Result<(), Problem> {
        let sender = self.sender.clone();
        let outcome = self.check_and_send(content);
        if let Err(Problem::Damaged(problem)) = &outcome {
            // An error in the body aborts the request: Qdrant never gets a complete stream.
            let _ = sender.blocking_send(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                problem.clone(),
            )));
        }
        outcome
    }

    fn check_and_send(self, content: Box<dyn Read + Send>) -> Result<(), Problem> {
        let mut tee = Tee {
            inner: BufReader::with_capacity(UPLOAD_CHUNK, content),
            sender: self.sender,
            sent: self.sent,
            pending: Vec::with_capacity(UPLOAD_CHUNK),
            content: crate::checksum::Digester::new(&[Algorithm::Sha256]),
            limit: self.entry.content_size,
            failed: None,
        };
        let inspected = match self.entry.kind {
            FileKind::ShardSnapshot => crate::snapshot::inspect_shard(&mut tee).map(drop),
            _ => crate::snapshot::inspect(&mut tee).map(drop),
        };
        let drained = inspected
            .as_ref()
            .ok()
            .map(|()| io::copy(&mut tee, &mut io::sink()));
        if let Some(failed) = tee.failed.take() {
            return Err(failed);
        }
        if let Err(e) = inspected {
            return Err(Problem::Damaged(format!(
                "not a valid Qdrant snapshot: {e}"
            )));
        }
        if let Some(Err(e)) = drained {
            return Err(Problem::Damaged(format!("cannot decompress: {e}")));
        }
        let digests = tee.content.finish();
        verify::content_matches(&self.entry, &digests).map_err(Problem::Damaged)?;
        let last = std::mem::take(&mut tee.pending);
        tee.sent.fetch_add(last.len() as u64, Ordering::Relaxed);
        tee.sender
            .blocking_send(Ok(Bytes::from(last)))
            .map_err(|_| Problem::Stopped)
    }
}

/// Passes what it reads on to the upload, a chunk at a time, keeping the latest back.
struct Tee<R> {
    inner: R,
    sender: mpsc::Sender<io::Result<Bytes>>,
    sent: Arc<AtomicU64>,
    pending: Vec<u8>,
    content: crate::checksum::Digester,
    /// The manifest's `content_size`: no more is sent.
    limit: u64,
    /// Why reading stopped, when it was not the archive's fault.
    failed: Option<Problem>,
}

impl<R: Read> Tee<R> {
    fn fail(&mut self, problem: Problem) -> io::Error {
        let message = match &problem {
            Problem::Damaged(m) => m.clone(),
            Problem::Stopped => "the upload stopped".to_string(),
        };
        self.failed.get_or_insert(problem);
        io::Error::other(message)
    }
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => return Err(self.fail(Problem::Damaged(format!("cannot decompress: {e}")))),
        };
        self.content.update(&buf[..n]);
        if self.content.bytes() > self.limit {
            let problem = format!(
                "the content is longer than the manifest's {} bytes",
                self.limit
            );
            return Err(self.fail(Problem::Damaged(problem)));
        }
        self.pending.extend_from_slice(&buf[..n]);
        if self.pending.len() >= 2 * UPLOAD_CHUNK {
            let rest = self.pending.split_off(UPLOAD_CHUNK);
            let chunk = std::mem::replace(&mut self.pending, rest);
            self.sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            if self.sender.blocking_send(Ok(Bytes::from(chunk))).is_err() {
                return Err(self.fail(Problem::Stopped));
            }
        }
        Ok(n)
    }
}

/// Every restored collection exists with the manifest's exact point count and is not red;
/// every alias is there; each replaced database passes `PRAGMA integrity_check`.
async fn verify_restore(
    client: &Client,
    plan: &Plan,
    shard_targets: &BTreeMap<String, Vec<(u32, u32)>>,
) -> Result<Vec<Verified>> {
    let mut rows = Vec::new();
    for collection in plan.restored_collections() {
        let targets = shard_targets.get(&collection.name);
        rows.extend(verify_collection(client, plan, &collection.name, targets).await?);
    }
    rows.extend(verify_aliases(client, plan).await?);
    rows.extend(verify_databases(plan));
    Ok(rows)
}

/// Collection `name` (and, when it was restored by shards to `targets`, each shard): its exact
/// point count within what the backup recorded, and not red.
async fn verify_collection(
    client: &Client,
    plan: &Plan,
    name: &str,
    targets: Option<&Vec<(u32, u32)>>,
) -> Result<Vec<Verified>> {
    let mut rows = Vec::new();
    let details = &plan.manifest.collection_details[name];
    let after = details.points_count_after.unwrap_or(details.points_count);
    let low = details.points_count.min(after);
    let high = details.points_count.max(after);
    let expected = if low == high {
        format!("{low} points")
    } else {
        format!("{low}..={high} points")
    };
    match client.collection_info(name).await {
        Ok(info) => {
            let count = client.exact_count(Scope::Collection(name)).await?;
            rows.push(Verified {
                what: format!("collection `{name}`"),
                expected: format!("{expected}, not red"),
                actual: format!("{count} points, {}", info.status),
                ok: (low..=high).contains(&count) && info.status != "red",
            });
        }
        Err(QdrantError::NotFound { .. }) => rows.push(Verified {
            what: format!("collection `{name}`"),
            expected,
            actual: "missing".to_string(),
            ok: false,
        }),
        Err(e) => return Err(e.into()),
    }
    // Shard by shard, unless points changed while the backup was taken.
    let Some(targets) = targets.filter(|_| details.points_count_after.is_none()) else {
        return Ok(rows);
    };
    let live = cluster::shards(client, name).await?;
    for (shard, (_, target)) in details.shards.iter().zip(targets) {
        let node = node_holding(client, plan.topology.as_ref(), &live, name, *target)?;
        let count = node.exact_count(Scope::Shard(name, *target)).await?;
        rows.push(Verified {
            what: format!("shard {target} of `{name}`"),
            expected: format!("{} points", shard.points_count),
            actual: format!("{count} points"),
            ok: count == shard.points_count,
        });
    }
    Ok(rows)
}

/// Each alias of the plan points at its collection.
async fn verify_aliases(client: &Client, plan: &Plan) -> Result<Vec<Verified>> {
    let aliases = client.aliases().await?;
    Ok(plan
        .aliases
        .iter()
        .map(|alias| {
            let actual = aliases
                .iter()
                .find(|a| a.alias_name == alias.alias)
                .map(|a| a.collection_name.clone());
            Verified {
                what: format!("alias `{}`", alias.alias),
                expected: format!("→ {}", alias.collection),
                actual: actual
                    .clone()
                    .map_or("missing".to_string(), |c| format!("→ {c}")),
                ok: actual.as_deref() == Some(alias.collection.as_str()),
            }
        })
        .collect())
}

/// Each database the restore replaced or merged into passes `PRAGMA integrity_check` and
/// `foreign_key_check`.
fn verify_databases(plan: &Plan) -> Vec<Verified> {
    plan.databases
        .iter()
        .filter(|d| d.action != DatabaseAction::Keep)
        .map(|database| {
            let problems = sqlite::open_read_only(&database.live)
                .and_then(|c| {
                    Ok([
                        sqlite::integrity_problems(&c)?,
                        sqlite::foreign_key_problems(&c)?,
                    ]
                    .concat())
                })
                .unwrap_or_else(|e| vec![e.to_string()]);
            let sound = "integrity and foreign keys ok";
            Verified {
                what: format!("database `{}`", database.live.display()),
                expected: sound.to_string(),
                actual: if problems.is_empty() {
                    sound.to_string()
                } else {
                    problems.join("; ")
                },
                ok: problems.is_empty(),
            }
        })
        .collect()
}

/// The command that puts the safety backup back.
pub fn way_back(journal: &Journal, plan: &Plan) -> Option<String> {
    let safety = journal.safety_backup.as_ref()?;
    let config = if plan.safety_backup.as_ref().is_some_and(|s| s.config) {
        " --with-config"
    } else {
        ""
    };
    Some(format!(
        "wqm backup restore {} --force --overwrite{config}",
        safety.display()
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn create_request_keeps_what_the_create_call_takes_under_the_names_it_takes() {
        let vectors = json!({"size": 4, "distance": "Cosine"});
        let config = json!({
            "params": {
                "vectors": vectors,
                "sparse_vectors": null,
                "shard_number": 2,
                "replication_factor": 1,
                "write_consistency_factor": 1,
                "on_disk_payload": true,
                "read_fan_out_factor": null
            },
            "hnsw_config": {"m": 16},
            "optimizer_config": {"indexing_threshold": 1000},
            "wal_config": {"wal_capacity_mb": 32},
            "quantization_config": null,
            "strict_mode_config": {"enabled": false}
        });
        assert_eq!(
            create_request(&config, 2, false),
            json!({
                "vectors": vectors,
                "shard_number": 2,
                "replication_factor": 1,
                "write_consistency_factor": 1,
                "on_disk_payload": true,
                "hnsw_config": {"m": 16},
                "optimizers_config": {"indexing_threshold": 1000},
                "wal_config": {"wal_capacity_mb": 32}
            })
        );
    }

    #[test]
    fn create_request_shards_by_key_in_a_cluster_and_automatically_on_one_node() {
        let vectors = json!({"size": 4, "distance": "Dot"});
        let config = json!({
            "params": {"vectors": vectors, "shard_number": 1, "sharding_method": "custom"}
        });
        assert_eq!(
            create_request(&config, 3, true),
            json!({"vectors": vectors, "shard_number": 1, "sharding_method": "custom"})
        );
        // A single node cannot shard by key: as many automatic shards as the backup has.
        assert_eq!(
            create_request(&config, 3, false),
            json!({"vectors": vectors, "shard_number": 3})
        );
    }

    #[test]
    fn index_schema_is_the_data_type_or_its_params_with_the_type() {
        assert_eq!(
            index_schema(&json!({"data_type": "keyword", "points": 3})),
            json!("keyword")
        );
        assert_eq!(
            index_schema(&json!({
                "data_type": "integer",
                "params": {"type": "ignored", "lookup": true, "range": false},
                "points": 3
            })),
            json!({"type": "integer", "lookup": true, "range": false})
        );
        assert_eq!(index_schema(&json!({"points": 0})), Value::Null);
    }

    /// The action and the findings, warnings as `W: …`, blockers as `B<code>: …`.
    fn decided(
        partial: bool,
        name: &str,
        live_exists: bool,
        check: bool,
        schemas: (Option<i64>, Option<i64>),
    ) -> (DatabaseAction, Vec<String>) {
        let (action, findings) = decide_database(partial, name, live_exists, check, schemas);
        let findings = findings
            .into_iter()
            .map(|f| match f {
                Finding::Warning(w) => format!("W: {w}"),
                Finding::Blocker(b) => format!("B{}: {}", b.code.code(), b.message),
            })
            .collect();
        (action, findings)
    }

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
    fn a_full_backup_replaces_every_database_and_a_partial_one_merges_the_state_database() {
        use DatabaseAction::{Keep, Merge, Replace};
        let same = (Some(5), Some(5));
        for (partial, name, live_exists, action) in [
            (false, "state.db", true, Replace),
            (false, "state.db", false, Replace),
            (false, "search.db", true, Replace),
            (true, "state.db", true, Merge),
            (true, "state.db", false, Replace),
        ] {
            let expected = (action, Vec::<String>::new());
            assert_eq!(
                decided(partial, name, live_exists, true, same),
                expected,
                "{partial} {name} {live_exists}"
            );
        }
        let (action, findings) = decided(true, "graph.db", true, true, same);
        assert_eq!(action, Keep);
        assert_eq!(
            findings,
            ["W: `graph.db` is left as it is in a partial restore; the daemon reconciles it"]
        );
    }

    #[test]
    fn the_state_database_schema_decides_what_may_be_restored() {
        let blocker = |f: &[String]| f.len() == 1 && f[0].starts_with("B4: ");
        let warning = |f: &[String]| f.len() == 1 && f[0].starts_with("W: ");
        // A merge needs the same schema, older or newer.
        assert!(blocker(
            &decided(true, "state.db", true, true, (Some(4), Some(5))).1
        ));
        assert!(blocker(
            &decided(true, "state.db", true, true, (Some(6), Some(5))).1
        ));
        // A replacement may go back (the daemon migrates forward), never forward.
        assert!(blocker(
            &decided(false, "state.db", true, true, (Some(6), Some(5))).1
        ));
        assert!(warning(
            &decided(false, "state.db", true, true, (Some(4), Some(5))).1
        ));
        // Not checked: turned off, a version unknown, or another database.
        assert!(decided(true, "state.db", true, false, (Some(4), Some(5)))
            .1
            .is_empty());
        assert!(decided(false, "state.db", true, true, (None, Some(5)))
            .1
            .is_empty());
        assert!(decided(false, "state.db", true, true, (Some(6), None))
            .1
            .is_empty());
        assert!(decided(false, "search.db", true, true, (Some(6), Some(5)))
            .1
            .is_empty());
    }
}

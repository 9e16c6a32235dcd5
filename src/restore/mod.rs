//! Restoring a backup, plan first, then apply: validate → plan → (confirm, at the edge) → safety
//! backup → stop the daemon → collections → databases → aliases → config → start the daemon →
//! verify. Nothing is written before the plan is confirmed; after the safety backup, a failure
//! reports what was done and how to put the safety backup back.
//!
//! `plan` (reading only) works out the `Plan`; `apply` carries it out (`execute`), with `unpack`
//! (the backup's databases, checked and migrated), `upload` (the collections, paced by
//! `transfer::Lanes`), `check` (each snapshot checked as it is sent) and `precheck`
//! (`verify_before_restore` beside the first upload); `verify` checks the result; `report` is
//! what the command reports of it.

mod apply;
mod check;
mod plan;
mod precheck;
mod report;
mod unpack;
mod upload;
mod verify;

use std::path::PathBuf;

use serde::Serialize;

use crate::exit::{ExitCode, Failure};
use crate::format::compat;
use crate::format::manifest::{CollectionDetails, FileEntry, Manifest};
use crate::qdrant::cluster;
use crate::store::BackupDir;

pub use apply::execute;
pub use plan::plan;
pub use report::{way_back, Outcome, Steps, Unfinished};
pub use verify::Verified;

/// What to restore, and how.
#[derive(Clone, Debug)]
pub struct Request {
    /// The backup: a local directory or a remote repository's.
    pub place: crate::store::Place,
    pub allow_downgrade: bool,
    pub overwrite: bool,
    pub with_config: bool,
    /// Only the plan is wanted (`--dry-run`): `verify_before_restore` reads the files in it.
    pub dry_run: bool,
    /// Where a safety backup goes when `backup.default_backup_directory` is on S3 and so is
    /// the backup (else beside a backup on S3; a local default directory comes first).
    pub safety_repository: Option<crate::store::Remote>,
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
    /// What the backup's manifest says of it (shards, aliases, counts): carried here so the
    /// steps after the plan need no lookup by name.
    #[serde(skip)]
    pub details: CollectionDetails,
    /// The manifest's entries of its snapshot files (`CollectionDetails::snapshot_files`: the
    /// collection's one, or one per shard in the shards' order).
    #[serde(skip)]
    pub snapshots: Vec<FileEntry>,
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
    /// The size of the backup's copy once unpacked (its manifest entry's `content_size`).
    #[serde(skip)]
    pub unpacked_bytes: u64,
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
    /// Where it goes (on S3: `s3://BUCKET/PREFIX/NAME`).
    pub path: PathBuf,
    /// On S3: the repository and the name it is sent to (made locally first).
    #[serde(skip)]
    pub remote: Option<(crate::store::Remote, String)>,
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
    /// Where every file of the backup is read from.
    #[serde(skip)]
    source: BackupDir,
    /// The backup's manifest after the migrations: what the restore works from (the backup's own,
    /// `source.manifest`, says only where its files are).
    #[serde(skip)]
    manifest: Manifest,
    /// `verify_before_restore` is left to `apply`, beside the first upload (`Precheck`).
    #[serde(skip)]
    precheck_deferred: bool,
    /// The server compares an upload's content with `?checksum=` (Qdrant 1.8.0 and later; an
    /// older one ignores it), so an upload may leave that comparison to it.
    #[serde(skip)]
    server_compares_checksum: bool,
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

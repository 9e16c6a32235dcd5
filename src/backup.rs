//! Creating a backup: Qdrant snapshots streamed to disk, consistent SQLite copies, the config,
//! and the manifest last; staged, verified, then renamed into place.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::checksum::Algorithm;
use crate::cleanup::{self, Cleaned};
use crate::cluster;
use crate::compress::Compression;
use crate::config::Settings;
use crate::daemon;
use crate::exit::{ExitCode, Failure};
use crate::layout::{self, FileSink, Staging};
use crate::manifest::{
    CollectionDetails, Collections, DatabaseDetails, FileEntry, FileKind, Manifest, ShardDetails,
    SystemInfo,
};
use crate::progress::{self, Progress};
use crate::qdrant::{self, AsyncSink, Client, Scope, SnapshotDescription};
use crate::secrets;
use crate::sqlite;
use crate::verify::{self, Severity};
use crate::workdir::{Place, Record};

/// What to back up, and where.
#[derive(Clone, Debug)]
pub struct Request {
    pub target: PathBuf,
    /// Replace an existing backup at `target` (only once the new one is complete).
    pub replace: bool,
    pub description: Option<String>,
    /// Back up only these collections (all when `None`).
    pub collections: Option<Vec<String>>,
    /// Record the backup as partial: on restore its state database merges instead of replacing.
    pub partial: bool,
    /// Which SQLite databases to include.
    pub databases: Databases,
    /// Include the configuration file.
    pub config: bool,
}

/// Which of the SQLite databases (`state.db` and, beside it, `search.db`, `graph.db`) a backup holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Databases {
    None,
    /// Every one that exists, when `state.db` does.
    All,
    /// Exactly these files that exist (a restore's safety backup: what the restore replaces).
    Only(Vec<String>),
}

/// One stored item, as the summary reports it.
#[derive(Clone, Debug, Serialize)]
pub struct Item {
    pub path: String,
    /// Points of a collection, schema version of a database.
    pub detail: String,
    pub size: u64,
    pub content_size: u64,
}

/// What `create` made.
#[derive(Debug)]
pub struct Outcome {
    pub path: PathBuf,
    pub manifest: Manifest,
    pub items: Vec<Item>,
    pub seconds: f64,
    /// Snapshots that could not be deleted from the server (with the command that deletes each).
    pub leftovers: Vec<String>,
    /// Dead runs found in the backups directory and cleaned up first.
    pub cleaned: Vec<Cleaned>,
}

/// The directory a backup is in (`.` for a bare name).
pub fn parent_dir(target: &Path) -> PathBuf {
    target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// Where each collection's data comes from: one snapshot of the whole collection (a single
/// node), or one snapshot per shard, each from a node holding an active replica (a cluster).
enum Source {
    Collection,
    Shards(Vec<(cluster::Shard, u64)>),
}

/// Checks everything that can be checked before writing, then writes the backup.
pub async fn create(
    client: &Client,
    settings: &Settings,
    request: &Request,
    progress: &dyn Progress,
) -> Result<Outcome> {
    let started = Instant::now();
    let timestamp = crate::now();
    if !settings.backup.enabled {
        return Err(Failure::new(
            ExitCode::Usage,
            "Backups are disabled: `backup.enabled` is false",
        )
        .with_hint("set `backup.enabled: true` in the config (or WQM_BACKUP__ENABLED=true)")
        .into());
    }
    if request.target.exists() && !request.replace {
        return Err(layout::LayoutError::AlreadyExists {
            path: request.target.clone(),
        }
        .into());
    }

    progress.step(&format!("connecting to Qdrant at {}", client.display_url()));
    let server = client.server_info().await?;
    let topology = cluster::topology(client, settings).await?;
    let available = client.list_collections().await?;
    let collections = select(&available, request.collections.as_deref())?;
    for name in &collections {
        layout::check_name(name)
            .with_context(|| format!("collection `{name}` cannot be stored under its name"))?;
    }
    let aliases = client.aliases().await?;
    // In a cluster, every shard needs an active replica on a reachable node before anything is written.
    let mut sources = Vec::new();
    for name in &collections {
        sources.push(match &topology {
            None => Source::Collection,
            Some(topology) => Source::Shards(shard_sources(client, topology, name).await?),
        });
    }

    // Runs that died here left snapshots on the server and staging directories: clean them first.
    let backups_dir = parent_dir(&request.target);
    let cleaned = cleanup::dead_runs(&[backups_dir.as_path()], settings).await;
    let staging = Staging::begin(&request.target, request.replace)?;
    progress.step(&format!("staging in {}", staging.dir().display()));
    let backup = &settings.backup;
    let compression = Compression::from_setting(backup.compression);
    let algorithm = backup.verification.checksum_algorithm;

    let mut manifest = Manifest::new(crate::VERSION, timestamp);
    manifest.description = request.description.clone();
    manifest.qdrant_version = Some(server.version.clone());
    manifest.compression = Some(compression);
    manifest.checksum_algorithm = Some(algorithm);
    // Informational: the online copies are consistent whether the daemon runs or not.
    manifest.daemon_running = Some(daemon::running(&backup.daemon, &settings.data_dir).is_some());
    if request.partial {
        manifest.partial_backup = true;
        manifest.selected_collections = Some(collections.clone());
    }
    let mut items = Vec::new();
    let mut leftovers = Vec::new();
    let mut counts = BTreeMap::new();
    let stored = Stored {
        staging: &staging,
        compression,
        algorithm,
        progress,
    };

    for (name, source) in collections.iter().zip(sources) {
        progress::check_interrupted()?;
        let info = client.collection_info(name).await?;
        let count_before = client.exact_count(name).await?;
        let mut details = CollectionDetails {
            points_count: count_before,
            points_count_after: None,
            snapshot: String::new(),
            shards: Vec::new(),
            config: None,
            params: backup
                .metadata
                .include_collection_stats
                .then(|| info.config.params.clone()),
            payload_schema: backup
                .metadata
                .include_collection_stats
                .then(|| info.payload_schema.clone()),
            aliases: aliases
                .iter()
                .filter(|a| &a.collection_name == name)
                .map(|a| a.alias_name.clone())
                .collect(),
        };
        match source {
            Source::Collection => {
                let rel = layout::snapshot_path(name, compression);
                let (entry, leftover) = stored
                    .snapshot(
                        client,
                        Scope::Collection(name),
                        &rel,
                        FileKind::CollectionSnapshot,
                    )
                    .await?;
                leftovers.extend(leftover);
                items.push(Item {
                    path: rel.clone(),
                    detail: format!("{count_before} points"),
                    size: entry.size,
                    content_size: entry.content_size,
                });
                manifest.files.push(entry);
                details.snapshot = rel;
            }
            Source::Shards(shards) => {
                // Re-creating a sharded collection needs its whole configuration and payload schema.
                details.config = Some(info.config.whole());
                details.payload_schema = Some(info.payload_schema.clone());
                for (shard, peer) in shards {
                    progress::check_interrupted()?;
                    let node = topology
                        .as_ref()
                        .and_then(|t| t.node(peer))
                        .expect("sources are reachable nodes");
                    let points_count = node.shard_exact_count(name, shard.id).await?;
                    let snapshot_timestamp = crate::now();
                    let rel = layout::shard_snapshot_path(name, shard.id, compression);
                    let (entry, leftover) = stored
                        .snapshot(
                            node,
                            Scope::Shard(name, shard.id),
                            &rel,
                            FileKind::ShardSnapshot,
                        )
                        .await?;
                    leftovers.extend(leftover);
                    items.push(Item {
                        path: rel.clone(),
                        detail: format!(
                            "shard {}, {points_count} points, from peer {peer}",
                            shard.id
                        ),
                        size: entry.size,
                        content_size: entry.content_size,
                    });
                    manifest.files.push(entry);
                    details.shards.push(ShardDetails {
                        id: shard.id,
                        key: shard.key.clone(),
                        points_count,
                        snapshot: rel,
                        peer_id: peer,
                        node: node.display_url(),
                        snapshot_timestamp,
                    });
                }
            }
        }
        let count_after = client.exact_count(name).await?;
        if count_after != count_before {
            // Points changed while the snapshot was taken: its exact count lies in between.
            manifest.during_operations = true;
            details.points_count_after = Some(count_after);
            manifest.notes.push(format!("collection `{name}` changed during the backup ({count_before} points before the snapshot, {count_after} after)"));
        }
        manifest.collection_details.insert(name.clone(), details);
        counts.insert(name.clone(), count_before);
    }
    manifest.total_documents = Some(counts.values().sum());
    manifest.collections = Some(Collections::Counts(counts));
    if topology.is_some() {
        manifest.notes.push("taken from a cluster shard by shard: each shard is consistent in itself, the shards are not from one instant".to_string());
    }

    if request.databases != Databases::None {
        crate::failpoint::hit("create:databases")?;
        back_up_databases(
            &staging,
            &request.databases,
            settings,
            compression,
            algorithm,
            &mut manifest,
            &mut items,
            progress,
        )?;
    }
    match settings.config_file.as_ref().filter(|_| request.config) {
        Some(config) => {
            progress::check_interrupted()?;
            let rel = format!("{}/config.yaml", layout::CONFIG_DIR);
            let text = fs::read_to_string(config)
                .with_context(|| format!("cannot read the config file `{}`", config.display()))?;
            // No secret leaves the machine: only the secret values are replaced in the copy.
            let redacted = secrets::redact_config(&text);
            if redacted.rewritten {
                manifest.notes.push("the config copy was written out anew to leave its secrets out (its layout is beyond editing in place): comments and formatting were not kept".to_string());
            }
            let entry = store(
                &staging,
                &rel,
                FileKind::Config,
                Compression::None,
                algorithm,
                io::Cursor::new(redacted.text.into_bytes()),
            )?;
            let detail = if redacted.redactions.is_empty() {
                format!("from {}", config.display())
            } else {
                format!(
                    "from {}, {} secret(s) left out",
                    config.display(),
                    redacted.redactions.len()
                )
            };
            items.push(Item {
                path: rel,
                detail,
                size: entry.size,
                content_size: entry.content_size,
            });
            manifest.files.push(entry);
            manifest.config_redacted = redacted.redactions;
        }
        None if request.config => manifest
            .notes
            .push("no configuration file was found; the backup holds no config".to_string()),
        None => {}
    }
    if backup.metadata.include_system_info {
        manifest.system_info = Some(SystemInfo {
            hostname: gethostname::gethostname().to_string_lossy().into_owned(),
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
            wqm_version: crate::VERSION.to_string(),
        });
    }
    if !backup.metadata.custom_metadata.is_empty() {
        let mut custom = serde_json::Value::Object(backup.metadata.custom_metadata.clone());
        secrets::redact_json(&mut custom);
        if let serde_json::Value::Object(custom) = custom {
            manifest.custom_metadata = Some(custom);
        }
    }

    progress::check_interrupted()?;
    crate::failpoint::hit("create:manifest")?;
    staging.write_manifest(&manifest)?;
    crate::failpoint::hit("create:verifying")?;
    if backup.verification.verify_after_backup {
        verify_staged(&staging, progress)?;
    }
    let path = staging.commit()?;
    Ok(Outcome {
        path,
        manifest,
        items,
        seconds: started.elapsed().as_secs_f64(),
        leftovers,
        cleaned,
    })
}

/// Each shard of `collection` with the reachable node that holds an active replica of it.
async fn shard_sources(
    entry: &Client,
    topology: &cluster::Topology,
    collection: &str,
) -> Result<Vec<(cluster::Shard, u64)>> {
    let mut sources = Vec::new();
    for shard in cluster::shards(entry, collection).await? {
        let Some(peer) = shard.active_on(topology) else {
            return Err(cluster::ClusterError::NoActiveReplica {
                collection: collection.to_string(),
                shard: shard.id,
                replicas: shard.describe_replicas(topology),
            }
            .into());
        };
        sources.push((shard, peer));
    }
    Ok(sources)
}

/// All collections, or the requested ones (all of which must exist).
fn select(available: &[String], requested: Option<&[String]>) -> Result<Vec<String>> {
    let Some(requested) = requested else {
        return Ok(available.to_vec());
    };
    let missing: Vec<&str> = requested
        .iter()
        .filter(|r| !available.contains(r))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(Failure::new(
            ExitCode::Usage,
            format!("Collections not found: {}", missing.join(", ")),
        )
        .with_hint(format!(
            "the server has: {}",
            if available.is_empty() {
                "no collections".to_string()
            } else {
                available.join(", ")
            }
        ))
        .into());
    }
    Ok(requested.to_vec())
}

/// Where snapshots are stored, and how.
struct Stored<'a> {
    staging: &'a Staging,
    compression: Compression,
    algorithm: Algorithm,
    progress: &'a dyn Progress,
}

impl Stored<'_> {
    /// Creates a snapshot of `scope` on `client`'s node, streams it into the backup at `rel`
    /// and deletes it from the node, also when anything failed. Returns the stored file and,
    /// when the server copy could not be deleted, a warning with the command that deletes it.
    async fn snapshot(
        &self,
        client: &Client,
        scope: Scope<'_>,
        rel: &str,
        kind: FileKind,
    ) -> Result<(FileEntry, Option<String>)> {
        let progress = self.progress;
        progress.step(&format!(
            "creating a snapshot of {scope} on {}",
            client.display_url()
        ));
        let journal = self.staging.journal();
        let place = place_of(client, scope);
        journal.record(&Record::SnapshotRequested {
            place: place.clone(),
            at: crate::now(),
        })?;
        // Even after Ctrl-C this waits for Qdrant: the snapshot it is making must be deleted.
        let snapshot = match client.create_snapshot(scope).await {
            Ok(snapshot) => snapshot,
            Err(e) => {
                // An error answer means no snapshot; a lost connection or a timeout may not.
                if e.is_answer() {
                    journal.record(&Record::SnapshotRefused {
                        place: place.clone(),
                    })?;
                }
                return Err(e.into());
            }
        };
        journal.record(&Record::SnapshotMade {
            place: place.clone(),
            name: snapshot.name.clone(),
        })?;
        crate::failpoint::hit("create:snapshot-made")?;
        progress.step(&format!("downloading `{}`", snapshot.name));
        // Fires (or is dropped) when the download is over, done or failed.
        let (download_over, when_download_over) = tokio::sync::oneshot::channel::<()>();
        let transfer = async {
            let download_over = download_over;
            let sink = self
                .staging
                .create_file(rel, kind, self.compression, self.algorithm)?;
            let (sender, receiver) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
            let writer = spawn_writer(sink, receiver);
            progress.begin(&scope.to_string(), snapshot.size);
            let downloaded = client
                .download_snapshot(
                    scope,
                    &snapshot.name,
                    ChannelSink {
                        sender,
                        progress,
                        delivered: 0,
                    },
                )
                .await;
            progress.end();
            let _ = download_over.send(());
            let written = writer
                .await
                .map_err(|e| anyhow!("the file writer panicked: {e}"))?;
            // The writer's own error (a full disk, say) explains a stopped download better.
            let entry = written?;
            let bytes = downloaded?;
            check_download(&snapshot, bytes, &entry)?;
            Ok::<_, anyhow::Error>(entry)
        };
        // The server's copy is deleted while the writer syncs the file to disk.
        let delete_after_transfer = async {
            let _ = when_download_over.await;
            crate::failpoint::hit("create:downloaded")?;
            client.delete_snapshot(scope, &snapshot.name).await?;
            journal.record(&Record::SnapshotDeleted {
                place: place.clone(),
                name: snapshot.name.clone(),
            })?;
            Ok::<_, anyhow::Error>(())
        };
        let (stored, deleted) = tokio::join!(transfer, delete_after_transfer);
        let leftover = deleted.err().map(|e| {
            format!(
                "could not delete snapshot `{}` of {scope} from Qdrant ({e:#}); the next wqm run on this directory (or `wqm backup cleanup`) deletes it, or delete it with: {}",
                snapshot.name,
                client.delete_command(scope, &snapshot.name)
            )
        });
        Ok((stored?, leftover))
    }
}

/// Where a snapshot call goes, as a journal records it (no password).
pub(crate) fn place_of(client: &Client, scope: Scope<'_>) -> Place {
    let (collection, shard) = match scope {
        Scope::Collection(c) => (c, None),
        Scope::Shard(c, id) => (c, Some(id)),
    };
    Place {
        node: client.display_url(),
        collection: collection.to_string(),
        shard,
    }
}

/// Hands downloaded chunks to the thread that hashes, compresses and writes them, so the
/// network and the disk work at the same time. Memory is bounded by the channel.
struct ChannelSink<'a> {
    sender: mpsc::Sender<Bytes>,
    progress: &'a dyn Progress,
    delivered: u64,
}

impl AsyncSink for ChannelSink<'_> {
    async fn deliver(&mut self, chunk: Bytes) -> Result<()> {
        if self.delivered == 0 {
            crate::failpoint::hit("create:downloading")?;
        }
        self.delivered += chunk.len() as u64;
        self.progress.advance(chunk.len() as u64);
        self.sender
            .send(chunk)
            .await
            .map_err(|_| anyhow!("the file writer stopped"))
    }
}

/// Chunks in flight between the network and the file writer (hyper hands out up to ~400 KiB each).
const CHANNEL_CHUNKS: usize = 8;

fn spawn_writer(
    mut sink: FileSink,
    mut receiver: mpsc::Receiver<Bytes>,
) -> tokio::task::JoinHandle<Result<FileEntry>> {
    tokio::task::spawn_blocking(move || -> Result<FileEntry> {
        while let Some(chunk) = receiver.blocking_recv() {
            sink.write_all(&chunk)
                .with_context(|| format!("cannot write `{}`", sink.path().display()))?;
        }
        Ok(sink.finish()?)
    })
}

/// The download matches what Qdrant announced: its size and its sha256.
fn check_download(snapshot: &SnapshotDescription, bytes: u64, entry: &FileEntry) -> Result<()> {
    if let Some(size) = snapshot.size.filter(|&size| size != bytes) {
        return Err(qdrant::QdrantError::Transfer {
            name: snapshot.name.clone(),
            attempts: 1,
            reason: format!("received {bytes} bytes, Qdrant announced {size}"),
        }
        .into());
    }
    if let Some(expected) = &snapshot.checksum {
        if !expected.trim().eq_ignore_ascii_case(&entry.content_sha256) {
            return Err(qdrant::QdrantError::ChecksumMismatch {
                name: snapshot.name.clone(),
                expected: expected.clone(),
                actual: entry.content_sha256.clone(),
            }
            .into());
        }
    }
    Ok(())
}

/// Streams `reader` into the backup at `rel`.
fn store(
    staging: &Staging,
    rel: &str,
    kind: FileKind,
    compression: Compression,
    algorithm: Algorithm,
    mut reader: impl io::Read,
) -> Result<FileEntry> {
    let mut sink = staging.create_file(rel, kind, compression, algorithm)?;
    io::copy(&mut reader, &mut sink)
        .with_context(|| format!("cannot write `{}`", sink.path().display()))?;
    Ok(sink.finish()?)
}

/// `state.db` and, beside it, `search.db` and `graph.db`: each copied with SQLite's online
/// backup API into the staging directory, then stored (compressed, hashed) as `sqlite/<file>`.
// One more argument than clippy likes: which databases, beside what every stored file needs.
#[allow(clippy::too_many_arguments)]
fn back_up_databases(
    staging: &Staging,
    wanted: &Databases,
    settings: &Settings,
    compression: Compression,
    algorithm: Algorithm,
    manifest: &mut Manifest,
    items: &mut Vec<Item>,
    progress: &dyn Progress,
) -> Result<()> {
    let state_db = &settings.state_db;
    if *wanted == Databases::All && !state_db.is_file() {
        manifest.notes.push(format!(
            "no state database at `{}`; the backup holds no SQLite state",
            state_db.display()
        ));
        return Ok(());
    }
    let dir = state_db.parent().unwrap_or(Path::new("."));
    let sources = sqlite::DATABASE_FILES.iter().map(|name| {
        let path = if *name == "state.db" {
            state_db.clone()
        } else {
            dir.join(name)
        };
        (*name, path)
    });
    let wanted = |name: &str| match wanted {
        Databases::Only(names) => names.iter().any(|n| n == name),
        _ => true,
    };
    for (name, source) in sources.filter(|(name, path)| wanted(name) && path.is_file()) {
        progress::check_interrupted()?;
        progress.step(&format!("copying `{}`", source.display()));
        let copy = staging
            .dir()
            .join(layout::SQLITE_DIR)
            .join(format!(".{name}.copy"));
        sqlite::backup_to(&source, &copy)
            .with_context(|| format!("cannot copy the database `{}`", source.display()))?;
        let schema_version = sqlite::open_immutable(&copy)
            .and_then(|c| sqlite::schema_version(&c))
            .unwrap_or(None);
        let rel = layout::database_path(name, compression);
        let file =
            fs::File::open(&copy).with_context(|| format!("cannot read `{}`", copy.display()))?;
        let entry = store(
            staging,
            &rel,
            FileKind::SqliteDatabase,
            compression,
            algorithm,
            file,
        )?;
        fs::remove_file(&copy).with_context(|| format!("cannot remove `{}`", copy.display()))?;
        let detail =
            schema_version.map_or("no schema version".to_string(), |v| format!("schema {v}"));
        items.push(Item {
            path: rel.clone(),
            detail,
            size: entry.size,
            content_size: entry.content_size,
        });
        manifest.databases.push(DatabaseDetails {
            name: name.to_string(),
            file: rel,
            schema_version,
        });
        manifest.files.push(entry);
    }
    Ok(())
}

/// `verify_after_backup`: re-reads every staged file and checks it before the backup is renamed
/// into place.
fn verify_staged(staging: &Staging, progress: &dyn Progress) -> Result<()> {
    progress.step("verifying the new backup");
    let options = verify::Options {
        depth: verify::Depth::Checksums,
        current_version: crate::VERSION.to_string(),
        policy: crate::compat::Policy::default(),
        warn_after_days: 0,
        now: crate::now(),
    };
    let report = verify::audit(staging.dir(), &options, progress)?;
    if let Some(problem) = report
        .findings
        .iter()
        .find(|f| f.severity == Severity::Error)
    {
        let file = problem
            .file
            .as_ref()
            .map(|f| format!("{f}: "))
            .unwrap_or_default();
        return Err(Failure::new(
            ExitCode::Failure,
            format!(
                "the new backup failed verification: {file}{}",
                problem.message
            ),
        )
        .with_hint(
            "nothing was kept; check the disk (and its free space), then run the command again",
        )
        .into());
    }
    Ok(())
}

//! Creating a backup: Qdrant snapshots streamed to disk, consistent SQLite copies, the config,
//! and the manifest last; staged, verified, then renamed into place.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore, SemaphorePermit};

use crate::checksum::Algorithm;
use crate::cleanup::{self, Cleaned};
use crate::compress::Compression;
use crate::config::Settings;
use crate::daemon;
use crate::exit::{Classify, ExitCode, Failure};
use crate::layout;
use crate::manifest::{
    CollectionDetails, Collections, DatabaseDetails, FileEntry, FileKind, Manifest, ShardDetails,
    SystemInfo,
};
use crate::progress::{self, Progress};
use crate::qdrant::cluster;
use crate::qdrant::{self, AsyncSink, Client, Scope, SnapshotDescription};
use crate::secrets;
use crate::sqlite;
use crate::store::chunks::{self, Added};
use crate::store::{FileSink, Staging};
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
    /// Store snapshots and databases in the chunk store of the target's directory.
    pub incremental: bool,
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
    /// A snapshot's times: waiting for its turn, being made on the server, downloading.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<SnapshotTimes>,
}

/// Seconds a snapshot spent in each step (`backup.transfer.parallel` overlaps them across
/// snapshots).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct SnapshotTimes {
    /// When its turn came, counted from the start of the snapshots phase.
    pub started: f64,
    /// Until its turn came (a slot among `parallel`, and its node free to make one).
    pub waiting: f64,
    /// Qdrant making it.
    pub making: f64,
    /// Downloading, hashing, compressing and writing it (and deleting it from the server).
    pub downloading: f64,
}

/// A phase of a command and the seconds it took.
#[derive(Clone, Debug, Serialize)]
pub struct Phase {
    pub phase: String,
    pub seconds: f64,
}

/// Times the phases of a command, one after another.
pub struct Phases {
    since: Instant,
    pub done: Vec<Phase>,
}

impl Phases {
    pub fn start() -> Self {
        Phases {
            since: Instant::now(),
            done: Vec::new(),
        }
    }

    /// The phase `name` ended now (it began when the previous one ended).
    pub fn end(&mut self, name: &str) {
        let now = Instant::now();
        self.done.push(Phase {
            phase: name.to_string(),
            seconds: (now - self.since).as_secs_f64(),
        });
        self.since = now;
    }
}

/// What `create` made.
#[derive(Debug)]
pub struct Outcome {
    pub path: PathBuf,
    pub manifest: Manifest,
    pub items: Vec<Item>,
    pub seconds: f64,
    /// Where the time went, phase by phase.
    pub phases: Vec<Phase>,
    /// Snapshots that could not be deleted from the server (with the command that deletes each).
    pub leftovers: Vec<String>,
    /// Dead runs found in the backups directory and cleaned up first.
    pub cleaned: Vec<Cleaned>,
    /// What an incremental backup added to the chunk store.
    pub chunks_added: Option<Added>,
}

/// Where each collection's data comes from: one snapshot of the whole collection (a single
/// node), or one snapshot per shard, each from a node holding an active replica (a cluster).
enum Source {
    Collection,
    Shards(Vec<(cluster::Shard, u64)>),
}

/// What the checks before writing found on the server.
struct Survey {
    qdrant_version: String,
    /// The cluster, when the server is one.
    topology: Option<cluster::Topology>,
    /// The collections to back up, each with where its data comes from.
    collections: Vec<(String, Source)>,
    aliases: Vec<qdrant::Alias>,
}

/// Checks everything that can be checked before writing, then writes the backup: each
/// collection (in a cluster: each shard), the databases, the config, and the manifest last;
/// verified, then renamed into place.
pub async fn create(
    client: &Client,
    settings: &Settings,
    request: &Request,
    progress: &dyn Progress,
) -> Result<Outcome> {
    let started = Instant::now();
    let mut phases = Phases::start();
    let timestamp = crate::now();
    check_request(settings, request)?;
    let survey = survey(client, settings, request, progress).await?;
    phases.end("survey");

    // Runs that died here left snapshots on the server and staging directories: clean them first.
    let backups_dir = crate::fs::parent_dir(&request.target);
    let cleaned = cleanup::dead_runs(&[backups_dir], settings).await;
    phases.end("cleanup");
    let mut staging = Staging::begin(&request.target, request.replace)?;
    if request.incremental {
        staging.use_chunk_store(chunks::DEFAULT_AVERAGE)?;
    }
    progress.step(&format!("staging in {}", staging.dir().display()));
    let mut writing = Writing::begin(&staging, settings, request, &survey, timestamp, progress);
    let lanes = Lanes::new(settings.backup.transfer.parallel.get());
    let fetched = writing.fetch_collections(client, &survey, &lanes).await?;
    phases.end("snapshots");
    let mut counts = BTreeMap::new();
    for collection in fetched {
        counts.insert(collection.name.clone(), collection.details.points_count);
        writing.record_collection(collection);
    }
    writing.manifest.total_documents = Some(counts.values().sum());
    writing.manifest.collections = Some(Collections::Counts(counts));
    if survey.topology.is_some() {
        writing.manifest.notes.push("taken from a cluster shard by shard: each shard is consistent in itself, the shards are not from one instant".to_string());
    }
    if request.databases != Databases::None {
        crate::failpoint::hit("create:databases")?;
        writing.back_up_databases(&request.databases, settings)?;
        phases.end("databases");
    }
    writing.back_up_config(settings, request)?;
    add_metadata(&mut writing.manifest, settings);
    let Writing {
        manifest,
        items,
        leftovers,
        ..
    } = writing;

    progress::check_interrupted()?;
    crate::failpoint::hit("create:manifest")?;
    staging.write_manifest(&manifest)?;
    phases.end("config and manifest");
    crate::failpoint::hit("create:verifying")?;
    if settings.backup.verification.verify_after_backup {
        verify_staged(&staging, progress)?;
        phases.end("verify");
    }
    let chunks_added = request.incremental.then(|| staging.chunks_added());
    let path = staging.commit()?;
    phases.end("commit");
    Ok(Outcome {
        path,
        manifest,
        items,
        seconds: started.elapsed().as_secs_f64(),
        phases: phases.done,
        leftovers,
        cleaned,
        chunks_added,
    })
}

/// What the request and the settings alone forbid.
fn check_request(settings: &Settings, request: &Request) -> Result<()> {
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
    Ok(())
}

/// Asks the server what there is to back up (reading only): its version, the cluster, the
/// collections (each storable under its name) and their aliases, and in a cluster a node with
/// an active replica for every shard.
async fn survey(
    client: &Client,
    settings: &Settings,
    request: &Request,
    progress: &dyn Progress,
) -> Result<Survey> {
    progress.step(&format!("connecting to Qdrant at {}", client.display_url()));
    let server = client.server_info().await?;
    let topology = cluster::topology(client, settings).await?;
    let available = client.list_collections().await?;
    let names = select(&available, request.collections.as_deref())?;
    for name in &names {
        layout::check_name(name)
            .with_context(|| format!("collection `{name}` cannot be stored under its name"))?;
    }
    let aliases = client.aliases().await?;
    // In a cluster, every shard needs an active replica on a reachable node before anything is written.
    let mut collections = Vec::new();
    // Shards taken from each node so far: the next goes to the least busy node holding it.
    let mut taken = BTreeMap::new();
    for name in names {
        let source = match &topology {
            None => Source::Collection,
            Some(topology) => {
                Source::Shards(shard_sources(client, topology, &name, &mut taken).await?)
            }
        };
        collections.push((name, source));
    }
    Ok(Survey {
        qdrant_version: server.version,
        topology,
        collections,
        aliases,
    })
}

/// The manifest's metadata beside the files: the system it was taken on, the custom metadata
/// (with its secrets left out).
fn add_metadata(manifest: &mut Manifest, settings: &Settings) {
    let metadata = &settings.backup.metadata;
    if metadata.include_system_info {
        manifest.system_info = Some(SystemInfo {
            hostname: gethostname::gethostname().to_string_lossy().into_owned(),
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
            wqm_version: crate::VERSION.to_string(),
        });
    }
    if !metadata.custom_metadata.is_empty() {
        let mut custom = serde_json::Value::Object(metadata.custom_metadata.clone());
        secrets::redact_json(&mut custom);
        if let serde_json::Value::Object(custom) = custom {
            manifest.custom_metadata = Some(custom);
        }
    }
}

/// Each shard of `collection` with a reachable node that holds an active replica of it, the
/// least busy so far (`taken`: shards taken from each node, updated).
async fn shard_sources(
    entry: &Client,
    topology: &cluster::Topology,
    collection: &str,
    taken: &mut BTreeMap<u64, usize>,
) -> Result<Vec<(cluster::Shard, u64)>> {
    let mut sources = Vec::new();
    for shard in cluster::shards(entry, collection).await? {
        let Some(peer) = shard.active_on(topology, taken) else {
            return Err(cluster::ClusterError::NoActiveReplica {
                collection: collection.to_string(),
                shard: shard.id,
                replicas: shard.describe_replicas(topology),
            }
            .into());
        };
        *taken.entry(peer).or_default() += 1;
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

/// The backup being written: where its files go and how they are stored, and what it holds so
/// far (the manifest, the summary's items, the snapshots left on a server).
struct Writing<'a> {
    staging: &'a Staging,
    /// Where the backup goes (`Request::target`).
    target: &'a Path,
    compression: Compression,
    algorithm: Algorithm,
    /// `backup.metadata.include_collection_stats`.
    collection_stats: bool,
    progress: &'a dyn Progress,
    manifest: Manifest,
    items: Vec<Item>,
    leftovers: Vec<String>,
}

impl<'a> Writing<'a> {
    /// An empty backup in `staging`, its manifest saying how it is stored and what it is of.
    fn begin(
        staging: &'a Staging,
        settings: &Settings,
        request: &'a Request,
        survey: &Survey,
        timestamp: f64,
        progress: &'a dyn Progress,
    ) -> Self {
        let backup = &settings.backup;
        let compression = if request.incremental {
            Compression::Chunks
        } else {
            Compression::from_setting(backup.compression)
        };
        let algorithm = backup.verification.checksum_algorithm;
        let mut manifest = Manifest::new(crate::VERSION, timestamp);
        if request.incremental {
            manifest.format_version = Some(crate::manifest::CHUNKED_FORMAT);
        }
        manifest.description = request.description.clone();
        manifest.qdrant_version = Some(survey.qdrant_version.clone());
        manifest.compression = Some(compression);
        manifest.checksum_algorithm = Some(algorithm);
        // Informational: the online copies are consistent whether the daemon runs or not.
        manifest.daemon_running =
            Some(daemon::running(&backup.daemon, &settings.data_dir).is_some());
        if request.partial {
            manifest.partial_backup = true;
            manifest.selected_collections =
                Some(survey.collections.iter().map(|(n, _)| n.clone()).collect());
        }
        Writing {
            staging,
            target: &request.target,
            compression,
            algorithm,
            collection_stats: backup.metadata.include_collection_stats,
            progress,
            manifest,
            items: Vec::new(),
            leftovers: Vec::new(),
        }
    }

    /// A stored file: into the manifest, and into the summary with `detail`.
    fn record(&mut self, entry: FileEntry, detail: String, seconds: Option<SnapshotTimes>) {
        self.items.push(Item {
            path: entry.path.clone(),
            detail,
            size: entry.size,
            content_size: entry.content_size,
            seconds,
        });
        self.manifest.files.push(entry);
    }

    /// Every collection's snapshots, fetched side by side as `lanes` allows, in the survey's
    /// order. A failure stops the others (each deletes its server snapshot as it stops) and is
    /// the one reported.
    async fn fetch_collections(
        &self,
        client: &Client,
        survey: &Survey,
        lanes: &Lanes,
    ) -> Result<Vec<Fetched>> {
        // Described first, so that each job's first wait is for its turn: turns are granted in
        // the order they are asked for, which is the survey's.
        let mut described = Vec::new();
        for (name, source) in &survey.collections {
            described.push(
                self.describe_collection(client, survey, name, source)
                    .await?,
            );
        }
        let jobs = survey
            .collections
            .iter()
            .zip(described)
            .map(|((name, source), details)| {
                lanes.run(self.fetch_collection(client, name, source, details, survey, lanes))
            });
        first_failure(futures_util::future::join_all(jobs).await)
    }

    /// What the manifest records of collection `name` besides its snapshots (and, stored by
    /// shards, its configuration and its exact count before them).
    async fn describe_collection(
        &self,
        client: &Client,
        survey: &Survey,
        name: &str,
        source: &Source,
    ) -> Result<CollectionDetails> {
        let info = client.collection_info(name).await?;
        let stats = self.collection_stats;
        let mut details = CollectionDetails {
            points_count: 0,
            points_count_after: None,
            snapshot: String::new(),
            shards: Vec::new(),
            config: None,
            params: stats.then(|| info.config.params.clone()),
            payload_schema: stats.then(|| info.payload_schema.clone()),
            aliases: survey
                .aliases
                .iter()
                .filter(|a| a.collection_name == name)
                .map(|a| a.alias_name.clone())
                .collect(),
        };
        if let Source::Shards(_) = source {
            details.points_count = client.exact_count(Scope::Collection(name)).await?;
            // Re-creating a sharded collection needs its whole configuration and payload schema.
            details.config = Some(info.config.whole());
            details.payload_schema = Some(info.payload_schema.clone());
        }
        Ok(details)
    }

    /// One collection (`details` from `describe_collection`): one snapshot of it, or one per
    /// shard, between two exact counts that tell whether points changed meanwhile. Its first
    /// wait is for a turn (`Lanes::turn`).
    #[allow(clippy::too_many_arguments)]
    async fn fetch_collection(
        &self,
        client: &Client,
        name: &str,
        source: &Source,
        mut details: CollectionDetails,
        survey: &Survey,
        lanes: &Lanes,
    ) -> Result<Fetched> {
        let mut files = Vec::new();
        let mut leftovers = Vec::new();
        match source {
            Source::Collection => {
                let waiting = Instant::now();
                let mut turn = lanes.turn(client).await?;
                // Counted with the server's turn held: just before the snapshot is made.
                details.points_count = client.exact_count(Scope::Collection(name)).await?;
                let rel = layout::snapshot_path(name, self.compression);
                let scope = Scope::Collection(name);
                let kind = FileKind::CollectionSnapshot;
                let (entry, leftover, mut times) = self
                    .snapshot(client, scope, &rel, kind, &mut turn, lanes)
                    .await?;
                times.waiting = (turn.since - waiting).as_secs_f64();
                times.started = (turn.since - lanes.since).as_secs_f64();
                let detail = format!("{} points", details.points_count);
                files.push((entry, detail, times));
                leftovers.extend(leftover);
                details.snapshot = rel;
            }
            Source::Shards(shards) => {
                let topology = survey.topology.as_ref();
                let jobs = shards.iter().map(|(shard, peer)| {
                    let node = topology
                        .and_then(|t| t.node(*peer))
                        .expect("sources are reachable nodes");
                    lanes.run(self.fetch_shard(node, name, shard, *peer, lanes))
                });
                for fetched in first_failure(futures_util::future::join_all(jobs).await)? {
                    let (shard, entry, detail, times, leftover) = fetched;
                    details.shards.push(shard);
                    files.push((entry, detail, times));
                    leftovers.extend(leftover);
                }
            }
        }
        let count_after = client.exact_count(Scope::Collection(name)).await?;
        if count_after != details.points_count {
            // Points changed while the snapshot was taken: its exact count lies in between.
            details.points_count_after = Some(count_after);
        }
        Ok(Fetched {
            name: name.to_string(),
            details,
            files,
            leftovers,
        })
    }

    /// A fetched collection into the manifest and the summary.
    fn record_collection(&mut self, fetched: Fetched) {
        let Fetched {
            name,
            details,
            files,
            leftovers,
        } = fetched;
        if let Some(after) = details.points_count_after {
            self.manifest.during_operations = true;
            let before = details.points_count;
            self.manifest.notes.push(format!("collection `{name}` changed during the backup ({before} points before the snapshot, {after} after)"));
        }
        for (entry, detail, times) in files {
            self.record(entry, detail, Some(times));
        }
        self.leftovers.extend(leftovers);
        self.manifest.collection_details.insert(name, details);
    }

    /// One shard of `name`, from `node` (peer `peer`), which holds an active replica of it.
    async fn fetch_shard(
        &self,
        node: &Client,
        name: &str,
        shard: &cluster::Shard,
        peer: u64,
        lanes: &Lanes,
    ) -> Result<FetchedShard> {
        let waiting = Instant::now();
        let mut turn = lanes.turn(node).await?;
        let points_count = node.exact_count(Scope::Shard(name, shard.id)).await?;
        let snapshot_timestamp = crate::now();
        let rel = layout::shard_snapshot_path(name, shard.id, self.compression);
        let detail = format!(
            "shard {}, {points_count} points, from peer {peer}",
            shard.id
        );
        let scope = Scope::Shard(name, shard.id);
        let kind = FileKind::ShardSnapshot;
        let (entry, leftover, mut times) = self
            .snapshot(node, scope, &rel, kind, &mut turn, lanes)
            .await?;
        times.waiting = (turn.since - waiting).as_secs_f64();
        times.started = (turn.since - lanes.since).as_secs_f64();
        let details = ShardDetails {
            id: shard.id,
            key: shard.key.clone(),
            points_count,
            snapshot: rel,
            peer_id: peer,
            node: node.display_url(),
            snapshot_timestamp,
        };
        Ok((details, entry, detail, times, leftover))
    }

    /// Creates a snapshot of `scope` on `client`'s node (its turn to make one: `turn`), streams
    /// it into the backup at `rel` and deletes it from the node, also when anything failed or
    /// another transfer stopped this one. Returns the stored file, when the server copy could
    /// not be deleted a warning with the command that deletes it, and the times it took.
    async fn snapshot(
        &self,
        client: &Client,
        scope: Scope<'_>,
        rel: &str,
        kind: FileKind,
        turn: &mut Turn<'_>,
        lanes: &Lanes,
    ) -> Result<(FileEntry, Option<String>, SnapshotTimes)> {
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
        // Even after Ctrl-C (or another failure) this waits for Qdrant: the snapshot it is
        // making must be deleted.
        let made = client.create_snapshot(scope).await;
        // The node may make the next one while this one downloads.
        turn.release_node();
        let making = turn.since.elapsed().as_secs_f64();
        let snapshot = match made {
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
        let downloading = Instant::now();
        // Fires (or is dropped) when the download is over, done or failed.
        let (download_over, when_download_over) = tokio::sync::oneshot::channel::<()>();
        let transfer = self.download(client, scope, &snapshot, rel, kind, download_over, lanes);
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
        let times = SnapshotTimes {
            started: 0.0,
            waiting: 0.0,
            making,
            downloading: downloading.elapsed().as_secs_f64(),
        };
        Ok((stored?, leftover, times))
    }

    /// Streams snapshot `snapshot` of `scope` from `client`'s node into the backup at `rel`
    /// (see `ChannelSink`), says when the download is over on `download_over`, and checks the
    /// file against what Qdrant announced. Stops when another transfer failed.
    #[allow(clippy::too_many_arguments)]
    async fn download(
        &self,
        client: &Client,
        scope: Scope<'_>,
        snapshot: &SnapshotDescription,
        rel: &str,
        kind: FileKind,
        download_over: tokio::sync::oneshot::Sender<()>,
        lanes: &Lanes,
    ) -> Result<FileEntry> {
        let progress = self.progress;
        let sink = self
            .staging
            .create_file(rel, kind, self.compression, self.algorithm)?;
        let (sender, receiver) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
        let writer = spawn_writer(sink, receiver);
        let bar = progress.begin_transfer(&scope.to_string(), snapshot.size);
        let downloading = client.download_snapshot(
            scope,
            &snapshot.name,
            ChannelSink {
                sender,
                progress,
                bar,
                delivered: 0,
            },
        );
        let downloaded = tokio::select! {
            downloaded = downloading => downloaded,
            () = lanes.until_stopped() => Err(Stopped.into()),
        };
        progress.end_transfer(bar);
        let _ = download_over.send(());
        let written = writer
            .await
            .map_err(|e| anyhow!("the file writer panicked: {e}"))?;
        let bytes = match downloaded {
            Err(e) if e.is::<Stopped>() => return Err(e),
            downloaded => downloaded,
        };
        // The writer's own error (a full disk, say) explains a stopped download better.
        let entry = written?;
        let bytes = bytes?;
        check_download(snapshot, bytes, &entry)?;
        Ok(entry)
    }
}

/// A collection's snapshots, fetched: what the manifest and the summary record of it.
struct Fetched {
    name: String,
    details: CollectionDetails,
    /// Each stored file, its summary detail and its times.
    files: Vec<(FileEntry, String, SnapshotTimes)>,
    leftovers: Vec<String>,
}

/// A shard's snapshot, fetched: its manifest details, file, summary detail, times, leftover.
type FetchedShard = (
    ShardDetails,
    FileEntry,
    String,
    SnapshotTimes,
    Option<String>,
);

/// The results in order, or the first failure that is not `Stopped` (a transfer stopped
/// because of another's failure reports that one).
pub(crate) fn first_failure<T>(results: Vec<Result<T>>) -> Result<Vec<T>> {
    if results.iter().any(Result::is_err) {
        let mut errors = results.into_iter().filter_map(Result::err);
        let first = errors.next().expect("one failed");
        return Err(std::iter::once(first)
            .chain(errors)
            .reduce(|chosen, e| if chosen.is::<Stopped>() { e } else { chosen })
            .expect("one failed"));
    }
    Ok(results
        .into_iter()
        .map(|r| r.expect("none failed"))
        .collect())
}

/// How snapshots are scheduled (`backup.transfer.parallel`): at most `parallel` in flight
/// (being made or downloading), and on each node at most one being made. So a server makes the
/// next snapshot while the previous one downloads, and holds at most `parallel` of wqm's
/// snapshots at once (making one takes about twice its size of temporary space); in a cluster,
/// the nodes work side by side. A failure anywhere stops the others, each deleting its server
/// snapshot as it stops.
pub(crate) struct Lanes {
    in_flight: Semaphore,
    /// One permit per node (by URL): making a snapshot.
    making: std::sync::Mutex<BTreeMap<String, Arc<Semaphore>>>,
    stop: watch::Sender<bool>,
    since: Instant,
}

/// A snapshot's turn: a slot among `parallel` and, until `made`, its node's permit to make one.
pub(crate) struct Turn<'a> {
    _slot: SemaphorePermit<'a>,
    making: Option<OwnedSemaphorePermit>,
    /// When the turn came.
    since: Instant,
}

impl Turn<'_> {
    /// The node may start the next: this snapshot is made (create), or this upload is all sent
    /// (restore).
    pub(crate) fn release_node(&mut self) {
        self.making = None;
    }
}

/// This transfer stopped because another failed (never the error reported).
#[derive(Debug, thiserror::Error)]
#[error("stopped because another transfer failed")]
pub(crate) struct Stopped;

impl Lanes {
    pub(crate) fn new(parallel: usize) -> Self {
        Lanes {
            in_flight: Semaphore::new(parallel),
            making: Default::default(),
            stop: watch::Sender::new(false),
            since: Instant::now(),
        }
    }

    /// Waits for a turn on `node`: its permit to make a snapshot first (so a slot is not held
    /// while the node is busy), then a slot. Fails when another transfer failed or on Ctrl-C.
    pub(crate) async fn turn(&self, node: &Client) -> Result<Turn<'_>> {
        let making = self
            .making
            .lock()
            .expect("lanes lock")
            .entry(node.display_url())
            .or_insert_with(|| Arc::new(Semaphore::new(1)))
            .clone();
        let permits = async {
            let making = making.acquire_owned().await;
            let slot = self.in_flight.acquire().await;
            (making, slot)
        };
        tokio::select! {
            () = self.until_stopped() => Err(Stopped.into()),
            _ = progress::interrupted() => Err(crate::exit::Interrupted.into()),
            (making, slot) = permits => Ok(Turn {
                _slot: slot.expect("the semaphore is never closed"),
                making: Some(making.expect("the semaphore is never closed")),
                since: Instant::now(),
            }),
        }
    }

    /// Completes once a transfer failed.
    pub(crate) async fn until_stopped(&self) {
        let mut stop = self.stop.subscribe();
        let _ = stop.wait_for(|stopped| *stopped).await;
    }

    /// Runs `job`; its failure stops the others.
    pub(crate) async fn run<T>(
        &self,
        job: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let result = job.await;
        if result.as_ref().is_err_and(|e| !e.is::<Stopped>()) {
            self.stop.send_replace(true);
        }
        result
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
/// network and the disk work at the same time. Memory is bounded by the channel. Progress
/// advances here, on the async side that holds it (a restore's upload, whose bytes never pass an
/// async side it could borrow, counts them instead: see `restore::upload`).
struct ChannelSink<'a> {
    sender: mpsc::Sender<Bytes>,
    progress: &'a dyn Progress,
    /// This download's bar (`Progress::begin_transfer`).
    bar: usize,
    delivered: u64,
}

impl AsyncSink for ChannelSink<'_> {
    async fn deliver(&mut self, chunk: Bytes) -> Result<()> {
        if self.delivered == 0 {
            crate::failpoint::hit("create:downloading")?;
        }
        self.delivered += chunk.len() as u64;
        self.progress.advance_transfer(self.bar, chunk.len() as u64);
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

impl Writing<'_> {
    /// Streams `reader` into the backup at `rel`.
    fn store(
        &self,
        rel: &str,
        kind: FileKind,
        compression: Compression,
        mut reader: impl io::Read,
    ) -> Result<FileEntry> {
        let mut sink = self
            .staging
            .create_file(rel, kind, compression, self.algorithm)?;
        io::copy(&mut reader, &mut sink)
            .with_context(|| format!("cannot write `{}`", sink.path().display()))?;
        Ok(sink.finish()?)
    }

    /// `state.db` and, beside it, `search.db` and `graph.db`: each copied with SQLite's online
    /// backup API into the staging directory, then stored (compressed, hashed) as `sqlite/<file>`.
    fn back_up_databases(&mut self, wanted: &Databases, settings: &Settings) -> Result<()> {
        let state_db = &settings.state_db;
        if *wanted == Databases::All && !state_db.is_file() {
            self.manifest.notes.push(format!(
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
            self.back_up_database(name, &source)?;
        }
        Ok(())
    }

    /// One database, `name` at `source`: an online copy beside the backup's files, stored, then
    /// removed.
    fn back_up_database(&mut self, name: &str, source: &Path) -> Result<()> {
        self.progress
            .step(&format!("copying `{}`", source.display()));
        let copy = self
            .staging
            .dir()
            .join(layout::SQLITE_DIR)
            .join(format!(".{name}.copy"));
        if let Err(e) = sqlite::backup_to(source, &copy) {
            let full = matches!(&e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull);
            return Err(self.database_failed("copy", source, &copy, e.to_string(), full));
        }
        let schema_version = sqlite::open_immutable(&copy)
            .and_then(|c| sqlite::schema_version(&c))
            .unwrap_or(None);
        let rel = layout::database_path(name, self.compression);
        let stored = fs::File::open(&copy)
            .with_context(|| format!("cannot read `{}`", copy.display()))
            .and_then(|file| self.store(&rel, FileKind::SqliteDatabase, self.compression, file));
        let entry = match stored {
            Ok(entry) => entry,
            Err(e) => {
                let full = e
                    .chain()
                    .filter_map(|c| c.downcast_ref::<io::Error>())
                    .any(|e| e.kind() == io::ErrorKind::StorageFull);
                return Err(self.database_failed("store", source, &copy, format!("{e:#}"), full));
            }
        };
        fs::remove_file(&copy).with_context(|| format!("cannot remove `{}`", copy.display()))?;
        let detail =
            schema_version.map_or("no schema version".to_string(), |v| format!("schema {v}"));
        self.record(entry, detail, None);
        self.manifest.databases.push(DatabaseDetails {
            name: name.to_string(),
            file: rel,
            schema_version,
        });
        Ok(())
    }

    /// A database `step` (`copy`, `store`) failed: the error says which file, where, and how
    /// much room is left there once its partial copy is gone.
    fn database_failed(
        &self,
        step: &'static str,
        database: &Path,
        copy: &Path,
        reason: String,
        full: bool,
    ) -> anyhow::Error {
        let _ = fs::remove_file(copy);
        let dir = crate::fs::parent_dir(self.target).to_path_buf();
        DatabaseCopyError {
            step,
            database: database.to_path_buf(),
            target: self.target.to_path_buf(),
            free: crate::fs::available_space(&dir).ok(),
            dir,
            reason,
            full,
        }
        .into()
    }

    /// The config file, when the request wants it and there is one, with its secrets replaced
    /// (`secrets::redact_config`).
    fn back_up_config(&mut self, settings: &Settings, request: &Request) -> Result<()> {
        let Some(config) = settings.config_file.as_ref().filter(|_| request.config) else {
            if request.config {
                self.manifest.notes.push(
                    "no configuration file was found; the backup holds no config".to_string(),
                );
            }
            return Ok(());
        };
        progress::check_interrupted()?;
        let rel = format!("{}/config.yaml", layout::CONFIG_DIR);
        let text = fs::read_to_string(config)
            .with_context(|| format!("cannot read the config file `{}`", config.display()))?;
        // No secret leaves the machine: only the secret values are replaced in the copy.
        let redacted = secrets::redact_config(&text);
        if redacted.rewritten {
            self.manifest.notes.push("the config copy was written out anew to leave its secrets out (its layout is beyond editing in place): comments and formatting were not kept".to_string());
        }
        let entry = self.store(
            &rel,
            FileKind::Config,
            Compression::None,
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
        self.record(entry, detail, None);
        self.manifest.config_redacted = redacted.redactions;
        Ok(())
    }
}

/// A database could not be copied into the backup (SQLite's online copy, or storing that copy).
#[derive(Debug, thiserror::Error)]
#[error("cannot {step} the database `{}` for the backup `{}`: {reason}", database.display(), target.display())]
pub struct DatabaseCopyError {
    step: &'static str,
    database: PathBuf,
    target: PathBuf,
    /// The directory the backup is written in, and the bytes free there after the failure.
    dir: PathBuf,
    free: Option<u64>,
    reason: String,
    /// The disk was full.
    full: bool,
}

impl Classify for DatabaseCopyError {
    fn exit_code(&self) -> ExitCode {
        ExitCode::Failure
    }

    fn hint(&self) -> Option<String> {
        let dir = self.dir.display();
        let free = self.free.map_or("free space unknown".to_string(), |f| {
            format!("{f} bytes free")
        });
        Some(if self.full {
            format!("the disk of `{dir}` is full ({free} there now): free space there or write the backup to another disk, then run the command again; nothing partial was left behind")
        } else {
            format!(
                "check that `{}` can be read and `{dir}` written ({free} there), then run the command again; nothing partial was left behind",
                self.database.display()
            )
        })
    }
}

/// `verify_after_backup`: re-reads every staged file and checks it before the backup is renamed
/// into place.
pub(crate) fn verify_staged(staging: &Staging, progress: &dyn Progress) -> Result<()> {
    progress.step("verifying the new backup");
    let mut options = verify::Options::new(verify::Depth::Checksums, Default::default());
    options.chunks = verify::ChunkTally::known_sound(staging.chunks_found_sound());
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

//! Creating a backup: Qdrant snapshots streamed to disk, consistent SQLite copies, the config,
//! and the manifest last; staged, verified, then renamed into place.
//!
//! `create` runs the pipeline: `survey` (what there is, reading only), then into a `Writing`
//! (`writing`: the backup being written, the config and the metadata) `fetch` (the collections and
//! shards, paced by `transfer::Lanes`), `download` (each snapshot made, streamed to disk, deleted
//! from the server), `databases` (the SQLite copies).

mod databases;
mod download;
mod fetch;
pub mod remote;
pub mod replace;
mod sending;
mod survey;
mod writing;

pub use sending::{remove_dead_stagings, require_exclusive_names, Sending};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use crate::cleanup::{self, Cleaned};
use crate::config::Settings;
use crate::exit::{ExitCode, Failure};
use crate::format::layout;
use crate::format::manifest::{Collections, Manifest};
use crate::progress::{self, Progress};
use crate::qdrant::Client;
use crate::store::chunks::{self, Added, Selection, Subset};
use crate::store::lock::RepoLock;
use crate::store::Staging;
use crate::transfer::{Lanes, Phase, Phases};
use crate::verify::{verify_staged, Verified};

pub use databases::DatabaseCopyError;
use survey::survey;
use writing::{add_metadata, Writing};

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
    /// An incremental backup staged for a repository on a backend: that repository's chunk
    /// store as listed (its chunks are reused, only the others stored locally).
    pub listed: Option<chunks::Listed>,
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
    /// How many chunks found in the store an incremental backup compared with its data.
    pub chunks_compared: Option<u64>,
    /// What `verify_after_backup` read of the chunk store (when it ran).
    pub verified: Option<Verified>,
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

    // Held until the backup is in place, before its staging directory exists: no prune deletes
    // or collects meanwhile, so the chunks of a backup a `--force` replaces stay until the new
    // one is committed, and every chunk this run reuses stays.
    let backups_dir = crate::fs::parent_dir(&request.target);
    crate::fs::create_private_dir_all(backups_dir)
        .map_err(layout::LayoutError::io("cannot create", backups_dir))?;
    let repo_lock = RepoLock::adding(backups_dir, "backup create")?;
    // Runs that died here left snapshots on the server and staging directories: clean them first.
    let cleaned = cleanup::dead_runs(&[backups_dir], settings).await;
    phases.end("cleanup");
    let mut staging = Staging::begin(&request.target, request.replace)?;
    if request.incremental {
        // Blocking work (it may wait for an older wqm using the store) runs off the async
        // workers, as the other blocking steps below do.
        tokio::task::block_in_place(|| {
            staging.use_chunk_store(chunks::DEFAULT_AVERAGE, request.listed.as_ref())
        })?;
        let cycle = settings.backup.verification.compare_reused_cycle;
        staging.compare_reused(night_share(timestamp, cycle));
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
        tokio::task::block_in_place(|| writing.back_up_databases(&request.databases, settings))?;
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
    let mut verified = None;
    if settings.backup.verification.verify_after_backup {
        verified = Some(tokio::task::block_in_place(|| {
            verify_staged(&staging, progress)
        })?);
        phases.end("verify");
    }
    let chunks_added = request.incremental.then(|| staging.chunks_added());
    let chunks_compared = request.incremental.then(|| staging.chunks_compared());
    // A run suspended past its lock's stale time may have been overtaken by a prune: it must
    // not put a backup in place whose chunks may be gone.
    repo_lock.check()?;
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
        chunks_compared,
        verified,
    })
}

/// The reused chunks a create at `timestamp` compares with its data: group `day % cycle + 1`
/// of `cycle` (by UTC day), so nightly creates compare every chunk once per `cycle` days.
fn night_share(timestamp: f64, cycle: std::num::NonZeroU32) -> Selection {
    let t = cycle.get();
    let day = (timestamp / 86_400.0).floor() as u64;
    let n = (day % u64::from(t)) as u32 + 1;
    Selection::new(Subset::Group { n, t }, 0)
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
    crate::store::checked_backup_name(&request.target)?;
    if request.target.exists() && !request.replace {
        return Err(layout::LayoutError::AlreadyExists {
            path: request.target.clone(),
        }
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nightly_creates_compare_each_group_of_the_cycle_in_turn() {
        let cycle = std::num::NonZeroU32::new(7).unwrap();
        let ids: Vec<chunks::ChunkId> = (0..2000u32)
            .map(|i| chunks::ChunkId::of(&i.to_le_bytes()))
            .collect();
        let mut times_compared = vec![0; ids.len()];
        // Seven nights from 23:30 UTC on: each night's group, every chunk once.
        let start = 20_000.0 * 86_400.0 + 84_600.0;
        for night in 0..7 {
            let share = night_share(start + f64::from(night) * 86_400.0, cycle);
            for (count, id) in times_compared.iter_mut().zip(&ids) {
                *count += u32::from(share.reads(id));
            }
        }
        assert!(times_compared.iter().all(|&c| c == 1));
        // Two creates the same day compare the same group; a cycle of 1 compares everything.
        let once = night_share(start, cycle);
        let again = night_share(start + 60.0, cycle);
        assert!(ids.iter().all(|id| once.reads(id) == again.reads(id)));
        let every = night_share(start, std::num::NonZeroU32::MIN);
        assert!(ids.iter().all(|id| every.reads(id)));
    }
}

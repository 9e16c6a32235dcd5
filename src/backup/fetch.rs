//! Every collection's snapshots fetched side by side: one per collection, or one per shard from
//! a node holding it, between two exact counts.

use std::time::Instant;

use anyhow::Result;

use super::survey::{Source, Survey};
use super::writing::Writing;
use super::SnapshotTimes;
use crate::format::layout;
use crate::format::manifest::{CollectionDetails, FileEntry, FileKind, ShardDetails};
use crate::qdrant::cluster;
use crate::qdrant::{Client, Scope};
use crate::transfer::{first_failure, Lanes};

impl Writing<'_> {
    /// Every collection's snapshots, fetched side by side as `lanes` allows, in the survey's
    /// order. A failure stops the others (each deletes its server snapshot as it stops) and is
    /// the one reported.
    pub(super) async fn fetch_collections(
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
    pub(super) fn record_collection(&mut self, fetched: Fetched) {
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
}

/// A collection's snapshots, fetched: what the manifest and the summary record of it.
pub(super) struct Fetched {
    pub(super) name: String,
    pub(super) details: CollectionDetails,
    /// Each stored file, its summary detail and its times.
    pub(super) files: Vec<(FileEntry, String, SnapshotTimes)>,
    pub(super) leftovers: Vec<String>,
}

/// A shard's snapshot, fetched: its manifest details, file, summary detail, times, leftover.
type FetchedShard = (
    ShardDetails,
    FileEntry,
    String,
    SnapshotTimes,
    Option<String>,
);

//! What there is to back up, asked of the server before anything is written.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use super::Request;
use crate::config::Settings;
use crate::exit::{ExitCode, Failure};
use crate::format::layout;
use crate::progress::Progress;
use crate::qdrant::cluster;
use crate::qdrant::{self, Client};

/// Where each collection's data comes from: one snapshot of the whole collection (a single
/// node), or one snapshot per shard, each from a node holding an active replica (a cluster).
pub(super) enum Source {
    Collection,
    Shards(Vec<(cluster::Shard, u64)>),
}

/// What the checks before writing found on the server.
pub(super) struct Survey {
    pub(super) qdrant_version: String,
    /// The cluster, when the server is one.
    pub(super) topology: Option<cluster::Topology>,
    /// The collections to back up, each with where its data comes from.
    pub(super) collections: Vec<(String, Source)>,
    pub(super) aliases: Vec<qdrant::Alias>,
}

/// Asks the server what there is to back up (reading only): its version, the cluster, the
/// collections (each storable under its name) and their aliases, and in a cluster a node with
/// an active replica for every shard.
pub(super) async fn survey(
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

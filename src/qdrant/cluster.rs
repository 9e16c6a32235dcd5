//! Qdrant's distributed mode: reaching every node, and which node holds which shard.
//!
//! A snapshot covers only the node that makes it, and there is no cluster-wide snapshot API, so
//! a cluster is backed up shard by shard, each from a node holding an active replica, and
//! restored shard by shard into nodes holding a replica. Nodes are addressed directly: their
//! REST URLs come from `qdrant.nodes` / `QDRANT_NODES`; without those, each peer's host is tried
//! with the entry point's REST port, and a node is accepted only if it reports the peer id the
//! cluster gave it.

use std::collections::BTreeMap;

use reqwest::Url;
use serde_json::Value;

use super::api::ClusterStatus;
use super::error::QdrantError;
use super::Client;
use crate::config::Timeouts;
use crate::exit::{Classify, ExitCode};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot reach every node of the Qdrant cluster: {}", list(unreached))]
    Undiscovered { unreached: Vec<(u64, String)> },
    #[error("node `{url}` of `qdrant.nodes`/QDRANT_NODES is not a peer of the cluster at the entry point (it says it is peer {peer})")]
    Stranger { url: String, peer: String },
    #[error("shard {shard} of collection `{collection}` has no active replica on a reachable node (replicas: {replicas}); a backup without it would be incomplete")]
    NoActiveReplica {
        collection: String,
        shard: u32,
        replicas: String,
    },
    #[error("shard {shard} of collection `{collection}` has no replica on a reachable node to restore into")]
    NoReplicaToRestore { collection: String, shard: u32 },
}

fn list(peers: &[(u64, String)]) -> String {
    peers
        .iter()
        .map(|(id, uri)| format!("peer {id} ({uri})"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Classify for ClusterError {
    fn exit_code(&self) -> ExitCode {
        match self {
            ClusterError::Stranger { .. } => ExitCode::Usage,
            _ => ExitCode::Failure,
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            ClusterError::Undiscovered { .. } | ClusterError::Stranger { .. } => {
                "list the REST URL of every node in `qdrant.nodes` (or QDRANT_NODES=http://node1:6333,http://node2:6333,…)".to_string()
            }
            ClusterError::NoActiveReplica { .. } | ClusterError::NoReplicaToRestore { .. } => {
                "bring the nodes holding that shard back (or add them to `qdrant.nodes`), then run the command again; nothing was written".to_string()
            }
        })
    }
}

/// Every reachable node of a cluster, by peer id.
#[derive(Debug)]
pub struct Topology {
    pub entry_peer: u64,
    pub nodes: BTreeMap<u64, Client>,
    /// Configured nodes that did not answer (tolerated while other replicas cover their shards).
    pub down: Vec<String>,
}

impl Topology {
    pub fn node(&self, peer: u64) -> Option<&Client> {
        self.nodes.get(&peer)
    }
}

/// The cluster `entry` belongs to, or `None` when Qdrant runs as a single node.
pub async fn topology(
    entry: &Client,
    settings: &crate::config::Settings,
) -> Result<Option<Topology>, anyhow::Error> {
    let status = entry.cluster_status().await?;
    if !status.enabled() {
        return Ok(None);
    }
    let qdrant = &settings.qdrant;
    let timeouts = settings.backup.transfer.timeouts();
    discover(
        entry,
        &status,
        &qdrant.nodes,
        qdrant.api_key.as_deref(),
        qdrant.ca_cert.as_deref(),
        &timeouts,
    )
    .await
    .map(Some)
}

/// Finds a client for every node of the cluster `entry` belongs to (`status` is its `/cluster`).
pub async fn discover(
    entry: &Client,
    status: &ClusterStatus,
    configured: &[String],
    api_key: Option<&str>,
    ca_cert: Option<&std::path::Path>,
    timeouts: &Timeouts,
) -> Result<Topology, anyhow::Error> {
    let entry_peer = status.peer_id.ok_or_else(|| QdrantError::Protocol {
        what: "cluster status".into(),
        reason: "no peer_id".into(),
    })?;
    let connect = |url: &str| Client::new(url, api_key, ca_cert, timeouts.clone());
    let mut nodes = BTreeMap::from([(entry_peer, entry.clone())]);
    let mut down = Vec::new();
    if !configured.is_empty() {
        for url in configured {
            let client = connect(url)?;
            match client.cluster_status().await {
                Ok(node) => {
                    let peer = node
                        .peer_id
                        .filter(|p| status.peers.contains_key(&p.to_string()));
                    let Some(peer) = peer else {
                        return Err(ClusterError::Stranger {
                            url: client.display_url(),
                            peer: node.peer_id.map_or("none".into(), |p| p.to_string()),
                        }
                        .into());
                    };
                    nodes.insert(peer, client);
                }
                Err(QdrantError::Connect { .. } | QdrantError::Timeout { .. }) => {
                    down.push(client.display_url())
                }
                Err(e) => return Err(e.into()),
            }
        }
        return Ok(Topology {
            entry_peer,
            nodes,
            down,
        });
    }
    let mut unreached = Vec::new();
    for (peer, info) in &status.peers {
        let Ok(peer) = peer.parse::<u64>() else {
            continue;
        };
        if nodes.contains_key(&peer) {
            continue;
        }
        match guess_url(entry.base_url(), &info.uri) {
            Some(url) => {
                let client = connect(url.as_str())?;
                match client.cluster_status().await {
                    Ok(node) if node.peer_id == Some(peer) => {
                        nodes.insert(peer, client);
                    }
                    _ => unreached.push((peer, info.uri.clone())),
                }
            }
            None => unreached.push((peer, info.uri.clone())),
        }
    }
    if !unreached.is_empty() {
        return Err(ClusterError::Undiscovered { unreached }.into());
    }
    Ok(Topology {
        entry_peer,
        nodes,
        down,
    })
}

/// The REST URL a peer most likely has: its (p2p) host with the entry point's scheme and port.
fn guess_url(entry: &Url, peer_uri: &str) -> Option<Url> {
    let peer = Url::parse(peer_uri).ok()?;
    let mut url = entry.clone();
    url.set_host(peer.host_str()).ok()?;
    Some(url)
}

/// One shard of a collection and where its replicas are.
#[derive(Clone, Debug)]
pub struct Shard {
    pub id: u32,
    pub key: Option<Value>,
    /// (peer id, state), e.g. `Active`, `Dead`, `Partial`.
    pub replicas: Vec<(u64, String)>,
}

impl Shard {
    /// A reachable node holding an active replica: of those, the one with the fewest shards
    /// taken from it so far (`taken`, by peer), so the nodes share the work; on a tie the entry
    /// node, then the first listed.
    pub fn active_on(&self, topology: &Topology, taken: &BTreeMap<u64, usize>) -> Option<u64> {
        self.replicas
            .iter()
            .filter(|(peer, state)| state == "Active" && topology.node(*peer).is_some())
            .map(|r| r.0)
            .enumerate()
            .min_by_key(|&(listed, peer)| {
                let load = taken.get(&peer).copied().unwrap_or(0);
                (load, peer != topology.entry_peer, listed)
            })
            .map(|(_, peer)| peer)
    }

    /// Any reachable node holding a replica (to restore into).
    pub fn held_by(&self, topology: &Topology) -> Option<u64> {
        self.replicas
            .iter()
            .map(|r| r.0)
            .find(|peer| topology.node(*peer).is_some())
    }

    pub fn describe_replicas(&self, topology: &Topology) -> String {
        self.replicas
            .iter()
            .map(|(peer, state)| {
                format!(
                    "peer {peer} {state}{}",
                    if topology.node(*peer).is_some() {
                        ""
                    } else {
                        ", unreachable"
                    }
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The shards of `collection` and their replicas, as the entry node sees them.
pub async fn shards(entry: &Client, collection: &str) -> Result<Vec<Shard>, QdrantError> {
    let view = entry.collection_cluster(collection).await?;
    let mut shards: BTreeMap<u32, Shard> = BTreeMap::new();
    let mut add = |id: u32, key: &Option<Value>, peer: u64, state: &str| {
        shards
            .entry(id)
            .or_insert_with(|| Shard {
                id,
                key: key.clone(),
                replicas: Vec::new(),
            })
            .replicas
            .push((peer, state.to_string()));
    };
    for local in &view.local_shards {
        add(local.shard_id, &local.shard_key, view.peer_id, &local.state);
    }
    for remote in &view.remote_shards {
        add(
            remote.shard_id,
            &remote.shard_key,
            remote.peer_id,
            &remote.state,
        );
    }
    Ok(shards.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peers_rest_url_is_its_host_with_the_entry_port() {
        let entry = Url::parse("https://10.0.0.1:6333/").unwrap();
        assert_eq!(
            guess_url(&entry, "http://10.0.0.7:6335/").unwrap().as_str(),
            "https://10.0.0.7:6333/"
        );
        assert!(guess_url(&entry, "not a url").is_none());
    }

    #[test]
    fn an_active_reachable_replica_is_chosen_and_the_entry_preferred() {
        let timeouts = Timeouts {
            connect: std::time::Duration::from_secs(1),
            read_idle: std::time::Duration::from_secs(1),
            operation: std::time::Duration::from_secs(1),
            retries: 0,
            retry_for: std::time::Duration::ZERO,
        };
        let client = || Client::new("http://127.0.0.1:1", None, None, timeouts.clone()).unwrap();
        let topology = Topology {
            entry_peer: 1,
            nodes: BTreeMap::from([(1, client()), (2, client())]),
            down: vec![],
        };
        let shard = |replicas: &[(u64, &str)]| Shard {
            id: 0,
            key: None,
            replicas: replicas.iter().map(|(p, s)| (*p, s.to_string())).collect(),
        };
        let none = BTreeMap::new();
        assert_eq!(
            shard(&[(2, "Active"), (1, "Active")]).active_on(&topology, &none),
            Some(1)
        );
        assert_eq!(
            shard(&[(2, "Active"), (1, "Active")]).active_on(&topology, &BTreeMap::from([(1, 1)])),
            Some(2),
            "the node that gave fewer shards so far"
        );
        assert_eq!(
            shard(&[(2, "Active"), (1, "Dead")]).active_on(&topology, &BTreeMap::from([(2, 5)])),
            Some(2)
        );
        assert_eq!(
            shard(&[(3, "Active"), (1, "Dead")]).active_on(&topology, &none),
            None,
            "peer 3 is unreachable"
        );
        assert_eq!(
            shard(&[(3, "Active"), (1, "Dead")]).held_by(&topology),
            Some(1)
        );
        assert_eq!(
            shard(&[(3, "Active"), (1, "Dead")]).describe_replicas(&topology),
            "peer 3 Active, unreachable; peer 1 Dead"
        );
    }
}

//! Qdrant's REST API types, as wqm reads them (only the parts it uses), and the scope of a
//! snapshot call.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// `GET /`.
#[derive(Clone, Debug, Deserialize)]
pub struct ServerInfo {
    pub version: String,
}

/// `GET /collections/{c}` (the parts wqm uses).
#[derive(Clone, Debug, Deserialize)]
pub struct CollectionInfo {
    pub status: String,
    pub config: CollectionConfig,
    #[serde(default)]
    pub payload_schema: Value,
}

#[derive(Clone, Debug, Deserialize)]
pub struct CollectionConfig {
    pub params: Value,
    /// `hnsw_config`, `optimizer_config`, `wal_config`, `quantization_config`, ...
    #[serde(flatten)]
    pub rest: serde_json::Map<String, Value>,
}

impl CollectionConfig {
    /// The whole configuration, as Qdrant reports it.
    pub fn whole(&self) -> Value {
        let mut whole = self.rest.clone();
        whole.insert("params".to_string(), self.params.clone());
        Value::Object(whole)
    }
}

/// An alias from `GET /aliases`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Alias {
    pub alias_name: String,
    pub collection_name: String,
}

/// A snapshot as Qdrant describes it.
#[derive(Clone, Debug, Deserialize)]
pub struct SnapshotDescription {
    pub name: String,
    #[serde(default)]
    pub size: Option<u64>,
    /// sha256 of the snapshot, kept by Qdrant beside it (absent on S3 storage).
    #[serde(default)]
    pub checksum: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct Envelope<T> {
    pub(super) result: T,
}

#[derive(Deserialize)]
pub(super) struct CollectionList {
    pub(super) collections: Vec<Named>,
}

#[derive(Deserialize)]
pub(super) struct Named {
    pub(super) name: String,
}

#[derive(Deserialize)]
pub(super) struct AliasList {
    pub(super) aliases: Vec<Alias>,
}

#[derive(Deserialize)]
pub(super) struct Count {
    pub(super) count: u64,
}

/// `GET /cluster`.
#[derive(Clone, Debug, Deserialize)]
pub struct ClusterStatus {
    /// `enabled` or `disabled`.
    pub status: String,
    /// This node's peer id.
    #[serde(default)]
    pub peer_id: Option<u64>,
    /// Peer id → `{ "uri": "http://host:p2p-port/" }`.
    #[serde(default)]
    pub peers: BTreeMap<String, Peer>,
}

impl ClusterStatus {
    pub fn enabled(&self) -> bool {
        self.status == "enabled"
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct Peer {
    pub uri: String,
}

/// `GET /collections/{c}/cluster`, as seen by one node.
#[derive(Clone, Debug, Deserialize)]
pub struct CollectionCluster {
    pub peer_id: u64,
    #[serde(default)]
    pub local_shards: Vec<LocalShard>,
    #[serde(default)]
    pub remote_shards: Vec<RemoteShard>,
    #[serde(default)]
    pub shard_transfers: Vec<Value>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct LocalShard {
    pub shard_id: u32,
    #[serde(default)]
    pub shard_key: Option<Value>,
    pub state: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct RemoteShard {
    pub shard_id: u32,
    #[serde(default)]
    pub shard_key: Option<Value>,
    pub peer_id: u64,
    pub state: String,
}

/// What a snapshot call works on: a whole collection, or one shard of it.
#[derive(Clone, Copy, Debug)]
pub enum Scope<'a> {
    Collection(&'a str),
    Shard(&'a str, u32),
}

impl Scope<'_> {
    pub(super) fn path(&self, tail: &[&str]) -> Vec<String> {
        let mut segments = match self {
            Scope::Collection(c) => vec!["collections".to_string(), c.to_string()],
            Scope::Shard(c, id) => vec![
                "collections".to_string(),
                c.to_string(),
                "shards".to_string(),
                id.to_string(),
            ],
        };
        segments.extend(tail.iter().map(|s| s.to_string()));
        segments
    }
}

impl std::fmt::Display for Scope<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Collection(c) => write!(f, "`{c}`"),
            Scope::Shard(c, id) => write!(f, "shard {id} of `{c}`"),
        }
    }
}

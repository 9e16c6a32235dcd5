//! The collections' uploads: a collection snapshot, or a collection re-created and its shards
//! loaded each into a node holding it, paced by `transfer::Lanes`.

use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, Notify};

use super::check::{Inspected, Problem};
use super::plan::custom_sharding;
use super::precheck::{Claim, Precheck};
use super::{CollectionAction, CollectionPlan, Plan};
use crate::config::TransferSettings;
use crate::exit::Interrupted;
use crate::format::manifest::FileEntry;
use crate::progress::{self, Progress};
use crate::qdrant::cluster;
use crate::qdrant::{Client, QdrantError, Scope};
use crate::store::{Compare, Damaged};
use crate::transfer;
use crate::workdir::{Record, WorkDir};

/// What the uploads of a restore share: where they go, what from, and how they are paced.
pub(super) struct Uploads<'a> {
    pub(super) client: &'a Client,
    pub(super) plan: &'a Plan,
    pub(super) transfer: &'a TransferSettings,
    pub(super) work: &'a WorkDir,
    pub(super) progress: &'a dyn Progress,
    pub(super) lanes: &'a transfer::Lanes,
    /// `verify_before_restore`: what every held-back last piece also waits for.
    pub(super) precheck: Option<&'a Arc<Precheck>>,
}

impl Uploads<'_> {
    /// One collection: its snapshot uploaded, or its shards (`restore_shards`). `began` says
    /// whether it got as far as Qdrant may have changed anything (an upload Qdrant got all of,
    /// a collection created). Returns where its shards went.
    pub(super) async fn restore_collection(
        &self,
        collection: &CollectionPlan,
        began: &Cell<bool>,
    ) -> Result<Option<Vec<(u32, u32)>>> {
        let name = collection.name.as_str();
        let details = &collection.details;
        if !details.shards.is_empty() {
            return self.restore_shards(collection, began).await.map(Some);
        }
        let entry = collection
            .snapshots
            .first()
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
        let details = &collection.details;
        let topology = plan.topology.as_ref();
        let custom = custom_sharding(details);
        if let (CollectionAction::Create, Some(precheck)) = (collection.action, self.precheck) {
            // Creating the collection changes the server before any upload could hold back a
            // last piece: the whole backup is checked first.
            self.progress.step("checking the backup");
            precheck.wait().await?;
        }
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
        // The plan holds one entry per shard, in the shards' order (or blocked the restore).
        let jobs = collection
            .snapshots
            .iter()
            .zip(&targets)
            .map(|(entry, &target)| {
                self.lanes.run(async move {
                    let node = node_holding(client, topology, live, name, target)?;
                    let mut turn = self.lanes.turn(node).await?;
                    self.upload(node, entry, Scope::Shard(name, target), &mut turn, began)
                        .await
                })
            });
        transfer::first_failure(futures_util::future::join_all(jobs).await)?;
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
    details: &crate::format::manifest::CollectionDetails,
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
pub(super) fn node_holding<'a>(
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
        turn: &mut transfer::Turn<'_>,
        received: &Cell<bool>,
    ) -> Result<()> {
        upload(
            client,
            self.plan,
            entry,
            scope,
            self.transfer,
            self.work,
            self.progress,
            (turn, self.lanes, received),
            self.precheck,
        )
        .await
    }
}

/// `Uploads::upload`; sets `received` once all of the snapshot was handed to Qdrant.
#[allow(clippy::too_many_arguments)]
async fn upload(
    client: &Client,
    plan: &Plan,
    entry: &FileEntry,
    scope: Scope<'_>,
    transfer: &TransferSettings,
    work: &WorkDir,
    progress: &dyn Progress,
    (turn, lanes, received): (&mut transfer::Turn<'_>, &transfer::Lanes, &Cell<bool>),
    precheck: Option<&Arc<Precheck>>,
) -> Result<()> {
    // With `?checksum=`, Qdrant compares the content's sha256 before it changes anything:
    // reading compares the stored bytes' checksum then, not a second sha256 (when it can).
    let wanted = if transfer.checksum && plan.server_compares_checksum {
        Compare::stored_for(entry)
    } else {
        Compare::Content
    };
    // This upload checks its snapshot; the rest of the backup is checked meanwhile.
    let claim = match precheck {
        Some(precheck) => precheck.claim(&entry.path, wanted),
        // No pre-check to hold back for: Qdrant's comparison is the content's check.
        None if wanted == Compare::Stored => Claim::Passed,
        None => Claim::Content,
    };
    let content = plan.source.open_compared(entry, claim.compare())?;
    let server_check = match claim {
        Claim::LeftToServer(check) => Some(check),
        Claim::Content | Claim::Passed => None,
    };
    // The reader thread counts what it hands over (`sent`, and the meter that draws it) and says
    // when the last piece went (`all_sent`); memory is bounded by the channel.
    let sent = Arc::new(AtomicU64::new(0));
    let (sender, mut receiver) = mpsc::channel::<io::Result<Bytes>>(8);
    let all_sent = Arc::new(Notify::new());
    // Its bar stays while Qdrant recovers the snapshot, until the answer.
    let meter = progress.transfer(&scope.to_string(), Some(entry.content_size));
    let stream = Inspected {
        sender,
        sent: sent.clone(),
        all_sent: all_sent.clone(),
        meter: meter.clone(),
        precheck: precheck.cloned(),
        left_to_server: server_check.is_some(),
    };
    let reader = tokio::task::spawn_blocking(move || stream.run(content));
    let body = futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx));
    let file_name = upload_name(scope);
    let place = transfer::place_of(client, scope);
    work.record(&Record::UploadStarted {
        place: place.clone(),
        name: file_name.clone(),
    })?;
    crate::failpoint::hit("restore:uploading")?;
    let mut uploading = Box::pin(client.upload_snapshot(
        scope,
        &file_name,
        body,
        entry.content_size,
        transfer.checksum.then_some(entry.content_sha256.as_str()),
    ));
    let mut released = false;
    let result = loop {
        tokio::select! {
            result = &mut uploading => break result.map_err(anyhow::Error::from),
            _ = progress::interrupted() => break Err(Interrupted.into()),
            // Once all is sent Qdrant recovers it: that is waited for, whatever else failed.
            () = lanes.until_stopped(), if !released => break Err(transfer::OtherFailed.into()),
            // The node may take the next upload while it recovers this one.
            () = all_sent.notified(), if !released => {
                turn.release_node();
                released = true;
            }
        }
    };
    drop(meter);
    // Dropping the request drops the body: a reader still sending stops at once.
    drop(uploading);
    let refused = result
        .as_ref()
        .err()
        .and_then(|e| checksum_refusal(e, entry));
    // Qdrant never recovers a snapshot it did not get all of (the last piece waits for the
    // checks), so an upload that ended short of it changed nothing; nor one it refused for
    // its checksum, which it compares first.
    if sent.load(Ordering::Relaxed) == entry.content_size && refused.is_none() {
        received.set(true);
    }
    let checked = reader.await;
    let result = match (checked, refused) {
        (Ok(Err(Problem::Damaged(damaged))), _) | (_, Some(damaged)) => Err(damaged.into()),
        (Err(e), None) if result.is_ok() => Err(anyhow!("reading `{}` failed: {e}", entry.path)),
        _ => result,
    };
    if let Some(check) = server_check {
        match &result {
            Ok(()) => check.confirm(),
            Err(e) => match e.downcast_ref::<Damaged>() {
                Some(damaged) => check.refuse(damaged),
                None => drop(check),
            },
        }
    }
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

/// Qdrant's refusal of an upload's content (its sha256 is not the manifest's, which `?checksum=`
/// sent) as the damage it is: exit 3, and nothing changed.
fn checksum_refusal(error: &anyhow::Error, entry: &FileEntry) -> Option<Damaged> {
    let refusal = error
        .downcast_ref::<QdrantError>()
        .filter(|e| e.is_checksum_refusal())?;
    let problem = format!(
        "content sha256 mismatch: the manifest says {}, Qdrant found another in the content it received and refused the upload, changing nothing ({refusal})",
        entry.content_sha256
    );
    Some(Damaged::new(&entry.path, problem))
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
}

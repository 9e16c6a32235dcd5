//! The plan's collections (what exists, what conflicts) and aliases.

use anyhow::Result;
use serde_json::Value;

use crate::exit::{ExitCode, Failure};
use crate::format::manifest::FileEntry;
use crate::qdrant::{Client, QdrantError};
use crate::restore::{AliasAction, AliasPlan, CollectionAction, CollectionPlan, Plan, Request};

/// The parts of a collection's parameters that Qdrant requires to match for a restore into it.
fn vector_config(params: &Value) -> Value {
    serde_json::json!({
        "vectors": params.get("vectors"),
        "sparse_vectors": params.get("sparse_vectors"),
        "shard_number": params.get("shard_number"),
    })
}

pub(super) async fn plan_collections(
    plan: &mut Plan,
    client: &Client,
    existing: &[String],
    request: &Request,
) -> Result<()> {
    let mut conflicts = Vec::new();
    for (name, details) in &plan.manifest.collection_details {
        let files = details.snapshot_files();
        let snapshots: Vec<FileEntry> = files
            .iter()
            .filter_map(|f| plan.manifest.file(f).cloned())
            .collect();
        if snapshots.len() != files.len() {
            plan.blockers.push(Failure {
                code: ExitCode::InvalidBackup,
                message: format!("the backup's manifest lists no file for a snapshot of `{name}`"),
                hint: None,
            });
        }
        let bytes = snapshots.iter().map(|f| f.content_size).sum();
        let mut entry = CollectionPlan {
            name: name.clone(),
            action: CollectionAction::Create,
            points: details.points_count,
            bytes,
            shards: details.shards.len(),
            reason: None,
            unreadable: None,
            details: details.clone(),
            snapshots,
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

pub(in crate::restore) fn custom_sharding(
    details: &crate::format::manifest::CollectionDetails,
) -> bool {
    details.shards.iter().any(|s| s.key.is_some())
}

pub(super) fn plan_aliases(plan: &mut Plan, existing: &[crate::qdrant::Alias]) {
    let restored: Vec<(String, Vec<String>)> = plan
        .restored_collections()
        .map(|c| (c.name.clone(), c.details.aliases.clone()))
        .collect();
    for (name, aliases) in &restored {
        for alias in aliases {
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

//! Checking a restore's result: collections (and shards) with their exact point counts, aliases,
//! databases.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;

use super::upload::node_holding;
use super::{CollectionPlan, DatabaseAction, Plan};
use crate::qdrant::cluster;
use crate::qdrant::{Client, QdrantError, Scope};
use crate::sqlite;

/// One line of the verification table.
#[derive(Clone, Debug, Serialize)]
pub struct Verified {
    pub what: String,
    pub expected: String,
    pub actual: String,
    pub ok: bool,
}

/// Every restored collection exists with the manifest's exact point count and is not red;
/// every alias is there; each replaced database passes `PRAGMA integrity_check`.
pub(super) async fn verify_restore(
    client: &Client,
    plan: &Plan,
    shard_targets: &BTreeMap<String, Vec<(u32, u32)>>,
) -> Result<Vec<Verified>> {
    let mut rows = Vec::new();
    for collection in plan.restored_collections() {
        let targets = shard_targets.get(&collection.name);
        rows.extend(verify_collection(client, plan, collection, targets).await?);
    }
    rows.extend(verify_aliases(client, plan).await?);
    rows.extend(verify_databases(plan));
    Ok(rows)
}

/// A restored collection (and, when it was restored by shards to `targets`, each shard): its
/// exact point count within what the backup recorded, and not red.
async fn verify_collection(
    client: &Client,
    plan: &Plan,
    collection: &CollectionPlan,
    targets: Option<&Vec<(u32, u32)>>,
) -> Result<Vec<Verified>> {
    let mut rows = Vec::new();
    let (name, details) = (collection.name.as_str(), &collection.details);
    let after = details.points_count_after.unwrap_or(details.points_count);
    let low = details.points_count.min(after);
    let high = details.points_count.max(after);
    let expected = if low == high {
        format!("{low} points")
    } else {
        format!("{low}..={high} points")
    };
    match client.collection_info(name).await {
        Ok(info) => {
            let count = client.exact_count(Scope::Collection(name)).await?;
            rows.push(Verified {
                what: format!("collection `{name}`"),
                expected: format!("{expected}, not red"),
                actual: format!("{count} points, {}", info.status),
                ok: (low..=high).contains(&count) && info.status != "red",
            });
        }
        Err(QdrantError::NotFound { .. }) => rows.push(Verified {
            what: format!("collection `{name}`"),
            expected,
            actual: "missing".to_string(),
            ok: false,
        }),
        Err(e) => return Err(e.into()),
    }
    // Shard by shard, unless points changed while the backup was taken.
    let Some(targets) = targets.filter(|_| details.points_count_after.is_none()) else {
        return Ok(rows);
    };
    let live = cluster::shards(client, name).await?;
    for (shard, (_, target)) in details.shards.iter().zip(targets) {
        let node = node_holding(client, plan.topology.as_ref(), &live, name, *target)?;
        let count = node.exact_count(Scope::Shard(name, *target)).await?;
        rows.push(Verified {
            what: format!("shard {target} of `{name}`"),
            expected: format!("{} points", shard.points_count),
            actual: format!("{count} points"),
            ok: count == shard.points_count,
        });
    }
    Ok(rows)
}

/// Each alias of the plan points at its collection.
async fn verify_aliases(client: &Client, plan: &Plan) -> Result<Vec<Verified>> {
    let aliases = client.aliases().await?;
    Ok(plan
        .aliases
        .iter()
        .map(|alias| {
            let actual = aliases
                .iter()
                .find(|a| a.alias_name == alias.alias)
                .map(|a| a.collection_name.clone());
            Verified {
                what: format!("alias `{}`", alias.alias),
                expected: format!("→ {}", alias.collection),
                actual: actual
                    .clone()
                    .map_or("missing".to_string(), |c| format!("→ {c}")),
                ok: actual.as_deref() == Some(alias.collection.as_str()),
            }
        })
        .collect())
}

/// Each database the restore replaced or merged into passes `PRAGMA integrity_check` and
/// `foreign_key_check`.
fn verify_databases(plan: &Plan) -> Vec<Verified> {
    plan.databases
        .iter()
        .filter(|d| d.action != DatabaseAction::Keep)
        .map(|database| {
            let problems = sqlite::open_read_only(&database.live)
                .and_then(|c| {
                    Ok([
                        sqlite::integrity_problems(&c)?,
                        sqlite::foreign_key_problems(&c)?,
                    ]
                    .concat())
                })
                .unwrap_or_else(|e| vec![e.to_string()]);
            let sound = "integrity and foreign keys ok";
            Verified {
                what: format!("database `{}`", database.live.display()),
                expected: sound.to_string(),
                actual: if problems.is_empty() {
                    sound.to_string()
                } else {
                    problems.join("; ")
                },
                ok: problems.is_empty(),
            }
        })
        .collect()
}

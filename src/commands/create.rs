//! `wqm backup create [PATH]`: back up Qdrant collections, the state database and the config.

use std::path::PathBuf;

use anyhow::Result;
use serde_json::json;

use crate::backend::Location;
use crate::backup::{self, Request};
use crate::cli::CreateArgs;
use crate::config::Settings;
use crate::exit::{ExitCode, Failure};
use crate::output::{self, Ui};
use crate::qdrant::Client;
use crate::store::chunks::Listed;
use crate::store::Remote;

use crate::backup::Sending;

pub async fn run(
    args: &CreateArgs,
    settings: &Settings,
    ui: &Ui,
    handle: &tokio::runtime::Handle,
) -> Result<ExitCode> {
    let collections = selected(args)?;
    let incremental = args.incremental || settings.backup.incremental;
    let target = target(args, settings)?;
    // To S3: the server is asked (and dead runs' leftovers removed) before Qdrant is.
    let mut sending = match super::location(&target)? {
        Location::Local(_) => None,
        Location::S3 { bucket, prefix } => Some(
            to_s3(
                super::remote_backup(&target, &bucket, &prefix, settings, handle)?,
                args.force,
                incremental,
                ui,
            )
            .await?,
        ),
    };
    let request = Request {
        target: match &sending {
            None => target,
            Some((s, _)) => s.staged_target(),
        },
        replace: args.force,
        description: args.description.clone(),
        partial: collections.is_some(),
        collections,
        databases: crate::backup::Databases::All,
        config: true,
        incremental,
        listed: sending.as_mut().and_then(|(_, listed)| listed.take()),
    };
    let client = Client::from_settings(settings)?;
    let progress = ui.progress();
    let mut outcome = match backup::create(&client, settings, &request, &progress).await {
        Ok(outcome) => outcome,
        Err(e) => {
            // Nothing partial stays on disk, but a server may keep what could not be deleted.
            let staging = crate::format::layout::staging_path(&request.target);
            for left in crate::cleanup::left_on_server(&staging, settings) {
                ui.warn_action(left);
            }
            return Err(e);
        }
    };
    if let Some((sending, _)) = &mut sending {
        outcome.path = sending.send(&outcome.path, incremental, &progress).await?;
    }
    super::report_cleaned(ui, &outcome.cleaned);
    for leftover in &outcome.leftovers {
        ui.warn_action(leftover);
    }
    if let Some(repaired) = outcome.chunks_added.as_ref().map(|a| &a.repaired) {
        if !repaired.is_empty() {
            ui.warn(repaired_line(&outcome.path, repaired));
        }
    }
    // The backup is complete either way; a snapshot left on the server needs someone to act.
    let code = if outcome.leftovers.is_empty() {
        ExitCode::Success
    } else {
        ExitCode::ActionNeeded
    };

    let m = &outcome.manifest;
    let stored: u64 = outcome.items.iter().map(|i| i.size).sum();
    if ui.json {
        ui.json(&json!({
            "path": outcome.path,
            "version": m.version,
            "timestamp": m.timestamp,
            "formatted_timestamp": m.formatted_timestamp(),
            "collections": m.collections,
            "total_documents": m.total_documents,
            "partial_backup": m.partial_backup,
            "selected_collections": m.selected_collections,
            "qdrant_version": m.qdrant_version,
            "compression": m.compression,
            "checksum_algorithm": m.checksum_algorithm,
            "files": outcome.items,
            "size_bytes": stored,
            "seconds": outcome.seconds,
            "phases": outcome.phases,
            "notes": m.notes,
            "leftover_snapshots": outcome.leftovers,
            "cleaned_up": outcome.cleaned,
            "chunk_store": outcome.chunks_added.as_ref().map(|added| json!({
                "chunks_added": added.chunks,
                "bytes_added": added.bytes,
                "chunks_repaired": added.repaired.iter().map(|id| id.to_string()).collect::<Vec<_>>(),
                "chunks_compared": outcome.chunks_compared,
            })),
            "verify": outcome.verified,
        }));
        return Ok(code);
    }
    if ui.interactive || ui.verbose {
        for item in &outcome.items {
            ui.line(format!(
                "  {}: {}, {}",
                item.path,
                item.detail,
                output::size(item.size)
            ));
        }
    }
    // One line, for cron: the notes ride along.
    let notes = if m.notes.is_empty() {
        String::new()
    } else {
        format!("; note: {}", m.notes.join("; "))
    };
    // An incremental backup's own files are indexes: what it cost is what it added.
    let size = match &outcome.chunks_added {
        Some(added) => format!(
            "{} new in the chunk store",
            indicatif::BinaryBytes(added.bytes + stored)
        ),
        None => indicatif::BinaryBytes(stored).to_string(),
    };
    ui.line(format!(
        "Backup created: {} ({} collections, {} points, {size} in {:.1} s){notes}",
        outcome.path.display(),
        m.collection_names().len(),
        m.total_documents.unwrap_or_default(),
        outcome.seconds
    ));
    Ok(code)
}

/// Checks what a create to S3 needs before anything is made: what every backup sent to S3
/// needs (`Sending::prepare`; with `force`, a backup under the name is to be replaced), and
/// for an incremental backup the repository's chunk store listed once: the staging store then
/// gets only the chunks the repository lacks, sent first.
async fn to_s3(
    (repository, name): (Remote, String),
    force: bool,
    incremental: bool,
    ui: &Ui,
) -> Result<(Sending, Option<Listed>)> {
    let mut sending =
        super::prepare_sending((repository, name), ("backup create", force), ui).await?;
    let listed = match incremental {
        true => Some(sending.list_store()?),
        false => None,
    };
    Ok((sending, listed))
}

/// The damaged chunks of the store this backup needed, moved aside and stored again.
fn repaired_line(backup: &std::path::Path, repaired: &[crate::store::chunks::ChunkId]) -> String {
    let dir = crate::fs::parent_dir(backup);
    let ids: Vec<String> = repaired.iter().map(|id| format!("`{id}`")).collect();
    format!(
        "the chunk store held {} damaged chunk(s) this backup needed ({}): each was moved to `{}` and stored again from this backup's data, so every backup naming it is whole again; other backups may still name damaged data: `wqm backup list {} --check` finds them",
        repaired.len(),
        ids.join(", "),
        crate::store::chunks::ChunkStore::path_in(dir).join("quarantine").display(),
        dir.display()
    )
}

/// PATH, or a new `backup-YYYYMMDD-HHMMSS` in `backup.default_backup_directory`.
fn target(args: &CreateArgs, settings: &Settings) -> Result<PathBuf> {
    if let Some(path) = &args.path {
        return Ok(path.clone());
    }
    match &settings.backup.default_backup_directory {
        Some(dir) => Ok(dir.join(
            chrono::Local::now()
                .format("backup-%Y%m%d-%H%M%S")
                .to_string(),
        )),
        None => Err(Failure::new(
            ExitCode::Usage,
            "PATH is required: `backup.default_backup_directory` is not set",
        )
        .with_hint("pass a PATH, or set `backup.default_backup_directory` in the config")
        .into()),
    }
}

/// `--collections a,b`: trimmed, without duplicates, none empty.
fn selected(args: &CreateArgs) -> Result<Option<Vec<String>>> {
    let Some(names) = &args.collections else {
        return Ok(None);
    };
    let mut selected: Vec<String> = Vec::new();
    for name in names.iter().map(|n| n.trim()) {
        if name.is_empty() {
            return Err(
                Failure::new(ExitCode::Usage, "--collections holds an empty name")
                    .with_hint("separate names with commas: --collections a,b")
                    .into(),
            );
        }
        if !selected.iter().any(|s| s == name) {
            selected.push(name.to_string());
        }
    }
    Ok(Some(selected))
}

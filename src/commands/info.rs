//! `wqm backup info PATH`: what a backup holds and whether this version can restore it.

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::cli::InfoArgs;
use crate::compress::Stored;
use crate::config::Settings;
use crate::exit::ExitCode;
use crate::format::compat;
use crate::format::manifest::Manifest;
use crate::output::{self, Ui};
use crate::store::chunks::{self, Usage};
use crate::store::lock::RepoLock;
use crate::store::BackupDir;

/// What `info` found out about a backup beyond its manifest.
struct Findings<'a> {
    backup: &'a BackupDir,
    size: u64,
    /// An incremental backup's share of the chunk store.
    chunks: Option<Usage>,
    compatibility: Result<compat::Report, compat::CompatError>,
    stale: Option<String>,
}

pub fn run(
    args: &InfoArgs,
    settings: &Settings,
    ui: &Ui,
    handle: &tokio::runtime::Handle,
) -> Result<ExitCode> {
    let backup = BackupDir::open_at(&super::backup_place(&args.path, settings, handle, ui)?)?;
    let m = &backup.manifest;
    let policy = compat::Policy::new(&settings.backup.validation, false);
    let findings = Findings {
        backup: &backup,
        size: backup.size()?,
        chunks: chunk_usage(&backup)?,
        compatibility: crate::format::migrations::verdict(&m.version, crate::VERSION, &policy),
        stale: crate::verify::staleness(
            m,
            settings.backup.validation.version_warning_threshold,
            crate::now(),
        ),
    };

    if ui.json {
        ui.json(&json_document(&findings)?);
        return Ok(ExitCode::Success);
    }
    print_summary(&findings, ui);
    print_contents(m, ui);
    print_format(&findings, ui);
    print_verdict(findings, ui);
    Ok(ExitCode::Success)
}

/// What an incremental backup holds in the chunk store (`None` for a full backup). Without a
/// store it can use beside it, the backup cannot be restored: that is an error (exit 3), as
/// for `validate`, not sizes of a store that is gone.
fn chunk_usage(backup: &BackupDir) -> Result<Option<Usage>> {
    if backup.manifest.compression != Some(Stored::Chunked) {
        return Ok(None);
    }
    // Held while the indexes are read: no prune deletes them or their chunks meanwhile.
    let _lock = RepoLock::shared(&backup.place(), "backup info")?;
    backup.open_chunk_store()?;
    let usage = chunks::usage(backup).with_context(|| {
        format!(
            "cannot read the chunk indexes of `{}`",
            backup.path.display()
        )
    })?;
    Ok(Some(usage))
}

/// The manifest as it is stored, plus what `info` adds to it.
fn json_document(findings: &Findings) -> Result<Value> {
    let m = &findings.backup.manifest;
    let mut document = serde_json::to_value(m)?;
    let object = document.as_object_mut().expect("a manifest is an object");
    object.insert("path".into(), json!(findings.backup.path));
    object.insert("format".into(), json!(m.format_name()));
    object.insert("formatted_timestamp".into(), json!(m.formatted_timestamp()));
    object.insert("size_bytes".into(), json!(findings.size));
    if let Some(usage) = &findings.chunks {
        object.insert("chunk_store".into(), serde_json::to_value(usage)?);
    }
    object.insert("stale_warning".into(), json!(findings.stale));
    object.insert(
        "compatibility".into(),
        match &findings.compatibility {
            Ok(report) => serde_json::to_value(report)?,
            Err(e) => json!({ "status": Value::Null, "message": e.to_string(),
                              "backup_version": m.version, "current_version": crate::VERSION }),
        },
    );
    Ok(document)
}

/// Where, when and what: path, version, timestamp, description and the collections.
fn print_summary(findings: &Findings, ui: &Ui) {
    let m = &findings.backup.manifest;
    ui.line(format!(
        "Backup Information: {}",
        findings.backup.path.display()
    ));
    ui.line(format!("Version: {}", m.version));
    ui.line(format!("Timestamp: {}", m.formatted_timestamp()));
    if let Some(description) = &m.description {
        ui.line(format!("Description: {description}"));
    }
    let names = m.collection_names();
    ui.line(format!("Collections: {}", names.len()));
    if ui.verbose {
        for name in &names {
            print_collection(m, name, ui);
        }
    }
}

/// One collection with its document count and, from a cluster, its shards.
fn print_collection(m: &Manifest, name: &str, ui: &Ui) {
    match m.collections.as_ref().and_then(|c| c.count_of(name)) {
        Some(count) => ui.line(format!("  - {name}: {count} documents")),
        None => ui.line(format!("  - {name}")),
    }
    // A collection backed up from a cluster: its shards, each from one node at its own time.
    for shard in m
        .collection_details
        .get(name)
        .map_or(&[][..], |d| &d.shards[..])
    {
        let key = shard
            .key
            .as_ref()
            .map(|k| format!(" key {k}"))
            .unwrap_or_default();
        ui.line(format!(
            "      shard {}{key}: {} points, from peer {} at {}",
            shard.id,
            shard.points_count,
            shard.peer_id,
            crate::format::manifest::format_timestamp(shard.snapshot_timestamp)
        ));
    }
}

/// Document totals, a partial backup's selection and the Python version that wrote it.
fn print_contents(m: &Manifest, ui: &Ui) {
    if let Some(total) = m.total_documents {
        ui.line(format!("Total Documents: {total}"));
    }
    if m.partial_backup {
        ui.line("Partial Backup: Yes");
        if let Some(selected) = &m.selected_collections {
            ui.line(format!("Selected: {}", selected.join(", ")));
        }
    }
    if let Some(python) = &m.python_version {
        ui.line(format!("Python Version: {python}"));
    }
}

/// Format and size; a current-format backup also its checksums, compression, Qdrant and files.
fn print_format(findings: &Findings, ui: &Ui) {
    let m = &findings.backup.manifest;
    ui.line(format!("Format: {}", m.format_name()));
    ui.line(format!("Size: {}", output::size(findings.size)));
    if let Some(usage) = &findings.chunks {
        ui.line(format!(
            "Incremental: {} of content in {} chunks ({} stored, {} of it held by this backup alone)",
            output::size(usage.logical_bytes),
            usage.chunks,
            output::size(usage.referenced_bytes),
            output::size(usage.unique_bytes)
        ));
    }
    // A legacy backup records none of the rest.
    if m.is_legacy() {
        return;
    }
    if let Some(algorithm) = m.checksum_algorithm {
        ui.line(format!("Checksum Algorithm: {algorithm}"));
    }
    if let Some(compression) = m.compression {
        ui.line(format!("Compression: {compression}"));
    }
    if let Some(qdrant) = &m.qdrant_version {
        ui.line(format!("Qdrant Version: {qdrant}"));
    }
    if ui.verbose {
        for database in &m.databases {
            let schema = database
                .schema_version
                .map(|v| format!(" (schema {v})"))
                .unwrap_or_default();
            ui.line(format!("Database: {}{schema}", database.file));
        }
        for file in &m.files {
            ui.line(format!("File: {} {}", file.path, output::size(file.size)));
        }
    }
}

/// Notes, whether this version can restore the backup, and a stale backup's warning.
fn print_verdict(findings: Findings, ui: &Ui) {
    for note in &findings.backup.manifest.notes {
        ui.line(format!("Note: {note}"));
    }
    match findings.compatibility {
        Ok(report) => {
            ui.line(format!("Compatibility: {}", report.verdict));
            ui.line(format!("  {}", report.message));
        }
        Err(e) => ui.line(format!("Compatibility: UNKNOWN ({e})")),
    }
    if let Some(warning) = findings.stale {
        ui.warn(warning);
    }
}

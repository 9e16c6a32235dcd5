//! `wqm backup list DIR`: every backup directly in a directory, sorted.

use std::cmp::Reverse;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cli::{ListArgs, SortKey};
use crate::compat::{self, Version};
use crate::config::Settings;
use crate::exit::ExitCode;
use crate::output::{self, Ui};
use crate::store::{self, Found, Seen};
use crate::verify;

/// One backup as `list --json` prints it (the Python fields, then ours).
#[derive(Serialize)]
struct Item {
    path: String,
    name: String,
    version: String,
    timestamp: f64,
    formatted_timestamp: String,
    /// How many collections.
    collections: usize,
    total_documents: Option<u64>,
    description: Option<String>,
    format: String,
    size_bytes: u64,
    partial_backup: bool,
    /// The Python status.
    compatibility: Option<compat::Status>,
    /// What restore would do with it, as configured (`info` and `validate` say the same).
    verdict: Option<compat::Verdict>,
    restorable: Option<bool>,
    compatibility_message: Option<String>,
    stale_warning: Option<String>,
    age_days: u64,
    /// No damage found by the cheap checks (all checks with `--check`).
    valid: bool,
    problems: Vec<String>,
}

pub fn run(args: &ListArgs, settings: &Settings, ui: &Ui) -> Result<ExitCode> {
    let dir = &args.directory;
    super::backups_dir(dir)?;
    let scan =
        store::scan(dir).with_context(|| format!("cannot read directory `{}`", dir.display()))?;
    for entry in &scan.entries {
        if let Seen::Unreadable(problem) = &entry.seen {
            ui.warn(format!("skipping `{}`: {problem}", entry.path.display()));
        }
    }
    let mut backups: Vec<&Found> = scan.backups().collect();
    sort(&mut backups, args.sort);
    let threshold = settings.backup.validation.version_warning_threshold;
    let depth = if args.check {
        verify::Depth::Full
    } else {
        verify::Depth::Structure
    };
    let options = verify::Options::new(
        depth,
        crate::compat::Policy::new(&settings.backup.validation, false),
    );
    let now = options.now;
    let progress = ui.progress();
    let mut items = Vec::new();
    for found in backups {
        let m = &found.backup.manifest;
        let audit = verify::audit(&found.backup.path, &options, &progress)?;
        let problems = audit.damage();
        let compatibility = audit.compatibility;
        items.push(Item {
            path: found.backup.path.display().to_string(),
            name: found.backup.name(),
            version: m.version.clone(),
            timestamp: m.timestamp,
            formatted_timestamp: m.formatted_timestamp(),
            collections: m.collection_names().len(),
            total_documents: m.total_documents,
            description: m.description.clone(),
            format: m.format_name(),
            size_bytes: found.size,
            partial_backup: m.partial_backup,
            compatibility: compatibility.as_ref().map(|c| c.status),
            verdict: compatibility.as_ref().map(|c| c.verdict),
            restorable: compatibility.as_ref().map(|c| c.restorable),
            compatibility_message: compatibility.map(|c| c.message),
            stale_warning: crate::verify::staleness(m, threshold, now),
            age_days: ((now - m.timestamp).max(0.0) / 86_400.0) as u64,
            valid: problems.is_empty(),
            problems,
        });
    }

    if ui.json {
        ui.json(&items);
        return Ok(ExitCode::Success);
    }
    if items.is_empty() {
        ui.line(format!("No backups found in {}", dir.display()));
        return Ok(ExitCode::Success);
    }
    for item in &items {
        ui.line(&item.name);
        ui.line(format!("  Version: {}", item.version));
        if let Some(verdict) = item.verdict {
            ui.line(format!("  Compatibility: {verdict}"));
        }
        ui.line(format!("  Timestamp: {}", item.formatted_timestamp));
        let documents = item
            .total_documents
            .map(|n| format!(", {n} documents"))
            .unwrap_or_default();
        let partial = if item.partial_backup {
            " (partial)"
        } else {
            ""
        };
        ui.line(format!(
            "  Collections: {}{documents}{partial}",
            item.collections
        ));
        ui.line(format!("  Age: {} days", item.age_days));
        ui.line(format!("  Size: {}", output::size(item.size_bytes)));
        ui.line(match item.problems.first() {
            None => "  Valid: yes".to_string(),
            Some(first) => format!(
                "  Valid: no ({first}{})",
                if item.problems.len() > 1 {
                    format!("; {} more", item.problems.len() - 1)
                } else {
                    String::new()
                }
            ),
        });
        if let Some(description) = &item.description {
            ui.line(format!("  Description: {description}"));
        }
        if let Some(warning) = &item.stale_warning {
            ui.line(format!("  Warning: {warning}"));
        }
    }
    ui.line(format!("{} backup(s) in {}", items.len(), dir.display()));
    Ok(ExitCode::Success)
}

/// Name A→Z; timestamp, size and version newest/largest first. Ties fall back to the name.
fn sort(backups: &mut [&Found], key: SortKey) {
    backups.sort_by_key(|f| f.backup.name());
    match key {
        SortKey::Name => {}
        SortKey::Timestamp => backups.sort_by(|a, b| {
            b.backup
                .manifest
                .timestamp
                .total_cmp(&a.backup.manifest.timestamp)
        }),
        SortKey::Size => backups.sort_by_key(|f| Reverse(f.size)),
        // Unparseable versions sort last.
        SortKey::Version => backups.sort_by_key(|f| {
            Reverse(
                Version::parse(&f.backup.manifest.version)
                    .ok()
                    .map(|v| v.key()),
            )
        }),
    }
}

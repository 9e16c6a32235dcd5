//! `wqm backup validate PATH [--check-files | --read-data-subset SUBSET]`: every finding, with
//! a severity.

use anyhow::Result;
use serde_json::json;

use crate::cli::ValidateArgs;
use crate::config::Settings;
use crate::exit::ExitCode;
use crate::output::Ui;
use crate::store::chunks::{self, Selection, Subset};
use crate::store::{BackupDir, Place};
use crate::verify::{self, Severity};

pub fn run(
    args: &ValidateArgs,
    settings: &Settings,
    ui: &Ui,
    handle: &tokio::runtime::Handle,
) -> Result<ExitCode> {
    let reads_files = args.check_files || args.read_data_subset.is_some();
    let depth = if reads_files {
        verify::Depth::Full
    } else {
        verify::Depth::Structure
    };
    let validation = &settings.backup.validation;
    let mut options =
        verify::Options::new(depth, crate::format::compat::Policy::new(validation, false))
            .warning_after(validation.version_warning_threshold);
    // Held while every file is read: no prune deletes the backup or its chunks meanwhile.
    let (place, _lock) =
        super::locked_place(&args.path, (settings, handle, ui), "backup validate")?;
    if let Some(subset) = args.read_data_subset {
        // Only a size needs the total it is a share of (a pass over the indexes).
        let total = match subset {
            Subset::Size(_) => chunk_bytes(&place),
            _ => 0,
        };
        options.chunks = verify::ChunkTally::reading(Selection::new(subset, total));
    }
    let progress = ui.progress();
    let report = verify::audit_at(&place, &options, &progress)?;
    let errors = report.count(Severity::Error);
    let warnings = report.count(Severity::Warning);

    if ui.json {
        let mut document = serde_json::to_value(&report)?;
        let object = document.as_object_mut().expect("a report is an object");
        object.insert("valid".into(), report.is_valid().into());
        object.insert("errors".into(), errors.into());
        object.insert("warnings".into(), warnings.into());
        if let Some(m) = &report.manifest {
            object.insert("format".into(), m.format_name().into());
            object.insert("version".into(), m.version.clone().into());
        }
        if let Some(subset) = &args.read_data_subset {
            let (read, looked_up) = options.chunks.counts();
            object.insert(
                "read_data_subset".into(),
                json!({"subset": subset.to_string(), "chunks_read": read, "chunks_looked_up": looked_up}),
            );
        }
        ui.json(&document);
    } else {
        for finding in &report.findings {
            let shown = ui.verbose || finding.severity >= Severity::Warning;
            if !shown {
                continue;
            }
            let mark = match finding.severity {
                Severity::Ok => "✓",
                Severity::Info => "ℹ",
                Severity::Warning => "⚠",
                Severity::Error => "✗",
            };
            let subject = finding
                .file
                .as_ref()
                .map(|f| format!("{f}: "))
                .unwrap_or_default();
            let message = finding.message.replace('\n', "\n  ");
            ui.line(format!("{mark} {subject}{message}"));
        }
        if let Some(subset) = &args.read_data_subset {
            let (read, looked_up) = options.chunks.counts();
            ui.line(format!(
                "Chunks read: {read} of {} (`--read-data-subset {subset}`); the others were looked up, not read",
                read + looked_up
            ));
        }
        if report.is_valid() {
            ui.line(format!(
                "Backup validation successful: {}",
                args.path.display()
            ));
        }
    }
    if report.is_valid() {
        return Ok(ExitCode::Success);
    }
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    ui.error_lines(
        &format!(
            "Backup validation failed: {} ({}, {})",
            args.path.display(),
            plural(errors, "error"),
            plural(warnings, "warning")
        ),
        Some(if reads_files {
            "restore from another backup (`wqm backup list DIR --sort timestamp`); this one is damaged"
        } else {
            "run with --check-files --verbose to read every file"
        }),
    );
    Ok(if report.only_incompatible() {
        ExitCode::Incompatible
    } else {
        ExitCode::InvalidBackup
    })
}

/// The distinct chunk content an incremental backup names (what a `--read-data-subset SIZE` is a
/// share of); 0 when it cannot be read, which the audit then reports.
fn chunk_bytes(place: &Place) -> u64 {
    let Ok(backup) = BackupDir::open_at(place) else {
        return 0;
    };
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let visited = chunks::visit_chunks(&backup, |line| {
        if seen.insert(line.id) {
            total += line.len as u64;
        }
    });
    visited.map_or(0, |()| total)
}

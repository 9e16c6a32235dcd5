//! `wqm backup prune [DIR]`: delete old backups by retention rules.

use anyhow::Result;
use serde_json::json;

use crate::cleanup;
use crate::cli::PruneArgs;
use crate::config::Settings;
use crate::exit::{ExitCode, Failure};
use crate::output::Ui;
use crate::prune::{self, Garbage, Policy};

pub async fn run(args: &PruneArgs, settings: &Settings, ui: &Ui) -> Result<ExitCode> {
    let dir = match args
        .directory
        .clone()
        .or_else(|| settings.backup.default_backup_directory.clone())
    {
        Some(dir) => dir,
        None => return Err(Failure::new(
            ExitCode::Usage,
            "DIR is required: `backup.default_backup_directory` is not set",
        )
        .with_hint(
            "pass the directory that holds the backups, or set `backup.default_backup_directory`",
        )
        .into()),
    };
    super::backups_dir(&dir)?;
    let policy = Policy {
        within_days: args.keep_within,
        last: args.keep_last,
        daily: args.keep_daily,
        weekly: args.keep_weekly,
        monthly: args.keep_monthly,
        default_applied: false,
    }
    .or_default(settings.backup.retention_days);
    if !args.dry_run {
        super::report_cleaned(ui, &cleanup::dead_runs(&[dir.as_path()], settings).await);
    }
    let outcome = prune::prune(&dir, &policy, args.dry_run)?;

    if ui.json {
        ui.json(&json!({ "directory": dir, "dry_run": args.dry_run, "policy": policy, "kept": outcome.kept, "removed": outcome.removed, "skipped": outcome.skipped, "chunk_store": outcome.chunks }));
        return Ok(ExitCode::Success);
    }
    let verb = if args.dry_run {
        "Would remove"
    } else {
        "Removed"
    };
    if args.dry_run || ui.interactive || ui.verbose {
        ui.line(rules_line(&policy));
        for removed in &outcome.removed {
            ui.line(format!(
                "{verb} {} ({})",
                removed.name, removed.formatted_timestamp
            ));
        }
        for kept in &outcome.kept {
            ui.line(format!(
                "Keep {} ({}): {}",
                kept.name,
                kept.formatted_timestamp,
                kept.reasons.join(", ")
            ));
        }
        for skipped in &outcome.skipped {
            ui.line(format!("Skip {}: {}", skipped.name, skipped.reason));
        }
    }
    let (removed, kept, skipped) = (
        outcome.removed.len(),
        outcome.kept.len(),
        outcome.skipped.len(),
    );
    match &outcome.chunks {
        // Refused: something may need chunks nobody can name, which an operator should see.
        Some(garbage @ Garbage::Refused(_)) => ui.warn(garbage_line(garbage, args.dry_run)),
        Some(garbage) => ui.line(garbage_line(garbage, args.dry_run)),
        None => {}
    }
    if args.dry_run {
        ui.line(format!("Dry-run: {removed} backup(s) would be removed, {kept} kept, {skipped} other entries left alone. Nothing was deleted."));
    } else {
        ui.line(format!(
            "Pruned {}: removed {removed}, kept {kept}, left alone {skipped}",
            dir.display()
        ));
    }
    Ok(ExitCode::Success)
}

/// What the chunk store's garbage collection did (or would do).
fn garbage_line(garbage: &Garbage, dry_run: bool) -> String {
    match garbage {
        Garbage::Collected(c) => format!(
            "Chunk store: {} {} unreferenced chunks ({}), {} chunks ({}) still referenced{}",
            if dry_run { "would delete" } else { "deleted" },
            c.chunks_deleted,
            indicatif::BinaryBytes(c.bytes_freed),
            c.chunks_kept,
            indicatif::BinaryBytes(c.bytes_kept),
            if c.strays.is_empty() {
                String::new()
            } else {
                format!(
                    "; left alone what wqm did not put there: `{}`",
                    c.strays.join("`, `")
                )
            }
        ),
        Garbage::Busy => "Chunk store: in use by another wqm run (a create, restore or validate); no chunk deleted, the next prune collects them".to_string(),
        Garbage::Refused(reason) => format!("chunk store: no chunk deleted: {reason}"),
    }
}

/// Which rules decided, and whether the default applied.
fn rules_line(policy: &Policy) -> String {
    if policy.default_applied {
        return format!(
            "Rules: --keep-within {} from `backup.retention_days` (no keep rule given)",
            policy.within_days.unwrap_or_default()
        );
    }
    let rules: Vec<String> = [
        ("within", policy.within_days),
        ("last", policy.last),
        ("daily", policy.daily),
        ("weekly", policy.weekly),
        ("monthly", policy.monthly),
    ]
    .into_iter()
    .filter_map(|(rule, n)| n.map(|n| format!("--keep-{rule} {n}")))
    .collect();
    format!(
        "Rules: {} (`backup.retention_days` does not apply: keep rules were given)",
        rules.join(" ")
    )
}

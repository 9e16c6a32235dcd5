//! `wqm backup prune [DIR]`: delete old backups by retention rules, in a local directory or an
//! S3 repository.

use anyhow::Result;
use serde_json::json;

use crate::cleanup;
use crate::cli::PruneArgs;
use crate::config::Settings;
use crate::exit::{ExitCode, Failure};
use crate::output::Ui;
use crate::prune::{self, Count, Garbage, Policies, Policy, Span};
use crate::store::Repository;

pub async fn run(
    args: &PruneArgs,
    settings: &Settings,
    ui: &Ui,
    handle: &tokio::runtime::Handle,
) -> Result<ExitCode> {
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
    // An S3 server that cannot be used stops the run here.
    let repository = super::repository(&dir, settings, handle)?;
    if let Repository::Local(dir) = &repository {
        super::backups_dir(dir)?;
    }
    let policies = policies(args, settings)?;
    // Dead runs are cleaned up first, as `cleanup` does: locally the working directories here,
    // on S3 what killed creates left, by `prune` holding the exclusive lock.
    if let (Repository::Local(dir), false) = (&repository, args.dry_run) {
        super::report_cleaned(ui, &cleanup::dead_runs(&[dir.as_path()], settings).await)
    }
    let outcome = prune::prune(
        &repository,
        &policies,
        crate::now(),
        args.dry_run,
        args.max_repack_size,
    )?;
    if let Repository::Remote(remote) = &repository {
        super::report_dead_runs(ui, remote, &outcome.dead_runs);
    }
    for name in &outcome.future_dated {
        let when = outcome
            .kept
            .iter()
            .find(|k| &k.name == name)
            .map(|k| k.formatted_timestamp.as_str())
            .unwrap_or_default();
        ui.warn(format!(
            "`{name}` is dated {when}, in the future: kept, and counted by no keep rule; check the clock of this machine and of the one that made it"
        ));
    }

    if ui.json {
        ui.json(&json!({ "directory": dir, "dry_run": args.dry_run, "policy": policies.backups, "safety_policy": policies.safety, "kept": outcome.kept, "removed": outcome.removed, "future_dated": outcome.future_dated, "skipped": outcome.skipped, "chunk_store": outcome.chunks }));
        return Ok(ExitCode::Success);
    }
    let verb = if args.dry_run {
        "Would remove"
    } else {
        "Removed"
    };
    if args.dry_run || ui.interactive || ui.verbose {
        ui.line(rules_line(&policies.backups));
        let safety = |is: bool| if is { ", a safety backup" } else { "" };
        if outcome.kept.iter().any(|k| k.safety_backup)
            || outcome.removed.iter().any(|r| r.safety_backup)
        {
            ui.line(safety_rules_line(args, &policies.safety));
        }
        for removed in &outcome.removed {
            ui.line(format!(
                "{verb} {} ({}{})",
                removed.name,
                removed.formatted_timestamp,
                safety(removed.safety_backup)
            ));
        }
        for kept in &outcome.kept {
            let reasons: Vec<String> = kept.reasons.iter().map(ToString::to_string).collect();
            ui.line(format!(
                "Keep {} ({}{}): {}",
                kept.name,
                kept.formatted_timestamp,
                safety(kept.safety_backup),
                reasons.join(", ")
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
            "Chunk store: {} {} unreferenced chunks ({}), {} chunks ({}) still referenced{}{}{}{}",
            if dry_run { "would delete" } else { "deleted" },
            c.chunks_deleted,
            indicatif::BinaryBytes(c.bytes_freed),
            c.chunks_kept,
            indicatif::BinaryBytes(c.bytes_kept),
            match (c.packs_deleted, c.packs_repacked, c.packs_recovered) {
                (0, 0, 0) => String::new(),
                (deleted, repacked, recovered) => format!(
                    "; pack files: {deleted} {}, {repacked} {} ({} of packs), {recovered} {}",
                    if dry_run { "would go" } else { "deleted" },
                    if dry_run { "would be repacked" } else { "repacked" },
                    indicatif::BinaryBytes(c.bytes_repacked),
                    if dry_run {
                        "would get their lost index back"
                    } else {
                        "got their lost index back"
                    }
                ),
            },
            match c.bytes_unused {
                0 => String::new(),
                unused => format!(
                    ", {} of unreferenced chunks left in packs{}",
                    indicatif::BinaryBytes(unused),
                    match c.packs_deferred {
                        0 => " until a quarter of a pack is",
                        _ => "",
                    }
                ),
            },
            match c.packs_deferred {
                0 => String::new(),
                deferred => format!(
                    "; {deferred} pack file(s) due for repacking left for a later prune (`--max-repack-size` reached)"
                ),
            },
            if c.strays.is_empty() {
                String::new()
            } else {
                format!(
                    "; left alone what wqm did not put there: `{}`",
                    c.strays.join("`, `")
                )
            }
        ) + &damaged_line(&c.damaged),
        Garbage::Busy => "Chunk store: in use by a wqm older than lock objects; no chunk deleted, the next prune collects them".to_string(),
        Garbage::Refused(reason) => format!("chunk store: no chunk deleted: {reason}"),
    }
}

/// The packs a collection kept as they are because a chunk to repack in them is damaged.
fn damaged_line(damaged: &[String]) -> String {
    match damaged {
        [] => String::new(),
        damaged => format!(
            "; kept packs with damaged chunks (run `wqm backup validate --check-files`): {}",
            damaged.join("; ")
        ),
    }
}

/// The rules of both groups: the flags given, else `backup.retention_days` (backups) and
/// `backup.safety_retention` (safety backups). Rules that keep no backup are refused without
/// `--keep-none`, as restic's `forget` refuses an empty policy.
fn policies(args: &PruneArgs, settings: &Settings) -> Result<Policies> {
    let backups = if args.keep_none {
        Policy::default()
    } else {
        args.policy().or_default(settings.backup.retention_days)
    };
    if backups.is_empty() && !args.keep_none {
        let given = if backups.default_applied {
            "`backup.retention_days` is 0 and no keep rule was given"
        } else {
            "the keep rules given keep nothing"
        };
        return Err(Failure::new(
            ExitCode::Usage,
            format!("{given}: prune would remove every backup but the newest valid one; nothing was removed"),
        )
        .with_hint("give a keep rule (e.g. `--keep-daily 7 --keep-weekly 4`), or `--keep-none` to remove all but the newest valid backup")
        .into());
    }
    let safety = if args.keep_safety_last.is_some() || args.keep_safety_within.is_some() {
        Policy {
            last: args.keep_safety_last,
            within: args.keep_safety_within,
            ..Policy::default()
        }
    } else {
        let config = &settings.backup.safety_retention;
        Policy {
            last: Some(Count::N(config.keep_last)),
            within: Some(Span::days(config.keep_within_days)),
            ..Policy::default()
        }
    };
    Ok(Policies { backups, safety })
}

/// Which rules decided, and whether the default applied.
fn rules_line(policy: &Policy) -> String {
    if policy.is_empty() {
        return "Rules: --keep-none (only the newest valid backup stays)".to_string();
    }
    if policy.default_applied {
        return format!(
            "Rules: --keep-within {} from `backup.retention_days` (no keep rule given)",
            policy.within.unwrap_or_default()
        );
    }
    format!(
        "Rules: {} (`backup.retention_days` does not apply: keep rules were given)",
        flags(policy, "keep")
    )
}

/// The rules of the safety backups, and where they come from.
fn safety_rules_line(args: &PruneArgs, policy: &Policy) -> String {
    let from = if args.keep_safety_last.is_some() || args.keep_safety_within.is_some() {
        ""
    } else {
        " from `backup.safety_retention`"
    };
    format!("Safety backups: {}{from}", flags(policy, "keep-safety"))
}

/// A policy as the flags that give it (`--keep-daily 7 --keep-within 1m`).
fn flags(policy: &Policy, prefix: &str) -> String {
    let counts = policy.counts().into_iter().filter_map(|(period, count)| {
        let rule = period.map_or("last", |p| p.name());
        Some(format!("--{prefix}-{rule} {}", count?))
    });
    let spans = policy.spans().into_iter().filter_map(|(period, span)| {
        let rule = period.map_or("within".to_string(), |p| format!("within-{}", p.name()));
        Some(format!("--{prefix}-{rule} {}", span?))
    });
    counts.chain(spans).collect::<Vec<_>>().join(" ")
}

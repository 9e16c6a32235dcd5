//! `wqm backup restore PATH`: plan, confirm, apply, verify.

use std::io::IsTerminal;

use anyhow::Result;
use serde_json::json;

use crate::cli::RestoreArgs;
use crate::config::Settings;
use crate::exit::{ExitCode, Failure};
use crate::output::{self, Ui};
use crate::qdrant::Client;
use crate::restore::{self, AliasAction, CollectionAction, DatabaseAction, Plan, Request};

pub async fn run(
    args: &RestoreArgs,
    settings: &Settings,
    ui: &Ui,
    handle: &tokio::runtime::Handle,
) -> Result<ExitCode> {
    // An S3 server that cannot be used stops the run here, before Qdrant is asked anything.
    // The lock is held from the plan (which reads and checks the backup) to the end of the
    // restore: no prune deletes the backup or its chunks between two of its files.
    let (place, _lock) = super::locked_place(&args.path, (settings, handle, ui), "backup restore")?;
    // A backup on S3 whose restore needs a safety backup: into an S3 default directory, if any.
    let safety_repository = match (&place, &settings.backup.default_backup_directory) {
        (crate::store::Place::Remote(_), Some(dir))
            if settings.backup.local_backup_directory().is_none() =>
        {
            match super::repository(dir, settings, handle)? {
                crate::store::Repository::Remote(remote) => Some(remote),
                crate::store::Repository::Local(_) => None,
            }
        }
        _ => None,
    };
    let request = Request {
        place,
        safety_repository,
        allow_downgrade: args.allow_downgrade,
        overwrite: args.overwrite,
        with_config: args.with_config,
        dry_run: args.dry_run,
    };
    let client = Client::from_settings(settings)?;
    let progress = ui.progress();
    let planning = std::time::Instant::now();
    let plan = restore::plan(&client, settings, &request, &progress).await?;
    let plan_seconds = planning.elapsed().as_secs_f64();

    if args.dry_run {
        if ui.json {
            ui.json(&json!({ "dry_run": true, "plan": plan }));
        } else {
            print_plan(ui, &plan);
            ui.line("Dry-run complete. No changes made.");
        }
        return Ok(match plan.blocker() {
            Some(blocker) => {
                ui.error_lines(&blocker.message, blocker.hint.as_deref());
                blocker.code
            }
            None => ExitCode::Success,
        });
    }
    if let Some(blocker) = plan.blocker() {
        if !ui.json {
            print_plan(ui, &plan);
        }
        return Err(blocker.clone().into());
    }
    if !plan.changes_anything() {
        ui.line(format!("Nothing to restore from {}", plan.backup.display()));
        return Ok(ExitCode::Success);
    }
    if !ui.json {
        print_plan(ui, &plan);
    }
    if !args.force {
        confirm(&plan)?;
    }

    let result = restore::execute(&client, settings, &plan, &progress).await;
    let steps = match &result {
        Ok(outcome) => &outcome.steps,
        Err(unfinished) => &unfinished.steps,
    };
    super::report_cleaned(ui, &steps.cleaned);
    for leftover in &steps.leftovers {
        ui.warn_action(leftover);
    }
    Ok(match result {
        Ok(outcome) => report_outcome(ui, &plan, &outcome, plan_seconds),
        Err(unfinished) => report_unfinished(ui, &plan, &unfinished),
    })
}

/// A restore that ran to the end: what it did and the verification; exit 6 when that failed.
fn report_outcome(ui: &Ui, plan: &Plan, outcome: &restore::Outcome, plan_seconds: f64) -> ExitCode {
    let verified = outcome.verified();
    if ui.json {
        ui.json(&json!({ "plan": plan, "plan_seconds": plan_seconds, "result": outcome, "verified": verified }));
    } else {
        for step in &outcome.steps.done {
            ui.line(format!("✓ {step}"));
        }
        ui.line("Verification:");
        for row in &outcome.verification {
            let mark = if row.ok { "✓" } else { "✗" };
            ui.line(format!(
                "  {mark} {}: expected {}, found {}",
                row.what, row.expected, row.actual
            ));
        }
    }
    if !verified {
        ui.error_lines(
            &format!(
                "Verification after restore failed: {}",
                plan.backup.display()
            ),
            Some(&way_back_hint(&outcome.steps, plan)),
        );
        return ExitCode::VerificationFailed;
    }
    ui.line(format!(
        "Restore completed from {} in {:.1} s",
        plan.backup.display(),
        outcome.seconds
    ));
    ExitCode::Success
}

/// A restore that stopped part-way: the error, what was done, and the way back.
fn report_unfinished(ui: &Ui, plan: &Plan, unfinished: &restore::Unfinished) -> ExitCode {
    let (code, hint) = crate::output::classify(&unfinished.error);
    ui.error_lines(&crate::exit::said(&unfinished.error), hint.as_deref());
    report_stop(ui, &unfinished.steps, plan);
    if ui.json {
        ui.json(&json!({
            "plan": plan,
            "error": { "message": crate::exit::said(&unfinished.error), "hint": hint, "exit_code": code.code() },
            "journal": unfinished.steps,
            "way_back": restore::way_back(&unfinished.steps, plan),
        }));
    }
    code
}

/// Asks on the terminal; never waits for input that cannot come.
fn confirm(plan: &Plan) -> Result<()> {
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(Failure::new(
            ExitCode::Usage,
            "Confirmation needed, but there is no terminal to ask on",
        )
        .with_hint(
            "pass --force to restore without a prompt (review the plan first with --dry-run)",
        )
        .into());
    }
    let collections = plan.restored_collections().count();
    let prompt = format!(
        "Restore {collections} collection(s){} from {}?",
        if plan
            .databases
            .iter()
            .any(|d| d.action != DatabaseAction::Keep)
        {
            " and the state database"
        } else {
            ""
        },
        plan.backup.display()
    );
    let term = console::Term::stderr();
    let yes = match dialoguer::Confirm::new()
        .with_prompt(prompt)
        .default(false)
        .interact_on(&term)
    {
        Ok(yes) => yes,
        // Ctrl-C at the prompt: dialoguer leaves the cursor hidden and says "read interrupted".
        Err(dialoguer::Error::IO(e)) if e.kind() == std::io::ErrorKind::Interrupted => {
            // Handled here: the signal watcher has nothing to clean up or say.
            crate::progress::set_interrupted();
            let _ = term.show_cursor();
            return Err(Failure::new(
                ExitCode::Interrupted,
                "Restore cancelled (Ctrl-C); nothing was changed",
            )
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    if !yes {
        return Err(
            Failure::new(ExitCode::Failure, "Restore cancelled; nothing was changed").into(),
        );
    }
    Ok(())
}

fn way_back_hint(steps: &restore::Steps, plan: &Plan) -> String {
    match restore::way_back(steps, plan) {
        Some(command) => format!("to put back what was there before: {command}"),
        None => "no safety backup was taken".to_string(),
    }
}

/// What a restore that stopped part-way did, did not do, and how to go back.
fn report_stop(ui: &Ui, steps: &restore::Steps, plan: &Plan) {
    if steps.done.is_empty() && steps.uncertain.is_empty() {
        match &steps.safety_backup_removed {
            Some(path) => ui.warn(format!(
                "nothing was changed; the safety backup `{}` was removed (it held what is still there)",
                path.display()
            )),
            None => ui.warn("nothing was changed"),
        }
        return;
    }
    let mut lines = vec!["the restore stopped part-way. Done:".to_string()];
    lines.extend(steps.done.iter().map(|d| format!("  ✓ {d}")));
    lines.extend(steps.uncertain.iter().map(|d| format!("  ? {d}")));
    lines.extend(steps.unchanged.iter().map(|d| format!("  ✗ {d}")));
    if !steps.changed {
        lines.push("Nothing of the live system was changed yet.".to_string());
    }
    if steps.daemon_stopped {
        lines.push("The daemon was stopped and is left stopped; start it once the system is back in order.".to_string());
    }
    if let Some(path) = &steps.safety_backup_removed {
        lines.push(format!(
            "The safety backup `{}` was removed: it held what is still there.",
            path.display()
        ));
    }
    if steps.changed {
        if let (false, Some(safety)) = (steps.uncertain.is_empty(), &steps.safety_backup) {
            lines.push(format!(
                "The safety backup `{}` is kept: Qdrant may have restored a collection, and it holds what was there before.",
                safety.display()
            ));
        }
        lines.push(way_back_hint(steps, plan));
        if !steps.created.is_empty() {
            lines.push(format!(
                "Collections this restore created (not in the safety backup): {}; delete them with `curl -X DELETE <QDRANT_URL>/collections/<name>` if you go back",
                steps.created.join(", ")
            ));
        }
    }
    ui.warn_action(lines.join("\n"));
}

fn print_plan(ui: &Ui, plan: &Plan) {
    let kind = if plan.partial { "partial" } else { "full" };
    ui.line(format!("Restore plan: {}", plan.backup.display()));
    ui.line(format!(
        "  Backup: version {} ({}), created {}, {kind}",
        plan.version, plan.format, plan.formatted_timestamp
    ));
    if let Some(compat) = &plan.compatibility {
        ui.line(format!(
            "  Compatibility: {}: {}",
            compat.verdict, compat.message
        ));
    }
    if plan.migrations.is_empty() {
        ui.line("  Migrations: none");
    } else {
        ui.line("  Migrations:");
        for step in &plan.migrations {
            ui.line(format!("    {}: {}", step.migration, step.description));
            for warning in &step.warnings {
                ui.line(format!("      ⚠ {warning}"));
            }
        }
    }
    print_collections(ui, plan);
    print_databases(ui, plan);
    print_machine(ui, plan);
    for warning in &plan.warnings {
        ui.line(format!("  ⚠ {}", warning.replace('\n', "\n    ")));
    }
    for blocker in &plan.blockers {
        ui.line(format!("  ✗ {}", blocker.message.replace('\n', "\n    ")));
    }
}

/// The plan's collections and aliases.
fn print_collections(ui: &Ui, plan: &Plan) {
    if plan.collections.is_empty() {
        ui.line("  Collections: none");
    } else {
        ui.line("  Collections:");
        for c in &plan.collections {
            let action = match c.action {
                CollectionAction::Create => "create",
                CollectionAction::Overwrite => "overwrite",
                CollectionAction::Conflict => "conflict",
            };
            let reason = c
                .reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            let shards = if c.shards > 0 {
                format!("{} shards, ", c.shards)
            } else {
                String::new()
            };
            ui.line(format!(
                "    {action:<10}{} ({} points, {shards}{}){reason}",
                c.name,
                c.points,
                indicatif::BinaryBytes(c.bytes)
            ));
        }
    }
    for alias in &plan.aliases {
        let action = match &alias.action {
            AliasAction::Create => "create".to_string(),
            AliasAction::Repoint { from } => format!("repoint (from {from})"),
            AliasAction::Keep => "keep".to_string(),
        };
        ui.line(format!(
            "  Alias: {} → {} ({action})",
            alias.alias, alias.collection
        ));
    }
}

/// The plan's databases and config.
fn print_databases(ui: &Ui, plan: &Plan) {
    if plan.databases.is_empty() {
        ui.line("  Databases: none in the backup; the live ones are kept");
    }
    for d in &plan.databases {
        let action = match d.action {
            DatabaseAction::Replace => "replace",
            DatabaseAction::Merge => "merge the rows of the restored collections into",
            DatabaseAction::Keep => "keep",
        };
        let schema = |v: Option<i64>| v.map_or("-".to_string(), |v| format!("v{v}"));
        ui.line(format!(
            "  Database {}: {action} {} (backup schema {}, live schema {})",
            d.name,
            d.live.display(),
            schema(d.backup_schema),
            if d.live_exists {
                schema(d.live_schema)
            } else {
                "none".to_string()
            }
        ));
    }
    let target = plan
        .config
        .target
        .as_ref()
        .map_or("-".to_string(), |t| t.display().to_string());
    ui.line(match (plan.config.in_backup, plan.config.replace) {
        (false, _) => "  Config: none in the backup; kept".to_string(),
        (true, true) if plan.config.keeps_live.is_empty() => format!("  Config: replace {target}"),
        (true, true) => format!(
            "  Config: replace {target}, keeping its values of the secrets the backup left out: {}",
            plan.config.keeps_live.join(", ")
        ),
        (true, false) => format!("  Config: kept (--with-config replaces {target})"),
    });
}

/// The plan's daemon, safety backup, disk space and time.
fn print_machine(ui: &Ui, plan: &Plan) {
    ui.line(
        match (&plan.daemon.running, plan.daemon.will_stop_and_start) {
            (None, _) => "  Daemon: not running".to_string(),
            (Some(why), true) => {
                format!("  Daemon: running ({why}); stopped before and started after the restore")
            }
            (Some(why), false) => {
                format!("  Daemon: running ({why}) and no `backup.daemon.stop_command` to stop it")
            }
        },
    );
    ui.line(match &plan.safety_backup {
        Some(s) => {
            let mut parts = Vec::new();
            if !s.collections.is_empty() {
                parts.push(format!("collections {}", s.collections.join(", ")));
            }
            if !s.databases.is_empty() {
                parts.push(format!("databases {}", s.databases.join(", ")));
            }
            if s.config {
                parts.push("config".to_string());
            }
            format!(
                "  Safety backup: {} ({})",
                s.path.display(),
                parts.join("; ")
            )
        }
        None => {
            "  Safety backup: none (nothing the restore changes exists yet, or it is turned off)"
                .to_string()
        }
    });
    let free = plan.disk_free_bytes.map_or("unknown".to_string(), |f| {
        indicatif::BinaryBytes(f).to_string()
    });
    ui.line(format!(
        "  Disk: needs about {}, {free} free",
        indicatif::BinaryBytes(plan.disk_needed_bytes)
    ));
    ui.line(format!(
        "  Estimated time: about {} s ({} to upload)",
        plan.estimated_seconds,
        output::size(plan.bytes_to_upload)
    ));
}

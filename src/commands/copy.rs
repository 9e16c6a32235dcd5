//! `wqm backup copy SRC DEST [BACKUP...]`: backups copied between repositories (see `copy`).

use anyhow::{Context, Result};
use serde_json::json;

use crate::cleanup;
use crate::cli::CopyArgs;
use crate::config::Settings;
use crate::copy::{self, Dest, Source, Status};
use crate::exit::ExitCode;
use crate::output::Ui;
use crate::store::lock::RepoLock;
use crate::store::Repository;

pub async fn run(
    args: &CopyArgs,
    settings: &Settings,
    ui: &Ui,
    handle: &tokio::runtime::Handle,
) -> Result<ExitCode> {
    let source = super::repository(&args.source, settings, handle)?;
    if let Repository::Local(dir) = &source {
        super::backups_dir(dir)?;
    }
    let dest = super::repository(&args.dest, settings, handle)?;
    copy::refuse_same(&source, &dest)?;
    if let Repository::Remote(remote) = &dest {
        crate::backup::require_exclusive_names(remote.backend(), remote.shown_root()).await?;
    }
    // What killed runs left where this one writes.
    match &dest {
        Repository::Local(dir) => {
            crate::fs::create_private_dir_all(dir)
                .with_context(|| format!("cannot create `{}`", dir.display()))?;
            super::report_cleaned(ui, &cleanup::dead_runs(&[dir.as_path()], settings).await);
        }
        Repository::Remote(remote) => super::clean_remote_runs(remote, ui).await?,
    }
    // Held for the whole run, on both sides: no prune deletes what is read or landed.
    let source_lock = RepoLock::shared(&source, "backup copy")?;
    let dest_lock = RepoLock::adding(&dest, "backup copy")?;
    let (source, dest) = (Source::new(source), Dest::new(dest, dest_lock));
    let progress = ui.progress();
    let copied =
        tokio::task::block_in_place(|| copy::copy(&source, &dest, &args.backups, &progress))?;
    drop(source_lock);

    let mut failures = Vec::new();
    let mut items = Vec::new();
    for mut one in copied {
        let error = one.error.take();
        let mut item = serde_json::to_value(&one)?;
        if let Some(e) = &error {
            let (code, _) = crate::output::classify(e);
            item["error"] = crate::exit::said(e).into();
            item["exit_code"] = serde_json::to_value(code)?;
        }
        if !ui.json {
            ui.line(match one.status {
                Status::Copied => format!(
                    "Copied `{}`: {} file(s), {} chunk(s) sent, {} sent",
                    one.name,
                    one.files,
                    one.chunks_sent,
                    indicatif::BinaryBytes(one.bytes_sent)
                ),
                Status::Skipped => {
                    format!("Skipped `{}`: the destination has it already", one.name)
                }
                Status::Failed => format!("Not copied `{}`", one.name),
            });
        }
        items.push(item);
        failures.extend(error);
    }
    let count = |status| {
        items
            .iter()
            .filter(|i| i["status"] == json!(status))
            .count()
    };
    let (done, skipped) = (count(Status::Copied), count(Status::Skipped));
    if ui.json {
        ui.json(&json!({
            "source": copy::shown(source.repository()),
            "destination": dest.shown(),
            "backups": items,
            "copied": done,
            "skipped": skipped,
            "failed": failures.len(),
        }));
    } else {
        ui.line(format!(
            "{done} backup(s) copied, {skipped} skipped, {} not copied, from `{}` to `{}`",
            failures.len(),
            copy::shown(source.repository()),
            dest.shown()
        ));
    }
    // Each failure on stderr; the first one's code is the run's.
    let mut code = ExitCode::Success;
    for failure in &failures {
        let (failed, hint) = crate::output::classify(failure);
        ui.error_lines(&format!("{failure:#}"), hint.as_deref());
        if code == ExitCode::Success {
            code = failed;
        }
    }
    Ok(code)
}

//! `wqm backup cleanup [DIR]`: clean up after runs that died (see `cleanup`).

use anyhow::Result;
use serde_json::json;

use crate::cleanup;
use crate::cli::CleanupArgs;
use crate::config::Settings;
use crate::exit::ExitCode;
use crate::output::Ui;

pub async fn run(args: &CleanupArgs, settings: &Settings, ui: &Ui) -> Result<ExitCode> {
    let mut dirs = Vec::new();
    if let Some(dir) = args
        .directory
        .as_ref()
        .or(settings.backup.default_backup_directory.as_ref())
    {
        super::backups_dir(dir)?;
        dirs.push(dir.as_path());
    }
    dirs.push(settings.data_dir.as_path());
    let cleaned = cleanup::dead_runs(&dirs, settings).await;
    let unfinished = cleaned.iter().filter(|c| !c.complete).count();
    if ui.json {
        ui.json(&json!({ "directories": dirs, "cleaned": cleaned, "unfinished": unfinished }));
    } else {
        for run in &cleaned {
            ui.line(run.report());
        }
        let looked = dirs
            .iter()
            .map(|d| format!("`{}`", d.display()))
            .collect::<Vec<_>>()
            .join(" and ");
        ui.line(match cleaned.len() {
            0 => format!("No dead runs in {looked}"),
            n => format!("Cleaned up after {n} dead run(s) in {looked}; {unfinished} not finished"),
        });
    }
    // Something is still on a server or on disk: the operator has to look.
    Ok(if unfinished > 0 {
        ExitCode::ActionNeeded
    } else {
        ExitCode::Success
    })
}

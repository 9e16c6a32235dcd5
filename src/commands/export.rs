//! `wqm backup export BACKUP DEST`: a self-contained copy of one backup (see `export`).

use anyhow::Result;
use serde_json::json;

use crate::cli::ExportArgs;
use crate::config::Settings;
use crate::exit::ExitCode;
use crate::output::Ui;
use crate::store::lock::RepoLock;

pub fn run(args: &ExportArgs, settings: &Settings, ui: &Ui) -> Result<ExitCode> {
    crate::format::layout::refuse_unfinished(&args.backup)?;
    // Held while every file is read: no prune deletes the backup or its chunks meanwhile.
    let _lock = RepoLock::shared(crate::fs::parent_dir(&args.backup), "backup export")?;
    let progress = ui.progress();
    let outcome = crate::export::export(&args.backup, &args.dest, settings, &progress)?;
    let m = &outcome.manifest;
    if ui.json {
        ui.json(&json!({
            "source": args.backup,
            "path": outcome.path,
            "format": m.format_name(),
            "compression": m.compression,
            "files": m.files.len(),
            "size_bytes": outcome.size,
        }));
    } else {
        ui.line(format!(
            "Backup exported: {} ({} files, {}); it restores without the chunk store",
            outcome.path.display(),
            m.files.len(),
            indicatif::BinaryBytes(outcome.size)
        ));
    }
    Ok(ExitCode::Success)
}

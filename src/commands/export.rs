//! `wqm backup export BACKUP DEST`: a self-contained local copy of one backup, local or on S3
//! (see `export`).

use anyhow::Result;
use serde_json::json;

use crate::cli::ExportArgs;
use crate::config::Settings;
use crate::exit::ExitCode;
use crate::output::Ui;

pub fn run(
    args: &ExportArgs,
    settings: &Settings,
    ui: &Ui,
    handle: &tokio::runtime::Handle,
) -> Result<ExitCode> {
    // Held while every file is read (from a local directory or S3): no prune deletes the
    // backup or its chunks meanwhile.
    let (place, _lock) = super::locked_place(&args.backup, settings, handle, "backup export")?;
    let progress = ui.progress();
    let outcome = crate::export::export(&place, &args.dest, settings, &progress)?;
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

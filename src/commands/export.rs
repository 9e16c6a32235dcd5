//! `wqm backup export BACKUP DEST`: a self-contained copy of one backup, each side a local
//! directory or on S3 (see `export`); to S3 it is made locally, then sent (`backup::Sending`).

use anyhow::Result;
use serde_json::json;

use crate::backend::Location;
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
    let (place, _lock) =
        super::locked_place(&args.backup, (settings, handle, ui), "backup export")?;
    // To S3: the server is asked, and the name claimed, before anything is read.
    let mut sending = match super::location(&args.dest)? {
        Location::Local(_) => None,
        Location::S3 { bucket, prefix } => {
            let target = super::remote_backup(&args.dest, &bucket, &prefix, settings, handle)?;
            Some(handle.block_on(super::prepare_sending(target, ("backup export", false), ui))?)
        }
    };
    let progress = ui.progress();
    let target = match &sending {
        None => args.dest.clone(),
        Some(sending) => sending.staged_target(),
    };
    let mut outcome = crate::export::export(&place, &target, settings, &progress)?;
    if let Some(sending) = &mut sending {
        outcome.path = handle.block_on(sending.send(&outcome.path, false, &progress))?;
    }
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

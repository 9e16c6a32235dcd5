//! `wqm backup dump BACKUP FILE`: one stored file's plain content on stdout (see `dump`).

use std::io::IsTerminal;

use anyhow::Result;

use crate::cli::DumpArgs;
use crate::config::Settings;
use crate::exit::{ExitCode, Failure};
use crate::output::Ui;

/// Refused before anything is read (exit 2): `--json`, since stdout is the file's content, and
/// a terminal as stdout, as restic's `dump` refuses one.
pub fn refuse(args: &DumpArgs) -> Result<()> {
    if args.output.json {
        return Err(Failure::new(
            ExitCode::Usage,
            "`--json` does not apply to `wqm backup dump`: its stdout is the file's raw content",
        )
        .with_hint("leave out `--json`; the exit code tells whether the content is whole")
        .into());
    }
    if std::io::stdout().is_terminal() {
        return Err(Failure::new(
            ExitCode::Usage,
            "stdout is a terminal: `wqm backup dump` writes the file's raw content",
        )
        .with_hint("redirect it: `wqm backup dump BACKUP FILE > OUT`, or pipe it into a command")
        .into());
    }
    Ok(())
}

pub fn run(
    args: &DumpArgs,
    settings: &Settings,
    ui: &Ui,
    handle: &tokio::runtime::Handle,
) -> Result<ExitCode> {
    // Held while the file is read (from a local directory or S3): no prune deletes the backup
    // or its chunks meanwhile.
    let (place, _lock) = super::locked_place(&args.backup, (settings, handle, ui), "backup dump")?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    // Flushed at its end: reaching it means the whole content was written and matched.
    crate::dump::dump(&place, &args.file, &mut out, &ui.progress())?;
    Ok(ExitCode::Success)
}

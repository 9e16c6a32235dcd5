//! One file per command; each only orchestrates the domain modules and prints.

mod cleanup;
mod create;
mod export;
mod info;
mod list;
mod migrations;
mod prune;
mod reference;
mod restore;
mod validate;

use anyhow::Result;

use crate::cli::{BackupCommand, Cli, Command, OutputArgs};
use crate::config::{Env, Overrides, Settings};
use crate::exit::ExitCode;
use crate::output::Ui;

/// Runs the parsed command line; errors are reported by the caller through `ui`.
pub fn dispatch(cli: Cli, ui: &Ui, runtime: &tokio::runtime::Runtime) -> Result<ExitCode> {
    let overrides = Overrides {
        config: cli.config.clone(),
        qdrant_url: cli.qdrant_url.clone(),
    };
    let command = match cli.command {
        Command::Completions { shell } => return reference::completions(shell),
        Command::Manpage => return reference::manpage(),
        Command::Backup(command) => command,
    };
    let settings = Settings::load(&Env::from_process(), &overrides)?;
    // Every command may lock its backups directory, whose lock a task refreshes.
    let _runtime = runtime.enter();
    let default_dir = settings.backup.default_backup_directory.as_deref();
    for path in command.paths().into_iter().chain(default_dir) {
        local_only(path)?;
    }
    match command {
        BackupCommand::Create(args) => runtime.block_on(create::run(&args, &settings, ui)),
        BackupCommand::Restore(args) => runtime.block_on(restore::run(&args, &settings, ui)),
        BackupCommand::Info(args) => info::run(&args, &settings, ui),
        BackupCommand::List(args) => list::run(&args, &settings, ui),
        BackupCommand::Validate(args) => validate::run(&args, &settings, ui),
        BackupCommand::Export(args) => export::run(&args, &settings, ui),
        BackupCommand::Prune(args) => runtime.block_on(prune::run(&args, &settings, ui)),
        BackupCommand::Cleanup(args) => runtime.block_on(cleanup::run(&args, &settings, ui)),
        BackupCommand::Migrations(args) => migrations::run(&args, ui),
    }
}

/// A backup path or backups directory must be a local one: an `s3://` location is refused before
/// anything is done (it would otherwise be a local directory named `s3:`), and so is any other
/// `SCHEME://`.
fn local_only(path: &std::path::Path) -> Result<()> {
    let Some(given) = path.to_str() else {
        return Ok(());
    };
    match crate::backend::Location::parse(given)? {
        crate::backend::Location::Local(_) => Ok(()),
        remote => Err(crate::exit::Failure::new(
            ExitCode::Usage,
            format!("`{remote}` is an S3 location: this wqm keeps backups in local directories only"),
        )
        .with_hint("back up to a local directory, then copy it offsite as docs/incremental.md shows (`rsync -a DIR/ DEST/`)")
        .into()),
    }
}

/// The directory of backups `list` and `prune` work in must exist.
fn backups_dir(dir: &std::path::Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    Err(crate::exit::Failure::new(
        ExitCode::Failure,
        format!("Directory not found: {}", dir.display()),
    )
    .with_hint("pass the directory that holds the backups")
    .into())
}

/// Reports each dead run that was cleaned up: on stderr, also with `--quiet`, since an
/// operator may have to act on it (start the daemon, put a safety backup back); what needs no
/// action (a dead run's unnamed chunks, removed) is a warning.
fn report_cleaned(ui: &Ui, cleaned: &[crate::cleanup::Cleaned]) {
    for run in cleaned {
        if run.needs_action {
            ui.warn_action(run.report());
        } else {
            ui.warn(run.report());
        }
    }
}

/// The `Ui` of a parsed command line.
pub fn ui_for(cli: &Cli) -> Ui {
    let output = match &cli.command {
        Command::Backup(command) => match command {
            BackupCommand::Create(args) => args.output,
            BackupCommand::Restore(args) => args.output,
            BackupCommand::Info(args) => args.output,
            BackupCommand::List(args) => args.output,
            BackupCommand::Validate(args) => args.output,
            BackupCommand::Export(args) => args.output,
            BackupCommand::Prune(args) => args.output,
            BackupCommand::Migrations(args) => args.output,
            BackupCommand::Cleanup(args) => args.output,
        },
        Command::Completions { .. } | Command::Manpage => OutputArgs {
            json: false,
            verbose: false,
            quiet: false,
        },
    };
    Ui::new(output)
}

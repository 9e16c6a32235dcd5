//! One file per command; each only orchestrates the domain modules and prints.

mod cleanup;
mod copy;
mod create;
mod export;
mod info;
mod list;
mod migrations;
mod prune;
mod reference;
mod restore;
mod validate;

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use tokio::runtime::Handle;

use crate::backend::s3::S3Backend;
use crate::backend::Location;
use crate::store::lock::RepoLock;
use crate::store::{Place, Remote, Repository};

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
    // Every command takes `s3://` paths but for export's DEST, which is written locally.
    if let BackupCommand::Export(args) = &command {
        local_only(&args.dest)?;
    }
    // `backup.default_backup_directory` is a local directory or `s3://BUCKET/PREFIX`; `s3:`
    // without `//` and other schemes are refused before anything is done.
    if let Some(dir) = default_dir {
        location(dir)?;
    }
    let handle = runtime.handle();
    match command {
        BackupCommand::Create(args) => runtime.block_on(create::run(&args, &settings, ui, handle)),
        BackupCommand::Restore(args) => {
            runtime.block_on(restore::run(&args, &settings, ui, handle))
        }
        BackupCommand::Info(args) => info::run(&args, &settings, ui, handle),
        BackupCommand::List(args) => list::run(&args, &settings, ui, handle),
        BackupCommand::Validate(args) => validate::run(&args, &settings, ui, handle),
        BackupCommand::Export(args) => export::run(&args, &settings, ui, handle),
        BackupCommand::Copy(args) => runtime.block_on(copy::run(&args, &settings, ui, handle)),
        BackupCommand::Prune(args) => runtime.block_on(prune::run(&args, &settings, ui, handle)),
        BackupCommand::Cleanup(args) => {
            runtime.block_on(cleanup::run(&args, &settings, ui, handle))
        }
        BackupCommand::Migrations(args) => migrations::run(&args, ui),
    }
}

/// Where a command writes only locally (export's DEST), an `s3://` location is refused before
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
            format!("`{remote}` is an S3 location: `export` writes its copy to a local directory (it reads a backup on S3: `wqm backup export s3://BUCKET/PREFIX/NAME DIR`)"),
        )
        .with_hint("export to a local directory; `wqm backup copy SRC s3://BUCKET/PREFIX NAME` puts a backup on S3")
        .into()),
    }
}

/// The backup at `path`: a local directory, or `s3://BUCKET/PREFIX/NAME`, a backup of the
/// repository `s3://BUCKET/PREFIX` whose server was asked once (`S3Backend::check`), so wrong
/// credentials, a missing bucket or an unreachable endpoint stop the run before anything else.
fn backup_place(path: &Path, settings: &Settings, handle: &Handle) -> Result<Place> {
    match location(path)? {
        Location::Local(path) => Ok(Place::Local(path)),
        Location::S3 { bucket, prefix } => {
            let (repository, name) = remote_backup(path, &bucket, &prefix, settings, handle)?;
            Ok(Place::Remote(tokio::task::block_in_place(|| {
                repository.backup(&name)
            })?))
        }
    }
}

/// The backup at `path` (as `backup_place`) with its repository's shared lock held for the run
/// `command`. On S3 the lock is taken before the backup's objects are listed, so no prune
/// deletes any of them between the listing and the reads.
fn locked_place(
    path: &Path,
    settings: &Settings,
    handle: &Handle,
    command: &str,
) -> Result<(Place, RepoLock)> {
    match location(path)? {
        Location::Local(path) => {
            // A staging directory is refused, not waited for.
            crate::format::layout::refuse_unfinished(&path)?;
            let lock = RepoLock::shared(crate::fs::parent_dir(&path), command)?;
            Ok((Place::Local(path), lock))
        }
        Location::S3 { bucket, prefix } => {
            let (repository, name) = remote_backup(path, &bucket, &prefix, settings, handle)?;
            let lock = RepoLock::shared(&repository, command)?;
            let backup = tokio::task::block_in_place(|| repository.backup(&name))?;
            Ok((Place::Remote(backup), lock))
        }
    }
}

/// `s3://BUCKET/PREFIX/NAME` as the repository `s3://BUCKET/PREFIX` (checked as `remote`
/// does) and the backup's name in it.
fn remote_backup(
    path: &Path,
    bucket: &str,
    prefix: &str,
    settings: &Settings,
    handle: &Handle,
) -> Result<(Remote, String)> {
    let (parent, name) = prefix.rsplit_once('/').unwrap_or(("", prefix));
    if name.is_empty() || crate::format::layout::is_hidden(name) {
        return Err(crate::exit::Failure::new(
            ExitCode::Usage,
            format!("`{}` names no backup", path.display()),
        )
        .with_hint("write `s3://BUCKET/PREFIX/NAME`; `wqm backup list s3://BUCKET/PREFIX` shows the backups there")
        .into());
    }
    Ok((remote(bucket, parent, settings, handle)?, name.to_string()))
}

/// The backups directory at `dir`: a local one, or an S3 repository (checked as for a backup).
fn repository(dir: &Path, settings: &Settings, handle: &Handle) -> Result<Repository> {
    match location(dir)? {
        Location::Local(path) => Ok(Repository::Local(path)),
        Location::S3 { bucket, prefix } => Ok(Repository::Remote(remote(
            &bucket, &prefix, settings, handle,
        )?)),
    }
}

fn location(path: &Path) -> Result<Location> {
    match path.to_str() {
        Some(given) => Ok(Location::parse(given)?),
        None => Ok(Location::Local(path.to_path_buf())),
    }
}

/// The repository `s3://bucket/prefix`, its server asked once before anything else is done.
fn remote(bucket: &str, prefix: &str, settings: &Settings, handle: &Handle) -> Result<Remote> {
    let resolved = settings.backup.s3.options().resolve()?;
    let backend = S3Backend::open(bucket, prefix, &resolved)?;
    tokio::task::block_in_place(|| handle.block_on(backend.check()))?;
    let shown = Location::S3 {
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
    }
    .to_string();
    Ok(Remote::new(Arc::new(backend), handle.clone(), shown))
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

/// Removes what this host's killed creates left in the repository on S3
/// (`backup::remote::clean_dead_runs`), a warning line each.
async fn clean_remote_runs(repository: &Remote, ui: &Ui) -> Result<()> {
    for removed in crate::backup::remote::clean_dead_runs(repository.backend()).await? {
        ui.warn(format!(
            "removed what a killed run left of `{}` in `{}`: {} object(s), {} unfinished upload(s)",
            removed.target,
            repository.shown_root(),
            removed.objects,
            removed.uploads
        ));
    }
    Ok(())
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
            BackupCommand::Copy(args) => args.output,
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

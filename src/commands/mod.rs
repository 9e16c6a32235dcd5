//! One file per command; each only orchestrates the domain modules and prints.

mod cleanup;
mod copy;
mod create;
mod dump;
mod export;
mod info;
mod init;
mod key;
mod list;
mod migrations;
mod prune;
mod reference;
mod restore;
mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::io::IsTerminal;

use anyhow::Result;
use tokio::runtime::Handle;

use crate::backend::local::LocalBackend;
use crate::backend::s3::S3Backend;
use crate::backend::{Backend, Location};
use crate::crypto::Password;
use crate::repo::password::{self as passwords, PasswordError};
use crate::store::chunks::ChunkStore;
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
    let password_file = cli.password_file.clone();
    let password_file = password_file.as_deref();
    let command = match cli.command {
        Command::Completions { shell } => return reference::completions(shell),
        Command::Manpage => return reference::manpage(),
        Command::Backup(command) => command,
    };
    let env = Env::from_process();
    let settings = Settings::load(&env, &overrides)?;
    // Every command may lock its backups directory, whose lock a task refreshes.
    let _runtime = runtime.enter();
    let default_dir = settings.backup.default_backup_directory.as_deref();
    // `--json` and a terminal as stdout are refused before anything is looked at.
    if let BackupCommand::Dump(args) = &command {
        dump::refuse(args)?;
    }
    // `backup.default_backup_directory` is a local directory or `s3://BUCKET/PREFIX`; `s3:`
    // without `//` and other schemes are refused before anything is done.
    if let Some(dir) = default_dir {
        location(dir)?;
    }
    let handle = runtime.handle();
    let secrets = (&settings, &env, password_file);
    runtime.block_on(guard(&command, default_dir, secrets, ui))?;
    match command {
        BackupCommand::Create(args) => runtime.block_on(create::run(&args, &settings, ui, handle)),
        BackupCommand::Restore(args) => {
            runtime.block_on(restore::run(&args, &settings, ui, handle))
        }
        BackupCommand::Info(args) => info::run(&args, &settings, ui, handle),
        BackupCommand::List(args) => list::run(&args, &settings, ui, handle),
        BackupCommand::Validate(args) => validate::run(&args, &settings, ui, handle),
        BackupCommand::Export(args) => export::run(&args, &settings, ui, handle),
        BackupCommand::Dump(args) => dump::run(&args, &settings, ui, handle),
        BackupCommand::Copy(args) => runtime.block_on(copy::run(&args, &settings, ui, handle)),
        BackupCommand::Prune(args) => runtime.block_on(prune::run(&args, &settings, ui, handle)),
        BackupCommand::Cleanup(args) => {
            runtime.block_on(cleanup::run(&args, &settings, ui, handle))
        }
        BackupCommand::Migrations(args) => migrations::run(&args, ui),
        BackupCommand::Init(args) => runtime.block_on(init::run(&args, secrets, ui, handle)),
        BackupCommand::Key(command) => runtime.block_on(key::run(&command, secrets, ui)),
    }
}

/// The repositories a command reads or writes backups in: the directory of each backup it is
/// given (and the path itself, which may be a repository), the directory it lists or prunes,
/// where it creates, and where restore writes its safety backup.
fn repositories_touched(command: &BackupCommand, default_dir: Option<&Path>) -> Vec<PathBuf> {
    let backup = |path: &Path| {
        let mut both = vec![path.to_path_buf()];
        both.extend(parent_of(path));
        both
    };
    let mut touched = match command {
        BackupCommand::Create(args) => match &args.path {
            Some(path) => parent_of(path).into_iter().collect(),
            None => default_dir.map(Path::to_path_buf).into_iter().collect(),
        },
        BackupCommand::Restore(args) => {
            let mut touched = backup(&args.path);
            touched.extend(default_dir.map(Path::to_path_buf));
            touched
        }
        BackupCommand::Info(args) => backup(&args.path),
        BackupCommand::Validate(args) => backup(&args.path),
        BackupCommand::Dump(args) => backup(&args.backup),
        BackupCommand::List(args) => vec![args.directory.clone()],
        BackupCommand::Export(args) => {
            let mut touched = backup(&args.backup);
            touched.extend(parent_of(&args.dest));
            touched
        }
        BackupCommand::Copy(args) => vec![args.source.clone(), args.dest.clone()],
        BackupCommand::Prune(args) => args
            .directory
            .as_deref()
            .or(default_dir)
            .map(Path::to_path_buf)
            .into_iter()
            .collect(),
        BackupCommand::Cleanup(_)
        | BackupCommand::Migrations(_)
        | BackupCommand::Init(_)
        | BackupCommand::Key(_) => Vec::new(),
    };
    touched.dedup();
    touched
}

/// The directory (repository) that holds the backup at `path`: `s3://BUCKET/PREFIX` for
/// `s3://BUCKET/PREFIX/NAME`, none for a bucket's root or `/`.
fn parent_of(path: &Path) -> Option<PathBuf> {
    match location(path).ok()? {
        Location::Local(path) => Some(match path.parent()? {
            p if p.as_os_str().is_empty() => PathBuf::from("."),
            p => p.to_path_buf(),
        }),
        Location::S3 { bucket, prefix } if !prefix.is_empty() => {
            let prefix = prefix.rsplit_once('/').map_or("", |(p, _)| p).to_string();
            Some(PathBuf::from(Location::S3 { bucket, prefix }.to_string()))
        }
        Location::S3 { .. } => None,
    }
}

/// What a password is looked for with: the settings (`backup.encryption.password_command`),
/// the environment and `--password-file`.
type Secrets<'a> = (&'a Settings, &'a Env, Option<&'a Path>);

/// THE one step before any command reads or writes backups: every encrypted repository among
/// those it touches is opened with its password (asked once for the run; a wrong one is exit 2
/// before anything is read or written) and its master key registered with the storage seam
/// (`store::seal`), which then encrypts and decrypts everything there. Without a password (no
/// source and no terminal) the run stops with exit 2, saying what the repository's config says.
/// `copy`'s SOURCE takes its own password when one is given apart (`--from-password-file`,
/// `WQM_FROM_PASSWORD_FILE`, `WQM_FROM_PASSWORD`), else the same as DEST's. A local directory
/// without `.wqm-repo` is not looked into further.
async fn guard(
    command: &BackupCommand,
    default_dir: Option<&Path>,
    (settings, env, password_file): Secrets<'_>,
    ui: &Ui,
) -> Result<()> {
    let mut given: Option<Password> = None;
    let mut opened: Vec<(PathBuf, Arc<dyn Backend>)> = Vec::new();
    for dir in repositories_touched(command, default_dir) {
        let backend: Arc<dyn Backend> = match location(&dir)? {
            Location::Local(path) => {
                if path.join(crate::repo::REPO_DIR).symlink_metadata().is_err() {
                    continue;
                }
                Arc::new(LocalBackend::open(&path)?)
            }
            Location::S3 { bucket, prefix } => {
                Arc::new(s3_checked(&bucket, &prefix, settings).await?)
            }
        };
        opened.push((dir, backend));
    }
    // Read side by side: on S3 each is a round trip before the command starts.
    let configs = futures_util::future::join_all(opened.iter().map(|(dir, backend)| async move {
        crate::repo::read_config(&**backend, &dir.display().to_string()).await
    }))
    .await;
    for ((dir, backend), config) in opened.into_iter().zip(configs) {
        let shown = dir.display().to_string();
        let Some(config) = config? else {
            continue;
        };
        if !config.encrypted {
            continue;
        }
        let apart = match command {
            BackupCommand::Copy(args) if dir == args.source => {
                passwords::from_source(args.from_password_file.as_deref(), env)?
            }
            _ => None,
        };
        let own = apart.is_some();
        let password = match apart.or_else(|| given.take()) {
            Some(password) => password,
            None => match password(password_file, env, settings, &shown, Asking::Existing, ui) {
                Ok(password) => password,
                Err(e) if matches!(e.downcast_ref(), Some(PasswordError::Needed { .. })) => {
                    return Err(crate::repo::RepoError::Encrypted {
                        repository: shown,
                        version: config.version,
                        master_key_id: config.master_key_id.unwrap_or_default(),
                    }
                    .into())
                }
                Err(e) => return Err(e),
            },
        };
        let unlocked = crate::repo::Unlocked::open(backend, &config, &password).await?;
        crate::store::seal::unlock(&shown, Arc::new(unlocked.into_master()));
        if !own {
            given = Some(password);
        }
    }
    Ok(())
}

/// The repository at `dir` as a backend, and how to show it. A local directory is made when
/// `make` (for `init`), else it must exist (a missing one is no repository); on S3 the server
/// is asked once first.
async fn backend_at(
    dir: &Path,
    settings: &Settings,
    make: bool,
) -> Result<(Arc<dyn Backend>, String)> {
    let shown = dir.display().to_string();
    match location(dir)? {
        Location::Local(path) => {
            if !make && !path.is_dir() {
                return Err(crate::repo::RepoError::NotARepository { repository: shown }.into());
            }
            Ok((Arc::new(LocalBackend::open(&path)?), shown))
        }
        Location::S3 { bucket, prefix } => {
            let backend = s3_checked(&bucket, &prefix, settings).await?;
            if make {
                crate::backup::require_exclusive_names(&backend, &shown).await?;
            }
            Ok((Arc::new(backend), shown))
        }
    }
}

/// The S3 backend of `s3://bucket/prefix`, its server asked once.
async fn s3_checked(bucket: &str, prefix: &str, settings: &Settings) -> Result<S3Backend> {
    let resolved = settings.backup.s3.options().resolve()?;
    let backend = S3Backend::open(bucket, prefix, &resolved)?;
    backend.check().await?;
    Ok(backend)
}

/// Whether a password is a new one (asked twice) or opens a key.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Asking {
    Existing,
    New,
}

/// The password of `repository`: from `--password-file`, `WQM_BACKUP_PASSWORD_FILE`,
/// `WQM_BACKUP_PASSWORD` or `backup.encryption.password_command`; else asked on the terminal
/// (twice for a new one) when stdin is one; else refused, naming those ways.
fn password(
    file: Option<&Path>,
    env: &Env,
    settings: &Settings,
    repository: &str,
    asking: Asking,
    ui: &Ui,
) -> Result<Password> {
    let command = settings.backup.encryption.password_command.as_deref();
    if let Some((password, source)) = passwords::from_sources(file, env, command)? {
        crate::progress::Progress::step(&ui.progress(), &format!("Password from {source}"));
        return Ok(password);
    }
    let (prompt, what) = match asking {
        Asking::Existing => (format!("Password for `{repository}`"), "a password"),
        Asking::New => (format!("New password for `{repository}`"), "a new password"),
    };
    if !std::io::stdin().is_terminal() {
        return Err(PasswordError::Needed {
            what,
            repository: repository.to_string(),
            ways: passwords::WAYS,
        }
        .into());
    }
    crate::output::ask_password(&prompt, asking == Asking::New)
}

/// The new password of `key add` and `key passwd`: from `--new-password-file`, else asked
/// twice on the terminal.
fn new_password(file: Option<&Path>, repository: &str) -> Result<Password> {
    if let Some(path) = file {
        let source = passwords::Source::Flag(path.to_path_buf());
        return Ok(passwords::read_file(
            path,
            "`--new-password-file`",
            &source,
        )?);
    }
    if !std::io::stdin().is_terminal() {
        return Err(PasswordError::Needed {
            what: "a new password",
            repository: repository.to_string(),
            ways: "`--new-password-file FILE`",
        }
        .into());
    }
    crate::output::ask_password(&format!("New password for `{repository}`"), true)
}

/// The backup at `path`: a local directory, or `s3://BUCKET/PREFIX/NAME`, a backup of the
/// repository `s3://BUCKET/PREFIX` whose server was asked once (`S3Backend::check`), so wrong
/// credentials, a missing bucket or an unreachable endpoint stop the run before anything else.
fn backup_place(path: &Path, settings: &Settings, handle: &Handle, ui: &Ui) -> Result<Place> {
    match location(path)? {
        Location::Local(path) => Ok(Place::Local(path)),
        Location::S3 { bucket, prefix } => {
            let (repository, name) = remote_backup(path, &bucket, &prefix, settings, handle)?;
            let backup = tokio::task::block_in_place(|| repository.backup(&name))?;
            warn_half_swapped(ui, &backup);
            Ok(Place::Remote(backup))
        }
    }
}

/// A warning when `backup` is read from where a killed `create --force` sent it.
fn warn_half_swapped(ui: &Ui, backup: &crate::store::RemoteBackup) {
    if backup.is_half_swapped() {
        ui.warn(crate::backup::remote::DeadRuns::waiting_line(
            &backup.name,
            backup.repository.shown_root(),
        ));
    }
}

/// The backup at `path` (as `backup_place`) with its repository's shared lock held for the run
/// `command`. On S3 the lock is taken before the backup's objects are listed, so no prune
/// deletes any of them between the listing and the reads.
fn locked_place(
    path: &Path,
    (settings, handle, ui): (&Settings, &Handle, &Ui),
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
            // The chunk store (its parameters, listings and pack indexes: round trips in a row,
            // kept for the run) is opened beside the backup's listing and manifest (kept by the
            // backup): each of these commands reads them next. A backup without chunks has no
            // store; a failure here is reported by the read that needs it.
            let backup = tokio::task::block_in_place(|| {
                std::thread::scope(|scope| {
                    scope.spawn(|| ChunkStore::open_remote(&repository).ok());
                    let backup = repository.backup(&name)?;
                    let _ = backup.read_manifest();
                    std::io::Result::Ok(backup)
                })
            })?;
            warn_half_swapped(ui, &backup);
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
    let backend =
        tokio::task::block_in_place(|| handle.block_on(s3_checked(bucket, prefix, settings)))?;
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
    let dead = crate::backup::remote::clean_dead_runs(repository.backend(), false).await?;
    report_dead_runs(ui, repository, &dead);
    Ok(())
}

/// A warning line for each killed run whose leftovers were removed from `repository`, and for
/// each killed `--force` only a run holding the exclusive lock can finish.
fn report_dead_runs(ui: &Ui, repository: &Remote, dead: &crate::backup::remote::DeadRuns) {
    let shown = repository.shown_root();
    for removed in &dead.removed {
        ui.warn(removed.line(shown));
    }
    for name in &dead.waiting {
        ui.warn_action(crate::backup::remote::DeadRuns::waiting_line(name, shown));
    }
}

/// `Sending::prepare`, what it removed reported.
async fn prepare_sending(
    target: (Remote, String),
    (command, replace): (&str, bool),
    ui: &Ui,
) -> Result<crate::backup::Sending> {
    let (sending, dead) = crate::backup::Sending::prepare(target, command, replace).await?;
    report_dead_runs(ui, &sending.repository, &dead);
    Ok(sending)
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
            BackupCommand::Dump(args) => args.output,
            BackupCommand::Copy(args) => args.output,
            BackupCommand::Prune(args) => args.output,
            BackupCommand::Migrations(args) => args.output,
            BackupCommand::Cleanup(args) => args.output,
            BackupCommand::Init(args) => args.output,
            BackupCommand::Key(command) => command.output(),
        },
        Command::Completions { .. } | Command::Manpage => OutputArgs {
            json: false,
            verbose: false,
            quiet: false,
        },
    };
    Ui::new(output)
}

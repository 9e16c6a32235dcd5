//! The command line, as clap parses it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::exit::EXIT_CODES_HELP;
use crate::prune::{Count, Policy, Span};
use crate::store::chunks::Subset;

const ENVIRONMENT_HELP: &str = "\
Environment:
  QDRANT_URL, QDRANT_API_KEY, QDRANT_CA_CERT   how to reach Qdrant
  WQM_CONFIG_PATH, WQM_CONFIG_DIR              where the config file is
  WQM_DATABASE_PATH, WQM_DATA_DIR              where the state database is
  WQM_BACKUP__<KEY>[__<SUBKEY>]                override a backup.* config key
  WQM_BACKUP_PASSWORD_FILE                     a file holding an encrypted repository's password
  WQM_BACKUP_PASSWORD                          an encrypted repository's password
  NO_COLOR                                     plain output";

#[derive(Debug, Parser)]
#[command(
    name = "wqm",
    version,
    about = "Back up and restore workspace-qdrant-mcp: its Qdrant collections, SQLite state and configuration",
    after_help = format!("{ENVIRONMENT_HELP}\n\n{EXIT_CODES_HELP}"),
    propagate_version = true
)]
pub struct Cli {
    /// Config file to read instead of the discovered one.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Qdrant REST URL (overrides QDRANT_URL and qdrant.url).
    #[arg(long, global = true, value_name = "URL")]
    pub qdrant_url: Option<String>,

    /// Read the password of an encrypted repository from FILE (its trailing line ends removed;
    /// for `init --encrypt`, the new repository's password).
    #[arg(long, global = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, inspect, validate and restore backups.
    #[command(subcommand, arg_required_else_help = true, after_help = EXIT_CODES_HELP)]
    Backup(BackupCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) of wqm.
    Manpage,
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Create a system backup: Qdrant collections, the state database and the config.
    #[command(after_help = EXIT_CODES_HELP)]
    Create(CreateArgs),
    /// Restore from a backup: plan, confirm, safety backup, collections, state database, verify.
    #[command(after_help = EXIT_CODES_HELP)]
    Restore(RestoreArgs),
    /// Display backup information.
    #[command(after_help = EXIT_CODES_HELP)]
    Info(InfoArgs),
    /// List all backups in a directory.
    #[command(after_help = EXIT_CODES_HELP)]
    List(ListArgs),
    /// Validate backup structure, and with --check-files every file's integrity.
    #[command(after_help = EXIT_CODES_HELP)]
    Validate(ValidateArgs),
    /// Write a self-contained copy of a backup (an incremental one without its chunk store).
    #[command(after_help = EXIT_CODES_HELP)]
    Export(ExportArgs),
    /// Write one stored file's plain content (decompressed, or its chunks in order) to stdout,
    /// checked against the manifest as it streams.
    #[command(after_help = EXIT_CODES_HELP)]
    Dump(DumpArgs),
    /// Copy backups between repositories (local directories, `s3://BUCKET/PREFIX`), sending
    /// only the chunks the destination lacks.
    #[command(after_help = EXIT_CODES_HELP)]
    Copy(CopyArgs),
    /// Delete old backups by retention rules; never the newest valid one, never one being written.
    #[command(after_help = format!("{PRUNE_HELP}\n\n{EXIT_CODES_HELP}"))]
    Prune(Box<PruneArgs>),
    /// List the registered version migrations.
    #[command(after_help = EXIT_CODES_HELP)]
    Migrations(MigrationsArgs),
    /// Clean up after runs that died: delete what they left on the Qdrant server, remove their
    /// working directories, report what a dead restore had done and the way back.
    #[command(after_help = EXIT_CODES_HELP)]
    Cleanup(CleanupArgs),
    /// Make a repository (a backups directory or `s3://BUCKET/PREFIX`), encrypted with --encrypt.
    #[command(after_help = format!("{PASSWORD_HELP}\n\n{EXIT_CODES_HELP}"))]
    Init(InitArgs),
    /// Manage the passwords of an encrypted repository (list, add, remove, passwd); no data is
    /// re-encrypted.
    #[command(subcommand, arg_required_else_help = true, after_help = EXIT_CODES_HELP)]
    Key(KeyCommand),
}

const PASSWORD_HELP: &str = "\
The password comes from, in this order: --password-file FILE, WQM_BACKUP_PASSWORD_FILE,
WQM_BACKUP_PASSWORD, the config key backup.encryption.password_command (run without a shell),
and a prompt when stdin is a terminal. It is never written or printed.";

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List the repository's keys: id, host, user, created, KDF parameters, the one in use.
    #[command(after_help = format!("{PASSWORD_HELP}\n\n{EXIT_CODES_HELP}"))]
    List(KeyArgs),
    /// Add a password: a new key for the same master key.
    #[command(after_help = format!("{PASSWORD_HELP}\n\n{EXIT_CODES_HELP}"))]
    Add(KeyNewArgs),
    /// Remove a key by its id: never the one this password opens, so never the last.
    #[command(after_help = format!("{PASSWORD_HELP}\n\n{EXIT_CODES_HELP}"))]
    Remove(KeyRemoveArgs),
    /// Change the password of the key in use: the new key is written before the old one goes.
    #[command(after_help = format!("{PASSWORD_HELP}\n\n{EXIT_CODES_HELP}"))]
    Passwd(KeyNewArgs),
}

impl KeyCommand {
    pub fn output(&self) -> OutputArgs {
        match self {
            KeyCommand::List(args) => args.output,
            KeyCommand::Add(args) | KeyCommand::Passwd(args) => args.key.output,
            KeyCommand::Remove(args) => args.key.output,
        }
    }

    pub fn key_args(&self) -> &KeyArgs {
        match self {
            KeyCommand::List(args) => args,
            KeyCommand::Add(args) | KeyCommand::Passwd(args) => &args.key,
            KeyCommand::Remove(args) => &args.key,
        }
    }
}

/// Flags every command takes.
#[derive(Debug, Args, Clone, Copy)]
pub struct OutputArgs {
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    /// Show detailed output.
    #[arg(short, long, conflicts_with = "quiet")]
    pub verbose: bool,
    /// Print nothing but errors and the warnings that need action.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Where to write the backup (default: `backup.default_backup_directory`/backup-YYYYMMDD-HHMMSS).
    pub path: Option<PathBuf>,
    /// Backup description.
    #[arg(short, long)]
    pub description: Option<String>,
    /// Comma-separated collection names (a partial backup).
    #[arg(short, long, value_delimiter = ',', value_name = "NAMES")]
    pub collections: Option<Vec<String>>,
    /// Replace an existing backup at PATH, once the new one is complete.
    #[arg(short, long)]
    pub force: bool,
    /// Store only what changed: chunks shared with the other backups of the directory
    /// (`backup.incremental`).
    #[arg(long)]
    pub incremental: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup directory.
    pub path: PathBuf,
    /// Show the restore plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    pub force: bool,
    /// Allow restoring a backup from a newer patch version.
    #[arg(long)]
    pub allow_downgrade: bool,
    /// Replace collections that already exist (a safety backup of them is taken first).
    #[arg(long)]
    pub overwrite: bool,
    /// Also replace the configuration file with the backup's.
    #[arg(long)]
    pub with_config: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct MigrationsArgs {
    /// Only the migrations a backup of this version needs to reach this wqm's version.
    #[arg(long, value_name = "VERSION")]
    pub from: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The backup directory.
    pub path: PathBuf,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum SortKey {
    /// By directory name, A to Z.
    Name,
    /// Newest first.
    Timestamp,
    /// Largest (bytes on disk) first.
    Size,
    /// Newest version first, compared semantically (0.10 after 0.9).
    Version,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// The directory that holds backups.
    pub directory: PathBuf,
    /// Sort order.
    #[arg(short, long, value_enum, default_value_t = SortKey::Timestamp)]
    pub sort: SortKey,
    /// Validate every backup fully (as `validate --check-files`) instead of the cheap checks.
    #[arg(long)]
    pub check: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// The keep rules `--keep-none` stands against.
const KEEP_RULES: [&str; 12] = [
    "keep_last",
    "keep_hourly",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
    "keep_within",
    "keep_within_hourly",
    "keep_within_daily",
    "keep_within_weekly",
    "keep_within_monthly",
    "keep_within_yearly",
];

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// The directory that holds backups (default: `backup.default_backup_directory`).
    pub directory: Option<PathBuf>,
    /// Keep the N newest backups (a number, or `unlimited`).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_last: Option<Count>,
    /// Keep the newest backup of each of the last N hours that have backups.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_hourly: Option<Count>,
    /// Keep the newest backup of each of the last N days that have backups.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_daily: Option<Count>,
    /// Keep the newest backup of each of the last N ISO weeks that have backups.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_weekly: Option<Count>,
    /// Keep the newest backup of each of the last N months that have backups.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_monthly: Option<Count>,
    /// Keep the newest backup of each of the last N years that have backups.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_yearly: Option<Count>,
    /// Keep backups made within DURATION before the newest backup: `1y2m3d4h`, or a number of
    /// days; 0: off (default: `backup.retention_days` days, when no keep rule is given).
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true)]
    pub keep_within: Option<Span>,
    /// Keep the newest backup of each hour within DURATION before the newest backup.
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true)]
    pub keep_within_hourly: Option<Span>,
    /// Keep the newest backup of each day within DURATION before the newest backup.
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true)]
    pub keep_within_daily: Option<Span>,
    /// Keep the newest backup of each ISO week within DURATION before the newest backup.
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true)]
    pub keep_within_weekly: Option<Span>,
    /// Keep the newest backup of each month within DURATION before the newest backup.
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true)]
    pub keep_within_monthly: Option<Span>,
    /// Keep the newest backup of each year within DURATION before the newest backup.
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true)]
    pub keep_within_yearly: Option<Span>,
    /// Keep no backup by rule: remove all but the newest valid one. Without it, rules that keep
    /// nothing are refused.
    #[arg(long, conflicts_with_all = KEEP_RULES)]
    pub keep_none: bool,
    /// Keep the N newest safety backups (default: `backup.safety_retention.keep_last`).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_safety_last: Option<Count>,
    /// Keep the safety backups made within DURATION before the newest one (default:
    /// `backup.safety_retention.keep_within_days` days).
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true)]
    pub keep_safety_within: Option<Span>,
    /// Show what would be deleted and why each kept backup stays; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Read no more than SIZE of pack files to repack them (`500M`, `2G`; 0: repack none):
    /// the packs with the most garbage go first, the rest wait for a later prune. Packs with
    /// nothing referenced are deleted whatever the size.
    #[arg(long, value_name = "SIZE", value_parser = repack_size)]
    pub max_repack_size: Option<u64>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `--max-repack-size`: a size, 0 included.
fn repack_size(text: &str) -> Result<u64, String> {
    crate::size::parse(text)
        .map_err(|why| format!("`{text}` is not a size: {why} (such as `500M` or `2G`)"))
}

const PRUNE_HELP: &str = "\
Rules combine as restic's `forget` combines them: a backup kept by any rule is kept, and a
count with room left also keeps the oldest backup. Time is measured from the newest backup not
dated in the future; backups dated in the future are kept and counted by no rule. Restore's
safety backups (`safety-YYYYMMDD-HHMMSS`) are a group of their own, kept by
`backup.safety_retention` or the --keep-safety-* rules.";

impl PruneArgs {
    /// The keep rules given for the backups (not yet the default).
    pub fn policy(&self) -> Policy {
        Policy {
            default_applied: false,
            last: self.keep_last,
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            yearly: self.keep_yearly,
            within: self.keep_within,
            within_hourly: self.keep_within_hourly,
            within_daily: self.keep_within_daily,
            within_weekly: self.keep_within_weekly,
            within_monthly: self.keep_within_monthly,
            within_yearly: self.keep_within_yearly,
        }
    }
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The backup to export.
    pub backup: PathBuf,
    /// Where to write the copy (must not exist): a directory, or `s3://BUCKET/PREFIX/NAME`.
    pub dest: PathBuf,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// The backup: a local one, or `s3://BUCKET/PREFIX/NAME`.
    pub backup: PathBuf,
    /// The stored file, as the manifest's `files[].path` names it (e.g.
    /// `collections/NAME.snapshot.zst`, `sqlite/state.db.zst`).
    pub file: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The repository to copy from: a backups directory or `s3://BUCKET/PREFIX`.
    pub source: PathBuf,
    /// The repository to copy to (made when missing): a backups directory or
    /// `s3://BUCKET/PREFIX`.
    pub dest: PathBuf,
    /// The backups to copy, by name (default: every backup of SOURCE that DEST lacks).
    #[arg(value_name = "BACKUP")]
    pub backups: Vec<String>,
    /// The password of SOURCE when it is encrypted, from this file (else
    /// `WQM_FROM_PASSWORD_FILE`, `WQM_FROM_PASSWORD`, else DEST's password).
    #[arg(long, value_name = "FILE")]
    pub from_password_file: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// The directory that holds backups, or `s3://BUCKET/PREFIX` (default:
    /// `backup.default_backup_directory`); the data directory, where restores work, is always
    /// looked at too.
    pub directory: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The backup directory.
    pub path: PathBuf,
    /// Read every file: sizes, checksums, Qdrant snapshot archives, SQLite integrity.
    #[arg(long)]
    pub check_files: bool,
    /// As --check-files, but read only part of an incremental backup's chunks: `n/t` (group n
    /// of t: run 1/t .. t/t on successive nights to read every chunk once per cycle), `N%` (a
    /// random share) or a size such as `500M` (a random share of about that much); the others
    /// are looked up, every index is checked.
    #[arg(long, value_name = "SUBSET", value_parser = clap::value_parser!(Subset))]
    pub read_data_subset: Option<Subset>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The new repository: a directory (made when missing) or `s3://BUCKET/PREFIX`.
    pub directory: PathBuf,
    /// Encrypt every backup made in it: a new master key, wrapped by the password.
    #[arg(long)]
    pub encrypt: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct KeyArgs {
    /// The encrypted repository: a directory or `s3://BUCKET/PREFIX`.
    pub directory: PathBuf,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct KeyNewArgs {
    #[command(flatten)]
    pub key: KeyArgs,
    /// Read the new password from FILE (else it is asked for twice on the terminal).
    #[arg(long, value_name = "FILE")]
    pub new_password_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct KeyRemoveArgs {
    #[command(flatten)]
    pub key: KeyArgs,
    /// The id of the key to remove (`wqm backup key list` shows them).
    pub id: String,
}

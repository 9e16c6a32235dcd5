//! The backup directory on disk: its layout, safe names, private permissions, the staged
//! writer that makes a backup appear only when complete, and finding backups in a directory.
//!
//! ```text
//! <backup>/metadata/manifest.json        written last; no manifest, no backup
//! <backup>/collections/<name>.snapshot[.zst]
//! <backup>/sqlite/state.db[.zst]          (and search.db, graph.db)
//! <backup>/config/config.yaml
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::compress::Stored;
use crate::exit::{Classify, ExitCode};
use crate::workdir::{self, WorkDirError};

pub const METADATA_DIR: &str = "metadata";
pub const MANIFEST_PATH: &str = "metadata/manifest.json";
/// Where an incremental backup keeps the list of the chunks it references.
pub const REFS_PATH: &str = "metadata/chunk-refs";
pub const COLLECTIONS_DIR: &str = "collections";
pub const SQLITE_DIR: &str = "sqlite";
/// A legacy (Python) backup's plain copy of the state database.
pub const LEGACY_STATE_DB: &str = "sqlite/state.db";
pub const CONFIG_DIR: &str = "config";
/// Subdirectories every backup has (the Python layout).
pub const REQUIRED_DIRS: [&str; 3] = [METADATA_DIR, COLLECTIONS_DIR, SQLITE_DIR];

pub const STAGING_SUFFIX: &str = ".wqm-staging";
/// A repository's own directory: its config and key objects (`repo`), never a backup.
pub const REPO_DIR: &str = ".wqm-repo";
/// A repository's config (plain JSON: whether its backups are encrypted).
pub const REPO_CONFIG: &str = ".wqm-repo/config";
/// Inside a staging directory: the backup being written.
pub const STAGED_BACKUP_DIR: &str = "backup";
/// Inside a staging directory: the backup `--force` replaced, until it is removed.
pub const REPLACED_DIR: &str = "replaced";

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("Backup directory not found: {}", path.display())]
    NotFound { path: PathBuf },
    #[error("Invalid backup directory structure: `{}` is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error("`{}` is the staging directory of an unfinished backup, not a backup", path.display())]
    Unfinished { path: PathBuf },
    #[error("`{}` cannot be a backup's name: it {reason}", path.display())]
    BadName { path: PathBuf, reason: &'static str },
    #[error("Backup directory already exists: {}", path.display())]
    AlreadyExists { path: PathBuf },
    #[error("`{}` exists and is not a wqm backup; refusing to replace it", path.display())]
    NotABackup { path: PathBuf },
    #[error("another wqm is writing `{}` (its staging directory `{}` is locked)", path.display(), lock.display())]
    Busy { path: PathBuf, lock: PathBuf },
    #[error(transparent)]
    Work(WorkDirError),
    /// An encrypted repository this run did not unlock: nothing is written there in plaintext.
    #[error("`{}` is an encrypted repository that this run did not open with its password", repository.display())]
    Locked { repository: PathBuf },
    #[error("unsafe name `{name}` in the manifest: {reason}")]
    UnsafeName { name: String, reason: &'static str },
    #[error("{action} `{}`: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl LayoutError {
    pub(crate) fn io<'p>(
        action: &'static str,
        path: &'p Path,
    ) -> impl FnOnce(io::Error) -> LayoutError + 'p {
        move |source| LayoutError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

impl Classify for LayoutError {
    fn exit_code(&self) -> ExitCode {
        match self {
            LayoutError::Work(e) => e.exit_code(),
            LayoutError::NotFound { .. }
            | LayoutError::NotADirectory { .. }
            | LayoutError::Unfinished { .. }
            | LayoutError::UnsafeName { .. } => ExitCode::InvalidBackup,
            LayoutError::Locked { .. } | LayoutError::BadName { .. } => ExitCode::Usage,
            LayoutError::AlreadyExists { .. }
            | LayoutError::NotABackup { .. }
            | LayoutError::Busy { .. }
            | LayoutError::Io { .. } => ExitCode::Failure,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            LayoutError::Work(e) => e.hint(),
            LayoutError::AlreadyExists { .. } => Some("Use --force to overwrite (the old backup is kept until the new one is complete), or choose another path".to_string()),
            LayoutError::NotABackup { .. } => Some("choose a new path, or a directory that holds a backup".to_string()),
            LayoutError::BadName { .. } => Some("name it without backslashes or control characters: a repository's names must hold on S3 too (`wqm backup copy`); nothing was written".to_string()),
            LayoutError::Locked { .. } => Some(format!("give its password ({}); nothing was written", crate::crypto::PASSWORD_WAYS)),
            LayoutError::Busy { .. } => Some("wait for the other run to finish; runs into different targets can go at the same time".to_string()),
            LayoutError::Unfinished { .. } => Some("its run is still going or died before the backup was complete; use the finished backup beside it, and `wqm backup cleanup DIR` to remove a dead run's leftovers".to_string()),
            LayoutError::NotFound { .. } => Some("check the path; `wqm backup list DIR` shows the backups in a directory".to_string()),
            LayoutError::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull => {
                Some(crate::exit::DISK_FULL_HINT.to_string())
            }
            _ => None,
        }
    }
}

// ---- names -----------------------------------------------------------------------------------

/// A collection name from a manifest or from Qdrant, before it becomes part of a path
/// (`names::check_collection_name`).
pub fn check_name(name: &str) -> Result<(), LayoutError> {
    crate::format::names::check_collection_name(name).map_err(|reason| LayoutError::UnsafeName {
        name: crate::format::names::shown(name),
        reason,
    })
}

/// A `files[].path` of a manifest: relative, `/`-separated, inside the backup layout
/// (`names::EntryPath`).
pub fn check_relative_path(path: &str) -> Result<(), LayoutError> {
    crate::format::names::EntryPath::parse(path)
        .map(drop)
        .map_err(|reason| LayoutError::UnsafeName {
            name: crate::format::names::shown(path),
            reason,
        })
}

/// `collections/<name>.snapshot[.zst]`.
pub fn snapshot_path(collection: &str, compression: Stored) -> String {
    format!(
        "{COLLECTIONS_DIR}/{collection}.snapshot{}",
        compression.extension()
    )
}

/// `collections/<name>/shard-<id>.snapshot[.zst]`.
pub fn shard_snapshot_path(collection: &str, shard: u32, compression: Stored) -> String {
    format!(
        "{COLLECTIONS_DIR}/{collection}/shard-{shard}.snapshot{}",
        compression.extension()
    )
}

/// `sqlite/<file>[.zst]`.
pub fn database_path(file_name: &str, compression: Stored) -> String {
    format!("{SQLITE_DIR}/{file_name}{}", compression.extension())
}

/// `collections/<name>.config.json` of a legacy Python backup.
pub fn legacy_collection_config_path(collection: &str) -> String {
    format!("{COLLECTIONS_DIR}/{collection}.config.json")
}

/// Hidden entries (staging directories, locks) are never backups.
pub fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

// ---- staging directories ---------------------------------------------------------------------

/// Hidden sibling names of a target: `.NAME.wqm-staging`, ...
pub fn sibling(target: &Path, suffix: &str) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}{suffix}"))
}

/// `.NAME.wqm-staging`: where the backup `target` is being written.
pub fn staging_path(target: &Path) -> PathBuf {
    sibling(target, STAGING_SUFFIX)
}

/// Whether a live run is writing the backup `target` (a `create`, or a `--force` replacing it).
pub fn being_written(target: &Path) -> bool {
    workdir::is_live(&staging_path(target))
}

/// Whether `path` is, or is inside, a staging directory: never a backup, even when the run
/// that made it died after writing its manifest.
pub fn is_staging(path: &Path) -> bool {
    path.components().any(|c| {
        let name = c.as_os_str().to_string_lossy();
        let base = name.split(".new-").next().unwrap_or(&name);
        name.starts_with('.') && base.ends_with(STAGING_SUFFIX)
    })
}

// ---- reading backups -------------------------------------------------------------------------

/// Refuses a path given as a backup that is (inside) a staging directory: the run that made it
/// is still going or died, whatever its manifest says.
pub fn refuse_unfinished(path: &Path) -> Result<(), LayoutError> {
    let resolved = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if is_staging(&resolved) {
        return Err(LayoutError::Unfinished {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Fails unless `path` is an existing directory.
pub fn ensure_backup_dir(path: &Path) -> Result<(), LayoutError> {
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(LayoutError::NotADirectory {
            path: path.to_path_buf(),
        }),
        Err(_) => Err(LayoutError::NotFound {
            path: path.to_path_buf(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_are_refused() {
        for ok in ["projects", "my-notes_2", "a.b"] {
            check_name(ok).unwrap();
        }
        for bad in ["", "a/b", "a\\b", "..", ".", "a..b", "nul\0", ".hidden"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        check_relative_path("collections/a.snapshot").unwrap();
        for bad in [
            "/etc/passwd",
            "../x",
            "collections/../../x",
            "a\\b",
            "",
            "./a",
            "a\0b",
        ] {
            assert!(check_relative_path(bad).is_err(), "{bad:?}");
        }
    }
}

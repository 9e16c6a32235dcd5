//! The SQLite databases: each copied online beside the backup's files, then stored.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::writing::Writing;
use super::Databases;
use crate::config::Settings;
use crate::exit::{Classify, ExitCode};
use crate::format::layout;
use crate::format::manifest::{DatabaseDetails, FileKind};
use crate::progress;
use crate::sqlite;

impl Writing<'_> {
    /// `state.db` and, beside it, `search.db` and `graph.db`: each copied with SQLite's online
    /// backup API into the staging directory, then stored (compressed, hashed) as `sqlite/<file>`.
    pub(super) fn back_up_databases(
        &mut self,
        wanted: &Databases,
        settings: &Settings,
    ) -> Result<()> {
        let state_db = &settings.state_db;
        if *wanted == Databases::All && !state_db.is_file() {
            self.manifest.notes.push(format!(
                "no state database at `{}`; the backup holds no SQLite state",
                state_db.display()
            ));
            return Ok(());
        }
        let dir = state_db.parent().unwrap_or(Path::new("."));
        let sources = sqlite::DATABASE_FILES.iter().map(|name| {
            let path = if *name == "state.db" {
                state_db.clone()
            } else {
                dir.join(name)
            };
            (*name, path)
        });
        let wanted = |name: &str| match wanted {
            Databases::Only(names) => names.iter().any(|n| n == name),
            _ => true,
        };
        for (name, source) in sources.filter(|(name, path)| wanted(name) && path.is_file()) {
            progress::check_interrupted()?;
            self.back_up_database(name, &source)?;
        }
        Ok(())
    }

    /// One database, `name` at `source`: an online copy beside the backup's files, stored, then
    /// removed.
    fn back_up_database(&mut self, name: &str, source: &Path) -> Result<()> {
        self.progress
            .step(&format!("copying `{}`", source.display()));
        let copy = self
            .staging
            .dir()
            .join(layout::SQLITE_DIR)
            .join(format!(".{name}.copy"));
        if let Err(e) = sqlite::backup_to(source, &copy) {
            let full = matches!(&e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull);
            return Err(self.database_failed("copy", source, &copy, e.to_string(), full));
        }
        let schema_version = sqlite::open_immutable(&copy)
            .and_then(|c| sqlite::schema_version(&c))
            .unwrap_or(None);
        let rel = layout::database_path(name, self.compression);
        let stored = fs::File::open(&copy)
            .with_context(|| format!("cannot read `{}`", copy.display()))
            .and_then(|file| self.store(&rel, FileKind::SqliteDatabase, self.compression, file));
        let entry = match stored {
            Ok(entry) => entry,
            Err(e) => {
                let full = e
                    .chain()
                    .filter_map(|c| c.downcast_ref::<io::Error>())
                    .any(|e| e.kind() == io::ErrorKind::StorageFull);
                return Err(self.database_failed(
                    "store",
                    source,
                    &copy,
                    crate::exit::said(&e),
                    full,
                ));
            }
        };
        fs::remove_file(&copy).with_context(|| format!("cannot remove `{}`", copy.display()))?;
        let detail =
            schema_version.map_or("no schema version".to_string(), |v| format!("schema {v}"));
        self.record(entry, detail, None);
        self.manifest.databases.push(DatabaseDetails {
            name: name.to_string(),
            file: rel,
            schema_version,
        });
        Ok(())
    }

    /// A database `step` (`copy`, `store`) failed: the error says which file, where, and how
    /// much room is left there once its partial copy is gone.
    fn database_failed(
        &self,
        step: &'static str,
        database: &Path,
        copy: &Path,
        reason: String,
        full: bool,
    ) -> anyhow::Error {
        let _ = fs::remove_file(copy);
        let dir = crate::fs::parent_dir(self.target).to_path_buf();
        DatabaseCopyError {
            step,
            database: database.to_path_buf(),
            target: self.target.to_path_buf(),
            free: crate::fs::available_space(&dir).ok(),
            dir,
            reason,
            full,
        }
        .into()
    }
}

/// A database could not be copied into the backup (SQLite's online copy, or storing that copy).
#[derive(Debug, thiserror::Error)]
#[error("cannot {step} the database `{}` for the backup `{}`: {reason}", database.display(), target.display())]
pub struct DatabaseCopyError {
    step: &'static str,
    database: PathBuf,
    target: PathBuf,
    /// The directory the backup is written in, and the bytes free there after the failure.
    dir: PathBuf,
    free: Option<u64>,
    reason: String,
    /// The disk was full.
    full: bool,
}

impl Classify for DatabaseCopyError {
    fn exit_code(&self) -> ExitCode {
        ExitCode::Failure
    }

    fn hint(&self) -> Option<String> {
        let dir = self.dir.display();
        let free = self.free.map_or("free space unknown".to_string(), |f| {
            format!("{f} bytes free")
        });
        Some(if self.full {
            format!("the disk of `{dir}` is full ({free} there now): free space there or write the backup to another disk, then run the command again; nothing partial was left behind")
        } else {
            format!(
                "check that `{}` can be read and `{dir}` written ({free} there), then run the command again; nothing partial was left behind",
                self.database.display()
            )
        })
    }
}

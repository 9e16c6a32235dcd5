//! The backup's databases unpacked for a restore: decompressed and checked against the manifest,
//! stripped of the rows a restore never brings back, integrity-checked.

use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::check::damaged;
use super::{DatabaseAction, Plan};
use crate::format::layout::LEGACY_STATE_DB;
use crate::format::manifest::{FileEntry, Manifest};
use crate::format::names::Database;
use crate::fs::CopyError;
use crate::progress::{self, Progress};
use crate::sqlite;
use crate::store::{BackupDir, Damaged};

/// Unpacks each database the restore needs into `dir`, the restore's working directory. An
/// *unpacked* database is the backup's copy decompressed there (checked against the manifest),
/// stripped of the rows a restore never brings back and integrity-checked: what replaces, or
/// merges into, the live one. (Migrations changed the manifest when the restore was planned; the
/// daemon migrates a database's schema forward when it starts.)
pub(super) fn unpack_databases(
    plan: &Plan,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<BTreeMap<String, PathBuf>> {
    let mut unpacked = BTreeMap::new();
    let wanted: Vec<&str> = plan
        .databases
        .iter()
        .filter(|d| d.action != DatabaseAction::Keep)
        .map(|d| d.name.as_str())
        .collect();
    for (database, entry) in database_sources(&plan.source.manifest) {
        let name = database.file_name();
        if !wanted.contains(&name) {
            continue;
        }
        progress::check_interrupted()?;
        progress.step(&format!("unpacking `{name}`"));
        // The copy's name is the known database's, never one from the manifest.
        let copy = dir.join(name);
        unpack_database(&plan.source, entry, &copy)?;
        unpacked.insert(name.to_string(), copy);
    }
    for path in unpacked.values() {
        let conn = rusqlite::Connection::open(path)?;
        sqlite::remove_unrestorable_rows(&conn)?;
        let problems = sqlite::integrity_problems(&conn)?;
        if !problems.is_empty() {
            return Err(damaged(
                &path.display().to_string(),
                format!(
                    "its unpacked copy fails PRAGMA integrity_check: {}",
                    problems.join("; ")
                ),
            ));
        }
    }
    Ok(unpacked)
}

/// Decompresses one stored database into `copy`, checking its content against the manifest
/// as it goes (`BackupDir::open_checked`: what `validate --check-files` checks, in the same pass).
fn unpack_database(source: &BackupDir, entry: Option<&FileEntry>, copy: &Path) -> Result<()> {
    let rel = entry.map_or(LEGACY_STATE_DB, |e| e.path.as_str());
    let mut content: Box<dyn Read> = match entry {
        Some(entry) => Box::new(source.open_checked(entry)?),
        // A legacy backup's plain copy: its manifest describes no content to check.
        None => Box::new(BufReader::new(
            source
                .open_file(LEGACY_STATE_DB)
                .map_err(|e| damaged(rel, format!("cannot read: {e}")))?,
        )),
    };
    let mut out = crate::fs::create_private_file(copy)
        .with_context(|| format!("cannot write `{}`", copy.display()))?;
    crate::fs::copy_apart(&mut content, &mut out).map_err(|e| match e {
        CopyError::Read(e) => Damaged::from_read(rel, e).into(),
        CopyError::Write(e) => {
            anyhow::Error::from(e).context(format!("cannot write `{}`", copy.display()))
        }
    })?;
    out.sync_all()
        .with_context(|| format!("cannot write `{}`", copy.display()))?;
    Ok(())
}

/// Each database the backup holds and its stored file (`None`: a legacy backup's plain
/// `sqlite/state.db`, unpacked when the restore wants it and it is there).
fn database_sources(manifest: &Manifest) -> Vec<(Database, Option<&FileEntry>)> {
    if manifest.is_legacy() {
        return vec![(Database::State, None)];
    }
    manifest
        .databases
        .iter()
        .filter_map(|d| {
            Some((
                Database::parse(&d.name).ok()?,
                Some(manifest.file(&d.file)?),
            ))
        })
        .collect()
}

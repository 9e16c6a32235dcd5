//! The backup's structure and its manifest: the directories, the manifest read and checked, the
//! version, what it lists against what is there, a legacy backup.

use std::collections::BTreeSet;
use std::io;
use std::path::Path;

use super::files::{database_problems, decompressed_copy, read_small};
use super::{Check, Depth, Options, Report, Severity};
use crate::exit::Interrupted;
use crate::format::compat;
use crate::format::layout::{self, MANIFEST_PATH, REQUIRED_DIRS};
use crate::format::manifest::{Collections, FileKind, Manifest};
use crate::progress;
use crate::store::{self, BackupDir, Kind};

/// The directories every backup has.
pub(super) fn check_structure(report: &mut Report, path: &Path) {
    let missing: Vec<&str> = REQUIRED_DIRS
        .into_iter()
        .filter(|d| !store::stat_in(path, d).is_ok_and(|s| s.kind == Kind::Dir))
        .collect();
    if missing.is_empty() {
        report.add(
            Severity::Ok,
            Check::Structure,
            None,
            "Directory structure (metadata/, collections/, sqlite/)",
        );
    } else {
        let list = missing
            .iter()
            .map(|d| format!("`{d}/`"))
            .collect::<Vec<_>>()
            .join(", ");
        report.add(
            Severity::Error,
            Check::Structure,
            None,
            format!("Invalid backup directory structure: missing {list}"),
        );
    }
}

/// Reads the manifest and checks its version and age; `None` when it cannot be read.
pub(super) fn check_manifest(
    report: &mut Report,
    place: &store::Place,
    options: &Options,
) -> Option<Manifest> {
    let manifest = match BackupDir::read_manifest_at(place) {
        Ok(m) => m,
        Err(e) => {
            report.add(
                Severity::Error,
                Check::Manifest,
                Some(MANIFEST_PATH),
                e.to_string(),
            );
            return None;
        }
    };
    let format = match manifest.format_version {
        Some(v) => format!("format {v}"),
        None => "legacy Python format".to_string(),
    };
    report.add(
        Severity::Ok,
        Check::Manifest,
        Some(MANIFEST_PATH),
        format!("Manifest is valid ({format})"),
    );
    check_version(report, &manifest, &options.current_version, &options.policy);
    if let Some(warning) = staleness(&manifest, options.warn_after_days, options.now) {
        report.add(Severity::Warning, Check::Manifest, None, warning);
    }
    Some(manifest)
}

/// A warning when the backup is older than `threshold_days` (0 turns the warning off).
pub fn staleness(manifest: &Manifest, threshold_days: u32, now: f64) -> Option<String> {
    let age_days = (now - manifest.timestamp) / 86_400.0;
    (threshold_days > 0 && age_days > f64::from(threshold_days)).then(|| {
        format!(
            "Backup is {} days old, older than `backup.validation.version_warning_threshold` ({threshold_days} days)",
            age_days.floor()
        )
    })
}

/// The compatibility finding says what restore would do: an error only when restore refuses
/// whatever the flags, a warning when it needs a flag or setting (or proceeds despite a
/// mismatch).
fn check_version(report: &mut Report, manifest: &Manifest, current: &str, policy: &compat::Policy) {
    match crate::format::migrations::verdict(&manifest.version, current, policy) {
        Err(e) => report.add(Severity::Error, Check::Version, None, e.to_string()),
        Ok(compat) => {
            report.add(
                Severity::Ok,
                Check::Version,
                None,
                format!("Version format is valid ({})", manifest.version),
            );
            let severity = match (compat.verdict, compat.restorable) {
                (compat::Verdict::Compatible, _) => Severity::Ok,
                (compat::Verdict::UpgradeAvailable | compat::Verdict::MigrationAvailable, _) => {
                    Severity::Info
                }
                (compat::Verdict::Incompatible, false) => Severity::Error,
                _ => Severity::Warning,
            };
            let message = if severity == Severity::Error {
                format!(
                    "Incompatible backup version: {}\nCurrent system version: {current}\nMajor or minor version mismatch detected",
                    manifest.version
                )
            } else {
                format!("Compatibility {}: {}", compat.verdict, compat.message)
            };
            report.add(severity, Check::Compatibility, None, message);
            report.compatibility = Some(compat);
        }
    }
}

/// Format 1: the manifest's own consistency, every listed file present with its size, and no
/// file the manifest does not list. (Every name in it was checked when it was parsed.)
pub(super) fn check_contents(report: &mut Report, backup: &BackupDir) {
    let manifest = &backup.manifest;
    let errors_before = report.count(Severity::Error);
    let mut listed = check_listed_files(report, backup);
    for name in manifest.collection_names() {
        check_collection_entry(report, manifest, name);
    }
    check_databases_listed(report, manifest);
    check_totals(report, manifest);

    listed.insert(MANIFEST_PATH);
    // An incremental backup's reference list (checked against the indexes by `check_refs`).
    if manifest.chunk_refs.is_some() {
        listed.insert(store::chunks::REFS_PATH);
    }
    for unexpected in files_not_in(backup, &listed) {
        report.add(
            Severity::Error,
            Check::Contents,
            Some(&unexpected),
            "unexpected file: not listed in the manifest",
        );
    }
    if report.count(Severity::Error) == errors_before {
        report.add(
            Severity::Ok,
            Check::Contents,
            None,
            format!(
                "All {} files listed in the manifest are present with their sizes",
                manifest.files.len()
            ),
        );
    }
}

/// Each file the manifest lists, once, as a regular file of the listed size; returns the
/// listed paths.
fn check_listed_files<'a>(report: &mut Report, backup: &'a BackupDir) -> BTreeSet<&'a str> {
    let mut listed = BTreeSet::new();
    for entry in &backup.manifest.files {
        if !listed.insert(entry.path.as_str()) {
            report.add(
                Severity::Error,
                Check::Manifest,
                Some(&entry.path),
                "listed twice in the manifest",
            );
            continue;
        }
        match backup.stat(&entry.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => report.add(Severity::Error, Check::Contents, Some(&entry.path), "missing: listed in the manifest but not in the backup"),
            Err(e) => report.add(Severity::Error, Check::Contents, Some(&entry.path), format!("cannot be read: {e}")),
            Ok(stat) if stat.kind == Kind::Symlink => report.add(Severity::Error, Check::Contents, Some(&entry.path), "a symbolic link: wqm never follows links in a backup"),
            Ok(stat) if stat.kind != Kind::File => report.add(Severity::Error, Check::Contents, Some(&entry.path), "not a regular file"),
            Ok(stat) if stat.len != backup.stored_len(entry.size) => report.add(
                Severity::Error,
                Check::Size,
                Some(&entry.path),
                format!("size mismatch: the manifest says {} bytes, the file has {} (truncated or replaced)", backup.stored_len(entry.size), stat.len),
            ),
            Ok(_) => {}
        }
    }
    listed
}

/// One collection: a safe name, its `collection_details`, its snapshots among the files (of
/// the kind its shards call for) and the same point count in both places.
fn check_collection_entry(report: &mut Report, manifest: &Manifest, name: &str) {
    if let Err(e) = layout::check_name(name) {
        report.add(Severity::Error, Check::Manifest, None, e.to_string());
        return;
    }
    let Some(details) = manifest.collection_details.get(name) else {
        report.add(
            Severity::Error,
            Check::Manifest,
            None,
            format!("collection `{name}` has no entry in `collection_details`"),
        );
        return;
    };
    let wanted = if details.shards.is_empty() {
        FileKind::CollectionSnapshot
    } else {
        FileKind::ShardSnapshot
    };
    for snapshot in details.snapshot_files() {
        if manifest.file(snapshot).is_none_or(|f| f.kind != wanted) {
            report.add(
                Severity::Error,
                Check::Manifest,
                None,
                format!("the snapshot of collection `{name}` (`{snapshot}`) is not among the manifest's files"),
            );
        }
    }
    let counted = manifest.collections.as_ref().and_then(|c| c.count_of(name));
    if counted.is_some_and(|n| n != details.points_count) {
        report.add(
            Severity::Error,
            Check::Manifest,
            None,
            format!(
                "collection `{name}`: `collections` says {} points, `collection_details` {}",
                counted.unwrap_or_default(),
                details.points_count
            ),
        );
    }
}

/// Every database the manifest names is among its files, as a SQLite database.
fn check_databases_listed(report: &mut Report, manifest: &Manifest) {
    for database in &manifest.databases {
        if manifest
            .file(&database.file)
            .is_none_or(|f| f.kind != FileKind::SqliteDatabase)
        {
            report.add(
                Severity::Error,
                Check::Manifest,
                None,
                format!(
                    "database `{}` (`{}`) is not among the manifest's files",
                    database.name, database.file
                ),
            );
        }
    }
}

/// Warnings only: a total that disagrees with the per-collection counts, and a partial backup
/// that does not say what it selected.
fn check_totals(report: &mut Report, manifest: &Manifest) {
    if let (Some(total), Some(Collections::Counts(counts))) =
        (manifest.total_documents, &manifest.collections)
    {
        let sum: u64 = counts.values().sum();
        if sum != total {
            report.add(
                Severity::Warning,
                Check::Manifest,
                None,
                format!("`total_documents` is {total} but the collections add up to {sum}"),
            );
        }
    }
    if manifest.partial_backup && manifest.selected_collections.is_none() {
        report.add(
            Severity::Warning,
            Check::Manifest,
            None,
            "a partial backup without `selected_collections`",
        );
    }
}

/// Every file (or symlink) in the backup whose relative path is not in `expected`.
fn files_not_in(backup: &BackupDir, expected: &BTreeSet<&str>) -> Vec<String> {
    backup
        .list()
        .into_iter()
        .filter(|rel| !expected.contains(rel.as_str()))
        .collect()
}

/// Legacy Python backups: `collections/<name>.config.json` per collection and, when present,
/// `sqlite/state.db`. Nothing carries a checksum.
pub(super) fn check_legacy(
    report: &mut Report,
    backup: &BackupDir,
    options: &Options,
) -> Result<(), Interrupted> {
    let manifest = &backup.manifest;
    let is_file = |rel: &str| backup.stat(rel).is_ok_and(|s| s.kind == Kind::File);
    let mut expected: BTreeSet<String> = BTreeSet::from([MANIFEST_PATH.to_string()]);
    for name in manifest.collection_names() {
        if let Err(e) = layout::check_name(name) {
            report.add(Severity::Error, Check::Manifest, None, e.to_string());
            continue;
        }
        let rel = layout::legacy_collection_config_path(name);
        if !is_file(&rel) {
            report.add(
                Severity::Warning,
                Check::Contents,
                Some(&rel),
                "missing collection metadata (legacy backups never held vectors)",
            );
        } else if options.depth != Depth::Structure {
            if let Err(e) = read_small(backup, &rel)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    serde_json::from_slice::<serde_json::Value>(&b).map_err(|e| e.to_string())
                })
            {
                report.add(
                    Severity::Error,
                    Check::Contents,
                    Some(&rel),
                    format!("not valid JSON: {e}"),
                );
            }
        }
        expected.insert(rel);
    }
    let state_db = format!("{}/state.db", layout::SQLITE_DIR);
    if is_file(&state_db) {
        if options.depth != Depth::Structure {
            progress::check_interrupted()?;
            let checked = backup
                .open_file(&state_db)
                .and_then(|mut file| decompressed_copy(&mut file))
                .map_err(|e| format!("cannot read: {e}"))
                .and_then(|copy| database_problems(copy.path()));
            match checked {
                Ok(()) => report.add(
                    Severity::Ok,
                    Check::Database,
                    Some(&state_db),
                    "a sound SQLite database",
                ),
                Err(m) => report.add(Severity::Error, Check::Database, Some(&state_db), m),
            }
        }
        expected.insert(state_db);
    } else {
        report.add(
            Severity::Info,
            Check::Contents,
            Some(&state_db),
            "no state database in this backup",
        );
    }
    let expected: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
    for unexpected in files_not_in(backup, &expected) {
        report.add(
            Severity::Warning,
            Check::Contents,
            Some(&unexpected),
            "unexpected file: not part of a legacy backup",
        );
    }
    Ok(())
}

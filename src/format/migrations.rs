//! Migrations: Rust code that brings a backup made by an older version to what this version
//! restores. Restore finds a path (several hops allowed) from the backup's MAJOR.MINOR to the
//! current one and applies it once, when the restore is planned, to a working copy of the
//! manifest, never to the backup itself. `wqm backup migrations` lists them.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::format::compat::{self, Version};
use crate::format::manifest::{DatabaseDetails, Manifest, FULL_FORMAT};
use crate::sqlite;

/// A MAJOR.MINOR line of the product.
pub type Line = (i64, i64);

/// What a migration works on: a working copy of the backup's manifest, never the backup itself
/// (which it may read). A migration changes the manifest alone, once, when the restore is planned:
/// the databases' schemas are the daemon's to migrate forward when it starts.
pub struct WorkingCopy {
    pub manifest: Manifest,
    /// A legacy backup's plain `sqlite/state.db` when it holds one (a file, not a link; the
    /// caller looks, through the storage seam), read-only.
    pub legacy_state_db: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct Migration {
    pub id: &'static str,
    #[serde(serialize_with = "line")]
    pub from: Line,
    #[serde(serialize_with = "line")]
    pub to: Line,
    pub description: &'static str,
    /// It converts legacy (Python, format-less) manifests; every legacy backup goes through it.
    pub converts_legacy: bool,
    #[serde(skip)]
    pub warnings: fn(&Manifest) -> Vec<String>,
    #[serde(skip)]
    pub apply: fn(&mut WorkingCopy) -> Result<()>,
}

fn line<S: serde::Serializer>(line: &Line, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format!("{}.{}", line.0, line.1))
}

impl Migration {
    pub fn label(&self) -> String {
        format!(
            "{}.{} → {}.{} {}",
            self.from.0, self.from.1, self.to.0, self.to.1, self.id
        )
    }
}

/// Every migration this version ships.
pub static REGISTRY: &[Migration] = &[Migration {
    id: "python-era-backup",
    from: (0, 2),
    to: (0, 3),
    description: "Convert a backup of the earlier Python wqm (no format_version) to format 1: its state database is restored; its collections held no vectors and cannot be",
    converts_legacy: true,
    warnings: python_era_warnings,
    apply: python_era,
}];

fn python_era_warnings(manifest: &Manifest) -> Vec<String> {
    let mut warnings = vec![
        "a legacy Python backup holds only the state database; it is all that is restored"
            .to_string(),
    ];
    let names = manifest.collection_names();
    if !names.is_empty() {
        warnings.push(format!(
            "collections {} have no vector data in this backup and are not restored",
            names.join(", ")
        ));
    }
    warnings
}

fn python_era(staged: &mut WorkingCopy) -> Result<()> {
    let manifest = &mut staged.manifest;
    if !manifest.is_legacy() {
        return Ok(());
    }
    let version = Version::parse(&manifest.version)?;
    if (version.major, version.minor) < (0, 3) {
        manifest.version = "0.3.0".to_string();
    }
    manifest.format_version = Some(FULL_FORMAT);
    manifest.notes.push(format!(
        "converted from a legacy Python backup; its collections ({}) held no vectors",
        manifest.collection_names().join(", ")
    ));
    manifest.collections = None;
    manifest.total_documents = None;
    manifest.selected_collections = None;
    manifest.databases.clear();
    if let Some(db) = &staged.legacy_state_db {
        let conn = sqlite::open_immutable(db).context("cannot open the legacy state database")?;
        let Some(schema_version) = sqlite::schema_version(&conn)? else {
            bail!("the legacy backup's state.db has no `schema_version` table: it is not a workspace-qdrant state database this wqm can restore")
        };
        manifest.databases.push(DatabaseDetails {
            name: "state.db".to_string(),
            file: crate::format::layout::LEGACY_STATE_DB.to_string(),
            schema_version: Some(schema_version),
        });
    }
    Ok(())
}

/// What a restore of a backup of `version` does on `current` under `policy`: `compat::decide`
/// with the registered migration paths. The one decision restore acts on and `info`, `list`
/// and `validate` report.
pub fn decide(version: &str, current: &str, policy: &compat::Policy) -> compat::Decision {
    compat::decide(version, current, policy, |b, c| {
        path((b.major, b.minor), (c.major, c.minor)).is_some()
    })
}

/// [`decide`]'s verdict as a report.
pub fn verdict(
    version: &str,
    current: &str,
    policy: &compat::Policy,
) -> Result<compat::Report, compat::CompatError> {
    compat::report(version, current, &decide(version, current, policy))
}

/// The shortest chain of registered migrations from `from` to `to` (empty when equal).
pub fn path(from: Line, to: Line) -> Option<Vec<&'static Migration>> {
    if from == to {
        return Some(Vec::new());
    }
    let mut previous: BTreeMap<Line, &'static Migration> = BTreeMap::new();
    let mut queue = VecDeque::from([from]);
    while let Some(at) = queue.pop_front() {
        for migration in REGISTRY.iter().filter(|m| m.from == at) {
            if migration.to == from || previous.contains_key(&migration.to) {
                continue;
            }
            previous.insert(migration.to, migration);
            if migration.to == to {
                let mut chain = vec![migration];
                let mut step = migration.from;
                while step != from {
                    let before = previous[&step];
                    chain.push(before);
                    step = before.from;
                }
                chain.reverse();
                return Some(chain);
            }
            queue.push_back(migration.to);
        }
    }
    None
}

/// The migrations a restore of this backup needs: the version path from its line to the
/// current one and, for a legacy backup, the conversion of its manifest.
pub fn for_backup(manifest: &Manifest, current: &str) -> Result<Vec<&'static Migration>> {
    let from = Version::parse(&manifest.version)?;
    let to = Version::parse(current)?;
    let mut chain = path((from.major, from.minor), (to.major, to.minor)).unwrap_or_default();
    if manifest.is_legacy() && !chain.iter().any(|m| m.converts_legacy) {
        match REGISTRY.iter().find(|m| m.converts_legacy) {
            Some(converter) => chain.insert(0, converter),
            None => bail!("no registered migration converts legacy backups"),
        }
    }
    Ok(chain)
}

/// Applies `chain` in order to `staged`.
pub fn apply(chain: &[&Migration], staged: &mut WorkingCopy) -> Result<()> {
    for migration in chain {
        (migration.apply)(staged)
            .with_context(|| format!("migration {} failed", migration.label()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_paths_between_lines() {
        assert_eq!(path((0, 3), (0, 3)).unwrap().len(), 0);
        let hop: Vec<_> = path((0, 2), (0, 3)).unwrap().iter().map(|m| m.id).collect();
        assert_eq!(hop, ["python-era-backup"]);
        assert!(path((0, 1), (0, 3)).is_none());
        assert!(path((0, 3), (0, 2)).is_none(), "no way back");
    }

    #[test]
    fn a_legacy_backup_always_gets_converted() {
        let legacy = Manifest::from_json(
            r#"{"version": "0.3.0", "timestamp": 1, "collections": {"a": 1}}"#,
            std::path::Path::new("m"),
        )
        .unwrap();
        let chain = for_backup(&legacy, "0.3.0").unwrap();
        assert_eq!(
            chain.iter().map(|m| m.id).collect::<Vec<_>>(),
            ["python-era-backup"]
        );
        let old = Manifest::from_json(
            r#"{"version": "0.2.1", "timestamp": 1}"#,
            std::path::Path::new("m"),
        )
        .unwrap();
        assert_eq!(for_backup(&old, "0.3.0").unwrap().len(), 1);
        let current = Manifest::new("0.3.0", 1.0);
        assert!(for_backup(&current, "0.3.0").unwrap().is_empty());
    }

    #[test]
    fn the_python_migration_converts_the_manifest_and_checks_the_database() {
        // A legacy backup directory whose plain `sqlite/state.db` runs `sql`.
        fn legacy_backup(sql: &str) -> tempfile::TempDir {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("sqlite")).unwrap();
            rusqlite::Connection::open(dir.path().join("sqlite/state.db"))
                .unwrap()
                .execute_batch(sql)
                .unwrap();
            dir
        }
        let legacy = || {
            Manifest::from_json(r#"{"version": "0.2.1", "timestamp": 1, "collections": {"a": 1}, "total_documents": 1}"#, std::path::Path::new("m")).unwrap()
        };
        assert_eq!(python_era_warnings(&legacy()).len(), 2);
        let backup = legacy_backup("CREATE TABLE schema_version(version INTEGER, applied_at TEXT); INSERT INTO schema_version VALUES (49, 'x');");
        let mut staged = WorkingCopy {
            manifest: legacy(),
            legacy_state_db: Some(backup.path().join("sqlite/state.db")),
        };
        apply(&for_backup(&staged.manifest, "0.3.0").unwrap(), &mut staged).unwrap();
        let m = &staged.manifest;
        assert_eq!((m.format_version, m.version.as_str()), (Some(1), "0.3.0"));
        assert!(m.collection_names().is_empty());
        assert_eq!(m.databases[0].file, "sqlite/state.db");
        assert_eq!(m.databases[0].schema_version, Some(49));

        let other = legacy_backup("CREATE TABLE t(x)");
        let mut staged = WorkingCopy {
            manifest: legacy(),
            legacy_state_db: Some(other.path().join("sqlite/state.db")),
        };
        let err = apply(&for_backup(&staged.manifest, "0.3.0").unwrap(), &mut staged).unwrap_err();
        assert!(
            format!("{err:#}").contains("has no `schema_version` table"),
            "{err:#}"
        );
    }
}

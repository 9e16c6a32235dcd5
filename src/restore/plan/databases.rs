//! The plan's databases: replace, merge or keep each, and what the schema versions say.

use std::path::Path;

use crate::config::Settings;
use crate::exit::{ExitCode, Failure};
use crate::format::names::{self, Database};
use crate::restore::{DatabaseAction, DatabasePlan, Plan};
use crate::sqlite;

fn live_schema(path: &Path) -> Option<i64> {
    let conn = sqlite::open_read_only(path).ok()?;
    sqlite::schema_version(&conn).ok().flatten()
}

pub(super) fn plan_databases(plan: &mut Plan, settings: &Settings) {
    let check = settings.backup.validation.check_schema_compatibility;
    for database in plan.manifest.databases.clone() {
        // The live file comes from the settings; the manifest's name only picks which one.
        let live = match Database::parse(&database.name) {
            Ok(known) => known.live_path(&settings.state_db),
            Err(reason) => {
                plan.block(
                    ExitCode::InvalidBackup,
                    format!(
                        "the backup's database `{}` {reason}",
                        names::shown(&database.name)
                    ),
                    None,
                );
                continue;
            }
        };
        let live_exists = live.is_file();
        let live_schema = live_exists.then(|| live_schema(&live)).flatten();
        let schemas = (database.schema_version, live_schema);
        let (action, findings) =
            decide_database(plan.partial, &database.name, live_exists, check, schemas);
        for finding in findings {
            match finding {
                Finding::Warning(warning) => plan.warnings.push(warning),
                Finding::Blocker(failure) => plan.blockers.push(failure),
            }
        }
        if action == DatabaseAction::Merge && sqlite::has_unrestorable_rows(&live).unwrap_or(false)
        {
            plan.warnings.push(format!(
                "the live state database has a `{}` row: at its next start the daemon deletes and recreates the projects, libraries and images collections",
                sqlite::merge::NEVER_RESTORED
            ));
        }
        plan.databases.push(DatabasePlan {
            name: database.name.clone(),
            action,
            live,
            live_exists,
            backup_schema: database.schema_version,
            live_schema,
            unpacked_bytes: plan
                .manifest
                .file(&database.file)
                .map_or(0, |f| f.content_size),
        });
    }
}

/// Something the plan of one database says beside its action.
#[derive(Debug)]
enum Finding {
    Warning(String),
    Blocker(Failure),
}

/// `plan_databases`' decision table, from its inputs alone: what the restore does with the
/// backup's database `name` (the backup partial or not, a live file or not), and what the schema
/// versions `(backup, live)` say about it when `check_schema` (`check_schema_compatibility`).
fn decide_database(
    partial: bool,
    name: &str,
    live_exists: bool,
    check_schema: bool,
    (backup, live): (Option<i64>, Option<i64>),
) -> (DatabaseAction, Vec<Finding>) {
    let mut findings = Vec::new();
    let action = match (partial, name, live_exists) {
        (true, "state.db", true) => DatabaseAction::Merge,
        (true, "state.db", false) => DatabaseAction::Replace,
        (true, _, _) => {
            findings.push(Finding::Warning(format!(
                "`{name}` is left as it is in a partial restore; the daemon reconciles it"
            )));
            DatabaseAction::Keep
        }
        (false, _, _) => DatabaseAction::Replace,
    };
    let (Some(backup), Some(current)) = (backup, live) else {
        return (action, findings);
    };
    if !check_schema || name != "state.db" {
        return (action, findings);
    }
    let incompatible = |message: String, hint: &str| {
        Finding::Blocker(Failure::new(ExitCode::Incompatible, message).with_hint(hint))
    };
    if action == DatabaseAction::Merge && backup != current {
        findings.push(incompatible(
            format!("A partial restore merges rows and needs the same state database schema: the backup has v{backup}, the live database v{current}"),
            "restore the full backup, or set `backup.validation.check_schema_compatibility: false` (unsafe)",
        ));
    } else if backup > current {
        findings.push(incompatible(
            format!("The backup's state database schema v{backup} is newer than the live one (v{current})"),
            "upgrade workspace-qdrant first, or set `backup.validation.check_schema_compatibility: false` (unsafe)",
        ));
    } else if backup < current {
        findings.push(Finding::Warning(format!("the backup's state database has schema v{backup}, older than the live v{current}; the daemon migrates it forward at its next start")));
    }
    (action, findings)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The action and the findings, warnings as `W: …`, blockers as `B<code>: …`.
    fn decided(
        partial: bool,
        name: &str,
        live_exists: bool,
        check: bool,
        schemas: (Option<i64>, Option<i64>),
    ) -> (DatabaseAction, Vec<String>) {
        let (action, findings) = decide_database(partial, name, live_exists, check, schemas);
        let findings = findings
            .into_iter()
            .map(|f| match f {
                Finding::Warning(w) => format!("W: {w}"),
                Finding::Blocker(b) => format!("B{}: {}", b.code.code(), b.message),
            })
            .collect();
        (action, findings)
    }

    #[test]
    fn a_full_backup_replaces_every_database_and_a_partial_one_merges_the_state_database() {
        use DatabaseAction::{Keep, Merge, Replace};
        let same = (Some(5), Some(5));
        for (partial, name, live_exists, action) in [
            (false, "state.db", true, Replace),
            (false, "state.db", false, Replace),
            (false, "search.db", true, Replace),
            (true, "state.db", true, Merge),
            (true, "state.db", false, Replace),
        ] {
            let expected = (action, Vec::<String>::new());
            assert_eq!(
                decided(partial, name, live_exists, true, same),
                expected,
                "{partial} {name} {live_exists}"
            );
        }
        let (action, findings) = decided(true, "graph.db", true, true, same);
        assert_eq!(action, Keep);
        assert_eq!(
            findings,
            ["W: `graph.db` is left as it is in a partial restore; the daemon reconciles it"]
        );
    }

    #[test]
    fn the_state_database_schema_decides_what_may_be_restored() {
        let blocker = |f: &[String]| f.len() == 1 && f[0].starts_with("B4: ");
        let warning = |f: &[String]| f.len() == 1 && f[0].starts_with("W: ");
        // A merge needs the same schema, older or newer.
        assert!(blocker(
            &decided(true, "state.db", true, true, (Some(4), Some(5))).1
        ));
        assert!(blocker(
            &decided(true, "state.db", true, true, (Some(6), Some(5))).1
        ));
        // A replacement may go back (the daemon migrates forward), never forward.
        assert!(blocker(
            &decided(false, "state.db", true, true, (Some(6), Some(5))).1
        ));
        assert!(warning(
            &decided(false, "state.db", true, true, (Some(4), Some(5))).1
        ));
        // Not checked: turned off, a version unknown, or another database.
        assert!(decided(true, "state.db", true, false, (Some(4), Some(5)))
            .1
            .is_empty());
        assert!(decided(false, "state.db", true, true, (None, Some(5)))
            .1
            .is_empty());
        assert!(decided(false, "state.db", true, true, (Some(6), None))
            .1
            .is_empty());
        assert!(decided(false, "search.db", true, true, (Some(6), Some(5)))
            .1
            .is_empty());
    }
}

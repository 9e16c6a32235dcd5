//! SQLite databases of workspace-qdrant: consistent copies, checks that never touch a backup,
//! and putting a database in place of the live one.

pub mod merge;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags, OptionalExtension};

/// The databases of the data directory that a backup holds, in the order they are backed up.
pub const DATABASE_FILES: [&str; 3] = ["state.db", "search.db", "graph.db"];

/// Tables whose `MAX(version)` is the schema version of each store.
const VERSION_TABLES: [&str; 3] = [
    "schema_version",
    "search_schema_version",
    "graph_schema_version",
];

/// Opens a database file read-only as immutable: SQLite creates no `-wal`/`-shm` beside it and
/// takes no locks, so checking a backup never modifies it.
pub fn open_immutable(path: &Path) -> rusqlite::Result<Connection> {
    let mut uri = String::from("file:");
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3f"),
            '#' => uri.push_str("%23"),
            c => uri.push(c),
        }
    }
    uri.push_str("?immutable=1");
    Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
}

/// Copies a live database with SQLite's online backup API, all pages in one step: one read
/// transaction, so the copy is consistent while the daemon keeps writing (WAL mode lets it).
/// The copy is switched to a rollback journal so it is one self-contained file.
pub fn backup_to(source: &Path, destination: &Path) -> rusqlite::Result<()> {
    let source = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    source.busy_timeout(std::time::Duration::from_secs(30))?;
    let mut copy = Connection::open(destination)?;
    {
        let backup = Backup::new(&source, &mut copy)?;
        // -1: every page in one step, so in one read transaction. A busy source (a checkpoint
        // in progress, say) is retried for up to 30 s.
        let mut waits = 0;
        while backup.step(-1)? != StepResult::Done {
            waits += 1;
            if waits > 600 {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                    Some("the source database stayed busy for 30 s".to_string()),
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    copy.query_row("PRAGMA journal_mode=DELETE", [], |_| Ok(()))?;
    Ok(())
}

/// `PRAGMA integrity_check`: the problems it reports (empty when the database is sound).
pub fn integrity_problems(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut statement = conn.prepare("PRAGMA integrity_check")?;
    let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
    let mut problems = Vec::new();
    for row in rows {
        let row = row?;
        if row != "ok" {
            problems.push(row);
        }
    }
    Ok(problems)
}

/// `PRAGMA foreign_key_check`: one line per violation (empty when there is none).
pub fn foreign_key_problems(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut statement = conn.prepare("PRAGMA foreign_key_check")?;
    let rows = statement.query_map([], |row| {
        Ok(format!(
            "row {} of `{}` points at a missing row of `{}`",
            row.get::<_, Option<i64>>(1)?
                .map_or("?".to_string(), |r| r.to_string()),
            row.get::<_, String>(0)?,
            row.get::<_, String>(2)?
        ))
    })?;
    rows.collect()
}

/// Deletes what a restore must never bring back (see `merge::NEVER_RESTORED`).
pub fn remove_unrestorable_rows(conn: &Connection) -> rusqlite::Result<usize> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
        [merge::NEVER_RESTORED],
        |row| row.get(0),
    )?;
    if !exists {
        return Ok(0);
    }
    conn.execute(&format!("DELETE FROM \"{}\"", merge::NEVER_RESTORED), [])
}

/// Opens a live database for reading (it may be in WAL mode, with a daemon writing).
pub fn open_read_only(path: &Path) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
}

/// Whether the live database has a row in `merge::NEVER_RESTORED` (the daemon would then wipe
/// `projects`, `libraries` and `images` at its next start).
pub fn has_unrestorable_rows(path: &Path) -> rusqlite::Result<bool> {
    let conn = open_read_only(path)?;
    conn.query_row(
        &format!("SELECT EXISTS(SELECT 1 FROM \"{}\")", merge::NEVER_RESTORED),
        [],
        |row| row.get(0),
    )
    .or(Ok(false))
}

/// The `-wal` and `-shm` files that belong to a database.
pub fn sidecars(path: &Path) -> [PathBuf; 2] {
    let with = |suffix: &str| {
        let mut name = path.as_os_str().to_os_string();
        name.push(suffix);
        PathBuf::from(name)
    };
    [with("-wal"), with("-shm")]
}

/// Puts `staged` (a complete database in the same directory) in place of `live`: synced,
/// the live one's `-wal`/`-shm` removed first (SQLite would replay a stale WAL into the new
/// file), then an atomic rename and a sync of the directory. The daemon must be stopped.
pub fn replace_live(staged: &Path, live: &Path) -> io::Result<()> {
    fs::File::open(staged)?.sync_all()?;
    for sidecar in sidecars(live) {
        match fs::remove_file(&sidecar) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    fs::rename(staged, live)?;
    crate::fs::sync_dir(live.parent().unwrap_or(Path::new(".")))
}

/// `MAX(version)` of the store's schema-version table, if it has one.
pub fn schema_version(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    for table in VERSION_TABLES {
        let exists: bool = conn.query_row(
            "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
            [table],
            |row| row.get(0),
        )?;
        if exists {
            return conn
                .query_row(
                    &format!("SELECT MAX(version) FROM \"{table}\""),
                    [],
                    |row| row.get::<_, Option<i64>>(0),
                )
                .optional()
                .map(Option::flatten);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_a_copy_without_creating_files_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("we?ird#name%.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "PRAGMA journal_mode=WAL; CREATE TABLE schema_version(version INTEGER, applied_at TEXT);
                 INSERT INTO schema_version VALUES (48, 'x'), (49, 'y');",
            )
            .unwrap();
        }
        let before: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        let conn = open_immutable(&path).unwrap();
        assert_eq!(integrity_problems(&conn).unwrap(), Vec::<String>::new());
        assert_eq!(schema_version(&conn).unwrap(), Some(49));
        drop(conn);
        let after: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(before, after);
    }

    #[test]
    fn backup_copies_a_database_in_wal_mode_including_uncheckpointed_writes() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live.db");
        let writer = Connection::open(&live).unwrap();
        writer
            .execute_batch(
                "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
                 CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3);",
            )
            .unwrap();
        assert!(
            dir.path().join("live.db-wal").exists(),
            "the writes sit in the WAL"
        );
        let copy = dir.path().join("copy.db");
        backup_to(&live, &copy).unwrap();
        writer.execute_batch("INSERT INTO t VALUES (4)").unwrap();
        let conn = open_immutable(&copy).unwrap();
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 3);
        assert!(!dir.path().join("copy.db-wal").exists());
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_ne!(mode, "wal");
    }

    #[test]
    fn a_store_without_a_version_table_has_no_version() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t(x)").unwrap();
        assert_eq!(schema_version(&conn).unwrap(), None);
        conn.execute_batch("CREATE TABLE search_schema_version(version INTEGER)")
            .unwrap();
        assert_eq!(schema_version(&conn).unwrap(), None);
        conn.execute_batch("INSERT INTO search_schema_version VALUES (8)")
            .unwrap();
        assert_eq!(schema_version(&conn).unwrap(), Some(8));
    }
}

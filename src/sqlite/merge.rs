//! Merging a partial backup's rows into a copy of the live state database.
//!
//! For each restored collection, the rows of tables with a `collection` column, and the rows
//! that hang off them through foreign keys (transitively), are replaced by the backup's; every
//! other row is kept. Colliding integer primary keys of the backup's rows get new values, and
//! every foreign key that points at them follows. Tables, columns and links come from the
//! schema itself (`PRAGMA table_info`, `PRAGMA foreign_key_list`), so a new schema version
//! merges without code changes.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{params, Connection};

/// Rows of this table make the daemon delete and recreate collections at startup: never restored.
pub const NEVER_RESTORED: &str = "relative_path_migration_in_progress";

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the backup's table `{table}` differs from the live one ({detail}); a merge needs the same schema")]
    SchemaDiffers { table: String, detail: String },
    #[error("table `{0}` has no rowid (WITHOUT ROWID); wqm cannot merge it")]
    WithoutRowid(String),
    #[error("a row of `{table}` from the backup conflicts with a row the merge keeps: {reason}")]
    Conflict { table: String, reason: String },
    #[error("after the merge, {0}")]
    Check(String),
}

/// A foreign key of a table: its columns and the parent's columns.
#[derive(Clone, Debug)]
struct ForeignKey {
    parent: String,
    from: Vec<String>,
    to: Vec<String>,
}

#[derive(Clone, Debug)]
struct Table {
    name: String,
    columns: Vec<String>,
    /// The single `INTEGER PRIMARY KEY` column (a rowid alias), if the table has one.
    integer_key: Option<String>,
    foreign_keys: Vec<ForeignKey>,
}

impl Table {
    fn has_collection(&self) -> bool {
        self.columns.iter().any(|c| c == "collection")
    }

    /// Its integer key gets new values on collision, unless the key is itself a foreign key
    /// (then it follows the parent's new value).
    fn remaps_own_key(&self) -> Option<&str> {
        let key = self.integer_key.as_deref()?;
        let is_foreign = self
            .foreign_keys
            .iter()
            .any(|fk| fk.from.len() == 1 && fk.from[0] == key);
        (!is_foreign).then_some(key)
    }
}

/// What the merge did, per table: rows removed from the live copy, rows taken from the backup.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Report {
    pub removed: BTreeMap<String, usize>,
    pub inserted: BTreeMap<String, usize>,
    /// Backup rows that got a new integer key because the live database used theirs.
    pub remapped: usize,
}

/// A SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn read_schema(conn: &Connection, db: &str) -> rusqlite::Result<Vec<Table>> {
    let names: Vec<String> = conn
        .prepare(&format!(
            "SELECT name FROM {db}.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND sql NOT LIKE 'CREATE VIRTUAL%' ORDER BY name"
        ))?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut tables = Vec::new();
    let mut primary_keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in names {
        let mut columns = Vec::new();
        let mut keys = Vec::new();
        let mut statement = conn.prepare(&format!("PRAGMA {db}.table_info({})", quote(&name)))?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let column: String = row.get(1)?;
            let kind: String = row.get(2)?;
            let pk: i64 = row.get(5)?;
            if pk > 0 {
                keys.push((pk, column.clone(), kind.to_ascii_uppercase()));
            }
            columns.push(column);
        }
        keys.sort();
        let integer_key = match keys.as_slice() {
            [(_, column, kind)] if kind == "INTEGER" => Some(column.clone()),
            _ => None,
        };
        primary_keys.insert(
            name.clone(),
            keys.into_iter().map(|(_, column, _)| column).collect(),
        );
        let mut grouped: BTreeMap<i64, ForeignKey> = BTreeMap::new();
        let mut statement =
            conn.prepare(&format!("PRAGMA {db}.foreign_key_list({})", quote(&name)))?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            let parent: String = row.get(2)?;
            let from: String = row.get(3)?;
            let to: Option<String> = row.get(4)?;
            let fk = grouped.entry(id).or_insert(ForeignKey {
                parent,
                from: Vec::new(),
                to: Vec::new(),
            });
            fk.from.push(from);
            fk.to.extend(to);
        }
        tables.push(Table {
            name,
            columns,
            integer_key,
            foreign_keys: grouped.into_values().collect(),
        });
    }
    // A foreign key without target columns points at the parent's primary key.
    for table in &mut tables {
        for fk in &mut table.foreign_keys {
            if fk.to.is_empty() {
                fk.to = primary_keys.get(&fk.parent).cloned().unwrap_or_default();
            }
        }
    }
    Ok(tables)
}

/// Merges into `target` (a copy of the live database, changed in place) the rows of
/// `collections` from `source` (a copy of the backup's database).
pub fn merge_collections(
    target: &Path,
    source: &Path,
    collections: &[String],
) -> Result<Report, MergeError> {
    let conn = Connection::open(target)?;
    // Checked once at the end: rows move in an order foreign keys cannot follow.
    conn.execute_batch("PRAGMA foreign_keys = OFF;")?;
    conn.execute("ATTACH DATABASE ?1 AS backup", [source.to_string_lossy()])?;
    let tables = read_schema(&conn, "main")?;
    check_mergeable(&conn, &tables, &read_schema(&conn, "backup")?)?;

    // Triggers would change rows this merge must leave alone: set them aside meanwhile.
    let triggers: Vec<(String, String)> = conn
        .prepare(
            "SELECT name, sql FROM main.sqlite_master WHERE type = 'trigger' AND sql IS NOT NULL",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;

    let transaction = conn.unchecked_transaction()?;
    for (name, _) in &triggers {
        conn.execute_batch(&format!("DROP TRIGGER main.{}", quote(name)))?;
    }
    mark_restored_rows(&conn, collections, &tables)?;
    let report = replace_owned_rows(&conn, &tables)?;
    for (_, sql) in &triggers {
        conn.execute_batch(sql)?;
    }
    conn.execute_batch(
        "DROP TABLE temp.wqm_collections; DROP TABLE temp.wqm_owned; DROP TABLE temp.wqm_map;",
    )?;
    transaction.commit()?;
    conn.execute_batch("DETACH DATABASE backup; PRAGMA foreign_keys = ON;")?;
    check_merged(&conn)?;
    Ok(report)
}

/// Creates the merge's scratch tables and marks, in both databases, the rows that belong to
/// `collections`.
fn mark_restored_rows(
    conn: &Connection,
    collections: &[String],
    tables: &[Table],
) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TEMP TABLE wqm_collections(name TEXT PRIMARY KEY);
         CREATE TEMP TABLE wqm_owned(db TEXT NOT NULL, tbl TEXT NOT NULL, rid INTEGER NOT NULL, PRIMARY KEY (db, tbl, rid)) WITHOUT ROWID;
         CREATE TEMP TABLE wqm_map(tbl TEXT NOT NULL, old INTEGER NOT NULL, new INTEGER NOT NULL, PRIMARY KEY (tbl, old)) WITHOUT ROWID;",
    )?;
    for name in collections {
        conn.execute(
            "INSERT OR IGNORE INTO temp.wqm_collections VALUES (?1)",
            [name],
        )?;
    }
    for db in ["main", "backup"] {
        mark_owned(conn, db, tables)?;
    }
    Ok(())
}

/// Both databases have the same tables with the same columns, and every table has a rowid
/// (the merge tracks rows by it).
fn check_mergeable(
    conn: &Connection,
    tables: &[Table],
    backup_tables: &[Table],
) -> Result<(), MergeError> {
    for table in tables {
        match backup_tables.iter().find(|b| b.name == table.name) {
            Some(b) if b.columns == table.columns => {}
            Some(b) => {
                return Err(MergeError::SchemaDiffers {
                    table: table.name.clone(),
                    detail: format!("columns {:?} vs {:?}", b.columns, table.columns),
                })
            }
            None => {
                return Err(MergeError::SchemaDiffers {
                    table: table.name.clone(),
                    detail: "missing in the backup".into(),
                })
            }
        }
    }
    for table in tables {
        let has_rowid = conn
            .prepare(&format!(
                "SELECT rowid FROM main.{} LIMIT 0",
                quote(&table.name)
            ))
            .is_ok();
        if !has_rowid {
            return Err(MergeError::WithoutRowid(table.name.clone()));
        }
    }
    Ok(())
}

/// With the owned rows marked: deletes the live ones, gives the backup's colliding keys new
/// values, and inserts the backup's (never `NEVER_RESTORED`'s).
fn replace_owned_rows(conn: &Connection, tables: &[Table]) -> Result<Report, MergeError> {
    let mut report = Report::default();
    for table in tables {
        let removed = conn.execute(
            &format!("DELETE FROM main.{} WHERE rowid IN (SELECT rid FROM temp.wqm_owned WHERE db = 'main' AND tbl = ?1)", quote(&table.name)),
            [&table.name],
        )?;
        if removed > 0 {
            report.removed.insert(table.name.clone(), removed);
        }
    }
    report.remapped = assign_new_keys(conn, tables)?;
    for table in tables.iter().filter(|t| t.name != NEVER_RESTORED) {
        let inserted = insert_owned(conn, table, tables)?;
        if inserted > 0 {
            report.inserted.insert(table.name.clone(), inserted);
        }
    }
    Ok(report)
}

/// The merged database passes SQLite's own foreign-key and integrity checks.
fn check_merged(conn: &Connection) -> Result<(), MergeError> {
    let violations = super::foreign_key_problems(conn)?;
    if !violations.is_empty() {
        return Err(MergeError::Check(format!(
            "PRAGMA foreign_key_check reports: {}",
            violations.join("; ")
        )));
    }
    let problems = super::integrity_problems(conn)?;
    if !problems.is_empty() {
        return Err(MergeError::Check(format!(
            "PRAGMA integrity_check reports: {}",
            problems.join("; ")
        )));
    }
    Ok(())
}

/// Marks, in `db`, the rows of the restored collections and (to a fixpoint) every row whose
/// foreign key points at a marked row.
fn mark_owned(conn: &Connection, db: &str, tables: &[Table]) -> rusqlite::Result<()> {
    for table in tables.iter().filter(|t| t.has_collection()) {
        conn.execute(
            &format!(
                "INSERT OR IGNORE INTO temp.wqm_owned SELECT ?1, ?2, rowid FROM {db}.{} WHERE collection IN (SELECT name FROM temp.wqm_collections)",
                quote(&table.name)
            ),
            params![db, table.name],
        )?;
    }
    loop {
        let mut added = 0;
        for table in tables {
            for fk in &table.foreign_keys {
                if fk.from.len() != fk.to.len() || fk.to.is_empty() {
                    continue;
                }
                let child = fk
                    .from
                    .iter()
                    .map(|c| format!("c.{}", quote(c)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let parent = fk
                    .to
                    .iter()
                    .map(|c| format!("p.{}", quote(c)))
                    .collect::<Vec<_>>()
                    .join(", ");
                added += conn.execute(
                    &format!(
                        "INSERT OR IGNORE INTO temp.wqm_owned
                         SELECT ?1, ?2, c.rowid FROM {db}.{child_table} AS c
                         WHERE ({child}) IN (SELECT {parent} FROM {db}.{parent_table} AS p
                                             JOIN temp.wqm_owned AS o ON o.db = ?1 AND o.tbl = ?3 AND o.rid = p.rowid)",
                        child_table = quote(&table.name),
                        parent_table = quote(&fk.parent),
                    ),
                    params![db, table.name, fk.parent],
                )?;
            }
        }
        if added == 0 {
            return Ok(());
        }
    }
}

/// Backup rows whose integer key is taken in the live copy get the next free value.
fn assign_new_keys(conn: &Connection, tables: &[Table]) -> rusqlite::Result<usize> {
    let mut remapped = 0;
    for table in tables.iter().filter(|t| t.name != NEVER_RESTORED) {
        let Some(key) = table.remaps_own_key() else {
            continue;
        };
        let (t, k) = (quote(&table.name), quote(key));
        let owned = "SELECT rid FROM temp.wqm_owned WHERE db = 'backup' AND tbl = ?1";
        let colliding: Vec<i64> = conn
            .prepare(&format!(
                "SELECT s.{k} FROM backup.{t} AS s WHERE s.rowid IN ({owned}) AND s.{k} IN (SELECT {k} FROM main.{t}) ORDER BY s.{k}"
            ))?
            .query_map([&table.name], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        if colliding.is_empty() {
            continue;
        }
        let sequence: i64 = conn
            .query_row(
                "SELECT COALESCE(MAX(seq), 0) FROM main.sqlite_sequence WHERE name = ?1",
                [&table.name],
                |r| r.get(0),
            )
            .unwrap_or(0);
        let next: i64 = conn.query_row(
            &format!("SELECT MAX(COALESCE((SELECT MAX({k}) FROM main.{t}), 0), COALESCE((SELECT MAX({k}) FROM backup.{t}), 0), ?2) + 1"),
            params![table.name, sequence],
            |r| r.get(0),
        )?;
        for (old, new) in colliding.into_iter().zip(next..) {
            conn.execute(
                "INSERT INTO temp.wqm_map VALUES (?1, ?2, ?3)",
                params![table.name, old, new],
            )?;
            remapped += 1;
        }
    }
    Ok(remapped)
}

/// Copies the backup's owned rows of `table` into the live copy, with remapped keys.
fn insert_owned(conn: &Connection, table: &Table, tables: &[Table]) -> Result<usize, MergeError> {
    let remapped_parent = |column: &str| -> Option<String> {
        if table.remaps_own_key() == Some(column) {
            return Some(table.name.clone());
        }
        table.foreign_keys.iter().find_map(|fk| {
            let parent = tables.iter().find(|t| t.name == fk.parent)?;
            (fk.from.len() == 1
                && fk.from[0] == column
                && parent.remaps_own_key() == Some(fk.to[0].as_str()))
            .then(|| parent.name.clone())
        })
    };
    let columns: Vec<String> = table.columns.iter().map(|c| quote(c)).collect();
    let values: Vec<String> = table
        .columns
        .iter()
        .map(|c| match remapped_parent(c) {
            Some(owner) => format!(
                "COALESCE((SELECT new FROM temp.wqm_map WHERE tbl = {} AND old = s.{col}), s.{col})",
                literal(&owner),
                col = quote(c)
            ),
            None => format!("s.{}", quote(c)),
        })
        .collect();
    let t = quote(&table.name);
    let inserted = conn
        .execute(
            &format!(
                "INSERT INTO main.{t} ({}) SELECT {} FROM backup.{t} AS s
                 WHERE s.rowid IN (SELECT rid FROM temp.wqm_owned WHERE db = 'backup' AND tbl = ?1)",
                columns.join(", "),
                values.join(", ")
            ),
            [&table.name],
        )
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, message) if f.code == rusqlite::ErrorCode::ConstraintViolation => MergeError::Conflict {
                table: table.name.clone(),
                reason: message.unwrap_or_else(|| f.to_string()),
            },
            other => MergeError::Sqlite(other),
        })?;
    if table.integer_key.is_some() {
        conn.execute(
            &format!(
                "UPDATE main.sqlite_sequence SET seq = (SELECT MAX(rowid) FROM main.{t}) WHERE name = ?1 AND seq < (SELECT MAX(rowid) FROM main.{t})"
            ),
            [&table.name],
        )
        .or_else(|e| if e.to_string().contains("no such table") { Ok(0) } else { Err(e) })?;
    }
    Ok(inserted)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = include_str!("../../tests/fixtures/state-db/schema.sql");
    const SAMPLE: &str = include_str!("../../tests/fixtures/state-db/sample-data.sql");

    fn database(path: &Path, changes: &str) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute_batch(SAMPLE).unwrap();
        conn.execute_batch(changes).unwrap();
        conn
    }

    fn rows(conn: &Connection, sql: &str) -> Vec<String> {
        let mut statement = conn.prepare(sql).unwrap();
        let columns = statement.column_count();
        statement
            .query_map([], |row| {
                Ok((0..columns)
                    .map(|i| format!("{:?}", row.get_ref(i).unwrap()))
                    .collect::<Vec<_>>()
                    .join("|"))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Backup: the sample rows plus a `projects` file (id 11, with a chunk) and a migration
    /// marker. Live: the sample rows where `projects` changed since (file 2 renamed, file 1
    /// gone) and a new `libraries` file took id 11.
    fn setup(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let backup = dir.join("backup.db");
        let live = dir.join("live.db");
        database(
            &backup,
            "INSERT INTO tracked_files (file_id, watch_folder_id, tenant_id, branch, file_identity_id, content_key, is_virtual, state, file_type, language, file_mtime, file_hash, chunk_count, lsp_status, treesitter_status, needs_reconcile, extension, is_test, collection, base_point, relative_path, incremental, created_at, updated_at)
               VALUES (11, '3f6c1d2e-8a4b-4c5d-9e7f-0a1b2c3d4e5f', '4ed81466dec7', 'main', 'id-11', 'ck-11', 0, 'present', 'code', 'rust', 't', 'h11', 1, 'none', 'none', 0, 'rs', 0, 'projects', 'bp11', 'src/eleven.rs', 0, 't', 't');
             INSERT INTO qdrant_chunks (file_id, point_id, chunk_index, content_hash, chunk_type, start_line, end_line, created_at)
               VALUES (11, 'point-11', 0, 'c11', 'text_chunk', 1, 2, 't');
             INSERT INTO relative_path_migration_in_progress VALUES (37, 1, 0, NULL);",
        );
        database(
            &live,
            "DELETE FROM qdrant_chunks WHERE file_id = 1; DELETE FROM indexed_content WHERE file_id = 1; DELETE FROM tracked_files WHERE file_id = 1;
             UPDATE tracked_files SET relative_path = 'README.renamed.md' WHERE file_id = 2;
             INSERT INTO tracked_files (file_id, watch_folder_id, tenant_id, branch, file_identity_id, content_key, is_virtual, state, file_type, language, file_mtime, file_hash, chunk_count, lsp_status, treesitter_status, needs_reconcile, extension, is_test, collection, base_point, relative_path, incremental, created_at, updated_at)
               VALUES (11, 'lib-rust-book', 'rust-book', 'main', 'id-lib', 'ck-lib', 0, 'present', 'docs', 'markdown', 't', 'hlib', 1, 'none', 'none', 0, 'md', 0, 'libraries', 'bplib', 'src/new-chapter.md', 1, 't', 't');
             INSERT INTO qdrant_chunks (file_id, point_id, chunk_index, content_hash, chunk_type, start_line, end_line, created_at)
               VALUES (11, 'point-lib', 0, 'clib', 'text_chunk', 1, 2, 't');",
        );
        (live, backup)
    }

    #[test]
    fn replaces_the_rows_of_restored_collections_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (live, backup) = setup(dir.path());
        let before = Connection::open(&live).unwrap();
        let libraries_before = rows(
            &before,
            "SELECT * FROM tracked_files WHERE collection = 'libraries' ORDER BY file_id",
        );
        let untouched_before = rows(&before, "SELECT * FROM projects ORDER BY project_id");
        drop(before);

        let report = merge_collections(&live, &backup, &["projects".to_string()]).unwrap();
        // File 11 and its chunk (both new chunks took the next chunk_id) collide.
        assert_eq!(report.remapped, 2, "{report:?}");

        let conn = Connection::open(&live).unwrap();
        let backup_conn = Connection::open(&backup).unwrap();
        // Projects rows are the backup's again: file 1 is back, file 2 has its old name.
        let paths = rows(&conn, "SELECT relative_path FROM tracked_files WHERE collection = 'projects' ORDER BY relative_path");
        let backup_paths = rows(&backup_conn, "SELECT relative_path FROM tracked_files WHERE collection = 'projects' ORDER BY relative_path");
        assert_eq!(paths, backup_paths);
        // The backup's file 11 collided with the live libraries file 11: it got a new id, and its chunk followed.
        let eleven: i64 = conn
            .query_row(
                "SELECT file_id FROM tracked_files WHERE relative_path = 'src/eleven.rs'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_ne!(eleven, 11);
        let chunk: String = conn
            .query_row(
                "SELECT point_id FROM qdrant_chunks WHERE file_id = ?1",
                [eleven],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(chunk, "point-11");
        // Libraries rows and rows of other tables are the live ones.
        assert_eq!(
            rows(
                &conn,
                "SELECT * FROM tracked_files WHERE collection = 'libraries' ORDER BY file_id"
            ),
            libraries_before
        );
        assert_eq!(
            rows(&conn, "SELECT * FROM projects ORDER BY project_id"),
            untouched_before
        );
        let lib_chunk: String = conn
            .query_row(
                "SELECT point_id FROM qdrant_chunks WHERE file_id = 11",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(lib_chunk, "point-lib");
        // Rows hanging off restored rows came along (indexed_content of file 1).
        let indexed: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM indexed_content WHERE file_id = 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexed, 1);
        // The migration marker is never restored.
        let markers: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM relative_path_migration_in_progress",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(markers, 0);
        // AUTOINCREMENT continues past the new id.
        let seq: i64 = conn
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'tracked_files'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(seq >= eleven);
        assert!(crate::sqlite::foreign_key_problems(&conn)
            .unwrap()
            .is_empty());
        assert!(
            report.removed["tracked_files"] >= 1 && report.inserted["qdrant_chunks"] >= 1,
            "{report:?}"
        );
    }

    #[test]
    fn a_different_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (live, backup) = setup(dir.path());
        Connection::open(&backup)
            .unwrap()
            .execute_batch("ALTER TABLE tags ADD COLUMN extra TEXT")
            .unwrap();
        let err = merge_collections(&live, &backup, &["projects".to_string()]).unwrap_err();
        assert!(
            matches!(err, MergeError::SchemaDiffers { ref table, .. } if table == "tags"),
            "{err}"
        );
    }

    #[test]
    fn triggers_are_kept_and_do_not_fire() {
        let dir = tempfile::tempdir().unwrap();
        let (live, backup) = setup(dir.path());
        Connection::open(&live)
            .unwrap()
            .execute_batch("CREATE TABLE audit(x); CREATE TRIGGER t_audit AFTER INSERT ON tracked_files BEGIN INSERT INTO audit VALUES (NEW.file_id); END;")
            .unwrap();
        Connection::open(&backup)
            .unwrap()
            .execute_batch("CREATE TABLE audit(x);")
            .unwrap();
        merge_collections(&live, &backup, &["projects".to_string()]).unwrap();
        let conn = Connection::open(&live).unwrap();
        let fired: i64 = conn
            .query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fired, 0);
        let kept: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name = 't_audit'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(kept, 1);
    }
}

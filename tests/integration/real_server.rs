//! Against a real Qdrant (see `real_qdrant`): collections named as workspace-qdrant-mcp names
//! them, with named and sparse vectors, payload indexes and an alias, and a state DB built from
//! the real v49 schema in WAL mode.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use wqm::format::manifest::Manifest;

use crate::fixtures;
use crate::real_qdrant::{self, Options, Server, Tls};
use crate::test::Test;

fn manifest(backup: &Path) -> Manifest {
    Manifest::load(&backup.join("metadata/manifest.json")).unwrap()
}

/// A test directory with a state DB of the real schema (WAL mode, a live writer) in `data/`.
fn with_state_db(t: &Test) -> rusqlite::Connection {
    fs::create_dir_all(t.join("data")).unwrap();
    fixtures::state_db(&t.join("data/state.db"));
    let live = rusqlite::Connection::open(t.join("data/state.db")).unwrap();
    live.execute_batch("PRAGMA wal_autocheckpoint=0; UPDATE db_maintenance SET id = id;")
        .unwrap();
    live
}

#[test]
#[cfg_attr(
    not(real_qdrant),
    ignore = "needs a real Qdrant: set WQM_TEST_QDRANT_BIN or WQM_TEST_QDRANT_URL"
)]
fn backs_up_a_workspace_and_leaves_no_snapshot_on_the_server() {
    let server = Server::start();
    real_qdrant::workspace(&server);
    let t = Test::new();
    let _live = with_state_db(&t);
    let (_, tmp) = t
        .env("QDRANT_URL", &server.url)
        .env("WQM_DATA_DIR", "{TMP}/data")
        .args("backup create {TMP}/b --json")
        .stdout_json(|v| {
            assert_eq!(v["collections"], serde_json::json!({"libraries": 150, "projects": 300, "rules": 20, "scratchpad": 30}));
            assert_eq!(v["total_documents"], 500);
        })
        .run();
    let b = tmp.path().join("b");
    let m = manifest(&b);
    assert_eq!(m.qdrant_version.as_deref(), Some("1.18.3"));
    assert_eq!(
        m.collection_details["projects"].aliases,
        ["current-project"]
    );
    let params = m.collection_details["projects"].params.as_ref().unwrap();
    assert_eq!(params["vectors"]["dense"]["size"], 16);
    assert!(params["sparse_vectors"]["keywords"].is_object());
    assert_eq!(
        m.collection_details["rules"]
            .payload_schema
            .as_ref()
            .unwrap()["tenant_id"]["data_type"],
        "keyword"
    );
    assert_eq!(m.databases[0].schema_version, Some(49));
    assert!(!m.during_operations);
    crate::test::validates(&b);
    assert_eq!(server.snapshots_left(), Vec::<String>::new());
}

#[test]
#[cfg_attr(
    not(real_qdrant),
    ignore = "needs a real Qdrant: set WQM_TEST_QDRANT_BIN or WQM_TEST_QDRANT_URL"
)]
fn a_partial_backup_holds_only_the_chosen_collections() {
    let server = Server::start();
    real_qdrant::workspace(&server);
    let (_, tmp) = Test::new()
        .env("QDRANT_URL", &server.url)
        .args("backup create {TMP}/p --collections rules,scratchpad")
        .stdout_with(|o| {
            assert!(
                o.contains("Backup created: ") && o.contains("(2 collections, 50 points, "),
                "{o}"
            )
        })
        .run();
    let p = tmp.path().join("p");
    let m = manifest(&p);
    assert!(m.partial_backup);
    assert_eq!(
        m.selected_collections.as_deref(),
        Some(&["rules".to_string(), "scratchpad".to_string()][..])
    );
    let mut stored: Vec<String> = fs::read_dir(p.join("collections"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    stored.sort();
    assert_eq!(stored, ["rules.snapshot.zst", "scratchpad.snapshot.zst"]);
    crate::test::validates(&p);
    assert_eq!(server.snapshots_left(), Vec::<String>::new());
}

#[test]
#[cfg_attr(
    not(real_qdrant),
    ignore = "needs a real Qdrant: set WQM_TEST_QDRANT_BIN or WQM_TEST_QDRANT_URL"
)]
fn a_backup_taken_while_points_are_upserted_is_valid() {
    let server = Server::start();
    real_qdrant::workspace(&server);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (server, stop) = (server.handle(), stop.clone());
        std::thread::spawn(move || {
            let mut next = 10_000;
            while !stop.load(Ordering::Relaxed) {
                real_qdrant::upsert(&server, "projects", next..next + 50, 1);
                real_qdrant::upsert(&server, "projects", 0..50, next);
                next += 50;
            }
            next
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    let (_, tmp) = Test::new()
        .env("QDRANT_URL", &server.url)
        .env("WQM_BACKUP__COMPRESSION", "false")
        .args("backup create {TMP}/b")
        .stdout_with(|o| assert!(o.contains("Backup created: "), "{o}"))
        .run();
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(written > 10_050, "the writer ran during the backup");
    let b = tmp.path().join("b");
    crate::test::validates(&b);
    let m = manifest(&b);
    let recorded = m.collection_details["projects"].points_count;
    assert!(
        (300..=server.exact_count("projects")).contains(&recorded),
        "{recorded}"
    );
    assert_eq!(server.snapshots_left(), Vec::<String>::new());
}

/// Files under `dir` (recursively) whose name contains `part`, with their sizes.
fn files_with(dir: &Path, part: &str) -> Vec<(std::path::PathBuf, u64)> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_with(&path, part));
        } else if path.to_string_lossy().contains(part) {
            found.push((path.clone(), entry.metadata().map(|m| m.len()).unwrap_or(0)));
        }
    }
    found
}

/// The collection `big` on `server`, and `wqm backup create TMP/b` of it, uncompressed (so the
/// stored file grows with every piece downloaded), its output piped: to be spawned.
fn create_of_big(server: &Server) -> (Test, std::path::PathBuf, std::process::Command) {
    big_collection(server);
    let t = Test::new();
    let target = t.join("b");
    let mut command = crate::test::wqm_command(
        &t.join("home"),
        &["backup", "create", target.to_str().unwrap()],
    );
    command
        .env("QDRANT_URL", &server.url)
        .env("WQM_DATA_DIR", t.join("data"))
        .env("WQM_BACKUP__COMPRESSION", "false")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    (t, target, command)
}

/// A collection `big` whose snapshot is large enough (~40 MB) to be killed in the middle of.
fn big_collection(server: &Server) {
    server.ok(
        "PUT",
        "/collections/big",
        Some(serde_json::json!({"vectors": {"size": 4, "distance": "Dot"}})),
    );
    for batch in 0..8u64 {
        let points: Vec<serde_json::Value> = (0..50u64)
            .map(|i| {
                let id = batch * 50 + i;
                // Incompressible text, so the stored file grows as the download goes.
                let text: String = (0..100_000u64)
                    .map(|j| char::from(b'a' + ((id * 7919 + j * j * 31 + j / 3) % 26) as u8))
                    .collect();
                serde_json::json!({"id": id, "vector": [1.0, 0.5, 0.25, id as f32], "payload": {"text": text}})
            })
            .collect();
        server.ok(
            "PUT",
            "/collections/big/points?wait=true",
            Some(serde_json::json!({ "points": points })),
        );
    }
}

/// Waits until a snapshot file under `dir` has bytes: a download has begun.
fn wait_until_downloading(dir: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !files_with(dir, ".snapshot")
        .iter()
        .any(|(_, size)| *size > 0)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the download never began"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

#[test]
#[cfg_attr(
    not(real_qdrant_bin),
    ignore = "needs WQM_TEST_QDRANT_BIN: a server this test starts itself (to kill and restart it)"
)]
fn qdrant_killed_mid_download_and_not_back_in_time_says_what_stays_on_the_server() {
    let mut server = Server::start();
    let (t, target, mut command) = create_of_big(&server);
    command
        .env("WQM_BACKUP__TRANSFER__RETRIES", "1")
        .env("WQM_BACKUP__TRANSFER__RETRY_TIMEOUT", "1");
    let child = command.spawn().unwrap();
    wait_until_downloading(&t.join(""));
    // Killed mid-download, and back only after wqm gave up.
    server.kill();
    let output = child.wait_with_output().unwrap();
    server.start_again();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let left = server.snapshots_left();
    let name = left
        .iter()
        .find_map(|s| s.strip_prefix("big/"))
        .unwrap_or_else(|| panic!("no snapshot of `big` left: {left:?}"));
    assert!(
        stderr.starts_with(&format!(
            "wqm: action needed: snapshot `{name}` of `big` is left on Qdrant at {}: the run could not delete it; the next wqm run in `{}` (or `wqm backup cleanup {}`) deletes it, or delete it now with: curl -X DELETE ",
            server.url,
            t.join("").display().to_string().trim_end_matches('/'),
            t.join("").display().to_string().trim_end_matches('/'),
        )),
        "{stderr}"
    );
    assert!(stderr.contains("\nwqm: error: "), "{stderr}");
    assert!(!target.exists());
    // The next run deletes it.
    let (_, _t) = t
        .env("QDRANT_URL", &server.url)
        .args("backup cleanup {TMP}")
        .stdout_with(move |o| assert!(o.contains("  deleted snapshot `"), "{o}"))
        .run();
    assert_eq!(server.snapshots_left(), Vec::<String>::new());
}

#[test]
#[cfg_attr(
    not(real_qdrant_bin),
    ignore = "needs WQM_TEST_QDRANT_BIN: a server this test starts itself (to kill and restart it)"
)]
fn qdrant_killed_and_restarted_mid_download_is_waited_for() {
    let mut server = Server::start();
    let (t, target, mut command) = create_of_big(&server);
    let child = command.spawn().unwrap();
    // Once the download has begun (the stored file grows), kill Qdrant and keep it down for
    // longer than the whole retry budget of earlier versions (~1.5 s).
    wait_until_downloading(&t.join(""));
    server.kill();
    let at_kill: u64 = files_with(&t.join(""), ".snapshot")
        .iter()
        .map(|(_, size)| size)
        .sum();
    std::thread::sleep(std::time::Duration::from_secs(4));
    server.start_again();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let stored = files_with(&target, "big.snapshot");
    assert_eq!(stored.len(), 1);
    assert!(
        at_kill < stored[0].1,
        "killed mid-download: {at_kill} of {} bytes",
        stored[0].1
    );
    crate::test::validates(&target);
    assert_eq!(server.snapshots_left(), Vec::<String>::new());
}

#[test]
#[cfg_attr(
    not(real_qdrant_bin),
    ignore = "needs WQM_TEST_QDRANT_BIN: a server this test starts itself (with API keys)"
)]
fn api_keys_are_sent_and_a_read_only_key_is_explained() {
    let server = Server::start_with(Options {
        api_key: Some("s3cret".into()),
        read_only_key: Some("reader".into()),
        ..Options::default()
    });
    real_qdrant::workspace(&server);
    Test::new()
        .env("QDRANT_URL", &server.url)
        .args("backup create {TMP}/b")
        .status(1)
        .stderr_with(|e| assert!(e.contains("rejected the request (401): Must provide an API key or an Authorization bearer token\nhint: set QDRANT_API_KEY"), "{e}"))
        .run();
    Test::new()
        .env("QDRANT_URL", &server.url)
        .env("QDRANT_API_KEY", "reader")
        .args("backup create {TMP}/b")
        .status(1)
        .stderr_with(|e| assert!(e.starts_with("wqm: error: Qdrant refused the request (403 Forbidden): Forbidden: Global manage access is required\n"), "{e}"))
        .run();
    let (_, tmp) = Test::new()
        .env("QDRANT_URL", &server.url)
        .env("QDRANT_API_KEY", "s3cret")
        .args("backup create {TMP}/b")
        .stdout_with(|o| assert!(o.contains("Backup created: "), "{o}"))
        .run();
    assert!(
        !fs::read_to_string(tmp.path().join("b/metadata/manifest.json"))
            .unwrap()
            .contains("s3cret")
    );
    // The plan proves the key may write, so a dry run already says a read-only key will not do.
    Test::in_dir(tmp)
        .env("QDRANT_URL", &server.url)
        .env("QDRANT_API_KEY", "reader")
        .args("backup restore {TMP}/b --dry-run --overwrite --json")
        .status(1)
        .stderr_with(|e| assert!(e.contains("The API key cannot write"), "{e}"))
        .stdout_json(|v| {
            let blocker = &v["plan"]["blockers"][0];
            assert!(
                blocker["message"]
                    .as_str()
                    .unwrap()
                    .ends_with(": Forbidden: Global manage access is required"),
                "{blocker}"
            );
        })
        .run();
    assert_eq!(server.snapshots_left(), Vec::<String>::new());
}

#[test]
#[cfg_attr(
    not(real_qdrant_bin),
    ignore = "needs WQM_TEST_QDRANT_BIN: a server this test starts itself (with TLS)"
)]
fn https_with_a_private_ca() {
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path();
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .expect("openssl runs");
        assert!(
            status.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&status.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=wqm test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    fs::write(d.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    let tls = Tls {
        cert: d.join("server.pem"),
        key: d.join("server.key"),
        ca: d.join("ca.pem"),
    };
    let server = Server::start_with(Options {
        tls: Some(tls),
        ..Options::default()
    });
    real_qdrant::workspace(&server);
    assert!(server.url.starts_with("https://"));
    Test::new()
        .env("QDRANT_URL", &server.url)
        .args("backup create {TMP}/b")
        .status(1)
        .stderr_with(|e| {
            assert!(
                e.starts_with("wqm: error: Failed to connect to Qdrant at https://127.0.0.1:"),
                "{e}"
            )
        })
        .run();
    let (_, tmp) = Test::new()
        .env("QDRANT_URL", &server.url)
        .env("QDRANT_CA_CERT", d.join("ca.pem").to_str().unwrap())
        .args("backup create {TMP}/b --collections rules")
        .stdout_with(|o| assert!(o.contains("Backup created: "), "{o}"))
        .run();
    crate::test::validates(&tmp.path().join("b"));
}

fn table(db: &Path, sql: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut statement = conn.prepare(sql).unwrap();
    let n = statement.column_count();
    statement
        .query_map([], |r| {
            Ok((0..n)
                .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                .collect::<Vec<_>>()
                .join("|"))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
#[cfg_attr(
    not(real_qdrant),
    ignore = "needs a real Qdrant: set WQM_TEST_QDRANT_BIN or WQM_TEST_QDRANT_URL"
)]
fn a_workspace_comes_back_exactly() {
    let server = Server::start();
    real_qdrant::workspace(&server);
    let t = Test::new();
    drop(with_state_db(&t));
    let db = t.join("data/state.db");
    let rows_before = table(&db, "SELECT * FROM tracked_files ORDER BY file_id");
    let before = real_qdrant::fingerprint(&server);
    let (_, tmp) = t
        .env("QDRANT_URL", &server.url)
        .env("WQM_DATA_DIR", "{TMP}/data")
        .args("backup create {TMP}/b")
        .stdout_with(|o| assert!(o.contains("Backup created"), "{o}"))
        .run();

    // Restoring onto the existing collections is a conflict that touches nothing.
    let (_, tmp) = Test::in_dir(tmp)
        .env("QDRANT_URL", &server.url)
        .env("WQM_DATA_DIR", "{TMP}/data")
        .args("backup restore {TMP}/b --force")
        .status(5)
        .stdout_with(|_| {})
        .stderr_with(|e| {
            assert!(
                e.starts_with("wqm: error: Restore failed: Collection libraries already exists\n"),
                "{e}"
            )
        })
        .run();
    assert_eq!(real_qdrant::fingerprint(&server), before);

    // Lose everything: collections, aliases and the state database's rows.
    for name in server.collections() {
        server.ok("DELETE", &format!("/collections/{name}"), None);
    }
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "DELETE FROM qdrant_chunks; DELETE FROM indexed_content; DELETE FROM tracked_files;",
        )
        .unwrap();

    let (_, tmp) = Test::in_dir(tmp)
        .env("QDRANT_URL", &server.url)
        .env("WQM_DATA_DIR", "{TMP}/data")
        .args("backup restore {TMP}/b --dry-run")
        .stdout_with(|o| assert!(o.ends_with("Dry-run complete. No changes made.\n"), "{o}"))
        .run();
    assert!(server.collections().is_empty(), "a dry run changes nothing");

    let (_, tmp) = Test::in_dir(tmp)
        .env("QDRANT_URL", &server.url)
        .env("WQM_DATA_DIR", "{TMP}/data")
        .args("backup restore {TMP}/b --force")
        .stdout_with(|o| assert!(o.contains("Restore completed"), "{o}"))
        .run();
    assert_eq!(real_qdrant::fingerprint(&server), before);
    assert_eq!(
        table(&db, "SELECT * FROM tracked_files ORDER BY file_id"),
        rows_before
    );
    assert_eq!(
        server.snapshots_left(),
        Vec::<String>::new(),
        "no snapshot or uploaded file stays on the server"
    );
    drop(tmp);
}

/// The workspace on `server`, a state DB in `data/`, and a backup of `collections` in `{TMP}/name`:
/// the test directory and the live database's path.
fn partial_backup(
    server: &Server,
    name: &str,
    collections: &str,
) -> (tempfile::TempDir, std::path::PathBuf) {
    real_qdrant::workspace(server);
    let t = Test::new();
    drop(with_state_db(&t));
    let db = t.join("data/state.db");
    let (_, tmp) = t
        .env("QDRANT_URL", &server.url)
        .env("WQM_DATA_DIR", "{TMP}/data")
        .args(&format!(
            "backup create {{TMP}}/{name} --collections {collections}"
        ))
        .stdout_with(|_| {})
        .run();
    (tmp, db)
}

#[test]
#[cfg_attr(
    not(real_qdrant),
    ignore = "needs a real Qdrant: set WQM_TEST_QDRANT_BIN or WQM_TEST_QDRANT_URL"
)]
fn a_partial_restore_leaves_other_collections_and_rows_alone() {
    let server = Server::start();
    let (tmp, db) = partial_backup(&server, "p", "projects");
    let projects_before = real_qdrant::fingerprint(&server)["collections"]["projects"].clone();
    // Afterwards: libraries changes (on the server and in the database), projects is lost.
    real_qdrant::upsert(&server, "libraries", 1000..1010, 9);
    rusqlite::Connection::open(&db).unwrap().execute_batch("UPDATE tracked_files SET chunk_count = 9 WHERE collection = 'libraries'; DELETE FROM qdrant_chunks WHERE file_id = 1; DELETE FROM indexed_content WHERE file_id = 1; DELETE FROM tracked_files WHERE file_id = 1;").unwrap();
    let libraries_after = real_qdrant::fingerprint(&server)["collections"]["libraries"].clone();
    let library_rows = table(
        &db,
        "SELECT * FROM tracked_files WHERE collection = 'libraries'",
    );
    server.ok("DELETE", "/collections/projects", None);

    let (_, tmp) = Test::in_dir(tmp)
        .env("QDRANT_URL", &server.url)
        .env("WQM_DATA_DIR", "{TMP}/data")
        .args("backup restore {TMP}/p --force")
        .stdout_with(|o| assert!(o.contains("Restore completed"), "{o}"))
        .run();
    let now = real_qdrant::fingerprint(&server);
    assert_eq!(now["collections"]["projects"], projects_before);
    assert_eq!(
        now["collections"]["libraries"], libraries_after,
        "other collections are left alone"
    );
    assert_eq!(
        table(
            &db,
            "SELECT * FROM tracked_files WHERE collection = 'libraries'"
        ),
        library_rows,
        "other rows are left alone"
    );
    assert_eq!(table(&db, "SELECT COUNT(*) FROM tracked_files WHERE file_id = 1 AND relative_path = 'src/rust/common/src/hashing.rs'"), ["Integer(1)"], "the projects row is back");
    assert_eq!(server.snapshots_left(), Vec::<String>::new());
    drop(tmp);
}

/// Each snapshot's (`started`, end) in seconds from the `--json` summary of a create.
fn snapshot_spans(summary: &serde_json::Value) -> Vec<(String, f64, f64)> {
    summary["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["seconds"].is_object())
        .map(|f| {
            let t = &f["seconds"];
            let started = t["started"].as_f64().unwrap();
            let end = started + t["making"].as_f64().unwrap() + t["downloading"].as_f64().unwrap();
            (f["path"].as_str().unwrap().to_string(), started, end)
        })
        .collect()
}

#[test]
#[cfg_attr(
    not(real_qdrant),
    ignore = "needs a real Qdrant: set WQM_TEST_QDRANT_BIN or WQM_TEST_QDRANT_URL"
)]
fn the_next_collection_is_snapshotted_while_the_previous_one_downloads() {
    let server = Server::start();
    real_qdrant::workspace(&server);
    for (parallel, pipelined) in [("2", true), ("1", false)] {
        let spans = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let seen = spans.clone();
        let (_, tmp) = Test::new()
            .env("QDRANT_URL", &server.url)
            .env("WQM_BACKUP__TRANSFER__PARALLEL", parallel)
            .args("backup create {TMP}/b --json")
            .stdout_json(move |v| *seen.borrow_mut() = snapshot_spans(v))
            .run();
        let spans = spans.borrow();
        let paths: Vec<&str> = spans.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(
            paths,
            [
                "collections/libraries.snapshot.zst",
                "collections/projects.snapshot.zst",
                "collections/rules.snapshot.zst",
                "collections/scratchpad.snapshot.zst"
            ],
            "the collections' order, whichever finished first"
        );
        // Pipelined, the next snapshot starts while one downloads (not every time: a lane may
        // free up a moment after the one before ends, with collections this small); one at a
        // time, never.
        let overlaps = spans.windows(2).filter(|p| p[1].1 < p[0].2).count();
        assert_eq!(overlaps > 0, pipelined, "parallel {parallel}: {spans:?}");
        let most = spans
            .iter()
            .map(|s| spans.iter().filter(|o| o.1 <= s.1 && s.1 < o.2).count())
            .max();
        assert!(
            most <= Some(parallel.parse().unwrap()),
            "parallel {parallel}: {spans:?}"
        );
        let m = manifest(&tmp.path().join("b"));
        assert_eq!(m.total_documents, Some(500));
        crate::test::validates(&tmp.path().join("b"));
        assert_eq!(server.snapshots_left(), Vec::<String>::new());
    }
}

/// A restore's only upload leaves its content's sha256 to Qdrant (`?checksum=`): content that is
/// not the manifest's is refused by the real server before it changes anything, and wqm says
/// the backup is damaged (exit 3) with the collection and the rows as they were.
#[test]
#[cfg_attr(
    not(real_qdrant),
    ignore = "needs a real Qdrant: set WQM_TEST_QDRANT_BIN or WQM_TEST_QDRANT_URL"
)]
fn content_qdrant_refuses_leaves_the_collection_as_it_was() {
    let server = Server::start();
    let (tmp, db) = partial_backup(&server, "b", "libraries");
    // Since the backup the collection changed: a restore would put it back.
    real_qdrant::upsert(&server, "libraries", 1000..1010, 9);
    let before = real_qdrant::fingerprint(&server);
    let rows = table(&db, "SELECT * FROM tracked_files ORDER BY file_id");
    let rel = "collections/libraries.snapshot.zst";
    fixtures::edit_manifest(&tmp.path().join("b"), |m| {
        for f in m["files"].as_array_mut().unwrap() {
            if f["path"] == rel {
                f["content_sha256"] = "0".repeat(64).into();
            }
        }
    });
    let expected = format!(
        "wqm: error: restoring collection `libraries` failed: the backup's `{rel}` is damaged: content sha256 mismatch: the manifest says {}, Qdrant found another in the content it received and refused the upload, changing nothing (Qdrant answered 400: Checksum mismatch: ",
        "0".repeat(64)
    );
    let (_, tmp) = Test::in_dir(tmp)
        .env("QDRANT_URL", &server.url)
        .env("WQM_DATA_DIR", "{TMP}/data")
        .args("backup restore {TMP}/b --force --overwrite")
        .status(3)
        .stdout_with(|_| {})
        .stderr_with(move |e| {
            assert!(e.starts_with(&expected), "{e}");
            assert!(
                e.contains("wqm: warning: nothing was changed; the safety backup `"),
                "{e}"
            );
        })
        .run();
    assert_eq!(real_qdrant::fingerprint(&server), before);
    assert_eq!(
        table(&db, "SELECT * FROM tracked_files ORDER BY file_id"),
        rows
    );
    assert_eq!(server.snapshots_left(), Vec::<String>::new());
    drop(tmp);
}

/// Reads `collection`'s exact count over and over for `drain` (first as fast as Qdrant answers
/// until it refuses, then every 50 ms), so that its strict-mode read rate limit stays spent;
/// returns how many times Qdrant refused (429).
fn spend_read_limit(
    rest: real_qdrant::Rest,
    collection: &str,
    drain: std::time::Duration,
) -> std::thread::JoinHandle<u32> {
    let path = format!("/collections/{collection}/points/count");
    std::thread::spawn(move || {
        let count = || {
            rest.call("POST", &path, Some(serde_json::json!({"exact": true})))
                .0
        };
        let mut refused = 0;
        while count() != 429 {}
        let until = std::time::Instant::now() + drain;
        while std::time::Instant::now() < until {
            if count() == 429 {
                refused += 1;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        refused
    })
}

/// A collection in strict mode refuses reads over its rate limit: 429 with `Retry-After` (Qdrant
/// 1.18.3: "Rate limiting exceeded: Read rate limit exceeded: …"). The create's exact counts
/// are such reads; they wait as long as Qdrant asks instead of failing the night's backup.
#[test]
#[cfg_attr(
    not(real_qdrant),
    ignore = "needs a real Qdrant: set WQM_TEST_QDRANT_BIN or WQM_TEST_QDRANT_URL"
)]
fn a_collection_over_its_read_rate_limit_is_waited_for() {
    let server = Server::start();
    server.ok(
        "PUT",
        "/collections/rules",
        Some(serde_json::json!({
            "vectors": {"size": real_qdrant::DIM, "distance": "Dot"},
            // 60 reads a minute: a token a second, so `Retry-After: 1`.
            "strict_mode_config": {"enabled": true, "read_rate_limit": 60}
        })),
    );
    real_qdrant::upsert(&server, "rules", 0..20, 0);
    let spending = spend_read_limit(server.handle(), "rules", std::time::Duration::from_secs(2));
    // The limit is spent before wqm asks.
    let count = serde_json::json!({"exact": true});
    while server
        .call(
            "POST",
            "/collections/rules/points/count",
            Some(count.clone()),
        )
        .0
        != 429
    {}
    let (_, tmp) = Test::new()
        .env("QDRANT_URL", &server.url)
        .args("backup create {TMP}/b --json")
        .stdout_json(|v| assert_eq!(v["collections"], serde_json::json!({"rules": 20})))
        .run();
    assert!(spending.join().unwrap() > 0, "the limit was never reached");
    let b = tmp.path().join("b");
    assert_eq!(manifest(&b).collection_details["rules"].points_count, 20);
    crate::test::validates(&b);
    assert_eq!(server.snapshots_left(), Vec::<String>::new());
}

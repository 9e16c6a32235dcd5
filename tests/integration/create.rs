//! `wqm backup create` against the Qdrant test double: the happy paths and every fault.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use wqm::format::manifest::Manifest;

use crate::fixtures;
use crate::qdrant_double::{Double, DownloadFault, Faults};
use crate::test::Test;

fn manifest(backup: &Path) -> Manifest {
    Manifest::load(&backup.join("metadata/manifest.json")).unwrap()
}

/// What every run leaves in a backups directory: the (empty) place of the lock objects.
const WQM_PARTS: [&str; 2] = [".wqm-locks", ".wqm-backend"];

/// Nothing of a backup at `target`: no directory, no staging directory.
fn nothing_written(dir: &Path, name: &str) {
    let entries: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(name) && !WQM_PARTS.contains(&n.as_str()))
        .collect();
    assert!(entries.is_empty(), "left behind: {entries:?}");
}

fn creates(double: &Double) -> usize {
    double
        .requests()
        .iter()
        .filter(|r| r.starts_with("POST") && r.contains("/snapshots"))
        .count()
}

#[test]
fn backs_up_every_collection_and_leaves_no_snapshot_on_the_server() {
    let double = Double::start();
    let t = Test::new();
    let (_, tmp) = t
        .env("QDRANT_URL", &double.url)
        .args("backup create {TMP}/b --description nightly")
        .stdout_with(|out| {
            // Not on a terminal: one summary line, the notes included.
            assert_eq!(out.lines().count(), 1, "{out}");
            assert!(
                out.starts_with("Backup created: ")
                    && out.contains("/b (2 collections, 320 points, "),
                "{out}"
            );
            assert!(out.contains("; note: no state database at `"), "{out}");
            assert!(
                out.ends_with("; no configuration file was found; the backup holds no config\n"),
                "{out}"
            );
        })
        .run();
    let b = tmp.path().join("b");
    let m = manifest(&b);
    assert_eq!(m.format_version, Some(1));
    assert_eq!(m.version, "0.3.0");
    assert_eq!(m.description.as_deref(), Some("nightly"));
    assert_eq!(m.qdrant_version.as_deref(), Some("1.18.3"));
    assert_eq!(m.total_documents, Some(320));
    assert!(!m.partial_backup && m.selected_collections.is_none());
    assert_eq!(m.collection_details["small-named"].aliases, ["notes"]);
    assert_eq!(m.collection_details["small-named"].points_count, 120);
    assert_eq!(
        m.collection_details["small-plain"].params.as_ref().unwrap()["vectors"]["distance"],
        "Dot"
    );
    assert_eq!(m.files.len(), 2);
    assert_eq!(m.files[0].path, "collections/small-named.snapshot.zst");
    assert!(m.system_info.is_some());
    // The stored snapshot decompresses to exactly the bytes the server sent.
    let stored = fs::read(b.join("collections/small-plain.snapshot.zst")).unwrap();
    assert_eq!(
        zstd::decode_all(&stored[..]).unwrap(),
        fixtures::SMALL_PLAIN
    );
    assert!(
        double.snapshots_left().is_empty(),
        "{:?}",
        double.snapshots_left()
    );
    let requests = double.requests();
    assert!(
        requests.contains(&"POST /collections/small-plain/snapshots?wait=true".to_string()),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("DELETE /collections/small-plain/snapshots/")),
        "{requests:?}"
    );

    crate::test::validates(&b);
}

#[test]
fn quiet_prints_nothing_and_verbose_shows_each_step() {
    let double = Double::start();
    Test::new()
        .env("QDRANT_URL", &double.url)
        .args("backup create {TMP}/b --quiet")
        .run();
    Test::new()
        .env("QDRANT_URL", &double.url)
        .args("backup create {TMP}/b --verbose")
        .stdout_with(|out| {
            assert!(
                out.starts_with("  collections/small-named.snapshot.zst: 120 points, "),
                "{out}"
            );
            assert!(out.contains("\nBackup created: "), "{out}");
        })
        .stderr_with(|err| {
            assert!(
                err.contains("  creating a snapshot of `small-named` on http://127.0.0.1:"),
                "{err}"
            );
            assert!(err.contains("  verifying the new backup\n"), "{err}");
        })
        .run();
}

#[test]
fn a_partial_backup_holds_only_the_chosen_collections() {
    let double = Double::start();
    let (_, tmp) = Test::new()
        .env("QDRANT_URL", &double.url)
        .env("WQM_BACKUP__COMPRESSION", "false")
        .args("backup create {TMP}/p --collections small-plain --json")
        .stdout_json(|v| {
            assert_eq!(v["partial_backup"], true);
            assert_eq!(
                v["selected_collections"],
                serde_json::json!(["small-plain"])
            );
            assert_eq!(v["collections"], serde_json::json!({"small-plain": 200}));
            assert_eq!(v["files"][0]["path"], "collections/small-plain.snapshot");
            assert_eq!(v["files"][0]["size"], fixtures::SMALL_PLAIN.len());
            assert_eq!(v["compression"], "none");
        })
        .run();
    let m = manifest(&tmp.path().join("p"));
    assert!(m.partial_backup);
    assert_eq!(m.collection_names(), ["small-plain"]);
    assert_eq!(
        fs::read(tmp.path().join("p/collections/small-plain.snapshot")).unwrap(),
        fixtures::SMALL_PLAIN
    );
    assert!(!double
        .requests()
        .iter()
        .any(|r| r.contains("small-named/snapshots")));
}

#[test]
fn unknown_collections_fail_before_anything_is_written() {
    let double = Double::start();
    let (_, tmp) = Test::new()
        .env("QDRANT_URL", &double.url)
        .args("backup create {TMP}/b --collections small-plain,nope,gone")
        .status(2)
        .stderr("wqm: error: Collections not found: nope, gone\nhint: the server has: small-named, small-plain\n")
        .run();
    nothing_written(tmp.path(), "b");
    assert_eq!(creates(&double), 0);
}

#[test]
fn an_existing_target_fails_before_any_work_and_force_replaces_it() {
    let double = Double::start();
    let t = Test::new();
    fixtures::backup(
        &t.join("b"),
        &fixtures::Spec {
            description: Some("old".into()),
            ..fixtures::Spec::default()
        },
    );
    let (_, tmp) = t
        .env("QDRANT_URL", &double.url)
        .args("backup create {TMP}/b")
        .status(1)
        .stderr("wqm: error: Backup directory already exists: {TMP}/b\nhint: Use --force to overwrite (the old backup is kept until the new one is complete), or choose another path\n")
        .run();
    assert!(double.requests().is_empty(), "{:?}", double.requests());
    assert_eq!(
        manifest(&tmp.path().join("b")).description.as_deref(),
        Some("old")
    );

    let t = Test::new();
    fixtures::backup(
        &t.join("b"),
        &fixtures::Spec {
            description: Some("old".into()),
            ..fixtures::Spec::default()
        },
    );
    let (_, tmp) = t
        .env("QDRANT_URL", &double.url)
        .args("backup create {TMP}/b --force --json -d new")
        .stdout_json(|v| assert_eq!(v["collections"]["small-named"], 120))
        .run();
    assert_eq!(
        manifest(&tmp.path().join("b")).description.as_deref(),
        Some("new")
    );
    nothing_written(tmp.path(), ".b.wqm-replaced");
}

#[test]
fn force_never_replaces_a_directory_that_is_not_a_backup() {
    let double = Double::start();
    let t = Test::new();
    fs::create_dir_all(t.join("docs/mine")).unwrap();
    let (_, tmp) = t
        .env("QDRANT_URL", &double.url)
        .args("backup create {TMP}/docs --force")
        .status(1)
        .stderr("wqm: error: `{TMP}/docs` exists and is not a wqm backup; refusing to replace it\nhint: choose a new path, or a directory that holds a backup\n")
        .run();
    assert!(tmp.path().join("docs/mine").is_dir());
    assert!(double.snapshots_left().is_empty());
}

/// Runs a create against a double with `faults`; returns the double and the tempdir.
fn with_faults(
    faults: Faults,
    extra_env: &[(&str, &str)],
    status: i32,
    stderr: impl Fn(&str) + 'static,
) -> (Double, tempfile::TempDir) {
    let double = Double::start();
    double.state().faults = faults;
    let mut t = Test::new().env("QDRANT_URL", &double.url);
    for (k, v) in extra_env {
        t = t.env(k, v);
    }
    let (_, tmp) = t
        .args("backup create {TMP}/b --json")
        .status(status)
        .stdout_with(|_| {})
        .stderr_with(stderr)
        .run();
    (double, tmp)
}

#[test]
fn a_connection_that_dies_mid_stream_is_resumed_with_range() {
    for fault in [
        DownloadFault::Die { after: 50_000 },
        DownloadFault::Truncate { after: 70_000 },
    ] {
        let (double, tmp) = with_faults(
            Faults {
                download: Some((fault, 2)),
                ..Faults::default()
            },
            &[],
            0,
            |err| assert_eq!(err, ""),
        );
        let requests = double.requests();
        let resumed: Vec<_> = requests.iter().filter(|r| r.contains("[bytes=")).collect();
        assert_eq!(resumed.len(), 2, "{requests:?}");
        assert!(
            resumed[0].ends_with(&format!(
                "[bytes={}-]",
                match fault {
                    DownloadFault::Die { after }
                    | DownloadFault::Truncate { after }
                    | DownloadFault::Stall { after } => after,
                }
            )),
            "{resumed:?}"
        );
        Test::new()
            .args(&format!(
                "backup validate {} --check-files",
                tmp.path().join("b").display()
            ))
            .stdout_with(|o| assert!(o.starts_with("Backup validation successful")))
            .run();
        assert!(double.snapshots_left().is_empty());
    }
}

#[test]
fn a_server_that_ignores_range_is_handled() {
    let (double, tmp) = with_faults(
        Faults {
            download: Some((DownloadFault::Die { after: 30_000 }, 1)),
            ignore_range: true,
            ..Faults::default()
        },
        &[],
        0,
        |err| assert_eq!(err, ""),
    );
    let stored = fs::read(tmp.path().join("b/collections/small-named.snapshot.zst")).unwrap();
    assert_eq!(
        zstd::decode_all(&stored[..]).unwrap(),
        fixtures::SMALL_NAMED
    );
    assert!(double.snapshots_left().is_empty());
}

#[test]
fn a_stalled_download_times_out_and_resumes() {
    let started = Instant::now();
    let (double, _tmp) = with_faults(
        Faults {
            download: Some((DownloadFault::Stall { after: 10_000 }, 1)),
            ..Faults::default()
        },
        &[("WQM_BACKUP__TRANSFER__READ_TIMEOUT", "1")],
        0,
        |err| assert_eq!(err, ""),
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(double
        .requests()
        .iter()
        .any(|r| r.ends_with("[bytes=10000-]")));
}

#[test]
fn a_qdrant_restart_mid_download_is_waited_for_and_the_download_resumed() {
    let started = Instant::now();
    let (double, tmp) = with_faults(
        Faults {
            download: Some((DownloadFault::Die { after: 50_000 }, 1)),
            // Longer than the whole retry budget of earlier versions (~1.5 s).
            outage: Some(Duration::from_secs(4)),
            ..Faults::default()
        },
        &[],
        0,
        |err| assert_eq!(err, ""),
    );
    assert!(started.elapsed() >= Duration::from_secs(4));
    let requests = double.requests();
    assert!(
        requests.iter().any(|r| r.ends_with("[bytes=50000-]")),
        "{requests:?}"
    );
    crate::test::validates(&tmp.path().join("b"));
    assert!(double.snapshots_left().is_empty());
}

#[test]
fn a_download_that_keeps_failing_gives_up_cleanly() {
    let started = Instant::now();
    let (double, tmp) = with_faults(
        Faults {
            // No byte arrives: every attempt counts.
            download: Some((DownloadFault::Die { after: 0 }, 100)),
            ..Faults::default()
        },
        &[
            ("WQM_BACKUP__TRANSFER__RETRIES", "2"),
            ("WQM_BACKUP__TRANSFER__RETRY_TIMEOUT", "2"),
        ],
        1,
        |err| {
            assert!(
                err.starts_with("wqm: error: the download of `small-named-409846322439763-"),
                "{err}"
            );
            assert!(err.contains(" attempts: the connection broke: "), "{err}");
            assert!(err.contains("\nhint: check the network and Qdrant's logs, then run the command again; nothing partial was kept on disk\n"), "{err}");
        },
    );
    // At least `retry_timeout` passed, with backoff (not 100 attempts at once).
    assert!(started.elapsed() >= Duration::from_secs(2));
    let attempts = double
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET /collections/small-named/snapshots/"))
        .count();
    assert!((3..10).contains(&attempts), "{attempts}");
    nothing_written(tmp.path(), "b");
    assert!(
        double.snapshots_left().is_empty(),
        "{:?}",
        double.snapshots_left()
    );
}

#[test]
fn a_failing_snapshot_creation_is_reported_with_the_servers_message() {
    let (double, tmp) = with_faults(
        Faults {
            create_error: Some((
                500,
                "Service internal error: No space left on device (os error 28)".into(),
            )),
            ..Faults::default()
        },
        &[],
        1,
        |err| {
            assert_eq!(
                err,
                "wqm: error: Qdrant failed (500): Service internal error: No space left on device (os error 28)\n\
                 hint: see Qdrant's log; free disk space on the server if it is full\n"
            )
        },
    );
    nothing_written(tmp.path(), "b");
    assert!(double.snapshots_left().is_empty());
}

#[test]
fn a_wrong_checksum_from_the_server_fails_the_backup() {
    let (double, tmp) = with_faults(
        Faults {
            wrong_checksum: true,
            ..Faults::default()
        },
        &[],
        1,
        |err| {
            assert!(
                err.starts_with("wqm: error: the downloaded snapshot `small-named-"),
                "{err}"
            );
            assert!(err.contains("does not match Qdrant's checksum (expected sha256 0000000000000000000000000000000000000000000000000000000000000000, got "), "{err}");
        },
    );
    nothing_written(tmp.path(), "b");
    assert!(double.snapshots_left().is_empty());
}

#[test]
fn a_snapshot_that_cannot_be_deleted_is_reported_with_the_command_that_deletes_it() {
    let (double, tmp) = with_faults(
        Faults {
            delete_error: true,
            ..Faults::default()
        },
        &[],
        7,
        |err| {
            let lines: Vec<&str> = err.lines().collect();
            assert_eq!(lines.len(), 2, "{err}");
            assert!(
                lines[0].starts_with("wqm: action needed: could not delete snapshot `small-named-"),
                "{err}"
            );
            assert!(
                lines[0].contains("delete it with: curl -X DELETE 'http://127.0.0.1:"),
                "{err}"
            );
        },
    );
    assert!(tmp.path().join("b/metadata/manifest.json").is_file());
    assert_eq!(double.snapshots_left().len(), 2);
}

#[test]
fn quiet_still_reports_a_leftover_snapshot_on_stderr_and_exits_7() {
    let double = Double::start();
    double.state().faults.delete_error = true;
    let (_, tmp) = Test::new()
        .env("QDRANT_URL", &double.url)
        .args("backup create {TMP}/b --quiet")
        .status(7)
        .stderr_with(|err| {
            assert_eq!(err.lines().count(), 2, "{err}");
            assert!(
                err.lines()
                    .all(|l| l.starts_with("wqm: action needed: could not delete snapshot `")),
                "{err}"
            );
        })
        .run();
    // The backup itself is complete.
    Test::new()
        .args(&format!(
            "backup validate {} --check-files",
            tmp.path().join("b").display()
        ))
        .stdout_with(|o| assert!(o.starts_with("Backup validation successful"), "{o}"))
        .run();
}

#[test]
fn api_key_problems_are_explained() {
    let start = |key: Option<&str>| {
        let double = Double::start();
        double.state().api_key = Some("secret".into());
        double.state().read_only_key = Some("reader".into());
        let mut t = Test::new().env("QDRANT_URL", &double.url);
        if let Some(key) = key {
            t = t.env("QDRANT_API_KEY", key);
        }
        (double, t.args("backup create {TMP}/b"))
    };
    let hint =
        "hint: set QDRANT_API_KEY (or `qdrant.api_key`) to an API key of this Qdrant server\n";
    let (_d, t) = start(None);
    let (_, tmp) = t
        .status(1)
        .stderr_with(move |err| {
            assert!(err.starts_with("wqm: error: Qdrant at http://127.0.0.1:"), "{err}");
            assert!(err.ends_with(&format!(" rejected the request (401): Must provide an API key or an Authorization bearer token\n{hint}")), "{err}");
        })
        .run();
    nothing_written(tmp.path(), "b");
    let (_d, t) = start(Some("wrong"));
    t.status(1)
        .stderr_with(move |err| {
            assert!(
                err.ends_with(&format!(
                    " rejected the request (401): Invalid API key or JWT\n{hint}"
                )),
                "{err}"
            )
        })
        .run();
    let (d, t) = start(Some("reader"));
    t.status(1)
        .stderr("wqm: error: Qdrant refused the request (403 Forbidden): Forbidden: Global manage access is required\nhint: the API key lacks rights: creating and deleting snapshots needs write access, restoring needs a manage (full) key; a read-only key is not enough\n")
        .run();
    assert!(d.snapshots_left().is_empty());
    let (d, t) = start(Some("secret"));
    let (_, tmp) = t
        .stdout_with(|o| assert!(o.contains("Backup created"), "{o}"))
        .run();
    assert!(d.snapshots_left().is_empty());
    let text = fs::read_to_string(tmp.path().join("b/metadata/manifest.json")).unwrap();
    assert!(
        !text.contains("secret"),
        "the manifest must never hold the API key"
    );
}

#[test]
fn an_unreachable_qdrant_is_explained() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let started = Instant::now();
    let (_, tmp) = Test::new()
        .env("QDRANT_URL", &format!("http://127.0.0.1:{port}"))
        .args("backup create {TMP}/b")
        .status(1)
        .stderr_with(move |err| {
            assert!(err.starts_with(&format!("wqm: error: Failed to connect to Qdrant at http://127.0.0.1:{port}: ")), "{err}");
            assert!(err.ends_with("\nhint: start Qdrant, or point wqm at it with QDRANT_URL (or --qdrant-url, or `qdrant.url` in the config)\n"), "{err}");
        })
        .run();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "it says so within seconds, not after retries: {:?}",
        started.elapsed()
    );
    nothing_written(tmp.path(), "b");
}

#[test]
fn a_cluster_whose_nodes_cannot_be_found_stops_and_says_how_to_name_them() {
    // The double says it is a cluster whose peers answer at no REST URL wqm can guess.
    let (double, tmp) = with_faults(
        Faults {
            cluster: true,
            ..Faults::default()
        },
        &[],
        1,
        |err| {
            assert_eq!(
            err,
            "wqm: error: cannot reach every node of the Qdrant cluster: peer 1 (http://127.0.0.1:16336/), peer 2 (http://127.0.0.1:16337/)\n\
             hint: list the REST URL of every node in `qdrant.nodes` (or QDRANT_NODES=http://node1:6333,http://node2:6333,…)\n"
        )
        },
    );
    nothing_written(tmp.path(), "b");
    assert_eq!(creates(&double), 0);
}

#[test]
fn disabled_backups_refuse_naming_the_key() {
    let double = Double::start();
    Test::new()
        .env("QDRANT_URL", &double.url)
        .env("WQM_BACKUP__ENABLED", "false")
        .args("backup create {TMP}/b")
        .status(2)
        .stderr("wqm: error: Backups are disabled: `backup.enabled` is false\nhint: set `backup.enabled: true` in the config (or WQM_BACKUP__ENABLED=true)\n")
        .run();
    assert!(double.requests().is_empty());
}

#[test]
fn path_defaults_to_a_dated_directory_in_the_default_backup_directory() {
    let double = Double::start();
    let (_, tmp) = Test::new()
        .env("QDRANT_URL", &double.url)
        .env("WQM_BACKUP__DEFAULT_BACKUP_DIRECTORY", "{TMP}/backups")
        .args("backup create --json")
        .stdout_json(|v| {
            let path = v["path"].as_str().unwrap();
            let name = Path::new(path).file_name().unwrap().to_str().unwrap();
            assert!(
                name.starts_with("backup-") && name.len() == "backup-YYYYMMDD-HHMMSS".len(),
                "{name}"
            );
        })
        .run();
    assert_eq!(
        fs::read_dir(tmp.path().join("backups"))
            .unwrap()
            .filter(|e| !e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.'))
            .count(),
        1
    );
    Test::new()
        .env("QDRANT_URL", &double.url)
        .args("backup create")
        .status(2)
        .stderr("wqm: error: PATH is required: `backup.default_backup_directory` is not set\nhint: pass a PATH, or set `backup.default_backup_directory` in the config\n")
        .run();
}

#[test]
fn databases_and_config_are_backed_up() {
    let double = Double::start();
    let t = Test::new();
    let data = t.join("data");
    fs::create_dir_all(&data).unwrap();
    fixtures::state_db(&data.join("state.db"));
    let search = rusqlite::Connection::open(data.join("search.db")).unwrap();
    search.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE search_schema_version(version INTEGER); INSERT INTO search_schema_version VALUES (8);").unwrap();
    drop(search);
    // A live writer with uncheckpointed changes in the WAL, as the daemon would leave them.
    let live = rusqlite::Connection::open(data.join("state.db")).unwrap();
    live.execute_batch("PRAGMA wal_autocheckpoint=0; INSERT INTO operational_state (key, component, project_id, value) VALUES ('backup-test', 'cli', '', 'in-wal');").unwrap();
    let config = "# comment kept byte for byte\nqdrant:\n  url: http://ignored:6333\nbackup:\n  compression: true\n";
    fs::write(t.join("config.yaml"), config).unwrap();
    let (_, tmp) = t
        .env("QDRANT_URL", &double.url)
        .env("WQM_DATA_DIR", "{TMP}/data")
        .args("--config {TMP}/config.yaml backup create {TMP}/b")
        .stdout_with(|out| assert!(out.starts_with("Backup created: "), "{out}"))
        .run();
    let b = tmp.path().join("b");
    let m = manifest(&b);
    let names: Vec<_> = m
        .databases
        .iter()
        .map(|d| (d.name.as_str(), d.file.as_str(), d.schema_version))
        .collect();
    assert_eq!(
        names,
        [
            ("state.db", "sqlite/state.db.zst", Some(49)),
            ("search.db", "sqlite/search.db.zst", Some(8))
        ]
    );
    assert_eq!(
        fs::read_to_string(b.join("config/config.yaml")).unwrap(),
        config
    );
    assert!(m.notes.is_empty(), "{:?}", m.notes);
    // The copy holds the row that was still in the WAL.
    let copy = tmp.path().join("copy.db");
    fs::write(
        &copy,
        zstd::decode_all(&fs::read(b.join("sqlite/state.db.zst")).unwrap()[..]).unwrap(),
    )
    .unwrap();
    let conn = rusqlite::Connection::open(&copy).unwrap();
    let value: String = conn
        .query_row(
            "SELECT value FROM operational_state WHERE key = 'backup-test'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(value, "in-wal");
    drop(live);
    Test::new()
        .args(&format!("backup validate {} --check-files", b.display()))
        .stdout_with(|o| assert!(o.starts_with("Backup validation successful"), "{o}"))
        .run();
}

#[test]
fn another_run_writing_the_same_target_makes_create_fail_fast() {
    let double = Double::start();
    let t = Test::new();
    let held = wqm::store::Staging::begin(&t.join("b"), false).unwrap();
    t.env("QDRANT_URL", &double.url)
        .args("backup create {TMP}/b")
        .status(1)
        .stderr("wqm: error: another wqm is writing `{TMP}/b` (its staging directory `{TMP}/.b.wqm-staging` is locked)\nhint: wait for the other run to finish; runs into different targets can go at the same time\n")
        .run();
    drop(held);
    assert!(double.snapshots_left().is_empty());
}

/// Sends SIGINT to a running `wqm backup create` at the moment `when` says, and checks that it
/// exits 130 leaving no backup and no snapshot on the server.
fn interrupt(faults: Faults, env: &[(&str, &str)], when: impl Fn(&Double) -> bool) {
    let double = Double::start();
    double.state().faults = faults;
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("b");
    let mut command =
        crate::test::wqm_command(tmp.path(), &["backup", "create", target.to_str().unwrap()]);
    command.env("QDRANT_URL", &double.url);
    command.envs(env.iter().copied());
    let output = crate::test::interrupted(command, || when(&double));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.starts_with("wqm: interrupted; cleaning up (press Ctrl-C again to quit at once)\nwqm: error: interrupted\n"), "{stderr}");
    nothing_written(tmp.path(), "b");
    assert!(
        double.snapshots_left().is_empty(),
        "{:?}",
        double.snapshots_left()
    );
}

#[test]
fn ctrl_c_while_qdrant_makes_the_snapshot_waits_for_it_and_deletes_it() {
    interrupt(
        Faults {
            create_delay: Some(Duration::from_millis(1500)),
            ..Faults::default()
        },
        &[],
        |d| {
            d.requests()
                .iter()
                .any(|r| r.starts_with("POST /collections/small-named/snapshots"))
        },
    );
}

#[test]
fn ctrl_c_during_a_download_leaves_nothing() {
    interrupt(
        Faults {
            download: Some((DownloadFault::Stall { after: 20_000 }, 1)),
            ..Faults::default()
        },
        &[("WQM_BACKUP__TRANSFER__READ_TIMEOUT", "60")],
        |d| {
            d.requests()
                .iter()
                .any(|r| r.starts_with("GET /collections/small-named/snapshots/"))
        },
    );
}

#[test]
#[cfg_attr(
    not(mount_namespaces),
    ignore = "needs WQM_TEST_UNSHARE: `unshare -rm` to mount a small filesystem (`.ci/run` sets it)"
)]
fn a_full_disk_fails_cleanly_and_says_so() {
    // A 64 KiB tmpfs in a private mount namespace: an uncompressed 206 KB snapshot cannot fit.
    let double = Double::start();
    let tmp = tempfile::tempdir().unwrap();
    let small = tmp.path().join("small");
    let output = create_on_a_small_disk(tmp.path(), &small, "64k", |command| {
        command
            .env("QDRANT_URL", &double.url)
            .env("WQM_BACKUP__COMPRESSION", "false");
    });
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("wqm: error: cannot write `"), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(stderr.ends_with("hint: the disk is full: free space or choose another target; nothing partial was left behind\n"), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "",
        "nothing is left, not even a lock file"
    );
    assert!(double.snapshots_left().is_empty());
}

/// Aliases are recorded whatever `include_collection_stats` says, as config.example.yaml states.
#[test]
fn aliases_are_recorded_even_without_collection_stats() {
    let example =
        fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml")).unwrap();
    assert!(example.contains("# Record per-collection vector configuration and payload schema in the manifest (a\n    # collection's aliases are always recorded: restore re-creates them).\n    include_collection_stats: true"));
    let double = Double::start();
    let (_, tmp) = Test::new()
        .env("QDRANT_URL", &double.url)
        .env("WQM_BACKUP__METADATA__INCLUDE_COLLECTION_STATS", "false")
        .args("backup create {TMP}/b --quiet")
        .run();
    let m = manifest(&tmp.path().join("b"));
    let details = &m.collection_details["small-named"];
    assert!(details.params.is_none() && details.payload_schema.is_none());
    assert_eq!(details.aliases, ["notes"]);
}

#[test]
fn an_api_key_that_cannot_be_sent_is_a_usage_error_about_the_key() {
    Test::new()
        .env("QDRANT_URL", "http://127.0.0.1:1")
        .env("QDRANT_API_KEY", "line\nbreak")
        .args("backup create {TMP}/b")
        .status(2)
        .stderr("wqm: error: the API key cannot be sent: it is not a valid HTTP header value\nhint: check QDRANT_API_KEY (or `qdrant.api_key`): a stray newline or a character outside visible ASCII is the usual cause\n")
        .run();
}

/// Where `wanted` first appears among the double's requests.
fn position(requests: &[String], wanted: impl Fn(&str) -> bool) -> usize {
    requests
        .iter()
        .position(|r| wanted(r))
        .unwrap_or_else(|| panic!("no such request: {requests:?}"))
}

#[test]
fn the_next_snapshot_is_made_while_the_previous_one_downloads_and_the_order_stays() {
    // `small-named`'s download is slow: `small-plain` is made, and downloaded, meanwhile.
    for (parallel, pipelined) in [("2", true), ("1", false)] {
        let double = Double::start();
        double.state().faults.download_delay_for =
            Some(("small-named".into(), Duration::from_millis(600)));
        let (_, tmp) = Test::new()
            .env("QDRANT_URL", &double.url)
            .env("WQM_BACKUP__TRANSFER__PARALLEL", parallel)
            .args("backup create {TMP}/b --json")
            .stdout_json(|doc| {
                let phases: Vec<&str> = doc["phases"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["phase"].as_str().unwrap())
                    .collect();
                assert!(phases.contains(&"snapshots"), "{doc}");
                let slow = &doc["files"][0];
                assert_eq!(slow["path"], "collections/small-named.snapshot.zst");
                assert!(
                    slow["seconds"]["downloading"].as_f64().unwrap() >= 0.6,
                    "{doc}"
                );
            })
            .run();
        let requests = double.requests();
        let next_made = position(&requests, |r| {
            r == "POST /collections/small-plain/snapshots?wait=true"
        });
        let first_deleted = position(&requests, |r| {
            r.starts_with("DELETE /collections/small-named/snapshots/")
        });
        assert_eq!(next_made < first_deleted, pipelined, "{requests:?}");
        // The manifest and the summary keep the collections' order, whichever finished first.
        let m = manifest(&tmp.path().join("b"));
        let paths: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "collections/small-named.snapshot.zst",
                "collections/small-plain.snapshot.zst"
            ]
        );
        assert!(double.snapshots_left().is_empty());
        crate::test::validates(&tmp.path().join("b"));
    }
}

#[test]
fn a_failure_in_one_pipelined_collection_stops_the_others_and_deletes_every_snapshot() {
    // `small-named` is downloading (slowly) when `small-plain`'s snapshot fails.
    let started = Instant::now();
    let (double, tmp) = with_faults(
        Faults {
            download_delay_for: Some(("small-named".into(), Duration::from_secs(5))),
            create_error_for: Some((
                "small-plain".into(),
                500,
                "Service internal error: No space left on device (os error 28)".into(),
            )),
            ..Faults::default()
        },
        &[],
        1,
        |err| {
            assert!(
                err.starts_with("wqm: error: Qdrant failed (500): Service internal error: No space left on device (os error 28)\n"),
                "the failure reported is the one that happened, not the stop it caused: {err}"
            )
        },
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the slow download was stopped, not waited for"
    );
    nothing_written(tmp.path(), "b");
    let requests = double.requests();
    position(&requests, |r| {
        r.starts_with("DELETE /collections/small-named/snapshots/")
    });
    assert!(
        double.snapshots_left().is_empty(),
        "{:?}",
        double.snapshots_left()
    );
}

#[test]
#[cfg_attr(
    not(mount_namespaces),
    ignore = "needs WQM_TEST_UNSHARE: `unshare -rm` to mount a small filesystem (`.ci/run` sets it)"
)]
fn a_database_that_cannot_be_copied_or_stored_says_which_where_and_what_to_do() {
    let double = Double::empty();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    fs::create_dir(&data).unwrap();
    let db = data.join("state.db");
    crate::fixtures::state_db(&db);
    // 600 KB that no compression shrinks, in a rollback-journal database (so the copy's peak
    // is its size, not twice that through a WAL).
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("PRAGMA journal_mode=DELETE; CREATE TABLE bulk(b BLOB); INSERT INTO bulk VALUES (randomblob(600000));")
        .unwrap();
    // Too small for the copy; room for the copy but not for storing it as well.
    let bytes = fs::metadata(&db).unwrap().len();
    for (size, step) in [(bytes / 2, "copy"), (bytes * 3 / 2, "store")] {
        let size = format!("{}k", size / 1024);
        let small = tmp.path().join(format!("small-{size}"));
        let output = create_on_a_small_disk(tmp.path(), &small, &size, |command| {
            command
                .env("QDRANT_URL", &double.url)
                .env("WQM_DATA_DIR", &data);
        });
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{step}: {stderr}");
        assert!(
            stderr.starts_with(&format!(
                "wqm: error: cannot {step} the database `{}` for the backup `{}/b`: ",
                db.display(),
                small.display()
            )),
            "{step}: {stderr}"
        );
        let hint = stderr.lines().last().unwrap();
        assert!(
            hint.starts_with(&format!(
                "hint: the disk of `{}` is full (",
                small.display()
            )) && hint.ends_with(" bytes free there now): free space there or write the backup to another disk, then run the command again; nothing partial was left behind"),
            "{step}: {stderr}"
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "",
            "{step}: nothing is left"
        );
    }
}

/// `wqm backup create SMALL/b`, with `SMALL` a tmpfs of `size` mounted in a private mount
/// namespace (`unshare -rm`); `ls -A SMALL` after it goes to stdout. `env` adds the variables.
fn create_on_a_small_disk(
    home: &Path,
    small: &Path,
    size: &str,
    env: impl FnOnce(&mut std::process::Command),
) -> std::process::Output {
    fs::create_dir(small).unwrap();
    // Prints what is left on the small disk but the directory lock's empty parts.
    let script = format!(
        "mount -t tmpfs -o size={size} tmpfs {small} && {wqm} backup create {small}/b; status=$?; find {small} -mindepth 1 -not -path {small}/.wqm-locks -not -path {small}/.wqm-backend -not -path {small}/.wqm-backend/tmp; exit $status",
        small = small.display(),
        wqm = env!("CARGO_BIN_EXE_wqm")
    );
    let mut command = std::process::Command::new("unshare");
    command
        .args(["-rm", "sh", "-c", &script])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", home);
    env(&mut command);
    command.output().unwrap()
}

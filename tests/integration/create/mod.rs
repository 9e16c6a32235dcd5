//! `wqm backup create` against the Qdrant test double: the happy paths here, the downloads and
//! their faults, and the refusals in the files below.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use wqm::format::manifest::Manifest;

use crate::fixtures;
use crate::qdrant_double::{Double, DownloadFault, Faults};
use crate::test::Test;

mod downloads;
mod refusals;

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

//! What a restore changes on this machine: the databases, the config, the daemon around it, the safety backup, the secrets.

use super::*;

#[test]
fn restores_collections_aliases_and_the_state_database() {
    let double = Double::start();
    let tmp = scene(&double, "");
    lose_everything(&double);
    let db = tmp.path().join("data/state.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "DELETE FROM qdrant_chunks; DELETE FROM indexed_content; DELETE FROM tracked_files;",
        )
        .unwrap();
    let (_, tmp) = wqm(tmp, &double, "backup restore {TMP}/b --force")
        .stdout_with(|out| {
            assert!(out.starts_with("Restore plan: "), "{out}");
            assert!(out.contains("    create    small-named (120 points, "), "{out}");
            assert!(out.contains("  Alias: notes → small-named (create)\n"), "{out}");
            assert!(out.contains("✓ collection `small-named` restored\n✓ collection `small-plain` restored\n"), "{out}");
            assert!(out.contains("✓ alias `notes` → `small-named`\n"), "{out}");
            assert!(out.contains("  ✓ collection `small-plain`: expected 200 points, not red, found 200 points, green\n"), "{out}");
            assert!(out.contains("  ✓ alias `notes`: expected → small-named, found → small-named\n"), "{out}");
            assert!(out.contains("Restore completed from "), "{out}");
        })
        .run();
    double.assert_holds_the_fixtures();
    assert!(
        double.snapshots_left().is_empty(),
        "uploaded files are deleted: {:?}",
        double.snapshots_left()
    );
    let sha = wqm::checksum::digest(fixtures::SMALL_NAMED, &[wqm::checksum::Algorithm::Sha256])
        .get(wqm::checksum::Algorithm::Sha256)
        .unwrap()
        .value;
    assert!(uploads(&double).contains(&format!("POST /collections/small-named/snapshots/upload?wait=true&priority=snapshot&checksum={sha}")), "{:?}", uploads(&double));
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM tracked_files"),
        7,
        "the state database is the backup's again"
    );
    assert!(!tmp.path().join("data/state.db-wal").exists());
    // The live database was saved first.
    let safety = safety_backups(tmp.path());
    assert_eq!(safety.len(), 1);
    let safety_path = tmp.path().join(&safety[0]);
    assert_eq!(
        count(
            &copy_out(&safety_path, "sqlite/state.db.zst", tmp.path()),
            "SELECT COUNT(*) FROM tracked_files"
        ),
        0
    );
    Test::new()
        .args(&format!(
            "backup validate {} --check-files",
            safety_path.display()
        ))
        .stdout_with(|o| assert!(o.starts_with("Backup validation successful"), "{o}"))
        .run();
}

#[test]
fn overwrite_saves_the_existing_collections_first() {
    let double = Double::start();
    let tmp = scene(&double, "");
    let (_, tmp) = wqm(tmp, &double, "backup restore {TMP}/b --force --overwrite")
        .stdout_with(|o| {
            assert!(o.contains("    overwrite small-named"), "{o}");
            assert!(o.contains("  Alias: notes → small-named (keep)\n"), "{o}");
            assert!(o.contains("✓ safety backup: "), "{o}");
        })
        .run();
    let safety = tmp.path().join(&safety_backups(tmp.path())[0]);
    let m = wqm::format::manifest::Manifest::load(&safety.join("metadata/manifest.json")).unwrap();
    assert_eq!(m.collection_names(), ["small-named", "small-plain"]);
    assert!(
        !m.partial_backup,
        "a safety backup restores the state database whole"
    );
    assert_eq!(
        m.description.as_deref(),
        Some(
            format!(
                "Safety backup before restoring {}",
                tmp.path().join("b").display()
            )
            .as_str()
        )
    );
}

#[test]
fn a_partial_backup_merges_only_the_rows_of_its_collections() {
    let double = Double::with_collections(
        &[
            ("projects", fixtures::SMALL_NAMED),
            ("libraries", fixtures::SMALL_PLAIN),
        ],
        &[],
    );
    let tmp = scene(&double, "--collections projects");
    let db = tmp.path().join("data/state.db");
    // Since the backup: projects lost a file, libraries gained a chunk.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "DELETE FROM qdrant_chunks WHERE file_id = 3; DELETE FROM tracked_files WHERE file_id = 3;
             UPDATE tracked_files SET chunk_count = 3 WHERE file_id = 5;
             INSERT INTO qdrant_chunks (file_id, point_id, chunk_index, content_hash, chunk_type, start_line, end_line, created_at) VALUES (5, 'new-point', 2, 'h', 'text_chunk', 8, 9, 't');",
        )
        .unwrap();
    double.state().collections.remove("projects");
    let (_, tmp) = wqm(tmp, &double, "backup restore {TMP}/b --force")
        .stdout_with(|o| {
            assert!(
                o.contains("Database state.db: merge the rows of the restored collections into "),
                "{o}"
            );
            assert!(o.contains("Restore completed"), "{o}");
        })
        .run();
    assert!(double.state().collections.contains_key("projects"));
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM tracked_files WHERE file_id = 3"),
        1,
        "the projects file is back"
    );
    assert_eq!(
        count(
            &db,
            "SELECT chunk_count FROM tracked_files WHERE file_id = 5"
        ),
        3,
        "libraries rows are the live ones"
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM qdrant_chunks WHERE point_id = 'new-point'"
        ),
        1
    );
    drop(tmp);
}

#[test]
fn the_daemon_is_stopped_and_started_around_the_restore() {
    let double = Double::start();
    let tmp = scene(&double, "");
    lose_everything(&double);
    fs::write(tmp.path().join("running"), "").unwrap();
    let port = PortDaemon::follow(tmp.path().join("running"), Duration::ZERO);
    let address = port.address.clone();
    let with_daemon = |t: Test| {
        t.env(
            "WQM_BACKUP__DAEMON__STATUS_COMMAND",
            "test -e {TMP}/running",
        )
        .env("WQM_BACKUP__DAEMON__ADDRESS", &address)
        .env("WQM_BACKUP__DAEMON__TIMEOUT", "2")
    };
    let (_, tmp) = with_daemon(wqm(tmp, &double, "backup restore {TMP}/b --force"))
        .status(1)
        .stdout_with(|o| {
            assert!(
                o.contains("  ✗ Cannot restore while daemon is running (127.0.0.1:"),
                "{o}"
            );
            assert!(o.contains(" accepts connections; `test -e "), "{o}");
        })
        .stderr_with(|e| {
            assert!(
                e.starts_with("wqm: error: Cannot restore while daemon is running (127.0.0.1:"),
                "{e}"
            );
            assert!(e.contains("hint: stop the daemon first"), "{e}");
        })
        .run();
    assert!(uploads(&double).is_empty());
    let (_, tmp) = with_daemon(wqm(tmp, &double, "backup restore {TMP}/b --force"))
        .env("WQM_BACKUP__DAEMON__STOP_COMMAND", "rm {TMP}/running")
        .env("WQM_BACKUP__DAEMON__START_COMMAND", "touch {TMP}/running")
        .stdout_with(|o| {
            assert!(o.contains("  Daemon: running (127.0.0.1:"), "{o}");
            assert!(
                o.contains("✓ daemon stopped\n") && o.contains("✓ daemon started\n"),
                "{o}"
            );
        })
        .run();
    assert!(tmp.path().join("running").exists());
    lose_everything(&double);
    drop(port);
    with_daemon(wqm(tmp, &double, "backup restore {TMP}/b --force"))
        .env("WQM_BACKUP__DAEMON__STOP_COMMAND", "rm {TMP}/running")
        .env("WQM_BACKUP__DAEMON__START_COMMAND", "touch {TMP}/running")
        .status(1)
        .stdout_with(|_| {})
        .stderr_with(|e| {
            assert!(e.starts_with("wqm: error: Daemon connection failed during restore: nothing accepts connections at "), "{e}");
            assert!(e.contains("hint: the restored data is in place; start the daemon with your `backup.daemon.start_command`, workspace-qdrant-mcp's own service command"), "{e}");
        })
        .run();
}

#[test]
fn with_config_replaces_the_config_file() {
    let double = Double::start();
    let t = Test::new();
    fs::write(
        t.join("config.yaml"),
        "backup:\n  compression: true\n# original\n",
    )
    .unwrap();
    let (_, tmp) = t
        .env("QDRANT_URL", &double.url)
        .env("WQM_CONFIG_PATH", "{TMP}/config.yaml")
        .args("backup create {TMP}/b")
        .stdout_with(|_| {})
        .run();
    fs::write(
        tmp.path().join("config.yaml"),
        "backup:\n  compression: false\n",
    )
    .unwrap();
    lose_everything(&double);
    let (_, tmp) = wqm(tmp, &double, "backup restore {TMP}/b --force --with-config")
        .env("WQM_CONFIG_PATH", "{TMP}/config.yaml")
        .stdout_with(|o| {
            assert!(
                o.contains("✓ config `") && o.contains("config.yaml` replaced"),
                "{o}"
            )
        })
        .run();
    assert_eq!(
        fs::read_to_string(tmp.path().join("config.yaml")).unwrap(),
        "backup:\n  compression: true\n# original\n"
    );
}

#[test]
fn the_safety_backup_holds_exactly_the_databases_the_plan_names() {
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(readme.contains(
        "the live databases it replaces or merges into (only those; the\n   plan names them)"
    ));
    // The backup holds state.db only; the live search.db is not touched, so it is not saved.
    let double = Double::start();
    let tmp = scene(&double, "");
    lose_everything(&double);
    other_db(&tmp.path().join("data/search.db"));
    let (_, tmp) = wqm(tmp, &double, "backup restore {TMP}/b --force")
        .stdout_with(|o| {
            assert!(o.contains(" (databases state.db)\n"), "{o}");
            assert!(o.contains("Restore completed"), "{o}");
        })
        .run();
    let safety = tmp.path().join(&safety_backups(tmp.path())[0]);
    assert_eq!(database_names(&safety), ["state.db"]);

    // The live state.db is gone, search.db will be replaced: the safety backup saves search.db.
    let double = Double::start();
    let t = Test::new();
    fs::create_dir_all(t.join("data")).unwrap();
    fixtures::state_db(&t.join("data/state.db"));
    other_db(&t.join("data/search.db"));
    let (_, tmp) = t
        .env("QDRANT_URL", &double.url)
        .env("WQM_DATA_DIR", "{TMP}/data")
        .args("backup create {TMP}/b")
        .stdout_with(|_| {})
        .run();
    lose_everything(&double);
    fs::remove_file(tmp.path().join("data/state.db")).unwrap();
    let (_, tmp) = wqm(tmp, &double, "backup restore {TMP}/b --force")
        .stdout_with(|o| {
            assert!(o.contains(" (databases search.db)\n"), "{o}");
            assert!(o.contains("Restore completed"), "{o}");
        })
        .run();
    let safety = tmp.path().join(&safety_backups(tmp.path())[0]);
    assert_eq!(database_names(&safety), ["search.db"]);
}

#[test]
fn secrets_stay_out_of_a_backup_and_restore_keeps_the_live_ones() {
    let double = Double::start();
    let t = Test::new();
    let port = double.url.rsplit(':').next().unwrap().to_string();
    let config = format!(
        "# the shared config\n# api_key: an-old-key-commented-out\nqdrant:\n  url: \"http://admin:hunter2@127.0.0.1:{port}\"  # with a password\n  api_key: s3cr3t-api-key\n  timeout: 30s\nembedding:\n  hf_token: hf-t0ken\nbackup:\n  metadata:\n    custom_metadata:\n      environment: production\n      webhook_password: hook-pw\n"
    );
    fs::write(t.join("config.yaml"), &config).unwrap();
    let secrets = [
        "hunter2",
        "s3cr3t",
        "hf-t0ken",
        "hook-pw",
        "an-old-key",
        "admin",
    ];
    let (_, tmp) = t
        .env("WQM_CONFIG_PATH", "{TMP}/config.yaml")
        .args("backup create {TMP}/b --json --verbose")
        .stdout_json(move |v| {
            let text = v.to_string();
            for secret in secrets {
                assert!(!text.contains(secret), "{secret} in {text}");
            }
        })
        .stderr_with(move |e| {
            assert!(
                e.contains("connecting to Qdrant at http://REDACTED-BY-WQM@127.0.0.1:"),
                "{e}"
            );
            for secret in secrets {
                assert!(!e.contains(secret), "{secret} in {e}");
            }
        })
        .run();
    let b = tmp.path().join("b");
    for (path, bytes) in all_bytes(&b) {
        let text = String::from_utf8_lossy(&bytes);
        for secret in secrets {
            assert!(!text.contains(secret), "{secret} in {}", path.display());
        }
    }
    // Only the secret values changed: comments and layout are kept.
    let copy = fs::read_to_string(b.join("config/config.yaml")).unwrap();
    assert_eq!(
        copy,
        config
            .replace("an-old-key-commented-out", "REDACTED-BY-WQM")
            .replace("admin:hunter2@", "REDACTED-BY-WQM@")
            .replace("s3cr3t-api-key", "REDACTED-BY-WQM")
            .replace("hf-t0ken", "REDACTED-BY-WQM")
            .replace("hook-pw", "REDACTED-BY-WQM")
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(b.join("metadata/manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["config_redacted"],
        serde_json::json!([
            {"key": "qdrant.url", "part": "userinfo"},
            {"key": "qdrant.api_key", "part": "value"},
            {"key": "embedding.hf_token", "part": "value"},
            {"key": "backup.metadata.custom_metadata.webhook_password", "part": "value"},
        ])
    );
    assert_eq!(
        manifest["custom_metadata"],
        serde_json::json!({"environment": "production", "webhook_password": "REDACTED-BY-WQM"})
    );

    // The live config has moved on (a new key, another password); restoring the backup's config
    // keeps the live secrets and says so; the hf_token the live file lacks is left empty.
    let live = format!(
        "qdrant:\n  url: \"http://admin:n3w-pw@127.0.0.1:{port}\"\n  api_key: live-api-key\n"
    );
    fs::write(tmp.path().join("config.yaml"), &live).unwrap();
    lose_everything(&double);
    let (_, tmp) = Test::in_dir(tmp)
        .env("WQM_CONFIG_PATH", "{TMP}/config.yaml")
        .env("WQM_DATA_DIR", "{TMP}/data")
        .args("backup restore {TMP}/b --force --with-config")
        .stdout_with(|o| {
            assert!(o.contains(", keeping its values of the secrets the backup left out: the URL userinfo of `qdrant.url`, `qdrant.api_key`\n"), "{o}");
            assert!(o.contains("  ⚠ the backup left out the secret `embedding.hf_token` and the live config has none: it is written empty; set it in `"), "{o}");
            assert!(o.contains("✓ config `"), "{o}");
            assert!(!o.contains("n3w-pw") && !o.contains("live-api-key"), "{o}");
        })
        .run();
    assert_eq!(
        fs::read_to_string(tmp.path().join("config.yaml")).unwrap(),
        config
            .replace("an-old-key-commented-out", "REDACTED-BY-WQM")
            .replace("admin:hunter2@", "admin:n3w-pw@")
            .replace("s3cr3t-api-key", "\"live-api-key\"")
            .replace("hf-t0ken", "null")
            .replace("hook-pw", "null")
    );
}

/// A running process named `memexd` (a copy of `sleep`); killed and reaped when dropped.
struct FakeMemexd {
    child: std::process::Child,
    // Holds the link to the binary.
    _dir: TempDir,
}

impl FakeMemexd {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("memexd");
        // A link, not a copy (a copy open for writing while another test forks fails to exec
        // with "Text file busy"); the process is named after the path it was started by.
        std::os::unix::fs::symlink("/bin/sleep", &bin).unwrap();
        let child = std::process::Command::new(&bin).arg("120").spawn().unwrap();
        FakeMemexd { child, _dir: dir }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for FakeMemexd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_running_memexd_or_its_open_port_is_seen_and_blocks_the_restore() {
    let double = Double::start();
    let memexd = FakeMemexd::start();
    let pid = memexd.pid();
    // `create` records that the daemon ran (the copies are consistent either way).
    let t = Test::new();
    fs::create_dir_all(t.join("data")).unwrap();
    fixtures::state_db(&t.join("data/state.db"));
    let (_, tmp) = t
        .env("QDRANT_URL", &double.url)
        .env("WQM_DATA_DIR", "{TMP}/data")
        .env("WQM_BACKUP__DAEMON__PROCESS_NAME", "memexd")
        .args("backup create {TMP}/b")
        .stdout_with(|_| {})
        .run();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(tmp.path().join("b/metadata/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["daemon_running"], true);
    lose_everything(&double);
    let db_before = fs::read(tmp.path().join("data/state.db")).unwrap();

    // The process alone (no lock, no status command) blocks the restore, naming its pid.
    let (_, tmp) = wqm(tmp, &double, "backup restore {TMP}/b --force")
        .env("WQM_BACKUP__DAEMON__PROCESS_NAME", "memexd")
        .status(1)
        .stdout_with(move |o| {
            assert!(o.contains(&format!("  Daemon: running (process `memexd` runs as pid {pid}) and no `backup.daemon.stop_command` to stop it\n")), "{o}");
        })
        .stderr_with(move |e| {
            assert!(e.starts_with(&format!("wqm: error: Cannot restore while daemon is running (process `memexd` runs as pid {pid})\nhint: stop the daemon first")), "{e}");
        })
        .run();
    drop(memexd);

    // So does its gRPC port answering.
    fs::write(tmp.path().join("up"), "").unwrap();
    let port = PortDaemon::follow(tmp.path().join("up"), Duration::from_millis(800));
    let address = port.address.clone();
    let (_, tmp) = wqm(tmp, &double, "backup restore {TMP}/b --force --dry-run")
        .env("WQM_BACKUP__DAEMON__ADDRESS", &address)
        .status(1)
        .stdout_with({
            let address = address.clone();
            move |o| assert!(o.contains(&format!("  Daemon: running ({address} accepts connections) and no `backup.daemon.stop_command`")), "{o}")
        })
        .stderr_with(|e| assert!(e.starts_with("wqm: error: Cannot restore while daemon is running ("), "{e}"))
        .run();
    assert!(uploads(&double).is_empty());
    assert_eq!(
        fs::read(tmp.path().join("data/state.db")).unwrap(),
        db_before
    );

    // A stop command that leaves the port open: wqm waits (bounded) and refuses to go on.
    let (_, tmp) = wqm(tmp, &double, "backup restore {TMP}/b --force")
        .env("WQM_BACKUP__DAEMON__ADDRESS", &address)
        .env("WQM_BACKUP__DAEMON__STOP_COMMAND", "exit 0")
        .env("WQM_BACKUP__DAEMON__TIMEOUT", "1")
        .status(1)
        .stdout_with(|_| {})
        .stderr_with(|e| {
            assert!(
                e.starts_with("wqm: error: the daemon still runs 1 s after `exit 0`"),
                "{e}"
            )
        })
        .run();
    assert!(uploads(&double).is_empty());
    assert_eq!(
        fs::read(tmp.path().join("data/state.db")).unwrap(),
        db_before
    );

    // A stop command after which the port closes only a moment later, and a start command after
    // which it opens again: the restore waits for both and completes.
    let (_, tmp) = wqm(tmp, &double, "backup restore {TMP}/b --force")
        .env("WQM_BACKUP__DAEMON__ADDRESS", &address)
        .env("WQM_BACKUP__DAEMON__STOP_COMMAND", "rm {TMP}/up")
        .env("WQM_BACKUP__DAEMON__START_COMMAND", "touch {TMP}/up")
        .env("WQM_BACKUP__DAEMON__TIMEOUT", "10")
        .stdout_with(|o| {
            assert!(
                o.contains("✓ daemon stopped\n")
                    && o.contains("✓ daemon started\n")
                    && o.contains("Restore completed"),
                "{o}"
            )
        })
        .run();
    assert!(tmp.path().join("up").exists());
    assert_eq!(uploads(&double).len(), 2);
}

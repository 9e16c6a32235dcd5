//! What create refuses before or while it works (names, targets, keys, servers, disks), and how it says so.

use super::*;

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

/// A backup's name must be one S3 can hold too (so `wqm backup copy` can take any local
/// repository offsite): refused before Qdrant is asked anything, nothing written.
#[test]
fn a_name_no_repository_can_hold_is_refused_before_any_work() {
    let double = Double::start();
    let (_, tmp) = Test::new()
        .env("QDRANT_URL", &double.url)
        .args("backup create {TMP}/by\\hand")
        .status(2)
        .stderr("wqm: error: `{TMP}/by\\hand` cannot be a backup's name: it contains a backslash\nhint: name it without backslashes or control characters: a repository's names must hold on S3 too (`wqm backup copy`); nothing was written\n")
        .run();
    nothing_written(tmp.path(), "hand");
    for part in WQM_PARTS {
        assert!(!tmp.path().join(part).exists(), "{part} made");
    }
    assert_eq!(
        double.requests(),
        Vec::<String>::new(),
        "Qdrant never asked"
    );
}

/// `--force` replaces a backup, never a link to one: the link and what it points to stay.
#[cfg(unix)]
#[test]
fn force_never_replaces_a_link() {
    let double = Double::start();
    let t = Test::new();
    fixtures::backup(&t.join("real"), &fixtures::Spec::default());
    std::os::unix::fs::symlink(t.join("real"), t.join("b")).unwrap();
    let (_, tmp) = t
        .env("QDRANT_URL", &double.url)
        .args("backup create {TMP}/b --force")
        .status(1)
        .stderr("wqm: error: `{TMP}/b` exists and is not a wqm backup; refusing to replace it\nhint: choose a new path, or a directory that holds a backup\n")
        .run();
    assert!(fs::symlink_metadata(tmp.path().join("b"))
        .unwrap()
        .is_symlink());
    manifest(&tmp.path().join("real"));
    assert_eq!(creates(&double), 0);
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

#[test]
#[cfg_attr(
    not(mount_namespaces),
    ignore = "needs WQM_TEST_UNSHARE: `unshare -rm` to mount a small filesystem (`.ci/run` sets it)"
)]
fn a_full_disk_under_an_incremental_night_leaves_no_pack_behind() {
    // A 16 KiB tmpfs: the store is made, the pack filling with the night's chunks cannot fit.
    let double = Double::start();
    let tmp = tempfile::tempdir().unwrap();
    let small = tmp.path().join("small");
    let output = create_on_a_small_disk(tmp.path(), &small, "16k", |command| {
        command
            .env("QDRANT_URL", &double.url)
            .env("WQM_BACKUP__INCREMENTAL", "true");
    });
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(stderr.ends_with("hint: the disk is full: free space or choose another target; nothing partial was left behind\n"), "{stderr}");
    // The store made for the night stays, empty: no pack, no index, no temporary file.
    let left = String::from_utf8_lossy(&output.stdout);
    let mut left: Vec<&str> = left.lines().collect();
    left.sort();
    let store = format!("{}/.wqm-chunks", small.display());
    let expected = [
        store.clone(),
        format!("{store}/store.json"),
        format!("{store}/tmp"),
    ];
    assert_eq!(left, expected, "{stderr}");
    assert!(double.snapshots_left().is_empty());
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

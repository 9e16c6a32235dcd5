//! A restore killed, terminated or failing at each step: what the next run finds and reports, and the printed way back, on the double and on the real server.

use super::*;

/// `wqm backup restore b --force` in `tmp` with `failpoints` set; waits for it to end.
fn restore_with(tmp: &Path, double: &Double, failpoints: &str) -> Output {
    let backup = tmp.join("b");
    run_with(
        tmp,
        &double.url,
        failpoints,
        &["backup", "restore", backup.to_str().unwrap(), "--force"],
    )
}

/// A backup of the double's collections and a live state DB in `data/`, then the server loses
/// everything, so a restore uploads both collections and replaces the database.
fn restore_scene(double: &Double) -> TempDir {
    let tmp = crate::restore::scene(double, "");
    crate::restore::lose_everything(double);
    tmp
}

#[test]
fn a_restore_killed_after_an_upload_leaves_no_copy_after_the_next_run_and_says_the_way_back() {
    let double = Double::start();
    let tmp = restore_scene(&double);
    let output = restore_with(tmp.path(), &double, "restore:uploaded=kill");
    assert!(
        killed(&output),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let left = double.snapshots_left();
    assert!(
        left.len() == 1 && left[0].contains("/wqm-restore-"),
        "{left:?}"
    );
    let work = tmp.path().join("data/.wqm-restore");
    assert!(work.join("journal.jsonl").is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&work).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
    let safety: Vec<String> = ls_a(tmp.path())
        .into_iter()
        .filter(|n| n.starts_with("safety-"))
        .collect();
    assert_eq!(safety.len(), 1, "the safety backup was complete");
    let way_back = format!(
        "  the way back: wqm backup restore {} --force --overwrite\n",
        tmp.path().join(&safety[0]).display()
    );
    let tmp = cleanup(tmp, &double, move |out| {
        assert!(
            out.contains("cleaned up after a dead run: `restore "),
            "{out}"
        );
        assert!(
            out.contains("  deleted snapshot `wqm-restore-small-named-"),
            "{out}"
        );
        assert!(out.contains(&way_back), "{out}");
    });
    assert!(double.snapshots_left().is_empty());
    assert!(!tmp.path().join("data/.wqm-restore").exists());
}

#[test]
fn a_restore_killed_after_replacing_the_database_reports_every_step_on_the_next_run() {
    let double = Double::start();
    let tmp = restore_scene(&double);
    let output = restore_with(tmp.path(), &double, "restore:database-replaced=kill");
    assert!(killed(&output));
    let state_db = tmp.path().join("data/state.db");
    // The rerun completes it: the collections are back, so --overwrite.
    let (_, tmp) = Test::in_dir(tmp)
        .env("QDRANT_URL", &double.url)
        .env("WQM_DATA_DIR", "{TMP}/data")
        .args("backup restore {TMP}/b --force --overwrite")
        .stdout_with(|o| assert!(o.contains("Restore completed from "), "{o}"))
        .stderr_with(move |e| {
            assert!(e.contains("cleaned up after a dead run: `restore "), "{e}");
            assert!(
                e.contains("  the restore had done: collection `small-named` restored\n"),
                "{e}"
            );
            assert!(
                e.contains(&format!(
                    "  the restore had done: `{}` replaced\n",
                    state_db.display()
                )),
                "{e}"
            );
            assert!(e.contains("  the way back: wqm backup restore "), "{e}");
        })
        .run();
    assert!(double.snapshots_left().is_empty());
    assert!(!tmp.path().join("data/.wqm-restore").exists());
}

#[test]
fn an_uploaded_copy_qdrant_could_not_delete_is_deleted_by_the_next_run() {
    let double = Double::start();
    let tmp = restore_scene(&double);
    double.state().faults.delete_error = true;
    let (_, tmp) = Test::in_dir(tmp)
        .env("QDRANT_URL", &double.url)
        .env("WQM_DATA_DIR", "{TMP}/data")
        .args("backup restore {TMP}/b --force --quiet")
        .status(1)
        .stderr_with(|e| {
            assert!(
                e.contains("cannot delete the uploaded snapshot `wqm-restore-small-named-"),
                "{e}"
            );
            assert!(
                e.contains("wqm: action needed: the restore stopped part-way."),
                "{e}"
            );
        })
        .run();
    let left = double.snapshots_left();
    assert!(left.iter().all(|s| s.contains("/wqm-restore-")), "{left:?}");
    assert!(
        tmp.path().join("data/.wqm-restore/journal.jsonl").is_file(),
        "the journal stays"
    );
    double.state().faults.delete_error = false;
    let tmp = cleanup(tmp, &double, |out| {
        assert!(
            out.contains("  deleted snapshot `wqm-restore-small-named-"),
            "{out}"
        )
    });
    assert!(double.snapshots_left().is_empty());
    assert!(!tmp.path().join("data/.wqm-restore").exists());
}

#[test]
fn sigterm_during_a_restore_upload_exits_143_and_leaves_no_private_copy() {
    let double = Double::start();
    let tmp = restore_scene(&double);
    let output = restore_with(tmp.path(), &double, "restore:uploading=term");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(143), "{stderr}");
    // The upload's last piece waits for the pre-check, which stops on the signal: usually
    // nothing changed (the safety backup goes); had Qdrant got all of it, the way back.
    assert!(
        stderr.contains("nothing was changed; the safety backup `")
            || stderr.contains("the way back")
            || stderr.contains("to put back what was there before"),
        "{stderr}"
    );
    assert!(
        !tmp.path().join("data/.wqm-restore").exists(),
        "{:?}",
        ls_a(&tmp.path().join("data"))
    );
    assert!(
        double.snapshots_left().is_empty(),
        "{:?}",
        double.snapshots_left()
    );
}

#[test]
#[cfg_attr(
    not(real_qdrant),
    ignore = "needs a real Qdrant: set WQM_TEST_QDRANT_BIN or WQM_TEST_QDRANT_URL"
)]
fn real_server_the_printed_way_back_returns_the_old_state_exactly() {
    use crate::real_qdrant::{self, Server};
    let server = Server::start();
    let (tmp, backup) = backed_up_workspace(&server);
    let db = tmp.path().join("data/state.db");

    // The system moves on: new points, a row gone. This is the state to come back to.
    real_qdrant::upsert(&server, "projects", 1000..1040, 7);
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "DELETE FROM tracked_files WHERE file_id = (SELECT min(file_id) FROM tracked_files)",
            [],
        )
        .unwrap();
    let (points_before, rows_before) = (real_qdrant::fingerprint(&server), test::sqlite_dump(&db));

    // A restore of the older backup dies after replacing the database.
    let output = run_with(
        tmp.path(),
        &server.url,
        "restore:database-replaced=kill",
        &[
            "backup",
            "restore",
            backup.to_str().unwrap(),
            "--force",
            "--overwrite",
        ],
    );
    assert!(
        killed(&output),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_ne!(
        test::sqlite_dump(&db),
        rows_before,
        "the restore got as far as the database"
    );

    // The next run tells the way back; run it as printed.
    let output = run_the_way_back(tmp.path(), &server.url);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(real_qdrant::fingerprint(&server), points_before);
    assert_eq!(test::sqlite_dump(&db), rows_before);
    assert_eq!(server.snapshots_left(), Vec::<String>::new());
}

/// `wqm ARGS` in `tmp` against the double, with the live data directory `tmp/data`.
fn wqm_in(tmp: TempDir, double: &Double, args: &str) -> Test {
    Test::in_dir(tmp)
        .env("QDRANT_URL", &double.url)
        .env("WQM_DATA_DIR", "{TMP}/data")
        .args(args)
}

#[test]
fn a_collection_qdrant_cannot_load_is_replaced_by_overwrite_and_by_the_way_back() {
    let double = Double::start();
    let tmp = crate::restore::scene(&double, "");
    // A restore (--overwrite) dies after its first upload; Qdrant dies too, right after it
    // swapped the collection in, and comes back with it as a dirty shard.
    let output = run_with(
        tmp.path(),
        &double.url,
        "restore:uploaded=kill",
        &[
            "backup",
            "restore",
            tmp.path().join("b").to_str().unwrap(),
            "--force",
            "--overwrite",
        ],
    );
    assert!(killed(&output));
    double.state().faults.dirty = Some("small-named".to_string());
    let safety = crate::restore::safety_backups(tmp.path());
    assert_eq!(safety.len(), 1);

    // Without --overwrite: a conflict that says what Qdrant answered.
    let (_, tmp) = wqm_in(tmp, &double, "backup restore {TMP}/b --dry-run")
        .status(5)
        .stdout_with(|o| {
            assert!(
                o.contains(&format!(
                    "small-named (120 points, 201.50 KiB): already exists, but {DIRTY}\n"
                )),
                "{o}"
            )
        })
        .stderr_with(|e| {
            assert!(
                e.contains(&format!(
                    "Restore failed: Collection small-named already exists, but {DIRTY}\n"
                )),
                "{e}"
            )
        })
        .run();

    // The way back, as the next run prints it, works from that state.
    let out = String::from_utf8_lossy(
        &run_with(
            tmp.path(),
            &double.url,
            "",
            &["backup", "cleanup", tmp.path().to_str().unwrap()],
        )
        .stdout,
    )
    .into_owned();
    let way_back = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("the way back: "))
        .unwrap_or_else(|| panic!("no way back in: {out}"))
        .to_string();
    assert!(way_back.contains(&safety[0]), "{way_back}");
    let args = way_back
        .strip_prefix("wqm ")
        .unwrap()
        .replace(tmp.path().to_str().unwrap(), "{TMP}");
    let (_, tmp) = wqm_in(tmp, &double, &args)
        .stdout_with(|o| {
            assert!(
                o.contains(&format!("overwrite small-named (120 points, 201.50 KiB): {DIRTY}: replaced by the backup's copy\n")),
                "{o}"
            );
            assert!(
                o.contains("  ⚠ `small-named` exists but Qdrant cannot load it (500: "),
                "{o}"
            );
            assert!(o.contains("what it held can be in no safety backup (Qdrant cannot read it)"), "{o}");
            assert!(o.contains("Restore completed from "), "{o}");
        })
        .run();
    assert!(
        double.state().faults.dirty.is_none(),
        "the upload replaced it"
    );
    double.assert_holds_the_fixtures();
    assert!(
        double.snapshots_left().is_empty(),
        "{:?}",
        double.snapshots_left()
    );
    // The way back's own safety backup holds what Qdrant could read.
    let newest = crate::restore::safety_backups(tmp.path()).pop().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(tmp.path().join(newest).join("metadata/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest["collections"],
        serde_json::json!({"small-plain": 200})
    );

    // A rerun with --overwrite from the same state works too.
    double.state().faults.dirty = Some("small-plain".to_string());
    wqm_in(tmp, &double, "backup restore {TMP}/b --force --overwrite")
        .stdout_with(|o| assert!(o.contains("Restore completed from "), "{o}"))
        .run();
    double.assert_holds_the_fixtures();
}

#[test]
#[cfg_attr(
    not(real_qdrant_bin),
    ignore = "needs WQM_TEST_QDRANT_BIN: a server this test starts itself (to kill and restart it)"
)]
fn real_server_the_way_back_replaces_a_dirty_shard_qdrant_left_when_killed_mid_recovery() {
    use crate::real_qdrant::{self, Server};
    let mut server = Server::start();
    let (tmp, backup) = backed_up_workspace(&server);
    // The system moves on; this is the state the way back must return to.
    real_qdrant::upsert(&server, "libraries", 1000..1040, 7);
    let before = real_qdrant::fingerprint(&server);

    // A restore of the older backup dies right after Qdrant swapped `libraries` in (the first
    // upload) ...
    let output = run_with(
        tmp.path(),
        &server.url,
        "restore:uploaded=kill",
        &[
            "backup",
            "restore",
            backup.to_str().unwrap(),
            "--force",
            "--overwrite",
        ],
    );
    assert!(killed(&output));
    // ... and so does Qdrant, in the middle of swapping it in: it leaves the flag file it keeps
    // while a shard is being replaced (what `kill -9` of Qdrant during a snapshot recovery left
    // in the runs that recorded its 500 answers), and comes back with a dirty shard.
    server.kill();
    let storage = server.dir.as_ref().unwrap().path().join("storage");
    fs::write(
        storage.join("collections/libraries/shard_0.initializing"),
        "",
    )
    .unwrap();
    server.start_again();
    let (status, body) = server.call("GET", "/collections/libraries", None);
    assert_eq!(status, 500, "{body}");
    assert!(body.to_string().contains("Dirty shard"), "{body}");

    // The way back, as the next run prints it, works from that state.
    let output = run_the_way_back(tmp.path(), &server.url);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("`libraries` exists but Qdrant cannot load it (500: "),
        "{stdout}"
    );
    assert_eq!(real_qdrant::fingerprint(&server), before);
    assert_eq!(server.snapshots_left(), Vec::<String>::new());
}

/// The real workspace on `server` and a live state database, backed up to `TMP/b`.
fn backed_up_workspace(
    server: &crate::real_qdrant::Server,
) -> (tempfile::TempDir, std::path::PathBuf) {
    crate::real_qdrant::workspace(server);
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("data")).unwrap();
    fixtures::state_db(&tmp.path().join("data/state.db"));
    let backup = tmp.path().join("b");
    let output = run_with(
        tmp.path(),
        &server.url,
        "",
        &["backup", "create", backup.to_str().unwrap()],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (tmp, backup)
}

/// `wqm backup cleanup TMP`, then the way back it prints, run as printed: its output.
fn run_the_way_back(tmp: &Path, url: &str) -> Output {
    let cleaned = run_with(tmp, url, "", &["backup", "cleanup", tmp.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&cleaned.stdout).into_owned();
    let command = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("the way back: wqm "))
        .unwrap_or_else(|| panic!("no way back in: {out}"))
        .to_string();
    let args: Vec<&str> = command.split_whitespace().collect();
    run_with(tmp, url, "", &args)
}

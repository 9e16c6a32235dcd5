//! A damaged or hostile backup: refused before the first change, or stopped during the upload with nothing half-done.

use super::*;

#[test]
fn a_damaged_backup_is_refused_before_anything_changes() {
    let double = Double::start();
    let tmp = scene(&double, "");
    lose_everything(&double);
    fixtures::flip_byte(&tmp.path().join("b/collections/small-plain.snapshot.zst"));
    let (_, tmp) = wqm(tmp, &double, "backup restore {TMP}/b --force")
        .status(3)
        .stdout_with(|_| {})
        .stderr_with(|e| {
            assert!(
                e.starts_with("wqm: error: Backup validation failed: "),
                "{e}"
            );
            assert!(
                e.contains("collections/small-plain.snapshot.zst: checksum mismatch (xxhash64)"),
                "{e}"
            );
        })
        .run();
    // Checked as it streamed: Qdrant never got all of it, so nothing was restored.
    assert!(double.state().collections.is_empty());
    assert!(double.snapshots_left().is_empty());
    assert!(safety_backups(tmp.path()).is_empty());
}

/// `verify_before_restore` does not read the first upload's snapshot beforehand: the upload
/// checks it as it streams and holds its last piece back, so damage at its very end is found
/// before Qdrant has all of it, and the collection is left as it was.
#[test]
fn a_first_snapshot_damaged_at_its_end_is_refused_with_its_collection_unchanged() {
    let double = Double::start();
    let tmp = scene(&double, "");
    let path = tmp.path().join("b/collections/small-named.snapshot.zst");
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    fs::write(&path, bytes).unwrap();
    let before = points(&double);
    // A collection restored from here on would show it.
    double.state().faults.count_offset = 1000;
    let (_, tmp) = wqm(tmp, &double, "backup restore {TMP}/b --force --overwrite")
        .env("WQM_BACKUP__TRANSFER__PARALLEL", "1")
        .status(3)
        .stdout_with(|_| {})
        .stderr_with(|e| {
            assert!(
                e.starts_with("wqm: error: Backup validation failed: "),
                "{e}"
            );
            assert!(
                e.contains("collections/small-named.snapshot.zst: checksum mismatch (xxhash64)"),
                "{e}"
            );
            assert!(
                e.contains("wqm: warning: nothing was changed; the safety backup `"),
                "{e}"
            );
        })
        .run();
    // The upload of the first collection was cut short. Whether its request line reached the
    // server at all is up to the HTTP client's buffering (a snapshot this small can end, damaged,
    // before the first flush), so only "nothing else was sent" is certain.
    let uploads = uploads(&double);
    assert!(uploads.len() <= 1, "{uploads:?}");
    assert!(
        uploads
            .iter()
            .all(|u| u.contains("/collections/small-named/")),
        "{uploads:?}"
    );
    assert_eq!(points(&double), before);
    double.assert_holds_the_fixtures();
    assert!(double.snapshots_left().is_empty());
    assert!(safety_backups(tmp.path()).is_empty());
}

/// What the first upload does not read itself (the next collection's snapshot, a database) is
/// checked while it streams, and its last piece waits for that: damage there is refused before
/// Qdrant has all of the first snapshot.
#[test]
fn a_damaged_second_collection_or_database_is_refused_before_the_first_upload_completes() {
    for damaged in [
        "collections/small-plain.snapshot.zst",
        "sqlite/state.db.zst",
    ] {
        let double = Double::start();
        let tmp = scene(&double, "");
        fixtures::flip_byte(&tmp.path().join("b").join(damaged));
        let live = fs::read(tmp.path().join("data/state.db")).unwrap();
        let before = points(&double);
        double.state().faults.count_offset = 1000;
        let (_, tmp) = wqm(tmp, &double, "backup restore {TMP}/b --force --overwrite")
            .env("WQM_BACKUP__TRANSFER__PARALLEL", "1")
            .status(3)
            .stdout_with(|_| {})
            .stderr_with(move |e| {
                assert!(
                    e.starts_with("wqm: error: Backup validation failed: "),
                    "{e}"
                );
                assert!(e.contains(&format!("{damaged}: checksum mismatch")), "{e}");
            })
            .run();
        assert_eq!(points(&double), before, "{damaged}");
        double.assert_holds_the_fixtures();
        assert!(double.snapshots_left().is_empty());
        assert_eq!(fs::read(tmp.path().join("data/state.db")).unwrap(), live);
        assert!(safety_backups(tmp.path()).is_empty());
    }
}

/// A manifest's `databases[].name` only picks one of the known databases: a crafted name
/// (relative or absolute) is refused before anything is planned, and the file it names is
/// never touched — neither by `restore --force` nor accepted by `validate --check-files`.
#[test]
fn a_database_name_from_the_manifest_never_becomes_a_path() {
    let double = Double::start();
    for name in ["../victim/precious.txt", "{TMP}/elsewhere.txt"] {
        let tmp = scene(&double, "");
        let root = tmp.path().display().to_string();
        let name = name.replace("{TMP}", &root);
        let victim = if name.starts_with('/') {
            std::path::PathBuf::from(&name)
        } else {
            tmp.path().join("data").join(&name)
        };
        fs::create_dir_all(victim.parent().unwrap()).unwrap();
        fs::write(&victim, "precious").unwrap();
        fixtures::edit_manifest(&tmp.path().join("b"), |m| {
            m["databases"][0]["name"] = name.clone().into()
        });
        let tmp = Test::in_dir(tmp)
            .args("backup validate {TMP}/b --check-files")
            .status(3)
            .stdout_with(|out| assert!(out.contains("`databases[0].name` is unsafe: "), "{out}"))
            .stderr_with(|err| {
                assert!(
                    err.starts_with("wqm: error: Backup validation failed"),
                    "{err}"
                )
            })
            .run()
            .1;
        let (_, tmp) = wqm(tmp, &double, "backup restore {TMP}/b --force")
            .status(3)
            .stderr_with(|err| {
                assert!(
                    err.contains("`databases[0].name` is unsafe: ")
                        && err.contains("is not a database wqm restores"),
                    "{err}"
                )
            })
            .run();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert!(safety_backups(tmp.path()).is_empty(), "nothing was planned");
    }
}

/// A snapshot whose tar has a `../` or absolute member, with a manifest that vouches for it:
/// a plain restore finds it while uploading (the stream passes `validate --check-files`'
/// check), fails with exit 3 naming the file and the member, and Qdrant never gets all of it.
#[test]
fn a_snapshot_member_outside_the_archive_stops_the_upload() {
    for member in ["../../evil", "/etc/evil"] {
        let double = Double::start();
        let tmp = scene(&double, "");
        lose_everything(&double);
        let rel = snapshot_file(&tmp, "small-plain");
        fixtures::replace_content(
            &tmp.path().join("b"),
            &rel,
            &fixtures::with_member(fixtures::SMALL_PLAIN, member),
        );
        let expected = format!(
            "the backup's `{rel}` is damaged: not a valid Qdrant snapshot: entry `{member}` has an unsafe path"
        );
        wqm(tmp, &double, "backup restore {TMP}/b --force")
            .status(3)
            .stdout_with(|out| assert!(out.starts_with("Restore plan: "), "{out}"))
            .stderr_with(move |err| assert!(err.contains(&expected), "{err}"))
            .run();
        assert!(
            !double.state().collections.contains_key("small-plain"),
            "the hostile snapshot was not restored"
        );
        assert!(
            double.snapshots_left().is_empty(),
            "{:?}",
            double.snapshots_left()
        );
    }
}

/// A truncated `.zst` whose manifest agrees with it (size and checksum of the stored bytes):
/// exit 3 naming the file, not a failure blamed on Qdrant.
#[test]
fn a_truncated_compressed_snapshot_is_an_invalid_backup() {
    let double = Double::start();
    let tmp = scene(&double, "");
    lose_everything(&double);
    let rel = snapshot_file(&tmp, "small-plain");
    assert!(rel.ends_with(".zst"), "{rel}");
    let stored = fs::read(tmp.path().join("b").join(&rel)).unwrap();
    fixtures::replace_stored(&tmp.path().join("b"), &rel, &stored[..stored.len() / 2]);
    let expected = format!("the backup's `{rel}` is damaged: cannot decompress: ");
    wqm(tmp, &double, "backup restore {TMP}/b --force")
        .status(3)
        .stdout_with(|out| assert!(out.starts_with("Restore plan: "), "{out}"))
        .stderr_with(move |err| assert!(err.contains(&expected), "{err}"))
        .run();
    assert!(!double.state().collections.contains_key("small-plain"));
}

/// Content that differs from the manifest's `content_sha256` while the stored checksum agrees:
/// the database staging checks it as it reads, Qdrant the snapshot's (`?checksum=`); either is
/// exit 3 naming the file, with nothing restored.
#[test]
fn content_that_differs_from_the_manifest_is_an_invalid_backup() {
    for file in [
        "collections/small-plain.snapshot.zst",
        "sqlite/state.db.zst",
    ] {
        let double = Double::start();
        let tmp = scene(&double, "");
        lose_everything(&double);
        fixtures::edit_manifest(&tmp.path().join("b"), |m| {
            for f in m["files"].as_array_mut().unwrap() {
                if f["path"] == file {
                    f["content_sha256"] = "0".repeat(64).into();
                }
            }
        });
        let expected = format!("the backup's `{file}` is damaged: content sha256 mismatch");
        let (_, tmp) = wqm(tmp, &double, "backup restore {TMP}/b --force")
            .status(3)
            .stdout_with(|out| assert!(out.starts_with("Restore plan: "), "{out}"))
            .stderr_with(move |err| assert!(err.contains(&expected), "{err}"))
            .run();
        assert!(!double.state().collections.contains_key("small-plain"));
        assert_eq!(
            count(
                &tmp.path().join("data/state.db"),
                "SELECT COUNT(*) FROM tracked_files"
            ),
            7,
            "the live database is untouched"
        );
    }
}

/// A restore's only upload leaves its content's sha256 to Qdrant (`?checksum=`), reading only
/// the stored checksum itself: Qdrant's refusal is the backup's damage (exit 3), with nothing
/// changed. Without `?checksum=`, or against a Qdrant that ignores it, wqm compares the sha256.
#[test]
fn content_qdrant_refuses_is_damage_with_nothing_changed() {
    let double = Double::start();
    let tmp = scene(&double, "--collections small-named");
    lose_everything(&double);
    fixtures::edit_manifest(&tmp.path().join("b"), |m| {
        for f in m["files"].as_array_mut().unwrap() {
            if f["path"] == "collections/small-named.snapshot.zst" {
                f["content_sha256"] = "0".repeat(64).into();
            }
        }
    });
    let (_, tmp) = wqm(tmp, &double, "backup restore {TMP}/b --force")
        .status(3)
        .stdout_with(|o| assert!(o.starts_with("Restore plan: "), "{o}"))
        .stderr_with(|e| {
            assert!(e.starts_with(&format!(
                "wqm: error: restoring collection `small-named` failed: the backup's `collections/small-named.snapshot.zst` is damaged: content sha256 mismatch: the manifest says {}, Qdrant found another in the content it received and refused the upload, changing nothing (Qdrant answered 400: Checksum mismatch: expected ",
                "0".repeat(64)
            )), "{e}");
            assert!(e.contains("wqm: warning: nothing was changed; the safety backup `"), "{e}");
        })
        .run();
    assert!(double.state().collections.is_empty());
    assert!(double.snapshots_left().is_empty());
    assert_eq!(
        count(
            &tmp.path().join("data/state.db"),
            "SELECT COUNT(*) FROM tracked_files"
        ),
        7,
        "the live database is untouched"
    );

    let expected = format!(
        "the backup's `collections/small-named.snapshot.zst` is damaged: content sha256 mismatch: the manifest says {} (",
        "0".repeat(64)
    );
    let (_, tmp) = wqm(tmp, &double, "backup restore {TMP}/b --force")
        .env("WQM_BACKUP__TRANSFER__CHECKSUM", "false")
        .status(3)
        .stdout_with(|_| {})
        .stderr_with({
            let expected = expected.clone();
            move |e| assert!(e.contains(&expected), "{e}")
        })
        .run();
    assert!(double.state().collections.is_empty());

    // Nor is it left to a Qdrant that ignores `?checksum=` (before 1.8.0).
    double.state().faults.before_checksums = true;
    wqm(tmp, &double, "backup restore {TMP}/b --force")
        .status(3)
        .stdout_with(|_| {})
        .stderr_with(move |e| assert!(e.contains(&expected), "{e}"))
        .run();
    assert!(double.state().collections.is_empty());
}

#[test]
fn a_restore_that_stops_before_changing_anything_leaves_no_safety_backup_behind() {
    let double = Double::start();
    let tmp = scene(&double, "");
    let manifest = tmp.path().join("b/metadata/manifest.json");
    let sound = fs::read(&manifest).unwrap();
    // Found damaged during the upload (the stored checksum agrees, the content does not).
    fixtures::edit_manifest(&tmp.path().join("b"), |m| {
        for f in m["files"].as_array_mut().unwrap() {
            if f["path"] == "collections/small-named.snapshot.zst" {
                f["content_sha256"] = "0".repeat(64).into();
            }
        }
    });
    let mut tmp = tmp;
    // Retried, as an operator does: no safety backup piles up.
    for _ in 0..3 {
        let (_, back) = wqm(tmp, &double, "backup restore {TMP}/b --force --overwrite")
            .env("WQM_BACKUP__TRANSFER__PARALLEL", "1")
            .status(3)
            .stdout_with(|o| assert!(o.starts_with("Restore plan: "), "{o}"))
            .stderr_with(|e| {
                assert!(e.contains("the backup's `collections/small-named.snapshot.zst` is damaged: content sha256 mismatch"), "{e}");
                assert!(
                    e.contains("wqm: warning: nothing was changed; the safety backup `")
                        && e.contains("/safety-")
                        && e.ends_with("` was removed (it held what is still there)\n"),
                    "{e}"
                );
            })
            .run();
        tmp = back;
        assert_eq!(safety_backups(tmp.path()), Vec::<String>::new());
        assert!(double.snapshots_left().is_empty());
        double.assert_holds_the_fixtures();
    }
    let hidden: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        // The (empty) place of the runs' lock objects stays.
        .filter(|n| n.starts_with('.') && n != ".wqm-locks" && n != ".wqm-backend")
        .collect();
    assert_eq!(hidden, Vec::<String>::new());

    // An upload Qdrant got all of before it failed may have been applied: the safety backup
    // is kept, and the report says why.
    fs::write(&manifest, sound).unwrap();
    double.state().faults.upload_error = Some((
        "small-named".to_string(),
        500,
        "Service internal error: failed to recover the snapshot".to_string(),
    ));
    let (_, tmp) = wqm(tmp, &double, "backup restore {TMP}/b --force --overwrite --quiet")
        .env("WQM_BACKUP__TRANSFER__PARALLEL", "1")
        .status(1)
        .stderr_with(|e| {
            assert!(
                e.contains("\n  ? collection `small-named`: Qdrant may have restored it"),
                "{e}"
            );
            assert!(
                e.contains("\nThe safety backup `") && e.contains("` is kept: Qdrant may have restored a collection, and it holds what was there before.\nto put back what was there before: wqm backup restore "),
                "{e}"
            );
        })
        .run();
    assert_eq!(safety_backups(tmp.path()).len(), 1);
}

/// A restore that stops before it changed anything (here: the second collection's snapshot is
/// found damaged while the first streams) starts the daemon it stopped again.
#[test]
fn a_damaged_backup_found_during_the_upload_starts_the_stopped_daemon_again() {
    let double = Double::start();
    let tmp = scene(&double, "");
    lose_everything(&double);
    fixtures::flip_byte(&tmp.path().join("b/collections/small-plain.snapshot.zst"));
    fs::write(tmp.path().join("running"), "").unwrap();
    let port = PortDaemon::follow(tmp.path().join("running"), Duration::ZERO);
    let (_, tmp) = wqm(tmp, &double, "backup restore {TMP}/b --force")
        .env("WQM_BACKUP__TRANSFER__PARALLEL", "1")
        .env(
            "WQM_BACKUP__DAEMON__STATUS_COMMAND",
            "test -e {TMP}/running",
        )
        .env("WQM_BACKUP__DAEMON__ADDRESS", &port.address)
        .env("WQM_BACKUP__DAEMON__TIMEOUT", "2")
        .env("WQM_BACKUP__DAEMON__STOP_COMMAND", "rm {TMP}/running")
        .env("WQM_BACKUP__DAEMON__START_COMMAND", "touch {TMP}/running")
        .status(3)
        .stdout_with(|_| {})
        .stderr_with(|e| {
            assert!(
                e.starts_with("wqm: error: Backup validation failed: "),
                "{e}"
            );
            assert!(
                e.contains("  ✓ daemon stopped\n  ✓ daemon started\n"),
                "{e}"
            );
            assert!(
                e.contains("Nothing of the live system was changed yet."),
                "{e}"
            );
            assert!(!e.contains("left stopped"), "{e}");
        })
        .run();
    assert!(tmp.path().join("running").exists());
    assert!(double.state().collections.is_empty());
}

//! The uploads: the server-side checksum, pacing, waiting for recovery, and the faults on the way.

use super::*;

#[test]
fn the_server_side_checksum_is_sent_unless_turned_off() {
    let double = Double::start();
    let tmp = scene(&double, "");
    lose_everything(&double);
    wqm(tmp, &double, "backup restore {TMP}/b --force")
        .env("WQM_BACKUP__TRANSFER__CHECKSUM", "false")
        .stdout_with(|out| assert!(out.contains("Restore completed from "), "{out}"))
        .run();
    double.assert_holds_the_fixtures();
    let sent = uploads(&double);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(
        sent.iter()
            .all(|u| u.ends_with("?wait=true&priority=snapshot")),
        "no `checksum=` with `backup.transfer.checksum: false`: {sent:?}"
    );
}

#[test]
fn an_upload_that_breaks_stops_the_restore_and_says_how_to_go_back() {
    let double = Double::start();
    let tmp = scene(&double, "");
    lose_everything(&double);
    double.state().faults = Faults {
        upload_die: Some("small-plain".into()),
        ..Faults::default()
    };
    let db_before = fs::read(tmp.path().join("data/state.db")).unwrap();
    // Even with --quiet (as cron runs it) the way back reaches stderr.
    let (_, tmp) = wqm(tmp, &double, "backup restore {TMP}/b --force --quiet")
        .status(1)
        .stderr_with(|e| {
            assert!(
                e.starts_with("wqm: error: restoring collection `small-plain` failed: "),
                "{e}"
            );
            assert!(
                e.contains(
                    "wqm: action needed: the restore stopped part-way. Done:\n  ✓ safety backup: "
                ),
                "{e}"
            );
            assert!(
                e.contains("\n  ✓ collection `small-named` restored\n"),
                "{e}"
            );
            // The broken upload was not applied (wqm had not handed all of it over when the
            // connection broke) or may have been (it had: the small fixture fits in the upload's
            // channel, so this depends on timing); the report says which, never "untouched".
            assert!(
                e.contains("\n  ✗ collection `small-plain`: not restored, left as it was (Qdrant did not get all of its snapshot)\n")
                    || e.contains("\n  ? collection `small-plain`: Qdrant may have restored it before the failure; check it, or rerun the restore with --overwrite\n"),
                "{e}"
            );
            assert!(
                e.contains("to put back what was there before: wqm backup restore ")
                    && e.contains("/safety-")
                    && e.contains(" --force --overwrite\n"),
                "{e}"
            );
            assert!(
                e.contains(
                    "Collections this restore created (not in the safety backup): small-named;"
                ),
                "{e}"
            );
        })
        .run();
    assert_eq!(
        fs::read(tmp.path().join("data/state.db")).unwrap(),
        db_before,
        "the database was not reached"
    );
    assert_eq!(safety_backups(tmp.path()).len(), 1);
}

#[test]
fn a_server_error_during_upload_is_reported_with_its_message() {
    let double = Double::start();
    let tmp = scene(&double, "");
    lose_everything(&double);
    double.state().faults = Faults {
        upload_error: Some((
            "small-named".into(),
            500,
            "Service internal error: No space left on device".into(),
        )),
        ..Faults::default()
    };
    wqm(tmp, &double, "backup restore {TMP}/b --force")
        .status(1)
        .stdout_with(|_| {})
        .stderr_with(|e| assert!(e.starts_with("wqm: error: restoring collection `small-named` failed: Qdrant failed (500): Service internal error: No space left on device\n"), "{e}"))
        .run();
    assert!(double.snapshots_left().is_empty());
}

#[test]
fn a_count_that_does_not_match_after_restore_exits_6() {
    let double = Double::start();
    let tmp = scene(&double, "");
    lose_everything(&double);
    double.state().faults = Faults {
        count_offset: -1,
        ..Faults::default()
    };
    wqm(tmp, &double, "backup restore {TMP}/b --force")
        .status(6)
        .stdout_with(|o| assert!(o.contains("  ✗ collection `small-named`: expected 120 points, not red, found 119 points, green\n"), "{o}"))
        .stderr_with(|e| {
            assert!(e.starts_with("wqm: error: Verification after restore failed: "), "{e}");
            assert!(e.contains("hint: to put back what was there before: wqm backup restore "), "{e}");
        })
        .run();
}

/// The check after a restore counts the points: a count over the collection's strict-mode rate
/// limit (Qdrant's 429, `Retry-After: 1`) is waited for, not taken for a failed restore.
#[test]
fn a_rate_limited_count_after_restore_is_waited_for() {
    let double = Double::start();
    let tmp = scene(&double, "");
    lose_everything(&double);
    double.state().faults = Faults {
        count_rate_limited: 1,
        ..Faults::default()
    };
    let counts = || double.requests_starting_with("POST /collections/small-named/points/count");
    let counted_before = counts();
    let started = std::time::Instant::now();
    wqm(tmp, &double, "backup restore {TMP}/b --force")
        .stdout_with(|o| {
            assert!(o.contains("  ✓ collection `small-named`: expected 120 points, not red, found 120 points, green\n"), "{o}");
            assert!(o.contains("Restore completed"), "{o}");
        })
        .run();
    assert!(started.elapsed() >= Duration::from_secs(1));
    // Refused once, then answered.
    assert_eq!(counts() - counted_before, 2);
}

#[test]
fn a_recovery_is_waited_for_as_long_as_qdrant_answers_and_no_longer() {
    let double = Double::start();
    let tmp = scene(&double, "");
    lose_everything(&double);
    // Recovery takes 3 s, more than the operation timeout and the read timeout: Qdrant answers
    // its health check meanwhile, so wqm waits.
    double.state().faults = Faults {
        upload_delay: Some(Duration::from_secs(3)),
        ..Faults::default()
    };
    let (_, tmp) = wqm(tmp, &double, "backup restore {TMP}/b --force")
        .env("WQM_BACKUP__TRANSFER__OPERATION_TIMEOUT", "1")
        .env("WQM_BACKUP__TRANSFER__READ_TIMEOUT", "1")
        .stdout_with(|o| assert!(o.contains("Restore completed"), "{o}"))
        .run();
    assert!(double.requests().iter().any(|r| r == "GET /healthz"));

    // A Qdrant that stops answering altogether while it recovers is given up on.
    lose_everything(&double);
    double.state().faults = Faults {
        hang_after_upload: true,
        ..Faults::default()
    };
    let started = std::time::Instant::now();
    wqm(tmp, &double, "backup restore {TMP}/b --force")
        .env("WQM_BACKUP__TRANSFER__READ_TIMEOUT", "1")
        .status(1)
        .stdout_with(|_| {})
        .stderr_with(|e| {
            assert!(e.starts_with("wqm: error: restoring collection `small-named` failed: Qdrant did not answer within 1 s (restore `small-named` from its snapshot: Qdrant stopped answering while it recovered)\n"), "{e}");
        })
        .run();
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn ctrl_c_during_an_upload_stops_and_says_how_to_go_back() {
    let double = Double::start();
    let tmp = scene(&double, "");
    lose_everything(&double);
    double.state().faults = Faults {
        upload_delay: Some(Duration::from_secs(5)),
        ..Faults::default()
    };
    let backup = tmp.path().join("b");
    let mut command = crate::test::wqm_command(
        tmp.path(),
        &["backup", "restore", "--force", backup.to_str().unwrap()],
    );
    command
        .env("QDRANT_URL", &double.url)
        .env("WQM_DATA_DIR", tmp.path().join("data"));
    let output = crate::test::interrupted(command, || !uploads(&double).is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("wqm: error: restoring collection `small-named` failed: interrupted\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("to put back what was there before: wqm backup restore "),
        "{stderr}"
    );
}

/// The README's verification sentence: the recorded count, or the range when points were
/// written while the snapshot was taken.
#[test]
fn verification_accepts_the_recorded_range_of_a_snapshot_taken_during_writes() {
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(readme.contains("every restored collection exists with the point count the manifest records (or,\n   when points were written while its snapshot was taken, a count between `points_count` and\n   `points_count_after`)"));
    let double = Double::start();
    let tmp = scene(&double, "");
    lose_everything(&double);
    // small-plain holds 200 points: recorded as 198 before the snapshot and 203 after.
    fixtures::edit_manifest(&tmp.path().join("b"), |m| {
        m["collections"]["small-plain"] = 198.into();
        m["total_documents"] = (120 + 198).into();
        m["during_operations"] = true.into();
        let details = &mut m["collection_details"]["small-plain"];
        details["points_count"] = 198.into();
        details["points_count_after"] = 203.into();
    });
    wqm(tmp, &double, "backup restore {TMP}/b --force")
        .stdout_with(|o| {
            assert!(o.contains("  ✓ collection `small-plain`: expected 198..=203 points, not red, found 200 points, green\n"), "{o}");
            assert!(o.contains("Restore completed"), "{o}");
        })
        .run();
}

#[test]
fn the_next_upload_is_sent_while_qdrant_recovers_the_previous_one() {
    for (parallel, pipelined) in [("2", true), ("1", false)] {
        let double = Double::start();
        let tmp = scene(&double, "");
        lose_everything(&double);
        // Qdrant takes its time over each recovery, after reading the whole upload.
        double.state().faults.upload_delay = Some(Duration::from_millis(700));
        wqm(tmp, &double, "backup restore {TMP}/b --force")
            .env("WQM_BACKUP__TRANSFER__PARALLEL", parallel)
            .stdout_with(|out| {
                assert!(
                    out.contains("✓ collection `small-named` restored\n✓ collection `small-plain` restored\n"),
                    "the journal keeps the collections' order: {out}"
                );
                assert!(out.contains("Restore completed from "), "{out}");
            })
            .run();
        double.assert_holds_the_fixtures();
        let requests = double.requests();
        let at = |wanted: &str| {
            requests
                .iter()
                .position(|r| r.starts_with(wanted))
                .unwrap_or_else(|| panic!("no `{wanted}`: {requests:?}"))
        };
        let second_sent = at("POST /collections/small-plain/snapshots/upload");
        let first_answered = at("DELETE /collections/small-named/snapshots/wqm-restore-");
        assert_eq!(
            second_sent < first_answered,
            pipelined,
            "parallel {parallel}: {requests:?}"
        );
        assert!(double.snapshots_left().is_empty());
    }
}

#[test]
fn the_json_result_says_where_the_time_went() {
    let double = Double::start();
    let tmp = scene(&double, "");
    lose_everything(&double);
    wqm(tmp, &double, "backup restore {TMP}/b --force --json")
        .stdout_json(|doc| {
            assert!(doc["plan_seconds"].as_f64().unwrap() > 0.0, "{doc}");
            let phases: Vec<&str> = doc["result"]["phases"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["phase"].as_str().unwrap())
                .collect();
            assert_eq!(
                phases,
                [
                    "cleanup",
                    "unpack databases",
                    "safety backup",
                    "stop daemon, merge databases",
                    "collections",
                    "databases, aliases, config, start daemon",
                    "verify"
                ]
            );
        })
        .run();
}

#[test]
fn a_failed_upload_stops_the_others_but_one_all_sent_is_waited_for() {
    let double = Double::start();
    let tmp = scene(&double, "");
    lose_everything(&double);
    {
        let mut state = double.state();
        // `small-named` is all sent and slow to recover when `small-plain`'s upload breaks.
        state.faults.upload_delay = Some(Duration::from_millis(1500));
        state.faults.upload_die = Some("small-plain".into());
    }
    wqm(tmp, &double, "backup restore {TMP}/b --force")
        .status(1)
        .stdout_with(|_| {})
        .stderr_with(|err| {
            assert!(
                err.starts_with("wqm: error: restoring collection `small-plain` failed: "),
                "{err}"
            );
            // Not applied, or maybe applied, as the upload was handed over (see above).
            assert!(
                err.contains("\n  ✓ collection `small-named` restored\n  ✗ collection `small-plain`: not restored, left as it was")
                    || err.contains("\n  ✓ collection `small-named` restored\n  ? collection `small-plain`: Qdrant may have restored it"),
                "{err}"
            );
        })
        .run();
    let state = double.state();
    assert!(
        state.collections.contains_key("small-named"),
        "the upload that was all sent was waited for"
    );
    assert!(!state.collections.contains_key("small-plain"));
}

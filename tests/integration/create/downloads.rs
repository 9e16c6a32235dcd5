//! Making and downloading the snapshots: resumed, retried, pipelined, interrupted, and what a failure leaves.

use super::*;

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
        // One snapshot at a time: the next one's request never meets the restart (a request
        // that changes something and breaks mid-way is not sent again: whether Qdrant got it
        // cannot be known), only the download that is resumed.
        &[("WQM_BACKUP__TRANSFER__PARALLEL", "1")],
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
    let attempts = double.requests_starting_with("GET /collections/small-named/snapshots/");
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

/// "Not now" means nothing was done: a proxy's 503 for the snapshot request (Qdrant
/// restarting behind it) is sent again after the backoff, a count over strict mode's rate limit
/// (Qdrant's 429) after the `Retry-After` it gives, and the backup is made.
#[test]
fn requests_answered_not_now_are_sent_again() {
    for (faults, asked, least) in [
        (
            Faults {
                create_unavailable: 2,
                ..Faults::default()
            },
            "POST /collections/small-named/snapshots?",
            // The backoff: 0.25 s, then 0.5 s.
            Duration::from_millis(750),
        ),
        (
            Faults {
                count_rate_limited: 2,
                ..Faults::default()
            },
            "POST /collections/small-named/points/count",
            // `Retry-After: 1`, twice.
            Duration::from_secs(2),
        ),
    ] {
        let started = Instant::now();
        let (double, tmp) = with_faults(faults, &[], 0, |err| assert_eq!(err, ""));
        assert!(started.elapsed() >= least, "{asked}");
        // Two refusals and the answer; a count is asked again after the snapshot.
        let expected = if asked.ends_with("count") { 4 } else { 3 };
        let sent = double.requests_starting_with(asked);
        assert_eq!(sent, expected, "{:?}", double.requests());
        let m = manifest(&tmp.path().join("b"));
        assert_eq!(m.collection_details["small-named"].points_count, 120);
        crate::test::validates(&tmp.path().join("b"));
        assert!(double.snapshots_left().is_empty());
    }
}

#[test]
fn a_qdrant_that_keeps_saying_not_now_fails_the_backup_with_what_to_do() {
    let (double, tmp) = with_faults(
        Faults {
            create_unavailable: 100,
            ..Faults::default()
        },
        &[
            ("WQM_BACKUP__TRANSFER__RETRIES", "2"),
            ("WQM_BACKUP__TRANSFER__RETRY_TIMEOUT", "1"),
        ],
        1,
        |err| {
            assert_eq!(
                err,
                "wqm: error: Qdrant failed (503): no healthy upstream\n\
                 hint: Qdrant said \"not now\" (429: its rate limit; 503: a shard not ready, or a proxy without its Qdrant) to every attempt for `backup.transfer.retry_timeout`; run the command again later, or raise `backup.transfer.retry_timeout`\n"
            )
        },
    );
    let asked = double.requests_starting_with("POST /collections/small-named/snapshots?");
    // At least `retries` more attempts, until `retry_timeout` passed, with backoff.
    assert!((3..10).contains(&asked), "{asked}");
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

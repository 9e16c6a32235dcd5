//! Fault injection: wqm killed (`kill -9`), terminated or hung up at each phase boundary of
//! `create` and `restore` (failpoints, compiled into debug builds: see `src/failpoint.rs`). For
//! each: nothing that `list` or `validate` accepts unless it completed, a staging directory never
//! validates, and after the next run nothing is left on the server.

use std::fs;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::fixtures;
use crate::qdrant_double::{Double, DownloadFault, Faults};
use crate::test::{self, Test};

mod restores;

/// Entries of `dir`, sorted, hidden ones included (`ls -A`), but for the tests' own `home`.
fn ls_a(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "home" && n != ".wqm-locks" && n != ".wqm-backend")
        .collect();
    names.sort();
    names
}

/// `wqm ARGS` in `tmp` against the Qdrant at `url` (the double or a real server), with
/// `failpoints` set; waits for it to end.
pub fn run_with(tmp: &Path, url: &str, failpoints: &str, args: &[&str]) -> Output {
    let mut command = test::wqm_command(tmp, args);
    command
        .env("QDRANT_URL", url)
        .env("WQM_DATA_DIR", tmp.join("data"))
        .env("WQM_FAILPOINTS", failpoints)
        // One snapshot at a time: a kill at a phase of one collection then never lands while the
        // next one's request is on its way, which leaves a snapshot that cleanup cannot tell from
        // one still in the making for ten minutes (`cleanup::STILL_IN_THE_MAKING_SECONDS`).
        .env("WQM_BACKUP__TRANSFER__PARALLEL", "1");
    command.output().unwrap()
}

/// `wqm backup create TMP/b` against the double, sent `signals` once Qdrant is asked for a
/// snapshot.
fn create_signalled(double: &Double, tmp: &Path, signals: &[&str]) -> Output {
    let target = tmp.join("b");
    let mut command = test::wqm_command(tmp, &["backup", "create", target.to_str().unwrap()]);
    command.env("QDRANT_URL", &double.url);
    test::signalled(command, signals, || {
        double
            .requests()
            .iter()
            .any(|r| r.starts_with("POST") && r.contains("/snapshots"))
    })
}

pub fn killed(output: &Output) -> bool {
    use std::os::unix::process::ExitStatusExt;
    output.status.signal() == Some(9)
}

fn wait_for(what: &str, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `wqm backup cleanup DIR` against the double: its stdout.
fn cleanup(tmp: TempDir, double: &Double, expect: impl Fn(&str) + 'static) -> TempDir {
    let (_, tmp) = Test::in_dir(tmp)
        .env("QDRANT_URL", &double.url)
        .env("WQM_DATA_DIR", "{TMP}/data")
        .args("backup cleanup {TMP}")
        .stdout_with(expect)
        .run();
    tmp
}

fn backup(tmp: TempDir, double: &Double, name: &str, description: &str) -> TempDir {
    let (_, tmp) = Test::in_dir(tmp)
        .env("QDRANT_URL", &double.url)
        .env("WQM_DATA_DIR", "{TMP}/data")
        .args(&format!("backup create {{TMP}}/{name} -d {description}"))
        .stdout_with(|o| assert!(o.starts_with("Backup created: "), "{o}"))
        .run();
    tmp
}

fn description(backup: &Path) -> String {
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(backup.join("metadata/manifest.json")).unwrap()).unwrap();
    manifest["description"].as_str().unwrap().to_string()
}

#[test]
fn kill_9_while_qdrant_makes_the_snapshot_orphans_nothing_after_the_next_run() {
    let double = Double::start();
    double.state().faults = Faults {
        create_delay: Some(Duration::from_millis(800)),
        ..Faults::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    let output = create_signalled(&double, tmp.path(), &["KILL"]);
    assert!(killed(&output));
    // Qdrant finishes the snapshot nobody will download.
    wait_for("the snapshot", || double.snapshots_left().len() == 1);
    assert_eq!(ls_a(tmp.path()), [".b.wqm-staging"]);
    let tmp = cleanup(tmp, &double, |out| {
        assert!(
            out.contains("cleaned up after a dead run: `create "),
            "{out}"
        );
        assert!(out.contains("  deleted snapshot `small-named-"), "{out}");
        assert!(out.ends_with("; 0 not finished\n"), "{out}");
    });
    assert!(double.snapshots_left().is_empty());
    assert!(ls_a(tmp.path()).is_empty());
}

#[test]
fn kill_9_mid_download_is_cleaned_up_by_the_next_create() {
    let double = Double::start();
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("data")).unwrap();
    let output = run_with(
        tmp.path(),
        &double.url,
        "create:downloading=kill",
        &["backup", "create", tmp.path().join("b1").to_str().unwrap()],
    );
    assert!(killed(&output));
    assert_eq!(double.snapshots_left().len(), 1, "the dead run's snapshot");
    test::refuses_as_unfinished(&tmp.path().join(".b1.wqm-staging/backup"));

    let (_, tmp) = Test::in_dir(tmp)
        .env("QDRANT_URL", &double.url)
        .args("backup create {TMP}/b2")
        .stdout_with(|o| assert!(o.starts_with("Backup created: "), "{o}"))
        .stderr_with(|e| {
            assert!(
                e.starts_with("wqm: action needed: cleaned up after a dead run: `create "),
                "{e}"
            );
            assert!(e.contains("/b1` (pid "), "{e}");
            assert!(e.contains("\n  deleted snapshot `small-named-"), "{e}");
        })
        .run();
    assert!(double.snapshots_left().is_empty());
    assert_eq!(ls_a(tmp.path()), ["b2", "data"]);
}

#[test]
fn a_snapshot_qdrant_could_not_delete_is_retried_by_the_next_run() {
    let double = Double::start();
    double.state().faults.delete_error = true;
    let tmp = tempfile::tempdir().unwrap();
    let (_, tmp) = Test::in_dir(tmp)
        .env("QDRANT_URL", &double.url)
        .args("backup create {TMP}/b1 --quiet")
        .status(7)
        .stderr_with(|e| assert!(e.contains("could not delete snapshot"), "{e}"))
        .run();
    assert_eq!(double.snapshots_left().len(), 2);
    assert!(tmp.path().join(".b1.wqm-staging/journal.jsonl").is_file());
    assert!(!tmp.path().join(".b1.wqm-staging/backup").exists());
    double.state().faults.delete_error = false;
    let tmp = cleanup(tmp, &double, |out| {
        assert_eq!(out.matches("  deleted snapshot `").count(), 2, "{out}")
    });
    assert!(double.snapshots_left().is_empty());
    assert_eq!(ls_a(tmp.path()), ["b1"]);
}

#[test]
fn sigterm_and_sighup_take_the_clean_path() {
    for (signal, code, said) in [
        ("TERM", 143, "wqm: terminated (SIGTERM); cleaning up"),
        ("HUP", 129, "wqm: hung up (SIGHUP); cleaning up"),
    ] {
        let double = Double::start();
        double.state().faults = Faults {
            create_delay: Some(Duration::from_millis(500)),
            ..Faults::default()
        };
        let tmp = tempfile::tempdir().unwrap();
        let output = create_signalled(&double, tmp.path(), &[signal]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{stderr}");
        assert!(stderr.starts_with(said), "{stderr}");
        // It waited for the snapshot Qdrant was making, and deleted it.
        assert!(double.snapshots_left().is_empty(), "{signal}");
        assert!(ls_a(tmp.path()).is_empty(), "{signal}");
    }
}

#[test]
fn a_failpoint_term_mid_download_exits_143_leaving_nothing() {
    let double = Double::start();
    let tmp = tempfile::tempdir().unwrap();
    let output = run_with(
        tmp.path(),
        &double.url,
        "create:downloading=term",
        &["backup", "create", tmp.path().join("b").to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(143), "{stderr}");
    assert!(double.snapshots_left().is_empty());
    assert!(ls_a(tmp.path()).is_empty(), "{:?}", ls_a(tmp.path()));
}

#[test]
fn a_second_signal_quits_at_once_and_says_what_is_left() {
    let double = Double::start();
    double.state().faults = Faults {
        create_delay: Some(Duration::from_secs(3)),
        ..Faults::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let output = create_signalled(&double, tmp.path(), &["INT", "INT"]);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "it did not wait"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "wqm: quitting before the cleanup finished: `{}` is left for the next run (or `wqm backup cleanup`)\n",
            tmp.path().join(".b.wqm-staging").display()
        )),
        "{stderr}"
    );
    wait_for("the snapshot", || double.snapshots_left().len() == 1);
    cleanup(tmp, &double, |out| {
        assert!(out.contains("  deleted snapshot `small-named-"), "{out}")
    });
    assert!(double.snapshots_left().is_empty());
}

#[test]
fn force_swaps_atomically_whenever_it_is_killed() {
    let double = Double::start();
    let tmp = backup(tempfile::tempdir().unwrap(), &double, "b", "old");
    let b = tmp.path().join("b");
    // Killed just before the swap: the old backup is whole under the name.
    let output = run_with(
        tmp.path(),
        &double.url,
        "create:before-rename=kill",
        &[
            "backup",
            "create",
            b.to_str().unwrap(),
            "--force",
            "-d",
            "new",
        ],
    );
    assert!(killed(&output));
    assert_eq!(description(&b), "old");
    test::validates(&b);
    test::refuses_as_unfinished(&tmp.path().join(".b.wqm-staging/backup"));
    // Killed just after it: the new one is.
    let output = run_with(
        tmp.path(),
        &double.url,
        "create:replaced-not-removed=kill",
        &[
            "backup",
            "create",
            b.to_str().unwrap(),
            "--force",
            "-d",
            "new",
        ],
    );
    assert!(killed(&output));
    assert_eq!(description(&b), "new");
    test::validates(&b);
    let tmp = cleanup(tmp, &double, |_| {});
    assert_eq!(ls_a(tmp.path()), ["b"]);
    assert!(double.snapshots_left().is_empty());
}

#[test]
fn a_backup_killed_while_verifying_never_validates() {
    let double = Double::start();
    let tmp = tempfile::tempdir().unwrap();
    let output = run_with(
        tmp.path(),
        &double.url,
        "create:verifying=kill",
        &["backup", "create", tmp.path().join("b").to_str().unwrap()],
    );
    assert!(killed(&output));
    let staged = tmp.path().join(".b.wqm-staging/backup");
    assert!(staged.join("metadata/manifest.json").is_file());
    test::refuses_as_unfinished(&staged);
    Test::new()
        .env("QDRANT_URL", &double.url)
        .args(&format!("backup restore {} --dry-run", staged.display()))
        .status(3)
        .stderr_with(|e| {
            assert!(
                e.contains("is the staging directory of an unfinished backup, not a backup"),
                "{e}"
            )
        })
        .run();
    Test::new()
        .args(&format!("backup list {}", tmp.path().display()))
        .stdout_with(|o| assert!(!o.contains("wqm-staging"), "{o}"))
        .run();
}

#[test]
#[cfg_attr(
    not(real_qdrant),
    ignore = "needs a real Qdrant: set WQM_TEST_QDRANT_BIN or WQM_TEST_QDRANT_URL"
)]
fn real_server_kill_9_of_wqm_at_each_phase_leaves_nothing_after_the_next_run() {
    use crate::real_qdrant::{self, Server};
    let server = Server::start();
    real_qdrant::workspace(&server);
    let before = real_qdrant::fingerprint(&server);
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("data")).unwrap();
    fixtures::state_db(&tmp.path().join("data/state.db"));
    let target = tmp.path().join("b");
    for point in [
        "create:snapshot-made",
        "create:downloading",
        "create:downloaded",
        "create:databases",
        "create:manifest",
        "create:verifying",
    ] {
        let output = run_with(
            tmp.path(),
            &server.url,
            &format!("{point}=kill"),
            &["backup", "create", target.to_str().unwrap()],
        );
        assert!(killed(&output), "{point}");
        assert!(!target.exists(), "{point}: no backup appears");
        let left = server.snapshots_left();
        let cleaned = run_with(
            tmp.path(),
            &server.url,
            "",
            &["backup", "cleanup", tmp.path().to_str().unwrap()],
        );
        let out = String::from_utf8_lossy(&cleaned.stdout);
        assert!(cleaned.status.success(), "{point}: {out}");
        for snapshot in &left {
            let name = snapshot.rsplit('/').next().unwrap();
            assert!(
                out.contains(&format!("deleted snapshot `{name}`")),
                "{point}: {out}"
            );
        }
        assert_eq!(server.snapshots_left(), Vec::<String>::new(), "{point}");
        assert_eq!(ls_a(tmp.path()), ["data"], "{point}");
    }
    // A complete backup, then a restore killed at each phase; the next run cleans up and a
    // rerun completes it.
    let output = run_with(
        tmp.path(),
        &server.url,
        "",
        &["backup", "create", target.to_str().unwrap()],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for point in [
        "restore:uploading",
        "restore:uploaded",
        "restore:database-replaced",
    ] {
        let output = run_with(
            tmp.path(),
            &server.url,
            &format!("{point}=kill"),
            &[
                "backup",
                "restore",
                target.to_str().unwrap(),
                "--force",
                "--overwrite",
            ],
        );
        assert!(
            killed(&output),
            "{point}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let cleaned = run_with(
            tmp.path(),
            &server.url,
            "",
            &["backup", "cleanup", tmp.path().to_str().unwrap()],
        );
        let out = String::from_utf8_lossy(&cleaned.stdout);
        assert!(cleaned.status.success(), "{point}: {out}");
        assert!(
            out.contains("the way back: wqm backup restore "),
            "{point}: {out}"
        );
        assert_eq!(server.snapshots_left(), Vec::<String>::new(), "{point}");
        assert!(!tmp.path().join("data/.wqm-restore").exists(), "{point}");
    }
    let output = run_with(
        tmp.path(),
        &server.url,
        "",
        &[
            "backup",
            "restore",
            target.to_str().unwrap(),
            "--force",
            "--overwrite",
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(real_qdrant::fingerprint(&server), before);
    assert_eq!(server.snapshots_left(), Vec::<String>::new());
}

#[test]
fn a_backups_directory_holds_only_backups() {
    let double = Double::start();
    let tmp = tempfile::tempdir().unwrap();
    // wqm 0.3.0 left a lock file beside every backup; nobody holds this one.
    fs::write(tmp.path().join(".old.wqm-lock"), "").unwrap();
    let tmp = backup(tmp, &double, "b1", "one");
    let tmp = backup(tmp, &double, "b2", "two");
    let (_, tmp) = Test::in_dir(tmp)
        .env("QDRANT_URL", &double.url)
        .args("backup create {TMP}/b2 --force")
        .stdout_with(|o| assert!(o.starts_with("Backup created: "), "{o}"))
        .run();
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup prune {TMP} --keep-last 1")
        .stdout_with(|o| assert!(o.starts_with("Pruned "), "{o}"))
        .run();
    // Beside the backups only the runs' locks, none left once they ended, and the place their
    // lock objects are written before they are renamed, empty.
    assert_eq!(ls_a(tmp.path()), ["b2"]);
    assert!(tmp.path().join(".wqm-locks").is_dir());
    assert!(ls_a(&tmp.path().join(".wqm-locks")).is_empty());
    assert!(ls_a(&tmp.path().join(".wqm-backend/tmp")).is_empty());
}

/// The dirty shard's answer, as Qdrant 1.18.3 words it (recorded: `exchanges.json`).
const DIRTY: &str = "Qdrant cannot load it (500: Service internal error: 1 of 1 read operations failed: Service internal error: Failed to Get Info, Dirty shard - shard is not fully initialized)";

#[test]
fn qdrant_gone_mid_download_for_longer_than_the_retry_time_says_what_stays_on_the_server() {
    let double = Double::start();
    double.state().faults = Faults {
        download: Some((DownloadFault::Die { after: 50_000 }, 1)),
        // Longer than the retry time below: the download and the delete both give up (each
        // attempt waits a retry time for a refused connection, and the download tries three
        // times: about 4 s in all).
        outage: Some(Duration::from_secs(6)),
        ..Faults::default()
    };
    let url = double.url.clone();
    let (_, tmp) = Test::new()
        .env("QDRANT_URL", &double.url)
        .env("WQM_BACKUP__TRANSFER__PARALLEL", "1")
        .env("WQM_BACKUP__TRANSFER__RETRIES", "1")
        .env("WQM_BACKUP__TRANSFER__RETRY_TIMEOUT", "1")
        .args("backup create {TMP}/b --quiet")
        .status(1)
        .stderr_with(move |e| {
            let (action, error) = e.split_once("wqm: error: ").unwrap();
            assert!(
                action.starts_with("wqm: action needed: snapshot `small-named-409846322439763-"),
                "{e}"
            );
            assert!(
                action.contains(&format!(
                    ".snapshot` of `small-named` is left on Qdrant at {url}: the run could not delete it; the next wqm run in `"
                )),
                "{e}"
            );
            assert!(action.contains("` (or `wqm backup cleanup "), "{e}");
            assert!(
                action.contains(&format!(
                    "deletes it, or delete it now with: curl -X DELETE '{url}/collections/small-named/snapshots/small-named-"
                )),
                "{e}"
            );
            assert!(error.starts_with("the download of `small-named-"), "{e}");
        })
        .run();
    assert_eq!(double.snapshots_left().len(), 1);
    assert!(!tmp.path().join("b").exists());
    // Once Qdrant is back, the next run deletes it.
    std::thread::sleep(Duration::from_secs(6));
    let tmp = cleanup(tmp, &double, |out| {
        assert!(out.contains("  deleted snapshot `small-named-"), "{out}")
    });
    assert!(double.snapshots_left().is_empty());
    assert!(ls_a(tmp.path()).is_empty(), "{:?}", ls_a(tmp.path()));
}

//! The backups directory's lock (lock objects in `.wqm-locks/`): every run holds it for its
//! whole life, shared by creates and readers, exclusive by prune. A run waiting for it stops on
//! Ctrl-C with 130 and says what it waited for; a lock of another host counts until it is
//! stale; and the races that lost data under the chunk store's `flock` (a prune while a full
//! `create --force` replaced a backup, a prune between two files of a reader) cannot happen.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wqm::backend::lock::LockInfo;

use crate::incremental::{chunk_files, older_store, two_nights, two_nights_from, validate};
use crate::incremental::{workspace, wqm};
use crate::qdrant_double::Double;
use crate::test::{self, Test};

/// What a lock object of a run of another host says, `age` seconds old (30 minutes make it
/// stale).
pub(crate) fn foreign_lock(exclusive: bool, age: f64) -> LockInfo {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    LockInfo {
        host: "elsewhere.example".into(),
        pid: 4242,
        time: now - age,
        started: now - age,
        exclusive,
        kind: None,
        command: if exclusive {
            "backup prune"
        } else {
            "backup create"
        }
        .into(),
        version: "0.4.0".into(),
    }
}

/// A lock object as a run of another host leaves it in `backups`, `age` seconds old.
fn planted(backups: &Path, exclusive: bool, age: f64) -> PathBuf {
    let info = foreign_lock(exclusive, age);
    let dir = backups.join(".wqm-locks");
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join(if exclusive { "planted-x" } else { "planted-s" });
    fs::write(&path, serde_json::to_vec(&info).unwrap()).unwrap();
    path
}

/// The lock objects in `backups`.
fn locks(backups: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(backups.join(".wqm-locks"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// `wqm ARGS` against the double, in the test's directory.
fn command(home: &Path, url: &str, args: &[&str]) -> std::process::Command {
    let mut command = test::wqm_command(home, args);
    command
        .env("QDRANT_URL", url)
        .env("WQM_DATA_DIR", home.join("data"))
        .env("WQM_FAILPOINT_DIR", home);
    command
}

/// `wqm ARGS` interrupted once it has waited for the lock a moment.
fn interrupted_while_waiting(home: &Path, url: &str, args: &[&str]) -> Output {
    let started = Instant::now();
    test::interrupted(command(home, url, args), || {
        started.elapsed() > Duration::from_millis(800)
    })
}

fn assert_interrupted_waiting(output: &Output) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted while waiting for the lock on the backups directory"),
        "{stderr}"
    );
    assert!(!stderr.contains("damaged"), "{stderr}");
}

/// `wqm ARGS` started with `failpoints`, once it waits at the failpoint `marker` (its file in
/// the test's directory).
fn paused(home: &Path, url: &str, failpoints: &str, marker: &str, args: &[&str]) -> Child {
    let child = command(home, url, args)
        .env("WQM_FAILPOINTS", failpoints)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !home.join(marker).exists() {
        assert!(Instant::now() < deadline, "`{marker}` was never reached");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// `wqm ARGS` started in the background.
fn started(home: &Path, url: &str, args: &[&str]) -> Child {
    command(home, url, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Lets `child` run a moment and checks it is still waiting.
fn still_waiting(child: &mut Child, what: &str) {
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "{what} did not wait for the lock"
    );
}

fn finished(child: Child) -> (i32, String, String) {
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_create_full_or_incremental_waiting_for_a_prune_stops_on_ctrl_c_with_130() {
    let double = Double::start();
    let tmp = two_nights(&double);
    let backups = tmp.path().join("backups");
    planted(&backups, true, 0.0);
    for (name, extra) in [("n3", Some("--incremental")), ("n4", None)] {
        let target = backups.join(name);
        let mut args = vec!["backup", "create", target.to_str().unwrap()];
        args.extend(extra);
        let output = interrupted_while_waiting(tmp.path(), &double.url, &args);
        assert_interrupted_waiting(&output);
        assert!(!target.exists());
    }
    assert_eq!(locks(&backups), ["planted-x"], "no lock of theirs is left");
}

#[test]
fn validate_waiting_for_a_prune_is_no_finding_about_the_backup() {
    let double = Double::start();
    let tmp = two_nights(&double);
    let backups = tmp.path().join("backups");
    planted(&backups, true, 0.0);
    let output = interrupted_while_waiting(
        tmp.path(),
        &double.url,
        &["backup", "validate", backups.join("n1").to_str().unwrap()],
    );
    assert_interrupted_waiting(&output);
}

#[test]
fn a_fresh_lock_of_another_host_holds_prune_off_a_stale_one_does_not_and_cleanup_removes_it() {
    let double = Double::start();
    // Counted chunk by chunk: a store of loose chunks.
    let tmp = two_nights_from(older_store(workspace()), &double);
    let backups = tmp.path().join("backups");
    let before = chunk_files(&backups);
    // A create on another host, under way: prune waits for it, deleting nothing.
    let lock = planted(&backups, false, 0.0);
    let prune = [
        "backup",
        "prune",
        backups.to_str().unwrap(),
        "--keep-last",
        "1",
    ];
    let output = interrupted_while_waiting(tmp.path(), &double.url, &prune);
    assert_interrupted_waiting(&output);
    assert!(backups.join("n1").is_dir(), "nothing was pruned");
    assert_eq!(chunk_files(&backups), before, "no chunk was collected");

    // That host died an hour ago: its lock protects nothing.
    planted(&backups, false, 3600.0);
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup prune {TMP}/backups --keep-last 1")
        .stdout_with(|o| assert!(o.contains("Chunk store: deleted "), "{o}"))
        .run();
    assert!(!backups.join("n1").exists());
    assert!(chunk_files(&backups).len() < before.len());
    assert!(lock.exists(), "prune leaves a stale lock to cleanup");

    let (_, tmp) = wqm(
        Test::in_dir(tmp),
        &double.url,
        "backup cleanup {TMP}/backups --json",
    )
    .stdout_json(|v| {
        let removed = v["stale_locks_removed"].as_array().unwrap();
        assert_eq!(removed.len(), 1, "{v}");
        assert_eq!(removed[0]["host"], "elsewhere.example", "{v}");
        assert_eq!(removed[0]["command"], "backup create", "{v}");
    })
    .run();
    assert!(!lock.exists());
    planted(&backups, true, 3600.0);
    wqm(Test::in_dir(tmp), &double.url, "backup cleanup {TMP}/backups")
        .stdout_with(|o| {
            assert!(
                o.contains("Removed a stale exclusive lock of `wqm backup prune` (pid 4242 on `elsewhere.example`, last refreshed "),
                "{o}"
            )
        })
        .run();
    assert_eq!(locks(&backups), Vec::<String>::new());
}

#[test]
fn a_running_incremental_create_holds_prune_off_until_it_is_done() {
    let double = Double::start();
    let tmp = two_nights(&double);
    let backups = tmp.path().join("backups");
    // n3 shares n1's chunks of `small-named` and waits before writing its manifest.
    let create = paused(
        tmp.path(),
        &double.url,
        "create:manifest=wait",
        "create-manifest",
        &[
            "backup",
            "create",
            backups.join("n3").to_str().unwrap(),
            "--incremental",
        ],
    );
    let mut prune = started(
        tmp.path(),
        &double.url,
        &[
            "backup",
            "prune",
            backups.to_str().unwrap(),
            "--keep-last",
            "1",
        ],
    );
    still_waiting(&mut prune, "prune");
    assert!(backups.join("n1").is_dir(), "nothing is pruned meanwhile");
    fs::remove_file(tmp.path().join("create-manifest")).unwrap();
    let (code, stdout, stderr) = finished(create);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, stdout, stderr) = finished(prune);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("Chunk store: deleted "), "{stdout}");
    assert!(!backups.join("n1").exists() && !backups.join("n2").exists());
    validate(tmp, "backups/n3");
}

/// A full `create --force` replacing `n1` took no store lock, and `scan` skips a target being
/// written: a prune meanwhile collected `n1`'s chunks, and when the create then failed, the old
/// `n1` stayed with chunks missing. Now the prune waits for the create.
#[test]
fn a_prune_during_a_create_force_that_fails_leaves_the_old_backup_whole() {
    let double = Double::start();
    let tmp = two_nights(&double);
    let backups = tmp.path().join("backups");
    let create = paused(
        tmp.path(),
        &double.url,
        "create:manifest=wait;create:verifying=error",
        "create-manifest",
        &[
            "backup",
            "create",
            backups.join("n1").to_str().unwrap(),
            "--force",
        ],
    );
    let mut prune = started(
        tmp.path(),
        &double.url,
        &[
            "backup",
            "prune",
            backups.to_str().unwrap(),
            "--keep-last",
            "5",
        ],
    );
    still_waiting(&mut prune, "prune");
    fs::remove_file(tmp.path().join("create-manifest")).unwrap();
    let (code, _, stderr) = finished(create);
    assert_eq!(code, 1, "the create fails at its failpoint: {stderr}");
    let (code, stdout, stderr) = finished(prune);
    assert_eq!(code, 0, "{stdout}{stderr}");
    validate(tmp, "backups/n1");
}

/// A reader opened the chunk store per file: a prune between two of its files deleted its
/// backup and that backup's chunks. Now the prune waits for the export to end.
#[test]
fn a_prune_between_two_files_of_an_export_waits_for_it() {
    let double = Double::start();
    let tmp = two_nights(&double);
    let backups = tmp.path().join("backups");
    let away = tmp.path().join("away/n1");
    let export = paused(
        tmp.path(),
        &double.url,
        "export:file-copied=wait",
        "export-file-copied",
        &[
            "backup",
            "export",
            backups.join("n1").to_str().unwrap(),
            away.to_str().unwrap(),
        ],
    );
    let mut prune = started(
        tmp.path(),
        &double.url,
        &[
            "backup",
            "prune",
            backups.to_str().unwrap(),
            "--keep-last",
            "1",
        ],
    );
    still_waiting(&mut prune, "prune");
    assert!(backups.join("n1").is_dir());
    // The export goes on file by file (each stops at the failpoint) to its end.
    let marker = tmp.path().join("export-file-copied");
    let mut export = export;
    while export.try_wait().unwrap().is_none() {
        let _ = fs::remove_file(&marker);
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, stdout, stderr) = finished(export);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, stdout, stderr) = finished(prune);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("Chunk store: deleted "), "{stdout}");
    assert!(!backups.join("n1").exists(), "pruned once the export ended");
    validate(tmp, "away/n1");
}

/// The data of a store made before lock objects: `lock` for `flock`, no required feature.
fn as_made_before_lock_objects(backups: &Path) {
    let params = backups.join(".wqm-chunks/store.json");
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&params).unwrap()).unwrap();
    v["format"] = 1.into();
    v.as_object_mut().unwrap().remove("required_features");
    fs::write(&params, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    fs::write(backups.join(".wqm-chunks/lock"), "").unwrap();
}

fn required_features(backups: &Path) -> serde_json::Value {
    let params = fs::read(backups.join(".wqm-chunks/store.json")).unwrap();
    serde_json::from_slice::<serde_json::Value>(&params).unwrap()["required_features"].clone()
}

#[test]
fn a_store_made_before_lock_objects_keeps_its_flock_until_prune_marks_it() {
    let double = Double::start();
    // Made before lock objects, so before pack files too.
    let tmp = two_nights_from(older_store(workspace()), &double);
    let backups = tmp.path().join("backups");
    assert_eq!(
        required_features(&backups),
        serde_json::json!(["lock-objects"])
    );
    as_made_before_lock_objects(&backups);
    let flock = || fs::File::open(backups.join(".wqm-chunks/lock")).unwrap();
    // An older wqm's create holds the `flock` shared: readers go along, prune's garbage
    // collection leaves the store alone and does not mark it.
    let older = flock();
    older.lock_shared().unwrap();
    let tmp = validate(tmp, "backups/n2");
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup prune {TMP}/backups --keep-last 5")
        .stdout_with(|o| {
            assert!(
                o.contains("Chunk store: in use by a wqm older than lock objects"),
                "{o}"
            )
        })
        .run();
    assert_eq!(required_features(&backups), serde_json::Value::Null);
    drop(older);
    // An older wqm's garbage collection holds it exclusively: a reader waits for it.
    let older = flock();
    older.lock().unwrap();
    let output = interrupted_while_waiting(
        tmp.path(),
        &double.url,
        &[
            "backup",
            "validate",
            backups.join("n1").to_str().unwrap(),
            "--check-files",
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted while waiting for the chunk store"),
        "{stderr}"
    );
    drop(older);
    // With no older run, the next prune marks the store: older versions refuse it from then
    // on, and no run takes the `flock` any more.
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup prune {TMP}/backups --keep-last 5")
        .stdout_with(|o| {
            assert!(
                o.contains("Chunk store: deleted 0 unreferenced chunks"),
                "{o}"
            )
        })
        .run();
    assert_eq!(
        required_features(&backups),
        serde_json::json!(["lock-objects"])
    );
    let held = flock();
    held.lock().unwrap();
    validate(tmp, "backups/n1");
}

#[test]
fn a_prune_of_either_side_waits_for_a_copy() {
    let double = Double::start();
    let tmp = two_nights(&double);
    let backups = tmp.path().join("backups");
    let offsite = tmp.path().join("offsite");
    // Paused before its first commit, with chunks of both nights landed in the destination.
    let copy = paused(
        tmp.path(),
        &double.url,
        "copy:before-manifest=wait",
        "copy-before-manifest",
        &[
            "backup",
            "copy",
            backups.to_str().unwrap(),
            offsite.to_str().unwrap(),
        ],
    );
    let prune = |dir: &Path| {
        started(
            tmp.path(),
            &double.url,
            &["backup", "prune", dir.to_str().unwrap(), "--keep-last", "1"],
        )
    };
    let (mut source, mut dest) = (prune(&backups), prune(&offsite));
    still_waiting(&mut source, "prune of the source");
    still_waiting(&mut dest, "prune of the destination");
    assert!(backups.join("n1").is_dir());
    let marker = tmp.path().join("copy-before-manifest");
    let mut copy = copy;
    while copy.try_wait().unwrap().is_none() {
        let _ = fs::remove_file(&marker);
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, stdout, stderr) = finished(copy);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("2 backup(s) copied"), "{stdout}");
    for (prune, dir) in [(source, &backups), (dest, &offsite)] {
        let (code, stdout, stderr) = finished(prune);
        assert_eq!(code, 0, "{stdout}{stderr}");
        assert!(!dir.join("n1").exists(), "pruned once the copy ended");
    }
    // What the destination's prune kept names only chunks it kept.
    validate(tmp, "offsite/n2");
}

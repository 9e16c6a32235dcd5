//! `create s3://BUCKET/PREFIX/NAME`: a full backup sent to the real SeaweedFS, its manifest
//! last; what a killed run left is removed by the next one or by `cleanup`.

use std::process::Command;
use std::sync::Arc;

use tempfile::TempDir;
use wqm::backend::{self, Backend, Name};

use crate::faults::killed;
use crate::incremental::{workspace, wqm};
use crate::qdrant_double::Double;
use crate::restore::lose_everything;
use crate::s3_read::{fresh_prefix, object_names, s3_variables, with_s3};
use crate::test::{self, Test};

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn a_backup_created_on_s3_is_listed_validated_and_restored() {
    let double = Double::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (backend, url) = fresh_prefix(&runtime);
    let shown = format!("{url}/first");
    let (_, tmp) = with_s3(wqm(
        Test::in_dir(workspace()),
        &double.url,
        &format!("backup create {url}/first --json"),
    ))
    .env("TMPDIR", "{TMP}")
    .stdout_json(move |v| assert_eq!(v["path"], shown.as_str(), "{v}"))
    .run();
    // Nothing of the local copy it was made in is left.
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".wqm-s3-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let runs = runtime.block_on(backend.list(".wqm-runs/")).unwrap();
    assert!(runs.is_empty(), "{runs:?}");
    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!("backup validate {url}/first --check-files"))
        .stdout_with(|o| assert!(o.starts_with("Backup validation successful"), "{o}"))
        .run();
    lose_everything(&double);
    let (_, tmp) = with_s3(wqm(
        Test::in_dir(tmp),
        &double.url,
        &format!("backup restore {url}/first --force"),
    ))
    .env("WQM_BACKUP__DEFAULT_BACKUP_DIRECTORY", "{TMP}/safety")
    .stdout_with(|o| assert!(o.contains("Restore completed"), "{o}"))
    .run();
    double.assert_holds_the_fixtures();

    // The name is taken (for an incremental backup too): refused before Qdrant is asked, with
    // `--force` as the way (`s3_force.rs`).
    let asked = double.state().requests.len();
    let mut tmp = tmp;
    for (flags, said) in [
        ("", "pass `--force` to replace it"),
        ("--incremental", "already exists"),
    ] {
        tmp = with_s3(wqm(
            Test::in_dir(tmp),
            &double.url,
            &format!("backup create {url}/first {flags}"),
        ))
        .status(2)
        .stderr_with(move |e| assert!(e.contains(said), "{e}"))
        .run()
        .1;
    }
    assert_eq!(double.state().requests.len(), asked);
}

/// A `create` to a fresh prefix killed after sending its files, before its manifest: the
/// objects it left, under `killed/`.
pub(crate) fn killed_create(
    double: &Double,
    tmp: &TempDir,
    runtime: &tokio::runtime::Runtime,
) -> (Arc<dyn Backend>, String) {
    let (backend, url) = fresh_prefix(runtime);
    let mut command: Command = test::wqm_command(
        &tmp.path().join("home"),
        &["backup", "create", &format!("{url}/killed")],
    );
    command
        .env("QDRANT_URL", &double.url)
        .env("WQM_DATA_DIR", tmp.path().join("data"))
        .env("TMPDIR", tmp.path())
        .env("WQM_FAILPOINTS", "create:s3-before-manifest=kill");
    s3_variables(&mut command);
    let output = command.output().unwrap();
    assert!(killed(&output), "{output:?}");
    let objects = runtime.block_on(backend.list("killed/")).unwrap();
    assert!(!objects.is_empty(), "the files were sent before the kill");
    (backend, url)
}

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn a_killed_create_is_never_a_backup_and_the_next_run_removes_it() {
    let double = Double::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let tmp = workspace();
    let (backend, url) = killed_create(&double, &tmp, &runtime);
    // No manifest: no backup, for every reader.
    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!("backup list {url}"))
        .stdout(&format!("No backups found in {url}\n"))
        .run();
    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!("backup validate {url}/killed"))
        .status(3)
        .stdout_with(|_| {})
        .stderr_with(|_| {})
        .run();
    // The next create to the repository removes it, saying so.
    let (_, tmp) = with_s3(wqm(
        Test::in_dir(tmp),
        &double.url,
        &format!("backup create {url}/next"),
    ))
    .stdout_with(|o| assert!(o.starts_with("Backup created: s3://"), "{o}"))
    .stderr_with(|e| {
        assert!(
            e.contains("removed what a killed run left of `killed`"),
            "{e}"
        )
    })
    .run();
    assert!(runtime
        .block_on(backend.list("killed/"))
        .unwrap()
        .is_empty());
    assert!(runtime
        .block_on(backend.list(".wqm-runs/"))
        .unwrap()
        .is_empty());
    with_s3(Test::in_dir(tmp))
        .args(&format!("backup list {url} --json"))
        .stdout_json(|v| assert_eq!(v.as_array().unwrap().len(), 1, "{v}"))
        .run();
}

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn cleanup_removes_what_a_killed_create_left_on_s3() {
    let double = Double::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let tmp = workspace();
    let (backend, url) = killed_create(&double, &tmp, &runtime);
    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!("backup cleanup {url}"))
        .stdout_with(|o| {
            assert!(
                o.contains("\nRemoved what a killed run left of `killed`: "),
                "{o}"
            );
            // Its lock, of a process of this host that is gone, is stale at once.
            assert!(
                o.starts_with("Removed a stale shared lock of `wqm backup create` (pid "),
                "{o}"
            );
        })
        .run();
    for prefix in ["killed/", ".wqm-runs/", ".wqm-locks/"] {
        assert!(
            runtime.block_on(backend.list(prefix)).unwrap().is_empty(),
            "{prefix}"
        );
    }
    with_s3(Test::in_dir(tmp))
        .args(&format!("backup cleanup {url} --json"))
        .stdout_json(|v| assert_eq!(v["remote_runs_removed"], serde_json::json!([]), "{v}"))
        .run();
}

/// A killed create of another host: its record is left while that host's lock is fresh (the
/// run may live), and cleaned up once the lock has gone stale.
#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn what_a_killed_run_of_another_host_left_is_removed_once_its_lock_is_stale() {
    let double = Double::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let tmp = workspace();
    let (backend, url) = killed_create(&double, &tmp, &runtime);
    // The killed run, as if it had run on another host (the lock planted is that host's).
    let foreign = crate::store_lock::foreign_lock(false, 0.0);
    let record = Name::new(".wqm-runs/killed").unwrap();
    let text = serde_json::json!({"host": foreign.host, "pid": foreign.pid, "started": foreign.started, "target": "killed"});
    runtime
        .block_on(backend.save(&record, backend::once(serde_json::to_vec(&text).unwrap())))
        .unwrap();
    for (name, _) in runtime
        .block_on(backend::lock::list(backend.as_ref()))
        .unwrap()
    {
        runtime.block_on(backend.remove(&name)).unwrap();
    }
    crate::s3_lock::plant(&runtime, &backend, false, 60.0);
    let cleanup = |tmp: TempDir, removed: usize| {
        with_s3(Test::in_dir(tmp))
            .args(&format!("backup cleanup {url} --json"))
            .stdout_json(move |v| {
                assert_eq!(
                    v["remote_runs_removed"].as_array().map(Vec::len),
                    Some(removed),
                    "{v}"
                )
            })
            .run()
            .1
    };
    // Its lock is fresh: that run may still be sending; nothing of it is touched.
    let tmp = cleanup(tmp, 0);
    assert!(!runtime
        .block_on(backend.list("killed/"))
        .unwrap()
        .is_empty());
    assert_eq!(
        runtime.block_on(backend.list(".wqm-runs/")).unwrap().len(),
        1
    );
    // Half an hour without a refresh: the run is over, and what it left goes.
    for (name, _) in runtime
        .block_on(backend::lock::list(backend.as_ref()))
        .unwrap()
    {
        runtime.block_on(backend.remove(&name)).unwrap();
    }
    crate::s3_lock::plant(&runtime, &backend, false, 31.0 * 60.0);
    cleanup(tmp, 1);
    for prefix in ["killed/", ".wqm-runs/"] {
        assert!(
            runtime.block_on(backend.list(prefix)).unwrap().is_empty(),
            "{prefix}"
        );
    }
}

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn a_default_backup_directory_on_s3_is_where_create_prune_and_cleanup_work() {
    let double = Double::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (backend, url) = fresh_prefix(&runtime);
    let tmp = workspace();
    std::fs::write(
        tmp.path().join("c.yaml"),
        format!("backup:\n  default_backup_directory: {url}\n"),
    )
    .unwrap();
    let mut made = Vec::new();
    let mut tmp = tmp;
    for _ in 0..2 {
        let (output, next) = with_s3(wqm(
            Test::in_dir(tmp),
            &double.url,
            "--config {TMP}/c.yaml backup create --json",
        ))
        .env("TMPDIR", "{TMP}")
        .stdout_with(|_| {})
        .run();
        let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let path = summary["path"].as_str().unwrap().to_string();
        assert!(path.starts_with(&format!("{url}/backup-")), "{summary}");
        made.push(path);
        tmp = next;
        // Names are by the second.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let listed = runtime.block_on(backend.list("")).unwrap();
    assert!(
        listed
            .iter()
            .any(|o| o.name.ends_with("/metadata/manifest.json")),
        "{listed:?}"
    );
    // A restore of one: its safety backup goes to the default directory on S3 (made locally,
    // then sent, as a create there), and is a backup there like any other.
    let (_, tmp) = with_s3(wqm(
        Test::in_dir(tmp),
        &double.url,
        &format!(
            "--config {{TMP}}/c.yaml backup restore {} --overwrite --force",
            made[0]
        ),
    ))
    .env("TMPDIR", "{TMP}")
    .stdout_with(|o| assert!(o.contains("Restore completed"), "{o}"))
    .stderr_with(|_| {})
    .run();
    let safety: Vec<String> = object_names(&runtime, &backend, "")
        .into_iter()
        .filter_map(|name| {
            name.strip_suffix("/metadata/manifest.json")
                .map(str::to_string)
        })
        .filter(|name| name.starts_with("safety-"))
        .collect();
    assert_eq!(safety.len(), 1, "{safety:?}");
    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!(
            "backup validate {url}/{} --check-files",
            safety[0]
        ))
        .stdout_with(|o| assert!(o.starts_with("Backup validation successful"), "{o}"))
        .run();
    let newest = made[1].rsplit('/').next().unwrap().to_string();
    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .args("--config {TMP}/c.yaml backup prune --keep-last 1 --json")
        .stdout_json(move |v| {
            assert_eq!(v["directory"], url.as_str(), "{v}");
            assert_eq!(v["removed"].as_array().unwrap().len(), 1, "{v}");
            // The newest backup, and the safety backup (kept by its own policy).
            let kept: Vec<&str> = v["kept"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["name"].as_str().unwrap())
                .collect();
            assert_eq!(kept.len(), 2, "{v}");
            assert!(kept.contains(&newest.as_str()), "{v}");
        })
        .run();
    with_s3(Test::in_dir(tmp))
        .args("--config {TMP}/c.yaml backup cleanup --json")
        .stdout_json(|v| {
            assert_eq!(v["stale_locks_removed"], serde_json::json!([]), "{v}");
            assert_eq!(v["remote_runs_removed"], serde_json::json!([]), "{v}");
        })
        .run();
    let names: std::collections::BTreeSet<String> = object_names(&runtime, &backend, "")
        .into_iter()
        .map(|name| name.split('/').next().unwrap().to_string())
        .collect();
    let kept = made[1].rsplit('/').next().unwrap();
    let expected = [kept.to_string(), safety[0].clone()].into_iter().collect();
    assert_eq!(names, expected, "{names:?}");
}

/// In `dir`: a local staging directory for S3 (`.wqm-s3-PID-*`, with a file in it) of a process
/// that is gone, and one of this (live) process.
pub(crate) fn stagings(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let mut gone = Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let dead = dir.join(format!(".wqm-s3-{}-abc123", gone.id()));
    let live = dir.join(format!(".wqm-s3-{}-def456", std::process::id()));
    for staging in [&dead, &live] {
        std::fs::create_dir_all(staging.join("n1/collections")).unwrap();
        std::fs::write(staging.join("n1/collections/x.snapshot"), b"staged").unwrap();
    }
    (dead, live)
}

/// `cleanup` removes the local copy a killed run was sending to S3 (`$TMPDIR/.wqm-s3-PID-*`),
/// and leaves a live run's. No S3 server needed: it is this host's temporary directory.
#[test]
fn cleanup_removes_a_killed_runs_local_staging_for_s3() {
    let tmp = tempfile::tempdir().unwrap();
    let (dead, live) = stagings(tmp.path());
    let shown = dead.display().to_string();
    let (_, _tmp) = Test::in_dir(tmp)
        .env("TMPDIR", "{TMP}")
        .args("backup cleanup --json")
        .stdout_json(move |v| assert_eq!(v["staging_removed"], serde_json::json!([shown]), "{v}"))
        .run();
    assert!(!dead.exists() && live.exists());
}

//! `create --force` to S3 (`backup::replace`): the new backup is sent beside the old one, then
//! put in its place under a lock that keeps readers out; the name holds a whole backup, the old
//! or the new, whenever a run is killed, and what it left is finished or undone by the next runs.

use std::cell::Cell;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use wqm::backend::lock::LockInfo;
use wqm::backend::{Backend, Name};

use crate::incremental::{grow_state_db, workspace, wqm};
use crate::qdrant_double::Double;
use crate::real_encrypted::{encrypted_objects, encrypted_on_s3};
use crate::repo::{fast, FIRST};
use crate::s3_faults::{proxy, through};
use crate::s3_incremental::killed_at;
use crate::s3_lock::{finished, paused_at, plant, plant_lock, resume, s3_command};
use crate::s3_proxy::Faults;
use crate::s3_read::{fresh_prefix, object_names, with_s3};
use crate::store_lock::foreign_lock;
use crate::test::{self, Test};

/// `create TARGET EXTRA` to S3 (its local copy made in the test's directory).
fn create(t: Test, double: &Double, target: &str, extra: &str) -> TempDir {
    with_s3(wqm(
        t,
        &double.url,
        &format!("backup create {target} {extra}"),
    ))
    .env("TMPDIR", "{TMP}")
    .stdout_with(|o| assert!(o.starts_with("Backup created: s3://"), "{o}"))
    .stderr_with(|_| {})
    .run()
    .1
}

/// A fresh prefix on the S3 server, and a workspace whose full backup `b` there is described
/// `old`.
struct Old {
    double: Double,
    runtime: tokio::runtime::Runtime,
    s3: Arc<dyn Backend>,
    url: String,
    target: String,
    tmp: TempDir,
}

fn with_old_backup() -> Old {
    let double = Double::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (s3, url) = fresh_prefix(&runtime);
    let target = format!("{url}/b");
    let tmp = create(
        Test::in_dir(workspace()),
        &double,
        &target,
        "--description old",
    );
    Old {
        double,
        runtime,
        s3,
        url,
        target,
        tmp,
    }
}

/// Checks the backup at `target` is the one described `description`, and whole.
fn holds(tmp: TempDir, target: &str, description: &str) -> TempDir {
    holds_with(tmp, (target, false), description, Test::in_dir)
}

/// `holds`, each command made by `test` (an encrypted repository's password, say); with
/// `half_swapped`, each warns that a killed `--force` left the name half swapped (`cleanup`
/// finishes it), else says nothing on stderr.
fn holds_with(
    tmp: TempDir,
    (target, half_swapped): (&str, bool),
    description: &str,
    test: impl Fn(TempDir) -> Test,
) -> TempDir {
    let warned = move |e: &str| {
        let said = e.contains("was putting a new backup in place of `") && e.contains("cleanup");
        assert_eq!(said, half_swapped, "{e}");
        assert_eq!(e.is_empty(), !half_swapped, "{e}");
    };
    let said = format!("Description: {description}\n");
    let (_, tmp) = with_s3(test(tmp))
        .args(&format!("backup info {target}"))
        .stdout_with(move |o| assert!(o.contains(&said), "{o}"))
        .stderr_with(warned)
        .run();
    with_s3(test(tmp))
        .args(&format!("backup validate {target} --check-files"))
        .stdout_with(|o| assert!(o.starts_with("Backup validation successful"), "{o}"))
        .stderr_with(warned)
        .run()
        .1
}

/// The names `list` shows in the repository at `url`.
fn listed(tmp: TempDir, url: &str) -> (Vec<String>, TempDir) {
    let (output, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!("backup list {url} --json"))
        .stdout_with(|_| {})
        .run();
    let list: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let names = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_string())
        .collect();
    (names, tmp)
}

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn a_force_on_s3_replaces_the_backup_and_leaves_nothing_beside_it() {
    let Old {
        double,
        runtime,
        s3,
        url,
        target,
        tmp,
    } = with_old_backup();
    let tmp = create(
        Test::in_dir(tmp),
        &double,
        &target,
        "--force --description new",
    );
    let tmp = holds(tmp, &target, "new");
    // An incremental backup replaced by one with new chunks.
    let nightly = format!("{url}/nightly");
    let tmp = create(
        Test::in_dir(tmp),
        &double,
        &nightly,
        "--incremental --description first",
    );
    grow_state_db(tmp.path());
    let tmp = create(
        Test::in_dir(tmp),
        &double,
        &nightly,
        "--incremental --force --description second",
    );
    let tmp = holds(tmp, &nightly, "second");
    let (mut names, tmp) = listed(tmp, &url);
    names.sort();
    assert_eq!(names, ["b", "nightly"]);
    for left in [".wqm-replace/", ".wqm-runs/", ".wqm-locks/"] {
        assert!(object_names(&runtime, &s3, left).is_empty(), "{left}");
    }
    // What only the old backup named is garbage now; the new one keeps what it needs.
    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!("backup prune {url} --keep-last 5"))
        .stdout_with(|_| {})
        .run();
    holds(tmp, &nightly, "second");
}

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn a_force_on_s3_killed_anywhere_leaves_a_whole_backup_under_the_name() {
    let double = Double::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (s3, url) = fresh_prefix(&runtime);
    let mut tmp = workspace();
    // Where it was killed; which backup the name holds then; whether the swap had begun (only
    // a run holding the exclusive lock may finish it).
    let phases = [
        ("create:s3-before-manifest", "old", false),
        ("create:s3-replacing", "old", false),
        ("replace:old-manifest-removed", "new", true),
        ("replace:copied", "new", true),
        ("replace:in-place", "new", false),
    ];
    for (i, (failpoint, holding, begun)) in phases.into_iter().enumerate() {
        let name = format!("p{i}");
        let target = format!("{url}/{name}");
        tmp = create(Test::in_dir(tmp), &double, &target, "--description old");
        let args = [
            "backup",
            "create",
            &target,
            "--force",
            "--description",
            "new",
        ];
        killed_at(&double, &tmp, &args, &[], failpoint);
        tmp = holds_with(tmp, (&target, begun), holding, Test::in_dir);
        let (names, back) = listed(tmp, &url);
        assert_eq!(
            names.iter().filter(|n| **n == name).count(),
            1,
            "{failpoint}: {names:?}"
        );
        tmp = back;
        // The next create to the repository removes what it may, and says what it must leave.
        let said = match begun {
            true => {
                format!("a killed `create --force` was putting a new backup in place of `{name}`")
            }
            false => format!("removed what a killed run left of `{name}`"),
        };
        tmp = with_s3(wqm(
            Test::in_dir(tmp),
            &double.url,
            &format!("backup create {url}/other-{i}"),
        ))
        .env("TMPDIR", "{TMP}")
        .stdout_with(|_| {})
        .stderr_with(move |e| assert!(e.contains(&said), "{failpoint}: {e}"))
        .run()
        .1;
        tmp = holds_with(tmp, (&target, begun), holding, Test::in_dir);
        if begun {
            // The name is taken until the swap is finished.
            tmp = with_s3(wqm(
                Test::in_dir(tmp),
                &double.url,
                &format!("backup create {target} --force"),
            ))
            .env("TMPDIR", "{TMP}")
            .status(2)
            .stderr_with(|e| assert!(e.contains("taken by an unfinished backup"), "{e}"))
            .run()
            .1;
            // Copied from where it was sent, as every reader reads it.
            tmp = with_s3(Test::in_dir(tmp))
                .args(&format!("backup copy {url} {{TMP}}/copied {name}"))
                .stdout_with(|_| {})
                .run()
                .1;
            let copied = tmp.path().join("copied").join(&name);
            tmp = holds(tmp, copied.to_str().unwrap(), holding);
            // Nor does a copy into the repository take the name meanwhile.
            tmp = with_s3(Test::in_dir(tmp))
                .args(&format!("backup copy {{TMP}}/copied {url} {name}"))
                .status(2)
                .stdout_with(|_| {})
                .stderr_with(|e| assert!(e.contains("is putting a new backup in its place"), "{e}"))
                .run()
                .1;
            let said = format!("Removed what a killed run left of `{name}`");
            tmp = with_s3(Test::in_dir(tmp))
                .args(&format!("backup cleanup {url}"))
                .stdout_with(move |o| {
                    assert!(o.contains(&said), "{o}");
                    assert!(o.contains("is in place"), "{o}");
                })
                .run()
                .1;
            tmp = holds(tmp, &target, holding);
        }
        for left in [".wqm-replace/", ".wqm-runs/"] {
            assert!(
                object_names(&runtime, &s3, left).is_empty(),
                "{failpoint}: {left}"
            );
        }
    }
}

/// A prune that comes while a `create --force` is on its way waits for it (the create's
/// adding lock), then keeps every chunk the new backup names.
#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn a_prune_during_a_force_waits_and_keeps_the_new_backups_chunks() {
    let double = Double::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_, url) = fresh_prefix(&runtime);
    let target = format!("{url}/nightly");
    let tmp = create(
        Test::in_dir(workspace()),
        &double,
        &target,
        "--incremental --description first",
    );
    grow_state_db(tmp.path());
    let args = [
        "backup",
        "create",
        &target,
        "--incremental",
        "--force",
        "--description",
        "second",
    ];
    let command = s3_command(tmp.path(), &double.url, &args);
    let create = paused_at(tmp.path(), command, "create:s3-replacing");
    let mut prune = s3_command(
        tmp.path(),
        &double.url,
        &["backup", "prune", &url, "--keep-last", "5"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        prune.try_wait().unwrap().is_none(),
        "the prune waits for the create"
    );
    resume(tmp.path(), "create:s3-replacing");
    let (code, stdout, stderr) = finished(create);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, stdout, stderr) = finished(prune);
    assert_eq!(code, 0, "{stdout}{stderr}");
    holds(tmp, &target, "second");
}

/// Putting the new backup in place waits for readers, not for runs that only add backups: a
/// create of another host going on does not hold a `--force` up.
#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn a_force_does_not_wait_for_other_creates() {
    let Old {
        double,
        runtime,
        s3,
        target,
        tmp,
        ..
    } = with_old_backup();
    let adding = LockInfo {
        kind: Some("adding".into()),
        ..foreign_lock(false, 0.0)
    };
    plant_lock(&runtime, &s3, &adding);
    let started = Instant::now();
    let tmp = create(
        Test::in_dir(tmp),
        &double,
        &target,
        "--force --description new",
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    holds(tmp, &target, "new");
}

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn a_force_killed_mid_swap_in_an_encrypted_repository_reads_and_finishes() {
    let double = Double::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (s3, url) = fresh_prefix(&runtime);
    let tmp = encrypted_on_s3(workspace(), &url, FIRST);
    let encrypted = |tmp: TempDir| fast(Test::in_dir(tmp)).env("WQM_BACKUP_PASSWORD", FIRST);
    let target = format!("{url}/nightly");
    let tmp = create(
        encrypted(tmp),
        &double,
        &target,
        "--incremental --description first",
    );
    grow_state_db(tmp.path());
    let args = [
        "backup",
        "create",
        &target,
        "--incremental",
        "--force",
        "--description",
        "second",
    ];
    let env = [("WQM_TEST_FAST_KDF", "1"), ("WQM_BACKUP_PASSWORD", FIRST)];
    killed_at(&double, &tmp, &args, &env, "replace:copied");
    let sent = encrypted_objects(&runtime, &s3, &[".wqm-replace/"]);
    assert!(!sent.is_empty());
    let tmp = holds_with(tmp, (&target, true), "second", encrypted);
    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!("backup cleanup {url}"))
        .stdout_with(|o| assert!(o.contains("is in place"), "{o}"))
        .run();
    assert!(object_names(&runtime, &s3, ".wqm-replace/").is_empty());
    encrypted_objects(&runtime, &s3, &["nightly/"]);
    holds_with(tmp, (&target, false), "second", encrypted);
}

/// A `--force` that cannot have its replacing lock (a reader of another host holds the
/// repository; Ctrl-C ends the wait) removes its new backup: the old one stays, unchanged.
#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn a_force_that_cannot_have_the_replacing_lock_leaves_the_old_backup() {
    let Old {
        double,
        runtime,
        s3,
        target,
        tmp,
        ..
    } = with_old_backup();
    plant(&runtime, &s3, false, 0.0);
    let sent = Name::new(".wqm-replace/b/metadata/manifest.json").unwrap();
    let seen: Cell<Option<Instant>> = Cell::new(None);
    let output = test::interrupted(
        s3_command(
            tmp.path(),
            &double.url,
            &[
                "backup",
                "create",
                &target,
                "--force",
                "--description",
                "new",
            ],
        ),
        || match seen.get() {
            Some(at) => at.elapsed() > Duration::from_millis(1500),
            None => {
                if runtime.block_on(s3.stat(&sent)).is_ok() {
                    seen.set(Some(Instant::now()));
                }
                false
            }
        },
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("could not replace `b`, which is unchanged"),
        "{stderr}"
    );
    for left in [".wqm-replace/", ".wqm-runs/"] {
        assert!(object_names(&runtime, &s3, left).is_empty(), "{left}");
    }
    holds(tmp, &target, "old");
}

/// A server without `CopyObject`: the new backup's objects pass through wqm instead.
#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn a_force_on_a_server_without_server_side_copy_copies_through_wqm() {
    let Old {
        double,
        target,
        tmp,
        ..
    } = with_old_backup();
    let proxy = proxy(Faults {
        refuse_copy: true,
        ..Faults::default()
    });
    let replace = format!("backup create {target} --force --description new");
    let (_, tmp) = through(&proxy, wqm(Test::in_dir(tmp), &double.url, &replace))
        .env("TMPDIR", "{TMP}")
        .stdout_with(|o| assert!(o.starts_with("Backup created: s3://"), "{o}"))
        .run();
    assert!(proxy.seen(|s| !s.copies_refused.is_empty()));
    holds(tmp, &target, "new");
}

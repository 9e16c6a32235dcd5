//! The repository lock on S3 (`s3://BUCKET/PREFIX/.wqm-locks/`), against the real SeaweedFS:
//! every run there holds it as it does in a local directory — shared by creates and readers,
//! exclusive by prune — a fresh lock of another host holds a run off (Ctrl-C ends the wait with
//! 130), a stale one does not and `cleanup` removes it, and no run leaves its lock behind.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use wqm::backend::lock::{Kind, Lock, LockError, LockInfo, LOCKS};
use wqm::backend::{self, Backend, Name};

use crate::incremental::{workspace, wqm};
use crate::qdrant_double::Double;
use crate::s3_read::{fresh_prefix, s3_variables, with_s3};
use crate::store_lock::foreign_lock;
use crate::test::{self, Test};

/// `wqm ARGS` as a process of its own, against the double and the S3 server, in `tmp`.
pub(crate) fn s3_command(tmp: &Path, qdrant: &str, args: &[&str]) -> Command {
    let mut command = test::wqm_command(&tmp.join("home"), args);
    command
        .env("QDRANT_URL", qdrant)
        .env("WQM_DATA_DIR", tmp.join("data"))
        .env("WQM_FAILPOINT_DIR", tmp)
        .env("TMPDIR", tmp);
    s3_variables(&mut command);
    command
}

/// `command` started with `failpoint=wait`, once it waits there.
pub(crate) fn paused_at(tmp: &Path, mut command: Command, failpoint: &str) -> Child {
    let child = command
        .env("WQM_FAILPOINTS", format!("{failpoint}=wait"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let marker = tmp.join(failpoint.replace(':', "-"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "`{failpoint}` was never reached");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Lets `failpoint`'s waiting run go on.
pub(crate) fn resume(tmp: &Path, failpoint: &str) {
    std::fs::remove_file(tmp.join(failpoint.replace(':', "-"))).unwrap();
}

/// The exit status, stdout and stderr of a finished run.
pub(crate) fn finished(child: Child) -> (i32, String, String) {
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A lock object as a run of another host writes it, `age` seconds old (30 minutes make it
/// stale): what a wqm on another machine, or one killed there, leaves.
pub(crate) fn plant(
    runtime: &tokio::runtime::Runtime,
    backend: &Arc<dyn Backend>,
    exclusive: bool,
    age: f64,
) {
    plant_lock(runtime, backend, &foreign_lock(exclusive, age));
}

/// The lock object `info`, as another run wrote it.
pub(crate) fn plant_lock(
    runtime: &tokio::runtime::Runtime,
    backend: &Arc<dyn Backend>,
    info: &LockInfo,
) {
    let name = Name::new(format!("{LOCKS}planted-{}", backend::random_id())).unwrap();
    let bytes = serde_json::to_vec(&info).unwrap();
    runtime
        .block_on(backend.save(&name, backend::once(bytes)))
        .unwrap();
}

/// What the lock objects of the repository hold.
pub(crate) fn locks(
    runtime: &tokio::runtime::Runtime,
    backend: &Arc<dyn Backend>,
) -> Vec<LockInfo> {
    runtime
        .block_on(backend::lock::list(backend.as_ref()))
        .unwrap()
        .into_iter()
        .map(|(name, info)| info.unwrap_or_else(|e| panic!("`{name}`: {e}")))
        .collect()
}

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn a_create_on_s3_holds_a_shared_lock_that_keeps_a_prune_off() {
    let double = Double::start();
    let tmp = workspace();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (backend, url) = fresh_prefix(&runtime);
    let target = format!("{url}/held");
    let create = paused_at(
        tmp.path(),
        s3_command(tmp.path(), &double.url, &["backup", "create", &target]),
        "create:s3-before-manifest",
    );
    let held = locks(&runtime, &backend);
    assert_eq!(held.len(), 1, "{held:?}");
    assert!(
        !held[0].exclusive && held[0].command == "backup create",
        "{held:?}"
    );
    // Another reader goes along; an exclusive lock (a prune's) is refused while it runs.
    runtime.block_on(async {
        let reader = Lock::acquire(backend.clone(), Kind::Shared, "backup validate")
            .await
            .unwrap();
        reader.release().await.unwrap();
        match Lock::acquire(backend.clone(), Kind::Exclusive, "backup prune").await {
            Err(LockError::Locked { holder, .. }) => {
                assert!(holder.contains("`wqm backup create`"), "{holder}")
            }
            other => panic!("{other:?}"),
        }
    });
    // A prune waits for it, then goes ahead.
    let mut prune = s3_command(
        tmp.path(),
        &double.url,
        &["backup", "prune", &url, "--keep-last", "1"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        prune.try_wait().unwrap().is_none(),
        "the prune did not wait for the create's lock"
    );
    resume(tmp.path(), "create:s3-before-manifest");
    let (code, _, stderr) = finished(create);
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr) = finished(prune);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("Pruned {url}: removed 0, kept 1")),
        "{stdout}"
    );
    assert_eq!(locks(&runtime, &backend), Vec::new(), "released at the end");
}

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn a_run_waiting_for_a_lock_on_s3_stops_on_ctrl_c_with_130() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (backend, url) = fresh_prefix(&runtime);
    // Another host's prune, running now.
    plant(&runtime, &backend, true, 0.0);
    let tmp = workspace();
    let started = Instant::now();
    let backup = format!("{url}/any");
    let output = test::interrupted(
        s3_command(
            tmp.path(),
            "http://127.0.0.1:1",
            &["backup", "validate", &backup],
        ),
        || started.elapsed() > Duration::from_millis(2500),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "interrupted while waiting for the lock on the backups directory `{url}`"
        )),
        "{stderr}"
    );
    assert_eq!(locks(&runtime, &backend).len(), 1, "only the planted lock");
}

/// Runs `args` (with `{URL}` for the repository) and checks the run left no lock of its own.
fn leaves_no_lock(
    tmp: TempDir,
    double: &Double,
    runtime: &tokio::runtime::Runtime,
    backend: &Arc<dyn Backend>,
    url: &str,
    args: &str,
    status: i32,
) -> TempDir {
    let (_, tmp) = with_s3(wqm(
        Test::in_dir(tmp),
        &double.url,
        &args.replace("{URL}", url),
    ))
    .env("TMPDIR", "{TMP}")
    .env("WQM_BACKUP__DEFAULT_BACKUP_DIRECTORY", "{TMP}/safety")
    .status(status)
    .stdout_with(|_| {})
    .stderr_with(|_| {})
    .run();
    let left: Vec<LockInfo> = locks(runtime, backend)
        .into_iter()
        .filter(|l| l.host != "elsewhere.example")
        .collect();
    assert_eq!(left, Vec::new(), "`{args}` left its lock");
    tmp
}

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn a_stale_lock_on_s3_holds_no_run_off_cleanup_removes_it_and_every_run_releases_its_own() {
    let double = Double::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (backend, url) = fresh_prefix(&runtime);
    // A prune of another host that died an hour ago: stale, it holds nothing off.
    plant(&runtime, &backend, true, 3600.0);
    let mut tmp = workspace();
    for (args, status) in [
        ("backup create {URL}/a", 0),
        ("backup create {URL}/a", 2),
        ("backup info {URL}/a", 0),
        ("backup list {URL} --check", 0),
        ("backup validate {URL}/a --check-files", 0),
        ("backup validate {URL}/missing", 3),
        ("backup restore {URL}/a --dry-run --overwrite", 0),
    ] {
        tmp = leaves_no_lock(tmp, &double, &runtime, &backend, &url, args, status);
    }
    assert_eq!(
        locks(&runtime, &backend).len(),
        1,
        "the stale lock is still there"
    );

    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!("backup cleanup {url} --json"))
        .stdout_json(|v| {
            let removed = v["stale_locks_removed"].as_array().unwrap();
            assert_eq!(removed.len(), 1, "{v}");
            assert_eq!(removed[0]["host"], "elsewhere.example", "{v}");
            assert_eq!(removed[0]["command"], "backup prune", "{v}");
        })
        .run();
    assert_eq!(locks(&runtime, &backend), Vec::new());
    let objects = runtime.block_on(backend.list(LOCKS)).unwrap();
    assert!(objects.is_empty(), "{objects:?}");

    // Said in one line each.
    plant(&runtime, &backend, false, 3600.0);
    with_s3(Test::in_dir(tmp))
        .args(&format!("backup cleanup {url}"))
        .stdout_with(|o| {
            assert!(
                o.contains("Removed a stale shared lock of `wqm backup create` (pid 4242 on `elsewhere.example`, last refreshed "),
                "{o}"
            )
        })
        .run();
    assert_eq!(locks(&runtime, &backend), Vec::new());
}

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn two_creates_of_one_name_on_s3_never_write_over_each_other() {
    let double = Double::start();
    let tmp = workspace();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (backend, url) = fresh_prefix(&runtime);
    let target = format!("{url}/same");
    // The first has claimed the name and is still making the backup locally: nothing of it is
    // on S3 but its run record.
    let first = paused_at(
        tmp.path(),
        s3_command(tmp.path(), &double.url, &["backup", "create", &target]),
        "create:databases",
    );
    assert_eq!(runtime.block_on(backend.list("same/")).unwrap(), Vec::new());
    let (_, tmp) = with_s3(wqm(
        Test::in_dir(tmp),
        &double.url,
        &format!("backup create {target}"),
    ))
    .env("TMPDIR", "{TMP}")
    .status(2)
    .stderr_with(|e| {
        assert!(e.contains("`same` in `s3://"), "{e}");
        assert!(e.contains("is taken by an unfinished backup"), "{e}");
    })
    .run();
    let records = runtime.block_on(backend.list(".wqm-runs/")).unwrap();
    assert_eq!(records.len(), 1, "the first run's claim stays: {records:?}");
    resume(tmp.path(), "create:databases");
    let (code, _, stderr) = finished(first);
    assert_eq!(code, 0, "{stderr}");
    with_s3(Test::in_dir(tmp))
        .args(&format!("backup validate {target} --check-files"))
        .stdout_with(|o| assert!(o.starts_with("Backup validation successful"), "{o}"))
        .run();
    assert_eq!(
        runtime.block_on(backend.list(".wqm-runs/")).unwrap(),
        Vec::new()
    );
    assert_eq!(locks(&runtime, &backend), Vec::new());
}

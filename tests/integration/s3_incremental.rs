//! `create --incremental s3://BUCKET/PREFIX/NAME` against the real SeaweedFS: nights that send
//! only the chunks the repository lacks, restored, validated and pruned there; killed runs
//! cleaned up by the next; an encrypted repository that holds no plaintext chunk, and whose
//! nights copy out re-keyed.

use std::process::Command;

use serde_json::Value;
use tempfile::TempDir;
use wqm::backend::{self, Name};

use crate::encrypted::{found_in, DISTINCTIVE};
use crate::faults::killed;
use crate::incremental::{grow_state_db, workspace, wqm};
use crate::qdrant_double::Double;
use crate::real_encrypted::{encrypted_objects, encrypted_on_s3};
use crate::repo::{fast, FIRST, SECOND};
use crate::restore::lose_everything;
use crate::s3_read::{fresh_prefix, object_names, s3_variables, stored_chunks, with_s3};
use crate::test::{self, Test};

/// `create URL/NAME --incremental --json EXTRA` (with `TMPDIR` in the test's directory): its
/// JSON summary.
pub(crate) fn night(t: Test, double: &Double, target: &str, extra: &str) -> (Value, TempDir) {
    let (output, tmp) = with_s3(wqm(
        t,
        &double.url,
        &format!("backup create {target} --incremental --json {extra}"),
    ))
    .env("TMPDIR", "{TMP}")
    .stdout_with(|_| {})
    .run();
    (serde_json::from_slice(&output.stdout).unwrap(), tmp)
}

pub(crate) fn added(summary: &Value, what: &str) -> u64 {
    summary["chunk_store"][what]
        .as_u64()
        .unwrap_or_else(|| panic!("{summary}"))
}

/// The names of the objects under `prefix`.

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn incremental_nights_to_s3_send_only_new_chunks_restore_and_prune() {
    let double = Double::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (s3, url) = fresh_prefix(&runtime);
    // Night 1 makes the repository's store and sends every chunk.
    let (first, tmp) = night(Test::in_dir(workspace()), &double, &format!("{url}/n1"), "");
    assert_eq!(first["path"], format!("{url}/n1"), "{first}");
    assert!(
        object_names(&runtime, &s3, ".wqm-chunks/").contains(&".wqm-chunks/store.json".to_string())
    );
    let after_n1 = stored_chunks(&runtime, &s3);
    // In one pack file and its index, none loose.
    assert_eq!(object_names(&runtime, &s3, ".wqm-chunks/packs/").len(), 1);
    assert_eq!(object_names(&runtime, &s3, ".wqm-chunks/index/").len(), 1);
    assert!(object_names(&runtime, &s3, ".wqm-chunks/chunks/").is_empty());
    assert!(added(&first, "chunks_added") >= 4, "{first}");
    assert_eq!(after_n1.len() as u64, added(&first, "chunks_added"));
    // Each was checked as it was sent: the verification reads none back.
    assert_eq!(first["verify"]["chunks_read"], 0, "{first}");
    assert!(first["verify"]["chunks_looked_up"].as_u64().unwrap() >= added(&first, "chunks_added"));
    // Night 2 of the same data sends nothing: every chunk is in the repository.
    let (second, tmp) = night(Test::in_dir(tmp), &double, &format!("{url}/n2"), "");
    assert_eq!(added(&second, "chunks_added"), 0, "{second}");
    assert_eq!(added(&second, "bytes_added"), 0, "{second}");
    assert_eq!(second["verify"]["chunks_read"], 0, "{second}");
    assert!(
        second["verify"]["chunks_looked_up"].as_u64().unwrap() >= 4,
        "{second}"
    );
    assert_eq!(stored_chunks(&runtime, &s3), after_n1);
    // Night 3, after some churn (300 kB of new rows), sends the new chunks only.
    grow_state_db(tmp.path());
    let (third, tmp) = night(Test::in_dir(tmp), &double, &format!("{url}/n3"), "");
    let after_n3 = stored_chunks(&runtime, &s3);
    assert!(added(&third, "chunks_added") >= 1, "{third}");
    assert!(
        third["verify"]["chunks_looked_up"].as_u64().unwrap() >= 1,
        "{third}"
    );
    assert_eq!(
        after_n3.len() as u64,
        after_n1.len() as u64 + added(&third, "chunks_added")
    );
    assert!(after_n1.iter().all(|c| after_n3.contains(c)));
    // Nothing of the local staging is left, nor any run record.
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".wqm-s3-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(object_names(&runtime, &s3, ".wqm-runs/").is_empty());
    // Nights 2 and 3 are whole on S3, and night 3 restores.
    let mut tmp = tmp;
    for name in ["n2", "n3"] {
        tmp = with_s3(Test::in_dir(tmp))
            .args(&format!("backup validate {url}/{name} --check-files"))
            .stdout_with(|o| assert!(o.starts_with("Backup validation successful"), "{o}"))
            .run()
            .1;
    }
    lose_everything(&double);
    let (_, tmp) = with_s3(wqm(
        Test::in_dir(tmp),
        &double.url,
        &format!("backup restore {url}/n3 --force"),
    ))
    .env("WQM_BACKUP__DEFAULT_BACKUP_DIRECTORY", "{TMP}/safety")
    .stdout_with(|o| assert!(o.contains("Restore completed"), "{o}"))
    .run();
    double.assert_holds_the_fixtures();
    // Night 4 of one collection; a prune keeping it alone collects what only the others named.
    let (fourth, tmp) = night(
        Test::in_dir(tmp),
        &double,
        &format!("{url}/n4"),
        "--collections small-plain",
    );
    assert!(added(&fourth, "chunks_added") < added(&first, "chunks_added"));
    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!("backup prune {url} --keep-last 1 --json"))
        .stdout_json(|v| {
            let gc = &v["chunk_store"]["collected"];
            assert!(gc["chunks_deleted"].as_u64().unwrap() >= 1, "{v}");
        })
        .run();
    let after_prune = stored_chunks(&runtime, &s3);
    assert!(after_prune.len() < after_n3.len());
    assert!(object_names(&runtime, &s3, "n1/").is_empty());
    with_s3(Test::in_dir(tmp))
        .args(&format!("backup validate {url}/n4 --check-files"))
        .stdout_with(|o| assert!(o.starts_with("Backup validation successful"), "{o}"))
        .run();
}

/// `create --incremental URL/NAME` killed at `failpoint`.
pub(crate) fn killed_night(double: &Double, tmp: &TempDir, target: &str, failpoint: &str) {
    killed_at(
        double,
        tmp,
        &["backup", "create", target, "--incremental"],
        &[],
        failpoint,
    );
}

/// `wqm ARGS` to S3 against the double (with `env` too), killed at `failpoint`.
pub(crate) fn killed_at(
    double: &Double,
    tmp: &TempDir,
    args: &[&str],
    env: &[(&str, &str)],
    failpoint: &str,
) {
    let mut command: Command = test::wqm_command(&tmp.path().join("home"), args);
    command
        .env("QDRANT_URL", &double.url)
        .env("WQM_DATA_DIR", tmp.path().join("data"))
        .env("TMPDIR", tmp.path())
        .envs(env.iter().copied())
        .env("WQM_FAILPOINTS", format!("{failpoint}=kill"));
    s3_variables(&mut command);
    let output = command.output().unwrap();
    assert!(killed(&output), "{failpoint}: {output:?}");
}

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn killed_incremental_creates_to_s3_are_cleaned_up_by_the_next_which_reuses_their_chunks() {
    let double = Double::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (s3, url) = fresh_prefix(&runtime);
    let tmp = workspace();
    // Killed while sending chunks (its run record left), then killed after every object but
    // the manifest (that run removed the first one's record first).
    killed_night(&double, &tmp, &format!("{url}/k1"), "create:s3-chunk-sent");
    assert_eq!(object_names(&runtime, &s3, ".wqm-runs/"), [".wqm-runs/k1"]);
    killed_night(
        &double,
        &tmp,
        &format!("{url}/k2"),
        "create:s3-before-manifest",
    );
    assert!(!object_names(&runtime, &s3, "k2/").is_empty());
    assert_eq!(object_names(&runtime, &s3, ".wqm-runs/"), [".wqm-runs/k2"]);
    let sent = stored_chunks(&runtime, &s3);
    assert!(!sent.is_empty());
    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!("backup list {url}"))
        .stdout(&format!("No backups found in {url}\n"))
        .run();
    // The next night removes what they left of their backups and reuses the chunks they sent.
    let (output, tmp) = with_s3(wqm(
        Test::in_dir(tmp),
        &double.url,
        &format!("backup create {url}/next --incremental --json"),
    ))
    .env("TMPDIR", "{TMP}")
    .stdout_with(|_| {})
    .stderr_with(|e| {
        assert!(e.contains("removed what a killed run left of `k2`"), "{e}");
    })
    .run();
    let next: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        (added(&next, "chunks_added") as usize) < sent.len(),
        "{next} {sent:?}"
    );
    for prefix in ["k1/", "k2/", ".wqm-runs/"] {
        assert!(object_names(&runtime, &s3, prefix).is_empty(), "{prefix}");
    }
    crate::s3_faults::validates(tmp, &format!("{url}/next"));
}

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn incremental_nights_to_an_encrypted_repository_on_s3_store_no_plaintext_chunk() {
    let double = Double::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (s3, url) = fresh_prefix(&runtime);
    let mut tmp = encrypted_on_s3(workspace(), &url, FIRST);
    let mut nights = Vec::new();
    for name in ["night-1", "night-2"] {
        let (summary, next) = night(
            fast(Test::in_dir(tmp)).env("WQM_BACKUP_PASSWORD", FIRST),
            &double,
            &format!("{url}/{name}"),
            "",
        );
        nights.push(summary);
        tmp = next;
    }
    assert!(added(&nights[0], "chunks_added") >= 4, "{:?}", nights);
    assert!(added(&nights[1], "chunks_added") < added(&nights[0], "chunks_added"));
    // The store names chunks by a keyed hash; every chunk and every object of the nights is
    // encrypted, and none shows the data.
    let params = runtime
        .block_on(async {
            let name = Name::new(".wqm-chunks/store.json").unwrap();
            backend::collect(s3.load(&name, None).await.unwrap()).await
        })
        .unwrap();
    assert!(String::from_utf8_lossy(&params).contains("hmac-sha256"));
    let stored = encrypted_objects(
        &runtime,
        &s3,
        &[
            ".wqm-chunks/packs/",
            ".wqm-chunks/index/",
            "night-1/",
            "night-2/",
        ],
    );
    let packs = |dir: &str| stored.keys().filter(|k| k.starts_with(dir)).count();
    assert!(packs(".wqm-chunks/packs/") >= 1, "{:?}", stored.keys());
    assert_eq!(packs(".wqm-chunks/index/"), packs(".wqm-chunks/packs/"));
    assert_eq!(found_in(&stored, DISTINCTIVE), Vec::<String>::new());
    let (_, tmp) = with_s3(fast(Test::in_dir(tmp)))
        .env("WQM_BACKUP_PASSWORD", FIRST)
        .args(&format!("backup validate {url}/night-2 --check-files"))
        .stdout_with(|o| assert!(o.starts_with("Backup validation successful"), "{o}"))
        .run();
    // Restored over the live data: the safety backup goes beside the night, into the same
    // encrypted repository (an incremental night there, encrypted as everything in it).
    let (_, tmp) = with_s3(fast(crate::incremental::wqm(
        Test::in_dir(tmp),
        &double.url,
        &format!("backup restore {url}/night-2 --force --overwrite"),
    )))
    .env("WQM_BACKUP_PASSWORD", FIRST)
    .env("TMPDIR", "{TMP}")
    .stdout_with(|o| assert!(o.contains("Restore completed"), "{o}"))
    .stderr_with(|_| {})
    .run();
    double.assert_holds_the_fixtures();
    let safety = encrypted_objects(&runtime, &s3, &["safety-"]);
    assert!(safety.len() >= 3, "{safety:?}");
    let first = safety.keys().next().unwrap().to_string_lossy();
    let backup = first.split('/').next().unwrap().to_string();
    let (_, tmp) = with_s3(fast(Test::in_dir(tmp)))
        .env("WQM_BACKUP_PASSWORD", FIRST)
        .args(&format!(
            "backup validate {url}/{backup} --check-files --json"
        ))
        .stdout_json(|v| assert_eq!(v["valid"], true, "{v}"))
        .run();
    // Both nights copied out of S3 into a local repository with another key: re-keyed, valid.
    let (_, tmp) = fast(Test::in_dir(tmp))
        .env("WQM_BACKUP_PASSWORD", SECOND)
        .args("backup init {TMP}/other --encrypt")
        .stdout_with(|_| {})
        .run();
    let (_, tmp) = with_s3(fast(Test::in_dir(tmp)))
        .env("WQM_FROM_PASSWORD", FIRST)
        .env("WQM_BACKUP_PASSWORD", SECOND)
        .args(&format!("backup copy {url} {{TMP}}/other"))
        .stdout_with(|o| assert!(o.contains("Copied `night-2`"), "{o}"))
        .run();
    fast(Test::in_dir(tmp))
        .env("WQM_BACKUP_PASSWORD", SECOND)
        .args("backup validate {TMP}/other/night-2 --check-files")
        .stdout_with(|o| assert!(o.starts_with("Backup validation successful"), "{o}"))
        .run();
}

/// Nothing unchecked leaves for S3: a new chunk damaged in the local staging store after it
/// landed, before it was sent, fails the courier's check (as every reader's: decompressed,
/// against its name). The run fails naming it, and the chunk never reaches the repository, where
/// later nights would reuse it by its name without reading it.
#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn a_chunk_damaged_in_staging_before_it_is_sent_never_reaches_s3() {
    use crate::s3_lock::{finished, paused_at, s3_command};
    let double = Double::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (s3, url) = fresh_prefix(&runtime);
    let tmp = workspace();
    let target = format!("{url}/n1");
    let args = ["backup", "create", &target, "--incremental"];
    let mut child = paused_at(
        tmp.path(),
        s3_command(tmp.path(), &double.url, &args),
        "create:chunk-stored",
    );
    // The chunks landed so far in the run's staging store (one for each file being chunked,
    // each waiting before it is sent).
    let staging = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".wqm-s3-")
        })
        .unwrap();
    let mut ids = Vec::new();
    for chunk in crate::incremental::chunk_files(&staging) {
        ids.push(chunk.file_name().unwrap().to_string_lossy().into_owned());
        let mut bytes = std::fs::read(&chunk).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        std::fs::write(&chunk, bytes).unwrap();
    }
    assert!(!ids.is_empty());
    let marker = tmp.path().join("create-chunk-stored");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the create never ended"
        );
        let _ = std::fs::remove_file(&marker);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let (code, _, stderr) = finished(child);
    assert_ne!(code, 0, "{stderr}");
    assert!(ids.iter().any(|id| stderr.contains(id)), "{stderr}");
    let sent = stored_chunks(&runtime, &s3);
    for id in &ids {
        assert!(!sent.contains(id), "{id}");
    }
    assert!(object_names(&runtime, &s3, "n1/").is_empty());
}

//! `prune s3://BUCKET/PREFIX` against the real SeaweedFS: full backups created there and a
//! local directory of incremental nights copied there object by object (as rclone does), pruned
//! under the repository's exclusive lock — a backup's manifest first, then its objects, then the
//! chunks no kept backup names — and a prune killed part-way finished by the next one.

use crate::faults::killed;
use crate::incremental::{night, older_store, workspace, wqm};
use crate::qdrant_double::Double;
use crate::s3_lock::s3_command;
use crate::s3_read::{fresh_prefix, object_names, upload, with_s3};
use crate::test::Test;

/// The names of the repository's objects under `prefix`.

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn prune_on_s3_deletes_backups_manifest_first_and_the_chunks_no_kept_backup_names() {
    let double = Double::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (backend, url) = fresh_prefix(&runtime);
    // Oldest to newest: `f0` (full, on S3), `n1` and `n2` (incremental, copied), `f1` (full).
    let create = |tmp, name: &str| {
        with_s3(wqm(
            Test::in_dir(tmp),
            &double.url,
            &format!("backup create {url}/{name}"),
        ))
        .env("TMPDIR", "{TMP}")
        .stdout_with(|_| {})
        .run()
        .1
    };
    // Uploaded object for object: a local store of loose chunks, as an older wqm made.
    let tmp = create(older_store(workspace()), "f0");
    let (_, tmp) = night(tmp, &double.url, "n1", "");
    let (_, tmp) = night(tmp, &double.url, "n2", "--collections small-plain");
    upload(&runtime, &backend, &tmp.path().join("backups"));
    let tmp = create(tmp, "f1");
    let chunks_before = object_names(&runtime, &backend, ".wqm-chunks/chunks/");
    let n1_index = std::fs::read_to_string(
        tmp.path()
            .join("backups/n1/collections/small-named.snapshot.chunks"),
    )
    .unwrap();
    let id = n1_index.lines().nth(1).unwrap().split(' ').next().unwrap();
    let only_n1 = format!(".wqm-chunks/chunks/{}/{id}", &id[..2]);
    assert!(chunks_before.contains(&only_n1), "{chunks_before:?}");
    let everything = object_names(&runtime, &backend, "");

    // A dry run says what would go and deletes nothing.
    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!(
            "backup prune {url} --keep-last 2 --dry-run --json"
        ))
        .stdout_json(|v| {
            let removed: Vec<&str> = v["removed"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["name"].as_str().unwrap())
                .collect();
            assert_eq!(removed, ["n1", "f0"], "{v}");
            assert_eq!(v["skipped"], serde_json::json!([]), "{v}");
            let gc = &v["chunk_store"]["collected"];
            assert!(gc["chunks_deleted"].as_u64().unwrap() >= 1, "{v}");
        })
        .run();
    assert_eq!(object_names(&runtime, &backend, ""), everything);

    // Killed after removing its first backup's manifest: that one is no backup any more, the
    // others are untouched.
    let output = s3_command(
        tmp.path(),
        &double.url,
        &["backup", "prune", &url, "--keep-last", "2"],
    )
    .env("WQM_FAILPOINTS", "prune:s3-manifest-removed=kill")
    .output()
    .unwrap();
    assert!(killed(&output), "{output:?}");
    assert!(!object_names(&runtime, &backend, "n1/").is_empty());
    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!("backup list {url} --json"))
        .stdout_json(|v| {
            let names: Vec<&str> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["name"].as_str().unwrap())
                .collect();
            assert_eq!(names, ["f1", "n2", "f0"], "{v}");
        })
        .run();
    // A create to that name is refused (objects without a manifest) with `cleanup` as the way;
    // `cleanup` finishes the deletion, and removes the killed prune's lock (its process is
    // gone: stale).
    let (_, tmp) = with_s3(wqm(
        Test::in_dir(tmp),
        &double.url,
        &format!("backup create {url}/n1"),
    ))
    .env("TMPDIR", "{TMP}")
    .status(2)
    .stderr_with(|e| assert!(e.contains("what a killed prune was deleting"), "{e}"))
    .run();
    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!("backup cleanup {url}"))
        .stdout_with(|o| {
            assert!(
                o.contains("Finished deleting `n1`, which a killed prune began"),
                "{o}"
            );
            assert!(
                o.contains("Removed a stale exclusive lock of `wqm backup prune`"),
                "{o}"
            );
        })
        .run();
    assert!(object_names(&runtime, &backend, "n1/").is_empty());

    // The next prune finishes `n1`, removes `f0`, and collects what only they named.
    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!("backup prune {url} --keep-last 2 --json"))
        .stdout_json(|v| {
            let removed: Vec<&str> = v["removed"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["name"].as_str().unwrap())
                .collect();
            assert_eq!(removed, ["f0"], "{v}");
            let gc = &v["chunk_store"]["collected"];
            assert!(gc["chunks_deleted"].as_u64().unwrap() >= 1, "{v}");
            assert!(gc["chunks_kept"].as_u64().unwrap() >= 1, "{v}");
        })
        .run();
    for prefix in ["n1/", "f0/", ".wqm-deleting/"] {
        assert_eq!(
            object_names(&runtime, &backend, prefix),
            Vec::<String>::new(),
            "{prefix}"
        );
    }
    let chunks_after = object_names(&runtime, &backend, ".wqm-chunks/chunks/");
    assert!(!chunks_after.contains(&only_n1));
    assert!(chunks_after.len() < chunks_before.len());
    assert!(chunks_after.iter().all(|c| chunks_before.contains(c)));

    // What is kept is whole.
    let mut tmp = tmp;
    for name in ["n2", "f1"] {
        tmp = with_s3(Test::in_dir(tmp))
            .args(&format!("backup validate {url}/{name} --check-files"))
            .stdout_with(|o| assert!(o.starts_with("Backup validation successful"), "{o}"))
            .run()
            .1;
    }
    // Nothing more to collect, and no lock left.
    with_s3(Test::in_dir(tmp))
        .args(&format!("backup prune {url} --keep-last 2 --json"))
        .stdout_json(|v| {
            assert_eq!(v["removed"], serde_json::json!([]), "{v}");
            assert_eq!(v["chunk_store"]["collected"]["chunks_deleted"], 0, "{v}");
        })
        .run();
    assert_eq!(
        object_names(&runtime, &backend, ".wqm-locks/"),
        Vec::<String>::new()
    );
}

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn prune_on_s3_first_removes_what_this_hosts_killed_creates_left() {
    let double = Double::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let tmp = workspace();
    let (backend, url) = crate::s3_write::killed_create(&double, &tmp, &runtime);
    // A dry run only reads: the killed run's objects are left alone, and said so.
    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!(
            "backup prune {url} --keep-last 1 --dry-run --json"
        ))
        .stdout_json(|v| {
            assert_eq!(v["skipped"][0]["name"], "killed", "{v}");
        })
        .run();
    assert!(!object_names(&runtime, &backend, "killed/").is_empty());
    with_s3(Test::in_dir(tmp))
        .args(&format!("backup prune {url} --keep-last 1 --json"))
        .stdout_json(|v| assert_eq!(v["skipped"], serde_json::json!([]), "{v}"))
        .stderr_with(|e| {
            assert!(
                e.contains("wqm: warning: removed what a killed run left of `killed` in `s3://"),
                "{e}"
            )
        })
        .run();
    for prefix in ["killed/", ".wqm-runs/"] {
        assert_eq!(
            object_names(&runtime, &backend, prefix),
            Vec::<String>::new(),
            "{prefix}"
        );
    }
}

//! `wqm backup copy SRC DEST [BACKUP...]`: incremental nights copied to the real SeaweedFS
//! (only the new chunks the second time), back to a local directory and between prefixes, each
//! copy validated and restored; a damaged chunk named with nothing committed; a same-name
//! different backup refused; a killed copy cleaned up by the next one.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tempfile::TempDir;

use crate::faults::killed;
use crate::incremental::{chunk_ids, first_chunk, grow_state_db, night, workspace, wqm};
use crate::qdrant_double::Double;
use crate::restore::lose_everything;
use crate::s3_read::{fresh_prefix, s3_variables, stored_chunks, with_s3};
use crate::test::{self, Test};

/// `wqm backup copy ARGS --json` (with the S3 variables): its document.
fn copy(tmp: TempDir, args: &str) -> (Value, TempDir) {
    let (output, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!("backup copy {args} --json"))
        .stdout_with(|_| {})
        .run();
    (serde_json::from_slice(&output.stdout).unwrap(), tmp)
}

/// The line of `name` in a copy's document.
fn backup<'a>(document: &'a Value, name: &str) -> &'a Value {
    document["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name)
        .unwrap_or_else(|| panic!("no `{name}` in {document}"))
}

fn validate_at(tmp: TempDir, at: &str) -> TempDir {
    with_s3(Test::in_dir(tmp))
        .args(&format!("backup validate {at} --check-files"))
        .stdout_with(|o| {
            assert!(
                o.contains("\nBackup validation successful")
                    || o.starts_with("Backup validation successful"),
                "{o}"
            )
        })
        .run()
        .1
}

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn nights_copied_to_s3_send_only_new_chunks_and_copy_back_restore_and_validate() {
    let double = Double::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (backend, url) = fresh_prefix(&runtime);
    let (_, tmp) = night(workspace(), &double.url, "n1", "");
    let backups = tmp.path().join("backups");
    let first = chunk_ids(&backups);
    let (done, tmp) = copy(tmp, &format!("{{TMP}}/backups {url}"));
    let n1 = backup(&done, "n1");
    assert_eq!(n1["status"], "copied", "{done}");
    assert_eq!(n1["chunks_sent"], first.len() as u64, "{done}");
    assert_eq!(
        n1["files"], 5,
        "three indexes, the reference list, the manifest: {done}"
    );
    let on_s3 = |prefix: &str| runtime.block_on(backend.list(prefix)).unwrap();
    // What it says it sent is what landed: the backup's objects, the pack and its index (all
    // but the store's `store.json`, written once for the store, not for a backup).
    let landed: u64 = on_s3("")
        .iter()
        .filter(|o| o.name != ".wqm-chunks/store.json")
        .map(|o| o.size)
        .sum();
    assert_eq!(n1["bytes_sent"].as_u64().unwrap(), landed, "{done}");
    assert_eq!(stored_chunks(&runtime, &backend).len(), first.len());
    assert_eq!(on_s3(".wqm-chunks/packs/").len(), 1, "one pack file");
    assert!(on_s3(".wqm-runs/").is_empty());

    // The second night: only its new chunks go, the first is skipped as it is there.
    grow_state_db(tmp.path());
    let (_, tmp) = night(tmp, &double.url, "n2", "");
    let new = chunk_ids(&backups).difference(&first).count();
    assert!(new > 0, "the grown database makes new chunks");
    let (done, tmp) = copy(tmp, &format!("{{TMP}}/backups {url}"));
    assert_eq!(backup(&done, "n1")["status"], "skipped", "{done}");
    assert_eq!(backup(&done, "n1")["chunks_sent"], 0, "{done}");
    assert_eq!(backup(&done, "n2")["status"], "copied", "{done}");
    assert_eq!(backup(&done, "n2")["chunks_sent"], new as u64, "{done}");
    assert_eq!(
        (done["copied"].clone(), done["skipped"].clone()),
        (1.into(), 1.into())
    );
    assert_eq!(stored_chunks(&runtime, &backend).len(), first.len() + new);
    assert_eq!(
        on_s3(".wqm-chunks/packs/").len(),
        2,
        "one pack file a night"
    );
    // Text mode: one line per backup.
    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!("backup copy {{TMP}}/backups {url}"))
        .stdout(&format!(
            "Skipped `n1`: the destination has it already\nSkipped `n2`: the destination has it already\n0 backup(s) copied, 2 skipped, 0 not copied, from `{{TMP}}/backups` to `{url}`\n"
        ))
        .run();

    let tmp = validate_at(tmp, &format!("{url}/n1"));
    let tmp = validate_at(tmp, &format!("{url}/n2"));
    lose_everything(&double);
    let (_, tmp) = with_s3(wqm(
        Test::in_dir(tmp),
        &double.url,
        &format!("backup restore {url}/n2 --force"),
    ))
    .env("WQM_BACKUP__DEFAULT_BACKUP_DIRECTORY", "{TMP}/safety")
    .stdout_with(|o| assert!(o.contains("Restore completed"), "{o}"))
    .run();
    double.assert_holds_the_fixtures();

    // S3 → S3, then S3 → a new local directory (one backup named): each copy validates.
    let (_, other) = fresh_prefix(&runtime);
    let (done, tmp) = copy(tmp, &format!("{url} {other}"));
    assert_eq!(done["copied"], 2, "{done}");
    let tmp = validate_at(tmp, &format!("{other}/n2"));
    let (done, tmp) = copy(tmp, &format!("{other} {{TMP}}/back n2"));
    assert_eq!(done["backups"].as_array().unwrap().len(), 1, "{done}");
    let sent_n2 = backup(&done, "n2")["chunks_sent"].as_u64().unwrap();
    let tmp = validate_at(tmp, "{TMP}/back/n2");
    let (done, tmp) = copy(tmp, &format!("{other} {{TMP}}/back"));
    assert_eq!(backup(&done, "n2")["status"], "skipped", "{done}");
    // No chunk went twice: n1 sent only what n2 did not name.
    let sent_n1 = backup(&done, "n1")["chunks_sent"].as_u64().unwrap();
    assert_eq!(sent_n1 + sent_n2, (first.len() + new) as u64, "{done}");
    let tmp = validate_at(tmp, "{TMP}/back/n1");
    // The local copy is the original, chunk for chunk, and holds no leftovers.
    assert_eq!(chunk_ids(&tmp.path().join("back")), chunk_ids(&backups));
    let hidden: Vec<_> = fs::read_dir(tmp.path().join("back"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".wqm-staging"))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");
    assert!(fs::read_dir(tmp.path().join("back/.wqm-chunks/tmp"))
        .map(|d| d.count() == 0)
        .unwrap_or(true));
}

/// In `backups/`: a night `n1`, the first chunk of its plain collection altered, and a full
/// backup `full`, one byte of its first file flipped. Returns the chunk's id and the file.
fn damaged_source(double: &Double) -> (TempDir, String, String) {
    let (_, tmp) = night(workspace(), &double.url, "n1", "");
    let chunk = first_chunk(
        &tmp.path().join("backups/n1"),
        "collections/small-plain.snapshot.chunks",
    );
    chunk.damage();
    let id = chunk.id.clone();
    let (_, tmp) = wqm(
        Test::in_dir(tmp),
        &double.url,
        "backup create {TMP}/backups/full",
    )
    .stdout_with(|_| {})
    .run();
    let full = tmp.path().join("backups/full");
    let manifest =
        wqm::format::manifest::Manifest::load(&full.join("metadata/manifest.json")).unwrap();
    let rel = manifest.files[0].path.clone();
    let mut stored = fs::read(full.join(&rel)).unwrap();
    let middle = stored.len() / 2;
    stored[middle] ^= 1;
    fs::write(full.join(&rel), stored).unwrap();
    (tmp, id, rel)
}

#[test]
fn damaged_source_objects_are_named_and_nothing_is_committed_locally() {
    let double = Double::start();
    let (tmp, id, rel) = damaged_source(&double);
    let said = id.clone();
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup copy {TMP}/backups {TMP}/offsite")
        .status(3)
        .stdout_with(|o| {
            assert!(o.starts_with("Not copied `full`\nNot copied `n1`\n0 backup(s) copied, 0 skipped, 2 not copied"), "{o}")
        })
        .stderr_with(move |e| {
            assert!(
                e.contains(&format!(
                    "/backups/.wqm-chunks` is damaged: chunk `{said}` is damaged: "
                )),
                "{e}"
            );
            assert!(e.contains("`n1` was not copied to"), "{e}");
            assert!(e.contains(&format!("/backups/full/{rel}` is damaged: ")), "{e}");
        })
        .run();
    let left: Vec<_> = fs::read_dir(tmp.path().join("offsite"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(".wqm-"))
        .collect();
    assert!(
        left.is_empty(),
        "no backup and no staging directory: {left:?}"
    );
    assert!(!chunk_ids(&tmp.path().join("offsite")).contains(&id));
    // One repository is no source of itself.
    Test::in_dir(tmp)
        .args("backup copy {TMP}/backups {TMP}/backups/")
        .status(2)
        .stderr_with(|e| assert!(e.contains("is both the source and the destination"), "{e}"))
        .run();
}

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn a_damaged_chunk_is_named_and_nothing_is_committed_on_s3() {
    let double = Double::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (backend, url) = fresh_prefix(&runtime);
    let (tmp, id, rel) = damaged_source(&double);
    let said = id.clone();
    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!("backup copy {{TMP}}/backups {url} --json"))
        .status(3)
        .stdout_json(|v| {
            assert_eq!(v["failed"], 2, "{v}");
            for backup in v["backups"].as_array().unwrap() {
                assert_eq!(backup["status"], "failed", "{v}");
                assert_eq!(backup["exit_code"], 3, "{v}");
            }
        })
        .stderr_with(move |e| {
            assert!(e.contains(&format!("chunk `{said}` is damaged: ")), "{e}");
            assert!(
                e.contains(&format!("/backups/full/{rel}` is damaged: ")),
                "{e}"
            );
        })
        .run();
    let on_s3 = |prefix: &str| runtime.block_on(backend.list(prefix)).unwrap();
    for prefix in ["n1/", "full/", ".wqm-runs/"] {
        assert!(on_s3(prefix).is_empty(), "nothing of {prefix} is left");
    }
    with_s3(Test::in_dir(tmp))
        .args(&format!("backup list {url}"))
        .stdout(&format!("No backups found in {url}\n"))
        .run();
}

#[test]
fn a_backup_of_the_same_name_that_differs_is_refused_and_left_alone() {
    let double = Double::start();
    let (_, tmp) = night(workspace(), &double.url, "n1", "");
    // Another `n1`, made apart (another time: another manifest), and a backup DEST lacks.
    let (_, tmp) = wqm(
        Test::in_dir(tmp),
        &double.url,
        "backup create {TMP}/offsite/n1 --incremental",
    )
    .stdout_with(|_| {})
    .run();
    let (_, tmp) = night(tmp, &double.url, "n2", "");
    let manifest = tmp.path().join("offsite/n1/metadata/manifest.json");
    let before = fs::read(&manifest).unwrap();
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup copy {TMP}/backups {TMP}/offsite")
        .status(2)
        .stdout_with(|o| {
            assert!(o.starts_with("Not copied `n1`\nCopied `n2`: "), "{o}");
            assert!(
                o.contains("\n1 backup(s) copied, 0 skipped, 1 not copied, from `"),
                "{o}"
            );
        })
        .stderr_with(|e| {
            assert!(
                e.contains(
                    "has another backup named `n1` (its manifest differs from the source's)"
                ),
                "{e}"
            )
        })
        .run();
    assert_eq!(
        fs::read(&manifest).unwrap(),
        before,
        "the other `n1` is unchanged"
    );
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup validate {TMP}/offsite/n2 --check-files")
        .stdout_with(|o| assert!(o.starts_with("Backup validation successful"), "{o}"))
        .run();
    // Named, a backup SRC does not have is refused before anything is copied.
    Test::in_dir(tmp)
        .args("backup copy {TMP}/backups {TMP}/offsite n9")
        .status(2)
        .stderr_with(|e| assert!(e.contains("`n9` is not a backup of `"), "{e}"))
        .run();
}

/// `backup copy` killed before its commit (`copy:before-manifest`): what it left.
fn killed_copy(tmp: &Path, from: &str, to: &str) {
    let mut command = test::wqm_command(&tmp.join("home"), &["backup", "copy", from, to]);
    command.env("WQM_FAILPOINTS", "copy:before-manifest=kill");
    s3_variables(&mut command);
    let output = command.output().unwrap();
    assert!(killed(&output), "{output:?}");
}

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn a_killed_copy_is_no_backup_and_the_next_copy_cleans_up_and_finishes() {
    let double = Double::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (backend, url) = fresh_prefix(&runtime);
    let (_, tmp) = night(workspace(), &double.url, "n1", "");
    let backups = tmp.path().join("backups").display().to_string();
    killed_copy(tmp.path(), &backups, &url);
    let on_s3 = |prefix: &str| runtime.block_on(backend.list(prefix)).unwrap();
    assert!(!on_s3("n1/").is_empty() && on_s3(".wqm-runs/").len() == 1);
    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!("backup list {url}"))
        .stdout(&format!("No backups found in {url}\n"))
        .run();
    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!("backup copy {{TMP}}/backups {url}"))
        .stdout_with(|o| {
            assert!(
                o.starts_with("Copied `n1`: 5 file(s), 0 chunk(s) sent"),
                "{o}"
            )
        })
        .stderr_with(|e| assert!(e.contains("removed what a killed run left of `n1`"), "{e}"))
        .run();
    assert!(on_s3(".wqm-runs/").is_empty());
    // Locally: the staging directory a killed copy left goes with the next run.
    let offsite = tmp.path().join("offsite").display().to_string();
    killed_copy(tmp.path(), &backups, &offsite);
    assert!(tmp.path().join("offsite/.n1.wqm-staging").is_dir());
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup copy {TMP}/backups {TMP}/offsite")
        .stdout_with(|o| {
            assert!(
                o.starts_with("Copied `n1`: 5 file(s), 0 chunk(s) sent"),
                "{o}"
            )
        })
        .stderr_with(|_| {})
        .run();
    assert!(!tmp.path().join("offsite/.n1.wqm-staging").exists());
    validate_at(tmp, "{TMP}/offsite/n1");
}

#[test]
fn a_destination_store_that_cuts_chunks_otherwise_is_refused() {
    let double = Double::start();
    let (_, tmp) = night(workspace(), &double.url, "n1", "");
    // The destination's store: the source's parameters but 16 KiB chunks.
    let params = fs::read_to_string(tmp.path().join("backups/.wqm-chunks/store.json")).unwrap();
    let mut params: Value = serde_json::from_str(&params).unwrap();
    for (key, size) in [("min_size", 4096), ("avg_size", 16384), ("max_size", 65536)] {
        params[key] = size.into();
    }
    let store = tmp.path().join("offsite/.wqm-chunks");
    fs::create_dir_all(store.join("chunks")).unwrap();
    fs::write(store.join("store.json"), params.to_string()).unwrap();
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup copy {TMP}/backups {TMP}/offsite")
        .status(2)
        .stdout_with(|o| assert!(o.starts_with("Not copied `n1`\n"), "{o}"))
        .stderr_with(|e| {
            assert!(e.contains("cannot take the source's chunks: its chunks are `fastcdc-2020` 4096/16384/65536"), "{e}")
        })
        .run();
    assert!(!tmp.path().join("offsite/n1").exists());
}

#[test]
fn a_legacy_backup_is_copied_file_for_file_and_validates() {
    let tmp = tempfile::Builder::new()
        .prefix("wqm-test-")
        .tempdir()
        .unwrap();
    crate::fixtures::legacy_backup(&tmp.path().join("backups/legacy"));
    let (done, tmp) = copy(tmp, "{TMP}/backups {TMP}/offsite");
    let legacy = backup(&done, "legacy");
    assert_eq!(legacy["status"], "copied", "{done}");
    assert_eq!(legacy["chunks_sent"], 0, "{done}");
    assert_eq!(
        files(&tmp.path().join("offsite/legacy")),
        files(&tmp.path().join("backups/legacy"))
    );
    validate_at(tmp, "{TMP}/offsite/legacy");
}

/// Every file under `dir`, relative, with its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = fs::read(&path).unwrap();
                found.push((path.strip_prefix(dir).unwrap().to_path_buf(), bytes));
            }
        }
    }
    found.sort();
    found
}

#[test]
fn ctrl_c_during_a_copy_exits_130_and_commits_nothing() {
    let double = Double::start();
    let (_, tmp) = night(workspace(), &double.url, "n1", "");
    let home = tmp.path();
    let (backups, offsite) = (home.join("backups"), home.join("offsite"));
    let mut command = test::wqm_command(
        &home.join("home"),
        &[
            "backup",
            "copy",
            backups.to_str().unwrap(),
            offsite.to_str().unwrap(),
        ],
    );
    command
        .env("WQM_FAILPOINTS", "copy:before-manifest=wait")
        .env("WQM_FAILPOINT_DIR", home);
    // Ctrl-C while it waits just before its commit; then the wait is let go.
    let marker = home.join("copy-before-manifest");
    let output = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !marker.exists() {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            std::thread::sleep(std::time::Duration::from_millis(800));
            fs::remove_file(&marker).unwrap();
        });
        test::interrupted(command, || marker.exists())
    });
    assert_eq!(output.status.code(), Some(130), "{output:?}");
    let left: Vec<_> = fs::read_dir(&offsite)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(".wqm-"))
        .collect();
    assert!(
        left.is_empty(),
        "nothing committed, no staging directory: {left:?}"
    );
}

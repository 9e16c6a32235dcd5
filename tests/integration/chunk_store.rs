//! The chunk store on its worst days: links planted in it, a damaged chunk every night shares,
//! runs killed while making it or storing chunks, the store deleted.

use std::fs;
use std::os::unix::fs::symlink;

use crate::faults::{killed, run_with};
use crate::incremental::{chunk_files, first_chunk, night, older_store, two_nights};
use crate::incremental::{two_nights_from, validate, workspace, wqm};
use crate::qdrant_double::Double;
use crate::test::Test;

#[test]
fn garbage_collection_never_follows_a_link() {
    let double = Double::start();
    // A store of loose chunks: its fan-out directories are links' targets too.
    let mut tmp = two_nights_from(older_store(workspace()), &double);
    let backups = tmp.path().join("backups");
    let store = backups.join(".wqm-chunks");
    // A directory outside the backups directory, holding what a store's parts would.
    let outside = tmp.path().join("outside");
    fs::create_dir_all(outside.join("ab")).unwrap();
    fs::create_dir_all(outside.join("run-x")).unwrap();
    fs::write(outside.join("ab/precious"), "keep").unwrap();
    fs::write(outside.join("run-x/precious"), "keep").unwrap();
    fs::write(outside.join("precious"), "keep").unwrap();
    let files = ["ab/precious", "run-x/precious", "precious"];
    for part in ["tmp", "chunks"] {
        let real = store.join(format!("{part}.real"));
        fs::rename(store.join(part), &real).unwrap();
        symlink(&outside, store.join(part)).unwrap();
        let link = store.join(part).display().to_string();
        let (_, back) = Test::in_dir(tmp)
            .args("backup prune {TMP}/backups --keep-last 1")
            .stdout_with(|o| assert!(o.contains("Pruned "), "{o}"))
            .stderr(&format!(
                "wqm: warning: chunk store: no chunk deleted: `{link}` is a symbolic link: wqm never follows links in the chunk store\n"
            ))
            .run();
        tmp = back;
        for file in files {
            assert_eq!(
                fs::read_to_string(outside.join(file)).unwrap(),
                "keep",
                "{part}: {file}"
            );
        }
        fs::remove_file(store.join(part)).unwrap();
        fs::rename(&real, store.join(part)).unwrap();
    }
    // A stray file and directory in `tmp/` and in a fan-out directory: reported, skipped, and
    // the collection goes on (every later one too).
    fs::create_dir_all(store.join("tmp/not-wqms")).unwrap();
    let fan = chunk_files(&backups).into_iter().next().unwrap();
    let fan = fan.parent().unwrap().to_path_buf();
    fs::write(fan.join("notes.txt"), "x").unwrap();
    let fan_name = fan.file_name().unwrap().to_string_lossy().into_owned();
    for _ in 0..2 {
        let expected = format!("chunks/{fan_name}/notes.txt");
        let (_, back) = Test::in_dir(tmp)
            .args("backup prune {TMP}/backups --keep-last 1 --json")
            .stdout_json(move |v| {
                let gc = &v["chunk_store"]["collected"];
                assert_eq!(
                    gc["strays"],
                    serde_json::json!([expected, "tmp/not-wqms"]),
                    "{v}"
                );
            })
            .run();
        tmp = back;
    }
    assert!(fan.join("notes.txt").is_file() && store.join("tmp/not-wqms").is_dir());
    validate(tmp, "backups/n2");
}

#[test]
fn a_damaged_chunk_the_next_night_needs_is_stored_again_by_it() {
    let double = Double::start();
    // n1: both collections; n2: `small-plain` only.
    let tmp = two_nights(&double);
    let backups = tmp.path().join("backups");
    let shared = first_chunk(
        &backups.join("n2"),
        "collections/small-plain.snapshot.chunks",
    );
    let only_n1 = first_chunk(
        &backups.join("n1"),
        "collections/small-named.snapshot.chunks",
    );
    shared.damage();
    only_n1.damage();
    let (shared_id, only_n1_id) = (shared.id.clone(), only_n1.id.clone());
    let damaged = fs::read(&shared.path).unwrap()[shared.range.clone()].to_vec();

    // The next night needs the shared chunk: comparing every chunk it reuses (a cycle of 1; by
    // default only today's group), it finds it damaged, puts it aside, stores it again.
    let expected = format!(
        "wqm: warning: the chunk store held 1 damaged chunk(s) this backup needed (`{shared_id}`): each was moved to `{}` and stored again from this backup's data, so every backup naming it is whole again; other backups may still name damaged data: `wqm backup list {} --check` finds them\n",
        backups.join(".wqm-chunks/quarantine").display(),
        backups.display()
    );
    let (output, tmp) = wqm(
        Test::in_dir(tmp),
        &double.url,
        "backup create {TMP}/backups/n3 --incremental --collections small-plain --json",
    )
    .env("WQM_BACKUP__VERIFICATION__COMPARE_REUSED_CYCLE", "1")
    .stdout_with(|_| {})
    .stderr(&expected)
    .run();
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        summary["chunk_store"]["chunks_repaired"],
        serde_json::json!([shared_id])
    );
    assert_eq!(
        fs::read(backups.join(".wqm-chunks/quarantine").join(&shared_id)).unwrap(),
        damaged
    );
    let tmp = validate(tmp, "backups/n3");
    let tmp = validate(tmp, "backups/n2");
    // n1 still names a damaged chunk no later night needed: validate says so, by name.
    let needed = format!("chunk `{only_n1_id}` is damaged: ");
    Test::in_dir(tmp)
        .args("backup validate {TMP}/backups/n1 --check-files")
        .status(3)
        .stdout_with(move |o| {
            assert!(o.contains(&needed), "{o}");
            assert!(o.contains("backups that need it: n1\n"), "{o}");
            assert!(!o.contains(&shared_id), "{o}");
        })
        .stderr_with(|e| assert!(e.starts_with("wqm: error: Backup validation failed"), "{e}"))
        .run();
}

#[test]
fn info_on_an_incremental_backup_whose_store_is_gone_says_it_cannot_be_restored() {
    let double = Double::start();
    let (_, tmp) = night(workspace(), &double.url, "n1", "");
    let store = tmp.path().join("backups/.wqm-chunks");
    fs::remove_dir_all(&store).unwrap();
    Test::in_dir(tmp)
        .args("backup info {TMP}/backups/n1")
        .status(3)
        .stdout("")
        .stderr(&format!(
            "wqm: error: no chunk store at `{}`: incremental backups read their data from the `.wqm-chunks` directory beside them\nhint: an incremental backup moves with its chunks: `wqm backup copy DIR DEST NAME` brings them; to move one backup alone, `wqm backup export BACKUP DEST` first\n",
            store.display()
        ))
        .run();
}

#[test]
fn what_a_killed_create_left_in_the_store_goes_with_the_next_run() {
    let double = Double::start();
    let tmp = workspace();
    let backups = tmp.path().join("backups");
    // Killed while making the store: its half-made store stays beside the backups.
    let output = run_with(
        tmp.path(),
        &double.url,
        "create:store-made=kill",
        &[
            "backup",
            "create",
            backups.join("n0").to_str().unwrap(),
            "--incremental",
        ],
    );
    assert!(killed(&output), "{output:?}");
    let half: Vec<String> = fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".wqm-chunks.new-"))
        .collect();
    assert_eq!(half.len(), 1, "{half:?}");
    let (_, tmp) = wqm(
        Test::in_dir(tmp),
        &double.url,
        "backup create {TMP}/backups/n1 --incremental --collections small-plain",
    )
    .stdout_with(|o| assert!(o.starts_with("Backup created: "), "{o}"))
    .stderr_with(|e| {
        assert!(
            e.starts_with("wqm: warning: cleaned up after a dead run: `create --incremental`")
                && e.contains("removed the chunk store it was making"),
            "{e}"
        )
    })
    .run();
    assert!(!backups.join(&half[0]).exists());

    // Killed between a pack and its index: its temporary directory stays in `tmp/` until
    // `cleanup`, the pack without an index until a prune.
    let output = run_with(
        tmp.path(),
        &double.url,
        "pack:before-index=kill",
        &[
            "backup",
            "create",
            backups.join("n2").to_str().unwrap(),
            "--incremental",
        ],
    );
    assert!(killed(&output), "{output:?}");
    let runs = || {
        fs::read_dir(backups.join(".wqm-chunks/tmp"))
            .unwrap()
            .count()
    };
    assert_eq!(runs(), 1, "the dead run's temporary directory");
    let (_, tmp) = wqm(
        Test::in_dir(tmp),
        &double.url,
        "backup cleanup {TMP}/backups",
    )
    .stdout_with(|o| {
        assert!(
            o.contains("removed its temporary directory in the chunk store: "),
            "{o}"
        );
        assert!(o.contains("Cleaned up after 1 dead run(s)"), "{o}");
    })
    .run();
    assert_eq!(runs(), 0);
    let packs = || crate::incremental::files_under(&backups.join(".wqm-chunks/packs")).len();
    let indexes = || crate::incremental::files_under(&backups.join(".wqm-chunks/index")).len();
    assert_eq!(packs(), indexes() + 1, "a pack without its index");
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup prune {TMP}/backups --keep-last 5 --json")
        .stdout_json(|v| assert_eq!(v["chunk_store"]["collected"]["packs_deleted"], 1, "{v}"))
        .run();
    assert_eq!(packs(), indexes());
    validate(tmp, "backups/n1");
}

/// `validate BACKUP --read-data-subset n/t --json`: whether it found the backup valid, its exit
/// code, the chunks it read and looked up, and its stdout.
fn validate_subset(
    home: &std::path::Path,
    backup: &std::path::Path,
    subset: &str,
) -> (i32, u64, u64, String) {
    let output = crate::test::wqm_command(
        home,
        &[
            "backup",
            "validate",
            backup.to_str().unwrap(),
            "--read-data-subset",
            subset,
            "--json",
        ],
    )
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let counts = &v["read_data_subset"];
    (
        output.status.code().unwrap(),
        counts["chunks_read"].as_u64().unwrap(),
        counts["chunks_looked_up"].as_u64().unwrap(),
        stdout,
    )
}

#[test]
fn a_rotating_subset_reads_every_chunk_once_per_cycle_and_finds_what_is_damaged() {
    let double = Double::start();
    let tmp = two_nights(&double);
    let backups = tmp.path().join("backups");
    let n1 = backups.join("n1");
    let damaged = first_chunk(&n1, "collections/small-named.snapshot.chunks");
    let id = damaged.id.clone();
    damaged.damage();
    let mut read_in_cycle = 0;
    let mut found_by = Vec::new();
    let mut all = None;
    for n in 1..=4 {
        let (code, read, looked_up, stdout) = validate_subset(tmp.path(), &n1, &format!("{n}/4"));
        // Every chunk is checked by every run: read, or looked up.
        assert_eq!(*all.get_or_insert(read + looked_up), read + looked_up);
        read_in_cycle += read;
        if code == 3 {
            assert!(
                stdout.contains(&format!("chunk `{id}` is damaged")),
                "{stdout}"
            );
            found_by.push(n);
        } else {
            assert_eq!(code, 0, "{stdout}");
        }
    }
    assert_eq!(
        read_in_cycle,
        all.unwrap(),
        "the cycle read each chunk once"
    );
    assert_eq!(found_by.len(), 1, "{found_by:?}");

    // A missing chunk is found whatever the subset: the chunks not read are looked up.
    damaged.remove();
    for n in 1..=4 {
        let (code, _, _, stdout) = validate_subset(tmp.path(), &n1, &format!("{n}/4"));
        assert_eq!(code, 3, "{stdout}");
        assert!(
            stdout.contains(&format!("chunk `{id}` is missing")),
            "{stdout}"
        );
    }
}

#[test]
fn a_random_subset_reads_part_of_the_chunks_and_says_so() {
    let double = Double::start();
    let tmp = two_nights(&double);
    let n1 = tmp.path().join("backups/n1");
    let (code, read, looked_up, stdout) = validate_subset(tmp.path(), &n1, "100%");
    assert_eq!((code, looked_up), (0, 0), "{stdout}");
    let (code, some, rest, stdout) = validate_subset(tmp.path(), &n1, "30%");
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(some + rest, read);
    assert!(some < read && rest > 0, "{some} of {read}");
    let (code, _, _, stdout) = validate_subset(tmp.path(), &n1, "1K");
    assert_eq!(code, 0, "{stdout}");
    Test::new()
        .args(&format!(
            "backup validate {} --read-data-subset 0/4",
            n1.display()
        ))
        .status(2)
        .stderr_with(|e| {
            assert!(
                e.contains("`0/4` is not a subset: n must be from 1 to t"),
                "{e}"
            )
        })
        .run();
}

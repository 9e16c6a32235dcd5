//! A local store of pack files (every store wqm makes): nights add packs, never loose chunks;
//! prune deletes the packs nothing names and repacks those mostly garbage; an encrypted
//! repository's packs and indexes are ciphertext, and a byte changed in a pack is found.
//! (A run killed between a pack and its index: `chunk_store::what_a_killed_create_left_…`.)

use std::fs;

use serde_json::Value;

use crate::encrypted::{encrypted_workspace, found_in, ran, validated, with_password, DISTINCTIVE};
use crate::faults::{killed, run_with};
use crate::incremental::{files_under, grow_state_db, night, stored_chunks, validate, workspace};
use crate::qdrant_double::Double;
use crate::repo::files;
use crate::test::Test;

/// A prune's `--json` summary says no pack was deleted nor repacked.
pub(crate) fn no_pack_collected(v: &Value) {
    let gc = &v["chunk_store"]["collected"];
    let touched = (gc["packs_deleted"].clone(), gc["packs_repacked"].clone());
    assert_eq!(touched, (0.into(), 0.into()), "{v}");
}

/// The pack files of the store in `dir`.
fn packs(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    files_under(&dir.join(".wqm-chunks/packs"))
}

#[test]
fn nights_add_packs_and_prune_deletes_or_repacks_them() {
    let double = Double::start();
    let (first, tmp) = night(workspace(), &double.url, "n1", "");
    let backups = tmp.path().join("backups");
    assert!(
        !backups.join(".wqm-chunks/chunks").exists(),
        "nothing loose"
    );
    let store = stored_chunks(&backups);
    assert_eq!(
        first["chunk_store"]["chunks_added"].as_u64().unwrap(),
        store.len() as u64,
        "{first}"
    );
    let first_pack = packs(&backups);
    assert_eq!(first_pack.len(), 1, "one pack for a small night");
    assert_eq!(files_under(&backups.join(".wqm-chunks/index")).len(), 1);
    // Each chunk's stored bytes where its index says: `first`'s summary counts them, the
    // pack holds them back to back, then its index's copy and the trailer.
    let stored: u64 = store.values().map(|c| c.range.len() as u64).sum();
    assert!(fs::metadata(&first_pack[0]).unwrap().len() > stored);

    grow_state_db(tmp.path());
    let (second, tmp) = night(tmp, &double.url, "n2", "");
    assert!(second["chunk_store"]["chunks_added"].as_u64().unwrap() >= 1);
    assert_eq!(packs(&backups).len(), 2, "a pack a night");
    // One collection's night kept alone: night 1's pack is mostly garbage and is repacked or
    // deleted, each kept night still reads.
    grow_state_db(tmp.path());
    let (_, tmp) = night(tmp, &double.url, "n3", "--collections small-plain");
    let before = stored_chunks(&backups);
    // With no room to repack, the packs of nights 1 and 2 wait for a later prune (one of them
    // or both, as the grown database's chunks fall), and it says so.
    let (output, tmp) = Test::in_dir(tmp)
        .args("backup prune {TMP}/backups --keep-last 1 --max-repack-size 0 --verbose")
        .stdout_with(|o| assert!(!o.contains("repacked"), "{o}"))
        .run();
    let said = String::from_utf8(output.stdout).unwrap();
    let deferred: u64 = said
        .lines()
        .find(|line| line.starts_with("Chunk store:"))
        .and_then(|line| line.rsplit("; ").next())
        .and_then(|part| {
            part.strip_suffix(
                " pack file(s) due for repacking left for a later prune (`--max-repack-size` reached)",
            )
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no pack deferred: {said}"));
    assert!(packs(&backups).contains(&first_pack[0]));
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup prune {TMP}/backups --keep-last 1 --json")
        .stdout_json(move |v| {
            let gc = &v["chunk_store"]["collected"];
            let gone =
                gc["packs_deleted"].as_u64().unwrap() + gc["packs_repacked"].as_u64().unwrap();
            assert!(gone >= 1, "{v}");
            assert_eq!(gc["packs_repacked"], deferred, "{v}");
            assert_eq!(gc["packs_deferred"], 0, "{v}");
            assert!(gc["bytes_repacked"].as_u64().unwrap() > 0, "{v}");
            assert!(gc["chunks_deleted"].as_u64().unwrap() >= 1, "{v}");
            assert_eq!(gc["damaged"], Value::Array(Vec::new()), "{v}");
        })
        .run();
    assert!(!packs(&backups).contains(&first_pack[0]));
    let after = stored_chunks(&backups);
    assert!(after.len() < before.len() && after.keys().all(|id| before.contains_key(id)));
    let tmp = validate(tmp, "backups/n3");
    // Nothing left to collect.
    let left = packs(&backups);
    let (_, _tmp) = Test::in_dir(tmp)
        .args("backup prune {TMP}/backups --keep-last 1 --json")
        .stdout_json(no_pack_collected)
        .run();
    assert_eq!(packs(&backups), left);
}

#[test]
fn a_pack_a_killed_create_was_saving_is_removed_by_the_next_prune() {
    let double = Double::start();
    let (_, tmp) = night(workspace(), &double.url, "n1", "");
    let backups = tmp.path().join("backups");
    grow_state_db(tmp.path());
    // Killed with a pack written and fsynced under a temporary name, not yet renamed.
    let output = run_with(
        tmp.path(),
        &double.url,
        "local:before-rename:.wqm-chunks/packs=kill",
        &[
            "backup",
            "create",
            backups.join("n2").to_str().unwrap(),
            "--incremental",
        ],
    );
    assert!(killed(&output), "{output:?}");
    let temporary = || files_under(&backups.join(".wqm-backend/tmp"));
    assert_eq!(temporary().len(), 1, "the pack being saved");
    assert_eq!(packs(&backups).len(), 1);
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup prune {TMP}/backups --keep-last 5")
        .stdout_with(|_| {})
        .stderr_with(|e| assert!(e.contains("cleaned up after a dead run"), "{e}"))
        .run();
    assert_eq!(temporary(), Vec::<std::path::PathBuf>::new());
    validate(tmp, "backups/n1");
}

#[test]
fn an_encrypted_store_of_packs_holds_ciphertext_and_a_changed_byte_is_found() {
    let double = Double::start();
    let mut tmp = encrypted_workspace();
    for night in ["night-1", "night-2"] {
        grow_state_db(tmp.path());
        tmp = ran(
            tmp,
            &double,
            &format!("backup create {{TMP}}/enc/{night} --incremental"),
        );
    }
    let enc = tmp.path().join("enc");
    let stored = files(&enc);
    assert_eq!(found_in(&stored, DISTINCTIVE), Vec::<String>::new());
    let packed = packs(&enc);
    let indexes = files_under(&enc.join(".wqm-chunks/index"));
    assert_eq!((packed.len(), indexes.len()), (2, 2), "a pack a night");
    assert!(!enc.join(".wqm-chunks/chunks").exists());
    // Each pack begins with its first chunk, sealed; each index is sealed.
    for file in packed.iter().chain(&indexes) {
        assert!(stored[file].starts_with(b"WQMCRYPT"), "{}", file.display());
    }
    let tmp = validated(tmp, &double, "{TMP}/enc/night-2");
    // A byte inside the first pack's first chunk changed: found, exit 3.
    let mut bytes = fs::read(&packed[0]).unwrap();
    bytes[100] ^= 1;
    fs::write(&packed[0], bytes).unwrap();
    with_password(tmp, &double, "backup list {TMP}/enc --check --json")
        .stdout_json(|v| {
            let valid: Vec<bool> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["valid"].as_bool().unwrap())
                .collect();
            assert!(valid.contains(&false), "{v}");
        })
        .run();
}

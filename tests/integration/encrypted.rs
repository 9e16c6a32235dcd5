//! Backups in an encrypted repository, end to end against the Qdrant double: create, list,
//! info, validate, dump, restore (its safety backup encrypted too), export and prune read and
//! write through the repository's key; no distinctive byte of the data is stored in the clear;
//! a wrong password, an altered or swapped object are refused. The S3 half and the real Qdrant:
//! `real_encrypted.rs`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::fixtures;
use crate::incremental::{workspace, wqm};
use crate::qdrant_double::Double;
use crate::repo::{fast, files, prints_none, FIRST, SECOND, WRONG_PASSWORD};
use crate::test::Test;

/// Strings the double's collections and the sample state database put into a backup: names,
/// payload keys and values, project paths, the SQLite header.
pub(crate) const DISTINCTIVE: &[&str] = &[
    "small-plain",
    "small-named",
    "ctagbt0dtext",
    "acme-webapp",
    "workspace-qdrant-mcp",
    "SQLite format 3",
    "payload_storage_type",
];

/// Which of `needles` appear somewhere in `stored`: in a stored byte or a stored name.
pub(crate) fn found_in(stored: &BTreeMap<PathBuf, Vec<u8>>, needles: &[&str]) -> Vec<String> {
    needles
        .iter()
        .filter(|needle| {
            stored.iter().any(|(path, bytes)| {
                path.to_string_lossy().contains(*needle)
                    || bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
            })
        })
        .map(|n| n.to_string())
        .collect()
}

/// `wqm ARGS` with the repository's password and cheap key derivation.
pub(crate) fn with_password(tmp: TempDir, double: &Double, args: &str) -> Test {
    fast(wqm(Test::in_dir(tmp), &double.url, args)).env("WQM_BACKUP_PASSWORD", FIRST)
}

/// A workspace with an empty encrypted repository `enc` (password `FIRST`).
pub(crate) fn encrypted_workspace() -> TempDir {
    fast(Test::in_dir(workspace()))
        .env("WQM_BACKUP_PASSWORD", FIRST)
        .args("backup init {TMP}/enc --encrypt")
        .stdout_with(|_| {})
        .run()
        .1
}

/// `wqm ARGS` with the password, run to success, its output not looked at.
pub(crate) fn ran(tmp: TempDir, double: &Double, args: &str) -> TempDir {
    with_password(tmp, double, args).stdout_with(|_| {}).run().1
}

/// `validate BACKUP --check-files` with the password: every object read and authenticated.
pub(crate) fn validated(tmp: TempDir, double: &Double, backup: &str) -> TempDir {
    validated_with(tmp, double, backup, FIRST)
}

/// `validated` with the password `password`.
pub(crate) fn validated_with(
    tmp: TempDir,
    double: &Double,
    backup: &str,
    password: &str,
) -> TempDir {
    fast(wqm(
        Test::in_dir(tmp),
        &double.url,
        &format!("backup validate {backup} --check-files"),
    ))
    .env("WQM_BACKUP_PASSWORD", password)
    .stdout_with(|o| assert!(o.starts_with("Backup validation successful"), "{o}"))
    .run()
    .1
}

/// A workspace with an encrypted repository `enc` (password `FIRST`) holding `night-1`, and
/// the same backup in the plain directory `plain`, both stored uncompressed (so the plain one
/// shows the data as it is).
pub(crate) fn scene(double: &Double) -> TempDir {
    let tmp = encrypted_workspace();
    let mut tmp = tmp;
    for target in ["{TMP}/enc/night-1", "{TMP}/plain/night-1"] {
        tmp = with_password(tmp, double, &format!("backup create {target}"))
            .env("WQM_BACKUP__COMPRESSION", "false")
            .stdout_with(|o| assert!(o.starts_with("Backup created: "), "{o}"))
            .run()
            .1;
    }
    tmp
}

#[test]
fn an_encrypted_repository_stores_nothing_in_the_clear_and_every_command_reads_it() {
    let double = Double::start();
    let tmp = scene(&double);
    // The plain backup shows every distinctive string; the encrypted one none of them.
    assert_eq!(
        found_in(&files(&tmp.path().join("plain")), DISTINCTIVE),
        DISTINCTIVE
    );
    let stored = files(&tmp.path().join("enc"));
    assert_eq!(found_in(&stored, DISTINCTIVE), Vec::<String>::new());
    // Every object of the backup is an encrypted object (the repository's config is plain).
    for (path, bytes) in &stored {
        let rel = path.strip_prefix(tmp.path().join("enc")).unwrap();
        if rel.starts_with("night-1") {
            assert!(bytes.starts_with(b"WQMCRYPT"), "{}", rel.display());
        }
    }
    // Without the password: what the config says, exit 2, nothing more.
    let mut tmp = tmp;
    for args in [
        "backup list {TMP}/enc",
        "backup info {TMP}/enc/night-1",
        "backup validate {TMP}/enc/night-1",
    ] {
        tmp = wqm(Test::in_dir(tmp), &double.url, args)
            .status(2)
            .stderr_with(|e| {
                assert!(e.contains("is encrypted; password needed (repository format `1`, master key `"), "{e}");
                assert!(e.contains("hint: give its password: `--password-file FILE`, `WQM_BACKUP_PASSWORD_FILE`"), "{e}");
            })
            .run()
            .1;
    }
    // With it: list, info, validate reading every object, dump.
    let (_, tmp) = with_password(tmp, &double, "backup list {TMP}/enc --json")
        .stdout_json(|v| {
            let names: Vec<_> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["name"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(names, ["night-1"], "{v}");
        })
        .run();
    let (_, tmp) = with_password(tmp, &double, "backup info {TMP}/enc/night-1")
        .stdout_with(|o| assert!(o.contains("Collections: 2\nTotal Documents: 320\n"), "{o}"))
        .run();
    let tmp = validated(tmp, &double, "{TMP}/enc/night-1");
    let (dumped, tmp) = with_password(
        tmp,
        &double,
        "backup dump {TMP}/enc/night-1 sqlite/state.db",
    )
    .stdout_with(|_| {})
    .run();
    assert_eq!(
        dumped.stdout,
        fs::read(tmp.path().join("plain/night-1/sqlite/state.db")).unwrap()
    );
    // A restore: its safety backup goes into the encrypted repository, encrypted too.
    let (restored, tmp) = with_password(
        tmp,
        &double,
        "backup restore {TMP}/enc/night-1 --force --overwrite",
    )
    .env("WQM_BACKUP__DEFAULT_BACKUP_DIRECTORY", "{TMP}/enc")
    .stdout_with(|o| {
        assert!(
            o.contains("Restore complete") || o.contains("Restored"),
            "{o}"
        )
    })
    .stderr_with(|_| {})
    .run();
    prints_none(&restored);
    double.assert_holds_the_fixtures();
    let safety: Vec<_> = fs::read_dir(tmp.path().join("enc"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("safety-"))
        .collect();
    assert_eq!(safety.len(), 1, "{safety:?}");
    assert_eq!(
        found_in(&files(&tmp.path().join("enc")), DISTINCTIVE),
        Vec::<String>::new()
    );
    let tmp = validated(tmp, &double, &format!("{{TMP}}/enc/{}", safety[0]));
    // Export: a plain, self-contained copy where the destination is not encrypted.
    let tmp = ran(
        tmp,
        &double,
        "backup export {TMP}/enc/night-1 {TMP}/out/night-1",
    );
    let (_, tmp) = wqm(
        Test::in_dir(tmp),
        &double.url,
        "backup validate {TMP}/out/night-1 --check-files",
    )
    .stdout_with(|o| assert!(o.contains("valid"), "{o}"))
    .run();
    // Into an encrypted repository, an export is encrypted as any backup there.
    let tmp = ran(
        tmp,
        &double,
        "backup export {TMP}/plain/night-1 {TMP}/enc/exported",
    );
    assert_eq!(
        found_in(&files(&tmp.path().join("enc")), DISTINCTIVE),
        Vec::<String>::new()
    );
    let tmp = validated(tmp, &double, "{TMP}/enc/exported");
    std::fs::remove_dir_all(tmp.path().join("enc/exported")).unwrap();
    // Prune reads every manifest with the key: the backup and the safety backup, each by its
    // own rules (a second night makes the first one go).
    let tmp = ran(tmp, &double, "backup create {TMP}/enc/night-2");
    let (_, tmp) = with_password(tmp, &double, "backup prune {TMP}/enc --keep-last 1 --json")
        .stdout_json(|v| {
            let names = |list: &str| -> Vec<String> {
                v[list]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| b["name"].as_str().unwrap().to_string())
                    .collect()
            };
            assert_eq!(names("removed"), ["night-1"], "{v}");
            assert!(names("kept").contains(&"night-2".to_string()), "{v}");
        })
        .run();
    assert!(!tmp.path().join("enc/night-1").exists());
    assert!(tmp.path().join("enc/night-2").exists());
}

#[test]
fn a_wrong_password_is_refused_before_anything_is_read_or_written() {
    let double = Double::start();
    let tmp = scene(&double);
    let before = files(&tmp.path().join("enc"));
    let requests = double.requests().len();
    let mut tmp = tmp;
    for args in [
        "backup create {TMP}/enc/night-2",
        "backup list {TMP}/enc",
        "backup restore {TMP}/enc/night-1 --force",
        "backup prune {TMP}/enc --keep-last 1",
    ] {
        let (output, back) = fast(wqm(Test::in_dir(tmp), &double.url, args))
            .env("WQM_BACKUP_PASSWORD", SECOND)
            .status(2)
            .stderr_with(|e| assert!(e.contains(WRONG_PASSWORD), "{e}"))
            .run();
        prints_none(&output);
        tmp = back;
    }
    assert_eq!(files(&tmp.path().join("enc")), before);
    assert_eq!(double.requests().len(), requests, "Qdrant was asked");
}

/// Damages an object (the first path), perhaps with another (the second).
type Damage = fn(&Path, &Path);

/// The encrypted object that holds `backup`'s file `rel`: stored under a keyed name in the same
/// directory, found by its size (the plain twin's, in the scene's `plain/night-1`, plus the
/// header and a tag per 1 MiB segment).
pub(crate) fn object(tmp: &TempDir, backup: &str, rel: &str) -> PathBuf {
    if rel == "metadata/manifest.json" {
        return tmp.path().join("enc").join(backup).join(rel);
    }
    let plain = fs::metadata(tmp.path().join("plain/night-1").join(rel))
        .unwrap()
        .len();
    let sealed = 44 + plain + 16 * (plain / (1 << 20) + 1);
    let dir = tmp
        .path()
        .join("enc")
        .join(backup)
        .join(Path::new(rel).parent().unwrap());
    let found: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| fs::metadata(p).unwrap().len() == sealed)
        .collect();
    let sizes: Vec<u64> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{rel} ({sealed} bytes) in {}: {sizes:?}",
        dir.display()
    );
    found[0].clone()
}

#[test]
fn an_altered_truncated_or_swapped_object_is_named_by_validate_and_refused_by_restore() {
    let double = Double::start();
    let tmp = scene(&double);
    let (_, tmp) = with_password(tmp, &double, "backup create {TMP}/enc/night-2")
        .env("WQM_BACKUP__COMPRESSION", "false")
        .stdout_with(|_| {})
        .run();
    let snapshot = "collections/small-plain.snapshot";
    let (first, second) = (
        object(&tmp, "night-1", snapshot),
        object(&tmp, "night-2", snapshot),
    );
    // Stored under a name that says nothing, the same in both backups (one key, one path).
    assert_eq!(first.file_name(), second.file_name());
    assert!(!first.to_string_lossy().contains("small-plain"));
    let pristine = fs::read(&first).unwrap();
    let damages: [(&str, Damage); 3] = [
        ("altered", |path, _| fixtures::flip_byte(path)),
        ("truncated", |path, _| {
            let bytes = fs::read(path).unwrap();
            fs::write(path, &bytes[..bytes.len() - 100]).unwrap();
        }),
        // Night 2's own (authentic) snapshot put in night 1's place.
        ("swapped", |path, other| {
            fs::copy(other, path).unwrap();
        }),
    ];
    let mut tmp = tmp;
    for (what, damage) in damages {
        damage(&first, &second);
        tmp = with_password(
            tmp,
            &double,
            "backup validate {TMP}/enc/night-1 --check-files",
        )
        .status(3)
        .stdout_with(move |o| {
            assert!(
                o.contains(&format!(
                    "✗ {snapshot}: cannot read: `file/night-1/{snapshot}` is "
                )),
                "{what}: {o}"
            )
        })
        .stderr_with(|e| assert!(e.contains("Backup validation failed"), "{e}"))
        .run()
        .1;
        let before = double.requests().len();
        tmp = with_password(
            tmp,
            &double,
            "backup restore {TMP}/enc/night-1 --force --overwrite",
        )
        .status(3)
        .stdout_with(|_| {})
        .stderr_with(move |e| {
            assert!(e.contains("wqm: error: "), "{what}: {e}");
            assert!(e.contains("small-plain.snapshot"), "{what}: {e}");
        })
        .run()
        .1;
        // Nothing was uploaded whole: the double still holds what it held.
        double.assert_holds_the_fixtures();
        assert!(
            double.requests()[before..]
                .iter()
                .all(|r| !r.contains("/collections/small-plain/snapshots/upload")),
            "{what}"
        );
        fs::write(&first, &pristine).unwrap();
    }
    // A manifest swapped with another backup's: refused as not this backup's.
    fs::copy(
        object(&tmp, "night-2", "metadata/manifest.json"),
        object(&tmp, "night-1", "metadata/manifest.json"),
    )
    .unwrap();
    with_password(tmp, &double, "backup info {TMP}/enc/night-1")
        .status(3)
        .stderr_with(|e| assert!(e.contains("failed authentication"), "{e}"))
        .run();
}

#[test]
fn incremental_backups_in_an_encrypted_repository_name_and_store_every_chunk_encrypted() {
    let double = Double::start();
    let tmp = encrypted_workspace();
    // Chunk by chunk: a store of loose chunks (packs: `packs::an_encrypted_store_of_packs_holds_…`).
    crate::incremental::older_store_in(&tmp.path().join("enc"), true);
    let mut tmp = tmp;
    for night in ["night-1", "night-2"] {
        tmp = with_password(
            tmp,
            &double,
            &format!("backup create {{TMP}}/enc/{night} --incremental --json"),
        )
        .env("WQM_BACKUP__COMPRESSION", "false")
        .stdout_json(|v| assert!(v["chunk_store"]["chunks_added"].is_u64(), "{v}"))
        .run()
        .1;
    }
    let stored = files(&tmp.path().join("enc"));
    assert_eq!(found_in(&stored, DISTINCTIVE), Vec::<String>::new());
    let params: serde_json::Value =
        serde_json::from_slice(&stored[&tmp.path().join("enc/.wqm-chunks/store.json")]).unwrap();
    assert_eq!(params["hash"], "hmac-sha256", "{params}");
    let chunks = crate::incremental::chunk_files(&tmp.path().join("enc"));
    assert!(chunks.len() >= 5, "{chunks:?}");
    for chunk in &chunks {
        assert!(
            stored[chunk].starts_with(b"WQMCRYPT"),
            "{}",
            chunk.display()
        );
    }
    // Every chunk read back, checked against its keyed name; a restore of the second night.
    let tmp = validated(tmp, &double, "{TMP}/enc/night-2");
    let (_, tmp) = with_password(
        tmp,
        &double,
        "backup restore {TMP}/enc/night-2 --force --overwrite",
    )
    .stdout_with(|o| assert!(o.contains("Restore completed"), "{o}"))
    .stderr_with(|_| {})
    .run();
    double.assert_holds_the_fixtures();
    // Prune's garbage collection reads the encrypted reference lists and indexes.
    let (_, tmp) = with_password(tmp, &double, "backup prune {TMP}/enc --keep-last 1 --json")
        .stdout_json(|v| assert!(v["chunk_store"].is_object(), "{v}"))
        .run();
    let tmp = validated(tmp, &double, "{TMP}/enc/night-2");
    // One chunk's bytes swapped with another's: both authentic, neither under its own name.
    let chunks: Vec<_> = crate::incremental::chunk_files(&tmp.path().join("enc"))
        .into_iter()
        .collect();
    let (a, b) = (&chunks[0], &chunks[1]);
    let (bytes_a, bytes_b) = (fs::read(a).unwrap(), fs::read(b).unwrap());
    fs::write(a, &bytes_b).unwrap();
    fs::write(b, &bytes_a).unwrap();
    with_password(
        tmp,
        &double,
        "backup validate {TMP}/enc/night-2 --check-files",
    )
    .status(3)
    .stdout_with(|o| assert!(o.contains("failed authentication"), "{o}"))
    .stderr_with(|e| assert!(e.contains("Backup validation failed"), "{e}"))
    .run();
}

/// Every object of an encrypted repository — manifest, indexes, reference list, databases and
/// every chunk — with one byte changed anywhere (its header, somewhere inside, its last byte):
/// `validate --check-files` finds it, exit 3.
#[test]
fn any_changed_byte_of_any_object_is_found() {
    let double = Double::start();
    let tmp = encrypted_workspace();
    // Object by object: a store of loose chunks (a pack's: `packs::an_encrypted_store_of_packs_holds_…`).
    crate::incremental::older_store_in(&tmp.path().join("enc"), true);
    let tmp = ran(
        tmp,
        &double,
        "backup create {TMP}/enc/night-1 --incremental",
    );
    let enc = tmp.path().join("enc");
    let objects: Vec<PathBuf> = files(&enc)
        .into_keys()
        .filter(|p| {
            let rel = p.strip_prefix(&enc).unwrap();
            rel.starts_with("night-1") || rel.starts_with(".wqm-chunks/chunks")
        })
        .collect();
    assert!(objects.len() >= 8, "{objects:?}");
    let mut tmp = tmp;
    for (n, object) in objects.iter().enumerate() {
        let pristine = fs::read(object).unwrap();
        // A position of its own for each object: spread over headers, segments and tags.
        let inside = 1 + (n * 7919 + pristine.len() / 3) % (pristine.len() - 2);
        for at in [0, inside, pristine.len() - 1] {
            let mut changed = pristine.clone();
            changed[at] ^= 0x01;
            fs::write(object, &changed).unwrap();
            let shown = object.display().to_string();
            tmp = with_password(
                tmp,
                &double,
                "backup validate {TMP}/enc/night-1 --check-files",
            )
            .status(3)
            .stdout_with(|_| {})
            .stderr_with(move |e| assert!(e.contains("wqm: error: "), "{shown} at {at}: {e}"))
            .run()
            .1;
        }
        fs::write(object, &pristine).unwrap();
    }
}

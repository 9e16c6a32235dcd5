//! Garbage collection with reference lists (`metadata/chunk-refs`): a list that is missing,
//! damaged or not the manifest's never makes prune delete a chunk a remaining backup names, and
//! a backup made while prune read the others is read again once prune holds the store.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use wqm::checksum::{sha256, to_hex};
use wqm::format::manifest::Manifest;

use crate::incremental::{chunk_files, night, older_store, two_nights, two_nights_from};
use crate::incremental::{validate, workspace};
use crate::qdrant_double::Double;
use crate::test::{self, Test};

const REFS: &str = "metadata/chunk-refs";

/// One way to damage a backup's reference list.
type Damage = fn(&Path);

fn manifest_of(backup: &Path) -> Manifest {
    Manifest::load(&backup.join("metadata/manifest.json")).unwrap()
}

fn prune_keeping_one(tmp: TempDir) -> TempDir {
    Test::in_dir(tmp)
        .args("backup prune {TMP}/backups --keep-last 1")
        .stdout_with(|o| assert!(o.contains("Chunk store: deleted "), "{o}"))
        .run()
        .1
}

#[test]
fn create_writes_a_reference_list_the_manifest_records() {
    let double = Double::start();
    let tmp = two_nights(&double);
    let n2 = tmp.path().join("backups/n2");
    let record = manifest_of(&n2).chunk_refs.expect("recorded");
    let bytes = fs::read(n2.join(REFS)).unwrap();
    assert_eq!(bytes.len() as u64, 17 + 8 * record.count);
    assert!(record.count >= 3, "{record:?}");
    assert_eq!(to_hex(&sha256(&bytes)), record.sha256);
    let tmp = validate(tmp, "backups/n2");
    let tmp = prune_keeping_one(tmp);
    validate(tmp, "backups/n2");
}

/// Each way the list can be unusable: prune reads n2's indexes instead and keeps every chunk
/// n2 names (trusting any of these lists would delete chunks n2 needs: the empty one names
/// none, n1's names other chunks), and validate says the list is not used.
#[test]
fn a_missing_or_damaged_reference_list_makes_prune_read_the_indexes() {
    let damage: [(&str, Damage); 5] = [
        ("missing", |n2| fs::remove_file(n2.join(REFS)).unwrap()),
        ("empty", |n2| {
            fs::write(n2.join(REFS), b"wqm-chunk-refs 1\n").unwrap()
        }),
        ("a flipped byte", |n2| {
            let mut bytes = fs::read(n2.join(REFS)).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
            fs::write(n2.join(REFS), bytes).unwrap();
        }),
        ("another backup's", |n2| {
            fs::copy(n2.join("../n1").join(REFS), n2.join(REFS)).unwrap();
        }),
        ("a directory", |n2| {
            fs::remove_file(n2.join(REFS)).unwrap();
            fs::create_dir(n2.join(REFS)).unwrap();
        }),
    ];
    let double = Double::start();
    for (what, damage) in damage {
        // Counted chunk by chunk: a store of loose chunks.
        let tmp = two_nights_from(older_store(workspace()), &double);
        let n2 = tmp.path().join("backups/n2");
        damage(&n2);
        let (_, tmp) = Test::in_dir(tmp)
            .args("backup validate {TMP}/backups/n2 --check-files")
            .stdout_with(move |o| {
                assert!(
                    o.contains("the chunk reference list is not used (")
                        && o.contains("garbage collection reads the indexes instead"),
                    "{what}: {o}"
                )
            })
            .run();
        let before = chunk_files(&tmp.path().join("backups")).len();
        let tmp = prune_keeping_one(tmp);
        assert!(chunk_files(&tmp.path().join("backups")).len() < before);
        // Every chunk n2 names is there: only the list's warning.
        Test::in_dir(tmp)
            .args("backup validate {TMP}/backups/n2 --check-files")
            .stdout_with(move |o| {
                assert!(
                    o.contains("Backup validation successful") && o.lines().count() == 2,
                    "{what}: {o}"
                )
            })
            .run();
    }
}

/// A list that is exactly what the manifest records yet names fewer chunks than the indexes
/// (written so on purpose: no damage makes one) is what prune would trust: validate refuses it.
#[test]
fn validate_refuses_a_reference_list_that_names_less_than_the_indexes() {
    let double = Double::start();
    let tmp = two_nights(&double);
    let n2 = tmp.path().join("backups/n2");
    let mut bytes = fs::read(n2.join(REFS)).unwrap();
    bytes.truncate(bytes.len() - 8);
    fs::write(n2.join(REFS), &bytes).unwrap();
    let mut manifest = manifest_of(&n2);
    let record = manifest.chunk_refs.as_mut().unwrap();
    record.count -= 1;
    record.sha256 = to_hex(&sha256(&bytes));
    manifest.save(&n2.join("metadata/manifest.json")).unwrap();
    Test::in_dir(tmp)
        .args("backup validate {TMP}/backups/n2 --check-files")
        .status(3)
        .stdout_with(|o| {
            assert!(
                o.contains(
                    "the chunk reference list does not name exactly the chunks the indexes name"
                ),
                "{o}"
            )
        })
        .stderr_with(|_| {})
        .run();
}

/// Prune reads the backups and lists the store before it holds the store; n3, put in place
/// meanwhile (as a wqm older than lock objects, which only takes the store's `flock`, could),
/// names chunks only the pruned n1 named until then. Holding the store, prune reads n3 too and
/// keeps them. (A create of this wqm cannot run meanwhile: prune holds the directory's lock
/// exclusively for its whole run.)
#[test]
fn a_backup_made_while_prune_read_the_others_is_read_again_under_the_lock() {
    let double = Double::start();
    let tmp = two_nights(&double);
    let (_, tmp) = night(tmp, &double.url, "n3", "");
    let backups = tmp.path().join("backups");
    let hidden = backups.join(".n3-later");
    fs::rename(backups.join("n3"), &hidden).unwrap();
    let mut prune = test::wqm_command(
        tmp.path(),
        &[
            "backup",
            "prune",
            backups.to_str().unwrap(),
            "--keep-last",
            "1",
        ],
    );
    prune
        .stdout(Stdio::piped())
        .env("WQM_FAILPOINT_DIR", tmp.path())
        .env("WQM_FAILPOINTS", "prune:listed=wait");
    let child = prune.spawn().unwrap();
    let marker = tmp.path().join("prune-listed");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "prune never listed the store");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!backups.join("n1").exists(), "n1 was pruned");
    fs::rename(&hidden, backups.join("n3")).unwrap();
    fs::remove_file(&marker).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("Chunk store: deleted 0 unreferenced chunks"),
        "n3 names every chunk n1 named: {stdout}"
    );
    let tmp = validate(tmp, "backups/n3");
    validate(tmp, "backups/n2");
}

/// A backup made before reference lists existed (its manifest records none) is read from its
/// indexes, as before.
#[test]
fn a_backup_without_a_reference_list_is_read_from_its_indexes() {
    let double = Double::start();
    let (_, tmp) = night(workspace(), &double.url, "n1", "");
    let (_, tmp) = night(tmp, &double.url, "n2", "--collections small-plain");
    let n2 = tmp.path().join("backups/n2");
    let mut manifest = manifest_of(&n2);
    manifest.chunk_refs = None;
    manifest.save(&n2.join("metadata/manifest.json")).unwrap();
    fs::remove_file(n2.join(REFS)).unwrap();
    let tmp = validate(tmp, "backups/n2");
    let tmp = prune_keeping_one(tmp);
    validate(tmp, "backups/n2");
}

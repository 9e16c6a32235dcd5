//! `wqm backup info`.

use wqm::checksum::Algorithm;
use wqm::compress::Compression;

use crate::fixtures::{self, Spec};
use crate::test::{self, Test};

#[test]
fn shows_a_new_backup() {
    let t = Test::new();
    let m = fixtures::backup(
        &t.join("b"),
        &Spec {
            compression: Compression::Zstd,
            ..Spec::default()
        },
    );
    let size = test::bytes_under(&t.join("b"));
    let expected = format!(
        "Backup Information: {{TMP}}/b\n\
         Version: 0.3.0\n\
         Timestamp: {}\n\
         Description: test backup\n\
         Collections: 2\n\
         Total Documents: 320\n\
         Format: wqm/1\n\
         Size: {}\n\
         Checksum Algorithm: xxhash64\n\
         Compression: zstd\n\
         Qdrant Version: 1.18.3\n\
         Compatibility: COMPATIBLE\n  Backup version 0.3.0 is compatible with current version 0.3.0\n",
        m.formatted_timestamp(),
        wqm::output::size(size)
    );
    t.args("backup info {TMP}/b").stdout(&expected).run();
}

#[test]
fn verbose_lists_collections_databases_and_files() {
    let t = Test::new();
    fixtures::backup(
        &t.join("b"),
        &Spec {
            algorithm: Algorithm::Sha256,
            ..Spec::default()
        },
    );
    t.args("backup info {TMP}/b -v")
        .stdout_with(|out| {
            assert!(out.contains("Collections: 2\n  - small-named: 120 documents\n  - small-plain: 200 documents\n"), "{out}");
            assert!(out.contains("Database: sqlite/state.db (schema 49)\n"), "{out}");
            assert!(out.contains("File: collections/small-plain.snapshot 178.50 KiB (182784 bytes)\n"), "{out}");
            assert!(out.contains("Checksum Algorithm: sha256\n"), "{out}");
        })
        .run();
}

#[test]
fn shows_a_legacy_python_backup() {
    let t = Test::new();
    fixtures::legacy_backup(&t.join("old"));
    t.env("WQM_BACKUP__VALIDATION__VERSION_WARNING_THRESHOLD", "0")
        .args("backup info {TMP}/old --verbose")
        .stdout_with(|out| {
            let head = "Backup Information: ";
            assert!(out.starts_with(head), "{out}");
            assert!(out.contains(
                "\nVersion: 0.3.0\nTimestamp: 2025-10-21T09:00:00+00:00\nDescription: pre-upgrade\nCollections: 2\n  - a: 120 documents\n  - b: 30 documents\nTotal Documents: 150\nPartial Backup: Yes\nSelected: a, b\nPython Version: 3.12.9\nFormat: legacy\n"
            ), "{out}");
            assert!(out.ends_with("Compatibility: COMPATIBLE\n  Backup version 0.3.0 is compatible with current version 0.3.0\n"), "{out}");
            assert!(!out.contains("Checksum Algorithm"), "{out}");
        })
        .run();
}

#[test]
fn json_is_the_manifest_plus_compatibility() {
    let t = Test::new();
    fixtures::legacy_backup(&t.join("old"));
    t.env("WQM_BACKUP__VALIDATION__VERSION_WARNING_THRESHOLD", "0")
        .args("backup info {TMP}/old --json")
        .stdout_json(|v| {
            assert_eq!(v["version"], "0.3.0");
            assert_eq!(v["timestamp"], 1761037200.123456);
            assert_eq!(v["formatted_timestamp"], "2025-10-21T09:00:00+00:00");
            assert_eq!(v["format"], "legacy");
            assert_eq!(v["collections"]["a"], 120);
            assert_eq!(v["compatibility"]["status"], "compatible");
            assert_eq!(v["compatibility"]["current_version"], "0.3.0");
            assert!(v["size_bytes"].as_u64().unwrap() > 0);
        })
        .run();
}

#[test]
fn json_stays_valid_for_an_unparseable_version() {
    let t = Test::new();
    fixtures::legacy_backup(&t.join("old"));
    fixtures::edit_manifest(&t.join("old"), |m| m["version"] = "v1".into());
    t.env("WQM_BACKUP__VALIDATION__VERSION_WARNING_THRESHOLD", "0")
        .args("backup info {TMP}/old --json")
        .stdout_json(|v| {
            assert_eq!(v["compatibility"]["status"], serde_json::Value::Null);
            assert_eq!(v["compatibility"]["message"], "Invalid version format: v1");
        })
        .run();
}

#[test]
fn warns_about_an_old_backup() {
    let t = Test::new();
    fixtures::backup(
        &t.join("b"),
        &Spec {
            timestamp: wqm::now() - 100.5 * 86_400.0,
            ..Spec::default()
        },
    );
    t.args("backup info {TMP}/b")
        .stdout_with(|out| assert!(out.contains("Compatibility: COMPATIBLE"), "{out}"))
        .stderr("wqm: warning: Backup is 100 days old, older than `backup.validation.version_warning_threshold` (90 days)\n")
        .run();
}

#[test]
fn a_missing_backup_or_manifest_is_exit_3() {
    Test::new()
        .args("backup info {TMP}/nope")
        .status(3)
        .stderr("wqm: error: Backup directory not found: {TMP}/nope\nhint: check the path; `wqm backup list DIR` shows the backups in a directory\n")
        .run();
    let t = Test::new();
    std::fs::create_dir_all(t.join("empty")).unwrap();
    t.args("backup info {TMP}/empty")
        .status(3)
        .stderr(
            "wqm: error: Backup manifest is missing or invalid: `{TMP}/empty/metadata/manifest.json` does not exist\n\
             hint: run `wqm backup validate PATH --verbose` for details, or pick an earlier backup with `wqm backup list DIR --sort timestamp`\n",
        )
        .run();
}

#[test]
fn a_newer_manifest_format_is_refused_clearly() {
    let t = Test::new();
    fixtures::backup(&t.join("b"), &Spec::default());
    fixtures::edit_manifest(&t.join("b"), |m| m["format_version"] = 3.into());
    t.args("backup info {TMP}/b --json")
        .status(3)
        .stderr(
            "wqm: error: Backup manifest `{TMP}/b/metadata/manifest.json` has format_version 3, newer than the 2 this wqm reads\n\
             hint: this backup was written by a newer wqm; upgrade wqm to read it\n",
        )
        .stdout_json(|v| assert_eq!(v["error"]["exit_code"], 3))
        .run();
}

//! `wqm backup validate`: every corruption is found, named, and exits 3.

use std::fs;

use wqm::checksum::Algorithm;
use wqm::compress::Compression;

use crate::fixtures::{self, Spec};
use crate::test::Test;

#[test]
fn a_good_backup_validates() {
    for compression in [Compression::None, Compression::Zstd] {
        for algorithm in [
            Algorithm::Xxhash64,
            Algorithm::Sha256,
            Algorithm::Md5,
            Algorithm::None,
        ] {
            let t = Test::new();
            fixtures::backup(
                &t.join("b"),
                &Spec {
                    compression,
                    algorithm,
                    ..Spec::default()
                },
            );
            t.args("backup validate {TMP}/b --check-files")
                .stdout("Backup validation successful: {TMP}/b\n")
                .run();
        }
    }
}

#[test]
fn verbose_shows_every_check() {
    let t = Test::new();
    fixtures::backup(
        &t.join("b"),
        &Spec {
            compression: Compression::Zstd,
            ..Spec::default()
        },
    );
    t.args("backup validate {TMP}/b --check-files --verbose")
        .stdout(
            "✓ Directory structure (metadata/, collections/, sqlite/)\n\
             ✓ metadata/manifest.json: Manifest is valid (format 1)\n\
             ✓ Version format is valid (0.3.0)\n\
             ✓ Compatibility COMPATIBLE: Backup version 0.3.0 is compatible with current version 0.3.0\n\
             ✓ All 4 files listed in the manifest are present with their sizes\n\
             ✓ collections/small-named.snapshot.zst: xxhash64 matches, sha256 matches, a readable Qdrant snapshot\n\
             ✓ collections/small-plain.snapshot.zst: xxhash64 matches, sha256 matches, a readable Qdrant snapshot\n\
             ✓ sqlite/state.db.zst: xxhash64 matches, sha256 matches, a sound SQLite database\n\
             ✓ config/config.yaml: xxhash64 matches, sha256 matches, readable YAML\n\
             Backup validation successful: {TMP}/b\n",
        )
        .run();
}

#[test]
fn check_files_leaves_the_backup_untouched() {
    let t = Test::new();
    fixtures::backup(&t.join("b"), &Spec::default());
    let listing = |t: &Test| {
        let mut all: Vec<_> = walk(&t.join("b"))
            .into_iter()
            .map(|p| (p.clone(), fs::read(&p).unwrap()))
            .collect();
        all.sort();
        all
    };
    let before = listing(&t);
    let t = t
        .args("backup validate {TMP}/b --check-files")
        .stdout("Backup validation successful: {TMP}/b\n");
    let (_, dir) = t.run();
    let mut after: Vec<_> = walk(&dir.path().join("b"))
        .into_iter()
        .map(|p| (p.clone(), fs::read(&p).unwrap()))
        .collect();
    after.sort();
    assert_eq!(before, after);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Runs `validate --check-files` on a damaged backup: exit 3, and every `expected` line printed.
fn detects(damage: impl FnOnce(&std::path::Path), spec: Spec, expected: &[&str]) {
    let t = Test::new();
    fixtures::backup(&t.join("b"), &spec);
    damage(&t.join("b"));
    let expected: Vec<String> = expected.iter().map(|e| e.to_string()).collect();
    t.args("backup validate {TMP}/b --check-files")
        .status(3)
        .stdout_with(move |out| {
            for line in &expected {
                assert!(
                    out.lines().any(|l| l.starts_with(line.as_str())),
                    "expected a line starting with {line:?} in:\n{out}"
                );
            }
            assert!(!out.contains("successful"), "{out}");
        })
        .stderr_with(|err| {
            assert!(
                err.starts_with("wqm: error: Backup validation failed: "),
                "{err}"
            );
            assert!(err.contains("hint: restore from another backup"), "{err}");
        })
        .run();
}

#[test]
fn a_flipped_byte_in_each_kind_of_file_is_found() {
    for compression in [Compression::None, Compression::Zstd] {
        let ext = compression.extension();
        let snapshot = format!("collections/small-plain.snapshot{ext}");
        let db = format!("sqlite/state.db{ext}");
        for (file, expected) in [
            (
                snapshot.as_str(),
                format!("✗ {snapshot}: checksum mismatch (xxhash64)"),
            ),
            (db.as_str(), format!("✗ {db}: checksum mismatch (xxhash64)")),
            (
                "config/config.yaml",
                "✗ config/config.yaml: checksum mismatch (xxhash64)".to_string(),
            ),
        ] {
            let file = file.to_string();
            detects(
                move |b| fixtures::flip_byte(&b.join(&file)),
                Spec {
                    compression,
                    ..Spec::default()
                },
                &[&expected],
            );
        }
    }
}

#[test]
fn a_flipped_byte_is_found_even_without_a_checksum_algorithm() {
    // With `checksum_algorithm: none`, the sha256 of the content still catches it.
    detects(
        |b| fixtures::flip_byte(&b.join("collections/small-named.snapshot")),
        Spec {
            algorithm: Algorithm::None,
            ..Spec::default()
        },
        &["✗ collections/small-named.snapshot: content sha256 mismatch"],
    );
    detects(
        |b| fixtures::flip_byte(&b.join("sqlite/state.db.zst")),
        Spec {
            algorithm: Algorithm::None,
            compression: Compression::Zstd,
            ..Spec::default()
        },
        &["✗ sqlite/state.db.zst: "],
    );
}

#[test]
fn a_truncated_file_is_found() {
    detects(
        |b| fixtures::truncate(&b.join("collections/small-named.snapshot")),
        Spec::default(),
        &["✗ collections/small-named.snapshot: size mismatch: the manifest says 206336 bytes, the file has 103168"],
    );
    detects(
        |b| fixtures::truncate(&b.join("collections/small-named.snapshot.zst")),
        Spec {
            compression: Compression::Zstd,
            ..Spec::default()
        },
        &["✗ collections/small-named.snapshot.zst: size mismatch"],
    );
}

#[test]
fn a_missing_file_is_found() {
    detects(
        |b| fs::remove_file(b.join("sqlite/state.db")).unwrap(),
        Spec::default(),
        &["✗ sqlite/state.db: missing: listed in the manifest but not in the backup"],
    );
}

#[test]
fn an_extra_file_is_found() {
    detects(
        |b| fs::write(b.join("collections/stray.snapshot"), b"?").unwrap(),
        Spec::default(),
        &["✗ collections/stray.snapshot: unexpected file: not listed in the manifest"],
    );
}

#[test]
fn a_broken_manifest_is_found() {
    detects(
        |b| fs::write(b.join("metadata/manifest.json"), "{\"version\": \"0.3.0\",").unwrap(),
        Spec::default(),
        &["✗ metadata/manifest.json: Backup manifest is missing or invalid: "],
    );
    let t = Test::new();
    fixtures::backup(&t.join("b"), &Spec::default());
    fixtures::edit_manifest(&t.join("b"), |m| {
        m.as_object_mut().unwrap().remove("version");
    });
    t.args("backup validate {TMP}/b")
        .status(3)
        .stdout_with(|out| {
            assert!(
                out.starts_with(
                    "✗ metadata/manifest.json: Backup manifest is missing or invalid: `"
                ),
                "{out}"
            );
            assert!(out.contains("missing field `version`"), "{out}");
        })
        .stderr_with(|err| {
            assert!(
                err.starts_with("wqm: error: Backup validation failed"),
                "{err}"
            )
        })
        .run();
    detects(
        |b| fixtures::edit_manifest(b, |m| m["format_version"] = 3.into()),
        Spec::default(),
        &["✗ metadata/manifest.json: Backup manifest `"],
    );
}

/// Every name a manifest carries is checked when it is read: `validate` refuses it without
/// `--check-files` too, naming the field, with exit 3.
#[test]
fn unsafe_names_in_the_manifest_are_refused_with_the_field_named() {
    type Edit = fn(&mut serde_json::Value);
    let long = "x".repeat(300);
    let cases: Vec<(&str, Edit, String)> = vec![
        (
            "files[0].path",
            |m| m["files"][0]["path"] = "../../etc/passwd".into(),
            "`../../etc/passwd` leaves the backup directory".into(),
        ),
        (
            "files[0].path",
            |m| m["files"][0]["path"] = "/etc/passwd".into(),
            "`/etc/passwd` is an absolute path".into(),
        ),
        (
            "files[0].path",
            |m| m["files"][0]["path"] = "metadata/x".into(),
            "`metadata/x` is not in the backup layout".into(),
        ),
        (
            "databases[0].name",
            |m| m["databases"][0]["name"] = "../../victim/precious.txt".into(),
            "`../../victim/precious.txt` is not a database wqm restores".into(),
        ),
        (
            "databases[0].name",
            |m| m["databases"][0]["name"] = "/tmp/victim".into(),
            "`/tmp/victim` is not a database wqm restores".into(),
        ),
        (
            "databases[0].file",
            |m| m["databases"][0]["file"] = "sqlite/../../x".into(),
            "`sqlite/../../x` leaves the backup directory".into(),
        ),
        (
            "collections.a\\u{1b}[2Jb",
            |m| {
                m["collections"]["a\u{1b}[2Jb"] = 1.into();
            },
            "contains a control character".into(),
        ),
        (
            "collection_details.small-named.aliases[0]",
            |m| m["collection_details"]["small-named"]["aliases"][0] = "../notes".into(),
            "`../notes` contains a path separator".into(),
        ),
        (
            "collection_details.small-named.snapshot",
            |m| m["collection_details"]["small-named"]["snapshot"] = "/x".into(),
            "`/x` is an absolute path".into(),
        ),
        (
            "selected_collections[0]",
            |m| m["selected_collections"] = serde_json::json!(["a\0b"]),
            "contains NUL".into(),
        ),
        (
            "collections.xxxx",
            |m| {
                m["collections"]["x".repeat(300)] = 1.into();
            },
            format!("`{}…` is longer than 255 bytes", &long[..80]),
        ),
    ];
    for (field, edit, reason) in cases {
        let t = Test::new();
        fixtures::backup(&t.join("b"), &Spec::default());
        fixtures::edit_manifest(&t.join("b"), edit);
        let expected = format!("{field}` is unsafe: ");
        let field = field.to_string();
        t.args("backup validate {TMP}/b")
            .status(3)
            .stdout_with(move |out| {
                assert!(
                    out.starts_with(
                        "✗ metadata/manifest.json: Backup manifest is missing or invalid: `"
                    ),
                    "{out}"
                );
                if !field.starts_with("collections.xxxx") {
                    assert!(out.contains(&expected), "{field}: {out}");
                }
                assert!(out.contains(&reason), "{reason}: {out}");
                assert!(
                    !out.contains('\u{1b}'),
                    "control characters are escaped: {out:?}"
                );
            })
            .stderr_with(|err| {
                assert!(
                    err.starts_with("wqm: error: Backup validation failed"),
                    "{err}"
                )
            })
            .run();
    }
}

/// No link inside a backup is followed: not the manifest, not a stored file, not a directory.
#[cfg(unix)]
#[test]
fn links_inside_a_backup_are_refused() {
    use std::os::unix::fs::symlink;
    // The manifest is a link to a manifest outside.
    let t = Test::new();
    fixtures::backup(&t.join("b"), &Spec::default());
    fs::rename(t.join("b/metadata/manifest.json"), t.join("outside.json")).unwrap();
    symlink(t.join("outside.json"), t.join("b/metadata/manifest.json")).unwrap();
    t.args("backup validate {TMP}/b")
        .status(3)
        .stdout_with(|out| {
            assert!(
                out.starts_with(
                    "✗ metadata/manifest.json: Backup manifest is missing or invalid: "
                ),
                "{out}"
            );
            assert!(out.contains("symbolic link"), "{out}");
        })
        .stderr_with(|err| {
            assert!(
                err.starts_with("wqm: error: Backup validation failed"),
                "{err}"
            )
        })
        .run();
    // A stored file is a link to the same bytes elsewhere: size and checksum would match.
    detects(
        |b| {
            let file = b.join("sqlite/state.db");
            fs::rename(&file, b.join("../state.db")).unwrap();
            symlink(b.join("../state.db"), &file).unwrap();
        },
        Spec::default(),
        &["✗ sqlite/state.db: a symbolic link: wqm never follows links in a backup"],
    );
    // A directory is a link to a copy of itself elsewhere.
    detects(
        |b| {
            fs::rename(b.join("collections"), b.join("../elsewhere")).unwrap();
            symlink(b.join("../elsewhere"), b.join("collections")).unwrap();
        },
        Spec::default(),
        &[
            "✗ Invalid backup directory structure: missing `collections/`",
            "✗ collections/small-named.snapshot: cannot be read: `collections/small-named.snapshot` is a symbolic link or passes through one",
        ],
    );
}

/// A manifest over 16 MiB is refused before it is parsed (exit 3), however it is padded.
#[test]
fn a_huge_manifest_is_refused_before_it_is_parsed() {
    let t = Test::new();
    fixtures::backup(&t.join("b"), &Spec::default());
    fixtures::edit_manifest(&t.join("b"), |m| {
        m["description"] = "x".repeat(50 << 20).into();
    });
    t.args("backup validate {TMP}/b")
        .status(3)
        .stdout_with(|out| {
            assert!(
                out.contains("larger than 16 MiB, the most a manifest may have; not read"),
                "{out}"
            )
        })
        .stderr_with(|err| {
            assert!(
                err.starts_with("wqm: error: Backup validation failed"),
                "{err}"
            )
        })
        .run();
}

#[test]
fn a_damaged_snapshot_with_a_matching_checksum_is_still_found() {
    // Rewrite the manifest's checksums after damaging the tar: only the structure check can tell.
    let t = Test::new();
    fixtures::backup(
        &t.join("b"),
        &Spec {
            algorithm: Algorithm::None,
            ..Spec::default()
        },
    );
    let snapshot = t.join("b/collections/small-plain.snapshot");
    let mut bytes = fs::read(&snapshot).unwrap();
    bytes[0] ^= 0x01; // the first header's name: its header checksum no longer matches
    fs::write(&snapshot, &bytes).unwrap();
    let sha = wqm::checksum::digest(&bytes, &[Algorithm::Sha256])
        .get(Algorithm::Sha256)
        .unwrap()
        .value;
    fixtures::edit_manifest(&t.join("b"), |m| {
        for f in m["files"].as_array_mut().unwrap() {
            if f["path"] == "collections/small-plain.snapshot" {
                f["content_sha256"] = sha.clone().into();
            }
        }
    });
    t.args("backup validate {TMP}/b --check-files")
        .status(3)
        .stdout_with(|out| {
            assert!(
                out.contains("✗ collections/small-plain.snapshot: not a valid Qdrant snapshot: "),
                "{out}"
            )
        })
        .stderr_with(|err| {
            assert!(
                err.starts_with("wqm: error: Backup validation failed"),
                "{err}"
            )
        })
        .run();
}

#[test]
fn structure_problems_are_found_without_check_files() {
    let t = Test::new();
    fs::create_dir_all(t.join("empty")).unwrap();
    t.args("backup validate {TMP}/empty")
        .status(3)
        .stdout(
            "✗ Invalid backup directory structure: missing `metadata/`, `collections/`, `sqlite/`\n\
             ✗ metadata/manifest.json: Backup manifest is missing or invalid: `{TMP}/empty/metadata/manifest.json` does not exist\n",
        )
        .stderr(
            "wqm: error: Backup validation failed: {TMP}/empty (2 errors, 0 warnings)\n\
             hint: run with --check-files --verbose to read every file\n",
        )
        .run();
    Test::new()
        .args("backup validate {TMP}/nope --json")
        .status(3)
        .stdout_json(|v| {
            assert_eq!(v["valid"], false);
            assert_eq!(v["findings"][0]["severity"], "error");
            assert_eq!(
                v["findings"][0]["message"].as_str().unwrap(),
                format!(
                    "Backup directory not found: {}",
                    v["path"].as_str().unwrap()
                )
            );
        })
        .stderr_with(|err| {
            assert!(
                err.starts_with("wqm: error: Backup validation failed: "),
                "{err}"
            )
        })
        .run();
}

#[test]
fn versions_incompatible_is_exit_4_and_a_downgrade_only_warns() {
    // 0.1 has no migration path: restore refuses it, whatever the flags.
    let t = Test::new();
    fixtures::backup(&t.join("b"), &Spec::default());
    fixtures::edit_manifest(&t.join("b"), |m| m["version"] = "0.1.4".into());
    t.args("backup validate {TMP}/b")
        .status(4)
        .stdout("✗ Incompatible backup version: 0.1.4\n  Current system version: 0.3.0\n  Major or minor version mismatch detected\n")
        .stderr_with(|err| assert!(err.starts_with("wqm: error: Backup validation failed: "), "{err}"))
        .run();

    let t = Test::new();
    fixtures::backup(&t.join("b"), &Spec::default());
    fixtures::edit_manifest(&t.join("b"), |m| m["version"] = "0.3.7".into());
    t.args("backup validate {TMP}/b --check-files")
        .stdout(
            "⚠ Compatibility DOWNGRADE: Backup version 0.3.7 is newer than current version 0.3.0; restore needs --allow-downgrade\n\
             Backup validation successful: {TMP}/b\n",
        )
        .run();
}

/// `validate`, `info` and `list` say what restore would do (the decision restore acts on).
#[test]
fn one_verdict_a_migrated_legacy_backup_and_a_dev_version() {
    let t = Test::new();
    fixtures::legacy_backup(&t.join("dir/old"));
    fixtures::edit_manifest(&t.join("dir/old"), |m| m["version"] = "0.2.1".into());
    fixtures::backup(&t.join("dir/dev"), &Spec::default());
    fixtures::edit_manifest(&t.join("dir/dev"), |m| m["version"] = "0.3.0.dev2".into());
    let migrates = "Backup version 0.2.1 is older than current version 0.3.0; restore migrates it (`wqm backup migrations --from 0.2.1` lists the steps)";
    let dev = "Backup version 0.3.0.dev2 is a development version; restore needs `backup.validation.allow_dev_versions: true`";
    let (_, tmp) = t
        .env("WQM_BACKUP__VALIDATION__VERSION_WARNING_THRESHOLD", "0")
        .args("backup validate {TMP}/dir/old -v")
        .stdout_with(move |o| {
            assert!(
                o.contains(&format!(
                    "ℹ Compatibility MIGRATION_AVAILABLE: {migrates}\n"
                )),
                "{o}"
            );
            assert!(o.contains("\nBackup validation successful: "), "{o}");
        })
        .run();
    let (_, tmp) = Test::in_dir(tmp)
        .env("WQM_BACKUP__VALIDATION__VERSION_WARNING_THRESHOLD", "0")
        .args("backup validate {TMP}/dir/dev")
        .stdout(&format!(
            "⚠ Compatibility DEV_VERSION: {dev}\nBackup validation successful: {{TMP}}/dir/dev\n"
        ))
        .run();
    // Allowed by the setting, the same backup is simply compatible.
    let (_, tmp) = Test::in_dir(tmp)
        .env("WQM_BACKUP__VALIDATION__ALLOW_DEV_VERSIONS", "true")
        .args("backup validate {TMP}/dir/dev")
        .stdout("Backup validation successful: {TMP}/dir/dev\n")
        .run();
    let (_, tmp) = Test::in_dir(tmp)
        .env("WQM_BACKUP__VALIDATION__VERSION_WARNING_THRESHOLD", "0")
        .args("backup info {TMP}/dir/old")
        .stdout_with(move |o| {
            assert!(
                o.ends_with(&format!(
                    "Compatibility: MIGRATION_AVAILABLE\n  {migrates}\n"
                )),
                "{o}"
            )
        })
        .run();
    let (_, tmp) = Test::in_dir(tmp)
        .env("WQM_BACKUP__VALIDATION__VERSION_WARNING_THRESHOLD", "0")
        .args("backup info {TMP}/dir/dev --json")
        .stdout_json(move |v| {
            assert_eq!(v["compatibility"]["verdict"], "dev_version");
            assert_eq!(v["compatibility"]["restorable"], false);
            assert_eq!(v["compatibility"]["message"], dev);
        })
        .run();
    let (_, tmp) = Test::in_dir(tmp)
        .env("WQM_BACKUP__VALIDATION__VERSION_WARNING_THRESHOLD", "0")
        .args("backup list {TMP}/dir --sort name")
        .stdout_with(|o| {
            assert!(
                o.starts_with("dev\n  Version: 0.3.0.dev2\n  Compatibility: DEV_VERSION\n"),
                "{o}"
            );
            assert!(
                o.contains("old\n  Version: 0.2.1\n  Compatibility: MIGRATION_AVAILABLE\n"),
                "{o}"
            );
        })
        .run();
    Test::in_dir(tmp)
        .env("WQM_BACKUP__VALIDATION__VERSION_WARNING_THRESHOLD", "0")
        .args("backup list {TMP}/dir --json --sort name")
        .stdout_json(move |v| {
            assert_eq!(
                v[1]["compatibility"], "incompatible",
                "the Python status stays"
            );
            assert_eq!(v[1]["verdict"], "migration_available");
            assert_eq!(v[1]["restorable"], true);
            assert_eq!(v[1]["compatibility_message"], migrates);
        })
        .run();
}

#[test]
fn json_report_lists_findings_with_severities() {
    let t = Test::new();
    fixtures::backup(&t.join("b"), &Spec::default());
    fixtures::flip_byte(&t.join("b/sqlite/state.db"));
    t.args("backup validate {TMP}/b --check-files --json")
        .status(3)
        .stdout_json(|v| {
            assert_eq!(v["valid"], false);
            assert_eq!(v["checked_files"], true);
            assert!(v["errors"].as_u64().unwrap() >= 1);
            assert_eq!(v["format"], "wqm/1");
            assert_eq!(v["compatibility"]["status"], "compatible");
            let errors: Vec<_> = v["findings"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|f| f["severity"] == "error")
                .collect();
            assert_eq!(errors[0]["file"], "sqlite/state.db");
            assert_eq!(errors[0]["check"], "checksum");
        })
        .stderr_with(|err| {
            assert!(
                err.contains(" error") && err.contains(", 0 warnings)"),
                "{err}"
            )
        })
        .run();
}

#[test]
fn a_legacy_backup_validates_and_its_database_is_checked() {
    let t = Test::new();
    fixtures::legacy_backup(&t.join("old"));
    t.env("WQM_BACKUP__VALIDATION__VERSION_WARNING_THRESHOLD", "0")
        .args("backup validate {TMP}/old --check-files -v")
        .stdout(
            "✓ Directory structure (metadata/, collections/, sqlite/)\n\
             ✓ metadata/manifest.json: Manifest is valid (legacy Python format)\n\
             ✓ Version format is valid (0.3.0)\n\
             ✓ Compatibility COMPATIBLE: Backup version 0.3.0 is compatible with current version 0.3.0\n\
             ✓ sqlite/state.db: a sound SQLite database\n\
             Backup validation successful: {TMP}/old\n",
        )
        .run();

    let t = Test::new();
    fixtures::legacy_backup(&t.join("old"));
    // Damage the header of the database's fourth page (4096-byte pages).
    let db = t.join("old/sqlite/state.db");
    let mut bytes = fs::read(&db).unwrap();
    for b in &mut bytes[3 * 4096..3 * 4096 + 8] {
        *b = 0xff;
    }
    fs::write(&db, bytes).unwrap();
    t.env("WQM_BACKUP__VALIDATION__VERSION_WARNING_THRESHOLD", "0")
        .args("backup validate {TMP}/old --check-files")
        .status(3)
        .stdout_with(|out| assert!(out.starts_with("✗ sqlite/state.db: "), "{out}"))
        .stderr_with(|err| {
            assert!(
                err.starts_with("wqm: error: Backup validation failed"),
                "{err}"
            )
        })
        .run();
}

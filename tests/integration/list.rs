//! `wqm backup list`.

use crate::fixtures::{self, Spec};
use crate::test::{self, Test};

fn names(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

/// Three backups: `a` newest, smallest, version 0.3.9; `b` oldest, largest, 0.3.10; `c` in
/// between, 0.3.2. The versions are edited into the manifests after writing.
fn three(t: &Test) {
    let now = wqm::now();
    fixtures::backup(
        &t.join("dir/a"),
        &Spec {
            timestamp: now - 10.0,
            collections: vec![],
            ..Spec::default()
        },
    );
    fixtures::backup(
        &t.join("dir/b"),
        &Spec {
            timestamp: now - 30.0,
            ..Spec::default()
        },
    );
    fixtures::backup(
        &t.join("dir/c"),
        &Spec {
            timestamp: now - 20.0,
            collections: vec![("small-plain", fixtures::SMALL_PLAIN, 200)],
            ..Spec::default()
        },
    );
    fixtures::edit_manifest(&t.join("dir/a"), |m| m["version"] = "0.3.9".into());
    fixtures::edit_manifest(&t.join("dir/b"), |m| m["version"] = "0.3.10".into());
    fixtures::edit_manifest(&t.join("dir/c"), |m| m["version"] = "0.3.2".into());
}

#[test]
fn sorts_as_asked() {
    for (sort, expected) in [
        ("timestamp", ["a", "c", "b"]),
        ("name", ["a", "b", "c"]),
        ("size", ["b", "c", "a"]),
        ("version", ["b", "a", "c"]),
    ] {
        let t = Test::new();
        three(&t);
        t.args(&format!("backup list {{TMP}}/dir --json --sort {sort}"))
            .stdout_json(move |v| assert_eq!(names(v), expected, "--sort {sort}"))
            .run();
    }
}

#[test]
fn text_lists_every_backup_with_its_version() {
    let t = Test::new();
    three(&t);
    let a = test::bytes_under(&t.join("dir/a"));
    t.args("backup list {TMP}/dir --sort name")
        .stdout_with(move |out| {
            assert!(
                out.starts_with("a\n  Version: 0.3.9\n  Compatibility: DOWNGRADE\n  Timestamp: "),
                "{out}"
            );
            assert!(
                out.contains(&format!(
                    "  Collections: 0, 0 documents\n  Age: 0 days\n  Size: {}\n  Valid: yes\n  Description: test backup\nb\n",
                    wqm::output::size(a)
                )),
                "{out}"
            );
            assert!(out.contains("  Collections: 2, 320 documents\n"), "{out}");
            assert!(
                out.ends_with("3 backup(s) in ") || out.contains("\n3 backup(s) in "),
                "{out}"
            );
        })
        .run();
}

#[test]
fn json_items_carry_the_python_fields() {
    let t = Test::new();
    fixtures::legacy_backup(&t.join("dir/old"));
    fixtures::backup(&t.join("dir/new"), &Spec::default());
    t.env("WQM_BACKUP__VALIDATION__VERSION_WARNING_THRESHOLD", "0")
        .args("backup list {TMP}/dir --json")
        .stdout_json(|v| {
            let items = v.as_array().unwrap();
            assert_eq!(items.len(), 2);
            let old = items.iter().find(|i| i["name"] == "old").unwrap();
            for field in [
                "path",
                "name",
                "version",
                "timestamp",
                "formatted_timestamp",
                "collections",
                "total_documents",
                "description",
            ] {
                assert!(old.get(field).is_some(), "{field} missing in {old}");
            }
            assert_eq!(old["collections"], 2);
            assert_eq!(old["format"], "legacy");
            assert_eq!(old["partial_backup"], true);
            assert_eq!(old["compatibility"], "compatible");
            let new = items.iter().find(|i| i["name"] == "new").unwrap();
            assert_eq!(new["format"], "wqm/1");
            assert_eq!(new["total_documents"], 320);
        })
        .run();
}

#[test]
fn no_backups_is_not_an_error() {
    let t = Test::new();
    std::fs::create_dir_all(t.join("dir/not-a-backup")).unwrap();
    t.args("backup list {TMP}/dir")
        .stdout("No backups found in {TMP}/dir\n")
        .run();
    let t = Test::new();
    std::fs::create_dir_all(t.join("dir")).unwrap();
    t.args("backup list {TMP}/dir --json").stdout("[]\n").run();
}

#[test]
fn staging_directories_are_never_listed_and_unreadable_entries_are_reported() {
    let t = Test::new();
    fixtures::backup(&t.join("dir/good"), &Spec::default());
    // A run that is still writing: its staging directory is hidden.
    let writing = wqm::store::Staging::begin(&t.join("dir/writing"), false).unwrap();
    std::fs::create_dir_all(t.join("dir/broken/metadata")).unwrap();
    std::fs::write(
        t.join("dir/broken/metadata/manifest.json"),
        "{\"version\": ",
    )
    .unwrap();
    t.args("backup list {TMP}/dir --json")
        .stdout_json(|v| assert_eq!(names(v), ["good"]))
        .stderr("wqm: warning: skipping `{TMP}/dir/broken`: Backup manifest is missing or invalid: `{TMP}/dir/broken/metadata/manifest.json`: EOF while parsing a value at line 1 column 12\n")
        .run();
    drop(writing);
}

#[test]
fn a_missing_directory_is_an_error() {
    Test::new()
        .args("backup list {TMP}/nope")
        .status(1)
        .stderr("wqm: error: Directory not found: {TMP}/nope\nhint: pass the directory that holds the backups\n")
        .run();
}

#[test]
fn health_is_shown_cheaply_and_fully_with_check() {
    let t = Test::new();
    fixtures::backup(
        &t.join("dir/good"),
        &Spec {
            timestamp: wqm::now() - 3.5 * 86_400.0,
            ..Spec::default()
        },
    );
    fixtures::backup(&t.join("dir/truncated"), &Spec::default());
    fixtures::truncate(&t.join("dir/truncated/sqlite/state.db"));
    fixtures::backup(&t.join("dir/flipped"), &Spec::default());
    fixtures::flip_byte(&t.join("dir/flipped/collections/small-plain.snapshot"));
    let (_, tmp) = t
        .args("backup list {TMP}/dir --json --sort name")
        .stdout_json(|v| {
            let by_name = |n: &str| {
                v.as_array()
                    .unwrap()
                    .iter()
                    .find(|i| i["name"] == n)
                    .unwrap()
                    .clone()
            };
            assert_eq!(by_name("good")["age_days"], 3);
            assert_eq!(by_name("good")["valid"], true);
            assert_eq!(
                by_name("truncated")["valid"],
                false,
                "a size mismatch is a cheap check"
            );
            assert_eq!(
                by_name("flipped")["valid"],
                true,
                "a flipped byte needs --check"
            );
        })
        .run();
    Test::in_dir(tmp)
        .args("backup list {TMP}/dir --check --sort name")
        .stdout_with(|out| {
            assert!(out.contains("flipped\n") && out.contains("  Valid: no (collections/small-plain.snapshot: checksum mismatch (xxhash64)"), "{out}");
            assert!(out.contains("  Valid: no (sqlite/state.db: size mismatch"), "{out}");
        })
        .run();
}

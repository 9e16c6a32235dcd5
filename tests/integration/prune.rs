//! `wqm backup prune`: exactly the right backups go, and nothing else is ever touched.

use std::fs;
use std::path::Path;

use tempfile::TempDir;

use crate::fixtures::{self, Spec};
use crate::test::Test;

fn at(utc: &str) -> f64 {
    chrono::NaiveDateTime::parse_from_str(utc, "%Y-%m-%d %H:%M")
        .unwrap()
        .and_utc()
        .timestamp() as f64
}

/// A backup directory holding a mix: valid backups, a broken one (the newest), a legacy one, a
/// corrupt manifest, a staging directory, a backup being written, a non-backup directory and a
/// symlink to a backup elsewhere. Returns the tempdir and the held writer.
fn mix() -> (TempDir, wqm::store::Staging) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dir");
    let spec = |when: &str| Spec {
        timestamp: at(when),
        collections: vec![],
        ..Spec::default()
    };
    for (name, when) in [
        ("broken", "2026-06-30 12:00"),
        ("v0", "2026-06-30 02:00"),
        ("v1", "2026-06-29 02:00"),
        ("v2", "2026-06-20 02:00"),
        ("v3", "2026-05-21 02:00"),
        ("v4", "2026-03-22 02:00"),
        ("writing", "2020-01-01 02:00"),
    ] {
        fixtures::backup(&dir.join(name), &spec(when));
    }
    fs::remove_dir_all(dir.join("broken/sqlite")).unwrap();
    fixtures::legacy_backup(&dir.join("legacy"));
    fs::create_dir_all(dir.join("corrupt/metadata")).unwrap();
    fs::write(dir.join("corrupt/metadata/manifest.json"), "{oops").unwrap();
    fs::create_dir_all(dir.join(".old.wqm-staging/metadata")).unwrap();
    fs::create_dir_all(dir.join("photos")).unwrap();
    fs::write(dir.join("photos/cat.jpg"), "meow").unwrap();
    fixtures::backup(&tmp.path().join("elsewhere"), &spec("2019-01-01 00:00"));
    std::os::unix::fs::symlink(tmp.path().join("elsewhere"), dir.join("link")).unwrap();
    // A run writing into `writing` (with --force) holds its staging directory's lock.
    let writer = wqm::store::Staging::begin(&dir.join("writing"), true).unwrap();
    (tmp, writer)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Prune also cleans up after dead runs: `.old.wqm-staging`, whose lock nobody holds, goes.
const UNTOUCHABLE: [&str; 5] = [
    ".writing.wqm-staging",
    "corrupt",
    "link",
    "photos",
    "writing",
];

/// Runs prune with `args` and checks which backups remain, besides the untouchable entries.
fn remains(args: &str, backups: &[&str]) {
    let (tmp, writer) = mix();
    let mut expected: Vec<String> = backups
        .iter()
        .chain(UNTOUCHABLE.iter())
        .map(|s| s.to_string())
        .collect();
    expected.sort();
    let (_, tmp) = Test::in_dir(tmp)
        .env("WQM_BACKUP__VALIDATION__VERSION_WARNING_THRESHOLD", "0")
        .args(&format!("backup prune {{TMP}}/dir {args}"))
        .stdout_with(|o| assert!(o.starts_with("Pruned "), "{o}"))
        .run();
    let left = entries(&tmp.path().join("dir"));
    assert_eq!(left, expected, "prune {args}");
    assert!(
        tmp.path()
            .join("elsewhere/metadata/manifest.json")
            .is_file(),
        "the symlink's target is untouched"
    );
    drop(writer);
}

#[test]
fn each_combination_of_rules_keeps_exactly_the_right_backups() {
    // With no rule, only the newest *valid* backup survives (`broken` is newer but broken).
    remains("--keep-within 0", &["v0"]);
    // The default --keep-within is backup.retention_days (30), counted from the newest backup.
    remains("", &["broken", "v0", "v1", "v2"]);
    remains("--keep-within 12", &["broken", "v0", "v1", "v2"]);
    remains("--keep-within 0 --keep-last 2", &["broken", "v0"]);
    remains("--keep-within 0 --keep-daily 2", &["broken", "v0", "v1"]);
    remains("--keep-within 0 --keep-weekly 2", &["broken", "v0", "v2"]);
    remains(
        "--keep-within 0 --keep-monthly 3",
        &["broken", "v0", "v3", "v4"],
    );
    remains(
        "--keep-within 0 --keep-last 1 --keep-monthly 2",
        &["broken", "v0", "v3"],
    );
    remains(
        "--keep-within 0 --keep-monthly 12",
        &["broken", "legacy", "v0", "v3", "v4"],
    );
}

#[test]
fn dry_run_deletes_nothing_and_says_why_each_stays() {
    let (tmp, writer) = mix();
    let before = entries(&tmp.path().join("dir"));
    let (_, tmp) = Test::in_dir(tmp)
        .env("WQM_BACKUP__VALIDATION__VERSION_WARNING_THRESHOLD", "0")
        .args("backup prune {TMP}/dir --keep-within 0 --keep-last 2 --dry-run")
        .stdout(
            "Rules: --keep-within 0 --keep-last 2 (`backup.retention_days` does not apply: keep rules were given)\n\
             Would remove v1 (2026-06-29T02:00:00+00:00)\n\
             Would remove v2 (2026-06-20T02:00:00+00:00)\n\
             Would remove v3 (2026-05-21T02:00:00+00:00)\n\
             Would remove v4 (2026-03-22T02:00:00+00:00)\n\
             Would remove legacy (2025-10-21T09:00:00+00:00)\n\
             Keep broken (2026-06-30T12:00:00+00:00): last 1\n\
             Keep v0 (2026-06-30T02:00:00+00:00): last 2, the newest valid backup\n\
             Skip .old.wqm-staging: hidden (a backup being written, or not wqm's)\n\
             Skip .writing.wqm-staging: hidden (a backup being written, or not wqm's)\n\
             Skip corrupt: not a wqm backup (Backup manifest is missing or invalid: `{TMP}/dir/corrupt/metadata/manifest.json`: key must be a string at line 1 column 2)\n\
             Skip link: a symlink; wqm never follows symlinks\n\
             Skip photos: not a wqm backup (Backup manifest is missing or invalid: `{TMP}/dir/photos/metadata/manifest.json` does not exist)\n\
             Skip writing: being written (its staging directory is locked)\n\
             Dry-run: 5 backup(s) would be removed, 2 kept, 6 other entries left alone. Nothing was deleted.\n",
        )
        .run();
    assert_eq!(entries(&tmp.path().join("dir")), before);
    drop(writer);
}

/// 17 nightly backups ending on Sunday 2026-06-28.
fn nightly(count: i64) -> TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let last = chrono::NaiveDate::from_ymd_opt(2026, 6, 28).unwrap();
    for back in 0..count {
        let day = last - chrono::Duration::days(back);
        fixtures::backup(
            &tmp.path()
                .join(format!("dir/backup-{}", day.format("%Y%m%d"))),
            &Spec {
                timestamp: at(&format!("{} 12:00", day.format("%Y-%m-%d"))),
                collections: vec![],
                ..Spec::default()
            },
        );
    }
    tmp
}

#[test]
fn explicit_rules_replace_retention_days_as_in_restic() {
    // --keep-last 3 keeps Sun, Sat, Fri; --keep-weekly 2 adds the Sunday before. The default
    // `backup.retention_days` (30) would keep all 17: it must not join explicit rules.
    let (_, tmp) = Test::in_dir(nightly(17))
        .env("WQM_BACKUP__VALIDATION__VERSION_WARNING_THRESHOLD", "0")
        .args("backup prune {TMP}/dir --keep-last 3 --keep-weekly 2 --dry-run --json")
        .stdout_json(|v| {
            let kept: Vec<String> = v["kept"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| format!("{}: {}", k["name"].as_str().unwrap(), k["reasons"]))
                .collect();
            assert_eq!(
                kept,
                [
                    r#"backup-20260628: ["last 1","weekly #1","the newest valid backup"]"#,
                    r#"backup-20260627: ["last 2"]"#,
                    r#"backup-20260626: ["last 3"]"#,
                    r#"backup-20260621: ["weekly #2"]"#,
                ]
            );
            assert_eq!(v["removed"].as_array().unwrap().len(), 13);
            assert_eq!(v["policy"]["within_days"], serde_json::Value::Null);
            assert_eq!(v["policy"]["default_applied"], false);
        })
        .run();
    // With no rule at all, the default applies, and the output says so.
    Test::in_dir(tmp)
        .env("WQM_BACKUP__RETENTION_DAYS", "2")
        .env("WQM_BACKUP__VALIDATION__VERSION_WARNING_THRESHOLD", "0")
        .args("backup prune {TMP}/dir --dry-run")
        .stdout_with(|o| {
            assert!(
                o.starts_with("Rules: --keep-within 2 from `backup.retention_days` (no keep rule given)\n"),
                "{o}"
            );
            assert!(
                o.contains("Keep backup-20260626 (2026-06-26T12:00:00+00:00): within 2 days of the newest (`backup.retention_days`)\n"),
                "{o}"
            );
            assert!(o.ends_with("Dry-run: 14 backup(s) would be removed, 3 kept, 0 other entries left alone. Nothing was deleted.\n"), "{o}");
        })
        .run();
}

#[test]
fn json_reports_every_decision() {
    let (tmp, writer) = mix();
    Test::in_dir(tmp)
        .args("backup prune {TMP}/dir --keep-last 1 --keep-within 0 --json")
        .stdout_json(|v| {
            assert_eq!(v["dry_run"], false);
            assert_eq!(v["kept"].as_array().unwrap().len(), 2);
            assert_eq!(v["removed"].as_array().unwrap().len(), 5);
            assert_eq!(v["policy"]["last"], 1);
            assert_eq!(
                v["skipped"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|s| s["name"] == "writing")
                    .unwrap()["reason"],
                "being written (its staging directory is locked)"
            );
        })
        .run();
    drop(writer);
}

#[test]
fn the_directory_defaults_to_the_default_backup_directory() {
    let (tmp, writer) = mix();
    Test::in_dir(tmp)
        .env("WQM_BACKUP__DEFAULT_BACKUP_DIRECTORY", "{TMP}/dir")
        .args("backup prune --keep-within 0 --quiet")
        .run();
    drop(writer);
    Test::new()
        .args("backup prune")
        .status(2)
        .stderr("wqm: error: DIR is required: `backup.default_backup_directory` is not set\nhint: pass the directory that holds the backups, or set `backup.default_backup_directory`\n")
        .run();
}

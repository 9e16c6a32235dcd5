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

/// What is in `dir` but the runs' lock objects (and where they are written first).
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".wqm-locks" && n != ".wqm-backend")
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
    remains("--keep-none", &["v0"]);
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
    // restic's other rules: years, hours, unlimited counts, calendar durations.
    remains("--keep-yearly 5", &["broken", "legacy", "v0"]);
    remains("--keep-hourly 2", &["broken", "v0"]);
    remains(
        "--keep-monthly unlimited",
        &["broken", "legacy", "v0", "v3", "v4"],
    );
    remains("--keep-within 1m", &["broken", "v0", "v1", "v2"]);
    remains(
        "--keep-within 1m1d --keep-within-monthly 1y",
        &["broken", "legacy", "v0", "v1", "v2", "v3", "v4"],
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
            "Rules: --keep-last 2 --keep-within 0 (`backup.retention_days` does not apply: keep rules were given)\n\
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

/// What a prune killed while deleting left (its backup renamed `.NAME.wqm-deleting`, half
/// removed) goes with the next prune, whole, without following a link in it.
#[test]
fn a_half_deleted_backup_goes_with_the_next_prune() {
    let tmp = nightly(3);
    let dir = tmp.path().join("dir");
    let half = dir.join(".backup-20260601.wqm-deleting");
    fs::create_dir_all(half.join("collections/empty")).unwrap();
    fs::write(half.join("collections/a.snapshot"), "left").unwrap();
    fs::write(tmp.path().join("precious"), "keep").unwrap();
    std::os::unix::fs::symlink(tmp.path(), half.join("link")).unwrap();
    let tmp = only_the_two_newest_left(tmp);
    assert_eq!(
        fs::read_to_string(tmp.path().join("precious")).unwrap(),
        "keep"
    );
}

/// A backup whose name no object can have (a backslash: made by hand) is pruned all the same.
#[test]
fn a_backup_named_as_no_object_can_be_is_pruned_too() {
    let tmp = nightly(3);
    let dir = tmp.path().join("dir");
    fs::rename(dir.join("backup-20260626"), dir.join("by\\hand")).unwrap();
    only_the_two_newest_left(tmp);
}

/// `prune --keep-last 2` of `nightly(3)`'s directory removes the oldest, and nothing is left
/// in the directory but the two newest.
fn only_the_two_newest_left(tmp: TempDir) -> TempDir {
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup prune {TMP}/dir --keep-last 2")
        .stdout_with(|o| assert!(o.contains(": removed 1, kept 2"), "{o}"))
        .run();
    assert_eq!(
        entries(&tmp.path().join("dir")),
        ["backup-20260627", "backup-20260628"]
    );
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
            assert_eq!(v["policy"]["within"], serde_json::Value::Null);
            assert_eq!(v["policy"]["last"], 3);
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
                o.starts_with("Rules: --keep-within 2d from `backup.retention_days` (no keep rule given)\n"),
                "{o}"
            );
            // As restic: strictly after the newest minus 2 days, so not the backup of 06-26 12:00.
            assert!(
                o.contains("Keep backup-20260627 (2026-06-27T12:00:00+00:00): within 2d of the newest (`backup.retention_days`)\n"),
                "{o}"
            );
            assert!(o.contains("Would remove backup-20260626 "), "{o}");
            assert!(o.ends_with("Dry-run: 15 backup(s) would be removed, 2 kept, 0 other entries left alone. Nothing was deleted.\n"), "{o}");
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
        .args("backup prune --keep-none --quiet")
        .run();
    drop(writer);
    Test::new()
        .args("backup prune")
        .status(2)
        .stderr("wqm: error: DIR is required: `backup.default_backup_directory` is not set\nhint: pass the directory that holds the backups, or set `backup.default_backup_directory`\n")
        .run();
}

/// Backups named after their age in days before now (negative: dated in the future).
fn aged(days_ago: &[(&str, f64)]) -> TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let now = wqm::now();
    for (name, days) in days_ago {
        fixtures::backup(
            &tmp.path().join("dir").join(name),
            &Spec {
                timestamp: now - days * 86_400.0,
                collections: vec![],
                ..Spec::default()
            },
        );
    }
    tmp
}

#[test]
fn a_backup_dated_in_the_future_makes_no_other_one_old() {
    // Another machine's clock a year ahead: plain prune (`backup.retention_days`, 30) and
    // --keep-within measure from yesterday's backup, the newest one not in the future.
    let backups = [
        ("ahead", -365.0),
        ("yesterday", 1.0),
        ("last-week", 7.0),
        ("old", 60.0),
    ];
    let warned = |e: &str| {
        assert!(
            e.starts_with("wqm: warning: `ahead` is dated ")
                && e.ends_with(", in the future: kept, and counted by no keep rule; check the clock of this machine and of the one that made it\n")
                && e.lines().count() == 1,
            "{e}"
        );
    };
    let (_, tmp) = Test::in_dir(aged(&backups))
        .args("backup prune {TMP}/dir")
        .stdout_with(|o| assert!(o.starts_with("Pruned "), "{o}"))
        .stderr_with(warned)
        .run();
    assert_eq!(
        entries(&tmp.path().join("dir")),
        ["ahead", "last-week", "yesterday"]
    );
    Test::in_dir(aged(&backups))
        .args("backup prune {TMP}/dir --keep-within 3d --keep-last 1 --json")
        .stderr_with(warned)
        .stdout_json(|v| {
            assert_eq!(v["future_dated"], serde_json::json!(["ahead"]));
            let kept: Vec<String> = v["kept"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| format!("{}: {}", k["name"].as_str().unwrap(), k["reasons"]))
                .collect();
            assert_eq!(
                kept,
                [
                    r#"ahead: ["dated in the future"]"#,
                    r#"yesterday: ["within 3d of the newest","last 1","the newest valid backup"]"#,
                ]
            );
        })
        .run();
}

#[test]
fn rules_that_keep_nothing_are_refused_unless_keep_none() {
    let refused = "wqm: error: the keep rules given keep nothing: prune would remove every backup but the newest valid one; nothing was removed\nhint: give a keep rule (e.g. `--keep-daily 7 --keep-weekly 4`), or `--keep-none` to remove all but the newest valid backup\n";
    let (_, tmp) = Test::in_dir(nightly(3))
        .args("backup prune {TMP}/dir --keep-within 0 --keep-daily 0")
        .status(2)
        .stderr(refused)
        .run();
    let (_, tmp) = Test::in_dir(tmp)
        .env("WQM_BACKUP__RETENTION_DAYS", "0")
        .args("backup prune {TMP}/dir")
        .status(2)
        .stderr_with(|e| {
            assert!(
                e.starts_with("wqm: error: `backup.retention_days` is 0 and no keep rule was given: prune would remove"),
                "{e}"
            )
        })
        .run();
    assert_eq!(entries(&tmp.path().join("dir")).len(), 3, "nothing removed");
    // restic refuses negative counts: `unlimited` keeps all.
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup prune {TMP}/dir --keep-last -1")
        .status(2)
        .stderr_with(|e| assert!(e.contains("`-1` is negative; `unlimited` keeps all"), "{e}"))
        .run();
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup prune {TMP}/dir --keep-none --keep-last 1")
        .status(2)
        .stderr_with(|e| assert!(e.contains("cannot be used with"), "{e}"))
        .run();
    let (_, tmp) = Test::in_dir(tmp)
        .env("WQM_BACKUP__RETENTION_DAYS", "0")
        .args("backup prune {TMP}/dir --keep-none --dry-run")
        .stdout_with(|o| {
            assert!(
                o.starts_with("Rules: --keep-none (only the newest valid backup stays)\n"),
                "{o}"
            )
        })
        .run();
    let tmp = Test::in_dir(tmp)
        .args("backup prune {TMP}/dir --keep-none --quiet")
        .run()
        .1;
    assert_eq!(entries(&tmp.path().join("dir")).len(), 1);
}

/// `nightly(17)`, and the safety backups an afternoon of failing restores left on its last day
/// (30, from 14:00), one three days before and one a month before.
fn with_safety_backups() -> TempDir {
    let tmp = nightly(17);
    let mut safety: Vec<(String, String)> = (0..30)
        .map(|m| {
            (
                format!("safety-20260628-14{m:02}00"),
                format!("2026-06-28 14:{m:02}"),
            )
        })
        .collect();
    safety.push(("safety-20260625-090000".into(), "2026-06-25 09:00".into()));
    safety.push(("safety-20260528-090000-1".into(), "2026-05-28 09:00".into()));
    for (name, when) in safety {
        fixtures::backup(
            &tmp.path().join("dir").join(name),
            &Spec {
                timestamp: at(&when),
                collections: vec![],
                description: Some("Safety backup before restoring x".into()),
                ..Spec::default()
            },
        );
    }
    tmp
}

#[test]
fn safety_backups_have_their_own_retention() {
    // The 32 safety backups take no room from --keep-last: the two newest nightly backups stay.
    // `backup.safety_retention` (the newest 3, and 7 days before the newest) keeps the
    // afternoon's and the one of 06-25, not the month-old one.
    let (_, tmp) = Test::in_dir(with_safety_backups())
        .args("backup prune {TMP}/dir --keep-last 2")
        .stdout_with(|o| assert!(o.starts_with("Pruned "), "{o}"))
        .run();
    let left = entries(&tmp.path().join("dir"));
    let nightly: Vec<&String> = left.iter().filter(|n| n.starts_with("backup-")).collect();
    assert_eq!(nightly, ["backup-20260627", "backup-20260628"]);
    assert_eq!(left.len(), 2 + 31, "{left:?}");
    assert!(!left.contains(&"safety-20260528-090000-1".to_string()));
    // Rules for them replace `backup.safety_retention`; the output says which applied.
    let (_, tmp) = Test::in_dir(tmp)
        .env("WQM_BACKUP__SAFETY_RETENTION__KEEP_WITHIN_DAYS", "1")
        .args("backup prune {TMP}/dir --keep-last 2 --dry-run")
        .stdout_with(|o| {
            assert!(o.contains("\nSafety backups: --keep-safety-last 3 --keep-safety-within 1d from `backup.safety_retention`\n"), "{o}");
            assert!(o.contains("\nWould remove safety-20260625-090000 (2026-06-25T09:00:00+00:00, a safety backup)\n"), "{o}");
            assert!(o.contains("\nKeep safety-20260628-142900 (2026-06-28T14:29:00+00:00, a safety backup): within 1d of the newest, last 1, the newest valid backup\n"), "{o}");
        })
        .run();
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup prune {TMP}/dir --keep-last 2 --keep-safety-last 2 --json")
        .stdout_json(|v| {
            assert_eq!(v["safety_policy"]["last"], 2);
            assert_eq!(v["safety_policy"]["within"], serde_json::Value::Null);
            let safety = |list: &str| {
                v[list]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|b| b["safety_backup"] == true)
                    .count()
            };
            assert_eq!((safety("kept"), safety("removed")), (2, 29));
        })
        .run();
    assert_eq!(entries(&tmp.path().join("dir")).len(), 4);
}

#[test]
fn list_says_which_backups_are_safety_backups() {
    let tmp = nightly(1);
    fixtures::backup(
        &tmp.path().join("dir/safety-20260628-140000"),
        &Spec {
            timestamp: at("2026-06-28 14:00"),
            collections: vec![],
            ..Spec::default()
        },
    );
    let (_, tmp) = Test::in_dir(tmp)
        .env("WQM_BACKUP__VALIDATION__VERSION_WARNING_THRESHOLD", "0")
        .args("backup list {TMP}/dir --json")
        .stdout_json(|v| {
            let kinds: Vec<(&str, bool)> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|b| {
                    (
                        b["name"].as_str().unwrap(),
                        b["safety_backup"].as_bool().unwrap(),
                    )
                })
                .collect();
            assert_eq!(
                kinds,
                [("safety-20260628-140000", true), ("backup-20260628", false)]
            );
        })
        .run();
    Test::in_dir(tmp)
        .env("WQM_BACKUP__VALIDATION__VERSION_WARNING_THRESHOLD", "0")
        .args("backup list {TMP}/dir")
        .stdout_with(|o| {
            assert!(o.starts_with("safety-20260628-140000\n  Kind: safety backup (made by a restore; `prune` keeps these by `backup.safety_retention`)\n  Version: "), "{o}");
            assert_eq!(o.matches("Kind:").count(), 1, "{o}");
        })
        .run();
}

/// `list` shows a future-dated backup with an age of 0 days; it says what it is, as prune does.
#[test]
fn list_warns_about_a_backup_dated_in_the_future() {
    Test::in_dir(aged(&[("ahead", -365.0), ("yesterday", 1.0)]))
        .args("backup list {TMP}/dir")
        .stdout_with(|o| assert!(o.contains("yesterday"), "{o}"))
        .stderr_with(|e| {
            assert!(
                e.starts_with("wqm: warning: `ahead` is dated ")
                    && e.ends_with(", in the future: prune keeps it, and counts it by no keep rule; check the clock of this machine and of the one that made it\n")
                    && e.lines().count() == 1,
                "{e}"
            )
        })
        .run();
}

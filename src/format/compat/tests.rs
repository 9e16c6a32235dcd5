//! The Python `VersionValidator`'s cases and the `backup.validation.*` policy.

use super::*;

/// `validate_compatibility(meta, current, allow_downgrade)` of the Python version: refuses
/// INCOMPATIBLE always and DOWNGRADE unless allowed.
fn validate_compatibility(
    backup: &str,
    current: &str,
    allow_downgrade: bool,
) -> Result<Status, CompatError> {
    let policy = Policy {
        strict_version_check: true,
        allow_dev_versions: true,
        allow_downgrade,
        ..Policy::default()
    };
    match decide(backup, current, &policy, |_, _| false) {
        Decision::Proceed { status, .. } => Ok(status),
        Decision::Migrate => Ok(Status::Incompatible),
        Decision::Refuse(e) => Err(e),
    }
}

fn v(s: &str) -> (i64, i64, u64) {
    Version::parse(s).unwrap().key()
}

#[test]
fn parses_like_python() {
    assert_eq!(v("0.2.1"), (0, 2, 1));
    assert_eq!(v("0.2.1dev1"), (0, 2, 1));
    assert_eq!(v("0.2.1.dev1"), (0, 2, 1));
    assert_eq!(v("0.2.1-rc1"), (0, 2, 1));
    assert_eq!(v("0.2.1+local"), (0, 2, 1));
    assert_eq!(v("0.2.dev1"), (0, 2, 0));
    assert_eq!(v("0.2"), (0, 2, 0));
    assert_eq!(v("1.0"), (1, 0, 0));
    assert_eq!(v(" 0.2.1"), (0, 2, 1));
    assert_eq!(v("-1.2.3"), (-1, 2, 3));
    assert_eq!(v("1_0.2.3"), (10, 2, 3));
    for bad in [
        "invalid", "v0.2.1", "0.2rc1.0", "0..1", "", "1", "_1.2.3", "1__0.2.3",
    ] {
        let err = Version::parse(bad).unwrap_err();
        assert!(
            err.to_string().starts_with("Invalid version format: "),
            "{bad}: {err}"
        );
    }
    assert_eq!(
        Version::parse("invalid").unwrap_err().to_string(),
        "Invalid version format: invalid"
    );
    assert!(Version::parse("0.2.1dev1").unwrap().has_suffix);
    assert!(Version::parse("0.2.1.dev1").unwrap().has_suffix);
    assert!(!Version::parse("0.2.1").unwrap().has_suffix);
    assert!(!Version::parse("0.2").unwrap().has_suffix);
}

#[test]
fn python_status_cases() {
    use Status::*;
    let cases = [
        ("0.2.1", "0.2.1", Compatible),
        ("0.2.0", "0.2.1", UpgradeAvailable),
        ("0.2.1", "0.2.2", UpgradeAvailable),
        ("0.2.2", "0.2.1", Downgrade),
        ("0.1.0", "0.2.0", Incompatible),
        ("1.0.0", "2.0.0", Incompatible),
        ("0.3.0", "0.2.1", Incompatible),
        ("1.0.0", "0.2.1", Incompatible),
        ("0.1.0", "0.2.1", Incompatible),
        ("0.2.1dev1", "0.2.1", Compatible),
        ("0.2.1dev1", "0.2.1dev2", Compatible),
        ("1.0", "1.0.0", Compatible),
    ];
    for (backup, current, expected) in cases {
        assert_eq!(
            check_compatibility(backup, current).unwrap(),
            expected,
            "{backup} on {current}"
        );
    }
}

#[test]
fn messages_name_both_versions() {
    let m = |s, b, c| compatibility_message(s, b, c);
    assert!(m(Status::Compatible, "0.2.1", "0.2.1")
        .contains("is compatible with current version 0.2.1"));
    let older = m(Status::UpgradeAvailable, "0.2.1", "0.2.2");
    assert!(older.contains("0.2.1") && older.contains("0.2.2") && older.contains("older"));
    assert!(m(Status::Downgrade, "0.2.2", "0.2.1").contains("is newer than"));
    let inc = m(Status::Incompatible, "0.1.0", "0.2.1");
    assert!(inc.contains("incompatible") && inc.contains("major or minor"));
}

#[test]
fn validate_compatibility_like_python() {
    assert_eq!(
        validate_compatibility("0.2.1", "0.2.1", false).unwrap(),
        Status::Compatible
    );
    assert_eq!(
        validate_compatibility("0.2.0", "0.2.1", false).unwrap(),
        Status::UpgradeAvailable
    );
    let down = validate_compatibility("0.2.2", "0.2.1", false).unwrap_err();
    assert!(down.to_string().contains("newer backup version"), "{down}");
    assert!(down
        .to_string()
        .contains("Backup is 1 patch version(s) newer"));
    assert_eq!(
        validate_compatibility("0.2.2", "0.2.1", true).unwrap(),
        Status::Downgrade
    );
    match validate_compatibility("0.1.0", "0.2.1", true).unwrap_err() {
        CompatError::Incompatible {
            backup,
            current,
            detail,
            ..
        } => {
            assert_eq!((backup.as_str(), current.as_str()), ("0.1.0", "0.2.1"));
            assert_eq!(detail, "Minor version mismatch: 0.1 vs 0.2");
        }
        other => panic!("{other}"),
    }
    let major = validate_compatibility("1.0.0", "2.0.0", false).unwrap_err();
    assert!(
        major.to_string().contains("Major version mismatch: 1 vs 2"),
        "{major}"
    );
    assert!(major
        .to_string()
        .starts_with("Backup version 1.0.0 is incompatible with current version 2.0.0"));
}

/// What `decide` answers, in short: "ok", "warn", "migrate", or the refusal's exit code.
fn outcome(d: Decision) -> String {
    match d {
        Decision::Proceed { notes, status } if notes.is_empty() => format!("ok {status}"),
        Decision::Proceed { status, .. } => format!("warn {status}"),
        Decision::Migrate => "migrate".to_string(),
        Decision::Refuse(e) => format!("refuse {}", e.exit_code().code()),
    }
}

#[test]
fn policy_table() {
    struct Row {
        backup: &'static str,
        current: &'static str,
        policy: Policy,
        migration: bool,
        expect: &'static str,
    }
    let strict = Policy {
        strict_version_check: true,
        ..Policy::default()
    };
    let with = |f: fn(&mut Policy)| {
        let mut p = strict.clone();
        f(&mut p);
        p
    };
    let rows = [
        Row {
            backup: "0.3.0",
            current: "0.3.0",
            policy: strict.clone(),
            migration: false,
            expect: "ok COMPATIBLE",
        },
        Row {
            backup: "0.3.0",
            current: "0.3.2",
            policy: strict.clone(),
            migration: false,
            expect: "warn UPGRADE_AVAILABLE",
        },
        Row {
            backup: "0.3.2",
            current: "0.3.0",
            policy: strict.clone(),
            migration: false,
            expect: "refuse 4",
        },
        Row {
            backup: "0.3.2",
            current: "0.3.0",
            policy: with(|p| p.allow_downgrade = true),
            migration: false,
            expect: "warn DOWNGRADE",
        },
        Row {
            backup: "0.3.2",
            current: "0.3.0",
            policy: with(|p| p.allow_patch_downgrade = true),
            migration: false,
            expect: "warn DOWNGRADE",
        },
        // A newer minor is INCOMPATIBLE unless allow_minor_downgrade, which makes it a downgrade.
        Row {
            backup: "0.4.0",
            current: "0.3.0",
            policy: with(|p| p.allow_downgrade = true),
            migration: false,
            expect: "refuse 4",
        },
        Row {
            backup: "0.4.0",
            current: "0.3.0",
            policy: with(|p| p.allow_minor_downgrade = true),
            migration: false,
            expect: "refuse 4",
        },
        Row {
            backup: "0.4.0",
            current: "0.3.0",
            policy: with(|p| {
                p.allow_minor_downgrade = true;
                p.allow_downgrade = true
            }),
            migration: false,
            expect: "warn DOWNGRADE",
        },
        Row {
            backup: "0.4.0",
            current: "0.3.0",
            policy: with(|p| {
                p.allow_minor_downgrade = true;
                p.allow_patch_downgrade = true
            }),
            migration: false,
            expect: "refuse 4",
        },
        Row {
            backup: "1.0.0",
            current: "0.3.0",
            policy: with(|p| {
                p.allow_minor_downgrade = true;
                p.allow_downgrade = true
            }),
            migration: false,
            expect: "refuse 4",
        },
        // Older minor: migrate when a path exists; else refuse, or warn when not strict.
        Row {
            backup: "0.2.0",
            current: "0.3.0",
            policy: strict.clone(),
            migration: true,
            expect: "migrate",
        },
        Row {
            backup: "0.2.0",
            current: "0.3.0",
            policy: strict.clone(),
            migration: false,
            expect: "refuse 4",
        },
        Row {
            backup: "0.2.0",
            current: "0.3.0",
            policy: Policy::default(),
            migration: false,
            expect: "warn INCOMPATIBLE",
        },
        Row {
            backup: "0.2.0",
            current: "1.0.0",
            policy: Policy::default(),
            migration: false,
            expect: "refuse 4",
        },
        Row {
            backup: "0.2.0",
            current: "1.0.0",
            policy: strict.clone(),
            migration: true,
            expect: "migrate",
        },
        // Development versions need allow_dev_versions.
        Row {
            backup: "0.3.0dev1",
            current: "0.3.0",
            policy: strict.clone(),
            migration: false,
            expect: "refuse 4",
        },
        Row {
            backup: "0.3.0dev1",
            current: "0.3.0",
            policy: with(|p| p.allow_dev_versions = true),
            migration: false,
            expect: "ok COMPATIBLE",
        },
        Row {
            backup: "0.3.0",
            current: "0.3.0dev1",
            policy: strict.clone(),
            migration: false,
            expect: "ok COMPATIBLE",
        },
        // Unparseable versions are an invalid backup.
        Row {
            backup: "v0.3.0",
            current: "0.3.0",
            policy: strict.clone(),
            migration: false,
            expect: "refuse 3",
        },
    ];
    for row in rows {
        let got = outcome(decide(row.backup, row.current, &row.policy, |_, _| {
            row.migration
        }));
        assert_eq!(
            got, row.expect,
            "{} on {} with {:?}",
            row.backup, row.current, row.policy
        );
    }
}

#[test]
fn refusals_name_both_versions_and_the_way_out() {
    let refuse = |b, c, p: &Policy| match decide(b, c, p, |_, _| false) {
        Decision::Refuse(e) => (e.to_string(), e.hint().unwrap()),
        other => panic!("{other:?}"),
    };
    let strict = Policy {
        strict_version_check: true,
        ..Policy::default()
    };
    let (msg, hint) = refuse("0.3.2", "0.3.0", &strict);
    assert!(msg.contains("0.3.2") && msg.contains("0.3.0"));
    assert!(hint.contains("--allow-downgrade") && hint.contains("allow_patch_downgrade"));
    let (msg, hint) = refuse("0.4.0", "0.3.0", &strict);
    assert!(msg.contains("0.4.0") && msg.contains("0.3.0"));
    assert!(hint.contains("allow_minor_downgrade"));
    let (msg, hint) = refuse("0.2.0", "0.3.0", &strict);
    assert!(msg.contains("0.2.0") && msg.contains("0.3.0"));
    assert!(hint.contains("strict_version_check"));
    let (msg, hint) = refuse("0.3.0dev1", "0.3.0", &strict);
    assert!(msg.contains("0.3.0dev1") && msg.contains("0.3.0"));
    assert!(hint.contains("allow_dev_versions"));
}

#[test]
fn the_report_says_what_restore_does() {
    let policy = Policy {
        strict_version_check: true,
        ..Policy::default()
    };
    let verdict = |backup: &str, policy: &Policy, path: bool| {
        let decision = decide(backup, "0.3.0", policy, |_, _| path);
        let r = report(backup, "0.3.0", &decision).unwrap();
        (r.verdict, r.restorable)
    };
    assert_eq!(
        verdict("0.3.0", &policy, false),
        (Verdict::Compatible, true)
    );
    assert_eq!(
        verdict("0.2.1", &policy, true),
        (Verdict::MigrationAvailable, true)
    );
    assert_eq!(
        verdict("0.2.1", &policy, false),
        (Verdict::Incompatible, false)
    );
    assert_eq!(
        verdict("0.3.1", &policy, false),
        (Verdict::Downgrade, false)
    );
    assert_eq!(
        verdict("0.3.0.dev1", &policy, false),
        (Verdict::DevVersion, false)
    );
    let lenient = Policy {
        allow_dev_versions: true,
        allow_patch_downgrade: true,
        ..Policy::default()
    };
    assert_eq!(
        verdict("0.3.0.dev1", &lenient, false),
        (Verdict::Compatible, true)
    );
    assert_eq!(
        verdict("0.3.1", &lenient, false),
        (Verdict::Downgrade, true)
    );
    assert_eq!(
        verdict("0.2.1", &lenient, false),
        (Verdict::Incompatible, true),
        "strict_version_check: false restores anyway"
    );
}

use std::path::PathBuf;

use chrono::Utc;

use super::*;

fn at(t: &str) -> f64 {
    chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M")
        .unwrap()
        .and_utc()
        .timestamp() as f64
}

/// Backups at these times (UTC, "YYYY-MM-DD HH:MM"), named by their index; `invalid` ones fail
/// the cheap checks.
fn candidates(times: &[&str], invalid: &[usize]) -> Vec<Candidate> {
    times
        .iter()
        .enumerate()
        .map(|(i, t)| Candidate {
            name: format!("b{i}"),
            path: PathBuf::from(format!("b{i}")),
            timestamp: at(t),
            valid: !invalid.contains(&i),
            safety: false,
        })
        .collect()
}

/// Now, for these tests: long after every backup.
const NOW: &str = "2026-12-01 00:00";

fn reasons(times: &[&str], invalid: &[usize], policy: &Policy, now: &str) -> Vec<Vec<String>> {
    decide(&candidates(times, invalid), policy, at(now), &Utc)
        .iter()
        .map(|r| r.iter().map(Reason::to_string).collect())
        .collect()
}

fn kept(times: &[&str], invalid: &[usize], policy: Policy) -> Vec<usize> {
    reasons(times, invalid, &policy, NOW)
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.is_empty())
        .map(|(i, _)| i)
        .collect()
}

fn policy(flags: &str) -> Policy {
    let mut policy = Policy::default();
    let mut words = flags.split_whitespace();
    while let (Some(flag), Some(value)) = (words.next(), words.next()) {
        let count = || Some(value.parse::<Count>().unwrap());
        let span = || Some(value.parse::<Span>().unwrap());
        match flag {
            "last" => policy.last = count(),
            "hourly" => policy.hourly = count(),
            "daily" => policy.daily = count(),
            "weekly" => policy.weekly = count(),
            "monthly" => policy.monthly = count(),
            "yearly" => policy.yearly = count(),
            "within" => policy.within = span(),
            "within-daily" => policy.within_daily = span(),
            other => panic!("{other}"),
        }
    }
    policy
}

const TIMES: [&str; 8] = [
    "2026-11-26 02:00", // 0: Thu
    "2026-11-25 14:00", // 1: Wed, later that day
    "2026-11-25 02:00", // 2: Wed
    "2026-11-22 02:00", // 3: Sun (previous ISO week)
    "2026-11-16 02:00", // 4: Mon
    "2026-10-31 02:00", // 5: October
    "2026-10-01 02:00", // 6: October
    "2025-08-15 02:00", // 7: August, a year before
];

#[test]
fn each_rule_alone() {
    for (flags, expected) in [
        ("", &[0][..]),
        ("last 3", &[0, 1, 2]),
        ("daily 3", &[0, 1, 3]),
        ("weekly 2", &[0, 3]),
        ("monthly 2", &[0, 5]),
        ("yearly 1", &[0]),
        ("hourly 2", &[0, 1]),
        // Strictly after the newest minus 10 days, as restic: 2026-11-16 02:00 is not.
        ("within 10d", &[0, 1, 2, 3]),
        ("within 10d1h", &[0, 1, 2, 3, 4]),
        ("within 1m", &[0, 1, 2, 3, 4, 5]),
        ("within-daily 5d", &[0, 1, 3]),
        ("within 0 last 0", &[0]),
    ] {
        assert_eq!(kept(&TIMES, &[], policy(flags)), expected, "{flags}");
    }
}

#[test]
fn a_count_with_room_left_keeps_the_oldest_backup_as_restic_0_16() {
    // Three months have backups: --keep-monthly 4 has room for the year-old one anyway, and
    // --keep-yearly 3 keeps 2026's newest, then 2025's (the oldest, a new year).
    assert_eq!(kept(&TIMES, &[], policy("monthly 4")), [0, 5, 7]);
    assert_eq!(kept(&TIMES, &[], policy("yearly 3")), [0, 7]);
    // Two backups of one day: the daily rule has room, so the older one stays too, saying why.
    let day = ["2026-11-26 14:00", "2026-11-26 02:00"];
    let why = reasons(&day, &[], &policy("daily 7"), NOW);
    assert_eq!(why[0], ["daily #1", "the newest valid backup"]);
    assert_eq!(why[1], ["daily #2 (the oldest backup)"]);
    // Without room, it goes.
    assert_eq!(kept(&day, &[], policy("daily 1")), [0]);
    let why = reasons(&TIMES[..3], &[], &policy("within-daily 1m"), NOW);
    assert_eq!(why[2], ["daily within 1m (the oldest backup)"]);
}

#[test]
fn unlimited_keeps_one_per_period_forever() {
    assert_eq!(
        kept(&TIMES, &[], policy("daily unlimited")),
        [0, 1, 3, 4, 5, 6, 7]
    );
    assert_eq!(kept(&TIMES, &[], policy("last unlimited")).len(), 8);
    let why = reasons(&TIMES, &[], &policy("monthly unlimited"), NOW);
    assert_eq!(why[7], ["monthly #3"]);
}

#[test]
fn rules_combine_a_backup_kept_by_any_is_kept() {
    assert_eq!(
        kept(&TIMES, &[], policy("last 1 daily 2 weekly 3 monthly 4")),
        [0, 1, 3, 5, 7]
    );
}

#[test]
fn a_backup_dated_in_the_future_makes_no_other_one_old() {
    // A backup from a machine whose clock is a year ahead, one from yesterday, one from last week.
    let times = [
        "2027-12-01 02:00",
        "2026-11-30 02:00",
        "2026-11-24 02:00",
        "2026-10-01 02:00",
    ];
    let default = Policy::default().or_default(30);
    let why = reasons(&times, &[], &default, NOW);
    assert_eq!(why[0], ["dated in the future"]);
    assert_eq!(
        why[1],
        [
            "within 30d of the newest (`backup.retention_days`)",
            "the newest valid backup"
        ]
    );
    assert_eq!(
        why[2],
        ["within 30d of the newest (`backup.retention_days`)"]
    );
    assert!(why[3].is_empty(), "{:?}", why[3]);
    // It takes no room from a count either.
    let why = reasons(&times, &[], &policy("last 2"), NOW);
    assert_eq!(why[0], ["dated in the future"]);
    assert_eq!(why[2], ["last 2"]);
    // A clock set back: every backup is in the future, all stay.
    let all = reasons(&times, &[], &policy("last 1"), "2020-01-01 00:00");
    assert!(all.iter().all(|r| r == &["dated in the future"]), "{all:?}");
}

#[test]
fn retention_days_applies_only_when_no_rule_is_given() {
    let none = Policy::default().or_default(30);
    assert_eq!(
        (none.within, none.default_applied),
        (Some(Span::days(30)), true)
    );
    let given = policy("last 3 weekly 2").or_default(30);
    assert_eq!((given.within, given.default_applied), (None, false));
    let zero = policy("within 0").or_default(30);
    assert_eq!(
        (zero.within, zero.default_applied),
        (Some(Span::days(0)), false)
    );
    assert!(zero.is_empty() && Policy::default().or_default(0).is_empty());
    assert!(!given.is_empty() && !none.is_empty());
    assert!(!policy("yearly unlimited").is_empty());
    assert!(policy("last 0 within-daily 0h").is_empty());
}

#[test]
fn the_newest_valid_backup_always_survives() {
    // The two newest are broken: the third stays even though no rule keeps it.
    assert_eq!(kept(&TIMES, &[0, 1], policy("last 1")), [0, 2]);
    assert_eq!(
        reasons(&TIMES, &[0, 1], &Policy::default(), NOW)[2],
        ["the newest valid backup"]
    );
}

#[test]
fn counts_parse_as_restic_takes_them() {
    assert_eq!("7".parse::<Count>(), Ok(Count::N(7)));
    assert_eq!("unlimited".parse::<Count>(), Ok(Count::Unlimited));
    assert!("-1"
        .parse::<Count>()
        .unwrap_err()
        .contains("`unlimited` keeps all"));
    assert!("many".parse::<Count>().unwrap_err().contains("not a count"));
    assert_eq!(
        serde_json::to_value([Count::N(3), Count::Unlimited]).unwrap(),
        serde_json::json!([3, "unlimited"])
    );
}

//! `decide` against restic's own `forget` test data (tests/fixtures/restic-policy, see its
//! README): every policy wqm can express keeps exactly what restic keeps, for the same reasons.

use std::path::{Path, PathBuf};

use chrono::Utc;
use clap::Parser;
use serde_json::Value;

use super::*;

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/restic-policy")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// restic's snapshots, named by their place in its list (so ties in time keep its order).
fn snapshots() -> Vec<Candidate> {
    fixture("snapshots.txt")
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let time = chrono::NaiveDateTime::parse_from_str(line, "%Y-%m-%d %H:%M:%S%.f")
                .unwrap_or_else(|e| panic!("{line}: {e}"))
                .and_utc();
            Candidate {
                name: format!("s{i:03}"),
                path: PathBuf::from(format!("s{i:03}")),
                timestamp: time.timestamp() as f64 + f64::from(time.timestamp_subsec_nanos()) / 1e9,
                valid: true,
                safety: false,
            }
        })
        .collect()
}

/// The policy of `flags`, as `wqm backup prune` parses them.
fn parse(flags: &str) -> Policy {
    let args = ["wqm", "backup", "prune"]
        .into_iter()
        .chain(flags.split_whitespace());
    match crate::cli::Cli::try_parse_from(args)
        .unwrap_or_else(|e| panic!("{flags}: {e}"))
        .command
    {
        crate::cli::Command::Backup(crate::cli::BackupCommand::Prune(args)) => {
            assert_eq!(args.keep_none, flags == "--keep-none");
            args.policy()
        }
        other => panic!("{other:?}"),
    }
}

/// A reason as restic words it, and the rule's count when it has one.
fn restic_words(reason: &Reason, policy: &Policy) -> (String, Option<(&'static str, u32)>) {
    let counted = |name: &'static str, count: Option<Count>, rank: u32| match count {
        Some(Count::N(n)) => Some((name, n - rank)),
        _ => None,
    };
    let oldest = |o: bool| if o { "oldest " } else { "" };
    match reason {
        Reason::Last { rank } => (
            "last snapshot".to_string(),
            counted("last", policy.last, *rank),
        ),
        Reason::Period {
            period,
            rank,
            oldest: o,
        } => {
            let name = period.name();
            let count = policy
                .counts()
                .into_iter()
                .find(|(p, _)| *p == Some(*period))
                .and_then(|(_, c)| c);
            (
                format!("{}{name} snapshot", oldest(*o)),
                counted(name, count, *rank),
            )
        }
        Reason::Within { span, .. } => (format!("within {span}"), None),
        Reason::PeriodWithin {
            period,
            span,
            oldest: o,
        } => (
            format!("{}{} within {span}", oldest(*o), period.name()),
            None,
        ),
        Reason::Future | Reason::NewestValid => unreachable!("not one of restic's"),
    }
}

fn restic_time(value: &Value) -> f64 {
    let time = chrono::DateTime::parse_from_rfc3339(value.as_str().unwrap()).unwrap();
    time.timestamp() as f64 + f64::from(time.timestamp_subsec_nanos()) / 1e9
}

#[test]
fn decides_as_restic_on_its_own_test_data() {
    let snapshots = snapshots();
    assert_eq!(snapshots.len(), 103);
    let now = crate::now();
    let policies = fixture("policies.txt");
    let mut checked = 0;
    for line in policies.lines().filter(|l| !l.starts_with('#')) {
        let (number, flags) = line.split_once(' ').unwrap();
        let policy = parse(flags);
        let golden: Value =
            serde_json::from_str(&fixture(&format!("policy_keep_snapshots_{number}"))).unwrap();
        let decided = decide(&snapshots, &policy, now, &Utc);
        let mut order: Vec<usize> = (0..snapshots.len()).collect();
        order.sort_by(|&a, &b| snapshots[b].timestamp.total_cmp(&snapshots[a].timestamp));
        let kept: Vec<usize> = order
            .into_iter()
            .filter(|&i| !decided[i].is_empty())
            .collect();

        if policy.is_empty() {
            // restic keeps nothing (and its `forget` refuses); wqm keeps the newest valid one.
            assert_eq!(golden["keep"], Value::Null, "policy {number}");
            let newest = kept[0];
            assert_eq!(snapshots[newest].name, "s102", "2016-01-18 12:02:03");
            assert_eq!(kept, [newest], "policy {number}");
            assert_eq!(decided[newest], [Reason::NewestValid]);
            checked += 1;
            continue;
        }
        let keep = golden["keep"].as_array().unwrap();
        let times: Vec<f64> = kept.iter().map(|&i| snapshots[i].timestamp).collect();
        let expected: Vec<f64> = keep.iter().map(|k| restic_time(&k["time"])).collect();
        assert_eq!(
            times, expected,
            "policy {number} ({flags}): the kept backups"
        );

        let reasons = golden["reasons"].as_array().unwrap();
        assert_eq!(reasons.len(), kept.len());
        for (&i, expected) in kept.iter().zip(reasons) {
            let ours: Vec<(String, Option<(&str, u32)>)> = decided[i]
                .iter()
                .filter(|r| **r != Reason::NewestValid)
                .map(|r| restic_words(r, &policy))
                .collect();
            let words: Vec<&str> = ours.iter().map(|(w, _)| w.as_str()).collect();
            let matches: Vec<&str> = expected["matches"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_str().unwrap())
                .collect();
            assert_eq!(
                words, matches,
                "policy {number} ({flags}): why {} stays",
                snapshots[i].name
            );
            for (rule, left) in ours.iter().filter_map(|(_, c)| *c) {
                let counter = expected["counters"][rule].as_u64().unwrap_or(0);
                assert_eq!(
                    counter,
                    u64::from(left),
                    "policy {number} ({flags}): the {rule} count left after {}",
                    snapshots[i].name
                );
            }
        }
        checked += 1;
    }
    assert_eq!(
        checked, 37,
        "every policy but restic's three --keep-tag ones"
    );
}

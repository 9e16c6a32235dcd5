//! Retention: which backups in a directory to keep, as restic's `forget` decides (a backup kept
//! by any rule is kept), and deleting the rest safely.
//!
//! Only directories that are wqm backups (a manifest that parses, legacy ones too) are ever
//! deleted; never the newest valid backup, never one being written (hidden staging directories,
//! held locks), never anything reached through a symlink. A deletion renames the backup to a
//! hidden name first, so `list` never sees a half-deleted backup.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use chrono::{Datelike, Local, TimeZone};
use serde::Serialize;

use crate::layout;
use crate::store::chunks::{self, ChunkId, ChunkStore, Collected};
use crate::store::{self, Seen};
use crate::verify;

/// A backup being deleted: renamed to this hidden name first.
pub(crate) const DELETING_SUFFIX: &str = ".wqm-deleting";

/// The keep rules; `None` (or 0) turns a rule off.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Policy {
    /// `within_days` is `backup.retention_days`, applied because no keep rule was given.
    pub default_applied: bool,
    /// Keep backups made within this many days of the newest backup.
    pub within_days: Option<u32>,
    /// Keep the newest N backups.
    pub last: Option<u32>,
    /// Keep the newest backup of each of the last N days that have backups.
    pub daily: Option<u32>,
    /// ... of each of the last N ISO weeks.
    pub weekly: Option<u32>,
    /// ... of each of the last N months.
    pub monthly: Option<u32>,
}

impl Policy {
    /// As restic's `forget`: the rules given replace the default; `retention_days` (as
    /// `within_days`) applies only when no rule is given at all.
    pub fn or_default(self, retention_days: u32) -> Policy {
        let given = [
            self.within_days,
            self.last,
            self.daily,
            self.weekly,
            self.monthly,
        ];
        if given.iter().any(Option::is_some) {
            return self;
        }
        Policy {
            within_days: Some(retention_days),
            default_applied: true,
            ..self
        }
    }
}

/// A backup prune may delete.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub name: String,
    pub path: PathBuf,
    pub timestamp: f64,
    /// Its structure and manifest pass the cheap checks.
    pub valid: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Kept {
    pub name: String,
    pub formatted_timestamp: String,
    pub reasons: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Removed {
    pub name: String,
    pub formatted_timestamp: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Outcome {
    pub kept: Vec<Kept>,
    pub removed: Vec<Removed>,
    /// Entries of the directory that prune does not touch, with why.
    pub skipped: Vec<Skipped>,
    /// The chunk store's garbage collection, when the directory has a store.
    pub chunks: Option<Garbage>,
}

/// What became of the chunk store's unreferenced chunks.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Garbage {
    Collected(Collected),
    /// Another run (a create, a restore, a validate) holds the store: nothing was deleted.
    Busy,
    /// Something might need chunks nobody can name: nothing was deleted.
    Refused(String),
}

/// Why each backup stays (empty: it goes). `candidates` in any order.
pub fn decide(candidates: &[Candidate], policy: &Policy) -> Vec<Vec<String>> {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| {
        candidates[b]
            .timestamp
            .total_cmp(&candidates[a].timestamp)
            .then_with(|| candidates[a].name.cmp(&candidates[b].name))
    });
    let mut reasons = vec![Vec::new(); candidates.len()];
    let active = |n: Option<u32>| n.filter(|&n| n > 0);

    if let Some(last) = active(policy.last) {
        for (rank, &i) in order.iter().take(last as usize).enumerate() {
            reasons[i].push(format!("last {}", rank + 1));
        }
    }
    let local = |t: f64| Local.timestamp_opt(t.floor() as i64, 0).single();
    type Bucket = fn(&chrono::DateTime<Local>) -> (i32, u32);
    let buckets: [(&str, Option<u32>, Bucket); 3] = [
        ("daily", policy.daily, |t| (t.year(), t.ordinal())),
        ("weekly", policy.weekly, |t| {
            (t.iso_week().year(), t.iso_week().week())
        }),
        ("monthly", policy.monthly, |t| (t.year(), t.month())),
    ];
    for (label, count, bucket_of) in buckets {
        let Some(count) = active(count) else { continue };
        let mut seen = BTreeSet::new();
        for &i in &order {
            let Some(time) = local(candidates[i].timestamp) else {
                continue;
            };
            if seen.len() as u32 == count {
                break;
            }
            if seen.insert(bucket_of(&time)) {
                reasons[i].push(format!("{label} #{}", seen.len()));
            }
        }
    }
    if let (Some(days), Some(&newest)) = (active(policy.within_days), order.first()) {
        let since = candidates[newest].timestamp - f64::from(days) * 86_400.0;
        for &i in &order {
            if candidates[i].timestamp >= since {
                reasons[i].push(if policy.default_applied {
                    format!("within {days} days of the newest (`backup.retention_days`)")
                } else {
                    format!("within {days} days of the newest")
                });
            }
        }
    }
    if let Some(&newest_valid) = order.iter().find(|&&i| candidates[i].valid) {
        reasons[newest_valid].push("the newest valid backup".to_string());
    }
    reasons
}

/// The backups directly in `dir` (the one scanner's rule) and what prune must leave alone.
pub fn survey(dir: &Path) -> std::io::Result<(Vec<Candidate>, Vec<Skipped>)> {
    let mut candidates = Vec::new();
    let mut skipped = Vec::new();
    let options = verify::Options::new(verify::Depth::Structure, Default::default());
    for entry in store::scan(dir)?.entries {
        match entry.seen {
            Seen::Backup(backup) => {
                let valid = verify::audit(&entry.path, &options, &crate::progress::Silent)
                    .is_ok_and(|r| r.damage().is_empty());
                candidates.push(Candidate {
                    name: entry.name,
                    path: entry.path,
                    timestamp: backup.manifest.timestamp,
                    valid,
                });
            }
            // Its own half-deleted backups are finished by `remove_leftovers`, not listed.
            Seen::Other(_) if entry.name.ends_with(DELETING_SUFFIX) => {}
            Seen::Other(reason) => skipped.push(Skipped {
                name: entry.name,
                reason,
            }),
            Seen::Unreadable(reason) => skipped.push(Skipped {
                name: entry.name,
                reason: format!("not a wqm backup ({reason})"),
            }),
        }
    }
    Ok((candidates, skipped))
}

/// Applies `policy` to the backups in `dir`; with `dry_run` nothing is deleted.
pub fn prune(dir: &Path, policy: &Policy, dry_run: bool) -> anyhow::Result<Outcome> {
    let (candidates, skipped) = survey(dir)?;
    let reasons = decide(&candidates, policy);
    let mut outcome = Outcome {
        skipped,
        ..Outcome::default()
    };
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| candidates[b].timestamp.total_cmp(&candidates[a].timestamp));
    for i in order {
        let candidate = &candidates[i];
        let formatted_timestamp = crate::manifest::format_timestamp(candidate.timestamp);
        if !reasons[i].is_empty() {
            outcome.kept.push(Kept {
                name: candidate.name.clone(),
                formatted_timestamp,
                reasons: reasons[i].clone(),
            });
            continue;
        }
        if !dry_run {
            crate::progress::check_interrupted()?;
            if !remove(&candidate.path)? {
                outcome.skipped.push(Skipped {
                    name: candidate.name.clone(),
                    reason: "began being written while prune ran".to_string(),
                });
                continue;
            }
        }
        outcome.removed.push(Removed {
            name: candidate.name.clone(),
            formatted_timestamp,
        });
    }
    if !dry_run {
        remove_leftovers(dir);
    }
    let removed: BTreeSet<&str> = outcome.removed.iter().map(|r| r.name.as_str()).collect();
    outcome.chunks = collect_chunks(dir, &removed, dry_run);
    Ok(outcome)
}

/// Deletes the chunks no remaining backup references (with `dry_run`, counts those that would
/// go once the `removed` backups are gone). Holds the store exclusively, so no create or reader
/// runs meanwhile, and reads every remaining backup's indexes under that lock: a chunk is only
/// deleted when nothing that exists can reference it.
fn collect_chunks(dir: &Path, removed: &BTreeSet<&str>, dry_run: bool) -> Option<Garbage> {
    if !ChunkStore::exists_in(dir) {
        return None;
    }
    let store = match ChunkStore::try_exclusive(dir) {
        Ok(Some(store)) => store,
        Ok(None) => return Some(Garbage::Busy),
        Err(e) => return Some(Garbage::Refused(e.to_string())),
    };
    let referenced = match referenced_chunks(dir, removed) {
        Ok(referenced) => referenced,
        Err(reason) => return Some(Garbage::Refused(reason)),
    };
    Some(
        match chunks::collect_garbage(&store, &referenced, dry_run) {
            Ok(collected) => Garbage::Collected(collected),
            Err(e) => Garbage::Refused(format!("stopped part-way: {e}")),
        },
    )
}

/// Every chunk the backups of `dir` (but `removed`) reference; an error when a backup's
/// manifest or index cannot be read, since it may need any chunk.
fn referenced_chunks(dir: &Path, removed: &BTreeSet<&str>) -> Result<HashSet<ChunkId>, String> {
    let scan = store::scan(dir).map_err(|e| format!("cannot read `{}`: {e}", dir.display()))?;
    let mut referenced = HashSet::new();
    for entry in &scan.entries {
        match &entry.seen {
            Seen::Unreadable(reason) => {
                return Err(format!(
                    "`{}` looks like a backup but cannot be read ({reason}); it may need chunks",
                    entry.name
                ))
            }
            Seen::Backup(backup) if !removed.contains(entry.name.as_str()) => {
                chunks::visit_chunks(backup, |line| {
                    referenced.insert(line.id);
                })
                .map_err(|e| format!("cannot read the chunk indexes of `{}`: {e}", entry.name))?;
            }
            _ => {}
        }
    }
    Ok(referenced)
}

/// Deletes a backup: renamed to a hidden name first (atomic for `list`), then removed. False
/// when a run began writing it (a `--force` replacing it) since the survey.
fn remove(path: &Path) -> anyhow::Result<bool> {
    if layout::being_written(path) {
        return Ok(false);
    }
    let doomed = layout::sibling(path, DELETING_SUFFIX);
    fs::rename(path, &doomed)?;
    fs::remove_dir_all(&doomed)?;
    Ok(true)
}

/// Finishes deletions an earlier run could not complete.
fn remove_leftovers(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.')
            && name.ends_with(DELETING_SUFFIX)
            && entry.file_type().is_ok_and(|t| t.is_dir())
        {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Backups at these local times ("YYYY-MM-DD HH:MM"), named by their index; `invalid` ones fail the cheap checks.
    fn candidates(times: &[&str], invalid: &[usize]) -> Vec<Candidate> {
        times
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let naive = chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M").unwrap();
                let timestamp = Local
                    .from_local_datetime(&naive)
                    .single()
                    .unwrap()
                    .timestamp() as f64;
                Candidate {
                    name: format!("b{i}"),
                    path: PathBuf::from(format!("b{i}")),
                    timestamp,
                    valid: !invalid.contains(&i),
                }
            })
            .collect()
    }

    fn kept(times: &[&str], invalid: &[usize], policy: Policy) -> Vec<usize> {
        decide(&candidates(times, invalid), &policy)
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.is_empty())
            .map(|(i, _)| i)
            .collect()
    }

    const TIMES: [&str; 8] = [
        "2026-11-26 02:00", // 0: Thu
        "2026-11-25 14:00", // 1: Wed, later that day
        "2026-11-25 02:00", // 2: Wed
        "2026-11-22 02:00", // 3: Sun (previous ISO week)
        "2026-11-16 02:00", // 4: Mon
        "2026-10-31 02:00", // 5: October
        "2026-10-01 02:00", // 6: October
        "2026-08-15 02:00", // 7: August
    ];

    #[test]
    fn each_rule_alone() {
        let none = Policy::default();
        assert_eq!(
            kept(&TIMES, &[], none.clone()),
            [0],
            "with no rule only the newest valid backup stays"
        );
        assert_eq!(
            kept(
                &TIMES,
                &[],
                Policy {
                    last: Some(3),
                    ..none.clone()
                }
            ),
            [0, 1, 2]
        );
        assert_eq!(
            kept(
                &TIMES,
                &[],
                Policy {
                    daily: Some(3),
                    ..none.clone()
                }
            ),
            [0, 1, 3]
        );
        assert_eq!(
            kept(
                &TIMES,
                &[],
                Policy {
                    weekly: Some(2),
                    ..none.clone()
                }
            ),
            [0, 3]
        );
        assert_eq!(
            kept(
                &TIMES,
                &[],
                Policy {
                    monthly: Some(3),
                    ..none.clone()
                }
            ),
            [0, 5, 7]
        );
        assert_eq!(
            kept(
                &TIMES,
                &[],
                Policy {
                    within_days: Some(10),
                    ..none.clone()
                }
            ),
            [0, 1, 2, 3, 4]
        );
        assert_eq!(
            kept(
                &TIMES,
                &[],
                Policy {
                    within_days: Some(0),
                    last: Some(0),
                    ..none
                }
            ),
            [0],
            "0 turns a rule off"
        );
    }

    #[test]
    fn rules_combine_a_backup_kept_by_any_is_kept() {
        let policy = Policy {
            last: Some(1),
            daily: Some(2),
            weekly: Some(3),
            monthly: Some(4),
            within_days: None,
            default_applied: false,
        };
        assert_eq!(kept(&TIMES, &[], policy), [0, 1, 3, 5, 7]);
    }

    #[test]
    fn retention_days_applies_only_when_no_rule_is_given() {
        let none = Policy::default().or_default(30);
        assert_eq!((none.within_days, none.default_applied), (Some(30), true));
        let given = Policy {
            last: Some(3),
            weekly: Some(2),
            ..Policy::default()
        }
        .or_default(30);
        assert_eq!((given.within_days, given.default_applied), (None, false));
        let zero = Policy {
            within_days: Some(0),
            ..Policy::default()
        }
        .or_default(30);
        assert_eq!((zero.within_days, zero.default_applied), (Some(0), false));
        let reasons = decide(&candidates(&TIMES, &[]), &Policy::default().or_default(1));
        assert_eq!(
            reasons[1],
            ["within 1 days of the newest (`backup.retention_days`)"]
        );
    }

    #[test]
    fn the_newest_valid_backup_always_survives() {
        // The two newest are broken: the third stays even though no rule keeps it.
        assert_eq!(
            kept(
                &TIMES,
                &[0, 1],
                Policy {
                    last: Some(1),
                    ..Policy::default()
                }
            ),
            [0, 2]
        );
        let reasons = decide(&candidates(&TIMES, &[0, 1]), &Policy::default());
        assert_eq!(reasons[2], ["the newest valid backup"]);
    }
}

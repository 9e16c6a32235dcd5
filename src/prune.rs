//! Retention: which backups in a directory to keep, as restic's `forget` decides (`policy`), and
//! deleting the rest safely. Restore's safety backups are a group of their own, with their own
//! rules; backups dated in the future are kept and counted by no rule.
//!
//! Only directories that are wqm backups (a manifest that parses, legacy ones too) are ever
//! deleted; never the newest valid backup (of each group), never one being written (hidden
//! staging directories, held locks), never anything reached through a symlink. A deletion renames
//! the backup to a hidden name first, so `list` never sees a half-deleted backup; on S3 it
//! removes the manifest first (`remote`).

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use chrono::Local;
use serde::Serialize;

use crate::backend::local::LocalBackend;
use crate::backend::lock::LockError;
use crate::backend::Kind;
use crate::backup::remote::{clean_dead_runs, DeadRuns};
use crate::format::layout;
use crate::store::chunks::{self, ChunkStore, Collected, Refs};
use crate::store::lock::RepoLock;
use crate::store::{self, Repository, Seen};
use crate::verify;

mod duration;
mod policy;
pub mod remote;

pub use duration::Span;
pub use policy::{decide, Count, Policy, Reason};
pub(crate) use remote::remove as remove_remote;

/// A backup being deleted: renamed to this hidden name first.
pub(crate) const DELETING_SUFFIX: &str = ".wqm-deleting";

/// How `restore` names its safety backups (in local time; `-N` is added when taken).
pub const SAFETY_NAME: &str = "safety-%Y%m%d-%H%M%S";

/// A name `restore` gives its safety backups: `safety-YYYYMMDD-HHMMSS`, maybe with `-N`.
pub fn is_safety_backup(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("safety-") else {
        return false;
    };
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let mut parts = rest.split('-');
    let (Some(date), Some(time), counter, None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    digits(date, 8)
        && digits(time, 6)
        && counter.is_none_or(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
}

/// The rules of the two groups of backups in a directory, each decided on its own (as restic's
/// `forget` decides per group): restore's safety backups never push a backup out of a count.
#[derive(Clone, Debug, Serialize)]
pub struct Policies {
    pub backups: Policy,
    pub safety: Policy,
}

/// A backup prune may delete.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub name: String,
    pub path: PathBuf,
    pub timestamp: f64,
    /// Its structure and manifest pass the cheap checks.
    pub valid: bool,
    /// A safety backup of a restore (`is_safety_backup`).
    pub safety: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Kept {
    pub name: String,
    pub formatted_timestamp: String,
    pub safety_backup: bool,
    pub reasons: Vec<Reason>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Removed {
    pub name: String,
    pub formatted_timestamp: String,
    pub safety_backup: bool,
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
    /// Backups dated after now (a clock set ahead, here or where they were made): kept, and
    /// counted by no rule.
    pub future_dated: Vec<String>,
    /// Entries of the directory that prune does not touch, with why.
    pub skipped: Vec<Skipped>,
    /// The chunk store's garbage collection, when the directory has a store.
    pub chunks: Option<Garbage>,
    /// On S3: what killed creates left, removed before the survey (a killed `--force`'s new
    /// backup put in place, which needs this run's exclusive lock).
    pub dead_runs: DeadRuns,
}

/// What became of the chunk store's unreferenced chunks.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Garbage {
    Collected(Collected),
    /// A wqm older than lock objects is using the store: nothing was deleted.
    Busy,
    /// Something might need chunks nobody can name: nothing was deleted.
    Refused(String),
}

/// The backups directly in the repository (the one scanner's rule) and what prune must leave
/// alone.
pub fn survey(repository: &Repository) -> std::io::Result<(Vec<Candidate>, Vec<Skipped>)> {
    let mut candidates = Vec::new();
    let mut skipped = Vec::new();
    let options = verify::Options::new(verify::Depth::Structure, Default::default());
    for entry in store::scan_at(repository)?.entries {
        match entry.seen {
            Seen::Backup(backup) => {
                let valid = verify::audit_at(&backup.place(), &options, &crate::progress::Silent)
                    .is_ok_and(|r| r.damage().is_empty());
                candidates.push(Candidate {
                    safety: is_safety_backup(&entry.name),
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

/// Applies `policies` to the backups of the repository (a local directory or `s3://`), as of
/// `now` (seconds since the epoch, local time for the calendar); with `dry_run` nothing is
/// deleted. The chunk store's collection reads no more than `max_repack` bytes of pack files
/// to repack them, when given.
pub fn prune(
    repository: &Repository,
    policies: &Policies,
    now: f64,
    dry_run: bool,
    max_repack: Option<u64>,
) -> anyhow::Result<Outcome> {
    // Held for the whole run, before the survey: no create or reader runs while backups and
    // chunks are deleted (a create replacing a backup, a restore between two of its files), and
    // none begins until prune is done. A dry run deletes nothing and only reads.
    let lock = match dry_run {
        false => RepoLock::exclusive(repository, "backup prune")?,
        true => RepoLock::shared(repository, "backup prune --dry-run")?,
    };
    let mut dead_runs = DeadRuns::default();
    if let (Repository::Remote(remote), false) = (repository, dry_run) {
        remote::finish_deletions(remote)?;
        dead_runs = remote.wait(clean_dead_runs(remote.backend(), true))?;
    }
    let (candidates, skipped) = survey(repository)?;
    let mut reasons = vec![Vec::new(); candidates.len()];
    for (safety, policy) in [(false, &policies.backups), (true, &policies.safety)] {
        let group: Vec<usize> = (0..candidates.len())
            .filter(|&i| candidates[i].safety == safety)
            .collect();
        let members: Vec<Candidate> = group.iter().map(|&i| candidates[i].clone()).collect();
        for (i, why) in group.into_iter().zip(decide(&members, policy, now, &Local)) {
            reasons[i] = why;
        }
    }
    let mut outcome = Outcome {
        skipped,
        dead_runs,
        ..Outcome::default()
    };
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| candidates[b].timestamp.total_cmp(&candidates[a].timestamp));
    for i in order {
        let candidate = &candidates[i];
        let formatted_timestamp = crate::format::manifest::format_timestamp(candidate.timestamp);
        if reasons[i].contains(&Reason::Future) {
            outcome.future_dated.push(candidate.name.clone());
        }
        if !reasons[i].is_empty() {
            outcome.kept.push(Kept {
                name: candidate.name.clone(),
                formatted_timestamp,
                safety_backup: candidate.safety,
                reasons: reasons[i].clone(),
            });
            continue;
        }
        if !dry_run {
            crate::progress::check_interrupted()?;
            lock.check()?;
            let removed = match repository {
                Repository::Local(_) => remove(&candidate.path)?,
                Repository::Remote(remote) => {
                    remote::remove(remote, &candidate.name)?;
                    true
                }
            };
            if !removed {
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
            safety_backup: candidate.safety,
        });
    }
    if let (Repository::Local(dir), false) = (repository, dry_run) {
        remove_leftovers(dir);
    }
    let removed: BTreeSet<&str> = outcome.removed.iter().map(|r| r.name.as_str()).collect();
    outcome.chunks = collect_chunks(repository, &removed, dry_run, max_repack, &lock)?;
    Ok(outcome)
}

/// Deletes the chunks no remaining backup references (with `dry_run`, counts those that would
/// go once the `removed` backups are gone). Every remaining backup's references are read, and
/// the store listed, before the store itself is held exclusively (an old store's `flock`; the
/// directory's lock object, `lock`, is exclusive for the whole prune). Holding it, the backups
/// are scanned again and those made or replaced since are read too, so a chunk is only deleted
/// when nothing that exists can reference it. A lost lock (another run may have begun) stops
/// the run before anything is deleted.
fn collect_chunks(
    repository: &Repository,
    removed: &BTreeSet<&str>,
    dry_run: bool,
    max_repack: Option<u64>,
    lock: &RepoLock,
) -> Result<Option<Garbage>, LockError> {
    if !ChunkStore::exists_at(repository) {
        return Ok(None);
    }
    let mut referenced = Referenced::default();
    if let Err(reason) = referenced.read(repository, removed) {
        return Ok(Some(Garbage::Refused(reason)));
    }
    let found = match chunks::find_unreferenced_at(repository, &referenced.refs) {
        Ok(found) => found,
        Err(e) => return Ok(Some(Garbage::Refused(e.to_string()))),
    };
    if let Err(e) = crate::failpoint::hit("prune:listed") {
        return Ok(Some(Garbage::Refused(e.to_string())));
    }
    let store = match ChunkStore::try_exclusive_at(repository) {
        Ok(Some(store)) => store,
        Ok(None) => return Ok(Some(Garbage::Busy)),
        Err(e) => return Ok(Some(Garbage::Refused(e.to_string()))),
    };
    if let Err(reason) = referenced.read(repository, removed) {
        return Ok(Some(Garbage::Refused(reason)));
    }
    lock.check()?;
    Ok(Some(
        match chunks::collect_garbage(&store, found, &referenced.refs, dry_run, max_repack) {
            Ok(collected) => Garbage::Collected(collected),
            Err(e) => Garbage::Refused(format!("stopped part-way: {e}")),
        },
    ))
}

/// The chunks the backups of a directory reference, and which backups (as found: the directory
/// and the manifest) they were read from.
#[derive(Default)]
struct Referenced {
    refs: Refs,
    read: HashMap<String, (u64, String)>,
}

impl Referenced {
    /// Adds the references of every backup of `dir` (but `removed`) not read before as it is
    /// now; an error when a backup's manifest or references cannot be read, since it may need
    /// any chunk. A backup gone since it was read leaves its references: they only keep more.
    fn read(&mut self, repository: &Repository, removed: &BTreeSet<&str>) -> Result<(), String> {
        let scan = store::scan_at(repository)
            .map_err(|e| format!("cannot read `{}`: {e}", repository.shown().display()))?;
        let mut unread = Vec::new();
        for entry in &scan.entries {
            match &entry.seen {
                Seen::Unreadable(reason) => {
                    return Err(format!(
                    "`{}` looks like a backup but cannot be read ({reason}); it may need chunks",
                    entry.name
                ))
                }
                Seen::Backup(backup) if !removed.contains(entry.name.as_str()) => {
                    let found = as_found(backup)
                        .map_err(|e| format!("cannot read `{}`: {e}", entry.name))?;
                    if self.read.get(&entry.name) != Some(&found) {
                        unread.push((entry.name.as_str(), backup, found));
                    }
                }
                _ => {}
            }
        }
        // On S3 each backup's list is a request: eight side by side, merged eight at a time (a
        // list can be large: never all of them held at once).
        let workers = match repository {
            Repository::Remote(_) => 8,
            Repository::Local(_) => 1,
        };
        for batch in unread.chunks(workers) {
            let lists = crate::parallel::map_in_order(batch, workers, |(name, backup, _)| {
                chunks::backup_refs(backup)
                    .map_err(|e| format!("cannot read the chunk indexes of `{name}`: {e}"))
            });
            for ((name, _, found), refs) in batch.iter().zip(lists) {
                self.refs.extend(&refs?);
                self.read.insert(name.to_string(), found.clone());
            }
        }
        Ok(())
    }
}

/// A backup as found: its directory's inode (a backup replaced by `create --force` is another
/// directory; on S3, where nothing is renamed, 0) and its manifest's xxhash64 (its time, its
/// files and their sizes: a backup replaced on S3 has another).
fn as_found(backup: &store::BackupDir) -> std::io::Result<(u64, String)> {
    use std::os::unix::fs::MetadataExt;
    let inode = match backup.remote {
        None => fs::symlink_metadata(&backup.path)?.ino(),
        Some(_) => 0,
    };
    let manifest = crate::checksum::digest(
        backup.manifest.to_json().as_bytes(),
        &[crate::checksum::Algorithm::Xxhash64],
    );
    let hash = manifest
        .get(crate::checksum::Algorithm::Xxhash64)
        .map(|c| c.value)
        .unwrap_or_default();
    Ok((inode, hash))
}

/// Deletes the local backup at `path` through its directory's backend: renamed to a hidden
/// name first (atomic for `list`: half removed, it is no backup, and the next prune finishes
/// it), then removed whole. False when a run began writing it (a `--force` replacing it)
/// since the survey.
pub(crate) fn remove(path: &Path) -> anyhow::Result<bool> {
    if layout::being_written(path) {
        return Ok(false);
    }
    let files = LocalBackend::existing(crate::fs::parent_dir(path))?;
    let doomed = layout::sibling(path, DELETING_SUFFIX);
    match (store::object_name(path), store::object_name(&doomed)) {
        (Some(from), Some(to)) => files.rename_blocking(&from, &to)?,
        _ => fs::rename(path, &doomed)?,
    }
    store::remove_dir(&doomed)?;
    Ok(true)
}

/// Finishes deletions an earlier run could not complete, and removes what killed runs' saves
/// left.
fn remove_leftovers(dir: &Path) {
    let Ok(files) = LocalBackend::existing(dir) else {
        return;
    };
    // Under the exclusive lock no run saves anything: a save's temporary file is a killed
    // run's (a pack cut short, most often).
    let _ = files.remove_unfinished_blocking();
    let mut doomed = Vec::new();
    let _ = files.visit_blocking(".", |entry| {
        if entry.name.ends_with(DELETING_SUFFIX) && entry.kind == Kind::Dir {
            doomed.push(entry.name);
        }
        false
    });
    for name in doomed {
        let _ = store::remove_dir(&dir.join(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safety_backups_are_known_by_the_name_restore_gives_them() {
        let made = chrono::Local::now().format(SAFETY_NAME).to_string();
        for name in [
            made.as_str(),
            "safety-20261203-141500",
            "safety-20261203-141500-12",
        ] {
            assert!(is_safety_backup(name), "{name}");
        }
        for name in [
            "backup-20261203-141500",
            "safety-2026120-141500",
            "safety-20261203-141500-",
            "safety-20261203-141500-1-2",
            "safety-20261203-14150x",
            "safety-net",
            "my-safety-20261203-141500",
        ] {
            assert!(!is_safety_backup(name), "{name}");
        }
    }
}

#[cfg(test)]
mod restic_tests;

//! Garbage collection: deleting the chunks no backup references. The store is listed before
//! its lock is taken (`find_unreferenced`) and only what is still unreferenced under the lock is
//! deleted (`collect_garbage`), so creates wait for the deletions, not for the listing. Local
//! and S3 stores are collected by the same code, through their backend: locally every step
//! follows no link (`LocalBackend`), a link planted as `chunks` or `tmp` refuses the collection
//! (`ChunkStore::check_in`), and anything in the store wqm did not put there (a link as a
//! fan-out directory among them) is reported and left alone instead of stopping every later
//! collection.

use std::collections::{BTreeSet, HashSet};
use std::io;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use super::{
    id_of_object, object_name, pack, runs, ChunkError, ChunkId, ChunkStore, PackIndex, Packer,
    Refs, CHUNKS_DIR, STORE_DIR, TMP_DIR,
};
use crate::backend::{Entry, Kind};
use crate::store::{Remote, Repository};

/// What a garbage collection found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Collected {
    pub chunks_deleted: u64,
    pub bytes_freed: u64,
    pub chunks_kept: u64,
    pub bytes_kept: u64,
    /// Pack files (a store on S3) deleted: none of their chunks referenced, or left by a dead
    /// run without an index.
    pub packs_deleted: u64,
    /// Pack files whose referenced chunks were written into new packs, then deleted: a
    /// quarter or more of their bytes were garbage.
    pub packs_repacked: u64,
    /// The bytes of the packs repacked: what was read to write their kept chunks again (what
    /// `--max-repack-size` bounds).
    pub bytes_repacked: u64,
    /// Packs due for repacking left as they are: more would have passed `--max-repack-size`.
    /// A later prune repacks them.
    pub packs_deferred: u64,
    /// Pack files whose index object was missing while a backup names chunks in them: the
    /// index written again from the copy at the pack's end.
    pub packs_recovered: u64,
    /// Bytes of unreferenced chunks left in packs kept (under a quarter of each).
    pub bytes_unused: u64,
    /// Packs kept as they are because a chunk in them to be repacked is damaged (what
    /// `validate` says about it).
    pub damaged: Vec<String>,
    /// Entries of `chunks/` and `tmp/` that wqm did not make (relative to the store), left
    /// alone.
    pub strays: Vec<String>,
}

/// The chunks a store held when it was listed that no backup read by then named: what a
/// collection may delete once it holds the store.
#[derive(Debug, Default)]
pub struct Unreferenced {
    /// Each chunk and its stored size, in the order listed (by fan-out directory).
    chunks: Vec<(ChunkId, u64)>,
    kept: u64,
    bytes_kept: u64,
    strays: Vec<String>,
    /// A store of pack files: its packs and their indexes, as read when it was listed.
    packs: Option<Arc<PackIndex>>,
}

/// `find_unreferenced` of a local directory or of a repository on a backend (S3).
pub fn find_unreferenced_at(
    repository: &Repository,
    referenced: &Refs,
) -> Result<Unreferenced, ChunkError> {
    match repository {
        Repository::Local(dir) => find_unreferenced(dir, referenced),
        Repository::Remote(remote) => find_unreferenced_in(remote, referenced),
    }
}

/// Lists the chunk store of `dir` without its lock (creates and readers go on meanwhile),
/// keeping the chunks `referenced` does not name. Safe unlocked: chunks only appear meanwhile
/// (never listed, so never deleted by this collection), and only a collection removes one.
/// No part of the store may be a link (`ChunkStore::check_in`); then it is listed through its
/// backend as one on S3 is.
pub fn find_unreferenced(dir: &Path, referenced: &Refs) -> Result<Unreferenced, ChunkError> {
    ChunkStore::check_in(dir)?;
    let remote = Remote::local(dir).map_err(|e| ChunkError::Io {
        path: ChunkStore::path_in(dir),
        source: io::Error::other(e),
    })?;
    find_unreferenced_in(&remote, referenced)
}

/// The same over a repository's objects: `.wqm-chunks/chunks/ab/<sha256>` is a chunk, anything
/// else under `chunks/` a stray (locally a link, a special file or a directory too, reported
/// once with nothing below it). Its `store.json` is read first: a store this wqm cannot read
/// (a newer one's) is not collected.
fn find_unreferenced_in(remote: &Remote, referenced: &Refs) -> Result<Unreferenced, ChunkError> {
    // The indexes read afresh when the store is opened (what this run's readers loaded may be
    // older), once: the collection then uses those.
    super::pack::Packs::forget(remote);
    let store = ChunkStore::open_remote(remote)?;
    let mut found = Unreferenced::default();
    let mut strays = Vec::new();
    let is_fan = |rel: &str| rel.len() == 2 && rel.bytes().all(|b| b.is_ascii_hexdigit());
    visit_part(remote, CHUNKS_DIR, &mut strays, is_fan, |_, entry| {
        if entry.kind == Kind::Dir {
            return true;
        }
        let id = id_of_object(&entry.name).filter(|_| entry.kind == Kind::File);
        match id {
            None => return false,
            Some(id) if referenced.contains(&id) => {
                found.kept += 1;
                found.bytes_kept += entry.size;
            }
            Some(id) => found.chunks.push((id, entry.size)),
        }
        true
    })
    .map_err(|source| ChunkError::Io {
        path: remote.shown(STORE_DIR),
        source,
    })?;
    strays.sort();
    found.strays = strays;
    found.packs = store.pack_index();
    Ok(found)
}

/// Hands `each` what is under the store's `part/` (`chunks/`, `tmp/`), one at a time, with its
/// name relative to `part/`. A directory `expected` does not accept (by that name), and
/// anything `each` does not (returning `false`), is a stray: added to `strays` (relative to the
/// store), and not entered.
fn visit_part(
    remote: &Remote,
    part: &str,
    strays: &mut Vec<String>,
    expected: impl Fn(&str) -> bool,
    mut each: impl FnMut(&str, Entry) -> bool,
) -> io::Result<()> {
    let prefix = format!("{STORE_DIR}/{part}/");
    remote.visit(&prefix, |entry| {
        let rel = entry
            .name
            .strip_prefix(&prefix)
            .unwrap_or_default()
            .to_string();
        let is_dir = entry.kind == Kind::Dir;
        if (is_dir && !expected(&rel)) || !each(&rel, entry) {
            strays.push(format!("{part}/{rel}"));
            return false;
        }
        is_dir
    })
}

/// Deletes the chunks `found` listed that `referenced` (now every backup's references, those
/// made since the listing too) does not name, and every run's temporary chunks. Only with the
/// store held exclusively: no create or reader is running, so nothing unreferenced now can
/// become referenced. A crash part-way leaves some unreferenced chunks, collected next time.
pub fn collect_garbage(
    store: &ChunkStore,
    found: Unreferenced,
    referenced: &Refs,
    dry_run: bool,
    max_repack: Option<u64>,
) -> io::Result<Collected> {
    let mut collected = Collected {
        chunks_kept: found.kept,
        bytes_kept: found.bytes_kept,
        strays: found.strays,
        ..Collected::default()
    };
    let doomed = unreferenced(found.chunks, referenced, &mut collected);
    let remote = &store.repository;
    if !dry_run {
        // A thousand to a request on S3, each directory synced once locally
        // (`Backend::remove_all`).
        let names: Vec<String> = doomed.iter().map(object_name).collect();
        remote.remove_all(names)?;
    }
    if let Some(packs) = found.packs {
        let repacking = Repacking {
            dry_run,
            chosen: max_repack.map(|budget| within_budget(&packs, referenced, budget)),
        };
        collect_packs(store, remote, &packs, referenced, repacking, &mut collected)?;
    }
    remove_runs(remote, dry_run, collected)
}

/// The listed chunks `referenced` does not name, to be deleted; what goes and what stays
/// counted in `collected`.
fn unreferenced(
    chunks: Vec<(ChunkId, u64)>,
    referenced: &Refs,
    collected: &mut Collected,
) -> Vec<ChunkId> {
    let mut doomed = Vec::new();
    for (id, len) in chunks {
        if referenced.contains(&id) {
            collected.chunks_kept += 1;
            collected.bytes_kept += len;
        } else {
            collected.chunks_deleted += 1;
            collected.bytes_freed += len;
            doomed.push(id);
        }
    }
    doomed
}

/// A pack is repacked once this share of its bytes (or more) is garbage: the space a store of
/// packs wastes stays under a third of what it holds, and a night's prune rewrites few packs.
const REPACK_DEAD_SHARE: (u64, u64) = (1, 4);

/// The garbage among the chunks of a pack of `size` bytes holding `entries` (`kept_bytes` of
/// them live), and whether that is `REPACK_DEAD_SHARE` of them or more. Judged on the chunks'
/// bytes: the copy of the index at the pack's end is no garbage (counted, a pack of small
/// chunks, whose index is large beside them, was repacked again by every collection).
fn unused_in(entries: &[(pack::Entry, bool)], kept_bytes: u64, size: u64) -> (u64, bool) {
    let chunk_bytes = entries
        .iter()
        .map(|(e, _)| e.range().end)
        .max()
        .unwrap_or(0)
        .min(size);
    let unused = chunk_bytes.saturating_sub(kept_bytes);
    let (share, of) = REPACK_DEAD_SHARE;
    (unused, unused * of >= chunk_bytes * share)
}

/// Some of a pack's entries, each with whether it is where its chunk is read from.
type Entries<'a> = Vec<&'a (pack::Entry, bool)>;

/// Which chunks of a pack stay: those referenced where they are read from (a later copy of a
/// chunk in another pack is garbage), and their stored bytes; the rest are garbage.
fn live_in<'a>(
    entries: &'a [(pack::Entry, bool)],
    referenced: &Refs,
) -> (Entries<'a>, Entries<'a>, u64) {
    let live = |(entry, first): &&(pack::Entry, bool)| *first && referenced.contains(&entry.id);
    let (kept, garbage): (Entries<'a>, Entries<'a>) = entries.iter().partition(live);
    let kept_bytes = kept.iter().map(|(e, _)| u64::from(e.stored)).sum();
    (kept, garbage, kept_bytes)
}

/// The packs due for repacking that one collection repacks when it may read no more than
/// `budget` bytes of them (`prune --max-repack-size`): the largest share of garbage first
/// (the most space freed for each byte read and written again), each that still fits. A pack
/// with nothing live is deleted without reading and costs nothing.
fn within_budget(packs: &PackIndex, referenced: &Refs, budget: u64) -> HashSet<Arc<str>> {
    let mut due = Vec::new();
    for (pack, entries) in packs.by_pack() {
        let Some(size) = packs.packs.get(&pack).copied().flatten() else {
            continue;
        };
        let (kept, _, kept_bytes) = live_in(&entries, referenced);
        let (unused, repack) = unused_in(&entries, kept_bytes, size);
        if repack && !kept.is_empty() {
            due.push((pack, size, unused));
        }
    }
    // unused_a / size_a > unused_b / size_b, without division.
    due.sort_by(|(_, size_a, unused_a), (_, size_b, unused_b)| {
        (u128::from(*unused_b) * u128::from(*size_a))
            .cmp(&(u128::from(*unused_a) * u128::from(*size_b)))
    });
    let mut left = budget;
    due.into_iter()
        .filter(|(_, size, _)| match left.checked_sub(*size) {
            Some(rest) => {
                left = rest;
                true
            }
            None => false,
        })
        .map(|(pack, ..)| pack)
        .collect()
}

/// How a collection treats the packs due for repacking: with `dry_run` it only counts them;
/// `chosen` (a budget given) names the ones it may repack, the others are deferred.
struct Repacking {
    dry_run: bool,
    chosen: Option<HashSet<Arc<str>>>,
}

impl Repacking {
    fn allows(&self, pack: &Arc<str>) -> bool {
        self.chosen
            .as_ref()
            .is_none_or(|chosen| chosen.contains(pack))
    }
}

/// The garbage collection of a store's pack files (under the exclusive lock, as every
/// collection): a pack without an index goes (a dead run's: no run sends one now; one whose
/// chunks a backup names gets its index back from the pack's own copy), a pack
/// none of whose chunks is referenced goes (its index first), a pack with `REPACK_DEAD_SHARE`
/// of garbage or more is repacked (when `repacking` allows it; else it waits for a later
/// collection): its referenced chunks, each checked, written into new packs with their
/// indexes, then its index and itself deleted (and its set-aside markers, as any a pack that
/// is gone left). Killed part-way, what is left is either a pack without an index or a
/// chunk in two packs: the next collection removes both.
fn collect_packs(
    store: &ChunkStore,
    remote: &Remote,
    packs: &PackIndex,
    referenced: &Refs,
    repacking: Repacking,
    collected: &mut Collected,
) -> io::Result<()> {
    let dry_run = repacking.dry_run;
    let indexed_now: HashSet<String> = pack::indexed_packs(remote)?.into_iter().collect();
    // Deleted indexes first, then packs: a pack is never left with an index and without data.
    let (mut indexes, mut objects) = (Vec::new(), Vec::new());
    let orphans: Vec<(&String, &u64)> = packs
        .unindexed
        .iter()
        .filter(|(pack, _)| !indexed_now.contains(*pack))
        .collect();
    // The set-aside markers of a pack, deleted with it (after its index; killed between, the
    // next collection removes a marker whose pack is gone).
    let markers = |pack: &str| -> Vec<String> {
        let marked = packs.aside.get(pack).map(Vec::as_slice).unwrap_or_default();
        marked
            .iter()
            .map(|id| pack::aside_object(pack, id))
            .collect()
    };
    // Referenced chunks found: loose (counted by `unreferenced`) and in packs (below).
    let mut found = collected.chunks_kept;
    let packer = Packer::new(remote.shared_backend(), remote.seal());
    for (pack, entries) in packs.by_pack() {
        let (kept, garbage, kept_bytes) = live_in(&entries, referenced);
        let Some(size) = packs.packs.get(&pack).copied().flatten() else {
            // An index whose pack is gone: its chunks are missing, which `validate` reports
            // as long as a backup names them.
            if kept.is_empty() {
                indexes.push(pack::index_object(&pack));
            }
            continue;
        };
        found += kept.len() as u64;
        let whole = kept.is_empty();
        let (unused, due) = unused_in(&entries, kept_bytes, size);
        let due = due && !whole;
        let repack = due && repacking.allows(&pack);
        if due && !repack {
            collected.packs_deferred += 1;
        }
        if repack && !dry_run {
            if let Err(damage) = repack_into(store, remote, (&pack, size), &kept, &packer) {
                collected.damaged.push(damage);
                collected.chunks_kept += kept.len() as u64;
                collected.bytes_kept += kept_bytes;
                collected.bytes_unused += unused;
                continue;
            }
        }
        if whole || repack {
            collected.chunks_deleted += garbage.len() as u64;
            // The old pack goes; what it kept is written again.
            collected.bytes_freed += size.saturating_sub(kept_bytes);
            indexes.push(pack::index_object(&pack));
            objects.push(pack::pack_object(&pack));
            objects.extend(markers(&pack));
            if whole {
                collected.packs_deleted += 1;
            } else {
                collected.packs_repacked += 1;
                collected.bytes_repacked += size;
            }
        } else {
            collected.bytes_unused += unused;
        }
        collected.chunks_kept += kept.len() as u64;
        collected.bytes_kept += kept_bytes;
    }
    // A pack without an index: a dead run's (nothing names its chunks: deleted), or one whose
    // index object was lost (its chunks named: the index written again from the copy at the
    // pack's end).
    let mut unreadable = Vec::new();
    for (pack, size) in orphans {
        match pack::read_trailer(remote, pack, *size, store.params().max_size) {
            Ok((index, entries)) => {
                let named = entries
                    .iter()
                    .filter(|e| referenced.contains(&e.id) && packs.locate(&e.id).is_none())
                    .count();
                if named == 0 {
                    collected.packs_deleted += 1;
                    collected.bytes_freed += size;
                    objects.push(pack::pack_object(pack));
                    objects.extend(markers(pack));
                    continue;
                }
                found += named as u64;
                collected.packs_recovered += 1;
                if !dry_run {
                    remote.wait(pack::save_index(remote.backend(), pack, index))?;
                }
            }
            Err(e) => unreadable.push((pack, size, e)),
        }
    }
    for (pack, size, e) in unreadable {
        if found < referenced.len() as u64 {
            // A chunk a backup names is in no index: this pack may hold it, so it stays;
            // `validate` names the chunks missing.
            collected.damaged.push(format!(
                "{} chunk(s) the backups name are in no index: kept `{}` ({e})",
                referenced.len() as u64 - found,
                pack::pack_object(pack),
            ));
        } else {
            collected.packs_deleted += 1;
            collected.bytes_freed += size;
            objects.push(pack::pack_object(pack));
            objects.extend(markers(pack));
        }
    }
    // The markers of a pack that is gone (deleted by a collection killed before its markers).
    for pack in packs.aside.keys() {
        if !packs.packs.contains_key(pack.as_str()) && !packs.unindexed.contains_key(pack) {
            objects.extend(markers(pack));
        }
    }
    if dry_run {
        return Ok(());
    }
    remote.wait(packer.finish())?;
    crate::failpoint::hit("prune:repacked")?;
    remote.remove_all(indexes)?;
    remote.remove_all(objects)
}

/// Writes the chunks `kept` of `pack` into `packer`'s packs, each checked against its name
/// first; `Err` names a damaged one (nothing of this pack is then deleted).
fn repack_into(
    store: &ChunkStore,
    remote: &Remote,
    (pack, size): (&str, u64),
    kept: &[&(pack::Entry, bool)],
    packer: &Packer,
) -> Result<(), String> {
    let rel = pack::pack_object(pack);
    let bytes = remote
        .read_range(&rel, 0..size)
        .map_err(|e| format!("`{rel}`: cannot read: {e}"))?;
    for (entry, _) in kept {
        let range = entry.offset as usize..entry.range().end as usize;
        let stored = bytes
            .get(range)
            .ok_or_else(|| format!("chunk `{}` in `{rel}`: the pack ends before it", entry.id))?;
        store
            .check_stored(&entry.id, entry.len as usize, stored)
            .map_err(|e| format!("{e} (in `{rel}`)"))?;
        remote
            .wait(packer.add(entry.id, entry.len as usize, stored))
            .map_err(|e| format!("cannot repack `{rel}`: {e}"))?;
    }
    Ok(())
}

/// A repository's `.wqm-chunks/tmp/`: the objects of runs' temporary directories (a local
/// store copied while a create ran) are removed as locally; anything else is a stray.
fn remove_runs(remote: &Remote, dry_run: bool, mut collected: Collected) -> io::Result<Collected> {
    let mut runs = BTreeSet::new();
    let mut strays = Vec::new();
    // Anything in a run's directory is its own; nothing else belongs in `tmp/`.
    let in_run = |rel: &str| rel.split('/').next().is_some_and(runs::is_run_dir);
    visit_part(
        remote,
        TMP_DIR,
        &mut strays,
        in_run,
        |rel, entry| match rel.split('/').next() {
            Some(run) if in_run(run) && (entry.kind == Kind::Dir || rel.contains('/')) => {
                runs.insert(run.to_string());
                true
            }
            _ => false,
        },
    )?;
    strays.sort();
    collected.strays.extend(strays);
    if !dry_run {
        for run in runs {
            remote.remove_under(&format!("{STORE_DIR}/{TMP_DIR}/{run}"))?;
        }
    }
    Ok(collected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8, offset: u32) -> (pack::Entry, bool) {
        let entry = pack::Entry {
            id: ChunkId::of(&[n]),
            offset,
            stored: 17,
            len: 8,
        };
        (entry, true)
    }

    #[test]
    fn a_pack_is_repacked_for_its_garbage_chunks_not_its_index_copy() {
        let entries = [entry(1, 0), entry(2, 17), entry(3, 34)];
        // Every chunk live, the index's copy at the end far larger than they: nothing to do.
        assert_eq!(unused_in(&entries, 51, 51 + 300), (0, false));
        // One chunk of three dead: a third of the chunks' bytes, repacked.
        assert_eq!(unused_in(&entries, 34, 51 + 300), (17, true));
        // A chunk's bytes past what the pack holds (damage) count only to its end.
        assert_eq!(unused_in(&entries, 34, 40), (6, false));
    }
}

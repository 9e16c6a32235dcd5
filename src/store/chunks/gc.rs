//! Garbage collection: deleting the chunks no backup references. The store is listed before
//! its lock is taken (`find_unreferenced`) and only what is still unreferenced under the lock is
//! deleted (`collect_garbage`), so creates wait for the deletions, not for the listing. Every step is relative to an
//! open directory and follows no link (`at.rs`): a link planted as `chunks`, `tmp` or a fan-out
//! directory refuses the collection, and anything in the store wqm did not put there is
//! reported and left alone instead of stopping every later collection.

use std::io;
use std::path::Path;

use serde::Serialize;

use super::{
    id_of_object, object_name, runs, ChunkError, ChunkId, ChunkStore, Refs, CHUNKS_DIR, STORE_DIR,
    TMP_DIR,
};
use crate::store::{at, Remote, Repository};

/// What a garbage collection found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Collected {
    pub chunks_deleted: u64,
    pub bytes_freed: u64,
    pub chunks_kept: u64,
    pub bytes_kept: u64,
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
}

/// `find_unreferenced` of a local directory or of a repository on a backend (S3).
pub fn find_unreferenced_at(
    repository: &Repository,
    referenced: &Refs,
) -> Result<Unreferenced, ChunkError> {
    match repository {
        Repository::Local(dir) => find_unreferenced(dir, referenced),
        Repository::Remote(remote) => find_unreferenced_remote(remote, referenced),
    }
}

/// The same over a repository's objects: `.wqm-chunks/chunks/ab/<sha256>` is a chunk, anything
/// else under `chunks/` a stray. Its `store.json` is read first: a store this wqm cannot read
/// (a newer one's) is not collected.
fn find_unreferenced_remote(
    remote: &Remote,
    referenced: &Refs,
) -> Result<Unreferenced, ChunkError> {
    ChunkStore::open_remote(remote)?;
    let prefix = format!("{STORE_DIR}/{CHUNKS_DIR}/");
    let objects = remote.list(&prefix).map_err(|source| ChunkError::Io {
        path: remote.shown(STORE_DIR),
        source,
    })?;
    let mut found = Unreferenced::default();
    for object in objects {
        let rel = object.name.strip_prefix(&prefix).unwrap_or(&object.name);
        match id_of_object(&object.name) {
            None => found.strays.push(format!("{CHUNKS_DIR}/{rel}")),
            Some(id) if referenced.contains(&id) => {
                found.kept += 1;
                found.bytes_kept += object.size;
            }
            Some(id) => found.chunks.push((id, object.size)),
        }
    }
    Ok(found)
}

/// Lists the chunk store of `dir` without its lock (creates and readers go on meanwhile),
/// keeping the chunks `referenced` does not name. Safe unlocked: chunks only appear meanwhile
/// (never listed, so never deleted by this collection), and only a collection removes one.
pub fn find_unreferenced(dir: &Path, referenced: &Refs) -> Result<Unreferenced, ChunkError> {
    ChunkStore::check_in(dir)?;
    let root = ChunkStore::path_in(dir);
    let listed = (|| {
        let mut found = Unreferenced::default();
        let chunks = at::Dir::open(&root)?.open_dir(CHUNKS_DIR)?;
        for fan in chunks.entries()? {
            let is_fan = fan.name.len() == 2 && fan.name.bytes().all(|b| b.is_ascii_hexdigit());
            if !is_fan || fan.kind != at::Kind::Dir {
                found.strays.push(format!("{CHUNKS_DIR}/{}", fan.name));
                continue;
            }
            for chunk in chunks.open_dir(&fan.name)?.entries()? {
                let id = ChunkId::parse(&chunk.name).filter(|id| {
                    id.to_string().starts_with(&fan.name) && chunk.kind == at::Kind::File
                });
                match id {
                    None => found
                        .strays
                        .push(format!("{CHUNKS_DIR}/{}/{}", fan.name, chunk.name)),
                    Some(id) if referenced.contains(&id) => {
                        found.kept += 1;
                        found.bytes_kept += chunk.len;
                    }
                    Some(id) => found.chunks.push((id, chunk.len)),
                }
            }
        }
        Ok(found)
    })();
    listed.map_err(|source| ChunkError::Io { path: root, source })
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
) -> io::Result<Collected> {
    let mut collected = Collected {
        chunks_kept: found.kept,
        bytes_kept: found.bytes_kept,
        strays: found.strays,
        ..Collected::default()
    };
    let doomed = unreferenced(found.chunks, referenced, &mut collected);
    if let Some(remote) = &store.remote {
        if !dry_run {
            // A thousand to a request on S3 (`Backend::remove_all`).
            let names: Vec<String> = doomed.iter().map(object_name).collect();
            remote.remove_all(&names)?;
        }
        return remove_remote_runs(remote, dry_run, collected);
    }
    let root = at::Dir::open(&store.root)?;
    let chunks = root.open_dir(CHUNKS_DIR)?;
    let mut fan_dir: Option<(String, at::Dir)> = None;
    for id in doomed.iter().filter(|_| !dry_run) {
        let name = id.to_string();
        let fan = &name[..2];
        if fan_dir.as_ref().is_none_or(|(open, _)| open != fan) {
            fan_dir = Some((fan.to_string(), chunks.open_dir(fan)?));
        }
        let (_, dir) = fan_dir.as_ref().expect("opened above");
        dir.remove_file(&name)?;
        crate::failpoint::hit("prune:chunk-deleted")?;
    }
    let tmp = match root.open_dir(TMP_DIR) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(collected),
        other => other?,
    };
    for entry in tmp.entries()? {
        if !runs::is_run_dir(&entry.name) || entry.kind != at::Kind::Dir {
            collected.strays.push(format!("{TMP_DIR}/{}", entry.name));
        } else if !dry_run {
            tmp.remove_tree(&entry.name)?;
        }
    }
    Ok(collected)
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

/// A repository's `.wqm-chunks/tmp/`: the objects of runs' temporary directories (a local
/// store copied while a create ran) are removed as locally; anything else is a stray.
fn remove_remote_runs(
    remote: &Remote,
    dry_run: bool,
    mut collected: Collected,
) -> io::Result<Collected> {
    let prefix = format!("{STORE_DIR}/{TMP_DIR}/");
    for object in remote.list(&prefix)? {
        let rel = object.name.strip_prefix(&prefix).unwrap_or(&object.name);
        match rel.split_once('/') {
            Some((run, _)) if runs::is_run_dir(run) => {
                if !dry_run {
                    remote.remove(&object.name)?;
                }
            }
            _ => collected.strays.push(format!("{TMP_DIR}/{rel}")),
        }
    }
    Ok(collected)
}

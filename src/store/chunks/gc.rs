//! Garbage collection: deleting the chunks no backup references.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::Path;

use serde::Serialize;

use super::{ChunkId, ChunkStore, CHUNKS_DIR, TMP_DIR};

/// What a garbage collection found and did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Collected {
    pub chunks_deleted: u64,
    pub bytes_freed: u64,
    pub chunks_kept: u64,
    pub bytes_kept: u64,
}

/// Deletes every chunk not in `referenced`, and every dead run's temporary chunks. Only with
/// the store held exclusively: no create or reader is running, so nothing unreferenced now can
/// become referenced. A crash part-way leaves some unreferenced chunks, collected next time.
pub fn collect_garbage(
    store: &ChunkStore,
    referenced: &HashSet<ChunkId>,
    dry_run: bool,
) -> io::Result<Collected> {
    let mut collected = Collected::default();
    let chunks = store.root.join(CHUNKS_DIR);
    for fan in sorted_entries(&chunks)? {
        let fan_path = chunks.join(&fan);
        if !fs::symlink_metadata(&fan_path)?.is_dir() {
            continue;
        }
        for name in sorted_entries(&fan_path)? {
            let path = fan_path.join(&name);
            let meta = fs::symlink_metadata(&path)?;
            let keep = ChunkId::parse(&name).is_some_and(|id| referenced.contains(&id));
            if keep {
                collected.chunks_kept += 1;
                collected.bytes_kept += meta.len();
                continue;
            }
            if !dry_run {
                fs::remove_file(&path)?;
                crate::failpoint::hit("prune:chunk-deleted")?;
            }
            collected.chunks_deleted += 1;
            collected.bytes_freed += meta.len();
        }
    }
    if !dry_run {
        let tmp = store.root.join(TMP_DIR);
        for name in sorted_entries(&tmp)? {
            fs::remove_dir_all(tmp.join(name))?;
        }
    }
    Ok(collected)
}

fn sorted_entries(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    match fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(names),
        Err(e) => return Err(e),
        Ok(entries) => {
            for entry in entries {
                names.push(entry?.file_name().to_string_lossy().into_owned());
            }
        }
    }
    names.sort();
    Ok(names)
}

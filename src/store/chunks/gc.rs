//! Garbage collection: deleting the chunks no backup references. Every step is relative to an
//! open directory and follows no link (`at.rs`): a link planted as `chunks`, `tmp` or a fan-out
//! directory refuses the collection, and anything in the store wqm did not put there is
//! reported and left alone instead of stopping every later collection.

use std::collections::HashSet;
use std::io;

use serde::Serialize;

use super::{runs, ChunkId, ChunkStore, CHUNKS_DIR, TMP_DIR};
use crate::store::at;

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

/// Deletes every chunk not in `referenced`, and every run's temporary chunks. Only with the
/// store held exclusively: no create or reader is running, so nothing unreferenced now can
/// become referenced. A crash part-way leaves some unreferenced chunks, collected next time.
pub fn collect_garbage(
    store: &ChunkStore,
    referenced: &HashSet<ChunkId>,
    dry_run: bool,
) -> io::Result<Collected> {
    let mut collected = Collected::default();
    let root = at::Dir::open(&store.root)?;
    let chunks = root.open_dir(CHUNKS_DIR)?;
    for fan in chunks.entries()? {
        let is_fan = fan.name.len() == 2 && fan.name.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_fan || fan.kind != at::Kind::Dir {
            collected.strays.push(format!("{CHUNKS_DIR}/{}", fan.name));
            continue;
        }
        let fan_dir = chunks.open_dir(&fan.name)?;
        for chunk in fan_dir.entries()? {
            let id = ChunkId::parse(&chunk.name)
                .filter(|id| id.to_string().starts_with(&fan.name) && chunk.kind == at::Kind::File);
            let Some(id) = id else {
                collected
                    .strays
                    .push(format!("{CHUNKS_DIR}/{}/{}", fan.name, chunk.name));
                continue;
            };
            if referenced.contains(&id) {
                collected.chunks_kept += 1;
                collected.bytes_kept += chunk.len;
                continue;
            }
            if !dry_run {
                fan_dir.remove_file(&chunk.name)?;
                crate::failpoint::hit("prune:chunk-deleted")?;
            }
            collected.chunks_deleted += 1;
            collected.bytes_freed += chunk.len;
        }
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

//! Which chunks the backups of a directory use, and what a backup holds alone.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io;
use std::sync::Mutex;

use serde::Serialize;

use super::{ChunkId, IndexLine, IndexReader};
use crate::store::BackupDir;

/// Calls `visit` with every chunk line of every chunked file of `backup`, in order. An index
/// that cannot be read is an error: nobody can tell which chunks it needs.
pub fn visit_chunks(backup: &BackupDir, mut visit: impl FnMut(&IndexLine)) -> io::Result<()> {
    for entry in &backup.manifest.files {
        if entry.compression != crate::compress::Stored::Chunked {
            continue;
        }
        let file = backup.open_entry(entry)?;
        let mut index = IndexReader::new(io::BufReader::new(file))?;
        while let Some(line) = index.next_line()? {
            visit(&line);
        }
    }
    Ok(())
}

/// What an incremental backup occupies in the chunk store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Its chunked files' content, as a full backup would hold it uncompressed.
    pub logical_bytes: u64,
    /// Distinct chunks it references, and their stored (compressed) size.
    pub chunks: u64,
    pub referenced_bytes: u64,
    /// What only it references: what deleting it (and a garbage collection) would free.
    pub unique_bytes: u64,
}

/// What `backup` occupies in the chunk store beside it, shared or alone.
pub fn usage(backup: &BackupDir) -> io::Result<Usage> {
    let mut own: HashMap<ChunkId, u64> = HashMap::new();
    let mut usage = Usage::default();
    visit_chunks(backup, |line| {
        usage.logical_bytes += line.len as u64;
        own.insert(line.id, line.stored);
    })?;
    usage.chunks = own.len() as u64;
    usage.referenced_bytes = own.values().sum();
    let siblings = backup.siblings()?;
    let others: Vec<&BackupDir> = siblings
        .backups()
        .filter(|other| other.path != backup.path)
        .collect();
    let own = Mutex::new(own);
    let forget = |ids: &mut Vec<ChunkId>| {
        let mut own = own.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids.drain(..) {
            own.remove(&id);
        }
    };
    // The others' indexes read side by side (on S3 each is a round trip), what they name
    // taken out of `own` a batch at a time.
    crate::parallel::map_in_order(&others, READERS, |other| {
        let mut batch = Vec::with_capacity(BATCH);
        // An unreadable index shares nothing that can be counted.
        let _ = visit_chunks(other, |line| {
            batch.push(line.id);
            if batch.len() == BATCH {
                forget(&mut batch);
            }
        });
        forget(&mut batch);
    });
    usage.unique_bytes = own
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .sum();
    Ok(usage)
}

/// How many other backups' indexes `usage` reads at a time.
const READERS: usize = 8;
/// How many chunk names a reader of `usage` takes out of the backup's at once.
const BATCH: usize = 4096;

/// Which backups beside `backup` (itself included) need each of `ids`, by name.
pub fn backups_using(backup: &BackupDir, ids: &HashSet<ChunkId>) -> BTreeMap<ChunkId, Vec<String>> {
    let mut users: BTreeMap<ChunkId, Vec<String>> = BTreeMap::new();
    let Ok(scan) = backup.siblings() else {
        return users;
    };
    for backup in scan.backups() {
        let mut found = BTreeSet::new();
        // A backup whose index cannot be read is broken already, and says so when validated.
        let _ = visit_chunks(backup, |line| {
            if ids.contains(&line.id) {
                found.insert(line.id);
            }
        });
        for id in found {
            users.entry(id).or_default().push(backup.name());
        }
    }
    users
}

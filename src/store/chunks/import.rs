//! Chunks that arrive already stored (`wqm backup copy` from another repository): the store is
//! made with the source's parameters or checked compatible with them, what it holds is listed
//! once, and each chunk it lacks lands as a create's does — written whole in the run's
//! temporary directory, fsynced, renamed to its name, the fan-out directories fsynced before
//! a manifest may name it (`sync_landed`).

use std::collections::{BTreeSet, HashSet};
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::write::{fan_out_dir, sync_dirs};
use super::{runs, Access, ChunkError, ChunkId, ChunkStore, Params, RunTemp};
use super::{CHUNKS_DIR, LOCK_OBJECTS};
use crate::backend::{Backend, BackendError, Kind, Name};

impl Params {
    /// Whether chunks of a store with `other`'s parameters may go into this one: the same
    /// chunking (so later creates share them), names and storage. `Err` says what differs.
    pub fn compatible_with(&self, other: &Params) -> Result<(), String> {
        let cut = |p: &Params| {
            (
                p.chunker.clone(),
                p.min_size,
                p.avg_size,
                p.max_size,
                p.hash.clone(),
                p.compression.clone(),
            )
        };
        if cut(self) == cut(other) {
            return Ok(());
        }
        Err(format!(
            "its chunks are `{}` {}/{}/{} `{}`/`{}`, the source's `{}` {}/{}/{} `{}`/`{}`",
            self.chunker,
            self.min_size,
            self.avg_size,
            self.max_size,
            self.hash,
            self.compression,
            other.chunker,
            other.min_size,
            other.avg_size,
            other.max_size,
            other.hash,
            other.compression
        ))
    }

    /// A new store's parameters for chunks copied from a store with these: the same chunking,
    /// and lock objects and pack files required as in every store this wqm makes.
    pub fn for_new_store(&self) -> Params {
        let mut params = self.clone();
        if !params.required_features.iter().any(|f| f == LOCK_OBJECTS) {
            params.required_features.insert(0, LOCK_OBJECTS.to_string());
        }
        params.packed()
    }

    /// `store.json`'s text.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("parameters always serialize")
    }
}

impl ChunkStore {
    /// The store of `dir` to copy chunks into, made with `params` (`Params::for_new_store`)
    /// when there is none. Its parameters are the caller's to compare.
    pub fn open_for_import(dir: &Path, params: &Params) -> Result<Arc<Self>, ChunkError> {
        if Self::found_in(dir).is_none() {
            runs::make_store(dir, &params.for_new_store())?;
        }
        Self::open(dir, Access::Shared).map(Self::for_writing)
    }

    /// Every chunk the store holds under its name (one walk of `chunks/` through its backend,
    /// no link followed), and those its pack indexes name (a store synced down from S3).
    pub fn list_ids(&self) -> io::Result<HashSet<ChunkId>> {
        let mut ids: HashSet<ChunkId> = self
            .pack_index()
            .map(|index| index.chunk_ids().collect())
            .unwrap_or_default();
        let chunks = format!("{}/{CHUNKS_DIR}/", super::STORE_DIR);
        self.repository.visit(&chunks, |entry| {
            if entry.kind == Kind::File {
                ids.extend(id_of_object(&entry.name));
            }
            true
        })?;
        Ok(ids)
    }

    /// `stored` (a chunk's stored bytes, checked by the caller against `id`) as the chunk
    /// `id`: written in `temp`, fsynced, renamed into place. Returns its fan-out directory,
    /// which `sync_landed` makes durable before any manifest names the chunk.
    pub fn land(&self, temp: &RunTemp, id: &ChunkId, stored: &[u8]) -> io::Result<String> {
        let files = temp.files();
        let staged = temp.name_of(&format!("{id}-{}", crate::backend::random_id()))?;
        let mut file = files.create_new_blocking(&staged)?;
        file.write_all(stored)?;
        file.sync_all()?;
        files.rename_over_blocking(&staged, &Name::new(object_name(id))?)?;
        Ok(fan_out_dir(id))
    }

    /// Makes the names of landed chunks durable: each fan-out directory, then `chunks/`.
    pub fn sync_landed(&self, dirs: &Mutex<BTreeSet<String>>) -> io::Result<()> {
        let dirs = std::mem::take(&mut *dirs.lock().expect("landed lock"));
        sync_dirs(self.files()?, &dirs)
    }
}

/// The object name of chunk `id` in a repository (`.wqm-chunks/chunks/ab/<id>`).
pub fn object_name(id: &ChunkId) -> String {
    format!("{}/{}", super::STORE_DIR, id.rel())
}

/// Saves chunk `id`'s stored bytes as its object in the store of the repository on `backend`.
pub async fn save_chunk(
    backend: &dyn Backend,
    id: &ChunkId,
    stored: Bytes,
) -> Result<(), BackendError> {
    let name = Name::new(object_name(id))?;
    backend.save(&name, crate::backend::once(stored)).await?;
    Ok(())
}

/// The chunk an object name of a repository's store names (`object_name`'s inverse).
pub fn id_of_object(name: &str) -> Option<ChunkId> {
    let rest = name.strip_prefix(super::STORE_DIR)?.strip_prefix('/')?;
    let rest = rest.strip_prefix(CHUNKS_DIR)?.strip_prefix('/')?;
    let (fan, hex) = rest.split_once('/')?;
    let id = ChunkId::parse(hex)?;
    (fan == &hex[..2]).then_some(id)
}

/// Where `store.json` is in a repository.
pub fn params_object() -> String {
    format!("{}/{}", super::STORE_DIR, super::PARAMS_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compatible_params_are_the_same_chunking_and_a_new_store_needs_lock_objects() {
        let a = Params::with_average(64 * 1024);
        let mut old = a.clone();
        old.required_features.clear();
        old.format = 1;
        assert!(a.compatible_with(&old).is_ok(), "features do not matter");
        assert_eq!(old.for_new_store(), a);
        let b = Params::with_average(16 * 1024);
        let said = a.compatible_with(&b).unwrap_err();
        assert!(
            said.contains("16384/65536/262144") || said.contains("4096/16384/65536"),
            "{said}"
        );
    }

    #[test]
    fn object_names_go_both_ways() {
        let id = ChunkId::of(b"chunk");
        assert_eq!(id_of_object(&object_name(&id)), Some(id));
        let hex = id.to_string();
        for bad in [
            format!(".wqm-chunks/chunks/zz/{hex}"),
            format!(".wqm-chunks/quarantine/{hex}"),
            ".wqm-chunks/store.json".to_string(),
            format!("n1/chunks/{}/{hex}", &hex[..2]),
        ] {
            assert_eq!(id_of_object(&bad), None, "{bad}");
        }
    }

    #[test]
    fn a_landed_chunk_is_listed_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let params = Params::with_average(4096);
        let store = ChunkStore::open_for_import(dir.path(), &params).unwrap();
        assert!(store.list_ids().unwrap().is_empty());
        let content = vec![5u8; 3000];
        let id = ChunkId::of(&content);
        let stored = zstd::encode_all(&content[..], 3).unwrap();
        let temp = store.temp_dir().unwrap();
        let landed = Mutex::new(BTreeSet::new());
        let fan = store.land(&temp, &id, &stored).unwrap();
        landed.lock().unwrap().insert(fan);
        let _ = crate::fs::take_synced();
        store.sync_landed(&landed).unwrap();
        let root = dir.path().join(super::super::STORE_DIR);
        let fan_out = root.join(id.rel()).parent().unwrap().to_path_buf();
        assert_eq!(
            crate::fs::take_synced(),
            [fan_out, root.join(CHUNKS_DIR)],
            "fan-out and chunks/"
        );
        assert_eq!(store.list_ids().unwrap(), HashSet::from([id]));
        let mut buffer = super::super::ChunkBuffer::default();
        store.read_chunk(&id, 3000, true, &mut buffer).unwrap();
        assert_eq!(buffer.content, content);
        assert_eq!(buffer.stored(), &stored[..]);
        // Opened again with other parameters, the store keeps its own.
        let again = ChunkStore::open_for_import(dir.path(), &Params::with_average(8192)).unwrap();
        assert_eq!(again.params(), &params);
    }
}

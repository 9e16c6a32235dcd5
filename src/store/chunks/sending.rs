//! An incremental backup on its way to a repository on a backend (S3): made in a local staging
//! store that receives only the chunks the repository lacks. The repository's store is listed
//! once (`Listed`); a chunk it lists is reused as it is there (its stored size from the
//! listing) and never written locally; the run's share of them is read back from the
//! repository and compared with the data, as locally (`write.rs`). The new chunks are
//! sent as they land (`Courier`), the rest (`backup::remote::send_chunks`) before the backup's
//! indexes and manifest.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::courier::Courier;
use super::import::{id_of_object, params_object};
use super::pack::PackIndex;
use super::{io_error, runs, Access, ChunkError, ChunkId, ChunkStore, Params, STORE_DIR};
use crate::backend::{BackendError, Name};
use crate::store::Remote;

/// A repository's chunk store as listed once: the store itself (its parameters, and what
/// reads back the reused chunks a run compares), each chunk's stored size; and who sends the
/// chunks a staging store gets, as they land.
#[derive(Clone, Debug)]
pub struct Listed {
    held: Arc<Holdings>,
    store: Arc<ChunkStore>,
    courier: Option<Arc<Courier>>,
}

/// The chunks a store on a backend holds, as listed once: its loose chunks, and for a packed
/// store its pack indexes as its readers loaded them (looked up there, not copied: at a
/// million chunks the copy this replaced took ~90 MB, docs/performance.md).
#[derive(Debug, Default)]
pub struct Holdings {
    loose: HashMap<ChunkId, u64>,
    packed: Option<Arc<PackIndex>>,
}

impl Holdings {
    /// The stored size of chunk `id` when the store holds it.
    pub fn stored_size(&self, id: &ChunkId) -> Option<u64> {
        self.loose.get(id).copied().or_else(|| {
            let packed = self.packed.as_ref()?;
            packed.locate(id).map(|at| u64::from(at.entry.stored))
        })
    }

    pub fn contains(&self, id: &ChunkId) -> bool {
        self.stored_size(id).is_some()
    }
}

impl Listed {
    /// The chunk store of `remote`, made when it has none (`store.json` with a new local
    /// store's parameters, keyed when the repository is encrypted; of two racing runs one
    /// writes it, the other reads it), then listed once.
    pub fn of(remote: &Remote, avg_size: usize) -> Result<Self, ChunkError> {
        let made = Params::with_average(avg_size).keyed_as(remote.seal().is_some());
        let store = remote_store(remote, &made)?;
        let held = remote_chunks(&store)?;
        Ok(Listed {
            held: Arc::new(held),
            store,
            courier: None,
        })
    }

    /// Whether the repository's store keeps its chunks in pack files.
    pub fn is_packed(&self) -> bool {
        self.store.is_packed()
    }

    /// This listing, with `courier` sending the chunks its staging store gets as they land.
    pub fn sent_by(self, courier: Arc<Courier>) -> Self {
        Listed {
            courier: Some(courier),
            ..self
        }
    }
}

/// Every chunk `store` (of a repository on a backend) holds: the loose ones listed, and for a
/// packed store those the pack indexes it opened with name.
pub fn remote_chunks(store: &ChunkStore) -> Result<Holdings, ChunkError> {
    let loose = store
        .repository
        .list(&format!("{STORE_DIR}/{}/", super::CHUNKS_DIR))
        .map_err(io_error(&store.root))?
        .iter()
        .filter_map(|o| id_of_object(&o.name).map(|id| (id, o.size)))
        .collect();
    Ok(Holdings {
        loose,
        packed: store.pack_index(),
    })
}

/// The store of the repository on a backend `remote`, opened (`ChunkStore::open_remote`:
/// `store.json` read and checked, the pack indexes loaded), its `store.json` written as `made`
/// first when there is none (of two racing runs one writes it, the other reads it). For a
/// create to S3 and for `copy` into S3.
pub fn remote_store(remote: &Remote, made: &Params) -> Result<Arc<ChunkStore>, ChunkError> {
    let rel = params_object();
    let root = remote.shown(STORE_DIR);
    for _ in 0..3 {
        match ChunkStore::open_remote(remote) {
            Ok(store) => return Ok(store),
            Err(ChunkError::NoStore { .. }) => {}
            Err(e) => return Err(e),
        }
        let name = Name::new(rel.clone()).map_err(|e| io_error(&root)(io::Error::other(e)))?;
        let text = Bytes::from(made.to_json());
        match remote.wait(remote.backend().save_new(&name, text)) {
            // Opened next time round.
            Ok(()) | Err(BackendError::AlreadyExists { .. }) => continue,
            Err(e) => return Err(io_error(&root)(io::Error::other(e))),
        }
    }
    Err(io_error(&root)(io::Error::other(
        "`store.json` keeps changing",
    )))
}

/// The listings of the repositories this run stages backups for, by staging directory.
static SHARED: Mutex<BTreeMap<PathBuf, Listed>> = Mutex::new(BTreeMap::new());

fn identify(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// The listing registered for the staging directory `dir` (`open_for_sending`), if any.
pub(super) fn shared(dir: &Path) -> Option<Listed> {
    let shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if shared.is_empty() {
        return None;
    }
    shared.get(&identify(dir)).cloned()
}

impl ChunkStore {
    /// The staging store in `dir` of a backup sent to the repository `listed` lists: made with
    /// the repository's parameters, and holding (as far as a create is concerned) every chunk
    /// the repository lists. The listing is registered for `dir` (`shared`): whatever opens the
    /// store there in this run (the create's verification) sees those chunks too.
    pub fn open_for_sending(dir: &Path, listed: &Listed) -> Result<Arc<Self>, ChunkError> {
        SHARED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(identify(dir), listed.clone());
        if Self::found_in(dir).is_none() {
            runs::make_store(dir, &listed.store.params().clone().loose())?;
        }
        Self::open(dir, Access::Shared).map(Arc::new)
    }

    /// Chunk `id` (`len` bytes of content) is complete under its name here: a staging
    /// store's courier checks and sends it.
    pub(super) fn landed(self: &Arc<Self>, id: &ChunkId, len: usize) -> io::Result<()> {
        match self.listed.as_ref().and_then(|l| l.courier.as_ref()) {
            Some(courier) => courier.landed(self.clone(), id, len),
            None => Ok(()),
        }
    }

    /// Checks the stored bytes `stored` of chunk `id` (`len` bytes of content) as a reader
    /// would: decrypted, decompressed, their length and content against the name.
    pub(super) fn check_stored(&self, id: &ChunkId, len: usize, stored: &[u8]) -> io::Result<()> {
        self.check_len(len)
            .and_then(|()| self.decoded(id, Some(len), stored))
            .map(drop)
            .map_err(|problem| super::chunk_error(id, &problem))
    }

    /// The length of chunk `id`'s content from its stored bytes `stored`, checked as a reader
    /// checks them (decrypted, decompressed, content against name).
    pub fn content_len(&self, id: &ChunkId, stored: &[u8]) -> io::Result<usize> {
        self.decoded(id, None, stored)
            .map(|buffer| buffer.content.len())
            .map_err(|problem| super::chunk_error(id, &problem))
    }

    /// The stored bytes `stored` of chunk `id`, decoded and checked against its name.
    fn decoded(
        &self,
        id: &ChunkId,
        len: Option<usize>,
        stored: &[u8],
    ) -> Result<super::ChunkBuffer, super::ChunkProblem> {
        let mut buffer = super::ChunkBuffer {
            compressed: stored.to_vec(),
            ..Default::default()
        };
        self.decode(id, len, true, &mut buffer)?;
        Ok(buffer)
    }

    /// Whether every chunk this store gets is read back and checked as it lands: a staging
    /// store whose courier checks each before it sends it.
    pub fn checks_as_it_lands(&self) -> bool {
        self.listed.as_ref().is_some_and(|l| l.courier.is_some())
    }

    /// Whether this is the staging store of a backup sent to a repository on a backend: its
    /// chunks need not be durable here (the repository is what keeps them).
    pub fn is_staging(&self) -> bool {
        self.listed.is_some()
    }

    /// The stored size of `id` when the repository this store stages for lists it.
    pub fn listed_size(&self, id: &ChunkId) -> Option<u64> {
        self.listed.as_ref()?.held.stored_size(id)
    }

    /// The store of the repository this store stages for.
    pub(super) fn repository(&self) -> Option<&Arc<ChunkStore>> {
        self.listed.as_ref().map(|listed| &listed.store)
    }

    /// The stored bytes of chunk `id` of this (local) store, as they are sent.
    pub fn stored_bytes(&self, id: &ChunkId) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.repository
            .open(&super::object_name(id))?
            .read_to_end(&mut bytes)?;
        Ok(bytes)
    }
}

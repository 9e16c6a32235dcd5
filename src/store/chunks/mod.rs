//! The chunk store of incremental backups: `.wqm-chunks` in a backups directory, shared by every
//! incremental backup there. A stored file is cut into content-defined chunks (FastCDC 2020),
//! each named by the sha256 of its content and kept zstd-compressed as one immutable file,
//! `chunks/<first two hex digits>/<sha256>`; the backup keeps the file's index (which chunks, in
//! order) where the file itself would be. Why this is safe (see docs/architecture.md):
//!
//! - A chunk file is complete before it has its name: written in `tmp/`, fsynced, renamed. A name
//!   in `chunks/` therefore always holds its whole content. A chunk already there is not
//!   compressed or written again, but read once per run and compared with the new data: a
//!   damaged one is moved to `quarantine/` and stored again (`write.rs`).
//! - Chunks are only deleted by garbage collection (`collect_garbage`), which runs in `prune`
//!   with the backups directory locked exclusively (`store::lock`); every create and reader
//!   holds that lock shared for its whole run, so no chunk a run relies on can go while it
//!   runs. Nothing in the store is reached through a link (`LocalBackend`).
//! - Every chunk read is checked against its name, and a file's content against the manifest's
//!   sha256, so damage anywhere is found, never restored.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::local::LocalBackend;
use crate::backend::{BackendError, Kind, Name};
use crate::exit::{Classify, ExitCode};
use crate::store::seal::{self, Seal};
use crate::store::{Remote, Repository};
use by_repository::ByRepository;

/// The chunk store's directory in a backups directory.
pub const STORE_DIR: &str = ".wqm-chunks";
const PARAMS_FILE: &str = "store.json";
/// The `flock` file of stores made before lock objects (`legacy_lock`), and of each run's
/// temporary directory (`runs.rs`).
const LOCK_FILE: &str = "lock";
const CHUNKS_DIR: &str = "chunks";
const TMP_DIR: &str = "tmp";
/// Damaged chunks moved aside when a run stored them again (`write.rs`).
const QUARANTINE_DIR: &str = "quarantine";
/// The average chunk size (min = avg/4, max = avg×4), chosen by measurement on real Qdrant
/// snapshots (docs/performance.md): smaller chunks share more between nights, larger ones cost
/// fewer files.
pub const DEFAULT_AVERAGE: usize = 64 * 1024;
/// The largest chunk a store may cut and an index may name: the default store's maximum.
pub const LARGEST_CHUNK: usize = DEFAULT_AVERAGE * 4;
use crate::store::lock::LOCK_WAIT;

#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("no chunk store at `{}`: incremental backups read their data from the `{STORE_DIR}` directory beside them", path.display())]
    NoStore { path: PathBuf },
    #[error("`{}` is not a wqm chunk store: {reason}", path.display())]
    NotAStore { path: PathBuf, reason: String },
    #[error("`{}` is a symbolic link: wqm never follows links in the chunk store", path.display())]
    Link { path: PathBuf },
    #[error("the chunk store `{}` needs features this wqm does not know: `{}`", path.display(), features.join("`, `"))]
    NewerStore {
        path: PathBuf,
        features: Vec<String>,
    },
    #[error("the chunk store `{}` stayed locked by a garbage collection of an older wqm for {} s", path.display(), LOCK_WAIT.as_secs())]
    Locked { path: PathBuf },
    #[error("interrupted while waiting for the chunk store `{}`", path.display())]
    Interrupted { path: PathBuf },
    #[error("cannot use the chunk store `{}`: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

impl ChunkError {
    /// The store could not be held (an older wqm collects garbage in it, or the wait was
    /// interrupted): nothing is known about the backups in it.
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            ChunkError::Locked { .. } | ChunkError::Interrupted { .. }
        )
    }
}

impl Classify for ChunkError {
    fn exit_code(&self) -> ExitCode {
        match self {
            ChunkError::NoStore { .. }
            | ChunkError::NotAStore { .. }
            | ChunkError::Link { .. }
            | ChunkError::NewerStore { .. } => ExitCode::InvalidBackup,
            ChunkError::Locked { .. } | ChunkError::Io { .. } => ExitCode::Failure,
            ChunkError::Interrupted { .. } => crate::exit::signal_exit_code(),
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            ChunkError::NoStore { .. } => "an incremental backup moves with its chunks: `wqm backup copy DIR DEST NAME` brings them; to move one backup alone, `wqm backup export BACKUP DEST` first".to_string(),
            ChunkError::NotAStore { .. } => "move that directory away; the next incremental backup makes a new store".to_string(),
            ChunkError::Link { .. } => "put the directory the link points to in its place (`mv`), or remove the link; wqm reads and deletes nothing through it".to_string(),
            ChunkError::NewerStore { .. } => "the store was written by a newer wqm; upgrade wqm to use it".to_string(),
            ChunkError::Locked { .. } => "a `wqm backup prune` of a wqm older than lock objects is collecting chunks there; run again when it is done".to_string(),
            ChunkError::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull => crate::exit::DISK_FULL_HINT.to_string(),
            ChunkError::Io { .. } | ChunkError::Interrupted { .. } => return None,
        })
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ChunkError + '_ {
    move |source| ChunkError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An open chunk store. Whoever opens one holds its backups directory's lock (`store::lock`):
/// shared to write or read chunks, exclusive to collect garbage.
#[derive(Debug)]
pub struct ChunkStore {
    root: PathBuf,
    params: Params,
    /// The `flock` of a store made before lock objects, held while the store is open
    /// (`legacy_lock`).
    _legacy_lock: Option<File>,
    /// The repository the store is in, which every chunk is read through: a local directory
    /// (then `root` is the store's directory, which runs write chunks into) or a backend (S3:
    /// `root` only names it).
    repository: Remote,
    /// The key of the encrypted repository the store is in: chunks are named by a keyed hash
    /// and stored encrypted, each bound to its name.
    seal: Option<Seal>,
    /// A staging store's repository on a backend, as listed: its chunks count as stored.
    listed: Option<Listed>,
    /// A store on a backend whose chunks are in pack files: their indexes.
    packs: Option<pack::Packs>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    Shared,
    Exclusive,
}

impl ChunkStore {
    /// The store of the backups in `dir`.
    pub fn path_in(dir: &Path) -> PathBuf {
        dir.join(STORE_DIR)
    }

    /// Whether `dir` has a chunk store (a real directory, not a link).
    pub fn exists_in(dir: &Path) -> bool {
        Self::found_in(dir) == Some(Kind::Dir)
    }

    /// What is at the store's name in `dir`, if anything (a link as itself): only where
    /// nothing is may a store be made, so a link or a file there is refused by `open`.
    fn found_in(dir: &Path) -> Option<Kind> {
        let files = LocalBackend::existing(dir).ok()?;
        let name = Name::new(STORE_DIR).expect("the store's name");
        files.entry_blocking(&name).ok().map(|entry| entry.kind)
    }

    /// Whether the repository has a chunk store; remotely, whether any object is under
    /// `.wqm-chunks/` (a listing that fails says yes: opening the store then says why).
    pub fn exists_at(repository: &Repository) -> bool {
        match repository {
            Repository::Local(dir) => Self::exists_in(dir),
            Repository::Remote(remote) => remote
                .list(&format!("{STORE_DIR}/"))
                .map_or(true, |objects| !objects.is_empty()),
        }
    }

    /// `try_exclusive` of a local directory; a repository on a backend has no older wqm's
    /// `flock`: its lock objects, held exclusively by the caller, are the store's only lock.
    pub fn try_exclusive_at(repository: &Repository) -> Result<Option<Arc<Self>>, ChunkError> {
        match repository {
            Repository::Local(dir) => Ok(Self::try_exclusive(dir)?.map(Arc::new)),
            Repository::Remote(remote) => Self::open_remote(remote).map(Some),
        }
    }

    /// Opens the store of `dir` for a create, making it (with `avg_size` chunks) when there is
    /// none. Waits while an older wqm collects garbage in a store made before lock objects.
    pub fn open_for_writing(dir: &Path, avg_size: usize) -> Result<Arc<Self>, ChunkError> {
        if Self::found_in(dir).is_none() {
            let params = Params::with_average(avg_size);
            let params = match seal::of_local(dir) {
                Some(_) => params.keyed(),
                None => params,
            };
            runs::make_store(dir, &params)?;
        }
        Self::open(dir, Access::Shared).map(Self::for_writing)
    }

    /// An opened store as a run that writes chunks into it uses it: a chunk its pack indexes
    /// lack is new, not a reason to read them all again.
    fn for_writing(mut self) -> Arc<Self> {
        self.packs = self.packs.take().map(pack::Packs::for_writing);
        Arc::new(self)
    }

    /// Packs for the new chunks of a local store of pack files (`None`: loose chunks), written
    /// into its directory, their indexes sealed as its chunks are.
    pub fn packer(&self) -> Option<LocalPacker> {
        let files = self.repository.local_backend()?;
        let packed = self.packs.is_some();
        packed.then(|| LocalPacker::new(files.clone(), self.seal.clone()))
    }

    /// Opens the store of `dir` to read chunks. Waits while an older wqm collects garbage in a
    /// store made before lock objects.
    pub fn open_for_reading(dir: &Path) -> Result<Arc<Self>, ChunkError> {
        Self::open(dir, Access::Shared).map(Arc::new)
    }

    /// The store of `dir` for garbage collection (its directory locked exclusively); `None`
    /// when an older wqm is using a store made before lock objects.
    pub fn try_exclusive(dir: &Path) -> Result<Option<Self>, ChunkError> {
        match Self::open(dir, Access::Exclusive) {
            Ok(store) => Ok(Some(store)),
            Err(ChunkError::Locked { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Checks the store of `dir` as opening it would, without taking any lock: it is there, no
    /// part of it is a link, and this wqm can read it.
    pub fn check_in(dir: &Path) -> Result<Params, ChunkError> {
        Ok(Self::inspect(dir)?.1)
    }

    /// The directory `dir` as a backend and the store's parameters: the store and every part
    /// of it a real directory or file (`dir` itself may be reached through a link the user
    /// named; nothing below it is).
    fn inspect(dir: &Path) -> Result<(LocalBackend, Params), ChunkError> {
        let root = Self::path_in(dir);
        let not_a_store = |reason: String| ChunkError::NotAStore {
            path: root.clone(),
            reason,
        };
        let backend_error = |path: &Path, e: BackendError| io_error(path)(io::Error::other(e));
        let files = match LocalBackend::existing(dir) {
            Err(e) if e.is_not_found() => return Err(ChunkError::NoStore { path: root }),
            Err(e) => return Err(backend_error(&root, e)),
            Ok(files) => files,
        };
        let part = |part: &str| {
            let name = match part {
                "" => STORE_DIR.to_string(),
                part => format!("{STORE_DIR}/{part}"),
            };
            files.entry_blocking(&Name::new(name).expect("a name of the store's"))
        };
        match part("") {
            Err(e) if e.is_not_found() => return Err(ChunkError::NoStore { path: root }),
            Err(e) => return Err(backend_error(&root, e)),
            Ok(found) if found.kind == Kind::Symlink => {
                return Err(ChunkError::Link { path: root })
            }
            Ok(found) if found.kind != Kind::Dir => {
                return Err(not_a_store("not a directory".into()))
            }
            Ok(_) => {}
        }
        // Every part is what it should be (or absent: `tmp` and `quarantine` come when needed).
        for (name, kind) in [
            (PARAMS_FILE, Kind::File),
            (LOCK_FILE, Kind::File),
            (CHUNKS_DIR, Kind::Dir),
            (TMP_DIR, Kind::Dir),
            (QUARANTINE_DIR, Kind::Dir),
        ] {
            match part(name) {
                Ok(found) if found.kind == Kind::Symlink => {
                    return Err(ChunkError::Link {
                        path: root.join(name),
                    })
                }
                Ok(found) if found.kind != kind => {
                    return Err(not_a_store(format!("`{name}` is not a {kind:?}")))
                }
                Err(e) if !e.is_not_found() => return Err(backend_error(&root.join(name), e)),
                _ => {}
            }
        }
        let mut text = String::new();
        let params = Name::new(params_object()).expect("a name of the store's");
        files
            .open_blocking(&params)
            .map_err(io::Error::other)
            .and_then(|(f, _)| f.take(64 * 1024).read_to_string(&mut text))
            .map_err(|e| not_a_store(format!("cannot read `{PARAMS_FILE}`: {e}")))?;
        let params = Self::parse_params(&root, &text)?;
        Ok((files, params))
    }

    fn open(dir: &Path, access: Access) -> Result<Self, ChunkError> {
        let (store, mut params) = Self::inspect(dir)?;
        let root = Self::path_in(dir);
        let legacy_lock = match params.required_features.iter().any(|f| f == LOCK_OBJECTS) {
            true => None,
            false => legacy_lock(&store, &root, &mut params, access)?,
        };
        let seal = Self::sealed(&root, &params, seal::of_local(dir))?;
        // Read through the backend `inspect` opened (the directory as the user named it).
        let repository = Remote::of_local(store);
        // A store of pack files (every store made since them, and one synced down from S3 by
        // `aws s3 sync`): read, written and collected as on S3; an older store's chunks loose.
        let packs = Self::packs_of(&repository, &root, &params)?;
        Ok(ChunkStore {
            root,
            params,
            _legacy_lock: legacy_lock,
            repository,
            seal,
            listed: sending::shared(dir),
            packs,
        })
    }

    /// The seal a store of `params` is read and written with: an encrypted repository's store
    /// names its chunks by a keyed hash, and only such a store is used there.
    fn sealed(
        root: &Path,
        params: &Params,
        seal: Option<Seal>,
    ) -> Result<Option<Seal>, ChunkError> {
        let reason = match (params.is_keyed(), &seal) {
            (true, Some(_)) | (false, None) => return Ok(seal),
            (true, None) => "its chunks are encrypted, and this run has not opened its repository with a password",
            (false, Some(_)) => "its chunks are not encrypted, but its repository is",
        };
        Err(ChunkError::NotAStore {
            path: root.to_path_buf(),
            reason: reason.to_string(),
        })
    }

    /// The store of a repository on a backend, to read chunks: `.wqm-chunks/store.json` read
    /// (once a run: `REMOTE_PARAMS`) and checked as locally.
    pub fn open_remote(repository: &Remote) -> Result<Arc<Self>, ChunkError> {
        let root = repository.shown(STORE_DIR);
        let key = repository.backend().describe();
        let params = match REMOTE_PARAMS.get(&key) {
            Some(params) => params,
            None => {
                let params = Self::read_remote_params(repository, &root)?;
                REMOTE_PARAMS.insert(key, params.clone());
                params
            }
        };
        let seal = Self::sealed(&root, &params, repository.seal())?;
        let packs = Self::packs_of(repository, &root, &params)?;
        Ok(Arc::new(ChunkStore {
            root,
            params,
            _legacy_lock: None,
            repository: repository.clone(),
            seal,
            listed: None,
            packs,
        }))
    }

    /// The parameters in the `store.json` of a store on a backend.
    fn read_remote_params(repository: &Remote, root: &Path) -> Result<Params, ChunkError> {
        let mut text = String::new();
        let read = repository
            .open(&params_object())
            .and_then(|f| f.take(64 * 1024).read_to_string(&mut text));
        match read {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ChunkError::NoStore {
                path: root.to_path_buf(),
            }),
            Err(e) => Err(io_error(root)(e)),
            Ok(_) => Self::parse_params(root, &text),
        }
    }

    /// The local directory the store is in, which a run writes its chunks into; a store on a
    /// backend is written through its packs (`Packer`).
    pub(super) fn files(&self) -> io::Result<&LocalBackend> {
        self.repository.local_backend().ok_or_else(|| {
            io::Error::other("a store on a backend is written through its packs, not as files")
        })
    }

    /// The pack indexes of a store of pack files in `repository`, read.
    fn packs_of(
        repository: &Remote,
        root: &Path,
        params: &Params,
    ) -> Result<Option<pack::Packs>, ChunkError> {
        if !params.is_packed() {
            return Ok(None);
        }
        let packs = pack::Packs::open(repository, params.max_size).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => ChunkError::NotAStore {
                path: root.to_path_buf(),
                reason: e.to_string(),
            },
            _ => io_error(root)(e),
        })?;
        Ok(Some(packs))
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The pack indexes of a store of pack files, as this run read them.
    pub(super) fn pack_index(&self) -> Option<Arc<pack::PackIndex>> {
        self.packs.as_ref().map(pack::Packs::index)
    }

    /// How many of its pack files have no index object (as last loaded): a run killed between
    /// the two, or an index lost, which a garbage collection writes again from the pack's copy.
    pub fn packs_without_index(&self) -> usize {
        self.pack_index().map_or(0, |index| index.unindexed.len())
    }

    /// Whether the store keeps its chunks in pack files.
    pub fn is_packed(&self) -> bool {
        self.packs.is_some()
    }

    /// Whether the store is in a repository on a backend (S3): each chunk read is a request.
    pub fn is_remote(&self) -> bool {
        !self.repository.is_local()
    }

    /// The name of a chunk of `content` in this store: its sha256, or in an encrypted
    /// repository its HMAC-SHA256 under the repository's key.
    pub fn id_of(&self, content: &[u8]) -> ChunkId {
        ChunkId::named_by(self.seal.as_ref(), content)
    }

    /// A new chunk's stored bytes (`compressed`, its content compressed): encrypted in an
    /// encrypted repository, else as they are.
    pub(super) fn to_store<'a>(
        &self,
        id: &ChunkId,
        compressed: &'a [u8],
    ) -> io::Result<std::borrow::Cow<'a, [u8]>> {
        match &self.seal {
            None => Ok(std::borrow::Cow::Borrowed(compressed)),
            Some(seal) => Ok(std::borrow::Cow::Owned(
                seal.seal(&id.identity(), compressed)?,
            )),
        }
    }

    /// The most bytes a chunk of `len` bytes of content may be stored in.
    fn stored_bound(&self, len: usize) -> u64 {
        let compressed = zstd::zstd_safe::compress_bound(len) as u64;
        match &self.seal {
            None => compressed,
            Some(_) => seal::sealed_len(compressed),
        }
    }

    /// The stored (compressed) size of a chunk, when it is there.
    pub fn stored_size(&self, id: &ChunkId) -> Option<u64> {
        if let Some(found) = self.locate(id) {
            return Some(u64::from(found.entry.stored));
        }
        if let Some(size) = self.listed_size(id) {
            return Some(size);
        }
        self.repository.size(&object_name(id)).ok()
    }

    /// Reads chunk `id` of `len` bytes into `buffer.content` and checks its size and (with
    /// `check_name`) its content against its name. Never reads more than `len` bytes of content
    /// (nor a stored file larger than `len` can compress to). Returns the stored size.
    pub fn read_chunk(
        &self,
        id: &ChunkId,
        len: usize,
        check_name: bool,
        buffer: &mut ChunkBuffer,
    ) -> Result<u64, ChunkProblem> {
        let damaged = |what: &str, e: io::Error| ChunkProblem::Damaged(format!("{what}: {e}"));
        self.check_len(len)?;
        if let Some(found) = self.locate(id) {
            buffer.compressed = read_packed(&self.repository, &found).map_err(unreadable)?;
            return self.decode(id, Some(len), check_name, buffer);
        }
        let file = self.repository.open(&object_name(id)).map_err(unreadable)?;
        read_stored(file, self.stored_bound(len), &mut buffer.compressed)
            .map_err(|e| damaged("cannot read", e))?;
        self.decode(id, Some(len), check_name, buffer)
    }

    /// Starts fetching the stored bytes of chunk `id` (`len` bytes of content) from the
    /// repository on a backend, on its runtime, for `decode_stored`; `None` for a local store,
    /// read as it comes. Lets a reader keep several round trips in flight.
    pub fn fetch(&self, id: &ChunkId, len: usize) -> Option<Fetch> {
        let remote = self.network()?;
        if let Some(found) = self.locate(id) {
            let reading = remote.clone();
            return Some(Fetch {
                task: remote
                    .handle()
                    .spawn_blocking(move || read_packed(&reading, &found)),
                handle: remote.handle().clone(),
            });
        }
        let (reading, rel) = (remote.clone(), object_name(id));
        // As `read_chunk` reads it: never more than `len` bytes can be stored in, and one.
        let bound = self.stored_bound(len);
        let task = remote.handle().spawn_blocking(move || {
            let mut stored = Vec::new();
            read_stored(reading.open(&rel)?, bound, &mut stored)?;
            Ok(stored)
        });
        Some(Fetch {
            task,
            handle: remote.handle().clone(),
        })
    }

    /// The repository on a backend the store is in (`None`: a local directory, read as it
    /// comes).
    pub(super) fn network(&self) -> Option<&Remote> {
        Some(&self.repository).filter(|r| !r.is_local())
    }

    /// Where chunk `id` is in a packed store's packs (`None`: loose, or missing).
    pub(super) fn locate(&self, id: &ChunkId) -> Option<pack::Location> {
        self.packs.as_ref()?.locate(id)
    }

    /// Starts fetching `range` of pack `pack` (chunks near each other, `prefetch.rs`) into
    /// `into`.
    pub(super) fn fetch_range(
        &self,
        pack: &str,
        range: std::ops::Range<u64>,
        into: Vec<u8>,
    ) -> Option<Fetch> {
        let remote = self.network()?.clone();
        let handle = remote.handle().clone();
        let rel = pack::pack_object(pack);
        // A task, not a blocking thread: a window has up to 32 requests in flight, and a thread
        // each cost switches and, with glibc, an allocator arena each holding freed buffers.
        let task = handle.spawn(async move { remote.read_range_async(&rel, range, into).await });
        Some(Fetch { task, handle })
    }

    /// `read_chunk` of a chunk whose stored bytes are `stored`.
    pub fn decode_stored(
        &self,
        id: &ChunkId,
        len: usize,
        stored: &[u8],
        check_name: bool,
        buffer: &mut ChunkBuffer,
    ) -> Result<u64, ChunkProblem> {
        self.check_len(len)?;
        buffer.compressed.clear();
        buffer.compressed.extend_from_slice(stored);
        self.decode(id, Some(len), check_name, buffer)
    }

    fn check_len(&self, len: usize) -> Result<(), ChunkProblem> {
        if len > self.params.max_size {
            return Err(ChunkProblem::Damaged(format!(
                "its index says {len} bytes, more than the store's chunks may have ({})",
                self.params.max_size
            )));
        }
        Ok(())
    }

    /// The content of the stored bytes in `buffer.compressed`, checked: into `buffer.content`.
    /// Its length is `len` when the caller knows it (an index says it), else at most the
    /// store's largest chunk.
    pub(super) fn decode(
        &self,
        id: &ChunkId,
        len: Option<usize>,
        check_name: bool,
        buffer: &mut ChunkBuffer,
    ) -> Result<u64, ChunkProblem> {
        let damaged = |what: &str, e: io::Error| ChunkProblem::Damaged(format!("{what}: {e}"));
        let most = len.unwrap_or(self.params.max_size);
        if buffer.compressed.len() as u64 > self.stored_bound(most) {
            return Err(ChunkProblem::Damaged(format!(
                "its stored file is larger than {most} bytes can compress to"
            )));
        }
        if let Some(seal) = &self.seal {
            buffer.compressed = seal
                .open(&id.identity(), &buffer.compressed)
                .map_err(|e| ChunkProblem::Damaged(e.to_string()))?;
        }
        buffer.content.clear();
        buffer.content.reserve(most);
        let decompressor = match &mut buffer.decompressor {
            Some(d) => d,
            empty => empty.insert(
                zstd::bulk::Decompressor::new().map_err(|e| damaged("cannot decompress", e))?,
            ),
        };
        decompressor
            .decompress_to_buffer(&buffer.compressed, &mut buffer.content)
            .map_err(|e| damaged("cannot decompress", e))?;
        if let Some(len) = len.filter(|len| *len != buffer.content.len()) {
            return Err(ChunkProblem::Damaged(format!(
                "holds {} bytes, its index says {len}",
                buffer.content.len()
            )));
        }
        if check_name && self.id_of(&buffer.content) != *id {
            return Err(ChunkProblem::Damaged(
                "its content does not match its name (sha256)".to_string(),
            ));
        }
        Ok(buffer.compressed.len() as u64)
    }
}

/// A chunk that could not be read: missing, or damaged.
fn unreadable(e: io::Error) -> ChunkProblem {
    match e.kind() {
        io::ErrorKind::NotFound => ChunkProblem::Missing,
        _ => ChunkProblem::Damaged(format!("cannot read: {e}")),
    }
}

/// Reads a chunk's stored bytes from `file` into `into`: no more than `bound` bytes (what its
/// length can be stored in), and one byte more (which `decode` refuses).
fn read_stored(file: impl Read, bound: u64, into: &mut Vec<u8>) -> io::Result<()> {
    into.clear();
    file.take(bound + 1).read_to_end(into)?;
    Ok(())
}

/// The stored bytes of the chunk `found` in its pack: one ranged request, all of them there.
fn read_packed(remote: &Remote, found: &pack::Location) -> io::Result<Vec<u8>> {
    let rel = pack::pack_object(&found.pack);
    let bytes = remote.read_range(&rel, found.entry.range())?;
    if bytes.len() != found.entry.stored as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the pack `{rel}` ends before it"),
        ));
    }
    Ok(bytes)
}

/// The parameters of the stores on a backend this run opened, by repository: `store.json` is
/// written once there (`save_new`, never replaced), and every backup's files open the store.
static REMOTE_PARAMS: ByRepository<Params> = ByRepository::new();

/// A chunk's stored bytes on their way (`ChunkStore::fetch`), or a run of chunks' (`fetch_range`).
pub struct Fetch {
    task: tokio::task::JoinHandle<io::Result<Vec<u8>>>,
    handle: tokio::runtime::Handle,
}

impl Fetch {
    /// The bytes fetched.
    pub fn wait(self) -> Result<Vec<u8>, ChunkProblem> {
        self.bytes().map_err(unreadable)
    }

    /// The bytes fetched, or the error reading them.
    pub(super) fn bytes(mut self) -> io::Result<Vec<u8>> {
        let Fetch { task, handle } = &mut self;
        tokio::task::block_in_place(|| handle.block_on(task)).map_err(io::Error::other)?
    }
}

impl Drop for Fetch {
    fn drop(&mut self) {
        // A reader that stops early starts no more of its reads.
        self.task.abort();
    }
}

/// What reading chunks reuses from one to the next: the content read, the stored bytes, and the
/// decompression context.
#[derive(Default)]
pub struct ChunkBuffer {
    pub content: Vec<u8>,
    compressed: Vec<u8>,
    decompressor: Option<zstd::bulk::Decompressor<'static>>,
}

impl ChunkBuffer {
    /// The stored (compressed) bytes of the chunk last read.
    pub fn stored(&self) -> &[u8] {
        &self.compressed
    }
}

/// Why a chunk could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkProblem {
    Missing,
    Damaged(String),
}

impl fmt::Display for ChunkProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkProblem::Missing => f.write_str("is missing from the chunk store"),
            ChunkProblem::Damaged(reason) => write!(f, "is damaged: {reason}"),
        }
    }
}

mod aside;
mod by_repository;
mod compare;
mod courier;
mod cut;
mod gc;
mod id;
mod import;
mod index;
mod legacy;
mod local_pack;
mod pack;
mod params;
mod prefetch;
mod read;
mod refs;
mod runs;
mod sending;
mod subset;
mod tasks;
mod usage;
mod write;

pub use courier::Courier;
pub use cut::Chunker;
pub use gc::{collect_garbage, find_unreferenced, find_unreferenced_at, Collected, Unreferenced};
pub use id::ChunkId;
pub use import::{id_of_object, object_name, params_object, save_chunk};
pub use index::{index_text, IndexLine, IndexReader};
use legacy::legacy_lock;
pub use local_pack::LocalPacker;
pub use pack::{parse_index as parse_pack_index, PackIndex, Packer};
pub use params::Params;
use params::LOCK_OBJECTS;
pub use prefetch::SharedReader;
pub use read::{chunk_error, ChunkReader};
pub use refs::{backup_refs, encode_refs, read_refs, refs_from_indexes, refs_of, Refs, REFS_PATH};
pub use runs::{remove_dead, Removed, RunTemp};
pub use sending::{remote_chunks, remote_store, Holdings, Listed};
pub use subset::{Selection, Subset};
pub use usage::{backups_using, usage, visit_chunks, Usage};
pub use write::{Added, ChunkWriter, Run};

#[cfg(test)]
mod tests;

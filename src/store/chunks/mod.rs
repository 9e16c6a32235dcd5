//! The chunk store of incremental backups: `.wqm-chunks` in a backups directory, shared by every
//! incremental backup there. A stored file is cut into content-defined chunks (FastCDC 2020),
//! each named by the sha256 of its content and kept zstd-compressed as one immutable file,
//! `chunks/<first two hex digits>/<sha256>`; the backup keeps the file's index (which chunks, in
//! order) where the file itself would be. Why this is safe (see docs/architecture.md):
//!
//! - A chunk file is complete before it has its name: written in `tmp/`, fsynced, renamed. A name
//!   in `chunks/` therefore always holds its whole content, and a chunk already there is never
//!   compressed or written again.
//! - Chunks never change and are only deleted by garbage collection (`collect_garbage`), which
//!   holds the store's lock exclusively; every `create` holds it shared for its whole run (and
//!   readers while they read), so no chunk a run relies on can go while it runs.
//! - Every chunk read is checked against its name, and a file's content against the manifest's
//!   sha256, so damage anywhere is found, never restored.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::checksum::{sha256, to_hex};
use crate::fs::{create_private_dir_all, create_private_file, sync_dir};

/// The chunk store's directory in a backups directory.
pub const STORE_DIR: &str = ".wqm-chunks";
const PARAMS_FILE: &str = "store.json";
const LOCK_FILE: &str = "lock";
const CHUNKS_DIR: &str = "chunks";
const TMP_DIR: &str = "tmp";
const FORMAT: u32 = 1;

/// The average chunk size (min = avg/4, max = avg×4), chosen by measurement on real Qdrant
/// snapshots (docs/performance.md): smaller chunks share more between nights, larger ones cost
/// fewer files.
pub const DEFAULT_AVERAGE: usize = 64 * 1024;
/// The largest chunk any index may name: FastCDC's own upper bound on a maximum.
const LARGEST_CHUNK: usize = fastcdc::v2020::MAXIMUM_MAX;
/// How long a run waits for a garbage collection holding the store to finish.
const LOCK_WAIT: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("no chunk store at `{}`: incremental backups read their data from the `{STORE_DIR}` directory beside them", path.display())]
    NoStore { path: PathBuf },
    #[error("`{}` is not a wqm chunk store: {reason}", path.display())]
    NotAStore { path: PathBuf, reason: String },
    #[error("the chunk store `{}` stayed locked by a garbage collection for {} s", path.display(), LOCK_WAIT.as_secs())]
    Locked { path: PathBuf },
    #[error("interrupted while waiting for the chunk store `{}`", path.display())]
    Interrupted { path: PathBuf },
    #[error("cannot use the chunk store `{}`: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

impl ChunkError {
    /// The store could not be held (a garbage collection has it, or the wait was interrupted):
    /// nothing is known about the backups in it.
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            ChunkError::Locked { .. } | ChunkError::Interrupted { .. }
        )
    }
}

impl crate::exit::Classify for ChunkError {
    fn exit_code(&self) -> crate::exit::ExitCode {
        use crate::exit::ExitCode;
        match self {
            ChunkError::NoStore { .. } | ChunkError::NotAStore { .. } => ExitCode::InvalidBackup,
            ChunkError::Locked { .. } | ChunkError::Io { .. } => ExitCode::Failure,
            ChunkError::Interrupted { .. } => crate::exit::signal_exit_code(),
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            ChunkError::NoStore { .. } => "an incremental backup moves with its whole directory (`rsync -a DIR/ DEST/`); to move one backup alone, `wqm backup export BACKUP DEST` first".to_string(),
            ChunkError::NotAStore { .. } => "move that directory away; the next incremental backup makes a new store".to_string(),
            ChunkError::Locked { .. } => "a `wqm backup prune` is collecting chunks there; run again when it is done".to_string(),
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

/// A chunk's name: the sha256 of its content.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId([u8; 32]);

impl ChunkId {
    pub fn of(content: &[u8]) -> Self {
        ChunkId(sha256(content))
    }

    /// 64 lowercase hex digits, nothing else.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut id = [0u8; 32];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(ChunkId(id))
    }

    /// Where the chunk lives in the store, relative to it.
    fn rel(&self) -> String {
        let hex = self.to_string();
        format!("{CHUNKS_DIR}/{}/{hex}", &hex[..2])
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({self})")
    }
}

/// How files are cut, fixed when the store is made: every backup in it must cut alike to share.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    pub format: u32,
    /// `fastcdc-2020` (normalization level 1, the crate's default gear table).
    pub chunker: String,
    pub min_size: usize,
    pub avg_size: usize,
    pub max_size: usize,
    /// How chunks are named and stored.
    pub hash: String,
    pub compression: String,
}

impl Params {
    pub fn with_average(avg_size: usize) -> Self {
        Params {
            format: FORMAT,
            chunker: "fastcdc-2020".to_string(),
            min_size: avg_size / 4,
            avg_size,
            max_size: avg_size * 4,
            hash: "sha256".to_string(),
            compression: "zstd".to_string(),
        }
    }

    /// What this wqm can cut with: FastCDC's bounds, its known algorithm and storage.
    fn check(&self) -> Result<(), String> {
        use fastcdc::v2020 as cdc;
        if self.format != FORMAT {
            return Err(format!(
                "store format {} (this wqm reads {FORMAT})",
                self.format
            ));
        }
        if (
            self.chunker.as_str(),
            self.hash.as_str(),
            self.compression.as_str(),
        ) != ("fastcdc-2020", "sha256", "zstd")
        {
            return Err(format!(
                "unknown chunking `{}`/`{}`/`{}`",
                self.chunker, self.hash, self.compression
            ));
        }
        let sizes_ok = (cdc::MINIMUM_MIN..=cdc::MINIMUM_MAX).contains(&self.min_size)
            && (cdc::AVERAGE_MIN..=cdc::AVERAGE_MAX).contains(&self.avg_size)
            && (cdc::MAXIMUM_MIN..=cdc::MAXIMUM_MAX).contains(&self.max_size)
            && self.min_size <= self.avg_size
            && self.avg_size <= self.max_size
            && [self.min_size, self.avg_size, self.max_size]
                .iter()
                .all(|s| s % 2 == 0);
        if !sizes_ok {
            return Err(format!(
                "chunk sizes {}/{}/{} outside FastCDC's bounds",
                self.min_size, self.avg_size, self.max_size
            ));
        }
        Ok(())
    }
}

/// An open chunk store, with its lock held (shared by creates and readers, exclusive by the
/// garbage collection) until it is dropped.
#[derive(Debug)]
pub struct ChunkStore {
    root: PathBuf,
    params: Params,
    _lock: File,
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
        fs::symlink_metadata(Self::path_in(dir)).is_ok_and(|m| m.is_dir())
    }

    /// Opens the store of `dir` for a create, making it (with `avg_size` chunks) when there is
    /// none. Waits while a garbage collection holds it.
    pub fn open_for_writing(dir: &Path, avg_size: usize) -> Result<Arc<Self>, ChunkError> {
        if !Self::exists_in(dir) {
            make_store(dir, &Params::with_average(avg_size))?;
        }
        Self::open(dir, Access::Shared).map(Arc::new)
    }

    /// Opens the store of `dir` to read chunks. Waits while a garbage collection holds it.
    pub fn open_for_reading(dir: &Path) -> Result<Arc<Self>, ChunkError> {
        Self::open(dir, Access::Shared).map(Arc::new)
    }

    /// The store of `dir` for garbage collection, when nothing else uses it; `None` when a
    /// create or a reader holds it.
    pub fn try_exclusive(dir: &Path) -> Result<Option<Self>, ChunkError> {
        match Self::open(dir, Access::Exclusive) {
            Ok(store) => Ok(Some(store)),
            Err(ChunkError::Locked { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn open(dir: &Path, access: Access) -> Result<Self, ChunkError> {
        let root = Self::path_in(dir);
        let not_a_store = |reason: String| ChunkError::NotAStore {
            path: root.clone(),
            reason,
        };
        match fs::symlink_metadata(&root) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ChunkError::NoStore { path: root })
            }
            Err(e) => return Err(io_error(&root)(e)),
            Ok(m) if !m.is_dir() => {
                return Err(not_a_store(
                    "not a directory (links are never followed)".into(),
                ))
            }
            Ok(_) => {}
        }
        let mut text = String::new();
        super::open_in(&root, PARAMS_FILE)
            .and_then(|f| f.take(64 * 1024).read_to_string(&mut text))
            .map_err(|e| not_a_store(format!("cannot read `{PARAMS_FILE}`: {e}")))?;
        let params: Params = serde_json::from_str(&text)
            .map_err(|e| not_a_store(format!("`{PARAMS_FILE}`: {e}")))?;
        params.check().map_err(not_a_store)?;
        let lock = lock(&root.join(LOCK_FILE), access)?;
        Ok(ChunkStore {
            root,
            params,
            _lock: lock,
        })
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The stored (compressed) size of a chunk, when it is there.
    pub fn stored_size(&self, id: &ChunkId) -> Option<u64> {
        super::stat_in(&self.root, &id.rel())
            .ok()
            .filter(|s| s.kind == super::Kind::File)
            .map(|s| s.len)
    }

    /// Reads chunk `id` of `len` bytes into `buffer.content` and checks its size and (with
    /// `check_name`) its content against its name. Never reads more than `len` bytes of content
    /// (nor a stored file larger than `len` can compress to).
    pub fn read_chunk(
        &self,
        id: &ChunkId,
        len: usize,
        check_name: bool,
        buffer: &mut ChunkBuffer,
    ) -> Result<(), ChunkProblem> {
        let damaged = |what: &str, e: io::Error| ChunkProblem::Damaged(format!("{what}: {e}"));
        let file = super::open_in(&self.root, &id.rel()).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ChunkProblem::Missing,
            _ => damaged("cannot read", e),
        })?;
        let bound = zstd::zstd_safe::compress_bound(len) as u64;
        buffer.compressed.clear();
        file.take(bound + 1)
            .read_to_end(&mut buffer.compressed)
            .map_err(|e| damaged("cannot read", e))?;
        if buffer.compressed.len() as u64 > bound {
            return Err(ChunkProblem::Damaged(format!(
                "its stored file is larger than {len} bytes can compress to"
            )));
        }
        buffer.content.clear();
        buffer.content.reserve(len);
        let decompressor = match &mut buffer.decompressor {
            Some(d) => d,
            empty => empty.insert(
                zstd::bulk::Decompressor::new().map_err(|e| damaged("cannot decompress", e))?,
            ),
        };
        decompressor
            .decompress_to_buffer(&buffer.compressed, &mut buffer.content)
            .map_err(|e| damaged("cannot decompress", e))?;
        if buffer.content.len() != len {
            return Err(ChunkProblem::Damaged(format!(
                "holds {} bytes, its index says {len}",
                buffer.content.len()
            )));
        }
        if check_name && ChunkId::of(&buffer.content) != *id {
            return Err(ChunkProblem::Damaged(
                "its content does not match its name (sha256)".to_string(),
            ));
        }
        Ok(())
    }

    /// A private directory for one run's chunks while they are written.
    pub fn temp_dir(&self) -> Result<tempfile::TempDir, ChunkError> {
        let tmp = self.root.join(TMP_DIR);
        create_private_dir_all(&tmp).map_err(io_error(&tmp))?;
        tempfile::Builder::new()
            .prefix("run-")
            .tempdir_in(&tmp)
            .map_err(io_error(&tmp))
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

/// Makes the store in `dir` (in a temporary directory renamed into place, so a store is never
/// seen half made; a concurrent run that made it first wins).
fn make_store(dir: &Path, params: &Params) -> Result<(), ChunkError> {
    let root = ChunkStore::path_in(dir);
    create_private_dir_all(dir).map_err(io_error(dir))?;
    let temp = dir.join(format!("{STORE_DIR}.new-{}", std::process::id()));
    let _ = fs::remove_dir_all(&temp);
    let made = (|| {
        create_private_dir_all(&temp.join(CHUNKS_DIR))?;
        create_private_dir_all(&temp.join(TMP_DIR))?;
        create_private_file(&temp.join(LOCK_FILE))?;
        let text = serde_json::to_string_pretty(params).map_err(io::Error::other)?;
        crate::fs::write_atomic(&temp.join(PARAMS_FILE), text.as_bytes())?;
        sync_dir(&temp)
    })();
    if let Err(e) = made {
        let _ = fs::remove_dir_all(&temp);
        return Err(io_error(&root)(e));
    }
    if fs::rename(&temp, &root).is_err() {
        // Another run made it meanwhile (a rename onto a non-empty directory fails).
        let _ = fs::remove_dir_all(&temp);
        if !ChunkStore::exists_in(dir) {
            return Err(io_error(&root)(io::Error::other("cannot create it")));
        }
    }
    sync_dir(dir).map_err(io_error(dir))
}

/// Takes the store's lock; a shared one waits (Ctrl-C stops the wait) while a garbage
/// collection holds it exclusively.
fn lock(path: &Path, access: Access) -> Result<File, ChunkError> {
    let file = fs::OpenOptions::new()
        .read(true)
        .open(path)
        .map_err(io_error(path))?;
    let started = Instant::now();
    loop {
        let result = match access {
            Access::Shared => file.try_lock_shared(),
            Access::Exclusive => file.try_lock(),
        };
        match result {
            Ok(()) => return Ok(file),
            Err(fs::TryLockError::Error(e)) => return Err(io_error(path)(e)),
            Err(fs::TryLockError::WouldBlock) => {}
        }
        let root = crate::fs::parent_dir(path).to_path_buf();
        if access == Access::Exclusive || started.elapsed() > LOCK_WAIT {
            return Err(ChunkError::Locked { path: root });
        }
        if crate::progress::is_interrupted() {
            return Err(ChunkError::Interrupted { path: root });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

mod cut;
mod gc;
mod index;
mod read;
mod usage;
mod write;

pub use cut::Chunker;
pub use gc::{collect_garbage, Collected};
pub use index::{IndexLine, IndexReader};
pub use read::{chunk_error, ChunkReader};
pub use usage::{backups_using, usage, visit_chunks, Usage};
pub use write::{Added, ChunkWriter};

#[cfg(test)]
mod tests;

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

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, Read, Write};
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
    #[error("cannot use the chunk store `{}`: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

impl crate::exit::Classify for ChunkError {
    fn exit_code(&self) -> crate::exit::ExitCode {
        use crate::exit::ExitCode;
        match self {
            ChunkError::NoStore { .. } | ChunkError::NotAStore { .. } => ExitCode::InvalidBackup,
            ChunkError::Locked { .. } | ChunkError::Io { .. } => ExitCode::Failure,
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            ChunkError::NoStore { .. } => "an incremental backup moves with its whole directory (`rsync -a DIR/ DEST/`); to move one backup alone, `wqm backup export BACKUP DEST` first".to_string(),
            ChunkError::NotAStore { .. } => "move that directory away; the next incremental backup makes a new store".to_string(),
            ChunkError::Locked { .. } => "a `wqm backup prune` is collecting chunks there; run again when it is done".to_string(),
            ChunkError::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull => crate::exit::DISK_FULL_HINT.to_string(),
            ChunkError::Io { .. } => return None,
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

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    pub fn contains(&self, id: &ChunkId) -> bool {
        super::stat_in(&self.root, &id.rel()).is_ok_and(|s| s.kind == super::Kind::File)
    }

    /// The stored (compressed) size of a chunk, when it is there.
    pub fn stored_size(&self, id: &ChunkId) -> Option<u64> {
        super::stat_in(&self.root, &id.rel())
            .ok()
            .filter(|s| s.kind == super::Kind::File)
            .map(|s| s.len)
    }

    /// Reads chunk `id` of `len` bytes into `out` and checks it: its size, and its content
    /// against its name. Never reads more than `len` bytes of content (nor a stored file larger
    /// than `len` can compress to).
    pub fn read_chunk(
        &self,
        id: &ChunkId,
        len: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), ChunkProblem> {
        let file = super::open_in(&self.root, &id.rel()).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ChunkProblem::Missing,
            _ => ChunkProblem::Damaged(format!("cannot read: {e}")),
        })?;
        let bound = zstd::zstd_safe::compress_bound(len) as u64;
        let mut compressed = Vec::new();
        file.take(bound + 1)
            .read_to_end(&mut compressed)
            .map_err(|e| ChunkProblem::Damaged(format!("cannot read: {e}")))?;
        if compressed.len() as u64 > bound {
            return Err(ChunkProblem::Damaged(format!(
                "its stored file is larger than {len} bytes can compress to"
            )));
        }
        out.clear();
        out.reserve(len);
        zstd::bulk::Decompressor::new()
            .and_then(|mut d| d.decompress_to_buffer(&compressed, out))
            .map_err(|e| ChunkProblem::Damaged(format!("cannot decompress: {e}")))?;
        if out.len() != len {
            return Err(ChunkProblem::Damaged(format!(
                "holds {} bytes, its index says {len}",
                out.len()
            )));
        }
        if ChunkId::of(out) != *id {
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
            return Err(io_error(&root)(io::Error::new(
                io::ErrorKind::Interrupted,
                "interrupted while waiting for the chunk store",
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---- cutting ---------------------------------------------------------------------------------

/// FastCDC over a stream pushed to it piece by piece: the same cut points as over the whole
/// content at once, because a cut is only made once `max_size` bytes (or the end) are buffered.
pub struct Chunker {
    min_size: usize,
    avg_size: usize,
    max_size: usize,
    mask_s: u64,
    mask_l: u64,
    buffer: Vec<u8>,
}

impl Chunker {
    pub fn new(params: &Params) -> Self {
        let (mask_s, mask_l) =
            fastcdc::v2020::select_masks(params.avg_size, fastcdc::v2020::Normalization::Level1);
        Chunker {
            min_size: params.min_size,
            avg_size: params.avg_size,
            max_size: params.max_size,
            mask_s,
            mask_l,
            buffer: Vec::with_capacity(2 * params.max_size),
        }
    }

    /// Adds `data`; `emit` gets every chunk that is now complete, in order.
    pub fn push(
        &mut self,
        data: &[u8],
        emit: &mut impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        self.buffer.extend_from_slice(data);
        self.cut_while(|buffered, max| buffered >= max, emit)
    }

    /// The end of the content: `emit` gets the remaining chunks.
    pub fn finish(&mut self, emit: &mut impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        self.cut_while(|buffered, _| buffered > 0, emit)
    }

    fn cut_while(
        &mut self,
        more: impl Fn(usize, usize) -> bool,
        emit: &mut impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut start = 0;
        while more(self.buffer.len() - start, self.max_size) {
            let window = &self.buffer[start..];
            let (_, len) = fastcdc::v2020::cut(
                window,
                self.min_size,
                self.avg_size,
                self.max_size,
                self.mask_s,
                self.mask_l,
                self.mask_s << 1,
                self.mask_l << 1,
            );
            emit(&window[..len])?;
            start += len;
        }
        self.buffer.drain(..start);
        Ok(())
    }
}

// ---- the index of a chunked file --------------------------------------------------------------

/// The first line of every index file.
const INDEX_HEADER: &str = "wqm-chunk-index 1";

/// One line of an index: a chunk, its content length and its stored (compressed) size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexLine {
    pub id: ChunkId,
    pub len: usize,
    pub stored: u64,
}

impl IndexLine {
    fn parse(line: &str) -> Option<Self> {
        let mut fields = line.split(' ');
        let id = ChunkId::parse(fields.next()?)?;
        let len: usize = fields.next()?.parse().ok()?;
        let stored: u64 = fields.next()?.parse().ok()?;
        (fields.next().is_none() && (1..=LARGEST_CHUNK).contains(&len)).then_some(IndexLine {
            id,
            len,
            stored,
        })
    }
}

/// Reads an index line by line (constant memory, however long the file).
pub struct IndexReader<R> {
    inner: R,
    line: String,
    number: usize,
}

impl<R: BufRead> IndexReader<R> {
    pub fn new(mut inner: R) -> io::Result<Self> {
        let mut header = String::new();
        (&mut inner)
            .take(INDEX_HEADER.len() as u64 + 1)
            .read_line(&mut header)?;
        if header.trim_end_matches('\n') != INDEX_HEADER {
            return Err(invalid_index("it does not start with `wqm-chunk-index 1`"));
        }
        Ok(IndexReader {
            inner,
            line: String::new(),
            number: 1,
        })
    }

    /// The next chunk, `None` at the end.
    pub fn next_line(&mut self) -> io::Result<Option<IndexLine>> {
        self.line.clear();
        // A line is 64 hex digits and two numbers: anything longer is not an index.
        let read = (&mut self.inner).take(128).read_line(&mut self.line)?;
        if read == 0 {
            return Ok(None);
        }
        self.number += 1;
        let text = self
            .line
            .strip_suffix('\n')
            .ok_or_else(|| invalid_index(&format!("line {} is cut short", self.number)))?;
        IndexLine::parse(text)
            .map(Some)
            .ok_or_else(|| invalid_index(&format!("line {} is not a chunk", self.number)))
    }
}

fn invalid_index(reason: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("not a valid chunk index: {reason}"),
    )
}

// ---- writing ---------------------------------------------------------------------------------

/// What a run added to the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Added {
    pub chunks: u64,
    pub bytes: u64,
}

/// Cuts the content written to it into chunks, stores the chunks the store lacks (compressed,
/// fsynced, renamed into place) and writes the index to `index`.
pub struct ChunkWriter<W: Write> {
    chunker: Chunker,
    sink: ChunkSink<W>,
}

/// Where a `ChunkWriter`'s chunks go: the store, and a line of the index each.
struct ChunkSink<W: Write> {
    store: Arc<ChunkStore>,
    temp: PathBuf,
    index: W,
    compressor: zstd::bulk::Compressor<'static>,
    compressed: Vec<u8>,
    /// New chunks written in the temporary directory, not yet fsynced nor named, and their
    /// stored sizes (a chunk met again meanwhile is not written twice).
    unsynced: Vec<(ChunkId, File)>,
    in_flight: std::collections::HashMap<ChunkId, u64>,
    /// Fan-out directories that got a new name, to sync before the index may name them.
    touched: BTreeSet<PathBuf>,
    added: Added,
}

/// New chunks are fsynced this many at a time, on `SYNC_THREADS` threads: the filesystem
/// commits concurrent fsyncs together, where one at a time each waits for its own commit.
const SYNC_BATCH: usize = 64;
const SYNC_THREADS: usize = 8;

impl<W: Write> ChunkWriter<W> {
    pub fn new(store: Arc<ChunkStore>, temp: &Path, mut index: W) -> io::Result<Self> {
        writeln!(index, "{INDEX_HEADER}")?;
        Ok(ChunkWriter {
            chunker: Chunker::new(store.params()),
            sink: ChunkSink {
                store,
                temp: temp.to_path_buf(),
                index,
                compressor: zstd::bulk::Compressor::new(crate::compress::ZSTD_LEVEL)?,
                compressed: Vec::new(),
                unsynced: Vec::new(),
                in_flight: Default::default(),
                touched: BTreeSet::new(),
                added: Added::default(),
            },
        })
    }

    /// Stores the last chunks, makes every new chunk's name durable and returns the index
    /// writer and what was added.
    pub fn finish(mut self) -> io::Result<(W, Added)> {
        let sink = &mut self.sink;
        self.chunker.finish(&mut |chunk| sink.store_chunk(chunk))?;
        sink.land()?;
        for dir in &sink.touched {
            sync_dir(dir)?;
        }
        if !sink.touched.is_empty() {
            sync_dir(&sink.store.root.join(CHUNKS_DIR))?;
        }
        Ok((self.sink.index, self.sink.added))
    }
}

impl<W: Write> ChunkSink<W> {
    fn store_chunk(&mut self, chunk: &[u8]) -> io::Result<()> {
        let id = ChunkId::of(chunk);
        let known = self.in_flight.get(&id).copied();
        let stored = match known.or_else(|| self.store.stored_size(&id)) {
            Some(size) => size,
            None => self.put(&id, chunk)?,
        };
        writeln!(self.index, "{id} {} {stored}", chunk.len())?;
        if self.unsynced.len() >= SYNC_BATCH {
            self.land()?;
        }
        Ok(())
    }

    /// Writes a new chunk, compressed, into the run's temporary directory; `land` makes it
    /// durable and gives it its name.
    fn put(&mut self, id: &ChunkId, chunk: &[u8]) -> io::Result<u64> {
        self.compressed.clear();
        self.compressed
            .reserve(zstd::zstd_safe::compress_bound(chunk.len()));
        self.compressor
            .compress_to_buffer(chunk, &mut self.compressed)?;
        let mut file = create_private_file(&self.temp.join(id.to_string()))?;
        file.write_all(&self.compressed)?;
        let stored = self.compressed.len() as u64;
        self.unsynced.push((*id, file));
        self.in_flight.insert(*id, stored);
        self.added.chunks += 1;
        self.added.bytes += stored;
        Ok(stored)
    }

    /// Fsyncs the new chunks (several at once), then renames each to its name (a concurrent
    /// run storing the same chunk renames identical bytes over it): a name always holds a
    /// whole chunk.
    fn land(&mut self) -> io::Result<()> {
        let batch = std::mem::take(&mut self.unsynced);
        let per_thread = batch.len().div_ceil(SYNC_THREADS).max(1);
        std::thread::scope(|scope| {
            let syncing: Vec<_> = batch
                .chunks(per_thread)
                .map(|part| scope.spawn(move || part.iter().try_for_each(|(_, f)| f.sync_all())))
                .collect();
            syncing.into_iter().try_for_each(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(io::Error::other("panicked")))
            })
        })?;
        for (id, _) in &batch {
            let target = self.store.root.join(id.rel());
            let dir = crate::fs::parent_dir(&target).to_path_buf();
            if !self.touched.contains(&dir) && !dir.is_dir() {
                create_private_dir_all(&dir)?;
            }
            fs::rename(self.temp.join(id.to_string()), &target)?;
            crate::failpoint::hit("create:chunk-stored")?;
            self.touched.insert(dir);
        }
        self.in_flight.clear();
        Ok(())
    }
}

impl<W: Write> Write for ChunkWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let sink = &mut self.sink;
        self.chunker
            .push(buf, &mut |chunk| sink.store_chunk(chunk))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sink.index.flush()
    }
}

// ---- reading ---------------------------------------------------------------------------------

/// A chunked file's content: its index read line by line from `index`, each chunk read from the
/// store and checked against its name as it comes. Memory: one chunk.
pub struct ChunkReader<R> {
    store: Arc<ChunkStore>,
    index: IndexReader<R>,
    current: Vec<u8>,
    position: usize,
}

impl<R: BufRead> ChunkReader<R> {
    pub fn new(store: Arc<ChunkStore>, index: R) -> io::Result<Self> {
        Ok(ChunkReader {
            store,
            index: IndexReader::new(index)?,
            current: Vec::new(),
            position: 0,
        })
    }
}

impl<R: BufRead> Read for ChunkReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.position == self.current.len() {
            let Some(line) = self.index.next_line()? else {
                return Ok(0);
            };
            self.position = 0;
            self.store
                .read_chunk(&line.id, line.len, &mut self.current)
                .map_err(|problem| chunk_error(&line.id, &problem))?;
        }
        let n = buf.len().min(self.current.len() - self.position);
        buf[..n].copy_from_slice(&self.current[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

pub fn chunk_error(id: &ChunkId, problem: &ChunkProblem) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("chunk `{id}` {problem}"),
    )
}

// ---- what backups use -------------------------------------------------------------------------

/// Calls `visit` with every chunk line of every chunked file of `backup`, in order. An index
/// that cannot be read is an error: nobody can tell which chunks it needs.
pub fn visit_chunks(
    backup: &super::BackupDir,
    mut visit: impl FnMut(&IndexLine),
) -> io::Result<()> {
    for entry in &backup.manifest.files {
        if entry.compression != crate::compress::Compression::Chunks {
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
pub fn usage(backup: &super::BackupDir) -> io::Result<Usage> {
    let mut own: std::collections::HashMap<ChunkId, u64> = Default::default();
    let mut usage = Usage::default();
    visit_chunks(backup, |line| {
        usage.logical_bytes += line.len as u64;
        own.insert(line.id, line.stored);
    })?;
    usage.chunks = own.len() as u64;
    usage.referenced_bytes = own.values().sum();
    for other in super::scan(backup.backups_dir())?.backups() {
        if other.name() != backup.name() {
            // An unreadable index shares nothing that can be counted.
            let _ = visit_chunks(other, |line| {
                own.remove(&line.id);
            });
        }
    }
    usage.unique_bytes = own.values().sum();
    Ok(usage)
}

/// Which backups of `dir` need each of `ids`, by name.
pub fn backups_using(dir: &Path, ids: &HashSet<ChunkId>) -> BTreeMap<ChunkId, Vec<String>> {
    let mut users: BTreeMap<ChunkId, Vec<String>> = BTreeMap::new();
    let Ok(scan) = super::scan(dir) else {
        return users;
    };
    for backup in scan.backups() {
        let mut found = BTreeSet::new();
        let visited = visit_chunks(backup, |line| {
            if ids.contains(&line.id) {
                found.insert(line.id);
            }
        });
        // A backup whose index cannot be read is broken already, and says so when validated.
        let _ = visited;
        for id in found {
            users.entry(id).or_default().push(backup.name());
        }
    }
    users
}

// ---- garbage collection ------------------------------------------------------------------------

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

#[cfg(test)]
mod tests {
    use super::*;

    fn content(len: usize, seed: u64) -> Vec<u8> {
        // Not compressible to nothing, not random either: a little like a snapshot.
        let mut state = seed;
        (0..len)
            .map(|i| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                if i % 7 == 0 {
                    0
                } else {
                    (state >> 56) as u8
                }
            })
            .collect()
    }

    fn cut(params: &Params, data: &[u8], pieces: usize) -> Vec<usize> {
        let mut chunker = Chunker::new(params);
        let mut lens = Vec::new();
        for piece in data.chunks(pieces) {
            chunker
                .push(piece, &mut |c| {
                    lens.push(c.len());
                    Ok(())
                })
                .unwrap();
        }
        chunker
            .finish(&mut |c| {
                lens.push(c.len());
                Ok(())
            })
            .unwrap();
        lens
    }

    #[test]
    fn pushed_pieces_cut_as_the_whole_content_does() {
        let params = Params::with_average(4096);
        let data = content(300_000, 7);
        let whole: Vec<usize> =
            fastcdc::v2020::FastCDC::new(&data, params.min_size, params.avg_size, params.max_size)
                .map(|c| c.length)
                .collect();
        assert!(whole.len() > 20, "{}", whole.len());
        for pieces in [1, 1000, 4096, 65_536, 300_000] {
            assert_eq!(cut(&params, &data, pieces), whole, "pieces of {pieces}");
        }
        assert!(cut(&params, &[], 10).is_empty());
    }

    #[test]
    fn chunks_round_trip_and_are_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open_for_writing(dir.path(), 4096).unwrap();
        let data = content(200_000, 1);
        let write = |data: &[u8]| {
            let temp = store.temp_dir().unwrap();
            let mut writer = ChunkWriter::new(store.clone(), temp.path(), Vec::new()).unwrap();
            writer.write_all(data).unwrap();
            writer.finish().unwrap()
        };
        let (index, added) = write(&data);
        assert!(added.chunks > 10 && added.bytes > 0, "{added:?}");
        let (again, added_again) = write(&data);
        assert_eq!(again, index);
        assert_eq!(added_again, Added::default(), "nothing stored twice");
        let mut read = Vec::new();
        ChunkReader::new(store.clone(), &index[..])
            .unwrap()
            .read_to_end(&mut read)
            .unwrap();
        assert_eq!(read, data);

        // A damaged chunk is found by its name.
        let mut lines = IndexReader::new(&index[..]).unwrap();
        let first = lines.next_line().unwrap().unwrap();
        let path = store.root().join(first.id.rel());
        let mut other = Vec::new();
        zstd::stream::copy_encode(&b"something else"[..], &mut other, 1).unwrap();
        fs::write(&path, other).unwrap();
        let err = ChunkReader::new(store.clone(), &index[..])
            .unwrap()
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(err.to_string().contains(&first.id.to_string()), "{err}");
        fs::remove_file(&path).unwrap();
        let err = ChunkReader::new(store.clone(), &index[..])
            .unwrap()
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(err.to_string().contains("is missing"), "{err}");
    }

    #[test]
    fn hostile_indexes_are_refused() {
        let id = ChunkId::of(b"x").to_string();
        for bad in [
            "",
            "wqm-chunk-index 2\n",
            &format!("wqm-chunk-index 1\n{id} 1\n"),
            &format!("wqm-chunk-index 1\n{id} 0 1\n"),
            &format!("wqm-chunk-index 1\n{id} 99999999999 1\n"),
            "wqm-chunk-index 1\n../../etc/passwd 1 1\n",
            &format!("wqm-chunk-index 1\n{} 1 1\n", id.to_uppercase()),
            &format!("wqm-chunk-index 1\n{id} 1 1"),
            &format!("wqm-chunk-index 1\n{id} 1 1 {}\n", "9".repeat(200)),
        ] {
            let result = IndexReader::new(bad.as_bytes()).and_then(|mut r| {
                while r.next_line()?.is_some() {}
                Ok(())
            });
            assert!(result.is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_collection_keeps_referenced_chunks_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open_for_writing(dir.path(), 4096).unwrap();
        let temp = store.temp_dir().unwrap();
        let mut writer = ChunkWriter::new(store.clone(), temp.path(), Vec::new()).unwrap();
        writer.write_all(&content(100_000, 3)).unwrap();
        let (index, added) = writer.finish().unwrap();
        let mut lines = IndexReader::new(&index[..]).unwrap();
        let kept = lines.next_line().unwrap().unwrap().id;
        assert!(
            ChunkStore::try_exclusive(dir.path()).unwrap().is_none(),
            "a writer holds the store"
        );
        drop(store);
        let exclusive = ChunkStore::try_exclusive(dir.path()).unwrap().unwrap();
        let referenced = HashSet::from([kept]);
        let dry = collect_garbage(&exclusive, &referenced, true).unwrap();
        assert_eq!(dry.chunks_deleted + 1, added.chunks);
        let done = collect_garbage(&exclusive, &referenced, false).unwrap();
        assert_eq!(done, dry);
        assert!(exclusive.contains(&kept));
        assert_eq!(
            collect_garbage(&exclusive, &referenced, false)
                .unwrap()
                .chunks_deleted,
            0
        );
    }

    #[test]
    fn a_store_that_is_not_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            ChunkStore::open_for_reading(dir.path()),
            Err(ChunkError::NoStore { .. })
        ));
        fs::create_dir(dir.path().join(STORE_DIR)).unwrap();
        fs::write(
            dir.path().join(STORE_DIR).join(PARAMS_FILE),
            r#"{"format":1,"chunker":"fastcdc-2020","min_size":0,"avg_size":1,"max_size":2,"hash":"sha256","compression":"zstd"}"#,
        )
        .unwrap();
        let err = ChunkStore::open_for_reading(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("outside FastCDC's bounds"),
            "{err}"
        );
    }
}

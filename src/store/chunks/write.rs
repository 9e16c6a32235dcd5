//! Writing a chunked file: chunks into the store, the index into the backup.
//!
//! A chunk the store has already is not written again. The run's share of them (`Run::compare`,
//! a rotating group: every chunk over a cycle of nights) is read and compared with the data in
//! hand (decompressed, byte for byte): a damaged one would otherwise be named by every later
//! backup and fail each of them. One found damaged is set aside (`aside.rs`: kept in
//! `quarantine/`, its name taken away) and stored again from the data in hand under its name,
//! which repairs every backup that names it. The others cost a lookup: a night reads what
//! changed and its share of the rest, not every chunk of the backup. A staging store's chunks
//! reused from its repository on a backend are compared the same way, read back while the run
//! goes on (`COMPARE_AHEAD` at once), and a damaged one set aside there (`aside.rs`); in a store
//! of pack files the share is a share of the packs, whose chunks are read in ranges of
//! `COMPARE_RANGE`: a few requests a night instead of one per chunk.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use super::index::INDEX_HEADER;
use super::pack;
use super::CHUNKS_DIR;
use super::{ChunkBuffer, ChunkId, ChunkProblem, ChunkStore, Chunker, Fetch, Selection};
use crate::fs::{create_private_dir_all, create_private_file};
use crate::store::sync_dir;

/// What a run added to the store, and the damaged chunks it stored again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Added {
    pub chunks: u64,
    pub bytes: u64,
    pub repaired: Vec<ChunkId>,
}

/// What the files of one run share: which reused chunks it compares with its data (all of them
/// unless `compare` picks a share), the chunks it has met in the store already (each is looked
/// at once per run), the chunks it wrote (what its verification reads back), the fan-out
/// directories of the chunks it reused (made durable once, before the manifest:
/// `sync_reused`), and what it added.
#[derive(Debug, Default)]
pub struct Run {
    compare: Option<Selection>,
    checked: Mutex<HashSet<ChunkId>>,
    compared: Mutex<u64>,
    written: Mutex<HashSet<ChunkId>>,
    reused_dirs: Mutex<BTreeSet<PathBuf>>,
    added: Mutex<Added>,
}

impl Run {
    /// A run that compares only the reused chunks `compare` picks (the others are looked up).
    pub fn comparing(compare: Selection) -> Self {
        Run {
            compare: Some(compare),
            ..Run::default()
        }
    }

    pub fn added(&self) -> Added {
        self.added.lock().expect("run lock").clone()
    }

    /// How many chunks found in the store this run compared with its data.
    pub fn compared(&self) -> u64 {
        *self.compared.lock().expect("run lock")
    }

    /// The chunks this run stored (new, or repaired): what its verification reads back. Every
    /// other chunk its indexes name was in the store before, and needs only to be there still.
    pub fn written(&self) -> HashSet<ChunkId> {
        self.written.lock().expect("run lock").clone()
    }

    /// Makes the names of the chunks this run reused durable: another run renamed them, and
    /// may have died before syncing their directories. Each directory once per run, after the
    /// last file was written and before the manifest names any of them.
    pub fn sync_reused(&self) -> io::Result<()> {
        let dirs = std::mem::take(&mut *self.reused_dirs.lock().expect("run lock"));
        dirs.iter().try_for_each(|dir| sync_dir(dir))
    }
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
    run: Arc<Run>,
    /// This file's own directory in the run's temporary directory: files written side by side
    /// (a pipelined create) may store the same new chunk at the same moment.
    temp: tempfile::TempDir,
    index: W,
    compressor: zstd::bulk::Compressor<'static>,
    compressed: Vec<u8>,
    stored: ChunkBuffer,
    /// New chunks written in the temporary directory, not yet fsynced nor named, and their
    /// stored sizes (a chunk met again meanwhile is not written twice).
    unsynced: Vec<(ChunkId, usize, File)>,
    in_flight: HashMap<ChunkId, u64>,
    /// Stored sizes of the chunks this file found in the store (compared or not) or stored.
    sound: HashMap<ChunkId, u64>,
    /// Fan-out directories that got a new name, to sync before the index may name them.
    touched: BTreeSet<PathBuf>,
    /// Chunks reused from the repository on a backend being read back to compare, oldest first.
    comparing: VecDeque<Comparison>,
    /// The range of a pack read back last: the next chunks compared are likely in it.
    range: Option<Arc<PackRange>>,
}

/// A reused chunk on its way back from the repository, and the data it must hold.
struct Comparison {
    id: ChunkId,
    content: Vec<u8>,
    from: ReadBack,
}

/// Where a reused chunk's stored bytes come from: a request of its own (a loose chunk), or a
/// range of its pack read for it and the chunks after it.
enum ReadBack {
    Chunk(Fetch),
    Packed(Arc<PackRange>, pack::Entry),
}

/// Bytes of a pack read back for comparisons: from `start`, up to `COMPARE_RANGE` of them,
/// fetched once for every chunk in them.
struct PackRange {
    pack: Arc<str>,
    start: u64,
    fetch: Mutex<Option<Fetch>>,
    bytes: OnceLock<io::Result<Vec<u8>>>,
}

impl PackRange {
    /// Whether chunk `entry` of `pack` lies within the bytes this range reads.
    fn holds(&self, pack: &str, entry: &pack::Entry) -> bool {
        let range = entry.range();
        *self.pack == *pack && range.start >= self.start && range.end <= self.start + COMPARE_RANGE
    }

    /// The stored bytes of chunk `entry` (within this range) once they are here: fewer when
    /// the pack ends before it.
    fn stored(&self, entry: &pack::Entry) -> io::Result<Vec<u8>> {
        let read = self.bytes.get_or_init(|| {
            let fetch = self.fetch.lock().expect("pack range lock").take();
            fetch.expect("fetched once").bytes()
        });
        let read = read
            .as_ref()
            .map_err(|e| io::Error::new(e.kind(), e.to_string()))?;
        let range = entry.range();
        let end = ((range.end - self.start) as usize).min(read.len());
        let start = ((range.start - self.start) as usize).min(end);
        Ok(read[start..end].to_vec())
    }
}

/// Reused chunks read back from a repository on a backend at once: their round trips overlap,
/// and memory stays at this many chunks' data.
const COMPARE_AHEAD: usize = 8;
/// The bytes of a pack read back with one request for the comparisons (the chunk met, and
/// those after it that the run will likely meet next: a pack holds chunks in the order a run
/// cut them).
const COMPARE_RANGE: u64 = 1 << 20;

/// New chunks are fsynced this many at a time, on `SYNC_THREADS` threads: the filesystem
/// commits concurrent fsyncs together, where one at a time each waits for its own commit.
const SYNC_BATCH: usize = 64;
const SYNC_THREADS: usize = 8;

impl<W: Write> ChunkWriter<W> {
    pub fn new(
        store: Arc<ChunkStore>,
        run: Arc<Run>,
        temp: &Path,
        mut index: W,
    ) -> io::Result<Self> {
        writeln!(index, "{INDEX_HEADER}")?;
        Ok(ChunkWriter {
            chunker: Chunker::new(store.params()),
            sink: ChunkSink {
                store,
                run,
                temp: tempfile::Builder::new().prefix("file-").tempdir_in(temp)?,
                index,
                compressor: zstd::bulk::Compressor::new(crate::compress::ZSTD_LEVEL)?,
                compressed: Vec::new(),
                stored: ChunkBuffer::default(),
                unsynced: Vec::new(),
                in_flight: HashMap::new(),
                sound: HashMap::new(),
                touched: BTreeSet::new(),
                comparing: VecDeque::new(),
                range: None,
            },
        })
    }

    /// Stores the last chunks, makes every new chunk's name durable and returns the index
    /// writer.
    pub fn finish(mut self) -> io::Result<W> {
        let sink = &mut self.sink;
        self.chunker.finish(&mut |chunk| sink.store_chunk(chunk))?;
        while !sink.comparing.is_empty() {
            sink.settle_oldest()?;
        }
        sink.land()?;
        if sink.store.is_staging() {
            return Ok(self.sink.index);
        }
        for dir in &sink.touched {
            sync_dir(dir)?;
        }
        if !sink.touched.is_empty() {
            sync_dir(&sink.store.root.join(CHUNKS_DIR))?;
        }
        Ok(self.sink.index)
    }
}

impl<W: Write> ChunkSink<W> {
    fn store_chunk(&mut self, chunk: &[u8]) -> io::Result<()> {
        let id = self.store.id_of(chunk);
        let known = self
            .in_flight
            .get(&id)
            .or_else(|| self.sound.get(&id))
            .copied();
        let stored = match known {
            Some(size) => size,
            None => match self.reuse(&id, chunk)? {
                Some(size) => size,
                None => self.put(&id, chunk)?,
            },
        };
        writeln!(self.index, "{id} {} {stored}", chunk.len())?;
        if self.unsynced.len() >= SYNC_BATCH {
            self.land()?;
        }
        Ok(())
    }

    /// The stored size of `id` when the store holds it: compared with `chunk` the first time
    /// this run meets it when the run's share picks it (the stored size alone otherwise, and
    /// after that). `None` when it must be stored: missing, or found damaged (then moved to
    /// `quarantine/` first). A chunk its repository on a backend lists is reused at once and
    /// compared when it comes back (`settle_oldest`).
    fn reuse(&mut self, id: &ChunkId, chunk: &[u8]) -> io::Result<Option<u64>> {
        if let Some(size) = self.store.listed_size(id) {
            let repository = self.store.repository().expect("listed by its repository");
            let found = repository.locate(id);
            let picked = match &found {
                Some(at) => self.picks(id, |share| share.reads_pack(&at.pack)),
                None => self.picks(id, |share| share.reads(id)),
            };
            if picked {
                self.compare_later(id, chunk, found)?;
            }
            self.sound.insert(*id, size);
            return Ok(Some(size));
        }
        let Some(size) = self.store.stored_size(id) else {
            return Ok(None);
        };
        if self.picks(id, |share| share.reads(id)) {
            let found = self
                .store
                .read_chunk(id, chunk.len(), false, &mut self.stored);
            match holds(found, &self.stored, chunk) {
                Ok(()) => {}
                Err(ChunkProblem::Missing) => return Ok(None),
                Err(ChunkProblem::Damaged(_)) => {
                    self.store.set_aside(id)?;
                    self.run.added.lock().expect("run lock").repaired.push(*id);
                    return Ok(None);
                }
            }
        }
        let target = self.store.root.join(id.rel());
        let dir = crate::fs::parent_dir(&target).to_path_buf();
        self.run.reused_dirs.lock().expect("run lock").insert(dir);
        self.sound.insert(*id, size);
        Ok(Some(size))
    }

    /// Whether this run compares the reused chunk `id` with its data: the first time it meets
    /// it, when its share (`reads`) picks it.
    fn picks(&self, id: &ChunkId, reads: impl FnOnce(&Selection) -> bool) -> bool {
        let first = self.run.checked.lock().expect("run lock").insert(*id);
        let picked = first && self.run.compare.as_ref().is_none_or(reads);
        if picked {
            *self.run.compared.lock().expect("run lock") += 1;
        }
        picked
    }

    /// Starts reading chunk `id` back from the repository this store stages for (`found`: its
    /// place in a pack), to compare with `chunk` when it comes; waits for the oldest beyond
    /// `COMPARE_AHEAD`.
    fn compare_later(
        &mut self,
        id: &ChunkId,
        chunk: &[u8],
        found: Option<pack::Location>,
    ) -> io::Result<()> {
        let repository = self.store.repository().expect("listed by its repository");
        let from = match found {
            None => ReadBack::Chunk(
                repository
                    .fetch(id, chunk.len())
                    .expect("a repository on a backend"),
            ),
            Some(at) => {
                let current = self.range.as_ref().filter(|r| r.holds(&at.pack, &at.entry));
                let range = match current {
                    Some(range) => range.clone(),
                    None => {
                        let start = at.entry.offset.into();
                        let fetch = repository
                            .fetch_range(&at.pack, start..start + COMPARE_RANGE, Vec::new())
                            .expect("a repository on a backend");
                        let range = Arc::new(PackRange {
                            pack: at.pack.clone(),
                            start,
                            fetch: Mutex::new(Some(fetch)),
                            bytes: OnceLock::new(),
                        });
                        self.range = Some(range.clone());
                        range
                    }
                };
                ReadBack::Packed(range, at.entry)
            }
        };
        self.comparing.push_back(Comparison {
            id: *id,
            content: chunk.to_vec(),
            from,
        });
        if self.comparing.len() > COMPARE_AHEAD {
            self.settle_oldest()?;
        }
        Ok(())
    }

    /// Compares the oldest chunk read back from the repository: one found missing is stored
    /// again; one found damaged is set aside there first (`aside.rs`). Both go up with the
    /// run's new chunks, before its manifest.
    fn settle_oldest(&mut self) -> io::Result<()> {
        let Some(Comparison { id, content, from }) = self.comparing.pop_front() else {
            return Ok(());
        };
        let repository = self.store.repository().expect("listed by its repository");
        let stored = match from {
            ReadBack::Chunk(fetch) => fetch.bytes(),
            ReadBack::Packed(range, entry) => range.stored(&entry),
        };
        // Damage is what the bytes say; a request that failed (after the backend's retries)
        // fails the run rather than set a sound chunk aside.
        let found = match stored {
            Ok(stored) => {
                repository.decode_stored(&id, content.len(), &stored, false, &mut self.stored)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ChunkProblem::Missing),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot read chunk `{id}` back from the repository: {e}"),
                ))
            }
        };
        match holds(found, &self.stored, &content) {
            Ok(()) => return Ok(()),
            Err(ChunkProblem::Missing) => {}
            Err(ChunkProblem::Damaged(_)) => {
                repository.set_aside(&id)?;
                self.run.added.lock().expect("run lock").repaired.push(id);
            }
        }
        self.put(&id, &content).map(drop)
    }

    /// Writes a new chunk, compressed, into this file's temporary directory; `land` makes it
    /// durable and gives it its name.
    fn put(&mut self, id: &ChunkId, chunk: &[u8]) -> io::Result<u64> {
        self.compressed.clear();
        self.compressed
            .reserve(zstd::zstd_safe::compress_bound(chunk.len()));
        self.compressor
            .compress_to_buffer(chunk, &mut self.compressed)?;
        let stored = self.store.to_store(id, &self.compressed)?;
        let mut file = create_private_file(&self.temp.path().join(id.to_string()))?;
        file.write_all(&stored)?;
        let stored = stored.len() as u64;
        self.unsynced.push((*id, chunk.len(), file));
        self.in_flight.insert(*id, stored);
        self.run.written.lock().expect("run lock").insert(*id);
        let mut added = self.run.added.lock().expect("run lock");
        added.chunks += 1;
        added.bytes += stored;
        Ok(stored)
    }

    /// Fsyncs the new chunks (several at once), then renames each to its name (a concurrent
    /// run storing the same chunk renames identical bytes over it): a name always holds a
    /// whole chunk. A staging store is not synced: it holds chunks only until they are sent
    /// (what makes them durable is the repository), and a crash discards it with its run.
    fn land(&mut self) -> io::Result<()> {
        let batch = std::mem::take(&mut self.unsynced);
        if !self.store.is_staging() {
            let per_thread = batch.len().div_ceil(SYNC_THREADS).max(1);
            std::thread::scope(|scope| {
                let syncing: Vec<_> = batch
                    .chunks(per_thread)
                    .map(|part| {
                        scope.spawn(move || part.iter().try_for_each(|(_, _, f)| f.sync_all()))
                    })
                    .collect();
                syncing.into_iter().try_for_each(|t| {
                    t.join()
                        .unwrap_or_else(|_| Err(io::Error::other("panicked")))
                })
            })?;
        }
        for (id, len, _) in &batch {
            let target = self.store.root.join(id.rel());
            let dir = crate::fs::parent_dir(&target).to_path_buf();
            if !self.touched.contains(&dir) {
                fan_out_dir(&dir)?;
            }
            fs::rename(self.temp.path().join(id.to_string()), &target)?;
            crate::failpoint::hit("create:chunk-stored")?;
            self.store.landed(id, *len)?;
            self.touched.insert(dir);
        }
        for (id, _, _) in &batch {
            if let Some(size) = self.in_flight.remove(id) {
                self.sound.insert(*id, size);
            }
        }
        Ok(())
    }
}

/// Whether a reused chunk, as `found` read it into `stored`, holds `chunk`.
fn holds(
    found: Result<u64, ChunkProblem>,
    stored: &ChunkBuffer,
    chunk: &[u8],
) -> Result<(), ChunkProblem> {
    found?;
    match stored.content == chunk {
        true => Ok(()),
        false => Err(ChunkProblem::Damaged("its content differs".into())),
    }
}

/// Makes sure the fan-out directory `dir` is a real directory (made when missing): a rename
/// through a link planted there would put the chunk outside the store.
pub(super) fn fan_out_dir(dir: &Path) -> io::Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "`{}` is not a directory (a link?); wqm never writes through links in the chunk store",
                dir.display()
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => create_private_dir_all(dir),
        Err(e) => Err(e),
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

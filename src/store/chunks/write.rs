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
//! goes on (`compare.rs`), and a damaged one set aside there.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, OnceLock};

use super::compare::{holds, Comparisons, Settled};
use super::index::INDEX_HEADER;
use super::runs::{RunTemp, TempDir};
use super::Selection;
use super::{object_name, ChunkBuffer, ChunkId, ChunkProblem, ChunkStore, Chunker, LocalPacker};
use super::{CHUNKS_DIR, STORE_DIR};
use crate::backend::local::LocalBackend;

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
/// `make_durable`), the packs its new chunks go into in a store of pack files, and what it
/// added.
#[derive(Debug, Default)]
pub struct Run {
    compare: Option<Selection>,
    checked: Mutex<HashSet<ChunkId>>,
    compared: Mutex<u64>,
    written: Mutex<HashSet<ChunkId>>,
    reused_dirs: Mutex<BTreeSet<String>>,
    added: Mutex<Added>,
    /// Made when the run's first file is written: `None` for a store of loose chunks.
    packer: OnceLock<Option<Arc<LocalPacker>>>,
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

    /// Makes every chunk the manifest will name durable, after the last file was written: in a
    /// store of pack files the pack filling is closed (fsynced, named, then its index); the
    /// names of the loose chunks this run reused too, since another run renamed them and may
    /// have died before syncing their directories (each directory once per run, then
    /// `chunks/`).
    pub fn make_durable(&self, store: &ChunkStore) -> io::Result<()> {
        if let Some(Some(packer)) = self.packer.get() {
            // The packs' indexes and trailers are what the store grew by beyond the chunks.
            let overhead = packer.finish()?;
            self.added.lock().expect("run lock").bytes += overhead;
        }
        let dirs = std::mem::take(&mut *self.reused_dirs.lock().expect("run lock"));
        sync_dirs(store.files()?, &dirs)
    }

    /// The packs this run's new chunks go into (`None`: `store` keeps them loose), noted for
    /// its own later lookups and its verification.
    fn packer_of(&self, store: &ChunkStore) -> Option<Arc<LocalPacker>> {
        self.packer
            .get_or_init(|| store.packer().map(|p| Arc::new(p.remembering())))
            .clone()
    }

    /// Counts chunk `id`, `stored` bytes in the store, as stored by this run.
    fn note_stored(&self, id: &ChunkId, stored: u64) {
        self.written.lock().expect("run lock").insert(*id);
        let mut added = self.added.lock().expect("run lock");
        added.chunks += 1;
        added.bytes += stored;
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
    landing: Landing,
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
    touched: BTreeSet<String>,
    /// Chunks reused from the repository on a backend being read back to compare.
    comparing: Comparisons,
}

/// Where a file's new chunks go.
enum Landing {
    /// Into the run's packs, in a store of pack files (written before the manifest:
    /// `Run::make_durable`).
    Packs(Arc<LocalPacker>),
    /// Into this file's own directory in the run's temporary directory (files written side by
    /// side, a pipelined create, may store the same new chunk at the same moment), then
    /// fsynced and renamed to their names (`land`).
    Loose(TempDir),
}

/// New chunks are fsynced this many at a time, on `SYNC_THREADS` threads: the filesystem
/// commits concurrent fsyncs together, where one at a time each waits for its own commit.
const SYNC_BATCH: usize = 64;
const SYNC_THREADS: usize = 8;

impl<W: Write> ChunkWriter<W> {
    pub fn new(
        store: Arc<ChunkStore>,
        run: Arc<Run>,
        temp: &RunTemp,
        mut index: W,
    ) -> io::Result<Self> {
        writeln!(index, "{INDEX_HEADER}")?;
        let landing = match run.packer_of(&store) {
            Some(packer) => Landing::Packs(packer),
            None => Landing::Loose(temp.file_dir()?),
        };
        Ok(ChunkWriter {
            chunker: Chunker::new(store.params()),
            sink: ChunkSink {
                store,
                run,
                landing,
                index,
                compressor: zstd::bulk::Compressor::new(crate::compress::ZSTD_LEVEL)?,
                compressed: Vec::new(),
                stored: ChunkBuffer::default(),
                unsynced: Vec::new(),
                in_flight: HashMap::new(),
                sound: HashMap::new(),
                touched: BTreeSet::new(),
                comparing: Comparisons::default(),
            },
        })
    }

    /// Stores the last chunks, makes every new chunk's name durable and returns the index
    /// writer.
    pub fn finish(mut self) -> io::Result<W> {
        let sink = &mut self.sink;
        self.chunker.finish(&mut |chunk| sink.store_chunk(chunk))?;
        if let Some(repository) = sink.store.repository().cloned() {
            while let Some(settled) = sink
                .comparing
                .settle_oldest(&repository, &mut sink.stored)?
            {
                sink.settled(settled)?;
            }
        }
        sink.land()?;
        if sink.store.is_staging() {
            return Ok(self.sink.index);
        }
        sync_dirs(sink.store.files()?, &sink.touched)?;
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
    /// after that). `None` when it must be stored; one found missing or damaged when compared is
    /// stored again here (`store_again`). A chunk its repository on a backend lists is reused
    /// at once and compared when it comes back (`compare.rs`).
    fn reuse(&mut self, id: &ChunkId, chunk: &[u8]) -> io::Result<Option<u64>> {
        if let Some(size) = self.store.listed_size(id) {
            let repository = self.store.repository().expect("listed by its repository");
            let found = repository.locate(id);
            let picked = match &found {
                Some(at) => self.picks(id, |share| share.reads_pack(&at.pack)),
                None => self.picks(id, |share| share.reads(id)),
            };
            if picked {
                let repository = repository.clone();
                let settled =
                    self.comparing
                        .start(&repository, id, chunk, found, &mut self.stored)?;
                if let Some(settled) = settled {
                    self.settled(settled)?;
                }
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
            if let Err(problem) = holds(found, &self.stored, chunk) {
                return self.store_again(*id, chunk, problem, false).map(Some);
            }
        }
        // A loose chunk's name another run may not have synced yet (one in a pack of a store
        // synced down from S3 was made durable by whatever wrote it there).
        if self.store.locate(id).is_none() {
            let dir = fan_out_dir(id);
            self.run.reused_dirs.lock().expect("run lock").insert(dir);
        }
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

    /// What a comparison with the repository found: a chunk that is not sound is stored again.
    fn settled(&mut self, (id, content, found): Settled) -> io::Result<()> {
        match found {
            Ok(()) => Ok(()),
            Err(problem) => self.store_again(id, &content, problem, true).map(drop),
        }
    }

    /// Stores chunk `id` (`content`) again, its stored size: found missing, or damaged (then set
    /// aside first where it was found: in this store, or `listed` in the repository this store
    /// stages for, whose new copy the run sends before its manifest).
    fn store_again(
        &mut self,
        id: ChunkId,
        content: &[u8],
        problem: ChunkProblem,
        listed: bool,
    ) -> io::Result<u64> {
        if let ChunkProblem::Damaged(_) = problem {
            let found_in = match listed {
                true => self.store.repository().expect("listed by its repository"),
                false => &self.store,
            };
            found_in.set_aside(&id)?;
            self.run.added.lock().expect("run lock").repaired.push(id);
        }
        self.put(&id, content)
    }

    /// Stores a new chunk, compressed: into the run's packs in a store of pack files (the
    /// run writes them before its manifest: `Run::make_durable`), else into this file's
    /// temporary directory, which `land` makes durable and gives its name.
    fn put(&mut self, id: &ChunkId, chunk: &[u8]) -> io::Result<u64> {
        self.compressed.clear();
        self.compressed
            .reserve(zstd::zstd_safe::compress_bound(chunk.len()));
        self.compressor
            .compress_to_buffer(chunk, &mut self.compressed)?;
        let stored = self.store.to_store(id, &self.compressed)?;
        let temp = match &self.landing {
            Landing::Packs(packer) => {
                // Another file of the run may have packed it a moment ago: counted once.
                let packed = packer.add(*id, chunk.len(), &stored)?;
                let stored = stored.len() as u64;
                if packed {
                    self.run.note_stored(id, stored);
                }
                self.sound.insert(*id, stored);
                return Ok(stored);
            }
            Landing::Loose(temp) => temp,
        };
        let mut file = temp
            .files()
            .create_new_blocking(&temp.name_of(&id.to_string())?)?;
        file.write_all(&stored)?;
        let stored = stored.len() as u64;
        self.unsynced.push((*id, chunk.len(), file));
        self.in_flight.insert(*id, stored);
        self.run.note_stored(id, stored);
        Ok(stored)
    }

    /// Fsyncs the new chunks (several at once), then renames each to its name (a concurrent
    /// run storing the same chunk renames identical bytes over it): a name always holds a
    /// whole chunk. A staging store is not synced: it holds chunks only until they are sent
    /// (what makes them durable is the repository), and a crash discards it with its run.
    fn land(&mut self) -> io::Result<()> {
        let Landing::Loose(temp) = &self.landing else {
            // Packed chunks are the run's packer's to make durable.
            return Ok(());
        };
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
        let files = temp.files();
        for (id, len, _) in &batch {
            let from = temp.name_of(&id.to_string())?;
            files.rename_over_blocking(&from, &crate::backend::Name::new(object_name(id))?)?;
            crate::failpoint::hit("create:chunk-stored")?;
            self.store.landed(id, *len)?;
            self.touched.insert(fan_out_dir(id));
        }
        for (id, _, _) in &batch {
            if let Some(size) = self.in_flight.remove(id) {
                self.sound.insert(*id, size);
            }
        }
        Ok(())
    }
}

/// The fan-out directory chunk `id` is named in (`.wqm-chunks/chunks/ab`).
pub(super) fn fan_out_dir(id: &ChunkId) -> String {
    let name = object_name(id);
    name[..name.rfind('/').expect("a chunk's name has directories")].to_string()
}

/// Makes the names in the fan-out directories `dirs` durable, then `chunks/` itself (a
/// fan-out directory is made, unsynced, by the run that lands its first chunk, which may die
/// before syncing it).
pub(super) fn sync_dirs(files: &LocalBackend, dirs: &BTreeSet<String>) -> io::Result<()> {
    for dir in dirs {
        files.sync_dir_blocking(dir)?;
    }
    if !dirs.is_empty() {
        files.sync_dir_blocking(&format!("{STORE_DIR}/{CHUNKS_DIR}"))?;
    }
    Ok(())
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

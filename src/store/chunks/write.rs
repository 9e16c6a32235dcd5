//! Writing a chunked file: chunks into the store, the index into the backup.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::index::INDEX_HEADER;
use super::{ChunkId, ChunkStore, Chunker, CHUNKS_DIR};
use crate::fs::{create_private_dir_all, create_private_file, sync_dir};

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
    /// This file's own directory in the run's temporary directory: files written side by side
    /// (a pipelined create) may store the same new chunk at the same moment.
    temp: tempfile::TempDir,
    index: W,
    compressor: zstd::bulk::Compressor<'static>,
    compressed: Vec<u8>,
    /// New chunks written in the temporary directory, not yet fsynced nor named, and their
    /// stored sizes (a chunk met again meanwhile is not written twice).
    unsynced: Vec<(ChunkId, File)>,
    in_flight: HashMap<ChunkId, u64>,
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
                temp: tempfile::Builder::new().prefix("file-").tempdir_in(temp)?,
                index,
                compressor: zstd::bulk::Compressor::new(crate::compress::ZSTD_LEVEL)?,
                compressed: Vec::new(),
                unsynced: Vec::new(),
                in_flight: HashMap::new(),
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

    /// Writes a new chunk, compressed, into this file's temporary directory; `land` makes it
    /// durable and gives it its name.
    fn put(&mut self, id: &ChunkId, chunk: &[u8]) -> io::Result<u64> {
        self.compressed.clear();
        self.compressed
            .reserve(zstd::zstd_safe::compress_bound(chunk.len()));
        self.compressor
            .compress_to_buffer(chunk, &mut self.compressed)?;
        let mut file = create_private_file(&self.temp.path().join(id.to_string()))?;
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
            fs::rename(self.temp.path().join(id.to_string()), &target)?;
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

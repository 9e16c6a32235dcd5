//! Reading a chunked file: its chunks in order.

use std::io::{self, BufRead, Read};
use std::sync::Arc;

use super::prefetch::Prefetch;
use super::{ChunkBuffer, ChunkId, ChunkProblem, ChunkStore, IndexReader};

/// A chunked file's content: its index read line by line from `index`, each chunk read from the
/// store as it comes, its length checked and (with `check_names`) its content against its name.
/// A reader that does not check names must check the whole content against the manifest's
/// sha256, as every restore and export does. Memory: one chunk, and from a store on a backend
/// what `Prefetch` holds (two windows of stored chunks).
pub struct ChunkReader<R> {
    store: Arc<ChunkStore>,
    chunks: Chunks<R>,
    check_names: bool,
    buffer: ChunkBuffer,
    position: usize,
}

/// Where the chunks come from: a local store as the index names them, or fetched ahead from a
/// backend.
enum Chunks<R> {
    Local(IndexReader<R>),
    Remote(Prefetch<IndexReader<R>>),
}

impl<R: BufRead> ChunkReader<R> {
    pub fn new(store: Arc<ChunkStore>, index: R, check_names: bool) -> io::Result<Self> {
        let index = IndexReader::new(index)?;
        let chunks = match store.is_remote() {
            false => Chunks::Local(index),
            true => Chunks::Remote(Prefetch::new(store.clone(), index)),
        };
        Ok(ChunkReader {
            store,
            chunks,
            check_names,
            buffer: ChunkBuffer::default(),
            position: 0,
        })
    }

    /// The next chunk into `buffer`; false at the end.
    fn next_chunk(&mut self) -> io::Result<bool> {
        let (line, read) = match &mut self.chunks {
            Chunks::Local(index) => {
                let Some(line) = index.next_line()? else {
                    return Ok(false);
                };
                let read =
                    self.store
                        .read_chunk(&line.id, line.len, self.check_names, &mut self.buffer);
                (line, read)
            }
            Chunks::Remote(prefetch) => {
                let Some((line, stored)) = prefetch.next_stored()? else {
                    return Ok(false);
                };
                let read = stored.and_then(|stored| {
                    self.store.decode_stored(
                        &line.id,
                        line.len,
                        stored,
                        self.check_names,
                        &mut self.buffer,
                    )
                });
                (line, read)
            }
        };
        read.map_err(|problem| chunk_error(&line.id, &problem))?;
        Ok(true)
    }
}

impl<R: BufRead> Read for ChunkReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.position == self.buffer.content.len() {
            if !self.next_chunk()? {
                return Ok(0);
            }
            self.position = 0;
        }
        let content = &self.buffer.content;
        let n = buf.len().min(content.len() - self.position);
        buf[..n].copy_from_slice(&content[self.position..self.position + n]);
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

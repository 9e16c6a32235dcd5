//! Reading a chunked file: its chunks in order, each checked against its name.

use std::io::{self, BufRead, Read};
use std::sync::Arc;

use super::{ChunkId, ChunkProblem, ChunkStore, IndexReader};

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

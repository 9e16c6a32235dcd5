//! Reading a chunked file: its chunks in order.

use std::io::{self, BufRead, Read};
use std::sync::Arc;

use super::{ChunkBuffer, ChunkId, ChunkProblem, ChunkStore, IndexReader};

/// A chunked file's content: its index read line by line from `index`, each chunk read from the
/// store as it comes, its length checked and (with `check_names`) its content against its name.
/// A reader that does not check names must check the whole content against the manifest's
/// sha256, as every restore and export does. Memory: one chunk.
pub struct ChunkReader<R> {
    store: Arc<ChunkStore>,
    index: IndexReader<R>,
    check_names: bool,
    buffer: ChunkBuffer,
    position: usize,
}

impl<R: BufRead> ChunkReader<R> {
    pub fn new(store: Arc<ChunkStore>, index: R, check_names: bool) -> io::Result<Self> {
        Ok(ChunkReader {
            store,
            index: IndexReader::new(index)?,
            check_names,
            buffer: ChunkBuffer::default(),
            position: 0,
        })
    }
}

impl<R: BufRead> Read for ChunkReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.position == self.buffer.content.len() {
            let Some(line) = self.index.next_line()? else {
                return Ok(0);
            };
            self.position = 0;
            self.store
                .read_chunk(&line.id, line.len, self.check_names, &mut self.buffer)
                .map_err(|problem| chunk_error(&line.id, &problem))?;
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

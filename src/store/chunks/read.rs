//! Reading a chunked file: its chunks in order.

use std::collections::VecDeque;
use std::io::{self, BufRead, Read};
use std::sync::Arc;

use super::index::IndexLine;
use super::{ChunkBuffer, ChunkId, ChunkProblem, ChunkStore, Fetch, IndexReader};

/// How many chunks of a store on a backend are fetched ahead of the one being read: each is a
/// round trip, and one at a time a restore from S3 waits for every one of them in turn.
const AHEAD: usize = 8;

/// A chunked file's content: its index read line by line from `index`, each chunk read from the
/// store as it comes, its length checked and (with `check_names`) its content against its name.
/// A reader that does not check names must check the whole content against the manifest's
/// sha256, as every restore and export does. Memory: one chunk, and from a store on a backend
/// the stored bytes of the `AHEAD` chunks fetched meanwhile.
pub struct ChunkReader<R> {
    store: Arc<ChunkStore>,
    index: IndexReader<R>,
    check_names: bool,
    buffer: ChunkBuffer,
    position: usize,
    /// The next chunks of a store on a backend, already being fetched.
    ahead: VecDeque<(IndexLine, Fetch)>,
}

impl<R: BufRead> ChunkReader<R> {
    pub fn new(store: Arc<ChunkStore>, index: R, check_names: bool) -> io::Result<Self> {
        Ok(ChunkReader {
            store,
            index: IndexReader::new(index)?,
            check_names,
            buffer: ChunkBuffer::default(),
            position: 0,
            ahead: VecDeque::new(),
        })
    }

    /// The next chunk: from the store as it comes, or (on a backend) the oldest of the fetches
    /// kept `AHEAD` in flight.
    fn next_chunk(&mut self) -> io::Result<bool> {
        while self.ahead.len() < AHEAD {
            let Some(line) = self.index.next_line()? else {
                break;
            };
            match self.store.fetch(&line.id, line.len) {
                Some(fetch) => self.ahead.push_back((line, fetch)),
                None => {
                    // A local store: read it now.
                    self.store
                        .read_chunk(&line.id, line.len, self.check_names, &mut self.buffer)
                        .map_err(|problem| chunk_error(&line.id, &problem))?;
                    return Ok(true);
                }
            }
        }
        let Some((line, fetch)) = self.ahead.pop_front() else {
            return Ok(false);
        };
        self.store
            .read_fetched(
                &line.id,
                line.len,
                fetch,
                self.check_names,
                &mut self.buffer,
            )
            .map_err(|problem| chunk_error(&line.id, &problem))?;
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

//! Reading a chunked file: its chunks in order.

use std::collections::VecDeque;
use std::io::{self, BufRead, Read};
use std::ops::Range;
use std::sync::Arc;

use super::index::IndexLine;
use super::{ChunkBuffer, ChunkId, ChunkProblem, ChunkStore, Fetch, IndexReader};

/// How many requests for a store on a backend are kept in flight ahead of the chunk being
/// read: each is a round trip, and one at a time a restore from S3 waits for every one of them
/// in turn.
const AHEAD: usize = 8;

/// The most bytes one request of a run fetches: a file's chunks that follow each other in a pack
/// are fetched together, since a create packs a file's new chunks in the order it has them.
const RUN_BYTES: u64 = 1 << 20;
/// The most chunks one request brings (a file of one chunk over and over is one run).
const RUN_CHUNKS: usize = 256;

/// A chunked file's content: its index read line by line from `index`, each chunk read from the
/// store as it comes, its length checked and (with `check_names`) its content against its name.
/// A reader that does not check names must check the whole content against the manifest's
/// sha256, as every restore and export does. Memory: one chunk, and from a store on a backend
/// the stored bytes of the `AHEAD` requests (each at most `RUN_BYTES`) in flight meanwhile.
pub struct ChunkReader<R> {
    store: Arc<ChunkStore>,
    index: IndexReader<R>,
    check_names: bool,
    buffer: ChunkBuffer,
    position: usize,
    /// An index line read ahead that did not join the run before it.
    peeked: Option<IndexLine>,
    /// The next requests of a store on a backend, already on their way: the chunks each
    /// brings and where each is in its bytes.
    ahead: VecDeque<(Run, Fetch)>,
    /// The chunks of the request being read, and its bytes.
    current: Run,
    fetched: Vec<u8>,
}

/// The chunks one request brings, each with where its stored bytes are in what it brings
/// (`None`: all of it, a loose chunk).
type Run = VecDeque<(IndexLine, Option<Range<usize>>)>;

impl<R: BufRead> ChunkReader<R> {
    pub fn new(store: Arc<ChunkStore>, index: R, check_names: bool) -> io::Result<Self> {
        Ok(ChunkReader {
            store,
            index: IndexReader::new(index)?,
            check_names,
            buffer: ChunkBuffer::default(),
            position: 0,
            peeked: None,
            ahead: VecDeque::new(),
            current: Run::new(),
            fetched: Vec::new(),
        })
    }

    fn next_line(&mut self) -> io::Result<Option<IndexLine>> {
        match self.peeked.take() {
            Some(line) => Ok(Some(line)),
            None => self.index.next_line(),
        }
    }

    /// The next chunk: from a local store as it comes, or from the requests kept `AHEAD` in
    /// flight on a backend.
    fn next_chunk(&mut self) -> io::Result<bool> {
        loop {
            if let Some((line, range)) = self.current.pop_front() {
                let whole = 0..self.fetched.len();
                let decoded = match self.fetched.get(range.unwrap_or(whole)) {
                    Some(stored) => self.store.decode_stored(
                        &line.id,
                        line.len,
                        stored,
                        self.check_names,
                        &mut self.buffer,
                    ),
                    None => Err(ChunkProblem::Damaged(
                        "cannot read: its pack ends before it".to_string(),
                    )),
                };
                decoded.map_err(|problem| chunk_error(&line.id, &problem))?;
                return Ok(true);
            }
            while self.ahead.len() < AHEAD {
                let Some(line) = self.next_line()? else {
                    break;
                };
                if !self.store.is_remote() {
                    self.store
                        .read_chunk(&line.id, line.len, self.check_names, &mut self.buffer)
                        .map_err(|problem| chunk_error(&line.id, &problem))?;
                    return Ok(true);
                }
                let request = self.request(line)?;
                self.ahead.push_back(request);
            }
            let Some((run, fetch)) = self.ahead.pop_front() else {
                return Ok(false);
            };
            let first = run.front().map(|(line, _)| line.id);
            self.fetched = fetch
                .wait()
                .map_err(|problem| chunk_error(&first.expect("a run has a chunk"), &problem))?;
            self.current = run;
        }
    }

    /// The request for the chunk of `line` on a backend: in a pack, with the chunks after it
    /// that lie near it there (a run packs a file's chunks about in the order it has them),
    /// within `RUN_BYTES`, as long as what lies between them (other files' chunks, garbage) is
    /// not more than they are; loose, alone.
    fn request(&mut self, line: IndexLine) -> io::Result<(Run, Fetch)> {
        let Some(found) = self.store.locate(&line.id) else {
            let fetch = self.store.fetch(&line.id, line.len).expect("on a backend");
            let run = Run::from([(line, None)]);
            return Ok((run, fetch));
        };
        let mut span = found.entry.range();
        let mut used = u64::from(found.entry.stored);
        let mut chunks = vec![(line, found.entry.range())];
        while chunks.len() < RUN_CHUNKS {
            let Some(next) = self.next_line()? else {
                break;
            };
            let joined = self.store.locate(&next.id).and_then(|at| {
                let range = at.entry.range();
                let again = chunks.iter().any(|(_, r)| *r == range);
                let wider = span.start.min(range.start)..span.end.max(range.end);
                let more = if again { 0 } else { range.end - range.start };
                let near = wider.end - wider.start <= RUN_BYTES
                    && wider.end - wider.start <= 2 * (used + more);
                (at.pack == found.pack && near).then_some((range, wider, more))
            });
            match joined {
                Some((range, wider, more)) => {
                    chunks.push((next, range));
                    span = wider;
                    used += more;
                }
                None => {
                    self.peeked = Some(next);
                    break;
                }
            }
        }
        let within =
            |r: Range<u64>| Some((r.start - span.start) as usize..(r.end - span.start) as usize);
        let run = chunks
            .into_iter()
            .map(|(line, range)| (line, within(range)))
            .collect();
        let fetch = self
            .store
            .fetch_range(&found.pack, span)
            .expect("on a backend");
        Ok((run, fetch))
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

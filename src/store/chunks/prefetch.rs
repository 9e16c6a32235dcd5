//! The stored bytes of a list of chunks (a file's index, or chunks to copy or check), in its
//! order, fetched ahead from a store on a backend: from a store of pack files a window at a
//! time, pack by pack, near chunks with one request; from loose chunks, a few at a time.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::ops::Range;
use std::sync::Arc;

use super::index::IndexLine;
use super::pack::Location;
use super::{ChunkProblem, ChunkStore, Fetch};

/// How many chunks of a store of loose chunks on a backend are fetched ahead of the one being
/// read: each is a round trip, and one at a time a restore from S3 waits for every one of them
/// in turn.
const AHEAD: usize = 8;

/// A window of a file's index read ahead in a store of pack files: at most this many stored
/// bytes, or `WINDOW_LINES` chunks. Its chunks are fetched pack by pack, those of one pack that
/// lie near each other with one request, so a night's churn (a chunk here and there from a later
/// night's pack) costs a request per pack in the window, not one per chunk and one more for the
/// chunks after it. Two windows are in memory: the one read and the next, on its way.
const WINDOW_BYTES: u64 = 4 << 20;
const WINDOW_LINES: usize = 512;
/// The most requests a window makes (two windows are in flight): a window of chunks scattered
/// over many packs is cut short.
const MAX_REQUESTS: usize = 16;
/// Buffers kept for the next requests.
const SPARE: usize = 8;
/// The most bytes one request fetches.
const REQUEST_BYTES: u64 = 1 << 20;
/// Chunks of one pack at most this far apart are fetched with one request (what lies between
/// is read for nothing).
const GAP: u64 = 64 * 1024;

/// Index lines read ahead, and the requests that bring their chunks' stored bytes.
struct Window {
    /// Each line, its request, and where its stored bytes are in what that brings (`None`: all
    /// of it, a loose chunk).
    lines: VecDeque<(IndexLine, usize, Option<Range<usize>>)>,
    requests: Vec<Request>,
}

enum Request {
    Fetching(Fetch),
    Fetched(Result<Vec<u8>, ChunkProblem>),
}

impl Window {
    /// The buffers of the requests it fetched.
    fn buffers(self) -> impl Iterator<Item = Vec<u8>> {
        self.requests
            .into_iter()
            .filter_map(|request| match request {
                Request::Fetched(Ok(bytes)) => Some(bytes),
                _ => None,
            })
    }

    /// What request `r` brought (waiting for it).
    fn bytes(&mut self, r: usize) -> Result<&[u8], ChunkProblem> {
        let request = &mut self.requests[r];
        if let Request::Fetching(_) = request {
            let fetching = std::mem::replace(request, Request::Fetched(Ok(Vec::new())));
            if let Request::Fetching(fetch) = fetching {
                *request = Request::Fetched(fetch.wait());
            }
        }
        match request {
            Request::Fetched(Ok(bytes)) => Ok(bytes),
            Request::Fetched(Err(problem)) => Err(problem.clone()),
            Request::Fetching(_) => unreachable!("waited for above"),
        }
    }
}

/// A chunk's line and its stored bytes, or why they could not be read.
pub type Fetched<'a> = (IndexLine, Result<&'a [u8], ChunkProblem>);

/// Chunks' stored bytes fetched ahead, in the order `lines` gives them.
pub struct Prefetch<L> {
    store: Arc<ChunkStore>,
    lines: L,
    /// The window being read, and the next one, on its way.
    current: Option<Window>,
    next: Option<Window>,
    /// The buffers of windows read, for the next requests (new ones for each request leave
    /// freed ones behind in the threads' allocator arenas: RSS); at most `SPARE`.
    spare: Vec<Vec<u8>>,
    /// Lines taken from `lines` and left for the next window, with where their chunks are.
    put_back: VecDeque<(IndexLine, Option<Location>)>,
}

/// Where a `Prefetch` takes the chunks to fetch from, one at a time.
pub trait Lines {
    /// The next chunk (`None`: no more).
    fn next_line(&mut self) -> io::Result<Option<IndexLine>>;
}

impl<R: io::BufRead> Lines for super::IndexReader<R> {
    fn next_line(&mut self) -> io::Result<Option<IndexLine>> {
        super::IndexReader::next_line(self)
    }
}

impl<I: Iterator<Item = IndexLine>> Lines for std::iter::Fuse<I> {
    fn next_line(&mut self) -> io::Result<Option<IndexLine>> {
        Ok(self.next())
    }
}

impl<L: Lines> Prefetch<L> {
    /// The chunks `lines` names from `store`, on a backend.
    pub fn new(store: Arc<ChunkStore>, lines: L) -> Self {
        debug_assert!(store.is_remote());
        Prefetch {
            store,
            lines,
            current: None,
            next: None,
            spare: Vec::new(),
            put_back: VecDeque::new(),
        }
    }

    /// The next chunk's line and its stored bytes (or why they could not be read); `None` at
    /// the end.
    pub fn next_stored(&mut self) -> io::Result<Option<Fetched<'_>>> {
        // The window read now once it has no line left; planned at the start, and each time the
        // next is taken, the window after it.
        while self.current.as_ref().is_none_or(|w| w.lines.is_empty()) {
            if let Some(read) = self.current.take() {
                self.spare.extend(read.buffers());
                self.spare.truncate(SPARE);
            }
            self.current = match self.next.take() {
                Some(window) => Some(window),
                None => self.plan()?,
            };
            if self.current.is_none() {
                return Ok(None);
            }
            self.next = self.plan()?;
        }
        let window = self.current.as_mut().expect("a line left");
        let (line, request, range) = window.lines.pop_front().expect("a line left");
        let stored = window.bytes(request).and_then(|bytes| {
            let stored = match range {
                None => Some(bytes),
                Some(range) => bytes.get(range),
            };
            stored.ok_or_else(|| {
                ChunkProblem::Damaged("cannot read: its pack ends before it".to_string())
            })
        });
        Ok(Some((line, stored)))
    }

    /// The next window of the index, its requests started; `None` at its end.
    fn plan(&mut self) -> io::Result<Option<Window>> {
        let (most_lines, most_bytes) = match self.store.is_packed() {
            true => (WINDOW_LINES, WINDOW_BYTES),
            false => (AHEAD, u64::MAX),
        };
        let mut lines: Vec<(IndexLine, Option<Location>)> = Vec::new();
        let mut bytes = 0;
        while lines.len() < most_lines && bytes < most_bytes {
            let line = match self.put_back.pop_front() {
                Some(line) => line,
                None => match self.lines.next_line()? {
                    Some(line) => {
                        let found = self.store.locate(&line.id);
                        (line, found)
                    }
                    None => break,
                },
            };
            bytes += line
                .1
                .as_ref()
                .map_or(line.0.len as u64, |at| u64::from(at.entry.stored));
            lines.push(line);
        }
        if lines.is_empty() {
            return Ok(None);
        }
        // Scattered chunks (a pack each, or far apart): a shorter window, the rest for the next.
        while requests_for(&lines) > MAX_REQUESTS && lines.len() > 1 {
            let rest = lines.split_off(lines.len() / 2);
            for line in rest.into_iter().rev() {
                self.put_back.push_front(line);
            }
        }
        let mut requests = Vec::new();
        let mut slots = vec![(0, None); lines.len()];
        for (i, (line, found)) in lines.iter().enumerate() {
            if found.is_none() {
                let fetch = self.store.fetch(&line.id, line.len).expect("on a backend");
                slots[i] = (requests.len(), None);
                requests.push(Request::Fetching(fetch));
            }
        }
        for (pack, chunks) in by_pack(&lines) {
            for (span, members) in spans(&chunks) {
                let fetch = self
                    .store
                    .fetch_range(&pack, span.clone(), self.spare.pop().unwrap_or_default())
                    .expect("on a backend");
                for (i, range) in members {
                    let within =
                        (range.start - span.start) as usize..(range.end - span.start) as usize;
                    slots[*i] = (requests.len(), Some(within));
                }
                requests.push(Request::Fetching(fetch));
            }
        }
        let lines = lines
            .into_iter()
            .zip(slots)
            .map(|((line, _), (request, range))| (line, request, range))
            .collect();
        Ok(Some(Window { lines, requests }))
    }
}

/// A line of a window (its place there) and where its chunk's stored bytes are in its pack.
type Placed = (usize, Range<u64>);

/// The packed chunks of `lines`, by pack, each pack's by offset.
fn by_pack(lines: &[(IndexLine, Option<Location>)]) -> BTreeMap<Arc<str>, Vec<Placed>> {
    let mut packs: BTreeMap<Arc<str>, Vec<Placed>> = BTreeMap::new();
    for (i, (_, found)) in lines.iter().enumerate() {
        if let Some(at) = found {
            packs
                .entry(at.pack.clone())
                .or_default()
                .push((i, at.entry.range()));
        }
    }
    for chunks in packs.values_mut() {
        chunks.sort_by_key(|(_, range)| range.start);
    }
    packs
}

/// How many requests bring the chunks of `lines`: one per loose chunk, one per span of a pack.
fn requests_for(lines: &[(IndexLine, Option<Location>)]) -> usize {
    let loose = lines.iter().filter(|(_, found)| found.is_none()).count();
    loose
        + by_pack(lines)
            .values()
            .map(|chunks| spans(chunks).len())
            .sum::<usize>()
}

/// The requests for `chunks` of one pack (sorted by offset): spans of at most `REQUEST_BYTES`,
/// each chunk at most `GAP` after the one before (or the same one again), and the chunks each
/// brings.
fn spans(chunks: &[Placed]) -> Vec<(Range<u64>, &[Placed])> {
    let mut spans = Vec::new();
    let mut first = 0;
    let mut span = chunks[0].1.clone();
    for (i, (_, range)) in chunks.iter().enumerate().skip(1) {
        let near =
            range.start <= span.end + GAP && range.end.max(span.end) - span.start <= REQUEST_BYTES;
        if near {
            span.end = span.end.max(range.end);
        } else {
            spans.push((span, &chunks[first..i]));
            first = i;
            span = range.clone();
        }
    }
    spans.push((span, &chunks[first..]));
    spans
}

/// The chunks to fetch from a list (`SharedReader`).
type Listed = std::iter::Fuse<std::vec::IntoIter<IndexLine>>;

/// A list of chunks read by several threads at once, in its order: each takes the next and
/// reads it into its own buffer (decompressing and hashing on every thread). From a backend
/// they are fetched ahead (`Prefetch`: few requests for a store of pack files); locally each is
/// read as it is taken.
pub struct SharedReader {
    store: Arc<ChunkStore>,
    next: std::sync::Mutex<Next>,
}

enum Next {
    Local(Listed),
    Remote(Box<Prefetch<Listed>>),
}

impl SharedReader {
    /// `chunks` (each with its content length) of `store`.
    pub fn new(store: Arc<ChunkStore>, chunks: Vec<(super::ChunkId, usize)>) -> Self {
        let lines: Listed = chunks
            .into_iter()
            .map(|(id, len)| IndexLine { id, len, stored: 0 })
            .collect::<Vec<_>>()
            .into_iter()
            .fuse();
        let next = match store.is_remote() {
            false => Next::Local(lines),
            true => Next::Remote(Box::new(Prefetch::new(store.clone(), lines))),
        };
        SharedReader {
            store,
            next: std::sync::Mutex::new(next),
        }
    }

    /// The next chunk read into `buffer` (its length checked, its content against its name):
    /// its line and what reading it found; `None` at the end.
    pub fn next_into(
        &self,
        buffer: &mut super::ChunkBuffer,
    ) -> io::Result<Option<(IndexLine, Result<u64, ChunkProblem>)>> {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *next {
            Next::Local(lines) => {
                let Some(line) = lines.next() else {
                    return Ok(None);
                };
                drop(next);
                let read = self.store.read_chunk(&line.id, line.len, true, buffer);
                Ok(Some((line, read)))
            }
            Next::Remote(prefetch) => {
                let Some((line, stored)) = prefetch.next_stored()? else {
                    return Ok(None);
                };
                let stored = stored.map(<[u8]>::to_vec);
                drop(next);
                let read = stored.and_then(|stored| {
                    self.store
                        .decode_stored(&line.id, line.len, &stored, true, buffer)
                });
                Ok(Some((line, read)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed(ranges: &[(u64, u64)]) -> Vec<Placed> {
        ranges
            .iter()
            .enumerate()
            .map(|(i, &(a, b))| (i, a..b))
            .collect()
    }

    #[test]
    fn chunks_near_each_other_in_a_pack_are_one_request_far_ones_another() {
        let k = 1024;
        // Next to each other, the same one again, a small gap: one request.
        let near = placed(&[
            (0, 60 * k),
            (60 * k, 100 * k),
            (60 * k, 100 * k),
            (130 * k, 190 * k),
        ]);
        let found = spans(&near);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, 0..190 * k);
        assert_eq!(found[0].1.len(), 4);
        // More than `GAP` apart: two; a span never passes `REQUEST_BYTES`.
        let far = placed(&[(0, 60 * k), (60 * k + GAP + 1, 200 * k)]);
        assert_eq!(spans(&far).len(), 2);
        let long: Vec<(u64, u64)> = (0..40).map(|i| (i * 60 * k, (i + 1) * 60 * k)).collect();
        let long = placed(&long);
        let found = spans(&long);
        assert!(found
            .iter()
            .all(|(span, _)| span.end - span.start <= REQUEST_BYTES));
        assert_eq!(found.iter().map(|(_, m)| m.len()).sum::<usize>(), 40);
        assert_eq!(found.len(), 3, "2400 KiB in 1 MiB requests");
    }

    #[test]
    fn requests_count_loose_chunks_and_the_spans_of_each_pack() {
        let line = |n: u8| IndexLine {
            id: crate::store::chunks::ChunkId::of(&[n]),
            len: 1000,
            stored: 0,
        };
        let at = |pack: &str, offset: u32| {
            Some(Location {
                pack: Arc::from(pack),
                entry: crate::store::chunks::pack::Entry {
                    id: crate::store::chunks::ChunkId::of(&[0]),
                    offset,
                    stored: 1000,
                    len: 1000,
                },
            })
        };
        // Two packs (one of them in two spans) and a loose chunk.
        let lines = vec![
            (line(1), at("a", 0)),
            (line(2), at("b", 0)),
            (line(3), at("a", 1000)),
            (line(4), None),
            (line(5), at("a", 10 << 20)),
        ];
        assert_eq!(requests_for(&lines), 4);
        let packs = by_pack(&lines);
        assert_eq!(
            packs[&Arc::<str>::from("a")]
                .iter()
                .map(|(i, _)| *i)
                .collect::<Vec<_>>(),
            [0, 2, 4]
        );
    }
}

//! Reused chunks of a night to a repository on a backend (S3), read back and compared with the
//! night's data while the night goes on (`write.rs` decides which: the run's share). A loose
//! chunk is one request of its own; a packed one comes from a range of its pack, `COMPARE_RANGE`
//! read with one request for it and the chunks after it (a pack holds chunks in the order a run
//! cut them, so a night meets them in that order). At most `COMPARE_AHEAD` wait at once, each
//! with its data: their round trips overlap, and memory stays at those chunks and a range.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, OnceLock};

use super::pack;
use super::{ChunkBuffer, ChunkId, ChunkProblem, ChunkStore, Fetch};

/// Reused chunks read back from a repository on a backend at once.
const COMPARE_AHEAD: usize = 8;
/// The bytes of a pack read back with one request for the comparisons.
const COMPARE_RANGE: u64 = 1 << 20;

/// A comparison settled: the chunk, the data it must hold, and what its stored bytes hold
/// (`Ok`: the data; `Missing`; `Damaged`).
pub(super) type Settled = (ChunkId, Vec<u8>, Result<(), ChunkProblem>);

/// The comparisons of one file's writer, oldest first, and the pack range read last.
#[derive(Default)]
pub(super) struct Comparisons {
    waiting: VecDeque<Comparison>,
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

impl Comparisons {
    /// Starts reading chunk `id` back from `repository` (`found`: its place in a pack), to
    /// compare with `chunk` when it comes; settles the oldest (into `buffer`) when more than
    /// `COMPARE_AHEAD` wait.
    pub(super) fn start(
        &mut self,
        repository: &ChunkStore,
        id: &ChunkId,
        chunk: &[u8],
        found: Option<pack::Location>,
        buffer: &mut ChunkBuffer,
    ) -> io::Result<Option<Settled>> {
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
        self.waiting.push_back(Comparison {
            id: *id,
            content: chunk.to_vec(),
            from,
        });
        match self.waiting.len() > COMPARE_AHEAD {
            true => self.settle_oldest(repository, buffer),
            false => Ok(None),
        }
    }

    /// The oldest comparison, its bytes waited for and compared (`None`: none waits). Damage is
    /// what the bytes say; a request that failed (after the backend's retries) fails the run
    /// rather than set a sound chunk aside.
    pub(super) fn settle_oldest(
        &mut self,
        repository: &ChunkStore,
        buffer: &mut ChunkBuffer,
    ) -> io::Result<Option<Settled>> {
        let Some(Comparison { id, content, from }) = self.waiting.pop_front() else {
            return Ok(None);
        };
        let stored = match from {
            ReadBack::Chunk(fetch) => fetch.bytes(),
            ReadBack::Packed(range, entry) => range.stored(&entry),
        };
        let found = match stored {
            Ok(stored) => repository.decode_stored(&id, content.len(), &stored, false, buffer),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ChunkProblem::Missing),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot read chunk `{id}` back from the repository: {e}"),
                ))
            }
        };
        let holds = holds(found, buffer, &content);
        Ok(Some((id, content, holds)))
    }
}

/// Whether a reused chunk, as `found` read it into `stored`, holds `chunk`.
pub(super) fn holds(
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

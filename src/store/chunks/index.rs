//! The index of a chunked file: which chunks, in order, read line by line.

use std::io::{self, BufRead, Read};

use super::{ChunkId, LARGEST_CHUNK};

/// The first line of every index file.
pub(super) const INDEX_HEADER: &str = "wqm-chunk-index 1";

/// One line of an index: a chunk, its content length and its stored (compressed) size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexLine {
    pub id: ChunkId,
    pub len: usize,
    pub stored: u64,
}

impl IndexLine {
    fn parse(line: &str) -> Option<Self> {
        let mut fields = line.split(' ');
        let id = ChunkId::parse(fields.next()?)?;
        let len: usize = fields.next()?.parse().ok()?;
        let stored: u64 = fields.next()?.parse().ok()?;
        (fields.next().is_none() && (1..=LARGEST_CHUNK).contains(&len)).then_some(IndexLine {
            id,
            len,
            stored,
        })
    }
}

/// The text of an index naming `lines`, in order (as `ChunkWriter` writes one).
pub fn index_text(lines: impl IntoIterator<Item = IndexLine>) -> Vec<u8> {
    let mut text = format!("{INDEX_HEADER}\n");
    for line in lines {
        text.push_str(&format!("{} {} {}\n", line.id, line.len, line.stored));
    }
    text.into_bytes()
}

/// Reads an index line by line (constant memory, however long the file).
pub struct IndexReader<R> {
    inner: R,
    line: String,
    number: usize,
}

impl<R: BufRead> IndexReader<R> {
    pub fn new(mut inner: R) -> io::Result<Self> {
        let mut header = String::new();
        (&mut inner)
            .take(INDEX_HEADER.len() as u64 + 1)
            .read_line(&mut header)?;
        if header.trim_end_matches('\n') != INDEX_HEADER {
            return Err(invalid_index("it does not start with `wqm-chunk-index 1`"));
        }
        Ok(IndexReader {
            inner,
            line: String::new(),
            number: 1,
        })
    }

    /// The next chunk, `None` at the end.
    pub fn next_line(&mut self) -> io::Result<Option<IndexLine>> {
        self.line.clear();
        // A line is 64 hex digits and two numbers: anything longer is not an index.
        let read = (&mut self.inner).take(128).read_line(&mut self.line)?;
        if read == 0 {
            return Ok(None);
        }
        self.number += 1;
        let text = self
            .line
            .strip_suffix('\n')
            .ok_or_else(|| invalid_index(&format!("line {} is cut short", self.number)))?;
        IndexLine::parse(text)
            .map(Some)
            .ok_or_else(|| invalid_index(&format!("line {} is not a chunk", self.number)))
    }
}

fn invalid_index(reason: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("not a valid chunk index: {reason}"),
    )
}

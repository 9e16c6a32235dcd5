//! One file of a staged backup streamed in: its content hashed (sha256), compressed or cut
//! into chunks for the chunk store, the stored bytes hashed with the configured algorithm and
//! written, all in one pass; the kernel asked to write back as it goes.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::Bytes;

use super::chunks::{ChunkStore, ChunkWriter, Run, RunTemp};
use super::seal::{MaybeSealed, Seal};
use crate::checksum::{Algorithm, Digester, Digests, HashingWriter};
use crate::compress::{self, Encoder};
use crate::crypto::Identity;
use crate::format::layout::LayoutError;
use crate::format::manifest::{FileEntry, FileKind};

/// Streams one file into a staged backup: hashes the content (sha256), compresses (or cuts into
/// chunks for the chunk store), hashes the stored bytes with the configured algorithm, and
/// writes, all in one pass.
pub struct FileSink {
    rel: String,
    path: PathBuf,
    kind: FileKind,
    compression: compress::Stored,
    algorithm: Algorithm,
    content: ContentHash,
    body: Body,
    /// Encrypted as written: the writing thread runs the cipher too.
    encrypting: bool,
}

/// The content's sha256: computed by the thread that writes, or by a thread of its own
/// (`FileSink::from_a_transfer`), which a download hands its pieces to so that hashing
/// and compressing run side by side instead of one after the other.
enum ContentHash {
    Inline(Digester),
    Beside {
        pieces: SyncSender<Bytes>,
        hasher: JoinHandle<Digests>,
    },
}

/// Pieces waiting for the content's hasher: it keeps up with compression, so few.
const PIECES_FOR_HASHER: usize = 8;

impl ContentHash {
    fn new() -> Self {
        ContentHash::Inline(Digester::new(&[Algorithm::Sha256]))
    }

    fn update(&mut self, piece: &[u8]) {
        match self {
            ContentHash::Inline(digester) => digester.update(piece),
            ContentHash::Beside { .. } => self.hand_over(Bytes::copy_from_slice(piece)),
        }
    }

    /// `piece` hashed without a copy when on a thread of its own.
    fn hand_over(&mut self, piece: Bytes) {
        match self {
            ContentHash::Inline(digester) => digester.update(&piece),
            // The hasher only stops when the sender is gone.
            ContentHash::Beside { pieces, .. } => {
                let _ = pieces.send(piece);
            }
        }
    }

    fn finish(self) -> Digests {
        match self {
            ContentHash::Inline(digester) => digester.finish(),
            ContentHash::Beside { pieces, hasher } => {
                drop(pieces);
                hasher.join().expect("the content hasher panicked")
            }
        }
    }
}

/// The stored bytes of a file, hashed as they are written, then encrypted in an encrypted
/// repository.
type Stored = HashingWriter<MaybeSealed<BufWriter<WritebackFile>>>;

enum Body {
    /// The content itself, compressed or not.
    Encoded(Encoder<Stored>),
    /// The content's chunks go to the store; the file holds their index.
    Chunked(Box<ChunkWriter<Stored>>),
}

impl Body {
    fn finish(self) -> io::Result<Stored> {
        match self {
            Body::Encoded(encoder) => encoder.finish(),
            Body::Chunked(writer) => (*writer).finish(),
        }
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Body::Encoded(encoder) => encoder,
            Body::Chunked(writer) => &mut **writer,
        }
    }
}

/// What a file's stored bytes are made of.
pub(super) enum Encoding<'a> {
    /// The content, compressed or not.
    Plain(compress::Compression),
    /// The index of the content's chunks, which go to `store`.
    Chunked {
        store: Arc<ChunkStore>,
        run: Arc<Run>,
        temp: &'a RunTemp,
    },
}

impl FileSink {
    /// Streams into `file` (new and empty, `path` to show) the file `rel` of a backup,
    /// encrypted with `sealed`'s key bound to its identity in an encrypted repository.
    pub(super) fn new(
        rel: &str,
        path: PathBuf,
        file: File,
        kind: FileKind,
        algorithm: Algorithm,
        sealed: Option<(&Seal, &Identity)>,
        encoding: Encoding,
    ) -> Result<Self, LayoutError> {
        let file = WritebackFile {
            file,
            written: 0,
            scheduled: 0,
        };
        let buffered = BufWriter::with_capacity(1 << 20, file);
        let encrypting = sealed.is_some();
        let sealed = match sealed {
            None => Ok(MaybeSealed::Plain(buffered)),
            Some((seal, identity)) => MaybeSealed::new(buffered, Some(seal), identity),
        }
        .map_err(LayoutError::io("cannot start encrypting", &path))?;
        let stored = HashingWriter::new(sealed, &[algorithm]);
        let (body, compression) = match encoding {
            Encoding::Chunked { store, run, temp } => (
                Body::Chunked(Box::new(
                    ChunkWriter::new(store, run, temp, stored)
                        .map_err(LayoutError::io("cannot start writing", &path))?,
                )),
                compress::Stored::Chunked,
            ),
            Encoding::Plain(compression) => (
                Body::Encoded(
                    compression
                        .encoder(stored)
                        .map_err(LayoutError::io("cannot start compressing", &path))?,
                ),
                compress::Stored::Plain(compression),
            ),
        };
        Ok(FileSink {
            rel: rel.to_string(),
            path,
            kind,
            compression,
            algorithm,
            content: ContentHash::new(),
            body,
            encrypting,
        })
    }

    /// Takes the content from a download, in pieces (`write_piece`): hashed on a thread of
    /// its own and compressed with the cores the transfer leaves
    /// (`compress::workers_beside_a_transfer`), unless the writing thread encrypts: then
    /// zstd keeps a worker per core (on two cores, 4.67 against 4.83 s for the benchmark
    /// snapshot, docs/performance.md). Before anything is written.
    pub fn from_a_transfer(&mut self) -> io::Result<()> {
        if let (Body::Encoded(encoder), false) = (&mut self.body, self.encrypting) {
            encoder.set_workers(compress::workers_beside_a_transfer())?;
        }
        let (pieces, received) = sync_channel::<Bytes>(PIECES_FOR_HASHER);
        let hasher = std::thread::spawn(move || {
            let mut digester = Digester::new(&[Algorithm::Sha256]);
            for piece in received {
                digester.update(&piece);
            }
            digester.finish()
        });
        self.content = ContentHash::Beside { pieces, hasher };
        Ok(())
    }

    /// Writes `piece` of the content, handing it to the content's hasher without a copy.
    pub fn write_piece(&mut self, piece: Bytes) -> io::Result<()> {
        // Handed over first: the hasher works while the piece is compressed.
        self.content.hand_over(piece.clone());
        self.body.writer().write_all(&piece)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes, fsyncs and describes the file for the manifest.
    pub fn finish(self) -> Result<FileEntry, LayoutError> {
        let io = |action| LayoutError::io(action, &self.path);
        let stored = self.body.finish().map_err(io("cannot finish writing"))?;
        let (sealed, stored_digests) = stored.into_parts();
        let file = sealed
            .finish()
            .map_err(io("cannot finish encrypting"))?
            .into_inner()
            .map_err(|e| io("cannot write")(e.into_error()))?;
        file.file.sync_all().map_err(io("cannot sync"))?;
        let content = self.content.finish();
        Ok(FileEntry {
            path: self.rel,
            kind: self.kind,
            size: stored_digests.bytes,
            compression: self.compression,
            checksum: stored_digests.get(self.algorithm),
            content_size: content.bytes,
            content_sha256: content
                .get(Algorithm::Sha256)
                .map(|c| c.value)
                .unwrap_or_default(),
        })
    }
}

impl Write for FileSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.body.writer().write(buf)?;
        self.content.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.body.writer().flush()
    }
}

/// Writeback is started every this many bytes.
const WRITEBACK_EVERY: u64 = 8 << 20;

/// A file that asks the kernel to start writing its pages to disk every few MiB while it is
/// being written, so the final fsync waits for the tail only, not for the whole file.
struct WritebackFile {
    file: File,
    written: u64,
    scheduled: u64,
}

impl Write for WritebackFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.scheduled >= WRITEBACK_EVERY {
            start_writeback(&self.file, self.scheduled, self.written - self.scheduled);
            self.scheduled = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(target_os = "linux")]
pub(crate) fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // rustix has no `sync_file_range`: the one raw call left.
    // SAFETY: the descriptor is open for the duration of the call, which only schedules
    // writeback of the range; a failure is harmless (the final fsync still runs).
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

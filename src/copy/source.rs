//! The repository copied from: its backups' objects read as they are stored (no link followed
//! locally), and checked on the way against what the manifest says of them (`CheckedFile`) or,
//! for a chunk, against its name (`ChunkStore::read_chunk`).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::checksum::{Algorithm, Digester};
use crate::compress::{Compression, Stored};
use crate::format::layout::MANIFEST_PATH;
use crate::format::manifest::{self, FileEntry, Manifest, ManifestError};
use crate::store::chunks::{ChunkError, ChunkStore};
use crate::store::{Damaged, Repository};

/// A repository read from.
pub struct Source {
    repository: Repository,
    store: OnceLock<Arc<ChunkStore>>,
    /// Where each backup read so far has its objects (`Remote::root_of`), looked up once.
    roots: Mutex<HashMap<String, String>>,
}

impl Source {
    pub fn new(repository: Repository) -> Self {
        Source {
            repository,
            store: OnceLock::new(),
            roots: Mutex::default(),
        }
    }

    pub fn repository(&self) -> &Repository {
        &self.repository
    }

    /// The object `rel` of the repository, as a path to show.
    pub fn shown(&self, rel: &str) -> PathBuf {
        match &self.repository {
            Repository::Local(dir) => dir.join(rel),
            Repository::Remote(remote) => remote.shown(rel),
        }
    }

    /// The object `rel` (`NAME/…`), its bytes as stored. On S3 a backup a `create --force` is
    /// putting in place is read from where it was sent (`Remote::root_of`).
    pub fn open(&self, rel: &str) -> io::Result<Box<dyn Read + Send>> {
        match &self.repository {
            Repository::Local(dir) => Ok(Box::new(crate::store::open_in(dir, rel)?)),
            Repository::Remote(remote) => match rel.split_once('/') {
                Some((name, rest)) => {
                    let known = self.roots.lock().expect("not poisoned").get(name).cloned();
                    let root = match known {
                        Some(root) => root,
                        None => {
                            let root = remote.root_of(name)?;
                            let mut roots = self.roots.lock().expect("not poisoned");
                            roots.insert(name.to_string(), root.clone());
                            root
                        }
                    };
                    remote.open(&format!("{root}/{rest}"))
                }
                None => remote.open(rel),
            },
        }
    }

    /// The manifest of the backup `name`: its bytes as stored (what is copied, and compared
    /// with a destination's) and what they say, every name in it checked.
    pub fn read_manifest(&self, name: &str) -> Result<(Vec<u8>, Manifest), ManifestError> {
        let rel = format!("{name}/{MANIFEST_PATH}");
        let path = self.shown(&rel);
        let mut bytes = Vec::new();
        self.open(&rel)
            .and_then(|f| {
                f.take(manifest::MAX_MANIFEST_BYTES + 1)
                    .read_to_end(&mut bytes)
            })
            .map_err(|e| manifest::load_error(&path, e))?;
        let parsed = Manifest::read_from(&bytes[..], &path)?;
        Ok((bytes, parsed))
    }

    /// Every object of the backup `name` (files, not directories), relative to it.
    pub fn objects(&self, name: &str) -> io::Result<Vec<String>> {
        match &self.repository {
            Repository::Local(dir) => Ok(crate::store::list_in(&dir.join(name))),
            Repository::Remote(remote) => Ok(remote.backup(name)?.list()),
        }
    }

    /// The repository's chunk store, opened once (held while the source lives).
    pub fn chunk_store(&self) -> Result<Arc<ChunkStore>, ChunkError> {
        if let Some(store) = self.store.get() {
            return Ok(store.clone());
        }
        let store = match &self.repository {
            Repository::Local(dir) => ChunkStore::open_for_reading(dir)?,
            Repository::Remote(remote) => ChunkStore::open_remote(remote)?,
        };
        Ok(self.store.get_or_init(|| store).clone())
    }
}

/// Reads a stored file of a backup and checks it against its manifest entry as it goes: its
/// size (never more is read), the checksum of its stored bytes when the manifest has one, and
/// for a file stored whole its content's size and sha256 (decompressed on the side). An
/// index's content is its chunks, checked one by one as they are sent. Reaching the end
/// (`Ok(0)`) means everything matched; any mismatch is a `Damaged` inside the `io::Error`.
pub struct CheckedFile<R> {
    inner: R,
    shown: String,
    size: u64,
    read: u64,
    expected_checksum: Option<crate::checksum::Checksum>,
    /// The content's size and sha256, as the manifest says.
    expected: (u64, String),
    stored: Digester,
    content: Content,
    matched: bool,
}

/// How a file's content is checked while its stored bytes pass.
enum Content {
    /// Stored as it is: the stored bytes are the content.
    Same(Digester),
    /// zstd: decompressed into a hasher (never kept).
    Zstd(Box<zstd::stream::write::Decoder<'static, Bounded>>),
    /// A chunk index: its chunks are checked when they are sent.
    Chunks,
}

impl<R: Read> CheckedFile<R> {
    /// `inner` (the stored bytes of `entry`), checked; `shown` names it in a damage report.
    pub fn new(inner: R, entry: &FileEntry, shown: &Path) -> io::Result<Self> {
        let sha = || Digester::new(&[Algorithm::Sha256]);
        let content = match entry.compression {
            Stored::Plain(Compression::None) => Content::Same(sha()),
            Stored::Plain(Compression::Zstd) => {
                let sink = Bounded {
                    limit: entry.content_size,
                    digester: sha(),
                };
                Content::Zstd(Box::new(zstd::stream::write::Decoder::new(sink)?))
            }
            Stored::Chunked => Content::Chunks,
        };
        let algorithms: Vec<Algorithm> = entry.checksum.iter().map(|c| c.algorithm).collect();
        Ok(CheckedFile {
            inner,
            shown: shown.display().to_string(),
            size: entry.size,
            read: 0,
            stored: Digester::new(&algorithms),
            expected_checksum: entry.checksum.clone(),
            expected: (entry.content_size, entry.content_sha256.clone()),
            content,
            matched: false,
        })
    }

    fn damaged(&self, problem: impl std::fmt::Display) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            Damaged::new(&self.shown, problem),
        )
    }

    /// At the end of the stored bytes: every check, in the order a reader would care.
    fn finish(&mut self) -> io::Result<()> {
        if self.read != self.size {
            return Err(self.damaged(format!(
                "it has {} bytes, its manifest says {}",
                self.read, self.size
            )));
        }
        let stored = std::mem::replace(&mut self.stored, Digester::new(&[])).finish();
        if let Some(expected) = &self.expected_checksum {
            let found = stored.get(expected.algorithm);
            if found.as_ref().map(|c| &c.value) != Some(&expected.value) {
                return Err(self.damaged(format!(
                    "{} checksum mismatch: the manifest says {}, the file has {}",
                    expected.algorithm,
                    expected.value,
                    found.map(|c| c.value).unwrap_or_default()
                )));
            }
        }
        let content = match std::mem::replace(&mut self.content, Content::Chunks) {
            Content::Chunks => return Ok(()),
            Content::Same(digester) => digester.finish(),
            Content::Zstd(mut decoder) => {
                decoder
                    .flush()
                    .map_err(|e| self.damaged(format!("cannot decompress: {e}")))?;
                decoder.into_inner().digester.finish()
            }
        };
        let (size, sha256) = &self.expected;
        let found = content.get(Algorithm::Sha256).map(|c| c.value);
        if content.bytes != *size || found.as_ref() != Some(sha256) {
            return Err(self.damaged(format!(
                "content sha256 mismatch: the manifest says {sha256} ({size} bytes), the content has {} ({} bytes)",
                found.unwrap_or_default(),
                content.bytes
            )));
        }
        Ok(())
    }
}

impl<R: Read> Read for CheckedFile<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.matched || buf.is_empty() {
            return Ok(0);
        }
        // One byte past the manifest's size is enough to know it is longer.
        let room = (self.size + 1 - self.read.min(self.size + 1)).min(buf.len() as u64) as usize;
        let n = self.inner.read(&mut buf[..room])?;
        if n == 0 {
            self.finish()?;
            self.matched = true;
            return Ok(0);
        }
        self.read += n as u64;
        if self.read > self.size {
            return Err(self.damaged(format!(
                "it is longer than the {} bytes its manifest says",
                self.size
            )));
        }
        self.stored.update(&buf[..n]);
        match &mut self.content {
            Content::Same(digester) => digester.update(&buf[..n]),
            Content::Zstd(decoder) => {
                if let Err(e) = decoder.write_all(&buf[..n]) {
                    return Err(self.damaged(format!("cannot decompress: {e}")));
                }
            }
            Content::Chunks => {}
        }
        Ok(n)
    }
}

/// The decompressed content of a file, hashed and counted, refused past the manifest's size
/// (a small hostile stream may decompress to any size).
struct Bounded {
    limit: u64,
    digester: Digester,
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.digester.bytes() + buf.len() as u64 > self.limit {
            return Err(io::Error::other(format!(
                "its content is longer than the {} bytes its manifest says",
                self.limit
            )));
        }
        self.digester.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTENT: &[u8] = b"the content of a snapshot, as the manifest describes it";

    fn entry(compression: Stored, stored: &[u8]) -> FileEntry {
        let sha = |b: &[u8]| {
            crate::checksum::digest(b, &[Algorithm::Sha256])
                .get(Algorithm::Sha256)
                .unwrap()
        };
        FileEntry {
            path: "collections/a".into(),
            kind: crate::format::manifest::FileKind::CollectionSnapshot,
            size: stored.len() as u64,
            compression,
            checksum: Some(
                crate::checksum::digest(stored, &[Algorithm::Xxhash64])
                    .get(Algorithm::Xxhash64)
                    .unwrap(),
            ),
            content_size: CONTENT.len() as u64,
            content_sha256: sha(CONTENT).value,
        }
    }

    fn read(stored: &[u8], entry: &FileEntry) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        CheckedFile::new(stored, entry, Path::new("s3://b/p/n/collections/a"))?
            .read_to_end(&mut out)?;
        Ok(out)
    }

    fn problem(e: io::Error) -> String {
        e.downcast::<Damaged>().unwrap().to_string()
    }

    #[test]
    fn sound_files_pass_as_they_are_stored() {
        let zstd = zstd::encode_all(CONTENT, 3).unwrap();
        for (compression, stored) in [
            (Stored::Plain(Compression::None), CONTENT.to_vec()),
            (Stored::Plain(Compression::Zstd), zstd),
        ] {
            assert_eq!(read(&stored, &entry(compression, &stored)).unwrap(), stored);
        }
    }

    #[test]
    fn a_flipped_byte_a_cut_or_more_bytes_are_damage_named_by_the_file() {
        let good = entry(Stored::Plain(Compression::None), CONTENT);
        let mut flipped = CONTENT.to_vec();
        flipped[3] ^= 1;
        let said = problem(read(&flipped, &good).unwrap_err());
        assert!(
            said.starts_with(
                "the backup's `s3://b/p/n/collections/a` is damaged: xxhash64 checksum mismatch"
            ),
            "{said}"
        );
        let said = problem(read(&CONTENT[..10], &good).unwrap_err());
        assert!(said.contains("it has 10 bytes"), "{said}");
        let longer = [CONTENT, b"!"].concat();
        let said = problem(read(&longer, &good).unwrap_err());
        assert!(said.contains("longer than"), "{said}");
        // Without a stored checksum, the content's sha256 still finds it.
        let mut unsummed = entry(Stored::Plain(Compression::None), &flipped);
        unsummed.checksum = None;
        let said = problem(read(&flipped, &unsummed).unwrap_err());
        assert!(said.contains("content sha256 mismatch"), "{said}");
        // A zstd file whose content is not the manifest's.
        let other = zstd::encode_all(&b"other content"[..], 3).unwrap();
        let mut wrong = entry(Stored::Plain(Compression::Zstd), &other);
        wrong.checksum = None;
        let said = problem(read(&other, &wrong).unwrap_err());
        assert!(said.contains("content sha256 mismatch"), "{said}");
    }
}

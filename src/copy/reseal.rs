//! Copying into or out of encrypted repositories (issue 21): every object is read through the
//! source's seal (decrypted and authenticated, then checked against the manifest as today) and
//! written through the destination's (encrypted with its key, under its keyed name, or plain
//! when the destination is plain). A plain backup never lands unencrypted in an encrypted
//! repository; an encrypted one lands in a plain repository only when the user copies it there
//! (as `export` does). Used whenever either side is encrypted, the same key or not: the objects
//! are encrypted anew (fresh nonces), so a backup copied between repositories sharing a key is
//! not byte for byte the source's, but decrypts to the same stored bytes.
//!
//! An incremental backup's chunks are named by each repository's key: a chunk is read (and
//! checked against its source name), named by its content under the destination's key, and
//! sent only when the destination lacks that name — unless its name there is known already
//! (from a backup copied before: `known_from`), when it is not read at all. Its indexes and reference list are
//! then written anew with those names, and its manifest records their new sizes and checksums;
//! the content it describes (each file's size and sha256) is the source's, unchanged.

use std::io::{self, BufReader, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Result};

use crate::checksum::digest;
use crate::compress::Stored;
use crate::crypto::{CryptoError, EncryptingWriter, Identity};
use crate::format::layout::MANIFEST_PATH;
use crate::format::manifest::{self, FileEntry, Manifest, ManifestError};
use crate::store::chunks::{self, ChunkBuffer, ChunkId, IndexLine, IndexReader, Params};
use crate::store::seal::{self, Seal};
use crate::store::Repository;

use super::dest::{Dest, Existing, Writing};
use super::source::{CheckedFile, Source};
use super::{Part, Renamed};

/// The two sides' seals, when at least one side is encrypted.
pub struct Reseal {
    from: Option<Seal>,
    to: Option<Seal>,
}

impl Reseal {
    /// The seals of `source` and `dest` as this run unlocked them; `None` when both are plain.
    pub fn between(source: &Repository, dest: &Repository) -> Option<Reseal> {
        let from = seal::of(&super::shown(source));
        let to = seal::of(&super::shown(dest));
        (from.is_some() || to.is_some()).then_some(Reseal { from, to })
    }

    /// Where the source stores the file `rel` of a backup.
    pub fn source_name(&self, rel: &str) -> String {
        stored_name(self.from.as_ref(), rel)
    }

    /// Where the destination stores the file `rel` of a backup.
    pub fn dest_name(&self, rel: &str) -> String {
        stored_name(self.to.as_ref(), rel)
    }

    /// The manifest of the backup `name` in the source: its plaintext bytes and what they say.
    pub fn read_manifest(
        &self,
        source: &Source,
        name: &str,
    ) -> Result<(Vec<u8>, Manifest), ManifestError> {
        let rel = format!("{name}/{MANIFEST_PATH}");
        let path = source.shown(&rel);
        let mut bytes = Vec::new();
        let plain = source
            .open(&rel)
            .and_then(|f| {
                f.take(manifest::MAX_MANIFEST_BYTES + 64 * 1024)
                    .read_to_end(&mut bytes)
            })
            .and_then(|_| open(self.from.as_ref(), &Identity::manifest(name), &bytes))
            .map_err(|e| manifest::load_error(&path, e))?;
        let parsed = Manifest::read_from(&plain[..], &path)?;
        Ok((plain, parsed))
    }

    /// Whether the destination's manifest `stored` of the backup `name` is the source's
    /// `manifest` copied: the same but for what re-encryption rewrites (an incremental backup's
    /// index sizes and checksums, its reference list's record).
    pub fn same_backup(&self, name: &str, stored: &[u8], manifest: &Manifest) -> bool {
        let Ok(plain) = open(self.to.as_ref(), &Identity::manifest(name), stored) else {
            return false;
        };
        Manifest::read_from(&plain[..], Path::new(name))
            .is_ok_and(|theirs| comparable(&theirs) == comparable(manifest))
    }

    /// The destination's chunk store parameters for chunks cut as `source`'s: the same cut and
    /// storage, the chunks named as the destination names them.
    pub fn dest_params(&self, source: &Params) -> Params {
        source.clone().keyed_as(self.to.is_some())
    }

    /// Names the chunk just read into `buffer` (checked against its source name) as the
    /// destination does, and sends it when the destination lacks that name.
    pub fn put_chunk(&self, writing: &Writing<'_>, buffer: &ChunkBuffer) -> io::Result<Landed> {
        let id = ChunkId::named_by(self.to.as_ref(), &buffer.content);
        let compressed = buffer.stored();
        if writing.has(&id) {
            let stored = match self.to {
                None => compressed.len() as u64,
                Some(_) => seal::sealed_len(compressed.len() as u64),
            };
            return Ok(Landed {
                id,
                stored,
                sent: false,
            });
        }
        let stored = id.stored_by(self.to.as_ref(), compressed)?;
        writing.put_chunk(&id, buffer.content.len(), &stored)?;
        Ok(Landed {
            id,
            stored: stored.len() as u64,
            sent: true,
        })
    }

    /// The names in DEST of the chunks of the backup `name`, when DEST holds a copy of it (made
    /// by an earlier run): the two sides' indexes of each chunked file, zipped line by line
    /// (authenticated and checked against their manifests like any file read). Empty when DEST
    /// has no such copy; an index pair that does not line up adds nothing.
    pub fn known_from(&self, source: &Source, dest: &Dest, name: &str) -> Renamed {
        let mut known = Renamed::new();
        let Ok(Existing::Backup(stored)) = dest.existing(name) else {
            return known;
        };
        let Ok((_, ours)) = self.read_manifest(source, name) else {
            return known;
        };
        let Ok(plain) = open(self.to.as_ref(), &Identity::manifest(name), &stored) else {
            return known;
        };
        let Ok(theirs) = Manifest::read_from(&plain[..], Path::new(name)) else {
            return known;
        };
        if comparable(&theirs) != comparable(&ours) {
            return known;
        }
        let there = Source::new(dest.repository().clone());
        let chunked = |m: &Manifest| -> Vec<FileEntry> {
            let files = m.files.iter().filter(|f| f.compression == Stored::Chunked);
            files.cloned().collect()
        };
        for (from, to) in chunked(&ours).iter().zip(chunked(&theirs).iter()) {
            let lines = (
                index_lines((source, self.from.as_ref()), name, from),
                index_lines((&there, self.to.as_ref()), name, to),
            );
            let (Ok(from), Ok(to)) = lines else { continue };
            if from.len() != to.len() || from.iter().zip(&to).any(|(a, b)| a.len != b.len) {
                continue;
            }
            known.extend(from.iter().zip(&to).map(|(a, b)| (a.id, (b.id, b.stored))));
        }
        known
    }

    /// The backup's parts and stored manifest once its chunks are in the destination: each
    /// index (`Part::Read` of a chunked file) rewritten with the destination's chunk names, the
    /// reference list made anew from them, and the manifest recording what changed (its source
    /// bytes as they are when nothing did), encrypted for the destination.
    pub fn rewrite(
        &self,
        name: &str,
        (raw, manifest): (&[u8], &Manifest),
        parts: Vec<Part>,
        renamed: &Renamed,
    ) -> Result<(Vec<Part>, Vec<u8>)> {
        let mut rewritten = manifest.clone();
        let mut names = Vec::new();
        let mut out = Vec::with_capacity(parts.len() + 1);
        for part in parts {
            let Part::Read { rel, bytes } = part else {
                out.push(part);
                continue;
            };
            let bytes = rename_index(&bytes, renamed, &mut names)?;
            let entry = rewritten
                .files
                .iter_mut()
                .find(|f| f.path == rel && f.compression == Stored::Chunked)
                .ok_or_else(|| anyhow!("`{rel}` is no chunked file of the manifest"))?;
            entry.size = bytes.len() as u64;
            if let Some(checksum) = &mut entry.checksum {
                let algorithm = checksum.algorithm;
                *checksum = digest(&bytes, &[algorithm])
                    .get(algorithm)
                    .expect("the digest asked for");
            }
            out.push(Part::Read { rel, bytes });
        }
        if manifest.chunk_refs.is_some() {
            let (bytes, record) = chunks::encode_refs(&names);
            rewritten.chunk_refs = Some(record);
            out.push(Part::Read {
                rel: chunks::REFS_PATH.to_string(),
                bytes,
            });
        }
        let plain = match rewritten == *manifest {
            true => raw.to_vec(),
            false => rewritten.to_json().into_bytes(),
        };
        let stored = self
            .seal_manifest(name, &plain)
            .map_err(|e| anyhow!("cannot encrypt the manifest: {e}"))?;
        Ok((out, stored))
    }

    /// The manifest `plain` of the backup `name` as the destination stores it.
    pub fn seal_manifest(&self, name: &str, plain: &[u8]) -> io::Result<Vec<u8>> {
        match &self.to {
            None => Ok(plain.to_vec()),
            Some(seal) => seal.seal(&Identity::manifest(name), plain),
        }
    }

    /// The source's object of the file `rel` of the backup `name`, decrypted.
    pub fn decrypting(
        &self,
        name: &str,
        rel: &str,
        inner: Box<dyn Read + Send>,
    ) -> io::Result<Box<dyn Read + Send>> {
        match &self.from {
            None => Ok(inner),
            Some(seal) => Ok(Box::new(seal.reader(inner, &Identity::file(name, rel))?)),
        }
    }

    /// The stored bytes of the file `rel` of the backup `name` as the destination stores them.
    pub fn encrypting<'a>(
        &self,
        name: &str,
        rel: &str,
        inner: Box<dyn Read + Send + 'a>,
    ) -> io::Result<Box<dyn Read + Send + 'a>> {
        match &self.to {
            None => Ok(inner),
            Some(seal) => {
                let out = Shared::default();
                let writer = seal
                    .writer(out.clone(), &Identity::file(name, rel))
                    .map_err(CryptoError::into_io)?;
                Ok(Box::new(Sealing {
                    inner,
                    writer: Some(writer),
                    out,
                    piece: vec![0; 64 * 1024],
                }))
            }
        }
    }
}

/// A chunk the destination holds under `id` after `Reseal::put_chunk`: sent by it, or there.
pub struct Landed {
    pub id: ChunkId,
    pub stored: u64,
    pub sent: bool,
}

/// The lines of the index of the chunked file `entry` of the backup `name` in `repository`
/// (encrypted with `seal`, or plain), checked against `entry`.
fn index_lines(
    (repository, seal): (&Source, Option<&Seal>),
    name: &str,
    entry: &FileEntry,
) -> io::Result<Vec<IndexLine>> {
    let rel = format!("{name}/{}", stored_name(seal, &entry.path));
    let shown = repository.shown(&rel);
    let mut reader = repository.open(&rel)?;
    if let Some(seal) = seal {
        reader = Box::new(seal.reader(reader, &Identity::file(name, &entry.path))?);
    }
    let mut bytes = Vec::new();
    CheckedFile::new(reader, entry, &shown)?.read_to_end(&mut bytes)?;
    let mut index = IndexReader::new(BufReader::new(&bytes[..]))?;
    let mut lines = Vec::new();
    while let Some(line) = index.next_line()? {
        lines.push(line);
    }
    Ok(lines)
}

/// `manifest` without what re-encryption rewrites.
fn comparable(manifest: &Manifest) -> Manifest {
    let mut manifest = manifest.clone();
    for file in &mut manifest.files {
        if file.compression == Stored::Chunked {
            (file.size, file.checksum) = (0, None);
        }
    }
    manifest.chunk_refs = None;
    manifest
}

/// The index `bytes` with each chunk under its destination name (`renamed`), each pushed on
/// `names` too.
fn rename_index(bytes: &[u8], renamed: &Renamed, names: &mut Vec<ChunkId>) -> Result<Vec<u8>> {
    let mut index = IndexReader::new(BufReader::new(bytes))?;
    let mut lines = Vec::new();
    while let Some(line) = index.next_line()? {
        let (id, stored) = *renamed
            .get(&line.id)
            .ok_or_else(|| anyhow!("chunk `{}` was not copied", line.id))?;
        names.push(id);
        lines.push(IndexLine { id, stored, ..line });
    }
    Ok(chunks::index_text(lines))
}

fn stored_name(seal: Option<&Seal>, rel: &str) -> String {
    match seal {
        None => rel.to_string(),
        Some(seal) => seal.stored_name(rel),
    }
}

fn open(seal: Option<&Seal>, identity: &Identity, object: &[u8]) -> io::Result<Vec<u8>> {
    match seal {
        None => Ok(object.to_vec()),
        Some(seal) => seal.open(identity, object).map_err(CryptoError::into_io),
    }
}

/// Where an `EncryptingWriter` puts what `Sealing` hands on.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("sealed bytes").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A reader of `inner`'s bytes encrypted: what the destination's writers read from.
struct Sealing<'a> {
    inner: Box<dyn Read + Send + 'a>,
    writer: Option<EncryptingWriter<Shared>>,
    out: Shared,
    piece: Vec<u8>,
}

impl Read for Sealing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            {
                let mut out = self.out.0.lock().expect("sealed bytes");
                if !out.is_empty() {
                    let n = buf.len().min(out.len());
                    buf[..n].copy_from_slice(&out[..n]);
                    out.drain(..n);
                    return Ok(n);
                }
            }
            let Some(writer) = self.writer.as_mut() else {
                return Ok(0);
            };
            let n = self.inner.read(&mut self.piece)?;
            if n == 0 {
                // The inner reader reached its end: everything it checked matched.
                let writer = self.writer.take().expect("writer until the end");
                writer.finish().map_err(CryptoError::into_io)?;
            } else {
                writer.write_all(&self.piece[..n])?;
            }
        }
    }
}

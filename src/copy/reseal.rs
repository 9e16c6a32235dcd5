//! Copying into or out of encrypted repositories (issue 21): every object is read through the
//! source's seal (decrypted and authenticated, then checked against the manifest as today) and
//! written through the destination's (encrypted with its key, under its keyed name, or plain
//! when the destination is plain). A plain backup never lands unencrypted in an encrypted
//! repository; an encrypted one lands in a plain repository only when the user copies it there
//! (as `export` does). Used whenever either side is encrypted, the same key or not: the objects
//! are encrypted anew (fresh nonces), so a backup copied between repositories sharing a key is
//! not byte for byte the source's, but decrypts to the same stored bytes.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use crate::crypto::{CryptoError, EncryptingWriter, Identity};
use crate::format::layout::MANIFEST_PATH;
use crate::format::manifest::{self, Manifest, ManifestError};
use crate::store::seal::{self, Seal};
use crate::store::Repository;

use super::source::Source;

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

    /// A manifest the destination holds, as plaintext (to compare with the source's).
    pub fn dest_manifest(&self, name: &str, stored: &[u8]) -> io::Result<Vec<u8>> {
        open(self.to.as_ref(), &Identity::manifest(name), stored)
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

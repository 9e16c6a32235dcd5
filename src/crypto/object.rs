//! The encrypted object format (version 1):
//!
//! ```text
//! header (44 bytes, plaintext): magic `WQMCRYPT` (8) ‖ format 1 (1) ‖ master key id (16) ‖ nonce prefix (19)
//! segments: XChaCha20-Poly1305 of 1 MiB of plaintext each, + 16-byte tag; the last one shorter
//!           (0 to 1 MiB − 1 bytes of plaintext: empty when the plaintext fills whole segments)
//! ```
//!
//! The segments are the STREAM construction of Hoang, Reyhanitabar, Rogaway and Vizár, as the
//! `aead-stream` crate implements it (`StreamBE32`, as age does): segment *i*'s 24-byte nonce is
//! the object's random 19-byte prefix ‖ *i* as a 32-bit big-endian counter ‖ a last-segment flag
//! byte. A random prefix per object needs no counter kept across runs or hosts; at 152 random
//! bits, two objects drawing the same prefix is out of reach. The associated data of every
//! segment is the header ‖ the object's [`Identity`], so:
//!
//! - an altered byte anywhere (header, ciphertext, tag) fails authentication;
//! - segments reordered, dropped or duplicated fail (the counter is in the nonce);
//! - truncation fails: a full-size segment can never be the last, and the last is flagged;
//! - trailing bytes fail (they become part of the last segment);
//! - an object stored under another object's name fails (its identity is in the AAD).
//!
//! The header says nothing about the content's size, name or time. Memory is bounded: one
//! segment buffered in each direction. Only content read to the end is known to be complete: a
//! caller stops trusting at the first error and never acts on a prefix it could not finish.

use std::fmt;
use std::io::{self, Read, Write};

use aead_stream::{EncryptorBE32, NewStream, StreamBE32, StreamPrimitive};
use chacha20poly1305::XChaCha20Poly1305;

use super::keys::ID_LEN;
use super::{random_bytes, CryptoError, MasterKey};
use crate::checksum::to_hex;

/// The first bytes of every encrypted object.
pub const MAGIC: [u8; 8] = *b"WQMCRYPT";
const FORMAT: u8 = 1;
const PREFIX_LEN: usize = 19;
/// The plaintext header's length.
pub const HEADER_LEN: usize = MAGIC.len() + 1 + ID_LEN + PREFIX_LEN;
/// Plaintext bytes per segment (the last one is shorter).
pub const SEGMENT: usize = 1 << 20;
/// The authentication tag at the end of every segment.
pub const TAG_LEN: usize = 16;

/// What an object is, bound into its associated data: its kind and name, as `chunk/<id>`,
/// `manifest/<backup>` or `file/<backup>/<path>`. Each part is length-prefixed in the associated
/// data, so no two identities encode alike.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    parts: Vec<String>,
}

impl Identity {
    /// An object of `kind` named by `parts` (none may be empty for a stable name; any bytes are
    /// allowed, since the encoding is length-prefixed).
    pub fn new<I, S>(kind: &str, parts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut all = vec![kind.to_string()];
        all.extend(parts.into_iter().map(Into::into));
        Identity { parts: all }
    }

    /// A chunk of the store, by its (keyed) id.
    pub fn chunk(id: &[u8; 32]) -> Self {
        Identity::new("chunk", [to_hex(id)])
    }

    /// A backup's manifest.
    pub fn manifest(backup: &str) -> Self {
        Identity::new("manifest", [backup])
    }

    /// A file of a backup (a snapshot, a database, the config copy, a chunk index).
    pub fn file(backup: &str, path: &str) -> Self {
        Identity::new("file", [backup, path])
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        for part in &self.parts {
            out.extend_from_slice(&(part.len() as u64).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.parts.join("/"))
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({self})")
    }
}

/// An encrypted object's plaintext header: what can be said without the password.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    key_id: [u8; ID_LEN],
    prefix: [u8; PREFIX_LEN],
}

impl Header {
    /// Reads the header at the start of `bytes` (an object named `what`): the magic, the format,
    /// the master key's id.
    pub fn parse(bytes: &[u8], what: &str) -> Result<Header, CryptoError> {
        let unknown = |reason: &str| CryptoError::UnknownFormat {
            what: what.to_string(),
            reason: reason.to_string(),
        };
        if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
            if MAGIC.starts_with(bytes) {
                return Err(CryptoError::Truncated {
                    what: what.to_string(),
                });
            }
            return Err(unknown("it does not start with `WQMCRYPT`"));
        }
        if bytes.len() < HEADER_LEN {
            return Err(CryptoError::Truncated {
                what: what.to_string(),
            });
        }
        if bytes[MAGIC.len()] != FORMAT {
            return Err(unknown(&format!(
                "encryption format `{}`; this wqm reads format {FORMAT}",
                bytes[MAGIC.len()]
            )));
        }
        let mut header = Header {
            key_id: [0; ID_LEN],
            prefix: [0; PREFIX_LEN],
        };
        let rest = &bytes[MAGIC.len() + 1..HEADER_LEN];
        header.key_id.copy_from_slice(&rest[..ID_LEN]);
        header.prefix.copy_from_slice(&rest[ID_LEN..]);
        Ok(header)
    }

    /// The format version.
    pub fn format(&self) -> u8 {
        FORMAT
    }

    /// The id of the master key the object is encrypted with, as 32 hex digits.
    pub fn key_id_hex(&self) -> String {
        to_hex(&self.key_id)
    }

    fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut bytes = [0u8; HEADER_LEN];
        bytes[..MAGIC.len()].copy_from_slice(&MAGIC);
        bytes[MAGIC.len()] = FORMAT;
        bytes[MAGIC.len() + 1..MAGIC.len() + 1 + ID_LEN].copy_from_slice(&self.key_id);
        bytes[MAGIC.len() + 1 + ID_LEN..].copy_from_slice(&self.prefix);
        bytes
    }

    /// Every segment's associated data: the header, then the object's identity.
    fn associated_data(self, identity: &Identity) -> Vec<u8> {
        let mut aad = self.to_bytes().to_vec();
        identity.encode_into(&mut aad);
        aad
    }
}

/// Encrypts everything written to it into `inner`, one segment at a time; [`finish`] writes the
/// last segment and must be called (an object never finished reads as truncated).
///
/// [`finish`]: EncryptingWriter::finish
pub struct EncryptingWriter<W: Write> {
    inner: W,
    stream: EncryptorBE32<XChaCha20Poly1305>,
    aad: Vec<u8>,
    buffer: Vec<u8>,
    segment: usize,
    what: String,
}

impl<W: Write> EncryptingWriter<W> {
    /// Writes the header of a new object `identity` encrypted with `key` into `inner`.
    pub fn new(inner: W, key: &MasterKey, identity: &Identity) -> Result<Self, CryptoError> {
        Self::with_segment(inner, key, identity, SEGMENT)
    }

    pub(crate) fn with_segment(
        inner: W,
        key: &MasterKey,
        identity: &Identity,
        segment: usize,
    ) -> Result<Self, CryptoError> {
        Self::sized(inner, key, identity, segment, segment)
    }

    /// A writer whose buffer starts at `expected` bytes (a small object's whole size), not a
    /// whole segment's: it grows to one only if that much comes.
    fn sized(
        mut inner: W,
        key: &MasterKey,
        identity: &Identity,
        segment: usize,
        expected: usize,
    ) -> Result<Self, CryptoError> {
        let mut header = Header {
            key_id: key.id(),
            prefix: [0; PREFIX_LEN],
        };
        random_bytes(&mut header.prefix)?;
        let what = identity.to_string();
        inner
            .write_all(&header.to_bytes())
            .map_err(|source| CryptoError::Io {
                what: what.clone(),
                source,
            })?;
        Ok(EncryptingWriter {
            inner,
            stream: EncryptorBE32::from_aead(key.cipher(), &header.prefix.into()),
            aad: header.associated_data(identity),
            buffer: Vec::with_capacity(expected.min(segment) + TAG_LEN),
            segment,
            what,
        })
    }

    /// Seals the full buffer as a segment that is not the last, and writes it.
    fn seal_next(&mut self) -> io::Result<()> {
        self.stream
            .encrypt_next_in_place(&self.aad, &mut self.buffer)
            .map_err(|_| io::Error::other(format!("`{}` is too large to encrypt", self.what)))?;
        self.inner.write_all(&self.buffer)?;
        self.buffer.clear();
        Ok(())
    }

    /// Seals and writes the last segment; returns the inner writer, flushed.
    pub fn finish(mut self) -> Result<W, CryptoError> {
        let what = self.what.clone();
        let io = |source| CryptoError::Io {
            what: what.clone(),
            source,
        };
        if self.buffer.len() == self.segment {
            self.seal_next().map_err(io)?;
        }
        self.stream
            .encrypt_last_in_place(&self.aad, &mut self.buffer)
            .map_err(|_| io(io::Error::other("too large to encrypt")))?;
        self.inner.write_all(&self.buffer).map_err(io)?;
        self.inner.flush().map_err(io)?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for EncryptingWriter<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let written = data.len();
        while !data.is_empty() {
            // A full segment is sealed only once more data follows: the last is always short.
            if self.buffer.len() == self.segment {
                self.seal_next()?;
            }
            let take = data.len().min(self.segment - self.buffer.len());
            self.buffer.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(written)
    }

    /// Flushes the inner writer; the segment being filled stays until it is full or `finish`.
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> fmt::Debug for EncryptingWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptingWriter({})", self.what)
    }
}

/// Segments read, then decrypted side by side, at a time: each is independent in STREAM (its
/// position and last flag are in its nonce), so a batch spreads over the cores.
pub const BATCH: usize = 4;

/// Decrypts an object from `inner`, handing out only authenticated plaintext, a batch of
/// segments at a time (decrypted in parallel). Reaching the end (`Ok(0)`) means the whole object
/// was authentic and complete; an error (an `io::Error` holding a [`CryptoError`]) is final.
pub struct DecryptingReader<R: Read> {
    inner: R,
    stream: StreamBE32<XChaCha20Poly1305>,
    aad: Vec<u8>,
    /// The batch's segments, decrypted: handed out in order.
    segments: Vec<Vec<u8>>,
    /// Which segment of the batch is being handed out, and how far.
    current: usize,
    offset: usize,
    /// The position of the next segment read.
    next: u32,
    /// The last segment was read and authenticated.
    ended: bool,
    segment: usize,
    what: String,
    failed: bool,
}

impl<R: Read> DecryptingReader<R> {
    /// Reads and checks the header of object `identity` (magic, format, that `key` is the one it
    /// was encrypted with).
    pub fn new(inner: R, key: &MasterKey, identity: &Identity) -> Result<Self, CryptoError> {
        Self::with_segment(inner, key, identity, SEGMENT)
    }

    pub(crate) fn with_segment(
        mut inner: R,
        key: &MasterKey,
        identity: &Identity,
        segment: usize,
    ) -> Result<Self, CryptoError> {
        let what = identity.to_string();
        let mut bytes = [0u8; HEADER_LEN];
        let got = read_full(&mut inner, &mut bytes).map_err(|source| CryptoError::Io {
            what: what.clone(),
            source,
        })?;
        let header = Header::parse(&bytes[..got], &what)?;
        if header.key_id != key.id() {
            return Err(CryptoError::OtherKey {
                what,
                found: header.key_id_hex(),
                expected: key.id_hex(),
            });
        }
        Ok(DecryptingReader {
            inner,
            stream: StreamBE32::from_aead(key.cipher(), &header.prefix.into()),
            aad: header.associated_data(identity),
            segments: Vec::new(),
            current: 0,
            offset: 0,
            next: 0,
            ended: false,
            segment,
            what,
            failed: false,
        })
    }

    /// Reads the next batch of segments and authenticates them, side by side. A full-size
    /// segment is never the last: the object's last one is shorter (at least its tag).
    fn next_batch(&mut self) -> Result<(), CryptoError> {
        let full = self.segment + TAG_LEN;
        let mut batch = std::mem::take(&mut self.segments);
        batch.resize_with(BATCH, Vec::new);
        let mut count = 0;
        let mut last = false;
        for buffer in batch.iter_mut() {
            // Grown as bytes come (a small object, a chunk, never fills a whole segment's
            // buffer), and kept from batch to batch.
            buffer.clear();
            let got = (&mut self.inner)
                .take(full as u64)
                .read_to_end(buffer)
                .map_err(|source| CryptoError::Io {
                    what: self.what.clone(),
                    source,
                })?;
            count += 1;
            if got < full {
                if got < TAG_LEN {
                    return Err(CryptoError::Truncated {
                        what: self.what.clone(),
                    });
                }
                last = true;
                break;
            }
        }
        batch.truncate(count);
        let first = self.next;
        self.next = first
            .checked_add(count as u32)
            .ok_or_else(|| CryptoError::Damaged {
                what: self.what.clone(),
            })?;
        let (stream, aad) = (&self.stream, self.aad.as_slice());
        let open = |i: usize, buffer: &mut Vec<u8>| {
            let is_last = last && i + 1 == count;
            stream
                .decrypt_in_place(first + i as u32, is_last, aad, buffer)
                .is_ok()
        };
        let sound = if count == 1 {
            open(0, &mut batch[0])
        } else {
            // One thread per segment past the first: a few milliseconds of work each.
            std::thread::scope(|scope| {
                let (head, rest) = batch.split_at_mut(1);
                let others: Vec<_> = rest
                    .iter_mut()
                    .enumerate()
                    .map(|(i, buffer)| scope.spawn(move || open(i + 1, buffer)))
                    .collect();
                let first_sound = open(0, &mut head[0]);
                others
                    .into_iter()
                    .fold(first_sound, |all, t| t.join().unwrap_or(false) && all)
            })
        };
        if !sound {
            return Err(CryptoError::Damaged {
                what: self.what.clone(),
            });
        }
        self.segments = batch;
        self.current = 0;
        self.offset = 0;
        self.ended = last;
        Ok(())
    }
}

impl<R: Read> Read for DecryptingReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.failed {
            return Err(CryptoError::Damaged {
                what: self.what.clone(),
            }
            .into_io());
        }
        loop {
            if let Some(segment) = self.segments.get(self.current) {
                if self.offset < segment.len() {
                    let n = out.len().min(segment.len() - self.offset);
                    out[..n].copy_from_slice(&segment[self.offset..self.offset + n]);
                    self.offset += n;
                    return Ok(n);
                }
                self.current += 1;
                self.offset = 0;
                continue;
            }
            if self.ended || out.is_empty() {
                return Ok(0);
            }
            if let Err(e) = self.next_batch() {
                self.failed = true;
                self.segments.clear();
                return Err(e.into_io());
            }
        }
    }
}

impl<R: Read> fmt::Debug for DecryptingReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DecryptingReader({})", self.what)
    }
}

/// Reads until `buffer` is full or the end: how many bytes were read.
fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buffer.len() {
        match reader.read(&mut buffer[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Encrypts a whole object in memory (manifests, indexes, small files).
pub fn encrypt(
    key: &MasterKey,
    identity: &Identity,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let segments = plaintext.len() / SEGMENT + 1;
    let out = Vec::with_capacity(HEADER_LEN + plaintext.len() + segments * TAG_LEN);
    let mut writer = EncryptingWriter::sized(out, key, identity, SEGMENT, plaintext.len())?;
    writer
        .write_all(plaintext)
        .map_err(|e| from_io(e, identity))?;
    writer.finish()
}

/// Decrypts and authenticates a whole object in memory.
pub fn decrypt(
    key: &MasterKey,
    identity: &Identity,
    object: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut reader = DecryptingReader::new(object, key, identity)?;
    let mut plaintext = Vec::with_capacity(object.len().saturating_sub(HEADER_LEN));
    reader
        .read_to_end(&mut plaintext)
        .map_err(|e| from_io(e, identity))?;
    Ok(plaintext)
}

/// The `CryptoError` inside an `io::Error` from the adapters, or the `io::Error` as `Io`.
pub(crate) fn from_io(error: io::Error, identity: &Identity) -> CryptoError {
    if error.get_ref().is_some_and(|e| e.is::<CryptoError>()) {
        let inner = error.into_inner().expect("it holds an error");
        return *inner
            .downcast::<CryptoError>()
            .expect("it is a CryptoError");
    }
    CryptoError::Io {
        what: identity.to_string(),
        source: error,
    }
}

//! The one checked reader of an entry's content (`BackupDir::open_checked`) and the damage it
//! reports.

use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use crate::checksum::{Algorithm, Digester, Digests};
use crate::format::manifest::FileEntry;

/// A file of a backup found damaged or unsafe while it was read (exit 3): what `open_checked`
/// reports, whatever went wrong (unreadable, not decompressible, a damaged chunk, too long,
/// another size or sha256 than the manifest's).
#[derive(Debug, thiserror::Error)]
#[error(
    "the backup's `{}` is damaged: {problem}",
    crate::format::names::shown(path)
)]
pub struct Damaged {
    /// The entry's path in the backup.
    pub path: String,
    pub problem: String,
}

impl Damaged {
    pub fn new(path: &str, problem: impl std::fmt::Display) -> Self {
        Damaged {
            path: path.to_string(),
            problem: problem.to_string(),
        }
    }

    /// The damage a `Checked` read reported, or any other error reading `path` as the reason
    /// it cannot be read.
    pub fn from_read(path: &str, e: io::Error) -> Self {
        match e.downcast::<Damaged>() {
            Ok(damaged) => damaged,
            Err(e) => Damaged::new(path, format!("cannot read: {e}")),
        }
    }
}

impl crate::exit::Classify for Damaged {
    fn exit_code(&self) -> crate::exit::ExitCode {
        crate::exit::ExitCode::InvalidBackup
    }

    fn hint(&self) -> Option<String> {
        Some("use another backup (`wqm backup list DIR`); `wqm backup validate PATH --check-files` shows every problem".to_string())
    }
}

/// What `open_compared` compares with the manifest at the end of an entry's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compare {
    /// The content's size and sha256: what every reader of the content compares.
    Content,
    /// The stored bytes' size and checksum (`checksum_algorithm`'s, xxhash64 by default,
    /// a fraction of sha256's cost; of a chunked file, its index) and the content's size: for
    /// an upload whose content's sha256 Qdrant compares itself (`?checksum=`) before it changes
    /// anything. Only an entry with a stored checksum can be compared so (`Compare::stored_for`).
    Stored,
}

impl Compare {
    /// `Stored` when `entry`'s stored bytes carry a checksum to compare, `Content` otherwise.
    pub fn stored_for(entry: &FileEntry) -> Compare {
        match stored_algorithm(entry) {
            Some(_) => Compare::Stored,
            None => Compare::Content,
        }
    }
}

/// The algorithm of `entry`'s stored checksum, when it has one.
fn stored_algorithm(entry: &FileEntry) -> Option<Algorithm> {
    let algorithm = entry.checksum.as_ref()?.algorithm;
    (algorithm != Algorithm::None).then_some(algorithm)
}

/// An entry's content being read by `open_checked`: `Send`, so another thread may read it.
pub struct Checked {
    inner: Box<dyn Read + Send>,
    entry: FileEntry,
    content: Digester,
    /// With `Compare::Stored`: the stored bytes, hashed as the decoder reads them.
    stored: Option<StoredTally>,
    matched: bool,
}

/// `stored` (an entry's stored bytes), hashed as it is read when `compare` is `Stored` and the
/// entry has a stored checksum: the reader to decode, and the tally its end leaves for
/// `Checked::new`.
pub(super) fn tallied(
    stored: Box<dyn Read + Send>,
    entry: &FileEntry,
    compare: Compare,
) -> (Box<dyn Read + Send>, Option<StoredTally>) {
    match (compare, stored_algorithm(entry)) {
        (Compare::Stored, Some(algorithm)) => {
            let tally = StoredTally::default();
            let hashed = TallyReader {
                inner: stored,
                tally: tally.clone(),
                digester: Some(Digester::new(&[algorithm])),
            };
            (Box::new(hashed), Some(tally))
        }
        _ => (stored, None),
    }
}

impl Checked {
    /// Reads `content` (decoded from the stored bytes) and compares it at its end: with the
    /// `tally` of the stored bytes (from `tallied`), their size and checksum and the content's
    /// size; without, the content's size and sha256.
    pub(super) fn new(
        content: Box<dyn Read + Send>,
        entry: &FileEntry,
        tally: Option<StoredTally>,
    ) -> Self {
        let hashed: &[Algorithm] = match tally {
            Some(_) => &[],
            None => &[Algorithm::Sha256],
        };
        Checked {
            inner: content,
            entry: entry.clone(),
            content: Digester::new(hashed),
            stored: tally,
            matched: false,
        }
    }

    /// The manifest's entry this content is checked against.
    pub fn entry(&self) -> &FileEntry {
        &self.entry
    }

    fn damage(&self, problem: impl std::fmt::Display) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            Damaged::new(&self.entry.path, problem),
        )
    }
}

impl Read for Checked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.matched {
            return Ok(0);
        }
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => return Err(self.damage(format!("cannot decompress: {e}"))),
        };
        if n == 0 {
            let digests = std::mem::replace(&mut self.content, Digester::new(&[])).finish();
            let matched = match &self.stored {
                Some(tally) => stored_matches(&self.entry, tally, digests.bytes),
                None => content_matches(&self.entry, &digests),
            };
            matched.map_err(|problem| self.damage(problem))?;
            self.matched = true;
            return Ok(0);
        }
        self.content.update(&buf[..n]);
        if self.content.bytes() > self.entry.content_size {
            return Err(self.damage(format!(
                "its content is longer than the {} bytes its manifest says",
                self.entry.content_size
            )));
        }
        Ok(n)
    }
}

/// What the reader under the decoder saw of the stored bytes: their digests, once it read
/// to their end.
#[derive(Clone, Default)]
pub(super) struct StoredTally(Arc<Mutex<Option<Digests>>>);

/// Hashes the stored bytes as the decoder reads them; at their end, leaves the digests in the
/// tally.
struct TallyReader {
    inner: Box<dyn Read + Send>,
    tally: StoredTally,
    digester: Option<Digester>,
}

impl Read for TallyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(digester) = self.digester.as_mut() {
            digester.update(&buf[..n]);
            if n == 0 && !buf.is_empty() {
                let digests = self.digester.take().map(Digester::finish);
                *self.tally.0.lock().expect("stored tally") = digests;
            }
        }
        Ok(n)
    }
}

/// At the content's end (`content_bytes` of it): the stored bytes were read to their end and
/// are the ones the manifest describes (size and checksum), and the content has its size.
fn stored_matches(
    entry: &FileEntry,
    tally: &StoredTally,
    content_bytes: u64,
) -> Result<(), String> {
    let Some(digests) = tally.0.lock().expect("stored tally").clone() else {
        return Err("its content ended before its stored bytes did".to_string());
    };
    if let Some(expected) = &entry.checksum {
        let actual = digests
            .get(expected.algorithm)
            .map(|c| c.value)
            .unwrap_or_default();
        if digests.bytes != entry.size || actual != expected.value {
            return Err(format!(
                "checksum mismatch ({}): the manifest says {} ({} bytes), the file has {actual} ({} bytes)",
                expected.algorithm, expected.value, entry.size, digests.bytes
            ));
        }
    }
    if content_bytes != entry.content_size {
        return Err(format!(
            "its content is {content_bytes} bytes, the manifest says {}",
            entry.content_size
        ));
    }
    Ok(())
}

/// The content read (decompressed) is the one the manifest describes: its size and sha256.
pub fn content_matches(entry: &FileEntry, digests: &Digests) -> Result<(), String> {
    let sha = digests
        .get(Algorithm::Sha256)
        .map(|c| c.value)
        .unwrap_or_default();
    if digests.bytes != entry.content_size || sha != entry.content_sha256 {
        return Err(format!(
            "content sha256 mismatch: the manifest says {} ({} bytes), the content has {sha} ({} bytes)",
            entry.content_sha256, entry.content_size, digests.bytes
        ));
    }
    Ok(())
}

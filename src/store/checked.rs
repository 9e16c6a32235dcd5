//! The one checked reader of an entry's content (`BackupDir::open_checked`) and the damage it
//! reports.

use std::io::{self, Read};

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

/// An entry's content being read by `open_checked`: `Send`, so another thread may read it.
pub struct Checked {
    inner: Box<dyn Read + Send>,
    entry: FileEntry,
    content: Digester,
    matched: bool,
}

impl Checked {
    pub(super) fn new(inner: Box<dyn Read + Send>, entry: &FileEntry) -> Self {
        Checked {
            inner,
            entry: entry.clone(),
            content: Digester::new(&[Algorithm::Sha256]),
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
            content_matches(&self.entry, &digests).map_err(|problem| self.damage(problem))?;
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

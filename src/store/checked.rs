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
    stored_checksum_matches(entry, &digests)?;
    if digests.bytes != entry.size {
        return Err(format!(
            "its stored file is {} bytes, the manifest says {}",
            digests.bytes, entry.size
        ));
    }
    if content_bytes != entry.content_size {
        return Err(format!(
            "its content is {content_bytes} bytes, the manifest says {}",
            entry.content_size
        ));
    }
    Ok(())
}

/// The stored bytes read have the checksum the manifest gives them (true when it gives none).
pub fn stored_checksum_matches(entry: &FileEntry, stored: &Digests) -> Result<(), String> {
    let Some(expected) = &entry.checksum else {
        return Ok(());
    };
    let actual = stored
        .get(expected.algorithm)
        .map(|c| c.value)
        .unwrap_or_default();
    if actual == expected.value {
        return Ok(());
    }
    Err(format!(
        "checksum mismatch ({}): the manifest says {}, the file has {actual}",
        expected.algorithm, expected.value
    ))
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

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::compress::Compression;
    use crate::format::manifest::Manifest;
    use crate::store::BackupDir;
    use std::fs;

    /// A backup holding `stored` at `rel`, and the entry the manifest gives it: `content` is
    /// what the manifest says the content is.
    fn backup_with(
        rel: &str,
        compression: Compression,
        stored: &[u8],
        content: &[u8],
    ) -> (tempfile::TempDir, BackupDir, FileEntry) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let file = path.join(rel);
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(&file, stored).unwrap();
        let entry = FileEntry {
            path: rel.into(),
            kind: crate::format::manifest::FileKind::CollectionSnapshot,
            size: stored.len() as u64,
            compression: compression.into(),
            checksum: None,
            content_size: content.len() as u64,
            content_sha256: crate::checksum::digest(content, &[Algorithm::Sha256])
                .get(Algorithm::Sha256)
                .unwrap()
                .value,
        };
        let backup = BackupDir::local(path, Manifest::new("0.3.0", 1.0));
        (dir, backup, entry)
    }

    /// All of `entry`'s checked content, or the damage reported.
    fn read_checked(backup: &BackupDir, entry: &FileEntry) -> Result<Vec<u8>, Damaged> {
        read_all(backup.open_checked(entry), entry)
    }

    /// All the content `opened` reads, or the damage reported.
    fn read_all(opened: Result<Checked, Damaged>, entry: &FileEntry) -> Result<Vec<u8>, Damaged> {
        let mut content = Vec::new();
        opened?
            .read_to_end(&mut content)
            .map_err(|e| Damaged::from_read(&entry.path, e))?;
        Ok(content)
    }

    fn zstd(content: &[u8]) -> Vec<u8> {
        zstd::encode_all(content, 1).unwrap()
    }

    const CONTENT: &[u8] = b"the content of a snapshot, as the manifest describes it";

    /// `CONTENT` stored plain and stored compressed.
    fn stored_forms() -> [(Compression, Vec<u8>); 2] {
        [
            (Compression::None, CONTENT.to_vec()),
            (Compression::Zstd, zstd(CONTENT)),
        ]
    }

    #[test]
    fn open_checked_yields_sound_content() {
        for (compression, stored) in stored_forms() {
            let (_dir, backup, entry) = backup_with("collections/a", compression, &stored, CONTENT);
            assert_eq!(
                read_checked(&backup, &entry).unwrap(),
                CONTENT,
                "{compression}"
            );
            // Once it matched, the end stays the end.
            let mut reader = backup.open_checked(&entry).unwrap();
            io::copy(&mut reader, &mut io::sink()).unwrap();
            assert_eq!(reader.read(&mut [0; 8]).unwrap(), 0);
        }
    }

    #[test]
    fn open_checked_reports_one_flipped_byte() {
        let mut flipped = CONTENT.to_vec();
        flipped[7] ^= 1;
        for (compression, stored) in [
            (Compression::None, flipped.clone()),
            (Compression::Zstd, zstd(&flipped)),
        ] {
            let (_dir, backup, entry) = backup_with("collections/a", compression, &stored, CONTENT);
            let damaged = read_checked(&backup, &entry).unwrap_err();
            assert_eq!(damaged.path, "collections/a");
            assert!(
                damaged.to_string().starts_with(
                    "the backup's `collections/a` is damaged: content sha256 mismatch"
                ),
                "{damaged}"
            );
        }
    }

    #[test]
    fn open_checked_reports_truncated_content() {
        let short = &CONTENT[..CONTENT.len() - 5];
        let (_dir, backup, entry) = backup_with("collections/a", Compression::None, short, CONTENT);
        let damaged = read_checked(&backup, &entry).unwrap_err();
        assert!(
            damaged.problem.contains("content sha256 mismatch"),
            "{damaged}"
        );
        assert!(
            damaged.problem.contains("the content has")
                && damaged
                    .problem
                    .ends_with(&format!("({} bytes)", short.len())),
            "{damaged}"
        );
        // A zstd stream cut short cannot be decompressed.
        let stored = zstd(CONTENT);
        let cut = &stored[..stored.len() - 3];
        let (_dir, backup, entry) =
            backup_with("collections/a.zst", Compression::Zstd, cut, CONTENT);
        let damaged = read_checked(&backup, &entry).unwrap_err();
        assert!(
            damaged.problem.starts_with("cannot decompress: "),
            "{damaged}"
        );
    }

    #[test]
    fn open_checked_refuses_content_longer_than_the_manifest_says() {
        let mut longer = CONTENT.to_vec();
        longer.extend_from_slice(b" and more");
        let (_dir, backup, entry) =
            backup_with("collections/a", Compression::None, &longer, CONTENT);
        let damaged = read_checked(&backup, &entry).unwrap_err();
        assert_eq!(
            damaged.problem,
            format!(
                "its content is longer than the {} bytes its manifest says",
                CONTENT.len()
            )
        );
        // Never more than the manifest's size is handed on, however it is read.
        let mut reader = backup.open_checked(&entry).unwrap();
        let mut handed = 0;
        let mut buf = [0; 4];
        while let Ok(n @ 1..) = reader.read(&mut buf) {
            handed += n;
        }
        assert!(handed <= CONTENT.len(), "{handed}");
    }

    #[test]
    fn open_checked_reports_an_entry_it_cannot_open_as_damage() {
        let (_dir, backup, mut entry) =
            backup_with("collections/a", Compression::None, CONTENT, CONTENT);
        entry.path = "collections/missing".into();
        let Err(damaged) = backup.open_checked(&entry) else {
            panic!("opened a missing file");
        };
        assert!(damaged.problem.starts_with("cannot read: "), "{damaged}");
        assert_eq!(
            crate::exit::Classify::exit_code(&damaged),
            crate::exit::ExitCode::InvalidBackup
        );
    }

    /// `entry` with the checksum of `stored` (as `create` records it).
    fn with_stored_checksum(mut entry: FileEntry, stored: &[u8]) -> FileEntry {
        entry.checksum =
            crate::checksum::digest(stored, &[Algorithm::Xxhash64]).get(Algorithm::Xxhash64);
        entry
    }

    fn read_compared(backup: &BackupDir, entry: &FileEntry) -> Result<Vec<u8>, Damaged> {
        read_all(backup.open_compared(entry, Compare::Stored), entry)
    }

    #[test]
    fn compared_by_its_stored_checksum_content_is_read_to_the_stored_end() {
        for (compression, stored) in stored_forms() {
            let (_dir, backup, entry) = backup_with("collections/a", compression, &stored, CONTENT);
            let mut entry = with_stored_checksum(entry, &stored);
            assert_eq!(Compare::stored_for(&entry), Compare::Stored);
            assert_eq!(
                read_compared(&backup, &entry).unwrap(),
                CONTENT,
                "{compression}"
            );
            // The content's sha256 is left to whoever compares it (Qdrant, for an upload).
            entry.content_sha256 = "0".repeat(64);
            assert_eq!(
                read_compared(&backup, &entry).unwrap(),
                CONTENT,
                "{compression}"
            );
            assert!(read_checked(&backup, &entry).is_err(), "{compression}");
        }
    }

    #[test]
    fn compared_by_its_stored_checksum_damage_is_still_found() {
        let mut flipped = CONTENT.to_vec();
        flipped[7] ^= 1;
        // A flipped stored byte the decoder does not notice: the stored checksum does.
        let (_dir, backup, entry) =
            backup_with("collections/a", Compression::None, &flipped, CONTENT);
        let entry = with_stored_checksum(entry, CONTENT);
        let damaged = read_compared(&backup, &entry).unwrap_err();
        assert!(
            damaged
                .problem
                .starts_with("checksum mismatch (xxhash64): the manifest says "),
            "{damaged}"
        );
        // Bytes after the compressed frame.
        let mut longer = zstd(CONTENT);
        let sound = longer.clone();
        longer.extend_from_slice(b"more");
        let (_dir, backup, entry) =
            backup_with("collections/a", Compression::Zstd, &longer, CONTENT);
        assert!(read_compared(&backup, &with_stored_checksum(entry, &sound)).is_err());
        // Content of another size than the manifest's.
        let stored = zstd(CONTENT);
        let (_dir, backup, mut entry) =
            backup_with("collections/a", Compression::Zstd, &stored, CONTENT);
        entry.content_size += 1;
        let damaged = read_compared(&backup, &with_stored_checksum(entry, &stored)).unwrap_err();
        assert_eq!(
            damaged.problem,
            format!(
                "its content is {} bytes, the manifest says {}",
                CONTENT.len(),
                CONTENT.len() + 1
            )
        );
    }

    #[test]
    fn only_a_file_with_a_stored_checksum_is_compared_by_it() {
        let (_dir, _backup, entry) =
            backup_with("collections/a", Compression::Zstd, CONTENT, CONTENT);
        assert_eq!(Compare::stored_for(&entry), Compare::Content, "no checksum");
        let mut entry = with_stored_checksum(entry, CONTENT);
        assert_eq!(Compare::stored_for(&entry), Compare::Stored);
        entry.checksum.as_mut().unwrap().algorithm = Algorithm::None;
        assert_eq!(Compare::stored_for(&entry), Compare::Content, "`none`");
    }
}

//! Reading each file of a backup: its stored checksum, its content against the manifest, and
//! the content check by kind (a snapshot, a database, the config).

use std::io::{self, Read};
use std::path::Path;

use super::chunked::{note_packs_without_index, read_chunks, report_bad_chunks, ChunkTally};
use super::{Check, Depth, Options, Report, Severity};
use crate::checksum::{Algorithm, Digests, HashingReader};
use crate::compress::Stored;
use crate::exit::Interrupted;
use crate::format::manifest::{FileEntry, FileKind, MAX_MANIFEST_BYTES};
use crate::progress::{self, Metered, Progress};
use crate::snapshot;
use crate::sqlite;
use crate::store::{BackupDir, Kind};

/// Reads every listed file that is there as a regular file (check_contents already reported
/// the others).
pub(super) fn check_files(
    report: &mut Report,
    backup: &BackupDir,
    options: &Options,
    progress: &dyn Progress,
) -> Result<(), Interrupted> {
    let mut missing = false;
    for entry in &backup.manifest.files {
        if !backup.stat(&entry.path).is_ok_and(|s| s.kind == Kind::File) {
            continue;
        }
        if entry.compression != Stored::Chunked {
            check_file(report, backup, entry, options.depth, progress)?;
            continue;
        }
        let (sound, missed) = check_chunked_file(report, backup, entry, &options.chunks, progress)?;
        missing |= missed;
        // A small file's content is checked as well (read again); a snapshot's chunks, each
        // matching its name, are the bytes Qdrant sent (restore inspects them as it uploads).
        let small = matches!(entry.kind, FileKind::SqliteDatabase | FileKind::Config);
        if sound && small && options.depth == Depth::Full {
            check_file(report, backup, entry, options.depth, progress)?;
        }
    }
    if missing {
        note_packs_without_index(report, backup);
    }
    Ok(())
}

/// A chunked file: its index against the manifest's checksum, every chunk it names against
/// its own name (each chunk once per run), and the chunks' lengths against the content size.
/// Returns whether all of it was sound, and whether a chunk was missing.
fn check_chunked_file(
    report: &mut Report,
    backup: &BackupDir,
    entry: &FileEntry,
    tally: &ChunkTally,
    progress: &dyn Progress,
) -> Result<(bool, bool), Interrupted> {
    let read = |algorithm| read_chunks(backup, entry, algorithm, tally, progress);
    let Some((index, reading)) = read_or_report(report, entry, read)? else {
        return Ok((false, false));
    };
    let errors_before = report.count(Severity::Error);
    let stored = Reading {
        stored: index,
        content: None,
        problem: None,
    };
    if check_stored_checksum(report, entry, &stored) && reading.content_size != entry.content_size {
        report.add(
            Severity::Error,
            Check::Size,
            Some(&entry.path),
            format!(
                "its chunks add up to {} bytes, the manifest says {}",
                reading.content_size, entry.content_size
            ),
        );
    }
    let missing = report_bad_chunks(report, backup, entry, &reading.bad);
    let sound = report.count(Severity::Error) == errors_before;
    if sound {
        report.add(
            Severity::Ok,
            Check::Checksum,
            Some(&entry.path),
            if tally.selection.is_some() {
                format!(
                    "index checksum, and {} chunks: {} read now, each matching its sha256, {} there but left for another run (`--read-data-subset`), the others checked earlier in this run",
                    reading.chunks, reading.read, reading.looked_up
                )
            } else {
                format!(
                    "index checksum, and {} chunks each matching its sha256 ({} read now, the others earlier in this run)",
                    reading.chunks, reading.read
                )
            },
        );
    }
    Ok((sound, missing))
}

/// What reading one stored file showed.
struct Reading {
    stored: Digests,
    content: Option<Digests>,
    /// The content check (snapshot, database, config) failed with this message.
    problem: Option<(Check, String)>,
}

/// Reads a stored file once: hashes the stored bytes, decompresses, hashes the content and
/// checks it as its kind requires.
fn read_file(
    backup: &BackupDir,
    entry: &FileEntry,
    algorithm: Algorithm,
    depth: Depth,
    progress: &dyn Progress,
) -> io::Result<Reading> {
    let file = backup.open_entry(entry)?;
    let meter = progress.transfer(&entry.path, Some(entry.size));
    let mut stored = HashingReader::new(Metered::new(file, meter), &[algorithm]);
    let mut problem = None;
    // The stored checksum alone vouches for the file, unless there is none or we check it all.
    let read_content = depth == Depth::Full || algorithm == Algorithm::None;
    let content = match backup.decode(entry, &mut stored) {
        _ if !read_content => None,
        Err(e) => {
            problem = Some((Check::Checksum, format!("cannot decompress: {e}")));
            None
        }
        Ok(decoder) => {
            let mut content = HashingReader::new(decoder, &[Algorithm::Sha256]);
            if depth == Depth::Full {
                problem = check_content(entry, &mut content).err();
            }
            match content.finish() {
                Ok(digests) => Some(digests),
                Err(e) if progress::is_interrupted() => return Err(e),
                Err(e) => {
                    problem.get_or_insert((Check::Checksum, format!("cannot decompress: {e}")));
                    None
                }
            }
        }
    };
    let stored = stored.finish();
    Ok(Reading {
        stored: stored?,
        content,
        problem,
    })
}

/// The kind-specific check of a file's original content, read from `content`.
fn check_content(entry: &FileEntry, content: &mut impl Read) -> Result<(), (Check, String)> {
    match entry.kind {
        FileKind::CollectionSnapshot => snapshot::inspect(content)
            .map(drop)
            .map_err(|e| (Check::Snapshot, format!("not a valid Qdrant snapshot: {e}"))),
        FileKind::ShardSnapshot => snapshot::inspect_shard(content).map(drop).map_err(|e| {
            (
                Check::Snapshot,
                format!("not a valid Qdrant shard snapshot: {e}"),
            )
        }),
        FileKind::Config => {
            let mut text = String::new();
            // A configuration file is small; a huge one is read no further than this.
            content
                .take(MAX_MANIFEST_BYTES)
                .read_to_string(&mut text)
                .map_err(|e| (Check::Config, format!("cannot read the configuration: {e}")))?;
            check_config_text(&text).map_err(|e| (Check::Config, e))
        }
        FileKind::SqliteDatabase => {
            // SQLite needs a file it can seek in, and opens it by path: a private copy of the
            // content, never the stored file (a path SQLite would resolve, links and all).
            let copy = decompressed_copy(content)
                .map_err(|e| (Check::Database, format!("cannot decompress: {e}")))?;
            database_problems(copy.path()).map_err(|m| (Check::Database, m))
        }
    }
}

/// Deepest `[`/`{` nesting a configuration may have: YAML's parser takes time quadratic in
/// it, and a real configuration has a few levels.
const MAX_CONFIG_NESTING: usize = 64;

/// The configuration copy of a backup is YAML (checked by `validate --check-files`, and by
/// `restore --with-config` before it is put in place). Nesting is counted first, so a crafted
/// file cannot keep the parser busy for minutes.
pub fn check_config_text(text: &str) -> Result<(), String> {
    let (mut depth, mut quote, mut comment, mut escaped) = (0usize, None, false, false);
    for c in text.chars() {
        match (quote, c) {
            _ if comment => comment = c != '\n',
            (Some('"'), '\\') => escaped = !escaped,
            (Some(q), _) if c == q && !escaped => quote = None,
            (Some(_), _) => escaped = false,
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') => comment = true,
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > MAX_CONFIG_NESTING {
            return Err(format!(
                "the configuration nests `[`/`{{` more than {MAX_CONFIG_NESTING} levels deep"
            ));
        }
    }
    serde_norway::from_str::<serde_norway::Value>(text)
        .map(drop)
        .map_err(|e| format!("the configuration is not valid YAML: {e}"))
}

/// A small file of the backup (a legacy `config.json`), read no further than a manifest may be.
pub(super) fn read_small(backup: &BackupDir, rel: &str) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    backup
        .open_file(rel)?
        .take(MAX_MANIFEST_BYTES)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

pub(super) fn decompressed_copy(content: &mut impl Read) -> io::Result<tempfile::NamedTempFile> {
    let mut copy = tempfile::Builder::new()
        .prefix("wqm-check-")
        .suffix(".db")
        .tempfile()?;
    io::copy(content, copy.as_file_mut())?;
    Ok(copy)
}

/// `PRAGMA integrity_check` of a database file, opened immutable.
pub(super) fn database_problems(path: &Path) -> Result<(), String> {
    let conn =
        sqlite::open_immutable(path).map_err(|e| format!("not a readable SQLite database: {e}"))?;
    match sqlite::integrity_problems(&conn) {
        Ok(problems) if problems.is_empty() => Ok(()),
        Ok(problems) => Err(format!(
            "PRAGMA integrity_check failed: {}",
            problems.join("; ")
        )),
        Err(e) => Err(format!("PRAGMA integrity_check failed: {e}")),
    }
}

/// Reads a listed file with `read` (given the algorithm of its stored checksum); a file that
/// cannot be read is a finding (`None`), and only Ctrl-C stops the audit.
fn read_or_report<T>(
    report: &mut Report,
    entry: &FileEntry,
    read: impl FnOnce(Algorithm) -> io::Result<T>,
) -> Result<Option<T>, Interrupted> {
    let algorithm = entry
        .checksum
        .as_ref()
        .map_or(Algorithm::None, |c| c.algorithm);
    match read(algorithm) {
        Ok(reading) => Ok(Some(reading)),
        Err(_) if progress::is_interrupted() => Err(Interrupted),
        Err(e) => {
            report.add(
                Severity::Error,
                Check::Contents,
                Some(&entry.path),
                format!("cannot read: {e}"),
            );
            Ok(None)
        }
    }
}

/// One listed file read through: its stored checksum, its content's sha256 and size, and (at
/// full depth) its content checked as its kind requires.
fn check_file(
    report: &mut Report,
    backup: &BackupDir,
    entry: &FileEntry,
    depth: Depth,
    progress: &dyn Progress,
) -> Result<(), Interrupted> {
    let read = |algorithm| read_file(backup, entry, algorithm, depth, progress);
    let Some(reading) = read_or_report(report, entry, read)? else {
        return Ok(());
    };
    progress::check_interrupted()?;
    let errors_before = report.count(Severity::Error);
    let stored_matches = check_stored_checksum(report, entry, &reading);
    // A damaged stored file also changes its content; say so only when nothing else did.
    if let Some(content) = reading.content.as_ref().filter(|_| stored_matches) {
        if let Err(problem) = crate::store::content_matches(entry, content) {
            report.add(Severity::Error, Check::Checksum, Some(&entry.path), problem);
        }
    }
    let content_read = reading.content.is_some();
    if let Some((check, message)) = reading.problem {
        report.add(Severity::Error, check, Some(&entry.path), message);
    }
    if report.count(Severity::Error) == errors_before {
        report.add(
            Severity::Ok,
            Check::Checksum,
            Some(&entry.path),
            passed_checks(entry, content_read, depth),
        );
    }
    Ok(())
}

/// Whether the stored bytes match the manifest's checksum (true when it lists none).
fn check_stored_checksum(report: &mut Report, entry: &FileEntry, reading: &Reading) -> bool {
    match crate::store::stored_checksum_matches(entry, &reading.stored) {
        Ok(()) => true,
        Err(problem) => {
            report.add(Severity::Error, Check::Checksum, Some(&entry.path), problem);
            false
        }
    }
}

/// What a file that passed was checked for, e.g. `sha256 matches, a sound SQLite database`.
fn passed_checks(entry: &FileEntry, content_read: bool, depth: Depth) -> String {
    let mut passed: Vec<String> = entry
        .checksum
        .iter()
        .map(|c| format!("{} matches", c.algorithm))
        .collect();
    if content_read {
        passed.push("sha256 matches".to_string());
    }
    if depth == Depth::Full {
        passed.push(
            match entry.kind {
                FileKind::CollectionSnapshot => "a readable Qdrant snapshot",
                FileKind::ShardSnapshot => "a readable Qdrant shard snapshot",
                FileKind::SqliteDatabase => "a sound SQLite database",
                FileKind::Config => "readable YAML",
            }
            .to_string(),
        );
    }
    passed.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deeply_nested_configurations_are_refused_before_parsing() {
        check_config_text("qdrant:\n  url: http://[::1]:6333\nbackup: {a: [1, 2]}\n").unwrap();
        check_config_text(&format!(
            "a: \"{}\" # {}\n",
            "[".repeat(500),
            "{".repeat(500)
        ))
        .unwrap();
        let deep = format!(
            "backup: {}{}\n",
            "[".repeat(1_000_000),
            "]".repeat(1_000_000)
        );
        let started = std::time::Instant::now();
        let err = check_config_text(&deep).unwrap_err();
        assert!(err.contains("more than 64 levels"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert!(check_config_text("a: [\n").is_err());
    }
}

//! Auditing a backup directory: every problem is collected with a severity instead of stopping
//! at the first. `validate` prints the report; `create` and `restore` use the same checks.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::checksum::{Algorithm, Digests, HashingReader};
use crate::compat;
use crate::compress::Compression;
use crate::exit::{Classify, ExitCode, Failure, Interrupted};
use crate::layout::{self, MANIFEST_PATH, REQUIRED_DIRS};
use crate::manifest::{Collections, FileEntry, FileKind, Manifest, MAX_MANIFEST_BYTES};
use crate::progress::{self, Metered, Progress};
use crate::snapshot;
use crate::sqlite;
use crate::store::chunks::{
    self, ChunkBuffer, ChunkId, ChunkProblem, ChunkStore, IndexLine, IndexReader,
};
use crate::store::{self, BackupDir, Kind, Staging};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// A check that passed (shown with `--verbose`).
    Ok,
    Info,
    Warning,
    Error,
}

/// Which check a finding comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    Structure,
    Manifest,
    Version,
    Compatibility,
    Contents,
    Size,
    Checksum,
    Snapshot,
    Database,
    Config,
}

#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub check: Check,
    /// The file concerned, relative to the backup, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub message: String,
}

/// How much of each file to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// Structure, manifest and sizes only; no file is read.
    Structure,
    /// Read each file once for its recorded checksum (the content sha256 when there is none).
    Checksums,
    /// Also decompress and check every content: snapshot archives, database integrity, YAML.
    Full,
}

/// How deep to look.
#[derive(Clone, Debug)]
pub struct Options {
    pub depth: Depth,
    /// The running product version, for the compatibility status.
    pub current_version: String,
    /// The version policy restore applies, for the compatibility verdict.
    pub policy: compat::Policy,
    /// `backup.validation.version_warning_threshold`: warn about backups older than this many days.
    pub warn_after_days: u32,
    /// Epoch seconds now.
    pub now: f64,
    /// The chunks this run has read, shared by every audit made with these options.
    pub chunks: ChunkTally,
}

/// The chunks a run has read and what each showed (`None`: sound), so that `validate
/// --check-files` and `list --check` read each chunk once however many files and backups share it.
#[derive(Clone, Debug, Default)]
pub struct ChunkTally(Arc<Mutex<HashMap<ChunkId, Option<ChunkProblem>>>>);

impl ChunkTally {
    /// A tally that knows `ids` sound already: a create compared them with the data it backed
    /// up, byte for byte, so its verification does not read them a second time.
    pub fn known_sound(ids: HashSet<ChunkId>) -> Self {
        ChunkTally(Arc::new(Mutex::new(
            ids.into_iter().map(|id| (id, None)).collect(),
        )))
    }

    /// Reads and checks the chunks of `lines` this run has not read yet, on `threads` threads
    /// (decompressing and hashing is the work); returns how many it read.
    fn read_new(&self, store: &ChunkStore, lines: &[IndexLine], threads: usize) -> u64 {
        let new: Vec<&IndexLine> = {
            let known = self.0.lock().expect("tally lock");
            let mut seen = HashSet::new();
            lines
                .iter()
                .filter(|l| !known.contains_key(&l.id) && seen.insert(l.id))
                .collect()
        };
        let per_thread = new.len().div_ceil(threads).max(1);
        let found: Vec<(ChunkId, Option<ChunkProblem>)> = std::thread::scope(|scope| {
            let reading: Vec<_> = new
                .chunks(per_thread)
                .map(|part| {
                    scope.spawn(move || {
                        let mut buffer = ChunkBuffer::default();
                        part.iter()
                            .map(|l| {
                                (
                                    l.id,
                                    store.read_chunk(&l.id, l.len, true, &mut buffer).err(),
                                )
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            reading
                .into_iter()
                .flat_map(|t| t.join().expect("a chunk check panicked"))
                .collect()
        });
        let mut known = self.0.lock().expect("tally lock");
        let read = found.len() as u64;
        known.extend(found);
        read
    }

    /// What reading `id` showed (after `read_new`).
    fn problem(&self, id: &ChunkId) -> Option<ChunkProblem> {
        self.0
            .lock()
            .expect("tally lock")
            .get(id)
            .cloned()
            .flatten()
    }
}

/// Chunks checked at a time (on every core).
const CHECK_BATCH: usize = 64;

impl Options {
    /// Checks by the running wqm, as of now, under `policy`; no age warning.
    pub fn new(depth: Depth, policy: compat::Policy) -> Self {
        Options {
            depth,
            current_version: crate::VERSION.to_string(),
            policy,
            warn_after_days: 0,
            now: crate::now(),
            chunks: ChunkTally::default(),
        }
    }

    /// Also warn about backups older than `days` (`backup.validation.version_warning_threshold`).
    pub fn warning_after(self, days: u32) -> Self {
        Options {
            warn_after_days: days,
            ..self
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub path: PathBuf,
    #[serde(skip)]
    pub manifest: Option<Manifest>,
    pub compatibility: Option<compat::Report>,
    pub checked_files: bool,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }

    /// Every error except version incompatibility, as `file: message` lines: what makes a
    /// backup damaged, whatever version reads it.
    pub fn damage(&self) -> Vec<String> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error && f.check != Check::Compatibility)
            .map(|f| {
                format!(
                    "{}{}",
                    f.file
                        .as_ref()
                        .map(|p| format!("{p}: "))
                        .unwrap_or_default(),
                    f.message
                )
            })
            .collect()
    }

    pub fn is_valid(&self) -> bool {
        self.count(Severity::Error) == 0
    }

    /// True when every error is a version incompatibility (exit 4 rather than 3).
    pub fn only_incompatible(&self) -> bool {
        let mut errors = self
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .peekable();
        errors.peek().is_some() && errors.all(|f| f.check == Check::Compatibility)
    }

    fn add(
        &mut self,
        severity: Severity,
        check: Check,
        file: Option<&str>,
        message: impl Into<String>,
    ) {
        self.findings.push(Finding {
            severity,
            check,
            file: file.map(str::to_string),
            message: message.into(),
        });
    }
}

/// Audits the backup at `path`. Only Ctrl-C stops it early.
pub fn audit(
    path: &Path,
    options: &Options,
    progress: &dyn Progress,
) -> Result<Report, AuditError> {
    let mut report = Report {
        path: path.to_path_buf(),
        manifest: None,
        compatibility: None,
        checked_files: options.depth != Depth::Structure,
        findings: Vec::new(),
    };
    if let Err(e) = layout::ensure_backup_dir(path) {
        report.add(Severity::Error, Check::Structure, None, e.to_string());
        return Ok(report);
    }
    check_structure(&mut report, path);
    // Without a manifest there is nothing more to compare the backup with.
    let Some(manifest) = check_manifest(&mut report, path, options) else {
        return Ok(report);
    };
    let backup = BackupDir {
        path: path.to_path_buf(),
        manifest,
    };
    if backup.manifest.is_legacy() {
        check_legacy(&mut report, &backup, options)?;
    } else {
        check_contents(&mut report, &backup);
        check_chunk_store(&mut report, &backup)?;
        if options.depth != Depth::Structure {
            check_files(&mut report, &backup, options, progress)?;
        }
    }
    report.manifest = Some(backup.manifest);
    Ok(report)
}

/// `verify_after_backup`: re-reads every staged file and checks it before the backup is renamed
/// into place.
pub(crate) fn verify_staged(staging: &Staging, progress: &dyn Progress) -> anyhow::Result<()> {
    progress.step("verifying the new backup");
    let mut options = Options::new(Depth::Checksums, Default::default());
    options.chunks = ChunkTally::known_sound(staging.chunks_found_sound());
    let report = audit(staging.dir(), &options, progress)?;
    if let Some(problem) = report
        .findings
        .iter()
        .find(|f| f.severity == Severity::Error)
    {
        let file = problem
            .file
            .as_ref()
            .map(|f| format!("{f}: "))
            .unwrap_or_default();
        return Err(Failure::new(
            ExitCode::Failure,
            format!(
                "the new backup failed verification: {file}{}",
                problem.message
            ),
        )
        .with_hint(
            "nothing was kept; check the disk (and its free space), then run the command again",
        )
        .into());
    }
    Ok(())
}

/// The directories every backup has.
fn check_structure(report: &mut Report, path: &Path) {
    let missing: Vec<&str> = REQUIRED_DIRS
        .into_iter()
        .filter(|d| !store::stat_in(path, d).is_ok_and(|s| s.kind == Kind::Dir))
        .collect();
    if missing.is_empty() {
        report.add(
            Severity::Ok,
            Check::Structure,
            None,
            "Directory structure (metadata/, collections/, sqlite/)",
        );
    } else {
        let list = missing
            .iter()
            .map(|d| format!("`{d}/`"))
            .collect::<Vec<_>>()
            .join(", ");
        report.add(
            Severity::Error,
            Check::Structure,
            None,
            format!("Invalid backup directory structure: missing {list}"),
        );
    }
}

/// Reads the manifest and checks its version and age; `None` when it cannot be read.
fn check_manifest(report: &mut Report, path: &Path, options: &Options) -> Option<Manifest> {
    let manifest = match BackupDir::read_manifest(path) {
        Ok(m) => m,
        Err(e) => {
            report.add(
                Severity::Error,
                Check::Manifest,
                Some(MANIFEST_PATH),
                e.to_string(),
            );
            return None;
        }
    };
    let format = match manifest.format_version {
        Some(v) => format!("format {v}"),
        None => "legacy Python format".to_string(),
    };
    report.add(
        Severity::Ok,
        Check::Manifest,
        Some(MANIFEST_PATH),
        format!("Manifest is valid ({format})"),
    );
    check_version(report, &manifest, &options.current_version, &options.policy);
    if let Some(warning) = staleness(&manifest, options.warn_after_days, options.now) {
        report.add(Severity::Warning, Check::Manifest, None, warning);
    }
    Some(manifest)
}

/// Reads every listed file that is there as a regular file (check_contents already reported
/// the others).
fn check_files(
    report: &mut Report,
    backup: &BackupDir,
    options: &Options,
    progress: &dyn Progress,
) -> Result<(), Interrupted> {
    for entry in &backup.manifest.files {
        if !backup.stat(&entry.path).is_ok_and(|s| s.kind == Kind::File) {
            continue;
        }
        if entry.compression != Compression::Chunks {
            check_file(report, backup, entry, options.depth, progress)?;
            continue;
        }
        let sound = check_chunked_file(report, backup, entry, &options.chunks, progress)?;
        // A small file's content is checked as well (read again); a snapshot's chunks, each
        // matching its name, are the bytes Qdrant sent (restore inspects them as it uploads).
        let small = matches!(entry.kind, FileKind::SqliteDatabase | FileKind::Config);
        if sound && small && options.depth == Depth::Full {
            check_file(report, backup, entry, options.depth, progress)?;
        }
    }
    Ok(())
}

/// Why an audit stopped without a verdict on the backup.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
    /// The chunk store could not be held (a garbage collection has it past the wait, or the wait
    /// was interrupted): that says nothing about the backup, so it is no finding.
    #[error(transparent)]
    StoreBusy(chunks::ChunkError),
}

impl Classify for AuditError {
    fn exit_code(&self) -> ExitCode {
        match self {
            AuditError::Interrupted(e) => e.exit_code(),
            AuditError::StoreBusy(e) => e.exit_code(),
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            AuditError::Interrupted(e) => e.hint(),
            AuditError::StoreBusy(e) => e.hint(),
        }
    }
}

/// An incremental backup needs the chunk store beside it.
fn check_chunk_store(report: &mut Report, backup: &BackupDir) -> Result<(), AuditError> {
    let chunked = backup
        .manifest
        .files
        .iter()
        .any(|f| f.compression == Compression::Chunks);
    if chunked {
        match ChunkStore::open_for_reading(backup.backups_dir()) {
            Ok(_) => {}
            Err(e) if e.is_busy() => return Err(AuditError::StoreBusy(e)),
            Err(e) => report.add(Severity::Error, Check::Contents, None, e.to_string()),
        }
    }
    Ok(())
}

/// What reading a chunked file's chunks showed.
#[derive(Default)]
struct ChunkReading {
    chunks: u64,
    /// Chunks read now (the others were read earlier in this run).
    read: u64,
    /// The chunks' lengths added up.
    content_size: u64,
    bad: Vec<(ChunkId, ChunkProblem)>,
}

/// A chunked file: its index against the manifest's checksum, every chunk it names against
/// its own name (each chunk once per run), and the chunks' lengths against the content size.
/// Returns whether all of it was sound.
fn check_chunked_file(
    report: &mut Report,
    backup: &BackupDir,
    entry: &FileEntry,
    tally: &ChunkTally,
    progress: &dyn Progress,
) -> Result<bool, Interrupted> {
    let read = |algorithm| read_chunks(backup, entry, algorithm, tally, progress);
    let Some((index, reading)) = read_or_report(report, entry, read)? else {
        return Ok(false);
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
    report_bad_chunks(report, backup, entry, &reading.bad);
    let sound = report.count(Severity::Error) == errors_before;
    if sound {
        report.add(
            Severity::Ok,
            Check::Checksum,
            Some(&entry.path),
            format!(
                "index checksum, and {} chunks each matching its sha256 ({} read now, the others earlier in this run)",
                reading.chunks, reading.read
            ),
        );
    }
    Ok(sound)
}

/// Reads a chunked file's index (returning its digests as stored) and each chunk it names
/// that this run has not read yet.
fn read_chunks(
    backup: &BackupDir,
    entry: &FileEntry,
    algorithm: Algorithm,
    tally: &ChunkTally,
    progress: &dyn Progress,
) -> io::Result<(Digests, ChunkReading)> {
    let store: Arc<ChunkStore> = backup.chunk_store()?;
    let mut stored = HashingReader::new(backup.open_entry(entry)?, &[algorithm]);
    let mut index = IndexReader::new(BufReader::new(&mut stored))?;
    let mut reading = ChunkReading::default();
    progress.begin(&entry.path, Some(entry.content_size));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut batch = Vec::with_capacity(CHECK_BATCH);
    let result = (|| loop {
        batch.clear();
        while batch.len() < CHECK_BATCH {
            match index.next_line()? {
                Some(line) => batch.push(line),
                None => break,
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        if progress::is_interrupted() {
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        reading.read += tally.read_new(&store, &batch, threads);
        for line in &batch {
            reading.chunks += 1;
            reading.content_size += line.len as u64;
            if let Some(problem) = tally.problem(&line.id) {
                reading.bad.push((line.id, problem));
            }
            progress.advance(line.len as u64);
        }
    })();
    progress.end();
    result?;
    drop(index);
    Ok((stored.finish()?, reading))
}

/// One error per missing or damaged chunk, naming the chunk's file in the store and every
/// backup of the directory that needs it.
fn report_bad_chunks(
    report: &mut Report,
    backup: &BackupDir,
    entry: &FileEntry,
    bad: &[(ChunkId, ChunkProblem)],
) {
    if bad.is_empty() {
        return;
    }
    let ids: HashSet<ChunkId> = bad.iter().map(|(id, _)| *id).collect();
    let users = chunks::backups_using(backup.backups_dir(), &ids);
    let mut reported = HashSet::new();
    for (id, problem) in bad {
        if !reported.insert(*id) {
            continue;
        }
        let needed_by = users
            .get(id)
            .map(|names| names.join(", "))
            .unwrap_or_default();
        report.add(
            Severity::Error,
            Check::Checksum,
            Some(&entry.path),
            format!("chunk `{id}` {problem}; backups that need it: {needed_by}"),
        );
    }
}

/// A warning when the backup is older than `threshold_days` (0 turns the warning off).
pub fn staleness(manifest: &Manifest, threshold_days: u32, now: f64) -> Option<String> {
    let age_days = (now - manifest.timestamp) / 86_400.0;
    (threshold_days > 0 && age_days > f64::from(threshold_days)).then(|| {
        format!(
            "Backup is {} days old, older than `backup.validation.version_warning_threshold` ({threshold_days} days)",
            age_days.floor()
        )
    })
}

/// The compatibility finding says what restore would do: an error only when restore refuses
/// whatever the flags, a warning when it needs a flag or setting (or proceeds despite a
/// mismatch).
fn check_version(report: &mut Report, manifest: &Manifest, current: &str, policy: &compat::Policy) {
    match crate::migrations::verdict(&manifest.version, current, policy) {
        Err(e) => report.add(Severity::Error, Check::Version, None, e.to_string()),
        Ok(compat) => {
            report.add(
                Severity::Ok,
                Check::Version,
                None,
                format!("Version format is valid ({})", manifest.version),
            );
            let severity = match (compat.verdict, compat.restorable) {
                (compat::Verdict::Compatible, _) => Severity::Ok,
                (compat::Verdict::UpgradeAvailable | compat::Verdict::MigrationAvailable, _) => {
                    Severity::Info
                }
                (compat::Verdict::Incompatible, false) => Severity::Error,
                _ => Severity::Warning,
            };
            let message = if severity == Severity::Error {
                format!(
                    "Incompatible backup version: {}\nCurrent system version: {current}\nMajor or minor version mismatch detected",
                    manifest.version
                )
            } else {
                format!("Compatibility {}: {}", compat.verdict, compat.message)
            };
            report.add(severity, Check::Compatibility, None, message);
            report.compatibility = Some(compat);
        }
    }
}

/// Format 1: the manifest's own consistency, every listed file present with its size, and no
/// file the manifest does not list. (Every name in it was checked when it was parsed.)
fn check_contents(report: &mut Report, backup: &BackupDir) {
    let manifest = &backup.manifest;
    let errors_before = report.count(Severity::Error);
    let mut listed = check_listed_files(report, backup);
    for name in manifest.collection_names() {
        check_collection_entry(report, manifest, name);
    }
    check_databases_listed(report, manifest);
    check_totals(report, manifest);

    listed.insert(MANIFEST_PATH);
    for unexpected in files_not_in(backup, &listed) {
        report.add(
            Severity::Error,
            Check::Contents,
            Some(&unexpected),
            "unexpected file: not listed in the manifest",
        );
    }
    if report.count(Severity::Error) == errors_before {
        report.add(
            Severity::Ok,
            Check::Contents,
            None,
            format!(
                "All {} files listed in the manifest are present with their sizes",
                manifest.files.len()
            ),
        );
    }
}

/// Each file the manifest lists, once, as a regular file of the listed size; returns the
/// listed paths.
fn check_listed_files<'a>(report: &mut Report, backup: &'a BackupDir) -> BTreeSet<&'a str> {
    let mut listed = BTreeSet::new();
    for entry in &backup.manifest.files {
        if !listed.insert(entry.path.as_str()) {
            report.add(
                Severity::Error,
                Check::Manifest,
                Some(&entry.path),
                "listed twice in the manifest",
            );
            continue;
        }
        match backup.stat(&entry.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => report.add(Severity::Error, Check::Contents, Some(&entry.path), "missing: listed in the manifest but not in the backup"),
            Err(e) => report.add(Severity::Error, Check::Contents, Some(&entry.path), format!("cannot be read: {e}")),
            Ok(stat) if stat.kind == Kind::Symlink => report.add(Severity::Error, Check::Contents, Some(&entry.path), "a symbolic link: wqm never follows links in a backup"),
            Ok(stat) if stat.kind != Kind::File => report.add(Severity::Error, Check::Contents, Some(&entry.path), "not a regular file"),
            Ok(stat) if stat.len != entry.size => report.add(
                Severity::Error,
                Check::Size,
                Some(&entry.path),
                format!("size mismatch: the manifest says {} bytes, the file has {} (truncated or replaced)", entry.size, stat.len),
            ),
            Ok(_) => {}
        }
    }
    listed
}

/// One collection: a safe name, its `collection_details`, its snapshots among the files (of
/// the kind its shards call for) and the same point count in both places.
fn check_collection_entry(report: &mut Report, manifest: &Manifest, name: &str) {
    if let Err(e) = layout::check_name(name) {
        report.add(Severity::Error, Check::Manifest, None, e.to_string());
        return;
    }
    let Some(details) = manifest.collection_details.get(name) else {
        report.add(
            Severity::Error,
            Check::Manifest,
            None,
            format!("collection `{name}` has no entry in `collection_details`"),
        );
        return;
    };
    let wanted = if details.shards.is_empty() {
        FileKind::CollectionSnapshot
    } else {
        FileKind::ShardSnapshot
    };
    for snapshot in details.snapshot_files() {
        if manifest.file(snapshot).is_none_or(|f| f.kind != wanted) {
            report.add(
                Severity::Error,
                Check::Manifest,
                None,
                format!("the snapshot of collection `{name}` (`{snapshot}`) is not among the manifest's files"),
            );
        }
    }
    let counted = manifest.collections.as_ref().and_then(|c| c.count_of(name));
    if counted.is_some_and(|n| n != details.points_count) {
        report.add(
            Severity::Error,
            Check::Manifest,
            None,
            format!(
                "collection `{name}`: `collections` says {} points, `collection_details` {}",
                counted.unwrap_or_default(),
                details.points_count
            ),
        );
    }
}

/// Every database the manifest names is among its files, as a SQLite database.
fn check_databases_listed(report: &mut Report, manifest: &Manifest) {
    for database in &manifest.databases {
        if manifest
            .file(&database.file)
            .is_none_or(|f| f.kind != FileKind::SqliteDatabase)
        {
            report.add(
                Severity::Error,
                Check::Manifest,
                None,
                format!(
                    "database `{}` (`{}`) is not among the manifest's files",
                    database.name, database.file
                ),
            );
        }
    }
}

/// Warnings only: a total that disagrees with the per-collection counts, and a partial backup
/// that does not say what it selected.
fn check_totals(report: &mut Report, manifest: &Manifest) {
    if let (Some(total), Some(Collections::Counts(counts))) =
        (manifest.total_documents, &manifest.collections)
    {
        let sum: u64 = counts.values().sum();
        if sum != total {
            report.add(
                Severity::Warning,
                Check::Manifest,
                None,
                format!("`total_documents` is {total} but the collections add up to {sum}"),
            );
        }
    }
    if manifest.partial_backup && manifest.selected_collections.is_none() {
        report.add(
            Severity::Warning,
            Check::Manifest,
            None,
            "a partial backup without `selected_collections`",
        );
    }
}

/// Every file (or symlink) in the backup whose relative path is not in `expected`.
fn files_not_in(backup: &BackupDir, expected: &BTreeSet<&str>) -> Vec<String> {
    backup
        .list()
        .into_iter()
        .filter(|rel| !expected.contains(rel.as_str()))
        .collect()
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
    progress.begin(&entry.path, Some(entry.size));
    let mut stored = HashingReader::new(Metered::new(file, progress), &[algorithm]);
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
    progress.end();
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
fn read_small(backup: &BackupDir, rel: &str) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    backup
        .open_file(rel)?
        .take(MAX_MANIFEST_BYTES)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn decompressed_copy(content: &mut impl Read) -> io::Result<tempfile::NamedTempFile> {
    let mut copy = tempfile::Builder::new()
        .prefix("wqm-check-")
        .suffix(".db")
        .tempfile()?;
    io::copy(content, copy.as_file_mut())?;
    Ok(copy)
}

/// `PRAGMA integrity_check` of a database file, opened immutable.
fn database_problems(path: &Path) -> Result<(), String> {
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
        if let Err(problem) = content_matches(entry, content) {
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
    let Some(expected) = &entry.checksum else {
        return true;
    };
    let actual = reading
        .stored
        .get(expected.algorithm)
        .map(|c| c.value)
        .unwrap_or_default();
    if actual == expected.value {
        return true;
    }
    report.add(
        Severity::Error,
        Check::Checksum,
        Some(&entry.path),
        format!(
            "checksum mismatch ({}): the manifest says {}, the file has {actual}",
            expected.algorithm, expected.value
        ),
    );
    false
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

/// Legacy Python backups: `collections/<name>.config.json` per collection and, when present,
/// `sqlite/state.db`. Nothing carries a checksum.
fn check_legacy(
    report: &mut Report,
    backup: &BackupDir,
    options: &Options,
) -> Result<(), Interrupted> {
    let manifest = &backup.manifest;
    let is_file = |rel: &str| backup.stat(rel).is_ok_and(|s| s.kind == Kind::File);
    let mut expected: BTreeSet<String> = BTreeSet::from([MANIFEST_PATH.to_string()]);
    for name in manifest.collection_names() {
        if let Err(e) = layout::check_name(name) {
            report.add(Severity::Error, Check::Manifest, None, e.to_string());
            continue;
        }
        let rel = layout::legacy_collection_config_path(name);
        if !is_file(&rel) {
            report.add(
                Severity::Warning,
                Check::Contents,
                Some(&rel),
                "missing collection metadata (legacy backups never held vectors)",
            );
        } else if options.depth != Depth::Structure {
            if let Err(e) = read_small(backup, &rel)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    serde_json::from_slice::<serde_json::Value>(&b).map_err(|e| e.to_string())
                })
            {
                report.add(
                    Severity::Error,
                    Check::Contents,
                    Some(&rel),
                    format!("not valid JSON: {e}"),
                );
            }
        }
        expected.insert(rel);
    }
    let state_db = format!("{}/state.db", layout::SQLITE_DIR);
    if is_file(&state_db) {
        if options.depth != Depth::Structure {
            progress::check_interrupted()?;
            let checked = backup
                .open_file(&state_db)
                .and_then(|mut file| decompressed_copy(&mut file))
                .map_err(|e| format!("cannot read: {e}"))
                .and_then(|copy| database_problems(copy.path()));
            match checked {
                Ok(()) => report.add(
                    Severity::Ok,
                    Check::Database,
                    Some(&state_db),
                    "a sound SQLite database",
                ),
                Err(m) => report.add(Severity::Error, Check::Database, Some(&state_db), m),
            }
        }
        expected.insert(state_db);
    } else {
        report.add(
            Severity::Info,
            Check::Contents,
            Some(&state_db),
            "no state database in this backup",
        );
    }
    let expected: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
    for unexpected in files_not_in(backup, &expected) {
        report.add(
            Severity::Warning,
            Check::Contents,
            Some(&unexpected),
            "unexpected file: not part of a legacy backup",
        );
    }
    Ok(())
}

/// The content read (decompressed) is the one the manifest describes: its size and sha256.
pub(crate) fn content_matches(entry: &FileEntry, digests: &Digests) -> Result<(), String> {
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

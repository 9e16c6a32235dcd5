//! Auditing a backup directory: every problem is collected with a severity instead of stopping
//! at the first. `validate` prints the report; `create` and `restore` use the same checks.
//!
//! `audit` runs them: `structure` (the directories, the manifest, the version, what it lists, a
//! legacy backup), `chunked` (the chunk store an incremental backup names) and `files` (each
//! file's stored checksum, its content against the manifest, the content check by kind).
//! `verify_staged` audits a staged backup before it is put in place.

mod chunked;
mod files;
mod structure;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::exit::{Classify, ExitCode, Failure, Interrupted};
use crate::format::compat;
use crate::format::layout;
use crate::format::manifest::Manifest;
use crate::progress::Progress;
use crate::store::chunks;
use crate::store::{BackupDir, Place, Staging};

pub use chunked::ChunkTally;
use chunked::{check_chunk_store, check_refs};
pub use files::check_config_text;
use files::check_files;
pub use structure::staleness;
use structure::{check_contents, check_legacy, check_manifest, check_structure};

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
    audit_at(&Place::Local(path.to_path_buf()), options, progress)
}

/// Audits the backup at `place`, local or remote. Only Ctrl-C stops it early.
pub fn audit_at(
    place: &Place,
    options: &Options,
    progress: &dyn Progress,
) -> Result<Report, AuditError> {
    let mut report = Report {
        path: place.shown(),
        manifest: None,
        compatibility: None,
        checked_files: options.depth != Depth::Structure,
        findings: Vec::new(),
    };
    match place {
        Place::Local(path) => {
            if let Err(e) = layout::ensure_backup_dir(path) {
                report.add(Severity::Error, Check::Structure, None, e.to_string());
                return Ok(report);
            }
            check_structure(&mut report, path);
        }
        Place::Remote(remote) => {
            if !remote.exists() {
                let e = layout::LayoutError::NotFound {
                    path: remote.shown(),
                };
                report.add(Severity::Error, Check::Structure, None, e.to_string());
                return Ok(report);
            }
            // Object storage has no directories: an empty one of the local layout is simply
            // absent, and every object the manifest names is checked below.
            report.add(
                Severity::Ok,
                Check::Structure,
                None,
                "Object layout (directories are implied by the objects' names)",
            );
        }
    }
    // Without a manifest there is nothing more to compare the backup with.
    let Some(manifest) = check_manifest(&mut report, place, options) else {
        return Ok(report);
    };
    let backup = match place {
        Place::Local(path) => BackupDir::local(path.to_path_buf(), manifest),
        Place::Remote(remote) => BackupDir::of_remote(remote.clone(), manifest),
    };
    if backup.manifest.is_legacy() {
        check_legacy(&mut report, &backup, options)?;
    } else {
        check_contents(&mut report, &backup);
        check_chunk_store(&mut report, &backup)?;
        if options.depth != Depth::Structure {
            check_files(&mut report, &backup, options, progress)?;
            check_refs(&mut report, &backup);
        }
    }
    report.manifest = Some(backup.manifest);
    Ok(report)
}

/// What `verify_staged` read of the chunk store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Verified {
    /// Chunks read back and checked against their names: those the run stored (none on the
    /// way to S3, whose courier checked each as it landed).
    pub chunks_read: u64,
    /// Chunks only looked up: the ones the run found in the store and reused (and on the way
    /// to S3 those it stored).
    pub chunks_looked_up: u64,
}

/// `verify_after_backup`: re-reads every staged file and checks it before the backup is renamed
/// into place. Of the chunk store it reads back the chunks this run stored (unless each was as
/// it landed: `Staging::chunks_to_read_back`); the chunks it reused were there before, so it
/// checks only that they still are (the run compared its share of them with its data as it
/// wrote: `chunks::Run`).
pub(crate) fn verify_staged(
    staging: &Staging,
    progress: &dyn Progress,
) -> anyhow::Result<Verified> {
    progress.step("verifying the new backup");
    let mut options = Options::new(Depth::Checksums, Default::default());
    options.chunks = ChunkTally::reading_only(staging.chunks_to_read_back());
    let report = audit(staging.dir(), &options, progress)?;
    if let Some(problem) = report
        .findings
        .iter()
        .find(|f| f.severity == Severity::Error)
    {
        set_aside_damaged(&report, &options.chunks);
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
    let (chunks_read, chunks_looked_up) = options.chunks.counts();
    Ok(Verified {
        chunks_read,
        chunks_looked_up,
    })
}

/// Takes the name from each chunk this run stored and found damaged (`ChunkStore::set_aside`),
/// so the next run stores it again rather than reusing it unread. Best effort: the run fails
/// either way, and `validate` names a chunk left damaged.
fn set_aside_damaged(report: &Report, tally: &ChunkTally) {
    let damaged = tally.damaged();
    let Some(manifest) = report.manifest.clone().filter(|_| !damaged.is_empty()) else {
        return;
    };
    let backup = BackupDir::local(report.path.clone(), manifest);
    if let Ok(store) = backup.chunk_store() {
        for id in &damaged {
            let _ = store.set_aside(id);
        }
    }
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

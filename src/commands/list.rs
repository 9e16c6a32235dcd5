//! `wqm backup list DIR`: every backup directly in a directory, sorted.

use std::cmp::Reverse;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cli::{ListArgs, SortKey};
use crate::compress::Stored;
use crate::config::Settings;
use crate::exit::ExitCode;
use crate::format::compat::{self, Version};
use crate::output::{self, Ui};
use crate::progress::Progress;
use crate::store::lock::RepoLock;
use crate::store::{self, BackupDir, Scan, Seen};
use crate::verify;

/// One backup as `list --json` prints it (the Python fields, then ours).
#[derive(Serialize)]
struct Item {
    path: String,
    name: String,
    version: String,
    timestamp: f64,
    formatted_timestamp: String,
    /// How many collections.
    collections: usize,
    total_documents: Option<u64>,
    description: Option<String>,
    format: String,
    size_bytes: u64,
    /// An incremental backup: its data is in the directory's chunk store, and this is its
    /// content's size (`wqm backup info` tells what it alone holds there).
    #[serde(skip_serializing_if = "Option::is_none")]
    incremental_content_bytes: Option<u64>,
    partial_backup: bool,
    /// A safety backup `restore` made (`safety-YYYYMMDD-HHMMSS`): `prune` keeps these by
    /// `backup.safety_retention`, apart from the other backups.
    safety_backup: bool,
    /// The Python status.
    compatibility: Option<compat::Status>,
    /// What restore would do with it, as configured (`info` and `validate` say the same).
    verdict: Option<compat::Verdict>,
    restorable: Option<bool>,
    compatibility_message: Option<String>,
    stale_warning: Option<String>,
    age_days: u64,
    /// No damage found by the cheap checks (all checks with `--check`).
    valid: bool,
    problems: Vec<String>,
}

/// A backup of the directory and its size on disk.
struct Found<'a> {
    backup: &'a BackupDir,
    size: u64,
}

pub fn run(
    args: &ListArgs,
    settings: &Settings,
    ui: &Ui,
    handle: &tokio::runtime::Handle,
) -> Result<ExitCode> {
    let dir = &args.directory;
    let repository = super::repository(dir, settings, handle)?;
    // Reading every backup's chunks (`--check`) is a reader's run: no prune meanwhile.
    if let store::Repository::Local(dir) = &repository {
        super::backups_dir(dir)?;
    }
    let _lock = match args.check {
        true => Some(RepoLock::shared(&repository, "backup list --check")?),
        false => None,
    };
    let scan = store::scan_at(&repository)
        .with_context(|| format!("cannot read directory `{}`", dir.display()))?;
    warn_unreadable(&scan, ui);
    // Sizes on disk are a walk of each backup: only `list` needs them.
    let mut backups: Vec<Found> = scan
        .backups()
        .map(|backup| Found {
            size: backup.size().unwrap_or(0),
            backup,
        })
        .collect();
    sort(&mut backups, args.sort);
    let depth = if args.check {
        verify::Depth::Full
    } else {
        verify::Depth::Structure
    };
    let options = verify::Options::new(
        depth,
        crate::format::compat::Policy::new(&settings.backup.validation, false),
    );
    let threshold = settings.backup.validation.version_warning_threshold;
    warn_future_dated(&backups, options.now, ui);
    let progress = ui.progress();
    let items = backups
        .into_iter()
        .map(|found| Item::of(&found, &options, &progress, threshold))
        .collect::<Result<Vec<_>, _>>()?;

    if ui.json {
        ui.json(&items);
        return Ok(ExitCode::Success);
    }
    if items.is_empty() {
        ui.line(format!("No backups found in {}", dir.display()));
        return Ok(ExitCode::Success);
    }
    for item in &items {
        item.print(ui);
    }
    ui.line(format!("{} backup(s) in {}", items.len(), dir.display()));
    Ok(ExitCode::Success)
}

/// A backup dated after now (another machine's clock, or this one's set back) shows an age of 0
/// days; say what it is, as `prune` does.
fn warn_future_dated(backups: &[Found], now: f64, ui: &Ui) {
    for found in backups {
        let manifest = &found.backup.manifest;
        if manifest.timestamp > now {
            ui.warn(format!(
                "`{}` is dated {}, in the future: prune keeps it, and counts it by no keep rule; check the clock of this machine and of the one that made it",
                found.backup.name(),
                manifest.formatted_timestamp()
            ));
        }
    }
}

/// An entry that looks like a backup but cannot be read is skipped, not fatal, so say so.
fn warn_unreadable(scan: &Scan, ui: &Ui) {
    for entry in &scan.entries {
        if let Seen::Unreadable(problem) = &entry.seen {
            ui.warn(format!("skipping `{}`: {problem}", entry.path.display()));
        }
    }
}

impl Item {
    /// Audits one backup (as deep as `options` say) and describes it.
    fn of(
        found: &Found<'_>,
        options: &verify::Options,
        progress: &dyn Progress,
        threshold: u32,
    ) -> Result<Item, verify::AuditError> {
        let m = &found.backup.manifest;
        let now = options.now;
        let audit = verify::audit_at(&found.backup.place(), options, progress)?;
        let problems = audit.damage();
        let compatibility = audit.compatibility;
        Ok(Item {
            path: found.backup.path.display().to_string(),
            name: found.backup.name(),
            version: m.version.clone(),
            timestamp: m.timestamp,
            formatted_timestamp: m.formatted_timestamp(),
            collections: m.collection_names().len(),
            total_documents: m.total_documents,
            description: m.description.clone(),
            format: m.format_name(),
            size_bytes: found.size,
            incremental_content_bytes: (m.compression == Some(Stored::Chunked))
                .then(|| m.files.iter().map(|f| f.content_size).sum()),
            partial_backup: m.partial_backup,
            safety_backup: crate::prune::is_safety_backup(&found.backup.name()),
            compatibility: compatibility.as_ref().map(|c| c.status),
            verdict: compatibility.as_ref().map(|c| c.verdict),
            restorable: compatibility.as_ref().map(|c| c.restorable),
            compatibility_message: compatibility.map(|c| c.message),
            stale_warning: crate::verify::staleness(m, threshold, now),
            age_days: ((now - m.timestamp).max(0.0) / 86_400.0) as u64,
            valid: problems.is_empty(),
            problems,
        })
    }

    /// The human-readable block for one backup.
    fn print(&self, ui: &Ui) {
        ui.line(&self.name);
        if self.safety_backup {
            ui.line("  Kind: safety backup (made by a restore; `prune` keeps these by `backup.safety_retention`)");
        }
        ui.line(format!("  Version: {}", self.version));
        if let Some(verdict) = self.verdict {
            ui.line(format!("  Compatibility: {verdict}"));
        }
        ui.line(format!("  Timestamp: {}", self.formatted_timestamp));
        let documents = self
            .total_documents
            .map(|n| format!(", {n} documents"))
            .unwrap_or_default();
        let partial = if self.partial_backup {
            " (partial)"
        } else {
            ""
        };
        ui.line(format!(
            "  Collections: {}{documents}{partial}",
            self.collections
        ));
        ui.line(format!("  Age: {} days", self.age_days));
        match self.incremental_content_bytes {
            Some(content) => ui.line(format!(
                "  Size: {} (incremental: {} of content, in the chunk store)",
                output::size(self.size_bytes),
                output::size(content)
            )),
            None => ui.line(format!("  Size: {}", output::size(self.size_bytes))),
        }
        ui.line(self.validity());
        if let Some(description) = &self.description {
            ui.line(format!("  Description: {description}"));
        }
        if let Some(warning) = &self.stale_warning {
            ui.line(format!("  Warning: {warning}"));
        }
    }

    /// `Valid: yes`, or the first problem and how many more there are.
    fn validity(&self) -> String {
        match self.problems.first() {
            None => "  Valid: yes".to_string(),
            Some(first) => format!(
                "  Valid: no ({first}{})",
                if self.problems.len() > 1 {
                    format!("; {} more", self.problems.len() - 1)
                } else {
                    String::new()
                }
            ),
        }
    }
}

/// Name A→Z; timestamp, size and version newest/largest first. Ties fall back to the name.
fn sort(backups: &mut [Found<'_>], key: SortKey) {
    backups.sort_by_key(|f| f.backup.name());
    match key {
        SortKey::Name => {}
        SortKey::Timestamp => backups.sort_by(|a, b| {
            b.backup
                .manifest
                .timestamp
                .total_cmp(&a.backup.manifest.timestamp)
        }),
        SortKey::Size => backups.sort_by_key(|f| Reverse(f.size)),
        // Unparseable versions sort last.
        SortKey::Version => backups.sort_by_key(|f| {
            Reverse(
                Version::parse(&f.backup.manifest.version)
                    .ok()
                    .map(|v| v.key()),
            )
        }),
    }
}

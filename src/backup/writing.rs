//! The backup being written: its files stored and recorded, the config copy, the metadata.

use std::fs;
use std::io;
use std::path::Path;

use anyhow::{Context, Result};

use super::survey::Survey;
use super::{Item, Request, SnapshotTimes};
use crate::checksum::Algorithm;
use crate::compress::{Compression, Stored};
use crate::config::Settings;
use crate::daemon;
use crate::format::layout;
use crate::format::manifest::{FileEntry, FileKind, Manifest, SystemInfo};
use crate::progress::{self, Progress};
use crate::secrets;
use crate::store::Staging;

/// The backup being written: where its files go and how they are stored, and what it holds so
/// far (the manifest, the summary's items, the snapshots left on a server).
pub(super) struct Writing<'a> {
    pub(super) staging: &'a Staging,
    /// Where the backup goes (`Request::target`).
    pub(super) target: &'a Path,
    pub(super) compression: Stored,
    pub(super) algorithm: Algorithm,
    /// `backup.metadata.include_collection_stats`.
    pub(super) collection_stats: bool,
    pub(super) progress: &'a dyn Progress,
    pub(super) manifest: Manifest,
    pub(super) items: Vec<Item>,
    pub(super) leftovers: Vec<String>,
}

impl<'a> Writing<'a> {
    /// An empty backup in `staging`, its manifest saying how it is stored and what it is of.
    pub(super) fn begin(
        staging: &'a Staging,
        settings: &Settings,
        request: &'a Request,
        survey: &Survey,
        timestamp: f64,
        progress: &'a dyn Progress,
    ) -> Self {
        let backup = &settings.backup;
        let compression = if request.incremental {
            Stored::Chunked
        } else {
            Stored::Plain(Compression::from_setting(backup.compression))
        };
        let algorithm = backup.verification.checksum_algorithm;
        let mut manifest = Manifest::new(crate::VERSION, timestamp);
        if request.incremental {
            manifest.format_version = Some(crate::format::manifest::CHUNKED_FORMAT);
        }
        manifest.description = request.description.clone();
        manifest.qdrant_version = Some(survey.qdrant_version.clone());
        manifest.compression = Some(compression);
        manifest.checksum_algorithm = Some(algorithm);
        // Informational: the online copies are consistent whether the daemon runs or not.
        manifest.daemon_running =
            Some(daemon::running(&backup.daemon, &settings.data_dir).is_some());
        if request.partial {
            manifest.partial_backup = true;
            manifest.selected_collections =
                Some(survey.collections.iter().map(|(n, _)| n.clone()).collect());
        }
        Writing {
            staging,
            target: &request.target,
            compression,
            algorithm,
            collection_stats: backup.metadata.include_collection_stats,
            progress,
            manifest,
            items: Vec::new(),
            leftovers: Vec::new(),
        }
    }

    /// A stored file: into the manifest, and into the summary with `detail`.
    pub(super) fn record(
        &mut self,
        entry: FileEntry,
        detail: String,
        seconds: Option<SnapshotTimes>,
    ) {
        self.items.push(Item {
            path: entry.path.clone(),
            detail,
            size: entry.size,
            content_size: entry.content_size,
            seconds,
        });
        self.manifest.files.push(entry);
    }

    /// Streams `reader` into the backup at `rel`.
    pub(super) fn store(
        &self,
        rel: &str,
        kind: FileKind,
        compression: Stored,
        mut reader: impl io::Read,
    ) -> Result<FileEntry> {
        let mut sink = self
            .staging
            .create_file(rel, kind, compression, self.algorithm)?;
        io::copy(&mut reader, &mut sink)
            .with_context(|| format!("cannot write `{}`", sink.path().display()))?;
        Ok(sink.finish()?)
    }

    /// The config file, when the request wants it and there is one, with its secrets replaced
    /// (`secrets::redact_config`).
    pub(super) fn back_up_config(&mut self, settings: &Settings, request: &Request) -> Result<()> {
        let Some(config) = settings.config_file.as_ref().filter(|_| request.config) else {
            if request.config {
                self.manifest.notes.push(
                    "no configuration file was found; the backup holds no config".to_string(),
                );
            }
            return Ok(());
        };
        progress::check_interrupted()?;
        let rel = format!("{}/config.yaml", layout::CONFIG_DIR);
        let text = fs::read_to_string(config)
            .with_context(|| format!("cannot read the config file `{}`", config.display()))?;
        // No secret leaves the machine: only the secret values are replaced in the copy.
        let redacted = secrets::redact_config(&text);
        if redacted.rewritten {
            self.manifest.notes.push("the config copy was written out anew to leave its secrets out (its layout is beyond editing in place): comments and formatting were not kept".to_string());
        }
        let entry = self.store(
            &rel,
            FileKind::Config,
            Stored::Plain(Compression::None),
            io::Cursor::new(redacted.text.into_bytes()),
        )?;
        let detail = if redacted.redactions.is_empty() {
            format!("from {}", config.display())
        } else {
            format!(
                "from {}, {} secret(s) left out",
                config.display(),
                redacted.redactions.len()
            )
        };
        self.record(entry, detail, None);
        self.manifest.config_redacted = redacted.redactions;
        Ok(())
    }
}

/// The manifest's metadata beside the files: the system it was taken on, the custom metadata
/// (with its secrets left out).
pub(super) fn add_metadata(manifest: &mut Manifest, settings: &Settings) {
    let metadata = &settings.backup.metadata;
    if metadata.include_system_info {
        manifest.system_info = Some(SystemInfo {
            hostname: gethostname::gethostname().to_string_lossy().into_owned(),
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
            wqm_version: crate::VERSION.to_string(),
        });
    }
    if !metadata.custom_metadata.is_empty() {
        let mut custom = serde_json::Value::Object(metadata.custom_metadata.clone());
        secrets::redact_json(&mut custom);
        if let serde_json::Value::Object(custom) = custom {
            manifest.custom_metadata = Some(custom);
        }
    }
}

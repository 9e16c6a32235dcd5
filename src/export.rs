//! `export`: a self-contained copy of one backup — today's full layout, each file compressed as
//! configured — so an incremental night can be moved, archived or handed over without the
//! chunk store it reads from. Every file's content is checked against the manifest on the way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::checksum::Algorithm;
use crate::compress::{Compression, Stored};
use crate::config::Settings;
use crate::exit::{ExitCode, Failure};
use crate::format::manifest::{FileEntry, Manifest, FULL_FORMAT};
use crate::fs::{copy_apart, CopyError};
use crate::progress::{self, Metered, Progress};
use crate::store::{BackupDir, Damaged, Staging};

/// What `export` wrote.
#[derive(Debug)]
pub struct Outcome {
    pub path: PathBuf,
    pub manifest: Manifest,
    /// Bytes written (the new backup's files).
    pub size: u64,
}

/// Writes the backup at `source` as a full backup at `target` (which must not exist).
pub fn export(
    source: &Path,
    target: &Path,
    settings: &Settings,
    progress: &dyn Progress,
) -> Result<Outcome> {
    let backup = BackupDir::open(source)?;
    if backup.manifest.is_legacy() {
        return Err(Failure::new(
            ExitCode::Usage,
            format!(
                "`{}` is a legacy backup: it is self-contained already",
                source.display()
            ),
        )
        .with_hint("copy it as it is (`cp -a`)")
        .into());
    }
    let staging = Staging::begin(target, false)?;
    let compression = Stored::Plain(Compression::from_setting(settings.backup.compression));
    let algorithm = settings.backup.verification.checksum_algorithm;
    let mut manifest = backup.manifest.clone();
    manifest.format_version = Some(FULL_FORMAT);
    manifest.compression = Some(compression);
    manifest.checksum_algorithm = Some(algorithm);
    manifest.files.clear();
    // A full copy names no chunk.
    manifest.chunk_refs = None;
    let mut moved = BTreeMap::new();
    for entry in &backup.manifest.files {
        progress::check_interrupted()?;
        // A chunked file becomes a compressed one; the others keep how they were stored.
        let stored_as = match entry.compression {
            Stored::Chunked => compression,
            other => other,
        };
        let rel = format!(
            "{}{}",
            entry
                .path
                .strip_suffix(entry.compression.extension())
                .unwrap_or(&entry.path),
            stored_as.extension()
        );
        let copied = copy_entry(
            &backup, entry, &staging, &rel, stored_as, algorithm, progress,
        )?;
        moved.insert(entry.path.clone(), rel);
        manifest.files.push(copied);
        crate::failpoint::hit("export:file-copied")?;
    }
    rename_references(&mut manifest, &moved);
    staging.write_manifest(&manifest)?;
    if settings.backup.verification.verify_after_backup {
        crate::verify::verify_staged(&staging, progress)?;
    }
    let size = manifest.files.iter().map(|f| f.size).sum();
    let path = staging.commit()?;
    Ok(Outcome {
        path,
        manifest,
        size,
    })
}

/// Streams one file's content into the new backup at `rel`, checking it against the manifest.
fn copy_entry(
    backup: &BackupDir,
    entry: &FileEntry,
    staging: &Staging,
    rel: &str,
    compression: Stored,
    algorithm: Algorithm,
    progress: &dyn Progress,
) -> Result<FileEntry> {
    let content = backup.open_checked(entry)?;
    let mut sink = staging.create_file(rel, entry.kind, compression, algorithm)?;
    let meter = progress.transfer(&entry.path, Some(entry.content_size));
    // Checked against the manifest as it is read: at its end, it matched (`open_checked`).
    let copied = copy_apart(&mut Metered::new(content, meter), &mut sink);
    progress::check_interrupted()?;
    copied.map_err(|e| match e {
        CopyError::Read(e) => Damaged::from_read(&entry.path, e).into(),
        CopyError::Write(e) => anyhow::Error::from(e).context(format!("cannot write `{rel}`")),
    })?;
    sink.finish()
        .with_context(|| format!("cannot write `{rel}`"))
}

/// Points the manifest's references to files (collections, shards, databases) at their new paths.
fn rename_references(manifest: &mut Manifest, moved: &BTreeMap<String, String>) {
    let rename = |path: &mut String| {
        if let Some(new) = moved.get(path.as_str()) {
            path.clone_from(new);
        }
    };
    for details in manifest.collection_details.values_mut() {
        rename(&mut details.snapshot);
        for shard in &mut details.shards {
            rename(&mut shard.snapshot);
        }
    }
    for database in &mut manifest.databases {
        rename(&mut database.file);
    }
}

//! `dump`: one stored file of a backup written out as its plain content (restic's `dump`):
//! decompressed, or a chunked file's chunks in order, checked against the manifest's size and
//! sha256 as it streams (`BackupDir::open_checked`).

use std::io::{self, Read, Write};

use crate::exit::{Classify, ExitCode};
use crate::format::layout::MANIFEST_PATH;
use crate::format::manifest::FileEntry;
use crate::format::names::shown;
use crate::progress::{self, Metered, Progress};
use crate::store::{BackupDir, Damaged, Place};

/// How many of the backup's file names a `NoSuchFile` error lists.
const NAMES_SHOWN: usize = 20;

/// Why a dump stopped (besides the lock, the backup's manifest and Ctrl-C).
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// FILE is not one of the manifest's `files[].path`.
    #[error(
        "the backup `{backup}` holds no file `{}`{}; it holds: {held}",
        shown(file),
        closest.as_ref().map(|c| format!(" (did you mean `{}`?)", shown(c))).unwrap_or_default()
    )]
    NoSuchFile {
        backup: String,
        file: String,
        /// The file of the same name stored another way (`.zst`, `.chunks`, plain).
        closest: Option<String>,
        held: String,
    },
    /// The content turned out damaged while it was written out: what was written is not the
    /// file's content.
    #[error("{damaged}; the {written} bytes written before it was found are not the file's content (a truncated or wrong stream): discard them")]
    Damaged { damaged: Damaged, written: u64 },
    /// The output could not be written (a closed pipe, a full disk).
    #[error(
        "cannot write the content of `{}` out after {written} bytes: {source}",
        shown(file)
    )]
    Write {
        file: String,
        written: u64,
        source: io::Error,
    },
}

impl Classify for DumpError {
    fn exit_code(&self) -> ExitCode {
        match self {
            DumpError::NoSuchFile { .. } => ExitCode::Usage,
            DumpError::Damaged { .. } => ExitCode::InvalidBackup,
            DumpError::Write { .. } => ExitCode::Failure,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            DumpError::NoSuchFile { .. } => Some(
                "FILE is a path as the manifest's `files[].path` names it (`wqm backup info BACKUP --verbose` lists them)"
                    .to_string(),
            ),
            DumpError::Damaged { damaged, .. } => damaged.hint(),
            DumpError::Write { .. } => None,
        }
    }
}

/// Writes the content of the file `file` of the backup at `source` to `out` (flushed); returns
/// its size.
pub fn dump(
    source: &Place,
    file: &str,
    out: &mut dyn Write,
    progress: &dyn Progress,
) -> anyhow::Result<u64> {
    let backup = BackupDir::open_at(source)?;
    // The manifest itself, as read and checked (decrypted in an encrypted repository): what a
    // restore by hand reads the sums from.
    if file == MANIFEST_PATH {
        let text = backup.manifest.to_json();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| DumpError::Write {
                file: file.to_string(),
                written: 0,
                source: e,
            })?;
        return Ok(text.len() as u64);
    }
    let files = &backup.manifest.files;
    let Some(entry) = files.iter().find(|f| f.path == file) else {
        let mut held: Vec<String> = files
            .iter()
            .take(NAMES_SHOWN)
            .map(|f| format!("`{}`", shown(&f.path)))
            .collect();
        if files.len() > NAMES_SHOWN {
            held.push(format!("and {} more", files.len() - NAMES_SHOWN));
        }
        return Err(DumpError::NoSuchFile {
            backup: source.shown().display().to_string(),
            file: file.to_string(),
            closest: closest(files, file),
            held: if held.is_empty() {
                "no file".to_string()
            } else {
                held.join(", ")
            },
        }
        .into());
    };
    let content = backup.open_checked(entry)?;
    crate::failpoint::hit("dump:opened")?;
    let meter = progress.transfer(&entry.path, Some(entry.content_size));
    let mut content = Metered::new(content, meter);
    let mut buf = vec![0; 1 << 20];
    let mut written = 0;
    let write_error = |written, source| DumpError::Write {
        file: entry.path.clone(),
        written,
        source,
    };
    loop {
        let n = match content.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                progress::check_interrupted()?;
                // What was written so far reaches the reader, followed by the error.
                out.flush().map_err(|e| write_error(written, e))?;
                return Err(DumpError::Damaged {
                    damaged: Damaged::from_read(&entry.path, e),
                    written,
                }
                .into());
            }
        };
        out.write_all(&buf[..n])
            .map_err(|e| write_error(written, e))?;
        written += n as u64;
    }
    out.flush().map_err(|e| write_error(written, e))?;
    Ok(written)
}

/// The file stored under `file`'s name with another ending: `collections/a.snapshot.chunks`
/// for `collections/a.snapshot.zst` or `collections/a.snapshot`.
fn closest(files: &[FileEntry], file: &str) -> Option<String> {
    let bare = |path: &str| {
        [".zst", ".chunks"]
            .iter()
            .find_map(|ending| path.strip_suffix(ending))
            .unwrap_or(path)
            .to_string()
    };
    let wanted = bare(file);
    files
        .iter()
        .find(|f| bare(&f.path) == wanted)
        .map(|f| f.path.clone())
}

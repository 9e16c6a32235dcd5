//! Deleting a backup of a repository on a backend (S3), where nothing can be renamed: its
//! manifest goes first, so it stops being a backup at once (`list`, `restore` and the chunk
//! store's garbage collection no longer see it), then its other objects. A record
//! `.wqm-deleting/NAME`, written before and removed after, lets the next prune finish what a
//! killed one began. Only under the repository's exclusive lock: no create or reader runs.

use std::io;

use crate::format::layout::MANIFEST_PATH;
use crate::store::Remote;

/// Where a prune records the backups it is deleting (hidden: never a backup's name).
const DELETING: &str = ".wqm-deleting";

/// Deletes the backup `name`: the record, the manifest, every other object, the record.
pub(crate) fn remove(remote: &Remote, name: &str) -> io::Result<()> {
    let record = format!("{DELETING}/{name}");
    remote.put(&record, Vec::new())?;
    remote.remove(&format!("{name}/{MANIFEST_PATH}"))?;
    crate::failpoint::hit("prune:s3-manifest-removed")?;
    remote.remove_under(name)?;
    remote.remove(&record)
}

/// Whether a killed prune left deletions to finish (`finish_deletions`).
pub fn deletions_left(remote: &Remote) -> io::Result<bool> {
    Ok(!remote.list(&format!("{DELETING}/"))?.is_empty())
}

/// Finishes the deletions a killed prune began, under the exclusive lock (by the next prune,
/// or `cleanup`): the objects of each recorded backup whose manifest is gone; returns their
/// names. One whose manifest is there was not being deleted yet (the prune died before
/// removing it) or was made again since: it is a backup, and only the record goes.
pub fn finish_deletions(remote: &Remote) -> io::Result<Vec<String>> {
    let prefix = format!("{DELETING}/");
    let mut finished = Vec::new();
    for record in remote.list(&prefix)? {
        let name = record.name.strip_prefix(&prefix).unwrap_or(&record.name);
        let manifest = format!("{name}/{MANIFEST_PATH}");
        match remote.size(&manifest) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                remote.remove_under(name)?;
                finished.push(name.to_string());
            }
            Err(e) => return Err(e),
        }
        remote.remove(&record.name)?;
    }
    Ok(finished)
}

//! `create --force` to S3, where nothing can be renamed: a backup replaced so that its name
//! holds a whole backup, the old one or the new one, at every moment, and what a killed run
//! left is finished or undone by the next run that may (`settle`).
//!
//! 1. The new backup is sent to `.wqm-replace/NAME/` (`store::remote::replacement_of`), its
//!    manifest last, under the run's adding lock, as any backup is sent.
//! 2. `put_in_place`, under a lock that keeps readers out (the run's replacing lock; `cleanup`
//!    and `prune` finishing a killed run's hold the exclusive one), so no reader is between
//!    two files of the old backup: the old manifest removed — from then on readers find the
//!    replacement (`Remote::root_of`) —, the old objects removed, the replacement's copied
//!    under `NAME` (on the server), its manifest last; then the replacement removed, manifest
//!    first.

use futures_util::stream::{self, StreamExt, TryStreamExt};

use crate::backend::{Backend, BackendError, Name};
use crate::format::layout::MANIFEST_PATH;
use crate::store::replacement_of;

/// How many objects are copied at once.
const COPIERS: usize = 8;

/// What `settle` did with a killed run's replacement of a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Settled {
    /// There was none.
    Nothing,
    /// Removed: incomplete (its send, or its removal, was cut short), already in place, or
    /// killed before the old backup was touched (which stays, as a local `--force` killed
    /// before its rename leaves the old backup).
    Removed,
    /// Killed while it took the name: put in place (`put_in_place`).
    PutInPlace,
    /// Killed while it took the name, and this run does not keep readers out: left, and the
    /// name reads it from where it is until `cleanup` or `prune` puts it in place.
    NeedsExclusive,
}

/// Puts the complete replacement of `name` in its place (see the module). Only under a lock
/// that keeps readers out (replacing or exclusive). From any point a killed run reached, doing
/// it again finishes it.
pub async fn put_in_place(backend: &dyn Backend, name: &str) -> Result<(), BackendError> {
    let replacement = replacement_of(name);
    let (old_manifest, new_manifest) = (manifest_of(name)?, manifest_of(&replacement)?);
    // Never the old manifest away without a whole backup to read instead.
    backend.stat(&new_manifest).await?;
    backend.remove(&old_manifest).await?;
    failpoint(backend, "replace:old-manifest-removed")?;
    backend.remove_under(name).await?;
    let prefix = format!("{replacement}/");
    let objects = backend.list(&prefix).await?;
    let copies = objects
        .iter()
        .filter(|o| o.name != new_manifest.as_str())
        .map(|o| async {
            let rel = o.name.strip_prefix(&prefix).unwrap_or(&o.name);
            let to = Name::new(format!("{name}/{rel}"))?;
            backend.copy(&Name::new(o.name.clone())?, &to).await
        });
    stream::iter(copies)
        .buffer_unordered(COPIERS)
        .try_collect::<Vec<u64>>()
        .await?;
    failpoint(backend, "replace:copied")?;
    backend.copy(&new_manifest, &old_manifest).await?;
    failpoint(backend, "replace:in-place")?;
    remove_replacement(backend, name).await
}

/// Settles what a killed run left of its replacement of `name` (see `Settled`); the old
/// manifest tells: there, readers read it and the replacement can go; gone, the swap began and
/// only goes forward, which `exclusive` (the caller holds the exclusive lock) allows.
pub async fn settle(
    backend: &dyn Backend,
    name: &str,
    exclusive: bool,
) -> Result<Settled, BackendError> {
    let replacement = replacement_of(name);
    let objects = backend.list(&format!("{replacement}/")).await?;
    if objects.is_empty() {
        return Ok(Settled::Nothing);
    }
    let new_manifest = manifest_of(&replacement)?;
    if !objects.iter().any(|o| o.name == new_manifest.as_str()) {
        backend.remove_under(&replacement).await?;
        return Ok(Settled::Removed);
    }
    match backend.stat(&manifest_of(name)?).await {
        Ok(_) => {
            remove_replacement(backend, name).await?;
            Ok(Settled::Removed)
        }
        Err(e) if !e.is_not_found() => Err(e),
        Err(_) if exclusive => {
            put_in_place(backend, name).await?;
            Ok(Settled::PutInPlace)
        }
        Err(_) => Ok(Settled::NeedsExclusive),
    }
}

/// Removes the replacement of `name`, its manifest first (once that is gone nobody reads it).
pub async fn remove_replacement(backend: &dyn Backend, name: &str) -> Result<(), BackendError> {
    let replacement = replacement_of(name);
    backend.remove(&manifest_of(&replacement)?).await?;
    backend.remove_under(&replacement).await.map(drop)
}

fn manifest_of(root: &str) -> Result<Name, BackendError> {
    Name::new(format!("{root}/{MANIFEST_PATH}"))
}

fn failpoint(backend: &dyn Backend, name: &str) -> Result<(), BackendError> {
    crate::failpoint::hit(name).map_err(|source| BackendError::Io {
        what: "a failpoint",
        path: backend.describe(),
        source,
    })
}

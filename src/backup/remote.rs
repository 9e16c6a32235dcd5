//! A full backup sent to a repository on a `Backend` (S3), committed without rename: every
//! object of the backup is written first, its manifest last with `save_new`, so until the
//! manifest is there `list`, `validate` and `restore` see no backup (`store::scan_remote`).
//!
//! The run record `.wqm-runs/NAME` (host, pid, start, target), written with `save_new` before
//! anything else (`claim`), is the run's claim on the name: of two runs sending the same name
//! one gets it, the other is refused before it writes anything, so no run ever writes over, or
//! removes, another's objects. It is removed when the run ends; a killed run's record is how
//! the next run (or `cleanup`) finds the objects it left and its unfinished multipart uploads,
//! and removes them.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use super::replace::Settled;
use crate::backend::{Backend, BackendError, ByteStream, Name};
use crate::format::layout::MANIFEST_PATH;
use crate::progress::Progress;
use crate::store::chunks::{ChunkId, Packer};
use crate::store::lock::RepoLock;
use crate::store::Occupant;

/// Where run records live in a repository.
pub const RUNS_DIR: &str = ".wqm-runs";
/// How much of a file is read at a time while it is sent (the backend cuts parts from it).
const PIECE: usize = 1 << 20;

/// What `.wqm-runs/<id>` says about a run sending a backup.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunRecord {
    pub host: String,
    pub pid: u32,
    pub started: f64,
    /// The backup's name in the repository.
    pub target: String,
}

/// A killed run's leftovers, removed (`clean_dead_runs`).
#[derive(Debug, Serialize)]
pub struct Removed {
    pub target: String,
    pub objects: usize,
    pub uploads: usize,
    /// What became of the backup a killed `--force` was replacing it with.
    pub replacement: Settled,
}

impl Removed {
    /// What was removed from the repository `shown`, in one line.
    pub fn line(&self, shown: &str) -> String {
        format!("removed {}", self.what(&format!(" in `{shown}`")))
    }

    /// What was removed, `place` (where, or nothing) after the backup's name: `cleanup`'s line
    /// begins with it.
    pub fn what(&self, place: &str) -> String {
        format!(
            "what a killed run left of `{}`{place}: {} object(s), {} unfinished upload(s){}",
            self.target,
            self.objects,
            self.uploads,
            self.replacement_note()
        )
    }

    /// What became of a killed `--force`'s new backup, to end the line with.
    fn replacement_note(&self) -> &'static str {
        match self.replacement {
            Settled::PutInPlace => "; the new backup a killed `--force` was putting in its place is in place",
            Settled::Removed => "; a killed `--force`'s new backup removed: it had not begun to replace the old one, which stays, or was in place already",
            Settled::Nothing | Settled::NeedsExclusive => "",
        }
    }
}

/// What `clean_dead_runs` did, and what it had to leave.
#[derive(Debug, Default, Serialize)]
pub struct DeadRuns {
    pub removed: Vec<Removed>,
    /// Backups a killed `--force` was putting in place: each name reads its new backup from
    /// where it was sent until a run holding the exclusive lock (`cleanup`, `prune`) finishes.
    pub waiting: Vec<String>,
}

impl DeadRuns {
    /// The line for a backup left `waiting` in the repository `shown`.
    pub fn waiting_line(name: &str, shown: &str) -> String {
        format!("a killed `create --force` was putting a new backup in place of `{name}` in `{shown}`: `{name}` is read from where it was sent until `wqm backup cleanup {shown}` (or a prune) finishes it")
    }
}

/// A run's claim on a name of the repository (its run record `.wqm-runs/NAME`): held until
/// dropped, which removes the record unless `keep` was called (what it names is left for
/// `clean_dead_runs`).
pub struct Claim {
    backend: Arc<dyn Backend>,
    record: Name,
    handle: tokio::runtime::Handle,
    keep: bool,
    /// The name held a backup, which a `--force` replaces (`backup::replace`).
    pub replacing: bool,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim")
            .field("record", &self.record)
            .finish()
    }
}

impl Claim {
    /// Leaves the record for a later cleanup (what it names could not be removed).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Where the backup is sent: the name, or its replacement when one is there already.
    pub fn root(&self, target: &str) -> String {
        match self.replacing {
            true => crate::store::replacement_of(target),
            false => target.to_string(),
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.keep {
            // Removed now, not on a task the ending process may never run.
            let (backend, record) = (&self.backend, &self.record);
            let _ = tokio::task::block_in_place(|| self.handle.block_on(backend.remove(record)));
        }
    }
}

/// Claims the name `target` for this run: its run record written with `save_new` (a record
/// there is another run's, sending it or killed), then the name checked free (`check_free`;
/// with `replace`, a backup there may be replaced). Needs the tokio runtime.
pub async fn claim(
    backend: Arc<dyn Backend>,
    target: &str,
    replace: bool,
) -> Result<Claim, TargetTaken> {
    let record = Name::new(format!("{RUNS_DIR}/{target}")).map_err(TargetTaken::Backend)?;
    let text = serde_json::to_vec(&RunRecord {
        host: crate::backend::lock::hostname(),
        pid: std::process::id(),
        started: crate::now(),
        target: target.to_string(),
    })
    .expect("a run record always serializes");
    match backend.save_new(&record, Bytes::from(text)).await {
        Ok(()) => {}
        Err(BackendError::AlreadyExists { .. }) => {
            return Err(TargetTaken::Unfinished {
                repository: backend.describe(),
                target: target.to_string(),
            })
        }
        Err(e) => return Err(TargetTaken::Backend(e)),
    }
    let mut claim = Claim {
        backend,
        record,
        handle: tokio::runtime::Handle::current(),
        keep: false,
        replacing: false,
    };
    claim.replacing = check_free(claim.backend.as_ref(), target, replace).await?;
    Ok(claim)
}

/// Whether the name `target` is free in the repository: no object under it, nor under its
/// replacement (a killed `--force`'s). A backup there is refused, or with `replace` is to be
/// replaced (`true`); objects without a manifest are a killed run's.
async fn check_free(
    backend: &dyn Backend,
    target: &str,
    replace: bool,
) -> Result<bool, TargetTaken> {
    let (repository, target) = (backend.describe(), target.to_string());
    match crate::store::occupant(backend, &target)
        .await
        .map_err(TargetTaken::Backend)?
    {
        Occupant::Nothing => Ok(false),
        Occupant::Backup if replace => Ok(true),
        Occupant::Backup => Err(TargetTaken::Backup { repository, target }),
        Occupant::Unfinished | Occupant::Replacing => {
            Err(TargetTaken::Unfinished { repository, target })
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TargetTaken {
    #[error("a backup `{target}` already exists in `{repository}`")]
    Backup { repository: String, target: String },
    #[error("`{target}` in `{repository}` is taken by an unfinished backup (a run that is still sending it, or what one that was killed left)")]
    Unfinished { repository: String, target: String },
    #[error(transparent)]
    Backend(BackendError),
}

impl crate::exit::Classify for TargetTaken {
    fn exit_code(&self) -> crate::exit::ExitCode {
        match self {
            TargetTaken::Backend(e) => e.exit_code(),
            _ => crate::exit::ExitCode::Usage,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            TargetTaken::Backup { .. } => Some("choose another name, or pass `--force` to replace it".to_string()),
            TargetTaken::Unfinished { .. } => Some("once that run is over, the next `create` to this repository (or `wqm backup cleanup`) removes what it left: at once for a run of this host, once its lock has gone stale (30 minutes) for one of another host; what a killed prune was deleting, or a killed `--force` was putting in place, `wqm backup cleanup` finishes".to_string()),
            TargetTaken::Backend(e) => e.hint(),
        }
    }
}

/// Sends the committed local backup `local` as `claim`ed `target`: every file but the manifest
/// (streamed, bounded memory), then the manifest with `save_new`. On failure what was sent is
/// removed (when that fails too, the claim's record is kept, for `clean_dead_runs`); a killed
/// run leaves it all to `clean_dead_runs`. `lock` (the repository's, held by the caller) is
/// checked before the manifest: a run whose lock was lost does not commit.
pub async fn send(
    backend: &dyn Backend,
    local: &Path,
    (target, claim): (&str, &mut Claim),
    lock: &RepoLock,
    progress: &dyn Progress,
) -> Result<()> {
    let sent = send_objects(backend, local, target, lock, progress).await;
    if sent.is_err() {
        abandon(backend, target, claim).await;
    }
    sent
}

/// After a failed send of the `claim`ed `target`: removes what was sent of it (never
/// committed: its manifest is the last object). Best effort: when that fails, the claim's
/// record is kept, and it is how the next run finds the rest.
pub async fn abandon(backend: &dyn Backend, target: &str, claim: &mut Claim) {
    if backend.remove_under(target).await.is_err() {
        claim.keep();
    }
}

async fn send_objects(
    backend: &dyn Backend,
    local: &Path,
    target: &str,
    lock: &RepoLock,
    progress: &dyn Progress,
) -> Result<()> {
    let files = crate::store::list_in(local);
    for rel in files.iter().filter(|rel| rel.as_str() != MANIFEST_PATH) {
        crate::progress::check_interrupted()?;
        progress.step(&format!("sending `{rel}`"));
        let file = crate::store::open_in(local, rel)
            .with_context(|| format!("cannot read `{}`", local.join(rel).display()))?;
        let name = Name::new(format!("{target}/{rel}"))?;
        backend
            .save(&name, file_stream(tokio::fs::File::from_std(file)))
            .await?;
    }
    crate::failpoint::hit("create:s3-before-manifest")?;
    crate::progress::check_interrupted()?;
    lock.check()?;
    let manifest = std::fs::read(local.join(MANIFEST_PATH))
        .with_context(|| format!("cannot read `{}`", local.join(MANIFEST_PATH).display()))?;
    let name = Name::new(format!("{target}/{MANIFEST_PATH}"))?;
    backend.save_new(&name, Bytes::from(manifest)).await?;
    Ok(())
}

/// How many chunks are sent at once (as `wqm backup copy` sends them).
const SENDERS: usize = 8;

/// Sends the chunks of the staging store in `local` (an incremental backup's: only the chunks
/// the repository lacked) but those in `sent` (its courier's) to the repository's store,
/// `SENDERS` at a time, before the backup that names them; returns how many. A chunk sent by a
/// run that then fails is garbage until the next run reuses it or a prune collects it.
pub async fn send_chunks(
    backend: &dyn Backend,
    local: &Path,
    sent: &HashSet<ChunkId>,
    packer: Option<&Packer>,
    progress: &dyn Progress,
) -> Result<usize> {
    let store = crate::store::chunks::ChunkStore::open_for_reading(local)?;
    let ids = store.list_ids().with_context(|| {
        format!(
            "cannot list `{}`",
            crate::store::chunks::ChunkStore::path_in(local).display()
        )
    })?;
    let ids: Vec<ChunkId> = ids.into_iter().filter(|id| !sent.contains(id)).collect();
    progress.step(&format!("sending {} new chunks", ids.len()));
    let count = ids.len();
    let store = &store;
    stream::iter(ids)
        .map(|id| async move {
            crate::progress::check_interrupted()?;
            let object = crate::store::chunks::object_name(&id);
            let bytes = tokio::task::block_in_place(|| store.stored_bytes(&id))
                .with_context(|| format!("cannot read chunk `{id}`"))?;
            crate::failpoint::hit("create:s3-chunk-sent")?;
            match packer {
                Some(packer) => {
                    let len = tokio::task::block_in_place(|| store.content_len(&id, &bytes))
                        .with_context(|| format!("cannot read chunk `{id}`"))?;
                    packer
                        .add(id, len, &bytes)
                        .await
                        .context("cannot send the new chunks")?;
                }
                None => crate::store::chunks::save_chunk(backend, &id, Bytes::from(bytes))
                    .await
                    .with_context(|| format!("cannot send `{object}`"))?,
            }
            anyhow::Ok(())
        })
        .buffer_unordered(SENDERS)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<()>>>()?;
    Ok(count)
}

/// A file's bytes as they are read, a piece at a time.
fn file_stream(file: tokio::fs::File) -> ByteStream {
    stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut piece = BytesMut::with_capacity(PIECE);
        while piece.len() < PIECE {
            match file.read_buf(&mut piece).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Some((Err(e), None)),
            }
        }
        if piece.is_empty() {
            None
        } else {
            Some((Ok(piece.freeze()), Some(file)))
        }
    })
    .boxed()
}

/// The host and pid of every live (not stale) lock of the repository; `None` when one cannot
/// be read (its holder could be anyone).
async fn live_holders(backend: &dyn Backend) -> Result<Option<Vec<(String, u32)>>, BackendError> {
    let now = crate::now();
    let mut live = Vec::new();
    for (_, info) in crate::backend::lock::list(backend).await? {
        match info {
            Ok(info) if info.is_stale(now, crate::backend::lock::Timing::default()) => {}
            Ok(info) => live.push((info.host, info.pid)),
            Err(_) => return Ok(None),
        }
    }
    Ok(Some(live))
}

/// Removes what dead runs left: for each run record whose run is over, the objects of its
/// target when it has no manifest (never a committed backup), the multipart uploads it left
/// under it, and the record. A run of this host is over when its process is gone; a run of
/// another host when it holds no live lock of the repository: every run that writes a record
/// takes the repository's lock first and keeps it (refreshed) until after the record is gone,
/// so a record without a live lock of its host and pid is a killed run's (or, with a lock that
/// cannot be read, every other host's run counts as alive). A killed `--force`'s new backup is
/// settled first (`replace::settle`; with `exclusive`, the caller holds the exclusive lock):
/// one that must go forward without it is left, its record too (`DeadRuns::waiting`).
pub async fn clean_dead_runs(
    backend: &dyn Backend,
    exclusive: bool,
) -> Result<DeadRuns, BackendError> {
    let host = crate::backend::lock::hostname();
    let mut holders: Option<Option<Vec<(String, u32)>>> = None;
    // The unfinished uploads, listed once (each is a record to read on S3) for all dead runs.
    let mut unfinished: Option<Vec<crate::backend::Unfinished>> = None;
    let mut dead = DeadRuns::default();
    for object in backend.list(&format!("{RUNS_DIR}/")).await? {
        let name = Name::new(object.name.clone())?;
        let text = crate::backend::collect(backend.load(&name, None).await?)
            .await
            .map_err(|e| BackendError::Other {
                repository: backend.describe(),
                what: format!("reading `{name}`"),
                reason: e.to_string(),
            })?;
        let Ok(record) = serde_json::from_slice::<RunRecord>(&text) else {
            continue;
        };
        let alive = if record.host == host {
            crate::process::alive(record.pid)
        } else {
            if holders.is_none() {
                holders = Some(live_holders(backend).await?);
            }
            match holders.as_ref().and_then(Option::as_ref) {
                Some(live) => live.contains(&(record.host.clone(), record.pid)),
                None => true,
            }
        };
        if alive {
            continue;
        }
        let replacement = super::replace::settle(backend, &record.target, exclusive).await?;
        if replacement == Settled::NeedsExclusive {
            dead.waiting.push(record.target);
            continue;
        }
        let target = Name::new(record.target.clone())?;
        let manifest = Name::new(format!("{target}/{MANIFEST_PATH}"))?;
        let committed = match backend.stat(&manifest).await {
            Ok(_) => true,
            Err(e) if e.is_not_found() => false,
            Err(e) => return Err(e),
        };
        let objects = if committed {
            0
        } else {
            backend.remove_under(target.as_str()).await?
        };
        let mut uploads = 0;
        let under = [
            format!("{target}/"),
            format!("{}/", crate::store::replacement_of(&record.target)),
        ];
        if unfinished.is_none() {
            unfinished = Some(backend.unfinished().await?);
        }
        for upload in unfinished.iter().flatten() {
            if upload
                .name
                .as_deref()
                .is_some_and(|n| under.iter().any(|u| n.starts_with(u)))
            {
                backend.abort(upload).await?;
                uploads += 1;
            }
        }
        backend.remove(&name).await?;
        dead.removed.push(Removed {
            target: record.target,
            objects,
            uploads,
            replacement,
        });
    }
    Ok(dead)
}

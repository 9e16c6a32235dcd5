//! The repository copied to, and one backup being written there (`Writing`), committed last:
//! locally staged in `.NAME.wqm-staging` and renamed into place (`store::Staging`), chunks
//! landed in the store as a create lands them; on a backend under a run record, every object
//! first and the manifest last with `save_new` (as `backup::remote` sends a backup).

use std::collections::{BTreeSet, HashSet};
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context, Result};
use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, StreamExt};

use super::CopyError;
use crate::backend::Name;
use crate::backup::remote::{abandon, claim, Claim};
use crate::format::layout::LayoutError;
use crate::format::layout::MANIFEST_PATH;
use crate::fs::CopyError as Side;
use crate::store::chunks::RunTemp;
use crate::store::chunks::{self, ChunkId, ChunkStore, Holdings, LocalPacker, Packer, Params};
use crate::store::lock::RepoLock;
use crate::store::{occupant, Occupant, Remote, Repository, Staging};

/// How much of a file is read at a time while it is sent to a backend.
const PIECE: usize = 1 << 20;

/// The repository copied to.
pub struct Dest {
    repository: Repository,
    /// Its lock, checked before each commit.
    lock: RepoLock,
    /// The local chunk store, once a backup needed it.
    store: OnceLock<Option<Arc<ChunkStore>>>,
    /// The chunks a repository on a backend held when listed (its pack indexes, looked up).
    listed: OnceLock<Holdings>,
    /// Every other chunk it holds: a local store's, listed once, and what this run sent.
    has: Mutex<HashSet<ChunkId>>,
    /// Whether the repository's store (on a backend) keeps its chunks in pack files.
    packed: OnceLock<bool>,
}

/// What the repository holds under a backup's name.
pub enum Existing {
    Nothing,
    /// A backup: its manifest's bytes.
    Backup(Vec<u8>),
    /// Something that is not a backup (what it is).
    Other(String),
}

impl Dest {
    /// `repository`, held by `lock` (shared) for as long as the copy writes there.
    pub fn new(repository: Repository, lock: RepoLock) -> Self {
        Dest {
            repository,
            lock,
            store: OnceLock::new(),
            listed: OnceLock::new(),
            has: Mutex::new(HashSet::new()),
            packed: OnceLock::new(),
        }
    }

    /// The repository as the user wrote it.
    pub fn repository(&self) -> &Repository {
        &self.repository
    }

    pub fn shown(&self) -> String {
        super::shown(&self.repository)
    }

    /// What is under the name `name`.
    pub fn existing(&self, name: &str) -> Result<Existing> {
        let manifest = format!("{name}/{MANIFEST_PATH}");
        match &self.repository {
            Repository::Local(dir) => {
                if std::fs::symlink_metadata(dir.join(name)).is_err() {
                    return Ok(Existing::Nothing);
                }
                let mut bytes = Vec::new();
                let read = crate::store::open_in(dir, &manifest).and_then(|f| {
                    f.take(crate::format::manifest::MAX_MANIFEST_BYTES + 1)
                        .read_to_end(&mut bytes)
                });
                Ok(match read {
                    Ok(_) => Existing::Backup(bytes),
                    Err(e) => {
                        Existing::Other(format!("it exists and its manifest cannot be read: {e}"))
                    }
                })
            }
            Repository::Remote(remote) => {
                let other = |why: &str| Ok(Existing::Other(why.to_string()));
                match remote.wait(occupant(remote.backend(), name))? {
                    Occupant::Nothing => return Ok(Existing::Nothing),
                    Occupant::Replacing => return other("a `create --force` is putting a new backup in its place, or one that was killed left it half done (`wqm backup cleanup` finishes it)"),
                    Occupant::Unfinished => return other("it holds objects of an unfinished backup (a copy or create still sending it, or one that was killed)"),
                    Occupant::Backup => {}
                }
                let mut bytes = Vec::new();
                remote
                    .open(&manifest)?
                    .take(crate::format::manifest::MAX_MANIFEST_BYTES + 1)
                    .read_to_end(&mut bytes)?;
                Ok(Existing::Backup(bytes))
            }
        }
    }

    /// Makes the repository's chunk store ready for chunks of a store with `source`'s
    /// parameters: made with them when missing, refused when it cuts or stores otherwise; what
    /// it holds listed once.
    pub fn prepare_store(&self, source: &Params) -> Result<()> {
        if self.store.get().is_some() {
            return Ok(());
        }
        let (local, params, ids) = match &self.repository {
            Repository::Local(dir) => {
                let store = ChunkStore::open_for_import(dir, source)?;
                let ids = store.list_ids().with_context(|| {
                    format!("cannot list `{}`", ChunkStore::path_in(dir).display())
                })?;
                let params = store.params().clone();
                (Some(store), params, ids)
            }
            Repository::Remote(remote) => {
                let store = chunks::remote_store(remote, &source.for_new_store())?;
                let _ = self.listed.set(chunks::remote_chunks(&store)?);
                let _ = self.packed.set(store.is_packed());
                (None, store.params().clone(), HashSet::new())
            }
        };
        params
            .compatible_with(source)
            .map_err(|reason| CopyError::IncompatibleStore {
                dest: self.shown(),
                reason,
            })?;
        self.has.lock().expect("has lock").extend(ids);
        let _ = self.store.set(local);
        Ok(())
    }

    /// Whether the repository holds chunk `id` (as listed, or sent by this run).
    pub fn has(&self, id: &ChunkId) -> bool {
        self.listed.get().is_some_and(|listed| listed.contains(id))
            || self.has.lock().expect("has lock").contains(id)
    }

    /// Starts writing the backup `name` (free: the caller looked).
    pub fn begin(&self, name: &str) -> Result<Writing<'_>> {
        let (how, packer) = match &self.repository {
            Repository::Local(dir) => {
                let staging = Staging::begin_as(&dir.join(name), false, "copy")?;
                // A store of loose chunks lands them through a temporary directory of the run.
                let (temp, packer) = match self.store.get() {
                    Some(Some(store)) => match store.packer() {
                        Some(packer) => (None, Some(Packing::Local(packer))),
                        None => (Some(store.temp_dir()?), None),
                    },
                    _ => (None, None),
                };
                let how = How::Local {
                    staging: Some(staging),
                    temp,
                    landed: Mutex::new(BTreeSet::new()),
                };
                (how, packer)
            }
            Repository::Remote(remote) => {
                let how = How::Remote {
                    claim: remote.wait(claim(remote.shared_backend(), name, false))?,
                    remote: remote.clone(),
                    committed: false,
                };
                let packer = (self.packed.get() == Some(&true)).then(|| {
                    let packer = Packer::new(remote.shared_backend(), remote.seal());
                    Packing::Remote(packer, remote.clone())
                });
                (how, packer)
            }
        };
        Ok(Writing {
            dest: self,
            name: name.to_string(),
            how,
            packer,
            packed: Mutex::new(HashSet::new()),
        })
    }
}

/// One backup being written in the destination.
pub struct Writing<'a> {
    dest: &'a Dest,
    name: String,
    how: How,
    /// A store of pack files: the backup's new chunks go into packs, written before its
    /// manifest.
    packer: Option<Packing>,
    /// The chunks packed for this backup: the repository holds them once it commits.
    packed: Mutex<HashSet<ChunkId>>,
}

/// Where a backup's new chunks are packed: a local store's straight into its directory, a
/// store's on a backend sent as they fill (waited for on the repository's runtime).
enum Packing {
    Local(LocalPacker),
    Remote(Packer, Remote),
}

enum How {
    Local {
        /// Taken by the commit.
        staging: Option<Staging>,
        temp: Option<RunTemp>,
        /// The fan-out directories of the chunks landed, synced before the manifest.
        landed: Mutex<BTreeSet<String>>,
    },
    Remote {
        remote: Remote,
        /// The run's claim on the name (its run record), given up when the writing ends.
        claim: Claim,
        committed: bool,
    },
}

impl Writing<'_> {
    /// Whether the destination holds chunk `id` (as listed, or sent by this run), or this
    /// backup packed it.
    pub fn has(&self, id: &ChunkId) -> bool {
        self.dest.has(id) || self.packed.lock().expect("packed lock").contains(id)
    }

    /// Stores chunk `id` (`len` bytes of content) from its stored bytes (checked by the
    /// caller). Safe from many threads at once.
    pub fn put_chunk(&self, id: &ChunkId, len: usize, stored: &[u8]) -> io::Result<()> {
        if let Some(packer) = &self.packer {
            match packer {
                Packing::Local(packer) => packer.add(*id, len, stored)?,
                Packing::Remote(packer, remote) => remote.wait(packer.add(*id, len, stored))?,
            };
            self.packed.lock().expect("packed lock").insert(*id);
            // The repository holds it once the backup commits.
            return Ok(());
        }
        match &self.how {
            How::Local { temp, landed, .. } => {
                let (Some(Some(store)), Some(temp)) = (self.dest.store.get(), temp) else {
                    return Err(io::Error::other("no chunk store was prepared"));
                };
                let dir = store.land(temp, id, stored)?;
                landed.lock().expect("landed lock").insert(dir);
            }
            How::Remote { remote, .. } => {
                let saving =
                    chunks::save_chunk(remote.backend(), id, Bytes::copy_from_slice(stored));
                remote.wait(saving).map_err(io::Error::other)?;
            }
        }
        self.dest.has.lock().expect("has lock").insert(*id);
        Ok(())
    }

    /// The destination, as the user wrote it.
    pub fn dest_shown(&self) -> String {
        self.dest.shown()
    }

    /// Writes the file `rel` of the backup from `reader` (which checks what it reads: its
    /// errors are the source's, `Side::Read`); returns the bytes written.
    pub fn put_file(&self, rel: &str, reader: &mut dyn Read) -> Result<u64, Side> {
        // A plain relative name (no `..`, no empty part, nothing absolute), on either side.
        Name::new(rel).map_err(|e| Side::Read(io::Error::new(io::ErrorKind::InvalidData, e)))?;
        match &self.how {
            How::Local { staging, .. } => {
                let staging = staging.as_ref().expect("staging until the commit");
                let (file, _) = staging.create_stored(rel).map_err(|e| match e {
                    LayoutError::Io { source, .. } => Side::Write(source),
                    other => Side::Write(io::Error::other(other)),
                })?;
                put_local(file, reader)
            }
            How::Remote { remote, .. } => {
                let name = Name::new(format!("{}/{rel}", self.name))
                    .map_err(|e| Side::Write(io::Error::other(e)))?;
                put_remote(remote, &name, reader)
            }
        }
    }

    /// Commits the backup with its manifest `manifest` (its bytes as the source has them),
    /// once every object it names is complete. Returns the bytes sent beyond its chunks, files
    /// and manifest (pack files' indexes).
    pub fn commit(mut self, manifest: &[u8]) -> Result<u64> {
        let mut packing = 0;
        if let Some(packer) = &self.packer {
            packing = match packer {
                Packing::Local(packer) => packer.finish(),
                Packing::Remote(packer, remote) => remote.wait(packer.finish()),
            }
            .context("cannot send the chunks")?;
        }
        crate::failpoint::hit("copy:before-manifest")?;
        crate::progress::check_interrupted()?;
        // A run whose lock was lost (a prune may have collected what it landed) does not commit.
        self.dest.lock.check()?;
        match &mut self.how {
            How::Local {
                staging, landed, ..
            } => {
                if let Some(Some(store)) = self.dest.store.get() {
                    store
                        .sync_landed(landed)
                        .context("cannot sync the chunk store")?;
                }
                let staging = staging.take().expect("staging until the commit");
                let (file, path) = staging.create_stored(MANIFEST_PATH)?;
                put_local(file, &mut &manifest[..])
                    .map_err(|e| match e {
                        Side::Read(e) | Side::Write(e) => e,
                    })
                    .with_context(|| format!("cannot write `{}`", path.display()))?;
                staging.commit()?;
            }
            How::Remote {
                remote, committed, ..
            } => {
                let name = Name::new(format!("{}/{MANIFEST_PATH}", self.name))?;
                remote.wait(
                    remote
                        .backend()
                        .save_new(&name, Bytes::copy_from_slice(manifest)),
                )?;
                *committed = true;
            }
        }
        let packed = std::mem::take(self.packed.get_mut().expect("packed lock"));
        self.dest.has.lock().expect("has lock").extend(packed);
        Ok(packing)
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        // Locally, dropping the staging directory removes it; on a backend, what was sent of a
        // backup never committed goes (best effort: when that fails, the claim's run record is
        // kept and finds the rest). The name was claimed, so nothing under it is another run's.
        if let How::Remote {
            remote,
            claim,
            committed: false,
            ..
        } = &mut self.how
        {
            remote.wait(abandon(remote.backend(), &self.name, claim));
        }
    }
}

/// `file` (new) written with `reader`'s bytes, fsynced.
fn put_local(mut file: std::fs::File, reader: &mut dyn Read) -> Result<u64, Side> {
    let mut counted = Counted {
        inner: &mut file,
        bytes: 0,
    };
    crate::fs::copy_apart(&mut { reader }, &mut counted)?;
    let bytes = counted.bytes;
    file.sync_all().map_err(Side::Write)?;
    Ok(bytes)
}

/// A writer that counts what passes.
struct Counted<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Sends `reader`'s bytes as the object `name`: read here a piece at a time and handed over a
/// bounded channel to the save, a task of its own (memory: a few pieces, whatever the size). A
/// read error makes the stream fail, so the save leaves nothing; the error itself is returned.
fn put_remote(remote: &Remote, name: &Name, reader: &mut dyn Read) -> Result<u64, Side> {
    let (sender, receiver) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(2);
    let data = stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|piece| (piece, receiver))
    })
    .boxed();
    let backend = remote.shared_backend();
    let target = name.clone();
    let save = remote
        .handle()
        .spawn(async move { backend.save(&target, data).await });
    let mut failed = None;
    loop {
        let piece = match read_piece(reader) {
            Ok(piece) if piece.is_empty() => break,
            Ok(piece) => Ok(piece),
            Err(e) => {
                let said = io::Error::other(format!("the source could not be read: {e}"));
                failed = Some(e);
                Err(said)
            }
        };
        let last = piece.is_err();
        // A save that stopped (it failed) takes no more: its error is below.
        if remote.wait(sender.send(piece)).is_err() || last {
            break;
        }
    }
    drop(sender);
    let saved = remote.wait(save);
    if let Some(e) = failed {
        return Err(Side::Read(e));
    }
    match saved {
        Ok(saved) => saved.map_err(|e| Side::Write(io::Error::other(e))),
        Err(e) => Err(Side::Write(io::Error::other(e))),
    }
}

/// Up to `PIECE` bytes of `reader` (fewer only at its end).
fn read_piece(reader: &mut dyn Read) -> io::Result<Bytes> {
    let mut piece = BytesMut::zeroed(PIECE);
    let mut filled = 0;
    while filled < PIECE {
        match reader.read(&mut piece[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    piece.truncate(filled);
    Ok(piece.freeze())
}

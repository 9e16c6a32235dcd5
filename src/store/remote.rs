//! Backups on a `Backend` (S3): the read side. A repository there keeps exactly the local layout
//! as object names under its prefix (`NAME/metadata/manifest.json`, `NAME/collections/…`,
//! `.wqm-chunks/store.json`, `.wqm-chunks/chunks/ab/<sha256>`), so a copy of a local backups
//! directory made object by object (rclone, `aws s3 sync`) is a repository, and the other way
//! round. Directories do not exist there: one is implied by the names under it.
//!
//! The read seam is blocking (decompression, hashing, SQLite copies), the backend async: every
//! wait here leaves the runtime's workers alone (`block_in_place`, a no-op off the runtime), so
//! a read may come from the main thread inside `block_on`, a worker, or a blocking thread.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use futures_util::StreamExt;
use tokio::runtime::Handle;

use super::{Kind, Stat};
use crate::backend::local::LocalBackend;
use crate::backend::{Backend, BackendError, BlockingReader, Entry, Name, ObjectInfo};
use crate::format::layout::MANIFEST_PATH;
use crate::format::manifest::{self, Manifest, ManifestError};

/// Where `create --force` sends the backup that replaces `NAME` (`REPLACING/NAME/…`) before it
/// takes the name (`backup::replace`). Hidden: never a backup's name, never listed as one.
pub const REPLACING: &str = ".wqm-replace";

/// Where the backup replacing `name` is sent.
pub fn replacement_of(name: &str) -> String {
    format!("{REPLACING}/{name}")
}

/// What a backup's name holds in a repository on a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Occupant {
    Nothing,
    /// A backup: its manifest is there.
    Backup,
    /// Objects without a manifest: a run still sending them, or one that was killed.
    Unfinished,
    /// A `create --force` is putting a new backup in its place, or one that was killed left it
    /// half done (whatever is under the name itself).
    Replacing,
}

/// What the name `name` holds in the repository on `backend` (two listings).
pub async fn occupant(backend: &dyn Backend, name: &str) -> Result<Occupant, BackendError> {
    let objects = backend.list(&format!("{name}/")).await?;
    let replacement = backend.list(&format!("{}/", replacement_of(name))).await?;
    let manifest = format!("{name}/{MANIFEST_PATH}");
    Ok(if !replacement.is_empty() {
        Occupant::Replacing
    } else if objects.is_empty() {
        Occupant::Nothing
    } else if objects.iter().any(|o| o.name == manifest) {
        Occupant::Backup
    } else {
        Occupant::Unfinished
    })
}

/// A backups directory on a backend (a bucket and prefix, or a local directory).
#[derive(Clone)]
pub struct Remote {
    backend: Arc<dyn Backend>,
    /// The same backend when it is a local directory: read from blocking code directly.
    local: Option<LocalBackend>,
    handle: Handle,
    /// How the user wrote it (`s3://bucket/prefix`): the start of every path shown.
    shown: String,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("backend", &self.backend)
            .field("shown", &self.shown)
            .finish_non_exhaustive()
    }
}

/// `rel` as an object name; one that is not valid is `InvalidData`, as a path that leaves a
/// local backup is.
fn object(rel: impl Into<String>) -> io::Result<Name> {
    Name::new(rel).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The runtime a local repository's async work runs on when its caller has none.
fn own_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

/// `range` of `file` (`size` bytes) into `bytes`, read at the file (a local pack's chunk: no
/// runtime hop, no thread); fewer bytes when the file ends first, as a backend's ranged read
/// gives (a damaged index naming bytes far past the end allocates none of them).
fn read_at(
    (file, size): (&std::fs::File, u64),
    range: std::ops::Range<u64>,
    mut bytes: Vec<u8>,
) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let end = range.end.min(size);
    let len = usize::try_from(end.saturating_sub(range.start)).map_err(io::Error::other)?;
    bytes.clear();
    bytes.resize(len, 0);
    let mut got = 0;
    while got < len {
        match file.read_at(&mut bytes[got..], range.start + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    bytes.truncate(got);
    Ok(bytes)
}

/// Whether `e` is a backend's "no such object".
fn not_found(e: BackendError) -> io::Error {
    let kind = if e.is_not_found() {
        io::ErrorKind::NotFound
    } else {
        io::ErrorKind::Other
    };
    // The `BackendError` stays inside, so its exit code and hint reach the edge.
    io::Error::new(kind, e)
}

impl Remote {
    /// The repository `shown` (as the user wrote it) on `backend`, read through `handle`'s
    /// runtime.
    pub fn new(backend: Arc<dyn Backend>, handle: Handle, shown: String) -> Self {
        Remote {
            backend,
            local: None,
            handle,
            shown,
        }
    }

    /// The local directory `dir` as a repository: what a local chunk store does through it
    /// (open, size, copy, remove) done at the file from blocking code, without a runtime; any
    /// other call goes through the async interface on the runtime this is called from, or on a
    /// runtime of wqm's own when there is none (a library caller, a test).
    pub fn local(dir: &std::path::Path) -> Result<Self, BackendError> {
        Ok(Self::of_local(LocalBackend::open(dir)?))
    }

    /// `local` of a directory already opened as a backend.
    pub fn of_local(backend: LocalBackend) -> Self {
        let handle = Handle::try_current().unwrap_or_else(|_| own_runtime().handle().clone());
        Remote {
            shown: backend.root().display().to_string(),
            backend: Arc::new(backend.clone()),
            local: Some(backend),
            handle,
        }
    }

    /// The local directory the repository is, when it is one.
    pub fn local_backend(&self) -> Option<&LocalBackend> {
        self.local.as_ref()
    }

    /// Whether the repository is a local directory (its reads cost no round trip).
    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    /// Runs `work` to its end from blocking code, wherever that runs.
    pub fn wait<T>(&self, work: impl std::future::Future<Output = T>) -> T {
        tokio::task::block_in_place(|| self.handle.block_on(work))
    }

    /// `rel` (a name in the repository) as a path to show.
    pub fn shown(&self, rel: &str) -> PathBuf {
        PathBuf::from(format!("{}/{rel}", self.shown))
    }

    /// The backend the repository is on.
    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    /// The backend, to hold on to (the repository's lock refreshes through it; a save fed from
    /// blocking code runs on a task of its own).
    pub fn shared_backend(&self) -> Arc<dyn Backend> {
        self.backend.clone()
    }

    /// The runtime the repository is read and written through.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The repository as the user wrote it.
    pub fn shown_root(&self) -> &str {
        &self.shown
    }

    /// The object `rel`, read as it arrives. A name that is not a valid object name is
    /// `InvalidData`, as a path that leaves a local backup is.
    pub fn open(&self, rel: &str) -> io::Result<Box<dyn Read + Send>> {
        let name = object(rel)?;
        if let Some(local) = &self.local {
            let (file, _) = local.open_blocking(&name).map_err(not_found)?;
            return Ok(Box::new(file));
        }
        let data = self
            .wait(self.backend.load(&name, None))
            .map_err(not_found)?;
        Ok(Box::new(Blocking(BlockingReader::new(
            self.handle.clone(),
            data,
        ))))
    }

    /// The bytes `range` of the object `rel` (fewer when it ends first), with one request.
    pub fn read_range(&self, rel: &str, range: std::ops::Range<u64>) -> io::Result<Vec<u8>> {
        self.read_range_into(rel, range, Vec::new())
    }

    /// `read_range` into `bytes` (emptied first: a buffer used before).
    pub fn read_range_into(
        &self,
        rel: &str,
        range: std::ops::Range<u64>,
        bytes: Vec<u8>,
    ) -> io::Result<Vec<u8>> {
        let name = object(rel)?;
        if let Some(local) = &self.local {
            let (file, size) = local.open_blocking(&name).map_err(not_found)?;
            return read_at((&file, size), range, bytes);
        }
        self.wait(self.load_range(name, range, bytes))
    }

    /// `read_range_into` of an object on the network, as a task of the runtime (no thread
    /// waits for it meanwhile).
    pub async fn read_range_async(
        &self,
        rel: &str,
        range: std::ops::Range<u64>,
        bytes: Vec<u8>,
    ) -> io::Result<Vec<u8>> {
        debug_assert!(!self.is_local(), "a local read is a blocking one");
        self.load_range(object(rel)?, range, bytes).await
    }

    /// The bytes `range` of `name`, in `bytes` (emptied first).
    async fn load_range(
        &self,
        name: Name,
        range: std::ops::Range<u64>,
        mut bytes: Vec<u8>,
    ) -> io::Result<Vec<u8>> {
        bytes.clear();
        // Its size known, the buffer is made once (no doubling as the pieces come).
        bytes.reserve((range.end - range.start).min(64 << 20) as usize);
        let mut data = self
            .backend
            .load(&name, Some(range))
            .await
            .map_err(not_found)?;
        while let Some(piece) = data.next().await {
            bytes.extend_from_slice(&piece?);
        }
        Ok(bytes)
    }

    /// The size of the object `rel`.
    pub fn size(&self, rel: &str) -> io::Result<u64> {
        let name = object(rel)?;
        if let Some(local) = &self.local {
            return Ok(local.stat_blocking(&name).map_err(not_found)?.size);
        }
        Ok(self.wait(self.backend.stat(&name)).map_err(not_found)?.size)
    }

    /// Every object under `prefix` (`""`: all, `"dir/"`), by name.
    pub fn list(&self, prefix: &str) -> io::Result<Vec<ObjectInfo>> {
        self.wait(self.backend.list(prefix)).map_err(not_found)
    }

    /// `list` of each of `prefixes`, asked side by side (each is a round trip on S3).
    pub fn list_each<const N: usize>(
        &self,
        prefixes: [&str; N],
    ) -> io::Result<[Vec<ObjectInfo>; N]> {
        let listed = self.wait(futures_util::future::join_all(
            prefixes.map(|prefix| self.backend.list(prefix)),
        ));
        let listed = listed
            .into_iter()
            .map(|l| l.map_err(not_found))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(listed.try_into().expect("one listing per prefix"))
    }

    /// Hands `found` everything under `prefix` as `LocalBackend::visit_blocking` does: locally
    /// directories (entered when `found` says so), links and special files too, each as what
    /// it is, held nowhere; on S3 the objects, all files.
    pub fn visit(&self, prefix: &str, mut found: impl FnMut(Entry) -> bool) -> io::Result<()> {
        if let Some(local) = &self.local {
            return local.visit_blocking(prefix, found).map_err(not_found);
        }
        for object in self.list(prefix)? {
            found(Entry {
                name: object.name,
                kind: Kind::File,
                size: object.size,
            });
        }
        Ok(())
    }

    /// The names at the top of the repository (`Backend::top_level`), without listing what
    /// they hold.
    pub fn top_level(&self) -> io::Result<Vec<String>> {
        self.wait(self.backend.top_level()).map_err(not_found)
    }

    /// Writes the small object `rel` (replacing one there).
    pub fn put(&self, rel: &str, bytes: Vec<u8>) -> io::Result<()> {
        let name = object(rel)?;
        self.wait(self.backend.save(&name, crate::backend::once(bytes)))
            .map(drop)
            .map_err(not_found)
    }

    /// Removes every object under `dir/` (locally the directory, at the files).
    pub fn remove_under(&self, dir: &str) -> io::Result<()> {
        if let Some(local) = &self.local {
            return local
                .remove_under_blocking(dir)
                .map(drop)
                .map_err(not_found);
        }
        self.wait(self.backend.remove_under(dir))
            .map(drop)
            .map_err(not_found)
    }

    /// Removes the objects `rels` (those already gone are no error), in as few requests as the
    /// backend can (`Backend::remove_all`); locally at the files, with no copy of the names (a
    /// collection's may be hundreds of thousands).
    pub fn remove_all(&self, rels: Vec<String>) -> io::Result<()> {
        let names = rels
            .into_iter()
            .map(object)
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(local) = &self.local {
            return local.remove_all_blocking(&names).map_err(not_found);
        }
        self.wait(self.backend.remove_all(&names))
            .map_err(not_found)
    }

    /// Copies the object `from` to `to` (replacing one there): a hard link locally, on the
    /// server on S3 (`Backend::copy`).
    pub fn copy(&self, from: &str, to: &str) -> io::Result<u64> {
        let (from, to) = (object(from)?, object(to)?);
        if let Some(local) = &self.local {
            return local.copy_blocking(&from, &to).map_err(not_found);
        }
        self.wait(self.backend.copy(&from, &to)).map_err(not_found)
    }

    /// Removes the object `rel` (one already gone is no error).
    pub fn remove(&self, rel: &str) -> io::Result<()> {
        let name = object(rel)?;
        if let Some(local) = &self.local {
            return local.remove_blocking(&name).map_err(not_found);
        }
        self.wait(self.backend.remove(&name)).map_err(not_found)
    }

    /// Where the objects of the backup `name` are: under `name`; or, while a `create --force`
    /// puts its new backup in place (the old manifest removed, the new one not copied yet),
    /// under its replacement, complete since before the old manifest went. So a name holds a
    /// whole backup, old or new, at every moment.
    pub fn root_of(&self, name: &str) -> io::Result<String> {
        Ok(self.locate(name)?.unwrap_or_else(|| name.to_string()))
    }

    /// `root_of` when a manifest is there; `None` when neither `name` nor its replacement has
    /// one (no backup).
    pub fn locate(&self, name: &str) -> io::Result<Option<String>> {
        let replacement = replacement_of(name);
        for root in [name, replacement.as_str()] {
            match self.size(&format!("{root}/{MANIFEST_PATH}")) {
                Ok(_) => return Ok(Some(root.to_string())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// The names whose replacement is complete (its manifest there): backups whose own
    /// objects may all be gone for a moment (`root_of`).
    pub fn replaced_names(&self) -> io::Result<Vec<String>> {
        let prefix = format!("{REPLACING}/");
        let suffix = format!("/{MANIFEST_PATH}");
        Ok(self
            .list(&prefix)?
            .into_iter()
            .filter_map(|o| {
                Some(
                    o.name
                        .strip_prefix(&prefix)?
                        .strip_suffix(&suffix)?
                        .to_string(),
                )
            })
            .filter(|name| !name.contains('/'))
            .collect())
    }

    /// The manifest of the backup `name`, stored under `root` (`root_of`): its size (`listed`,
    /// else asked) checked before it is read, every name in it checked.
    fn read_manifest(
        &self,
        name: &str,
        root: &str,
        listed: Option<u64>,
    ) -> Result<Manifest, ManifestError> {
        let rel = format!("{root}/{MANIFEST_PATH}");
        let path = self.shown(&rel);
        let size = match listed {
            Some(size) => size,
            None => self
                .size(&rel)
                .map_err(|e| manifest::load_error(&path, e))?,
        };
        if size > manifest::MAX_MANIFEST_BYTES {
            // `read_from` says it is too large, reading no more than its limit.
            return Manifest::read_from(io::repeat(b' ').take(size), &path);
        }
        let reader = self
            .open(&rel)
            .map_err(|e| manifest::load_error(&path, e))?;
        match self.seal() {
            None => Manifest::read_from(reader, &path),
            Some(seal) => {
                let identity = crate::crypto::Identity::manifest(name);
                let reader = seal
                    .reader(io::BufReader::new(reader), &identity)
                    .map_err(|e| manifest::load_error(&path, e))?;
                Manifest::read_from(reader, &path)
            }
        }
    }

    /// The key of this repository when it is encrypted and this run unlocked it.
    pub fn seal(&self) -> Option<super::Seal> {
        super::seal::of(&self.shown)
    }

    /// The backup `name` of this repository, its objects (under `root_of(name)`) listed once (a
    /// backup is immutable once its manifest is there).
    pub fn backup(&self, name: &str) -> io::Result<RemoteBackup> {
        // Its own listing says whether its manifest is there: no request more in the usual case.
        let backup = self.backup_at(name, name.to_string())?;
        if backup.objects.contains_key(MANIFEST_PATH) {
            return Ok(backup);
        }
        match self.root_of(name)? {
            root if root == name => Ok(backup),
            root => self.backup_at(name, root),
        }
    }

    /// The backup `name` whose objects are under `root`.
    pub fn backup_at(&self, name: &str, root: String) -> io::Result<RemoteBackup> {
        let prefix = format!("{root}/");
        let objects = self
            .list(&prefix)?
            .into_iter()
            .filter_map(|o| Some((o.name.strip_prefix(&prefix)?.to_string(), o.size)))
            .collect();
        Ok(RemoteBackup {
            repository: self.clone(),
            name: name.to_string(),
            root,
            objects: Arc::new(objects),
            manifest: Arc::new(OnceLock::new()),
        })
    }
}

/// A `BlockingReader` that may be read on a runtime's thread too.
struct Blocking(BlockingReader);

impl Read for Blocking {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        tokio::task::block_in_place(|| self.0.read(buf))
    }
}

/// One backup of a `Remote` repository and the objects it has (names relative to it).
#[derive(Clone, Debug)]
pub struct RemoteBackup {
    pub repository: Remote,
    pub name: String,
    /// Where its objects are: `name`, or its replacement while that takes the name.
    root: String,
    objects: Arc<BTreeMap<String, u64>>,
    /// Its manifest once read: the object does not change while it is the backup's, and every
    /// read is a request.
    manifest: Arc<OnceLock<Manifest>>,
}

impl RemoteBackup {
    /// Where the backup is, as a path to show (`s3://bucket/prefix/NAME`).
    pub fn shown(&self) -> PathBuf {
        self.repository.shown(&self.name)
    }

    /// Whether it is read from where a killed `create --force` sent it (its name lost its old
    /// manifest, the swap never finished: `cleanup` finishes it).
    pub fn is_half_swapped(&self) -> bool {
        self.root != self.name
    }

    /// Whether the backup has any object at all.
    pub fn exists(&self) -> bool {
        !self.objects.is_empty()
    }

    pub fn open(&self, rel: &str) -> io::Result<Box<dyn Read + Send>> {
        self.repository.open(&format!("{}/{rel}", self.root))
    }

    /// Its manifest (`Remote::read_manifest`, read once, its size from the listing).
    pub fn read_manifest(&self) -> Result<Manifest, ManifestError> {
        if let Some(manifest) = self.manifest.get() {
            return Ok(manifest.clone());
        }
        let listed = self.objects.get(MANIFEST_PATH).copied();
        let manifest = self
            .repository
            .read_manifest(&self.name, &self.root, listed)?;
        Ok(self.manifest.get_or_init(|| manifest).clone())
    }

    /// An object is a file; a name with objects under it a directory.
    pub fn stat(&self, rel: &str) -> io::Result<Stat> {
        if let Some(&len) = self.objects.get(rel) {
            return Ok(Stat {
                kind: Kind::File,
                len,
            });
        }
        let under = format!("{rel}/");
        match self.objects.range(under.clone()..).next() {
            Some((name, _)) if name.starts_with(&under) => Ok(Stat {
                kind: Kind::Dir,
                len: 0,
            }),
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "`{}` does not exist",
                    self.repository
                        .shown(&format!("{}/{rel}", self.name))
                        .display()
                ),
            )),
        }
    }

    /// Every object, relative, sorted.
    pub fn list(&self) -> Vec<String> {
        self.objects.keys().cloned().collect()
    }

    /// The bytes of all its objects.
    pub fn size(&self) -> u64 {
        self.objects.values().sum()
    }
}

//! Where a repository's objects live: one interface (`Backend`, as restic's `internal/backend`)
//! with two implementations, a local directory (`local`) and S3 (`s3`, through `object_store`).
//! Objects are named by `/`-separated relative names (`Name`); a name is never interpreted by
//! the storage (no link followed, no `..`, nothing outside the repository). Lock objects held
//! by every run live on it too (`lock`).
//!
//! The interface is async: wqm runs a tokio runtime, S3 is network I/O, and the local
//! implementation runs its blocking file I/O on tokio's blocking threads. Data moves as streams
//! of `Bytes` (`ByteStream`) so a snapshot of any size passes with bounded memory; blocking
//! code reads a loaded stream through `BlockingReader`.
//!
//! Repositories on S3 are reached only through it; local ones through `LocalBackend`'s
//! blocking twins of its calls for what the store reads and inspects, the rest still by
//! `store`'s own path code (docs/architecture.md, "What is left for the commands").

use std::fmt;
use std::io::{self, Read};
use std::ops::Range;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};

use crate::exit::{Classify, ExitCode};

#[cfg(unix)]
pub mod local;
mod location;
pub mod lock;
pub mod s3;
mod s3_config;
mod s3_errors;

pub use location::{Location, LocationError};
pub use s3_config::{S3Options, Secret};

/// The bytes of an object as they arrive (or leave): chunks of any size, an error ending it.
pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

/// A stream of one buffer (for small objects: lock files, manifests).
pub fn once(bytes: impl Into<Bytes>) -> ByteStream {
    stream::once(futures_util::future::ready(Ok(bytes.into()))).boxed()
}

/// Reads a whole stream into memory; for small objects only (locks, manifests).
pub async fn collect(mut data: ByteStream) -> io::Result<Vec<u8>> {
    let mut all = Vec::new();
    while let Some(piece) = data.next().await {
        all.extend_from_slice(&piece?);
    }
    Ok(all)
}

/// What a backend's `stat` and `list` tell about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub name: String,
    pub size: u64,
}

/// What a name in a repository is by itself (a link is a link). Every object on S3 is a file; a
/// local directory may also hold directories (empty ones too), links and other special files,
/// which `LocalBackend::entries` reports so that what inspects a repository can name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

/// One name `LocalBackend::entries` found: an object, or anything else among them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub kind: Kind,
    pub size: u64,
}

/// A run's upload that never finished (a killed run's temporary file, or an S3 multipart upload
/// that was neither completed nor aborted), as `unfinished` finds it for a later cleanup.
#[derive(Clone, Debug, PartialEq)]
pub struct Unfinished {
    /// The backend's own id for it (a temporary file's name, a multipart upload's record).
    pub id: String,
    /// The object it was going to become, when known.
    pub name: Option<String>,
    /// Seconds since the epoch when it started (0 when unknown).
    pub started: f64,
}

/// The storage of one repository. Every method is safe to call from many tasks at once.
///
/// Guarantees both implementations give (the conformance suite in
/// `tests/integration/backend.rs` checks each):
/// - `save` is all or nothing: until it returns `Ok` nobody sees the object (or sees the old
///   one, when it replaces one); a failed or dropped save leaves no visible object, only
///   something `unfinished` reports.
/// - `save_new` creates only when the name is free, atomically (two racing callers: one wins,
///   the other gets `AlreadyExists`).
/// - `load` of a range past the end yields the bytes that exist (possibly none).
/// - `remove` of a missing object succeeds (as S3's `DELETE` does), so a retried cleanup is
///   harmless.
/// - `list` returns every object under a prefix, in no particular order, whatever their number.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + fmt::Debug {
    /// How the repository is shown to the user (`/path` or `s3://bucket/prefix at endpoint`).
    fn describe(&self) -> String;

    /// Writes `data` under `name`, replacing any object there; returns the bytes written.
    /// Memory stays bounded whatever the size (S3: a multipart upload, parts of
    /// `s3::PART_SIZE`).
    async fn save(&self, name: &Name, data: ByteStream) -> Result<u64, BackendError>;

    /// Writes a small object only if `name` is free: `AlreadyExists` otherwise.
    async fn save_new(&self, name: &Name, data: Bytes) -> Result<(), BackendError>;

    /// Whether `save_new` really refuses a taken name here (an S3 server that ignores
    /// `If-None-Match: *` overwrites instead): asked before a run writes backups there, since a
    /// commit and a claim on a name both rest on it.
    async fn refuses_taken_names(&self) -> Result<bool, BackendError>;

    /// The object's bytes, or those of `range` (clipped to the object's end).
    async fn load(
        &self,
        name: &Name,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, BackendError>;

    async fn stat(&self, name: &Name) -> Result<ObjectInfo, BackendError>;

    /// Every object whose name starts with `prefix` (`""`: all), not in any order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError>;

    /// The first components of the names of every object but the backend's own, sorted, without
    /// listing the objects under them (S3: one delimited listing): a repository's backups and
    /// its own parts, each once. An object right at the top has no component to give; a name
    /// whose objects are all gone may still be given (SeaweedFS keeps the emptied prefix).
    async fn top_level(&self) -> Result<Vec<String>, BackendError>;

    /// Writes a copy of the object `from` under `to`, replacing any object there, all or
    /// nothing as `save`; returns its size. Here its bytes pass through this process; S3 copies
    /// on the server (`CopyObject`) up to `s3::MAX_SERVER_COPY`, and through this process
    /// beyond it or when the server refuses the copy.
    async fn copy(&self, from: &Name, to: &Name) -> Result<u64, BackendError> {
        let data = self.load(from, None).await?;
        self.save(to, data).await
    }

    /// Removes the object; a missing one is no error.
    async fn remove(&self, name: &Name) -> Result<(), BackendError>;

    /// Removes every object of `names`; a missing one is no error. One request each here;
    /// S3 sends them a thousand to a request (`DeleteObjects`).
    async fn remove_all(&self, names: &[Name]) -> Result<(), BackendError> {
        for name in names {
            self.remove(name).await?;
        }
        Ok(())
    }

    /// Removes every object under `dir/` (a backup's, say); returns how many. Listed, then
    /// `remove_all` here; a local directory goes whole, empty directories in it too.
    async fn remove_under(&self, dir: &str) -> Result<usize, BackendError> {
        let objects = self.list(&format!("{dir}/")).await?;
        let names = objects
            .into_iter()
            .map(|o| Name::new(o.name))
            .collect::<Result<Vec<_>, _>>()?;
        self.remove_all(&names).await?;
        Ok(names.len())
    }

    /// Uploads that were started and neither finished nor abandoned cleanly (a killed run's).
    /// A running save's is among them: only call `abort` on those no live run owns (the
    /// caller knows, through the repository's locks).
    async fn unfinished(&self) -> Result<Vec<Unfinished>, BackendError>;

    /// Throws an unfinished upload away; one already gone is no error.
    async fn abort(&self, upload: &Unfinished) -> Result<(), BackendError>;
}

/// The name of an object in a repository: relative, `/`-separated, every component a plain
/// name (no empty, `.` or `..` component, no backslash, no NUL, no control character), and not
/// inside `.wqm-backend` (the backends' own bookkeeping).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

/// The directory (local) or key prefix (S3) where a backend keeps its own bookkeeping:
/// temporary files and records of unfinished uploads. Never a valid `Name`, never listed.
pub const RESERVED: &str = ".wqm-backend";

impl Name {
    pub fn new(name: impl Into<String>) -> Result<Self, BackendError> {
        let name = name.into();
        match Self::check(&name) {
            Ok(()) => Ok(Name(name)),
            Err(reason) => Err(BackendError::BadName {
                name: crate::format::names::shown(&name),
                reason,
            }),
        }
    }

    fn check(name: &str) -> Result<(), &'static str> {
        if name.is_empty() {
            return Err("is empty");
        }
        if name.len() > 1024 {
            return Err("is longer than 1024 bytes");
        }
        if name.starts_with('/') {
            return Err("is absolute");
        }
        if name.contains('\\') {
            return Err("contains a backslash");
        }
        if name.chars().any(char::is_control) {
            return Err("contains a control character or NUL");
        }
        if name.split('/').any(|part| part.is_empty()) {
            return Err("has an empty component");
        }
        if name.split('/').any(|part| part == "." || part == "..") {
            return Err("has a `.` or `..` component");
        }
        if name.split('/').next() == Some(RESERVED) {
            return Err("is inside the backend's own `.wqm-backend`");
        }
        Ok(())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a backend operation failed. Messages name the repository (a path, or the bucket and
/// endpoint), never a credential.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("`{name}` does not exist in `{repository}`")]
    NotFound { repository: String, name: String },
    #[error("`{name}` already exists in `{repository}`")]
    AlreadyExists { repository: String, name: String },
    #[error("`{name}` is not a valid object name: it {reason}")]
    BadName { name: String, reason: &'static str },
    #[error("the credentials were refused by `{endpoint}` for bucket `{bucket}`: {reason}")]
    Unauthorized {
        endpoint: String,
        bucket: String,
        reason: String,
    },
    #[error("access denied by `{endpoint}` to bucket `{bucket}`: {reason}")]
    Forbidden {
        endpoint: String,
        bucket: String,
        reason: String,
    },
    #[error("bucket `{bucket}` does not exist at `{endpoint}`")]
    NoSuchBucket { endpoint: String, bucket: String },
    #[error("cannot reach `{endpoint}` (bucket `{bucket}`): {reason}")]
    Unreachable {
        endpoint: String,
        bucket: String,
        reason: String,
    },
    #[error("no S3 credentials for `{endpoint}`: {reason}")]
    NoCredentials { endpoint: String, reason: String },
    #[error("`{repository}` is not usable: {reason}")]
    BadConfig { repository: String, reason: String },
    #[error("`{name}` in `{repository}` is a symbolic link or passes through one (`{link}`); wqm never follows links in a repository")]
    Link {
        repository: String,
        name: String,
        link: String,
    },
    #[error("`{name}` in `{repository}` is not a regular file")]
    NotAFile { repository: String, name: String },
    #[error("{what} `{path}`: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: io::Error,
    },
    #[error("{what} in `{repository}` failed: {reason}")]
    Other {
        repository: String,
        what: String,
        reason: String,
    },
}

impl BackendError {
    /// Whether the object (or bucket) is missing, as opposed to unreadable.
    pub fn is_not_found(&self) -> bool {
        matches!(self, BackendError::NotFound { .. })
    }
}

/// For file-like code (`io::Result`): the kind a caller may test (`NotFound`, `StorageFull`,
/// …), the `BackendError` inside for its exit code and hint.
impl From<BackendError> for io::Error {
    fn from(e: BackendError) -> io::Error {
        let kind = match &e {
            BackendError::NotFound { .. } => io::ErrorKind::NotFound,
            BackendError::AlreadyExists { .. } => io::ErrorKind::AlreadyExists,
            BackendError::Io { source, .. } => source.kind(),
            BackendError::BadName { .. }
            | BackendError::Link { .. }
            | BackendError::NotAFile { .. } => io::ErrorKind::InvalidData,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

impl Classify for BackendError {
    fn exit_code(&self) -> ExitCode {
        match self {
            BackendError::NotFound { .. } => ExitCode::InvalidBackup,
            BackendError::AlreadyExists { .. } => ExitCode::Failure,
            BackendError::BadName { .. } => ExitCode::InvalidBackup,
            BackendError::Unauthorized { .. }
            | BackendError::Forbidden { .. }
            | BackendError::NoSuchBucket { .. }
            | BackendError::Unreachable { .. }
            | BackendError::NoCredentials { .. }
            | BackendError::BadConfig { .. } => ExitCode::Usage,
            BackendError::Link { .. }
            | BackendError::NotAFile { .. }
            | BackendError::Io { .. }
            | BackendError::Other { .. } => ExitCode::Failure,
        }
    }

    fn hint(&self) -> Option<String> {
        let hint = match self {
            BackendError::Unauthorized { .. } => {
                "check `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`), or the profile `AWS_PROFILE` names"
            }
            BackendError::Forbidden { .. } => {
                "the credentials work but may not use this bucket: check its policy"
            }
            BackendError::NoSuchBucket { .. } => {
                "create the bucket, or check the name and `AWS_ENDPOINT_URL`"
            }
            BackendError::Unreachable { .. } => {
                "check `AWS_ENDPOINT_URL` and that the server is running; nothing was written"
            }
            BackendError::NoCredentials { .. } => {
                "set `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, or `AWS_PROFILE` with `~/.aws/credentials`"
            }
            BackendError::Io { source, .. }
                if source.kind() == io::ErrorKind::StorageFull =>
            {
                crate::exit::DISK_FULL_HINT
            }
            _ => return None,
        };
        Some(hint.to_string())
    }
}

/// A loaded stream read from blocking code (a `spawn_blocking` thread, never a runtime
/// thread): each `read` waits for the next piece on the runtime `handle`.
pub struct BlockingReader {
    handle: tokio::runtime::Handle,
    data: ByteStream,
    piece: Bytes,
}

impl BlockingReader {
    pub fn new(handle: tokio::runtime::Handle, data: ByteStream) -> Self {
        BlockingReader {
            handle,
            data,
            piece: Bytes::new(),
        }
    }
}

impl Read for BlockingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.piece.is_empty() {
            match self.handle.block_on(self.data.next()) {
                None => return Ok(0),
                Some(piece) => self.piece = piece?,
            }
        }
        let n = buf.len().min(self.piece.len());
        buf[..n].copy_from_slice(&self.piece.split_to(n));
        Ok(n)
    }
}

/// 16 random bytes in hex: ids of locks, temporary files and upload records.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    // The OS's generator only fails on a broken system; the time and pid still keep ids apart.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes = (nanos ^ (u128::from(std::process::id()) << 96)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_leave_the_repository_are_refused() {
        for bad in [
            "",
            "/abs",
            "a/../b",
            "..",
            "./a",
            "a//b",
            "a/",
            "a\\b",
            "a\0b",
            "a\nb",
            ".wqm-backend/tmp/x",
            ".wqm-backend",
        ] {
            let error = Name::new(bad).unwrap_err();
            assert!(
                matches!(error, BackendError::BadName { .. }),
                "{bad:?}: {error}"
            );
        }
        for good in [
            "a",
            "locks/0123",
            "snapshots/x.tar.zst",
            ".hidden/a",
            "a..b",
        ] {
            assert_eq!(Name::new(good).unwrap().as_str(), good);
        }
        assert!(Name::new("x".repeat(1025)).is_err());
    }

    #[test]
    fn ids_are_random_hex() {
        let a = random_id();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, random_id());
    }

    #[test]
    fn a_blocking_reader_reads_every_piece() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let pieces: Vec<io::Result<Bytes>> = vec![
            Ok(Bytes::from_static(b"ab")),
            Ok(Bytes::new()),
            Ok(Bytes::from_static(b"cde")),
        ];
        let mut reader =
            BlockingReader::new(runtime.handle().clone(), stream::iter(pieces).boxed());
        let mut all = String::new();
        reader.read_to_string(&mut all).unwrap();
        assert_eq!(all, "abcde");
        let failing: Vec<io::Result<Bytes>> =
            vec![Ok(Bytes::from_static(b"a")), Err(io::Error::other("cut"))];
        let mut reader =
            BlockingReader::new(runtime.handle().clone(), stream::iter(failing).boxed());
        let mut all = Vec::new();
        assert_eq!(reader.read_to_end(&mut all).unwrap_err().to_string(), "cut");
    }
}

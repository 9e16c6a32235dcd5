//! A repository in an S3 bucket under a key prefix, through `object_store` (its `AmazonS3`:
//! SigV4 signing, retries with backoff, pagination; path-style requests, as SeaweedFS and MinIO
//! want). A save of up to one part is one `PUT`; a larger one is a multipart upload of
//! `PART_SIZE` parts, one being sent while the next is read (memory: two parts), aborted when
//! anything fails. Before its first part, the upload's id is written to a record under
//! `.wqm-backend/uploads/`, removed when the upload completes or is aborted: a killed run's
//! upload is found there (`unfinished`) and aborted by a later run (`abort`).

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, MultipartId, ObjectStore, ObjectStoreExt,
    PutMode, PutOptions, PutPayload, PutPayloadMut, RetryConfig,
};
use serde::{Deserialize, Serialize};

use super::s3_config::Resolved;
use super::s3_errors::{chain_text, innermost, resent, unreachable};
use super::{Backend, BackendError, ByteStream, Name, ObjectInfo, Unfinished, RESERVED};

/// The size of a multipart upload's parts (S3 wants at least 5 MiB but the last; 10 000 parts
/// at most: objects up to 80 GiB).
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// The largest object S3 copies in one `CopyObject` request (5 GiB); a larger one is copied
/// through this process.
pub const MAX_SERVER_COPY: u64 = 5 * 1024 * 1024 * 1024;

/// A bucket and a prefix in it.
#[derive(Clone)]
pub struct S3Backend {
    store: Arc<AmazonS3>,
    bucket: String,
    /// `""` or a prefix without a trailing `/`.
    prefix: String,
    endpoint: String,
    /// Whether the server has answered for this client (`check`), shared by its prefixes.
    checked: Arc<AtomicBool>,
}

/// A client this process made, kept for the next prefix of its bucket.
struct Client {
    runtime: tokio::runtime::Id,
    bucket: String,
    settings: Resolved,
    store: Arc<AmazonS3>,
    checked: Arc<AtomicBool>,
}

/// The clients made so far, by runtime, bucket and settings: a run that opens several prefixes
/// of one bucket (a backup and its repository, a copy's two ends) uses one client, so its
/// connections are reused, its TLS roots loaded once (~150 files from the system's store), and
/// the server asked once. A client is only used on the runtime it was made on (its pooled
/// connections run there).
static CLIENTS: Mutex<Vec<Client>> = Mutex::new(Vec::new());

/// Bucket, prefix and endpoint; the client (which holds the credentials) is left out.
impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Backend")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// What `.wqm-backend/uploads/ID` holds about a multipart upload.
#[derive(Debug, Serialize, Deserialize)]
struct UploadRecord {
    name: String,
    upload_id: String,
    started: f64,
    host: String,
    pid: u32,
}

impl S3Backend {
    /// A client for `bucket`/`prefix` with `settings` (the one made before for the bucket,
    /// on this runtime, with the same settings); nothing is asked of the server yet (`check`
    /// does).
    pub fn open(bucket: &str, prefix: &str, settings: &Resolved) -> Result<Self, BackendError> {
        let runtime = tokio::runtime::Handle::try_current().ok().map(|h| h.id());
        let mut clients = CLIENTS.lock().unwrap_or_else(|e| e.into_inner());
        let made = clients
            .iter()
            .find(|c| Some(c.runtime) == runtime && c.bucket == bucket && c.settings == *settings);
        let (store, checked) = match made {
            Some(client) => (client.store.clone(), client.checked.clone()),
            None => {
                let store = Arc::new(Self::client(bucket, settings)?);
                let checked = Arc::new(AtomicBool::new(false));
                if let Some(runtime) = runtime {
                    clients.push(Client {
                        runtime,
                        bucket: bucket.to_string(),
                        settings: settings.clone(),
                        store: store.clone(),
                        checked: checked.clone(),
                    });
                }
                (store, checked)
            }
        };
        Ok(S3Backend {
            store,
            bucket: bucket.to_string(),
            prefix: prefix.trim_end_matches('/').to_string(),
            endpoint: settings.shown_endpoint(),
            checked,
        })
    }

    /// A new client for `bucket` with `settings`.
    fn client(bucket: &str, settings: &Resolved) -> Result<AmazonS3, BackendError> {
        let endpoint = settings.shown_endpoint();
        // reqwest is built without a TLS crypto provider; rustls' ring provider is ours.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut options = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(10))
            .with_timeout(Duration::from_secs(300));
        if endpoint.starts_with("http://") {
            options = options.with_allow_http(true);
        }
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(&settings.region)
            .with_access_key_id(&settings.access_key_id)
            .with_secret_access_key(settings.secret_access_key.expose())
            .with_virtual_hosted_style_request(false)
            .with_client_options(options)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(5),
                    base: 2.0,
                },
                max_retries: 5,
                retry_timeout: Duration::from_secs(120),
            });
        if let Some(token) = &settings.session_token {
            builder = builder.with_token(token.expose());
        }
        if let Some(url) = &settings.endpoint {
            builder = builder.with_endpoint(url);
        }
        builder.build().map_err(|e| BackendError::BadConfig {
            repository: format!("s3://{bucket}"),
            // The builder's messages name settings, never their values.
            reason: e.to_string(),
        })
    }

    /// Asks the server once (a listing of at most one page under the prefix), so wrong
    /// credentials, a missing bucket or an unreachable endpoint are refused before any work;
    /// once it has answered, the bucket's other prefixes are not asked again.
    pub async fn check(&self) -> Result<(), BackendError> {
        if self.checked.load(Ordering::Relaxed) {
            return Ok(());
        }
        let prefix = self.path("")?;
        self.store
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(|e| self.error("checking the bucket", "", e))?;
        self.checked.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Whether the server honours `If-None-Match: *` (SeaweedFS and AWS do; rclone's `serve s3`
    /// 1.75 ignores it and overwrites): writes a probe object under `.wqm-backend/probe/` twice
    /// and removes it. Without it `save_new` cannot refuse a taken name, so a repository must
    /// not be written there (the commands ask once, when a repository is made).
    pub async fn supports_conditional_put(&self) -> Result<bool, BackendError> {
        let probe = format!("{RESERVED}/probe/{}", super::random_id());
        self.put_small(&probe, Bytes::from_static(b"1").into(), PutMode::Create)
            .await?;
        let second = self
            .put_small(&probe, Bytes::from_static(b"2").into(), PutMode::Create)
            .await;
        let _ = self.store.delete(&self.path(&probe)?).await;
        match second {
            Ok(()) => Ok(false),
            Err(BackendError::AlreadyExists { .. }) => Ok(true),
            Err(e) => Err(e),
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key of `name` (`prefix/name`).
    fn path(&self, name: &str) -> Result<Path, BackendError> {
        let key = match (self.prefix.is_empty(), name.is_empty()) {
            (true, _) => name.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{name}", self.prefix),
        };
        Path::parse(&key).map_err(|e| BackendError::BadName {
            name: crate::format::names::shown(name),
            reason: if e.to_string().contains("empty") {
                "has an empty component"
            } else {
                "has a character S3 keys cannot hold here"
            },
        })
    }

    /// `name` of a key under the prefix.
    fn name_of(&self, key: &Path) -> Option<String> {
        let key = key.as_ref();
        if self.prefix.is_empty() {
            Some(key.to_string())
        } else {
            key.strip_prefix(&self.prefix)?
                .strip_prefix('/')
                .map(str::to_string)
        }
    }

    fn record_name(id: &str) -> String {
        format!("{RESERVED}/uploads/{id}")
    }

    /// An `object_store` error as what it means for wqm; the endpoint and bucket named, the
    /// credentials never (its messages name the method and URL only).
    fn error(&self, what: &str, name: &str, e: object_store::Error) -> BackendError {
        let text = chain_text(&e);
        let code = |codes: &[&str]| {
            codes
                .iter()
                .find(|c| text.contains(**c))
                .map(|c| c.to_string())
        };
        if code(&["NoSuchBucket"]).is_some() {
            return BackendError::NoSuchBucket {
                endpoint: self.endpoint.clone(),
                bucket: self.bucket.clone(),
            };
        }
        let auth = code(&[
            "SignatureDoesNotMatch",
            "InvalidAccessKeyId",
            "InvalidToken",
            "ExpiredToken",
            "AuthorizationHeaderMalformed",
        ]);
        if let Some(reason) = auth {
            return BackendError::Unauthorized {
                endpoint: self.endpoint.clone(),
                bucket: self.bucket.clone(),
                reason,
            };
        }
        match e {
            object_store::Error::NotFound { .. } => BackendError::NotFound {
                repository: self.describe(),
                name: name.to_string(),
            },
            object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. } => BackendError::AlreadyExists {
                repository: self.describe(),
                name: name.to_string(),
            },
            object_store::Error::Unauthenticated { .. } => BackendError::Unauthorized {
                endpoint: self.endpoint.clone(),
                bucket: self.bucket.clone(),
                reason: "the server wants authentication".to_string(),
            },
            object_store::Error::PermissionDenied { .. } => BackendError::Forbidden {
                endpoint: self.endpoint.clone(),
                bucket: self.bucket.clone(),
                reason: code(&["AccessDenied", "AllAccessDisabled"])
                    .unwrap_or_else(|| "403 Forbidden".to_string()),
            },
            e if unreachable(&e) => BackendError::Unreachable {
                endpoint: self.endpoint.clone(),
                bucket: self.bucket.clone(),
                reason: innermost(&e),
            },
            _ => BackendError::Other {
                repository: self.describe(),
                what: if name.is_empty() {
                    what.to_string()
                } else {
                    format!("{what} `{name}`")
                },
                reason: text,
            },
        }
    }

    async fn put_small(
        &self,
        name: &str,
        payload: PutPayload,
        mode: PutMode,
    ) -> Result<(), BackendError> {
        let path = self.path(name)?;
        let options = PutOptions {
            mode,
            ..PutOptions::default()
        };
        resent(|| self.store.put_opts(&path, payload.clone(), options.clone()))
            .await
            .map(|_| ())
            .map_err(|e| self.error("saving", name, e))
    }

    /// A multipart upload of `first` and what follows in `data`: its record written first,
    /// aborted on any failure (or when the returned future is dropped), record removed at the
    /// end either way.
    async fn save_multipart(
        &self,
        name: &Name,
        first: PutPayload,
        mut data: ByteStream,
    ) -> Result<u64, BackendError> {
        let path = self.path(name.as_str())?;
        let upload_id = resent(|| self.store.create_multipart(&path))
            .await
            .map_err(|e| self.error("starting the upload of", name.as_str(), e))?;
        let record_id = super::random_id();
        let record = UploadRecord {
            name: name.to_string(),
            upload_id: upload_id.clone(),
            started: crate::now(),
            host: super::lock::hostname(),
            pid: std::process::id(),
        };
        let mut guard = AbortGuard {
            store: self.store.clone(),
            path: path.clone(),
            upload_id: upload_id.clone(),
            record: self.path(&Self::record_name(&record_id))?,
            armed: true,
        };
        let json = serde_json::to_vec(&record).expect("a record always serializes");
        if let Err(e) = self
            .put_small(
                &Self::record_name(&record_id),
                json.into(),
                PutMode::Overwrite,
            )
            .await
        {
            guard.abort().await;
            return Err(e);
        }
        let result = self
            .send_parts(name, &path, &upload_id, first, &mut data)
            .await;
        match result {
            Ok((written, parts)) => {
                let completed = resent(|| {
                    self.store
                        .complete_multipart(&path, &upload_id, parts.clone())
                })
                .await
                .map_err(|e| self.error("completing the upload of", name.as_str(), e));
                if let Err(e) = completed {
                    guard.abort().await;
                    return Err(e);
                }
                guard.armed = false;
                // The object is complete; a record left by a failure here only makes a later
                // cleanup abort an upload that no longer exists, which is no error.
                let _ = self.store.delete(&guard.record).await;
                Ok(written)
            }
            Err(e) => {
                guard.abort().await;
                Err(e)
            }
        }
    }

    /// Sends `first`, then every further part as it fills, one part in flight while the next is
    /// read.
    async fn send_parts(
        &self,
        name: &Name,
        path: &Path,
        upload_id: &MultipartId,
        first: PutPayload,
        data: &mut ByteStream,
    ) -> Result<(u64, Vec<PartId>), BackendError> {
        let mut parts = Vec::new();
        let mut written = first.content_length() as u64;
        let mut next = Some(first);
        let mut in_flight: Option<tokio::task::JoinHandle<object_store::Result<PartId>>> = None;
        let mut index = 0usize;
        let mut ended = false;
        loop {
            if let Some(payload) = next.take() {
                if let Some(sending) = in_flight.take() {
                    parts.push(self.joined(name, sending).await?);
                }
                let store = self.store.clone();
                let (path, upload_id) = (path.clone(), upload_id.clone());
                let part = index;
                index += 1;
                in_flight = Some(tokio::spawn(async move {
                    resent(|| store.put_part(&path, &upload_id, part, payload.clone())).await
                }));
            }
            if ended {
                break;
            }
            let (payload, end) = read_part(data).await.map_err(|source| BackendError::Io {
                what: "the data to save failed",
                path: format!("{}/{}", self.describe(), name),
                source,
            })?;
            ended = end;
            written += payload.content_length() as u64;
            if payload.content_length() > 0 {
                next = Some(payload);
            }
            if ended && next.is_none() {
                break;
            }
        }
        if let Some(sending) = in_flight.take() {
            parts.push(self.joined(name, sending).await?);
        }
        Ok((written, parts))
    }

    async fn joined(
        &self,
        name: &Name,
        sending: tokio::task::JoinHandle<object_store::Result<PartId>>,
    ) -> Result<PartId, BackendError> {
        match sending.await {
            Ok(Ok(part)) => Ok(part),
            Ok(Err(e)) => Err(self.error("uploading a part of", name.as_str(), e)),
            Err(e) => Err(BackendError::Other {
                repository: self.describe(),
                what: format!("uploading a part of `{name}`"),
                reason: e.to_string(),
            }),
        }
    }

    async fn load_record(&self, id: &str) -> Result<UploadRecord, BackendError> {
        let name = Self::record_name(id);
        let path = self.path(&name)?;
        let bytes = async { self.store.get(&path).await?.bytes().await }
            .await
            .map_err(|e| self.error("reading the upload record", &name, e))?;
        serde_json::from_slice(&bytes).map_err(|e| BackendError::Other {
            repository: self.describe(),
            what: format!("reading the upload record `{name}`"),
            reason: e.to_string(),
        })
    }
}

/// The bytes of `range` out of a stream of a whole object.
fn slice(whole: ByteStream, range: Range<u64>) -> ByteStream {
    futures_util::stream::unfold((whole, 0u64), move |(mut whole, mut at)| {
        let range = range.clone();
        async move {
            while at < range.end {
                let piece = match whole.next().await? {
                    Ok(piece) => piece,
                    Err(e) => return Some((Err(e), (whole, range.end))),
                };
                let (start, end) = (at, at + piece.len() as u64);
                at = end;
                let keep_from = range.start.clamp(start, end) - start;
                let keep_to = range.end.clamp(start, end) - start;
                if keep_to > keep_from {
                    let kept = piece.slice(keep_from as usize..keep_to as usize);
                    return Some((Ok(kept), (whole, at)));
                }
            }
            None
        }
    })
    .boxed()
}

/// Reads up to `PART_SIZE` bytes; `true` when the stream ended.
async fn read_part(data: &mut ByteStream) -> std::io::Result<(PutPayload, bool)> {
    let mut part = PutPayloadMut::new();
    while part.content_length() < PART_SIZE {
        match data.next().await {
            None => return Ok((part.freeze(), true)),
            Some(piece) => {
                let mut piece = piece?;
                let room = PART_SIZE - part.content_length();
                if piece.len() > room {
                    let rest = piece.split_off(room);
                    part.push(piece);
                    // Put the rest back in front of the stream.
                    let taken = std::mem::replace(data, futures_util::stream::empty().boxed());
                    *data = futures_util::stream::once(futures_util::future::ready(Ok(rest)))
                        .chain(taken)
                        .boxed();
                    break;
                }
                part.push(piece);
            }
        }
    }
    Ok((part.freeze(), false))
}

/// Aborts a multipart upload and removes its record unless disarmed; when dropped armed (the
/// save's future was dropped), it does so on a task of its own.
struct AbortGuard {
    store: Arc<AmazonS3>,
    path: Path,
    upload_id: MultipartId,
    record: Path,
    armed: bool,
}

impl AbortGuard {
    async fn abort(&mut self) {
        self.armed = false;
        let _ = self
            .store
            .abort_multipart(&self.path, &self.upload_id)
            .await;
        let _ = self.store.delete(&self.record).await;
    }
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if self.armed {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let (store, path, id, record) = (
                    self.store.clone(),
                    self.path.clone(),
                    self.upload_id.clone(),
                    self.record.clone(),
                );
                runtime.spawn(async move {
                    let _ = store.abort_multipart(&path, &id).await;
                    let _ = store.delete(&record).await;
                });
            }
        }
    }
}

#[async_trait::async_trait]
impl Backend for S3Backend {
    async fn refuses_taken_names(&self) -> Result<bool, BackendError> {
        self.supports_conditional_put().await
    }

    fn describe(&self) -> String {
        let location = if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        };
        format!("{location} at {}", self.endpoint)
    }

    async fn save(&self, name: &Name, mut data: ByteStream) -> Result<u64, BackendError> {
        let (first, ended) = read_part(&mut data)
            .await
            .map_err(|source| BackendError::Io {
                what: "the data to save failed",
                path: format!("{}/{}", self.describe(), name),
                source,
            })?;
        if ended {
            let written = first.content_length() as u64;
            self.put_small(name.as_str(), first, PutMode::Overwrite)
                .await?;
            return Ok(written);
        }
        self.save_multipart(name, first, data).await
    }

    async fn save_new(&self, name: &Name, data: Bytes) -> Result<(), BackendError> {
        self.put_small(name.as_str(), data.into(), PutMode::Create)
            .await
    }

    async fn load(
        &self,
        name: &Name,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, BackendError> {
        let path = self.path(name.as_str())?;
        if let Some(range) = &range {
            if range.start >= range.end {
                self.stat(name).await?;
                return Ok(futures_util::stream::empty().boxed());
            }
        }
        let options = GetOptions {
            range: range.clone().map(GetRange::Bounded),
            ..GetOptions::default()
        };
        match resent(|| self.store.get_opts(&path, options.clone())).await {
            Ok(result) => Ok(result
                .into_stream()
                .map(|piece| piece.map_err(std::io::Error::other))
                .boxed()),
            // A server that ignores `Range` (rclone's `serve s3` does) sends the whole object,
            // which object_store refuses: read it whole and keep the range.
            Err(e) if range.is_some() && e.to_string().contains("non-partial response") => {
                let range = range.expect("checked");
                let whole = self
                    .store
                    .get(&path)
                    .await
                    .map_err(|e| self.error("reading", name.as_str(), e))?;
                Ok(slice(
                    whole
                        .into_stream()
                        .map(|p| p.map_err(std::io::Error::other))
                        .boxed(),
                    range,
                ))
            }
            Err(e) => {
                // A range that starts at or past the end: the bytes that exist are none.
                if let Some(range) = range {
                    if let Ok(info) = self.stat(name).await {
                        if range.start >= info.size {
                            return Ok(futures_util::stream::empty().boxed());
                        }
                    }
                }
                Err(self.error("reading", name.as_str(), e))
            }
        }
    }

    async fn stat(&self, name: &Name) -> Result<ObjectInfo, BackendError> {
        let path = self.path(name.as_str())?;
        let meta = resent(|| self.store.head(&path))
            .await
            .map_err(|e| self.error("looking at", name.as_str(), e))?;
        Ok(ObjectInfo {
            name: name.to_string(),
            size: meta.size,
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        // List under the prefix's last whole directory, then keep what starts with all of it.
        let directory = prefix.rsplit_once('/').map(|(dir, _)| dir).unwrap_or("");
        let under = self.path(directory)?;
        let mut listing = self.store.list(Some(&under));
        let mut found = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| self.error("listing", prefix, e))?;
            let Some(name) = self.name_of(&meta.location) else {
                continue;
            };
            if name.starts_with(prefix) && name.split('/').next() != Some(RESERVED) {
                found.push(ObjectInfo {
                    name,
                    size: meta.size,
                });
            }
        }
        Ok(found)
    }

    async fn top_level(&self) -> Result<Vec<String>, BackendError> {
        let root = self.path("")?;
        let root = (!self.prefix.is_empty()).then_some(&root);
        let listing = resent(|| self.store.list_with_delimiter(root))
            .await
            .map_err(|e| self.error("listing", "", e))?;
        let mut found: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| self.name_of(p))
            .filter(|name| name != RESERVED)
            .collect();
        found.sort();
        Ok(found)
    }

    async fn copy(&self, from: &Name, to: &Name) -> Result<u64, BackendError> {
        let size = self.stat(from).await?.size;
        let through_here = || async {
            let data = self.load(from, None).await?;
            self.save(to, data).await
        };
        if size > MAX_SERVER_COPY {
            // Beyond what one `CopyObject` may copy: through this process, part by part.
            return through_here().await;
        }
        let (source, target) = (self.path(from.as_str())?, self.path(to.as_str())?);
        match resent(|| self.store.copy(&source, &target)).await {
            Ok(()) => Ok(size),
            Err(e @ object_store::Error::NotFound { .. }) => {
                Err(self.error("copying", from.as_str(), e))
            }
            // A server without `CopyObject` (or refusing this one): the bytes pass through here,
            // and that failing is the error to report.
            Err(_) => through_here().await,
        }
    }

    async fn remove(&self, name: &Name) -> Result<(), BackendError> {
        let path = self.path(name.as_str())?;
        match resent(|| self.store.delete(&path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("removing", name.as_str(), e)),
        }
    }

    async fn remove_all(&self, names: &[Name]) -> Result<(), BackendError> {
        let paths = names
            .iter()
            .map(|name| self.path(name.as_str()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut deleted = self
            .store
            .delete_stream(futures_util::stream::iter(paths.into_iter().map(Ok)).boxed());
        let mut bulk_failed = false;
        while let Some(one) = deleted.next().await {
            match one {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(_) => bulk_failed = true,
            }
        }
        // A server without `DeleteObjects`, or a batch cut short: one by one, each retried as
        // any request (removing twice is no error).
        if bulk_failed {
            for name in names {
                self.remove(name).await?;
            }
        }
        Ok(())
    }

    async fn unfinished(&self) -> Result<Vec<Unfinished>, BackendError> {
        let records = self.path(&format!("{RESERVED}/uploads"))?;
        let mut listing = self.store.list(Some(&records));
        let mut found = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| self.error("listing", RESERVED, e))?;
            let Some(id) = meta.location.filename().map(str::to_string) else {
                continue;
            };
            match self.load_record(&id).await {
                Ok(record) => found.push(Unfinished {
                    id,
                    name: Some(record.name),
                    started: record.started,
                }),
                Err(e) if e.is_not_found() => {} // Finished meanwhile.
                Err(e) => return Err(e),
            }
        }
        Ok(found)
    }

    async fn abort(&self, upload: &Unfinished) -> Result<(), BackendError> {
        if upload.id.len() != 32 || !upload.id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(BackendError::BadName {
                name: crate::format::names::shown(&upload.id),
                reason: "is not the id of an upload record",
            });
        }
        let record = match self.load_record(&upload.id).await {
            Ok(record) => record,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        let path = self.path(&record.name)?;
        match self.store.abort_multipart(&path, &record.upload_id).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                let error = self.error("aborting the upload of", &record.name, e);
                // An upload the server no longer knows is gone already.
                if !error.to_string().contains("NoSuchUpload") {
                    return Err(error);
                }
            }
        }
        let record_path = self.path(&Self::record_name(&upload.id))?;
        match self.store.delete(&record_path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("removing the upload record", &upload.id, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_credential_shows_in_debug_or_description() {
        let settings = Resolved {
            endpoint: Some("http://127.0.0.1:9".into()),
            region: "us-east-1".into(),
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: super::super::Secret::new("s3cr3t-value"),
            session_token: Some(super::super::Secret::new("t0ken-value")),
        };
        let backend = S3Backend::open("bucket", "a/b/", &settings).unwrap();
        let shown = format!("{backend:?} {}", backend.describe());
        assert_eq!(backend.describe(), "s3://bucket/a/b at http://127.0.0.1:9");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("t0ken"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn a_range_is_cut_out_of_a_whole_object() {
        let pieces = || {
            futures_util::stream::iter(
                [&b"abc"[..], b"", b"defg", b"h"].map(|p| Ok(Bytes::from_static(p))),
            )
            .boxed()
        };
        for (range, expected) in [
            (0..8, "abcdefgh"),
            (1..2, "b"),
            (2..5, "cde"),
            (3..7, "defg"),
            (7..100, "h"),
            (8..10, ""),
            (50..60, ""),
        ] {
            let got = crate::backend::collect(slice(pieces(), range.clone()))
                .await
                .unwrap();
            assert_eq!(String::from_utf8(got).unwrap(), expected, "{range:?}");
        }
    }
}

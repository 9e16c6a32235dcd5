//! Qdrant's REST API, as wqm uses it: reqwest over rustls, streamed bodies, no total timeouts.
//!
//! Why REST and not `qdrant-client` (gRPC): gRPC cannot download, upload or recover a snapshot,
//! so the bytes would go over REST anyway; gRPC needs a second port many deployments do not
//! expose; and its 5 s default timeout kills large snapshot creation. See `docs/architecture.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT_ENCODING, CONTENT_RANGE, ETAG, IF_RANGE, RANGE,
};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::config::Timeouts;
use serde_json::Value;

use crate::exit::{Classify, ExitCode};
use crate::progress;

/// The first pause before a retry; it doubles up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// Retries of something that failed because Qdrant could not be reached: at least `retries`
/// attempts and at least `retry_for`, with exponential backoff; Ctrl-C ends them.
struct Patience<'a> {
    timeouts: &'a Timeouts,
    since: Instant,
    failures: u32,
    backoff: Duration,
}

impl<'a> Patience<'a> {
    fn new(timeouts: &'a Timeouts) -> Self {
        Patience {
            timeouts,
            since: Instant::now(),
            failures: 0,
            backoff: FIRST_BACKOFF,
        }
    }

    /// Progress was made: the count starts again.
    fn reset(&mut self) {
        *self = Patience::new(self.timeouts);
    }

    /// After a failure: waits and returns true when another attempt is due.
    async fn another_try(&mut self) -> bool {
        if self.failures == 0 {
            self.since = Instant::now();
        }
        self.failures += 1;
        let patient = self.failures <= self.timeouts.retries
            || self.since.elapsed() < self.timeouts.retry_for;
        if !patient || progress::is_interrupted() {
            return false;
        }
        tokio::select! {
            _ = progress::interrupted() => return false,
            _ = tokio::time::sleep(self.backoff) => {}
        }
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        true
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QdrantError {
    #[error("Failed to connect to Qdrant at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("Qdrant at {url} rejected the request (401): {message}")]
    Unauthorized { url: String, message: String },
    #[error("Qdrant refused the request (403 Forbidden): {message}")]
    Forbidden { message: String },
    #[error("Not found on Qdrant: {message}")]
    NotFound { message: String },
    #[error("Qdrant failed ({status}): {message}")]
    Server { status: u16, message: String },
    #[error("Qdrant answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("Qdrant did not answer within {seconds} s ({what})")]
    Timeout { what: String, seconds: u64 },
    #[error("unexpected answer from Qdrant ({what}): {reason}")]
    Protocol { what: String, reason: String },
    #[error("the connection to Qdrant broke ({what}): {reason}")]
    Dropped { what: String, reason: String },
    #[error("the download of `{name}` failed after {attempts} attempts: {reason}")]
    Transfer {
        name: String,
        attempts: u32,
        reason: String,
    },
    #[error("the downloaded snapshot `{name}` does not match Qdrant's checksum (expected sha256 {expected}, got {actual})")]
    ChecksumMismatch {
        name: String,
        expected: String,
        actual: String,
    },
    #[error("cannot read the CA certificate file `{}`: {reason}", path.display())]
    CaCert { path: PathBuf, reason: String },
    #[error("invalid Qdrant URL `{url}`: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("the API key cannot be sent: it is not a valid HTTP header value")]
    BadApiKey,
}

impl QdrantError {
    /// Whether Qdrant itself answered with this error (so it did not do what was asked), as
    /// opposed to a connection or a wait that ended without an answer.
    pub fn is_answer(&self) -> bool {
        matches!(
            self,
            QdrantError::Unauthorized { .. }
                | QdrantError::Forbidden { .. }
                | QdrantError::NotFound { .. }
                | QdrantError::Server { .. }
                | QdrantError::Status { .. }
        )
    }
}

impl Classify for QdrantError {
    fn exit_code(&self) -> ExitCode {
        match self {
            QdrantError::CaCert { .. } | QdrantError::BadUrl { .. } | QdrantError::BadApiKey => {
                ExitCode::Usage
            }
            _ => ExitCode::Failure,
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            QdrantError::Connect { .. } => "start Qdrant, or point wqm at it with QDRANT_URL (or --qdrant-url, or `qdrant.url` in the config)".to_string(),
            QdrantError::Unauthorized { .. } => "set QDRANT_API_KEY (or `qdrant.api_key`) to an API key of this Qdrant server".to_string(),
            QdrantError::Forbidden { .. } => "the API key lacks rights: creating and deleting snapshots needs write access, restoring needs a manage (full) key; a read-only key is not enough".to_string(),
            QdrantError::Timeout { .. } => "Qdrant may be overloaded; raise `backup.transfer.read_timeout` or `backup.transfer.operation_timeout` if it is just slow".to_string(),
            QdrantError::Transfer { .. } | QdrantError::ChecksumMismatch { .. } => "check the network and Qdrant's logs, then run the command again; nothing partial was kept".to_string(),
            QdrantError::Server { .. } => "see Qdrant's log; free disk space on the server if it is full".to_string(),
            QdrantError::BadApiKey => "check QDRANT_API_KEY (or `qdrant.api_key`): a stray newline or a character outside visible ASCII is the usual cause".to_string(),
            QdrantError::Dropped { .. } => "Qdrant stopped, restarted or dropped the connection (calls that change nothing are retried for `backup.transfer.retry_timeout`, an upload is not); see Qdrant's log, then run the command again".to_string(),
            _ => return None,
        })
    }
}

/// `GET /`.
#[derive(Clone, Debug, Deserialize)]
pub struct ServerInfo {
    pub version: String,
}

/// `GET /collections/{c}` (the parts wqm uses).
#[derive(Clone, Debug, Deserialize)]
pub struct CollectionInfo {
    pub status: String,
    pub config: CollectionConfig,
    #[serde(default)]
    pub payload_schema: Value,
}

#[derive(Clone, Debug, Deserialize)]
pub struct CollectionConfig {
    pub params: Value,
    /// `hnsw_config`, `optimizer_config`, `wal_config`, `quantization_config`, ...
    #[serde(flatten)]
    pub rest: serde_json::Map<String, Value>,
}

impl CollectionConfig {
    /// The whole configuration, as Qdrant reports it.
    pub fn whole(&self) -> Value {
        let mut whole = self.rest.clone();
        whole.insert("params".to_string(), self.params.clone());
        Value::Object(whole)
    }
}

/// An alias from `GET /aliases`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Alias {
    pub alias_name: String,
    pub collection_name: String,
}

/// A snapshot as Qdrant describes it.
#[derive(Clone, Debug, Deserialize)]
pub struct SnapshotDescription {
    pub name: String,
    #[serde(default)]
    pub size: Option<u64>,
    /// sha256 of the snapshot, kept by Qdrant beside it (absent on S3 storage).
    #[serde(default)]
    pub checksum: Option<String>,
}

#[derive(Deserialize)]
struct Envelope<T> {
    result: T,
}

#[derive(Deserialize)]
struct CollectionList {
    collections: Vec<Named>,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

#[derive(Deserialize)]
struct AliasList {
    aliases: Vec<Alias>,
}

#[derive(Deserialize)]
struct Count {
    count: u64,
}

/// `GET /cluster`.
#[derive(Clone, Debug, Deserialize)]
pub struct ClusterStatus {
    /// `enabled` or `disabled`.
    pub status: String,
    /// This node's peer id.
    #[serde(default)]
    pub peer_id: Option<u64>,
    /// Peer id → `{ "uri": "http://host:p2p-port/" }`.
    #[serde(default)]
    pub peers: BTreeMap<String, Peer>,
}

impl ClusterStatus {
    pub fn enabled(&self) -> bool {
        self.status == "enabled"
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct Peer {
    pub uri: String,
}

/// `GET /collections/{c}/cluster`, as seen by one node.
#[derive(Clone, Debug, Deserialize)]
pub struct CollectionCluster {
    pub peer_id: u64,
    #[serde(default)]
    pub local_shards: Vec<LocalShard>,
    #[serde(default)]
    pub remote_shards: Vec<RemoteShard>,
    #[serde(default)]
    pub shard_transfers: Vec<Value>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct LocalShard {
    pub shard_id: u32,
    #[serde(default)]
    pub shard_key: Option<Value>,
    pub state: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct RemoteShard {
    pub shard_id: u32,
    #[serde(default)]
    pub shard_key: Option<Value>,
    pub peer_id: u64,
    pub state: String,
}

/// What a snapshot call works on: a whole collection, or one shard of it.
#[derive(Clone, Copy, Debug)]
pub enum Scope<'a> {
    Collection(&'a str),
    Shard(&'a str, u32),
}

impl Scope<'_> {
    fn path(&self, tail: &[&str]) -> Vec<String> {
        let mut segments = match self {
            Scope::Collection(c) => vec!["collections".to_string(), c.to_string()],
            Scope::Shard(c, id) => vec![
                "collections".to_string(),
                c.to_string(),
                "shards".to_string(),
                id.to_string(),
            ],
        };
        segments.extend(tail.iter().map(|s| s.to_string()));
        segments
    }
}

impl std::fmt::Display for Scope<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Collection(c) => write!(f, "`{c}`"),
            Scope::Shard(c, id) => write!(f, "shard {id} of `{c}`"),
        }
    }
}

/// A client of one Qdrant server.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    timeouts: Timeouts,
    /// Qdrant answered once: from then on a refused connection means it restarts, and is
    /// retried (before, it fails at once: a wrong URL should not take a minute to report).
    reached: Arc<AtomicBool>,
}

impl Client {
    pub fn new(
        url: &str,
        api_key: Option<&str>,
        ca_cert: Option<&Path>,
        timeouts: Timeouts,
    ) -> Result<Self, QdrantError> {
        let bad_url = |reason: String| QdrantError::BadUrl {
            url: redact(url),
            reason,
        };
        let mut base = Url::parse(url).map_err(|e| bad_url(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(bad_url("the scheme must be http or https".to_string()));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        // reqwest is built without a TLS crypto provider; rustls' ring provider is ours.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut headers = HeaderMap::new();
        // Qdrant may compress responses; a snapshot must arrive byte for byte.
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        if let Some(key) = api_key {
            let mut value = HeaderValue::from_str(key).map_err(|_| QdrantError::BadApiKey)?;
            value.set_sensitive(true);
            headers.insert("api-key", value);
        }
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(timeouts.connect)
            // Qdrant closes idle keep-alive connections after a few seconds; reusing one it is
            // closing fails the request, so idle connections are dropped first.
            .pool_idle_timeout(Duration::from_secs(2))
            .user_agent(concat!("wqm/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_cert {
            let ca_error = |reason: String| QdrantError::CaCert {
                path: path.to_path_buf(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_error(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_error("no PEM certificate in the file".to_string()));
            }
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder.build().map_err(|e| bad_url(e.to_string()))?;
        Ok(Client {
            http,
            base,
            timeouts,
            reached: Arc::new(AtomicBool::new(false)),
        })
    }

    /// A client of the Qdrant the settings name.
    pub fn from_settings(settings: &crate::config::Settings) -> Result<Self, QdrantError> {
        let qdrant = &settings.qdrant;
        Self::new(
            &qdrant.url,
            qdrant.api_key.as_deref(),
            qdrant.ca_cert.as_deref(),
            settings.backup.transfer.timeouts(),
        )
    }

    /// The base URL (with any password: not for messages).
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// The server's URL without any password, for messages.
    pub fn display_url(&self) -> String {
        redact(self.base.as_str().trim_end_matches('/'))
    }

    fn endpoint<S: AsRef<str>>(&self, segments: &[S]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("http URLs have paths")
            .pop_if_empty()
            .extend(segments.iter().map(AsRef::as_ref));
        url
    }

    fn request<S: AsRef<str>>(&self, method: Method, segments: &[S]) -> RequestBuilder {
        self.http.request(method, self.endpoint(segments))
    }

    /// Sends a request and waits (up to `limit`) for the response head, mapping failures to
    /// `QdrantError`.
    async fn send(
        &self,
        request: RequestBuilder,
        what: &str,
        limit: Duration,
    ) -> Result<Response, QdrantError> {
        tokio::time::timeout(limit, self.send_untimed(request, what))
            .await
            .map_err(|_| QdrantError::Timeout {
                what: what.to_string(),
                seconds: limit.as_secs(),
            })?
    }

    /// Sends a request. A refused connection (nothing reached Qdrant, so any request is safe to
    /// send again) to a Qdrant that answered before is retried with backoff, for at least
    /// `retries` attempts and `retry_for`, so a restarting Qdrant is waited for.
    async fn send_untimed(
        &self,
        request: RequestBuilder,
        what: &str,
    ) -> Result<Response, QdrantError> {
        let mut request = request;
        let mut patience = Patience::new(&self.timeouts);
        let response = loop {
            let again = request
                .try_clone()
                .filter(|_| self.reached.load(Ordering::Relaxed));
            match request.send().await {
                Err(e) if e.is_connect() => match again {
                    Some(next) if patience.another_try().await => request = next,
                    _ => {
                        return Err(QdrantError::Connect {
                            url: self.display_url(),
                            reason: error_chain(&e),
                        })
                    }
                },
                Err(e) => {
                    return Err(QdrantError::Dropped {
                        what: what.to_string(),
                        reason: error_chain(&e),
                    })
                }
                Ok(response) => break response,
            }
        };
        self.reached.store(true, Ordering::Relaxed);
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = tokio::time::timeout(self.timeouts.read_idle, response.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        Err(self.status_error(status, &body))
    }

    fn status_error(&self, status: StatusCode, body: &str) -> QdrantError {
        let message = error_message(body);
        match status {
            StatusCode::UNAUTHORIZED => QdrantError::Unauthorized {
                url: self.display_url(),
                message,
            },
            StatusCode::FORBIDDEN => QdrantError::Forbidden { message },
            StatusCode::NOT_FOUND => QdrantError::NotFound { message },
            s if s.is_server_error() => QdrantError::Server {
                status: s.as_u16(),
                message,
            },
            s => QdrantError::Status {
                status: s.as_u16(),
                message,
            },
        }
    }

    /// A JSON call whose `result` is `T`.
    async fn call<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
        what: &str,
        limit: Duration,
    ) -> Result<T, QdrantError> {
        let response = self.send(request, what, limit).await?;
        let body = self.body(response, what).await?;
        serde_json::from_slice::<Envelope<T>>(&body)
            .map(|e| e.result)
            .map_err(|e| QdrantError::Protocol {
                what: what.to_string(),
                reason: e.to_string(),
            })
    }

    /// A call that changes something: its `result` (`true`, or null for shard uploads) says
    /// nothing more; it may take as long as Qdrant's operations take.
    async fn act(&self, request: RequestBuilder, what: &str) -> Result<(), QdrantError> {
        self.call::<Value>(request, what, self.timeouts.operation)
            .await
            .map(drop)
    }

    /// A call that changes nothing (a GET, a count): when the connection breaks under it after
    /// Qdrant answered once, it is sent again, patiently (Qdrant may be restarting).
    async fn read_only<T: DeserializeOwned>(
        &self,
        request: impl Fn() -> RequestBuilder,
        what: &str,
        limit: Duration,
    ) -> Result<T, QdrantError> {
        let mut patience = Patience::new(&self.timeouts);
        loop {
            match self.call(request(), what, limit).await {
                Err(QdrantError::Dropped { .. })
                    if self.reached.load(Ordering::Relaxed) && patience.another_try().await => {}
                result => return result,
            }
        }
    }

    async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        what: &str,
    ) -> Result<T, QdrantError> {
        self.read_only(
            || self.request(Method::GET, segments),
            what,
            self.timeouts.read_idle,
        )
        .await
    }

    /// A response's whole (small, JSON) body, with the read-idle timeout.
    async fn body(&self, response: Response, what: &str) -> Result<Bytes, QdrantError> {
        tokio::time::timeout(self.timeouts.read_idle, response.bytes())
            .await
            .map_err(|_| QdrantError::Timeout {
                what: what.to_string(),
                seconds: self.timeouts.read_idle.as_secs(),
            })?
            .map_err(|e| QdrantError::Dropped {
                what: what.to_string(),
                reason: error_chain(&e),
            })
    }

    /// `GET /`: the server version (needs no key; the body has no `result` envelope).
    pub async fn server_info(&self) -> Result<ServerInfo, QdrantError> {
        let what = "server version";
        let response = self
            .send(
                self.request::<&str>(Method::GET, &[]),
                what,
                self.timeouts.read_idle,
            )
            .await?;
        let body = self.body(response, what).await?;
        serde_json::from_slice(&body).map_err(|e| QdrantError::Protocol {
            what: what.into(),
            reason: e.to_string(),
        })
    }

    pub async fn list_collections(&self) -> Result<Vec<String>, QdrantError> {
        let list: CollectionList = self.get(&["collections"], "list collections").await?;
        let mut names: Vec<String> = list.collections.into_iter().map(|c| c.name).collect();
        names.sort();
        Ok(names)
    }

    pub async fn collection_info(&self, collection: &str) -> Result<CollectionInfo, QdrantError> {
        self.get(
            &["collections", collection],
            &format!("collection `{collection}`"),
        )
        .await
    }

    /// The exact number of points (`count` with `exact: true`; `points_count` is approximate).
    pub async fn exact_count(&self, scope: Scope<'_>) -> Result<u64, QdrantError> {
        let request = || {
            self.request(Method::POST, &scope.path(&["points", "count"]))
                .json(&serde_json::json!({ "exact": true }))
        };
        let count: Count = self
            .read_only(
                request,
                &format!("count of {scope}"),
                self.timeouts.operation,
            )
            .await?;
        Ok(count.count)
    }

    pub async fn aliases(&self) -> Result<Vec<Alias>, QdrantError> {
        let list: AliasList = self.get(&["aliases"], "list aliases").await?;
        Ok(list.aliases)
    }

    /// `GET /cluster`: whether Qdrant runs distributed, this node's peer id, and its peers.
    pub async fn cluster_status(&self) -> Result<ClusterStatus, QdrantError> {
        self.get(&["cluster"], "cluster status").await
    }

    /// `GET /collections/{c}/cluster`: the shards this node holds and where the others are.
    pub async fn collection_cluster(
        &self,
        collection: &str,
    ) -> Result<CollectionCluster, QdrantError> {
        self.get(
            &["collections", collection, "cluster"],
            &format!("shards of `{collection}`"),
        )
        .await
    }

    /// `PUT /collections/{c}` with `body` (the create-collection request).
    pub async fn create_collection(
        &self,
        collection: &str,
        body: &Value,
    ) -> Result<(), QdrantError> {
        let request = self
            .request(Method::PUT, &["collections", collection])
            .json(body);
        self.act(request, &format!("create collection `{collection}`"))
            .await
    }

    /// `PUT /collections/{c}/shards`: the shards of a custom-sharding key.
    pub async fn create_shard_key(&self, collection: &str, key: &Value) -> Result<(), QdrantError> {
        let request = self
            .request(Method::PUT, &["collections", collection, "shards"])
            .json(&serde_json::json!({ "shard_key": key }));
        self.act(
            request,
            &format!("create shard key {key} of `{collection}`"),
        )
        .await
    }

    /// `PUT /collections/{c}/index?wait=true`: a payload index.
    pub async fn create_payload_index(
        &self,
        collection: &str,
        field: &str,
        schema: &Value,
    ) -> Result<(), QdrantError> {
        let request = self
            .request(Method::PUT, &["collections", collection, "index"])
            .query(&[("wait", "true")])
            .json(&serde_json::json!({ "field_name": field, "field_schema": schema }));
        self.act(
            request,
            &format!("create payload index `{field}` of `{collection}`"),
        )
        .await
    }

    /// `POST {scope}/snapshots?wait=true`: Qdrant sends nothing until the snapshot is done.
    pub async fn create_snapshot(
        &self,
        scope: Scope<'_>,
    ) -> Result<SnapshotDescription, QdrantError> {
        let request = self
            .request(Method::POST, &scope.path(&["snapshots"]))
            .query(&[("wait", "true")]);
        self.call(
            request,
            &format!("create a snapshot of {scope}"),
            self.timeouts.operation,
        )
        .await
    }

    /// `POST /collections/aliases` with no actions: succeeds only with a key that may write
    /// (the access uploads need), and changes nothing.
    pub async fn probe_write(&self) -> Result<(), QdrantError> {
        let request = self
            .request(Method::POST, &["collections", "aliases"])
            .json(&serde_json::json!({ "actions": [] }));
        self.call::<Value>(
            request,
            "check that the key may write",
            self.timeouts.read_idle,
        )
        .await
        .map(drop)
    }

    /// `GET {scope}/snapshots`.
    pub async fn list_snapshots(
        &self,
        scope: Scope<'_>,
    ) -> Result<Vec<SnapshotDescription>, QdrantError> {
        self.call(
            self.request(Method::GET, &scope.path(&["snapshots"])),
            &format!("list the snapshots of {scope}"),
            self.timeouts.read_idle,
        )
        .await
    }

    /// The `curl` command that deletes the snapshot `name` of `scope` on this server, for an
    /// operator when wqm could not.
    pub fn delete_command(&self, scope: Scope<'_>, name: &str) -> String {
        let path = scope.path(&["snapshots", name]).join("/");
        format!(
            "curl -X DELETE '{}/{path}' -H \"api-key: $QDRANT_API_KEY\"",
            self.display_url()
        )
    }

    /// Deleting a file is quick: a Qdrant silent for `read_idle` is not waited for longer.
    pub async fn delete_snapshot(&self, scope: Scope<'_>, name: &str) -> Result<(), QdrantError> {
        let request = self
            .request(Method::DELETE, &scope.path(&["snapshots", name]))
            .query(&[("wait", "true")]);
        self.call::<Value>(
            request,
            &format!("delete snapshot `{name}`"),
            self.timeouts.read_idle,
        )
        .await
        .map(drop)
    }

    /// `POST {scope}/snapshots/upload?wait=true&priority=snapshot[&checksum=…]`: recovers the
    /// collection or shard (creating a missing collection, or replacing the data of an existing
    /// one with the same vector configuration) from `body`, a stream of `length` bytes sent as
    /// multipart (sized: `Content-Length` is set). Qdrant verifies `sha256` when given; it keeps an uploaded collection snapshot as
    /// `file_name` (delete it afterwards).
    ///
    /// No total timeout: while the body is sent, `read_idle` without a byte taken abandons it;
    /// once sent, wqm waits as long as Qdrant recovers, that is as long as it answers
    /// `GET /healthz` on another connection (silence for `read_idle` abandons it).
    pub async fn upload_snapshot<S>(
        &self,
        scope: Scope<'_>,
        file_name: &str,
        body: S,
        length: u64,
        sha256: Option<&str>,
    ) -> Result<(), QdrantError>
    where
        S: futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        use futures_util::StreamExt;
        let taken = Arc::new(AtomicU64::new(0));
        let counter = taken.clone();
        let counted = body.inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
        });
        let part = reqwest::multipart::Part::stream_with_length(
            reqwest::Body::wrap_stream(counted),
            length,
        )
        .file_name(file_name.to_string())
        .mime_str("application/octet-stream")
        .map_err(|e| QdrantError::Protocol {
            what: "upload".into(),
            reason: e.to_string(),
        })?;
        let form = reqwest::multipart::Form::new().part("snapshot", part);
        let mut query = vec![("wait", "true"), ("priority", "snapshot")];
        // Qdrant then hashes the whole upload before recovering it (`backup.transfer.checksum`).
        if let Some(sha256) = sha256 {
            query.push(("checksum", sha256));
        }
        let request = self
            .request(Method::POST, &scope.path(&["snapshots", "upload"]))
            .query(&query)
            .multipart(form);
        let what = format!("restore {scope} from its snapshot");
        let response = self.send_watched(request, &what, &taken, length).await?;
        let body = self.body(response, &what).await?;
        serde_json::from_slice::<Envelope<Value>>(&body)
            .map(drop)
            .map_err(|e| QdrantError::Protocol {
                what,
                reason: e.to_string(),
            })
    }

    /// Sends a request whose body reports the bytes taken in `taken`, and waits for the answer
    /// with no total timeout: the body must keep moving (`read_idle`), and once it is all sent,
    /// Qdrant must keep answering `GET /healthz` while it works on it.
    async fn send_watched(
        &self,
        request: RequestBuilder,
        what: &str,
        taken: &AtomicU64,
        length: u64,
    ) -> Result<Response, QdrantError> {
        let idle = self.timeouts.read_idle;
        let tick = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        let sending = self.send_untimed(request, what);
        tokio::pin!(sending);
        let (mut seen, mut moved) = (0, Instant::now());
        let mut answered = Instant::now();
        loop {
            tokio::select! {
                result = &mut sending => return result,
                _ = tokio::time::sleep(tick) => {}
            }
            let now = taken.load(Ordering::Relaxed);
            if now != seen {
                (seen, moved) = (now, Instant::now());
                answered = Instant::now();
            }
            if now < length {
                if moved.elapsed() > idle {
                    return Err(QdrantError::Timeout {
                        what: format!("{what}: Qdrant took no byte of the upload"),
                        seconds: idle.as_secs(),
                    });
                }
                continue;
            }
            // Everything is sent and Qdrant recovers: fine for as long as it answers.
            tokio::select! {
                result = &mut sending => return result,
                alive = self.answers(tick) => if alive {
                    answered = Instant::now();
                },
            }
            if answered.elapsed() > idle {
                return Err(QdrantError::Timeout {
                    what: format!("{what}: Qdrant stopped answering while it recovered"),
                    seconds: idle.as_secs(),
                });
            }
        }
    }

    /// Whether Qdrant answers `GET /healthz` within `limit` (any HTTP answer counts).
    async fn answers(&self, limit: Duration) -> bool {
        let probe = self.http.get(self.endpoint(&["healthz"])).send();
        matches!(tokio::time::timeout(limit, probe).await, Ok(Ok(_)))
    }

    /// Creates `alias` → `collection`, replacing an alias of that name in the same request.
    pub async fn set_alias(
        &self,
        alias: &str,
        collection: &str,
        replace: bool,
    ) -> Result<(), QdrantError> {
        let mut actions = Vec::new();
        if replace {
            actions.push(serde_json::json!({ "delete_alias": { "alias_name": alias } }));
        }
        actions.push(serde_json::json!({ "create_alias": { "collection_name": collection, "alias_name": alias } }));
        let request = self
            .request(Method::POST, &["collections", "aliases"])
            .json(&serde_json::json!({ "actions": actions }));
        self.act(request, &format!("create alias `{alias}`")).await
    }

    /// Streams a snapshot to `deliver`, chunk by chunk. A dropped or stalled connection (or a
    /// Qdrant that cannot be reached) is resumed with `Range` from the last byte delivered, with
    /// exponential backoff, until `retries` attempts and `retry_for` have passed without a byte
    /// arriving, so a restarting Qdrant is waited for. Returns the number of bytes delivered.
    /// Stops with `Interrupted` on Ctrl-C.
    pub async fn download_snapshot(
        &self,
        scope: Scope<'_>,
        name: &str,
        mut deliver: impl AsyncSink,
    ) -> anyhow::Result<u64> {
        let segments = scope.path(&["snapshots", name]);
        let what = format!("download snapshot `{name}`");
        let mut offset: u64 = 0;
        let mut etag: Option<HeaderValue> = None;
        let mut attempts = 0;
        let mut patience = Patience::new(&self.timeouts);
        loop {
            attempts += 1;
            let before = offset;
            let mut request = self.request(Method::GET, &segments);
            if offset > 0 {
                request = request.header(RANGE, format!("bytes={offset}-"));
                if let Some(tag) = &etag {
                    request = request.header(IF_RANGE, tag.clone());
                }
            }
            let outcome = async {
                let response = self.send(request, &what, self.timeouts.read_idle).await?;
                let resumed = response.status() == StatusCode::PARTIAL_CONTENT;
                if offset > 0 && resumed && !content_range_starts_at(response.headers(), offset) {
                    return Err(QdrantError::Protocol {
                        what: what.clone(),
                        reason: "the resumed download starts at the wrong byte".into(),
                    }
                    .into());
                }
                if etag.is_none() {
                    etag = response.headers().get(ETAG).cloned();
                }
                // A server that ignores Range sends everything again: skip what we have.
                let mut skip = if resumed { 0 } else { offset };
                self.stream_body(response, &mut skip, &mut offset, &mut deliver, &what)
                    .await
            }
            .await;
            match outcome {
                Ok(()) => return Ok(offset),
                Err(e) if e.downcast_ref::<crate::exit::Interrupted>().is_some() => return Err(e),
                Err(e) if is_resumable(&e) => {
                    if offset > before {
                        patience.reset();
                    }
                    if !patience.another_try().await {
                        progress::check_interrupted()?;
                        return Err(QdrantError::Transfer {
                            name: name.to_string(),
                            attempts,
                            reason: format!("{e:#}"),
                        }
                        .into());
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn stream_body(
        &self,
        mut response: Response,
        skip: &mut u64,
        offset: &mut u64,
        deliver: &mut impl AsyncSink,
        what: &str,
    ) -> anyhow::Result<()> {
        loop {
            let chunk = tokio::select! {
                _ = progress::interrupted() => return Err(crate::exit::Interrupted.into()),
                chunk = tokio::time::timeout(self.timeouts.read_idle, response.chunk()) => chunk,
            };
            let chunk = chunk
                .map_err(|_| {
                    Resumable(format!(
                        "no data for {} s",
                        self.timeouts.read_idle.as_secs()
                    ))
                })?
                .map_err(|e| Resumable(format!("the connection broke: {}", error_chain(&e))))?;
            let Some(mut chunk) = chunk else {
                return Ok(());
            };
            if *skip > 0 {
                let n = (*skip).min(chunk.len() as u64);
                *skip -= n;
                chunk = chunk.slice(n as usize..);
            }
            if !chunk.is_empty() {
                *offset += chunk.len() as u64;
                deliver
                    .deliver(chunk)
                    .await
                    .map_err(|e| e.context(what.to_string()))?;
            }
        }
    }
}

/// Receives downloaded chunks (in practice: hands them to the thread that writes the file).
pub trait AsyncSink {
    fn deliver(&mut self, chunk: Bytes) -> impl std::future::Future<Output = anyhow::Result<()>>;
}

/// A transfer that broke and can be resumed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Resumable(String);

fn is_resumable(error: &anyhow::Error) -> bool {
    error.downcast_ref::<Resumable>().is_some()
        || matches!(
            error.downcast_ref::<QdrantError>(),
            Some(
                QdrantError::Timeout { .. }
                    | QdrantError::Server { .. }
                    | QdrantError::Protocol { .. }
                    | QdrantError::Dropped { .. }
                    | QdrantError::Connect { .. }
            )
        )
}

fn content_range_starts_at(headers: &HeaderMap, offset: u64) -> bool {
    headers
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes "))
        .and_then(|v| v.split('-').next())
        .and_then(|start| start.parse::<u64>().ok())
        == Some(offset)
}

/// Qdrant's error bodies: JSON `{"status":{"error":"…"}}`, or plain text from the auth layer.
pub fn error_message(body: &str) -> String {
    let from_json = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        v.get("status")
            .and_then(|s| s.get("error"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let text = from_json.unwrap_or_else(|| body.trim().to_string());
    if text.is_empty() {
        "(no message)".to_string()
    } else {
        text
    }
}

/// An error and its sources on one line (reqwest's own message alone says little).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A URL without its userinfo (user and password).
pub fn redact(url: &str) -> String {
    crate::secrets::mask_userinfo(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_error_body_shapes() {
        assert_eq!(
            error_message(
                r#"{"status":{"error":"Not found: Collection `nope` doesn't exist!"},"time":0.1}"#
            ),
            "Not found: Collection `nope` doesn't exist!"
        );
        assert_eq!(
            error_message("Must provide an API key or an Authorization bearer token"),
            "Must provide an API key or an Authorization bearer token"
        );
        assert_eq!(error_message(""), "(no message)");
    }

    #[test]
    fn urls_are_built_with_escaped_segments_and_passwords_are_hidden() {
        let timeouts = Timeouts {
            connect: Duration::from_secs(1),
            read_idle: Duration::from_secs(1),
            operation: Duration::from_secs(1),
            retries: 0,
            retry_for: Duration::ZERO,
        };
        let client = Client::new(
            "http://u:secret@127.0.0.1:6333/base",
            None,
            None,
            timeouts.clone(),
        )
        .unwrap();
        assert_eq!(
            client.endpoint(&["collections", "a b/c"]).as_str(),
            "http://u:secret@127.0.0.1:6333/base/collections/a%20b%2Fc"
        );
        assert_eq!(
            client.display_url(),
            "http://REDACTED-BY-WQM@127.0.0.1:6333/base"
        );
        assert!(Client::new("ftp://x", None, None, timeouts.clone()).is_err());
        assert!(Client::new("not a url", None, None, timeouts).is_err());
    }

    #[tokio::test]
    async fn an_upload_that_qdrant_stops_taking_is_abandoned_after_the_idle_timeout() {
        // A server that accepts the connection and never reads: the socket buffers fill up.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let timeouts = Timeouts {
            connect: Duration::from_secs(1),
            read_idle: Duration::from_millis(700),
            operation: Duration::from_secs(3600),
            retries: 0,
            retry_for: Duration::ZERO,
        };
        let client = Client::new(&url, None, None, timeouts).unwrap();
        const CHUNKS: u64 = 256;
        let chunk = Bytes::from(vec![0u8; 1 << 20]);
        let body = futures_util::stream::iter((0..CHUNKS).map(move |_| Ok(chunk.clone())));
        let started = Instant::now();
        let err = client
            .upload_snapshot(
                Scope::Collection("c"),
                "c.snapshot",
                body,
                CHUNKS << 20,
                Some("0"),
            )
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .ends_with("(restore `c` from its snapshot: Qdrant took no byte of the upload)"),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        drop(listener);
    }

    #[test]
    fn content_range_must_start_where_we_stopped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_RANGE,
            HeaderValue::from_static("bytes 1000-182783/182784"),
        );
        assert!(content_range_starts_at(&headers, 1000));
        assert!(!content_range_starts_at(&headers, 999));
    }
}

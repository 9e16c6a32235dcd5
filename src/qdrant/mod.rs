//! Qdrant's REST API, as wqm uses it: reqwest over rustls, streamed bodies, no total timeouts.
//!
//! Why REST and not `qdrant-client` (gRPC): gRPC cannot download, upload or recover a snapshot,
//! so the bytes would go over REST anyway; gRPC needs a second port many deployments do not
//! expose; and its 5 s default timeout kills large snapshot creation. See `docs/architecture.md`.

mod api;
pub mod cluster;
mod error;
mod retry;
mod snapshots;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT_ENCODING};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use api::{
    Alias, ClusterStatus, CollectionCluster, CollectionInfo, Scope, ServerInfo, SnapshotDescription,
};
pub use error::{error_message, QdrantError};
pub use snapshots::AsyncSink;

use crate::config::Timeouts;
use api::{AliasList, CollectionList, Count, Envelope};
use error::error_chain;
use retry::Patience;

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
            // Every request on a connection of its own: Qdrant closes idle keep-alive
            // connections after a few seconds, and a restarting one closes them all, and a
            // request handed a pooled connection the server is closing can fail, or wait in
            // hyper's pool with no socket at all (hyperium/hyper#2312; seen once here: a create
            // waiting, every task parked, after a restart mid-download). A few requests per
            // snapshot make the handshakes cheap.
            .pool_max_idle_per_host(0)
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
    /// `retries` attempts and `retry_for`, so a restarting Qdrant is waited for; so is an
    /// answer that says "not now" (`retry::is_not_now`: nothing was done), after the
    /// `Retry-After` it gives. A request whose body is a stream (an upload) is sent once.
    async fn send_untimed(
        &self,
        request: RequestBuilder,
        what: &str,
    ) -> Result<Response, QdrantError> {
        let mut request = request;
        let mut patience = Patience::new(&self.timeouts);
        let response = loop {
            let again = request.try_clone();
            match request.send().await {
                Ok(response) if retry::is_not_now(response.status()) => {
                    let wait = retry::retry_after(&response);
                    match again {
                        Some(next) if patience.another_try_after(wait).await => request = next,
                        _ => break response,
                    }
                }
                Err(e) if e.is_connect() => {
                    match again.filter(|_| self.reached.load(Ordering::Relaxed)) {
                        Some(next) if patience.another_try().await => request = next,
                        _ => {
                            return Err(QdrantError::Connect {
                                url: self.display_url(),
                                reason: error_chain(&e),
                            })
                        }
                    }
                }
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
}

/// A URL without its userinfo (user and password).
pub fn redact(url: &str) -> String {
    crate::secrets::mask_userinfo(url)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

//! Snapshots: create (`?wait=true`), list, delete, download (resumed with `Range`) and upload
//! (streamed multipart, watched with `GET /healthz` while Qdrant recovers it).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_RANGE, ETAG, IF_RANGE, RANGE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;

use super::api::{Envelope, Scope, SnapshotDescription};
use super::error::{error_chain, QdrantError};
use super::retry::{is_resumable, Patience, Resumable};
use super::Client;
use crate::progress;

/// What Qdrant took of an upload's body so far, and whether the body is what it waits for.
#[derive(Default)]
struct Taken {
    bytes: AtomicU64,
    /// The body's last poll found nothing to send (wqm still reading, or checking).
    starved: AtomicBool,
}

impl Client {
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
        let taken = Arc::new(Taken::default());
        let counter = taken.clone();
        let mut body = Box::pin(body);
        let counted = futures_util::stream::poll_fn(move |cx| {
            let next = body.as_mut().poll_next(cx);
            counter.starved.store(next.is_pending(), Ordering::Relaxed);
            if let Poll::Ready(Some(Ok(chunk))) = &next {
                counter
                    .bytes
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            next
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

    /// Sends a request whose body reports what was taken of it in `taken`, and waits for the
    /// answer with no total timeout: the body must keep moving (`read_idle`) unless it keeps
    /// Qdrant waiting itself, and once it is all sent, Qdrant must keep answering `GET /healthz`
    /// while it works on it.
    async fn send_watched(
        &self,
        request: RequestBuilder,
        what: &str,
        taken: &Taken,
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
            let now = taken.bytes.load(Ordering::Relaxed);
            // A body with nothing to give yet (still read, or its last piece held back for the
            // checks) does not make Qdrant idle.
            if now != seen || taken.starved.load(Ordering::Relaxed) {
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
                            reason: crate::exit::said(&e),
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

fn content_range_starts_at(headers: &HeaderMap, offset: u64) -> bool {
    headers
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes "))
        .and_then(|v| v.split('-').next())
        .and_then(|start| start.parse::<u64>().ok())
        == Some(offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Timeouts;

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

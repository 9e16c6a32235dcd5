//! A Qdrant test double: a real HTTP server on 127.0.0.1 that speaks Qdrant's REST wire format
//! (the bodies are those recorded from Qdrant 1.18.3 in `tests/fixtures/qdrant/exchanges.json`),
//! serves real snapshot bytes, and injects faults: a connection that dies mid-stream, a truncated
//! body, a stall, 500 on create, 401/403, a wrong checksum, a server that ignores `Range`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::fixtures;
use crate::loopback::{Server, WhenDown};

const EXCHANGES: &str = include_str!("../fixtures/qdrant/exchanges.json");
const PEER_ID: u64 = 409846322439763;

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// A fault that hits snapshot downloads, `times` times, then downloads work again.
#[derive(Clone, Copy, Debug)]
pub enum DownloadFault {
    /// Send `after` bytes, then break the connection.
    Die { after: u64 },
    /// Send `after` bytes and end the body early (Content-Length says more).
    Truncate { after: u64 },
    /// Send `after` bytes, then nothing.
    Stall { after: u64 },
}

#[derive(Default)]
pub struct Faults {
    pub download: Option<(DownloadFault, u32)>,
    /// Status and JSON error message for `POST …/snapshots`.
    pub create_error: Option<(u16, String)>,
    /// Announce a checksum that does not match the bytes.
    pub wrong_checksum: bool,
    /// Answer `Range` requests with the whole body (200).
    pub ignore_range: bool,
    /// `DELETE …/snapshots/{name}` fails with 500.
    pub delete_error: bool,
    /// `GET /cluster` says the cluster is enabled.
    pub cluster: bool,
    /// Delay before answering `POST …/snapshots`.
    pub create_delay: Option<Duration>,
    /// `POST …/snapshots` of this collection fails with this status and JSON error message.
    pub create_error_for: Option<(String, u16, String)>,
    /// Delay before answering a snapshot download of this collection.
    pub download_delay_for: Option<(String, Duration)>,
    /// Status and JSON error message for `POST …/snapshots/upload` of these collections.
    pub upload_error: Option<(String, u16, String)>,
    /// Break the connection half-way through reading the upload of this collection.
    pub upload_die: Option<String>,
    /// Delay before answering an upload.
    pub upload_delay: Option<Duration>,
    /// Added to the point count of every collection restored by upload.
    pub count_offset: i64,
    /// When a download fault fires, the server also goes away this long (every new connection
    /// is dropped at once), as a Qdrant restart would, then comes back.
    pub outage: Option<Duration>,
    /// After reading an upload, the server hangs: no request is ever answered again.
    pub hang_after_upload: bool,
    /// This collection is a dirty shard (Qdrant died while recovering a snapshot into it):
    /// reading it, counting it and snapshotting it fail with Qdrant's recorded 500; an upload
    /// into it replaces it, as in Qdrant.
    pub dirty: Option<String>,
    /// A Qdrant before 1.8.0: `GET /` says 1.7.4, and an upload's `checksum` is ignored.
    pub before_checksums: bool,
    /// `POST …/points/count` is refused this many times first, as a collection in strict mode
    /// refuses reads over its rate limit (Qdrant's recorded 429, `Retry-After: 1`).
    pub count_rate_limited: u32,
    /// `POST …/snapshots` is answered 503 this many times first, as a proxy in front of a
    /// restarting Qdrant answers (Envoy's "no healthy upstream").
    pub create_unavailable: u32,
}

pub struct Collection {
    pub info: Value,
    pub snapshot: Bytes,
    pub points: u64,
}

impl Collection {
    /// The real fixture collection whose snapshot is `bytes`.
    pub fn from_fixture(bytes: &'static [u8]) -> Collection {
        if bytes == fixtures::SMALL_PLAIN {
            Collection {
                info: recorded("collection info (single unnamed vector)")["result"].clone(),
                snapshot: Bytes::from_static(bytes),
                points: 200,
            }
        } else {
            Collection {
                info: recorded("collection info (named dense + sparse vectors)")["result"].clone(),
                snapshot: Bytes::from_static(bytes),
                points: 120,
            }
        }
    }
}

#[derive(Default)]
pub struct State {
    pub collections: BTreeMap<String, Collection>,
    pub aliases: Vec<(String, String)>,
    /// (collection, snapshot name) → bytes.
    pub snapshots: BTreeMap<(String, String), Bytes>,
    pub api_key: Option<String>,
    pub read_only_key: Option<String>,
    pub faults: Faults,
    /// "METHOD /path?query [range]" of every request, in order.
    pub requests: Vec<String>,
    /// Connections are dropped until then (`Faults::outage`).
    down_until: Option<std::time::Instant>,
    /// Nothing is answered any more (`Faults::hang_after_upload`).
    hung: bool,
}

pub struct Double {
    pub url: String,
    pub state: Arc<Mutex<State>>,
    _server: Server,
}

fn is_dirty(state: &Mutex<State>, name: &str) -> bool {
    state.lock().unwrap().faults.dirty.as_deref() == Some(name)
}

/// A recorded response (status and body) by exchange name.
/// The recorded exchange named `name`.
fn recorded_exchange(name: &str) -> Value {
    let exchanges: Value = serde_json::from_str(EXCHANGES).unwrap();
    exchanges
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no exchange {name}"))
        .clone()
}

fn recorded_response(name: &str) -> Response<Body> {
    let response = &recorded_exchange(name)["response"];
    let mut answer = json_response(
        response["status"].as_u64().unwrap() as u16,
        response["body"].clone(),
    );
    for (header, value) in response["headers"].as_object().into_iter().flatten() {
        let value = value.as_str().unwrap().parse().unwrap();
        answer
            .headers_mut()
            .insert(hyper::header::HeaderName::from_str(header).unwrap(), value);
    }
    answer
}

/// Counts a fault down: true (and one less) while any is left.
fn take_one(left: &mut u32) -> bool {
    let any = *left > 0;
    *left = left.saturating_sub(1);
    any
}

/// A recorded response body by exchange name.
fn recorded(name: &str) -> Value {
    let response = &recorded_exchange(name)["response"];
    if response["body"].is_null() {
        response["body_text"].clone()
    } else {
        response["body"].clone()
    }
}

impl Double {
    /// The two real fixture collections (`small-named` with the alias `notes`, `small-plain`).
    pub fn start() -> Self {
        Self::with_collections(
            &[
                ("small-named", fixtures::SMALL_NAMED),
                ("small-plain", fixtures::SMALL_PLAIN),
            ],
            &[("notes", "small-named")],
        )
    }

    /// Collections named as given, each holding a real fixture snapshot, and aliases.
    pub fn with_collections(
        collections: &[(&str, &'static [u8])],
        aliases: &[(&str, &str)],
    ) -> Self {
        let mut state = State::default();
        for (name, bytes) in collections {
            state
                .collections
                .insert(name.to_string(), Collection::from_fixture(bytes));
        }
        state.aliases = aliases
            .iter()
            .map(|(a, c)| (a.to_string(), c.to_string()))
            .collect();
        Self::with_state(state)
    }

    /// A server with no collections.
    pub fn empty() -> Self {
        Self::with_state(State::default())
    }

    pub fn with_state(state: State) -> Self {
        let state = Arc::new(Mutex::new(state));
        let (watched, served) = (state.clone(), state.clone());
        // A server that is down answers no new connection.
        let down = move || {
            watched
                .lock()
                .unwrap()
                .down_until
                .is_some_and(|t| std::time::Instant::now() < t)
        };
        let server = Server::start(WhenDown::Refuse, down, move |req| {
            handle(served.clone(), req)
        });
        Double {
            url: server.url.clone(),
            state,
            _server: server,
        }
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// The server holds the two fixture collections again, and the alias `notes`.
    pub fn assert_holds_the_fixtures(&self) {
        let state = self.state();
        assert_eq!(
            state.collections.keys().collect::<Vec<_>>(),
            ["small-named", "small-plain"]
        );
        assert_eq!(
            state.aliases,
            [("notes".to_string(), "small-named".to_string())]
        );
    }

    /// Snapshots left on the server.
    pub fn snapshots_left(&self) -> Vec<String> {
        self.state()
            .snapshots
            .keys()
            .map(|(c, n)| format!("{c}/{n}"))
            .collect()
    }

    pub fn requests(&self) -> Vec<String> {
        self.state().requests.clone()
    }

    /// How many requests so far began with `prefix` ("METHOD /path…").
    pub fn requests_starting_with(&self, prefix: &str) -> usize {
        let state = self.state();
        state
            .requests
            .iter()
            .filter(|r| r.starts_with(prefix))
            .count()
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

fn json_response(status: u16, value: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(value.to_string()))
        .unwrap()
}

fn ok(result: Value) -> Response<Body> {
    json_response(
        200,
        json!({"result": result, "status": "ok", "time": 0.000123}),
    )
}

fn error(status: u16, message: &str) -> Response<Body> {
    json_response(
        status,
        json!({"status": {"error": message}, "time": 0.000042}),
    )
}

fn text(status: u16, message: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(full(message.to_string()))
        .unwrap()
}

fn not_found_collection(name: &str) -> Response<Body> {
    error(
        404,
        &format!("Not found: Collection `{name}` doesn't exist!"),
    )
}

async fn handle(
    state: Arc<Mutex<State>>,
    request: Request<Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    // A server that is down answers nothing, also on a connection kept alive from before.
    if state
        .lock()
        .unwrap()
        .down_until
        .is_some_and(|t| std::time::Instant::now() < t)
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected: the server is down",
        ));
    }
    let method = request.method().as_str().to_string();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let range = request
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let key = request
        .headers()
        .get("api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut body = request.into_body();
    if state.lock().unwrap().hung {
        std::future::pending::<()>().await;
    }
    {
        let mut s = state.lock().unwrap();
        let mut line = format!("{method} {path}");
        if !query.is_empty() {
            line.push_str(&format!("?{query}"));
        }
        if let Some(r) = &range {
            line.push_str(&format!(" [{r}]"));
        }
        s.requests.push(line);
    }
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();

    if segments.is_empty() && method == "GET" {
        let mut answer = recorded("server version (no key needed)");
        if state.lock().unwrap().faults.before_checksums {
            answer["version"] = "1.7.4".into();
        }
        return Ok(ok_raw(answer));
    }
    // Health checks need no key, as on the real server.
    if segments == ["healthz"] && method == "GET" {
        return Ok(text(200, "healthz check passed"));
    }
    // The auth layer answers in plain text, as the real server does.
    {
        let s = state.lock().unwrap();
        if let Some(expected) = &s.api_key {
            match key.as_deref() {
                None => {
                    return Ok(text(
                        401,
                        "Must provide an API key or an Authorization bearer token",
                    ))
                }
                Some(k) if k == expected => {}
                Some(k) if Some(k) == s.read_only_key.as_deref() => {
                    if method != "GET" && !(method == "POST" && path.ends_with("/points/count")) {
                        return Ok(error(403, "Forbidden: Global manage access is required"));
                    }
                }
                Some(_) => return Ok(text(401, "Invalid API key or JWT")),
            }
        }
    }

    let response = match (method.as_str(), segments.as_slice()) {
        ("GET", ["collections"]) => {
            let s = state.lock().unwrap();
            let list: Vec<Value> = s.collections.keys().map(|n| json!({"name": n})).collect();
            ok(json!({"collections": list}))
        }
        ("GET", ["aliases"]) => {
            let s = state.lock().unwrap();
            let list: Vec<Value> = s
                .aliases
                .iter()
                .map(|(a, c)| json!({"alias_name": a, "collection_name": c}))
                .collect();
            ok(json!({"aliases": list}))
        }
        ("GET", ["cluster"]) => {
            if state.lock().unwrap().faults.cluster {
                ok(json!({"status": "enabled", "peer_id": PEER_ID, "peers": {
                        PEER_ID.to_string(): {"uri": "http://127.0.0.1:16335/"},
                        "1": {"uri": "http://127.0.0.1:16336/"},
                        "2": {"uri": "http://127.0.0.1:16337/"}}, "raft_info": {}}))
            } else {
                ok_raw(recorded("cluster info (single node, cluster disabled)"))
            }
        }
        ("GET", ["collections", name]) if is_dirty(&state, name) => recorded_response(
            "collection info of a dirty shard (Qdrant killed during a snapshot recovery) -> 500",
        ),
        ("POST", ["collections", name, "points", "count"]) if is_dirty(&state, name) => {
            recorded_response("exact count of a dirty shard -> 500")
        }
        ("POST", ["collections", name, "snapshots"]) if is_dirty(&state, name) => {
            recorded_response("create snapshot of a dirty shard -> 500")
        }
        ("GET", ["collections", name]) => {
            let s = state.lock().unwrap();
            match s.collections.get(*name) {
                Some(c) => ok(c.info.clone()),
                None => not_found_collection(name),
            }
        }
        ("POST", ["collections", _, "points", "count"])
            if take_one(&mut state.lock().unwrap().faults.count_rate_limited) =>
        {
            recorded_response("count over strict mode's read rate limit -> 429")
        }
        ("POST", ["collections", name, "points", "count"]) => {
            let s = state.lock().unwrap();
            match s.collections.get(*name) {
                Some(c) => ok(json!({"count": c.points})),
                None => not_found_collection(name),
            }
        }
        ("GET", ["collections", name, "snapshots"]) => {
            let s = state.lock().unwrap();
            let list: Vec<Value> = s
                .snapshots
                .iter()
                .filter(|((c, _), _)| c == name)
                .map(|((_, n), bytes)| json!({"name": n, "creation_time": "2026-11-26T04:48:18", "size": bytes.len()}))
                .collect();
            ok(json!(list))
        }
        ("POST", ["collections", name, "snapshots"]) => {
            // As in Qdrant, the snapshot is a server task: a client that goes away does not stop it.
            let (state, name) = (state.clone(), name.to_string());
            let made = tokio::spawn(async move { make_snapshot(&state, &name).await });
            made.await.expect("the snapshot task ends")
        }
        ("GET", ["collections", name, "snapshots", snapshot]) => {
            let delay = state.lock().unwrap().faults.download_delay_for.clone();
            if let Some((_, delay)) = delay.filter(|(c, _)| c == name) {
                tokio::time::sleep(delay).await;
            }
            let mut s = state.lock().unwrap();
            match s
                .snapshots
                .get(&(name.to_string(), snapshot.to_string()))
                .cloned()
            {
                None => text(404, &format!("Not found: Snapshot {snapshot} not found")),
                Some(bytes) => download(&mut s, bytes, range.as_deref()),
            }
        }
        ("DELETE", ["collections", name, "snapshots", snapshot]) => {
            let mut s = state.lock().unwrap();
            if s.faults.delete_error {
                error(500, "Service internal error: failed to remove snapshot")
            } else if s
                .snapshots
                .remove(&(name.to_string(), snapshot.to_string()))
                .is_some()
            {
                ok(json!(true))
            } else {
                error(404, &format!("Not found: Snapshot {snapshot} not found"))
            }
        }
        ("POST", ["collections", name, "snapshots", "upload"]) => {
            return upload(&state, name, &query, &content_type, &mut body).await
        }
        ("POST", ["collections", "aliases"]) => {
            let actions = read_json(&mut body).await?;
            let mut s = state.lock().unwrap();
            for action in actions["actions"].as_array().cloned().unwrap_or_default() {
                if let Some(delete) = action.get("delete_alias") {
                    let alias = delete["alias_name"].as_str().unwrap_or_default();
                    if !s.aliases.iter().any(|(a, _)| a == alias) {
                        return Ok(error(
                            404,
                            &format!("Not found: Alias {alias} does not exists!"),
                        ));
                    }
                    s.aliases.retain(|(a, _)| a != alias);
                }
                if let Some(create) = action.get("create_alias") {
                    let alias = create["alias_name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    let collection = create["collection_name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    s.aliases.retain(|(a, _)| a != &alias);
                    s.aliases.push((alias, collection));
                }
            }
            ok(json!(true))
        }
        _ => text(404, ""),
    };
    Ok(response)
}

async fn read_json(body: &mut Incoming) -> Result<Value, std::io::Error> {
    let bytes = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// `POST /collections/{c}/snapshots?wait=true`: named as Qdrant names them, by the second it
/// started (a second snapshot in the same second replaces the first, as in Qdrant).
async fn make_snapshot(state: &Mutex<State>, name: &str) -> Response<Body> {
    let delay = state.lock().unwrap().faults.create_delay;
    let started = chrono::Utc::now();
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let mut s = state.lock().unwrap();
    if take_one(&mut s.faults.create_unavailable) {
        return text(503, "no healthy upstream");
    }
    if let Some((status, message)) = &s.faults.create_error {
        return error(*status, message);
    }
    if let Some((_, status, message)) = s.faults.create_error_for.as_ref().filter(|f| f.0 == name) {
        return error(*status, message);
    }
    let Some(collection) = s.collections.get(name) else {
        return not_found_collection(name);
    };
    let bytes = collection.snapshot.clone();
    let size = bytes.len();
    let snapshot = format!(
        "{name}-{PEER_ID}-{}.snapshot",
        started.format("%Y-%m-%d-%H-%M-%S")
    );
    let checksum = if s.faults.wrong_checksum {
        "0".repeat(64)
    } else {
        hex(&Sha256::digest(&bytes))
    };
    s.snapshots
        .insert((name.to_string(), snapshot.clone()), bytes);
    ok(
        json!({"name": snapshot, "creation_time": "2026-11-26T04:48:18", "size": size, "checksum": checksum}),
    )
}

/// `POST /collections/{c}/snapshots/upload?wait=true&priority=snapshot&checksum=…`, multipart
/// field `snapshot`: verifies the checksum, recovers the collection from the (fixture) bytes
/// and keeps the uploaded file among the collection's snapshots, as Qdrant does.
async fn upload(
    state: &Arc<Mutex<State>>,
    name: &str,
    query: &str,
    content_type: &str,
    body: &mut Incoming,
) -> Result<Response<Body>, std::io::Error> {
    let (die, delay, failure) = {
        let s = state.lock().unwrap();
        let failure = s
            .faults
            .upload_error
            .clone()
            .filter(|(c, _, _)| c == name)
            .map(|(_, status, message)| (status, message));
        (
            s.faults.upload_die.as_deref() == Some(name),
            s.faults.upload_delay,
            failure,
        )
    };
    if die {
        let _ = body.frame().await;
        return Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected: the server died during the upload",
        ));
    }
    let data = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let hang = {
        let mut s = state.lock().unwrap();
        s.hung = s.faults.hang_after_upload;
        s.hung
    };
    if hang {
        std::future::pending::<()>().await;
    }
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    if let Some((status, message)) = failure {
        return Ok(error(status, &message));
    }
    let boundary = content_type
        .split("boundary=")
        .nth(1)
        .unwrap_or_default()
        .trim_matches('"')
        .to_string();
    let (file_name, snapshot) =
        multipart_file(&data, &boundary).expect("a multipart body with one file");
    let actual = hex(&Sha256::digest(&snapshot));
    let given = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("checksum="))
        .filter(|_| !state.lock().unwrap().faults.before_checksums)
        .unwrap_or_default();
    if !given.is_empty() && given != actual {
        return Ok(error(
            400,
            &format!("Checksum mismatch: expected {actual}, actual {given}"),
        ));
    }
    let fixture = [fixtures::SMALL_PLAIN, fixtures::SMALL_NAMED]
        .into_iter()
        .find(|f| *f == &snapshot[..]);
    let Some(fixture) = fixture else {
        return Ok(error(
            500,
            "Service internal error: failed to unpack the snapshot",
        ));
    };
    let mut s = state.lock().unwrap();
    let mut restored = Collection::from_fixture(fixture);
    if let Some(existing) = s.collections.get(name) {
        if existing.info["config"]["params"]["vectors"]
            != restored.info["config"]["params"]["vectors"]
        {
            return Ok(error(
                400,
                "Bad request: Snapshot is not compatible with existing collection: vectors differ",
            ));
        }
    }
    restored.points = (restored.points as i64 + s.faults.count_offset) as u64;
    if s.faults.dirty.as_deref() == Some(name) {
        s.faults.dirty = None;
    }
    s.collections.insert(name.to_string(), restored);
    s.snapshots
        .insert((name.to_string(), file_name), Bytes::from(snapshot));
    Ok(ok(json!(true)))
}

/// The file name and content of the first file part of a multipart body.
fn multipart_file(data: &[u8], boundary: &str) -> Option<(String, Vec<u8>)> {
    let find = |haystack: &[u8], needle: &[u8], from: usize| {
        haystack[from..]
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    let start = find(data, format!("--{boundary}").as_bytes(), 0)?;
    let headers_end = find(data, b"\r\n\r\n", start)?;
    let headers = String::from_utf8_lossy(&data[start..headers_end]).into_owned();
    let file_name = headers
        .split("filename=\"")
        .nth(1)?
        .split('"')
        .next()?
        .to_string();
    let content_start = headers_end + 4;
    let end = find(data, format!("\r\n--{boundary}").as_bytes(), content_start)?;
    Some((file_name, data[content_start..end].to_vec()))
}

fn ok_raw(body: Value) -> Response<Body> {
    json_response(200, body)
}

/// A snapshot download with `Range` support and the configured fault.
fn download(s: &mut State, bytes: Bytes, range: Option<&str>) -> Response<Body> {
    let total = bytes.len() as u64;
    let start = range
        .filter(|_| !s.faults.ignore_range)
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    let fault = match &mut s.faults.download {
        Some((fault, times)) if *times > 0 => {
            *times -= 1;
            Some(*fault)
        }
        _ => None,
    };
    if let (Some(_), Some(outage)) = (fault, s.faults.outage) {
        s.down_until = Some(std::time::Instant::now() + outage);
    }
    let body = bytes.slice(start as usize..);
    let mut builder = Response::builder()
        .header("content-type", "application/octet-stream")
        .header("accept-ranges", "bytes")
        .header("etag", "\"99426f:2ca00:6b07ba13:13a7c81\"")
        .header("content-length", body.len().to_string());
    builder = if start > 0 {
        builder.status(StatusCode::PARTIAL_CONTENT).header(
            "content-range",
            format!("bytes {start}-{}/{total}", total - 1),
        )
    } else {
        builder.status(StatusCode::OK)
    };
    let chunks: Vec<Bytes> = (0..body.len())
        .step_by(16 * 1024)
        .map(|i| body.slice(i..(i + 16 * 1024).min(body.len())))
        .collect();
    let frames: BoxStream<'static, Result<Frame<Bytes>, std::io::Error>> = match fault {
        None => stream::iter(chunks.into_iter().map(|c| Ok(Frame::data(c)))).boxed(),
        Some(fault) => {
            let after = match fault {
                DownloadFault::Die { after }
                | DownloadFault::Truncate { after }
                | DownloadFault::Stall { after } => after as usize,
            };
            let head = bytes.slice(start as usize..(start as usize + after).min(bytes.len()));
            let first = stream::once(async move { Ok(Frame::data(head)) });
            // Pause first, so the head and the first bytes reach the client before the fault.
            let pause = || tokio::time::sleep(Duration::from_millis(100));
            match fault {
                DownloadFault::Die { .. } => first
                    .chain(stream::once(async move {
                        pause().await;
                        Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "injected: connection died",
                        ))
                    }))
                    .boxed(),
                DownloadFault::Truncate { .. } => first
                    .chain(stream::once(pause()).filter_map(|_| async { None }))
                    .boxed(),
                DownloadFault::Stall { .. } => first.chain(stream::pending()).boxed(),
            }
        }
    };
    let body: Body = StreamBody::new(frames).boxed_unsync();
    builder.body(body).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&segment[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

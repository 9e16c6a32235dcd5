//! A fault-injecting proxy in front of the real S3 server (SeaweedFS): every request is passed
//! on byte for byte (the `Host` header kept, so the client's SigV4 signature still holds), except
//! the ones a test asks to fail — answered `503 SlowDown` as S3 answers an overloaded bucket, or
//! cut off in the middle of their body with the server then gone (connections refused) for a
//! while or for good. Binds 127.0.0.1 only.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};

use crate::loopback::{Server, WhenDown};

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// S3's answer to a client that should slow down (the error document of the S3 API reference,
/// "Error responses": `SlowDown`, 503).
const SLOW_DOWN: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message><RequestId>4442587FB7D0A2F9</RequestId><HostId>wqm-test-proxy</HostId></Error>"#;

/// S3's answer when the server fails inside.
const INTERNAL_ERROR: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message><RequestId>4442587FB7D0A2FA</RequestId><HostId>wqm-test-proxy</HostId></Error>"#;

/// S3's answer to a request the server does not implement.
const NOT_IMPLEMENTED: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>NotImplemented</Code><Message>A header you provided implies functionality that is not implemented.</Message><RequestId>4442587FB7D0A2FA</RequestId><HostId>wqm-test-proxy</HostId></Error>"#;

/// What the proxy does to the requests that write (`PUT`, `POST`).
#[derive(Default)]
pub struct Faults {
    /// Answer this many writes `503 SlowDown` before passing any on.
    pub slow_down: usize,
    /// Cut the next write whose path contains this, after reading part of its body, and be
    /// gone for `gone_for` (`None`: until `back` is called).
    pub cut_write_to: Option<String>,
    pub gone_for: Option<Duration>,
    /// Answer a conditional `PUT` (`If-None-Match: *`) of a taken name `200 OK`, as a server
    /// that ignores the condition does (rclone's `serve s3` 1.75), instead of the upstream's
    /// `412 Precondition Failed`.
    pub ignore_if_none_match: bool,
    /// Answer every server-side copy (`PUT` with `x-amz-copy-source`) `501 NotImplemented`, as
    /// a server without `CopyObject` does.
    pub refuse_copy: bool,
    /// Answer every read (`GET`) whose path contains this `500 InternalError`, as a server
    /// failing again and again does.
    pub fail_reads_of: Option<String>,
}

#[derive(Default)]
pub struct Seen {
    /// When each `503 SlowDown` was answered and when the next write came, as `(path, at)`.
    pub slowed: Vec<(String, Instant)>,
    /// Every request passed on: `METHOD path`.
    pub passed: Vec<(String, Instant)>,
    /// Requests cut off.
    pub cut: Vec<String>,
    /// Copies refused (`refuse_copy`): their target paths.
    pub copies_refused: Vec<String>,
    /// Reads answered `500` (`fail_reads_of`): their paths.
    pub reads_failed: Vec<String>,
}

struct State {
    faults: Faults,
    seen: Seen,
    /// Connections are refused until then (`Some(None)`: until `back`).
    gone: Option<Option<Instant>>,
}

impl State {
    fn is_gone(&mut self) -> bool {
        match self.gone {
            Some(Some(until)) if Instant::now() >= until => {
                self.gone = None;
                false
            }
            Some(_) => true,
            None => false,
        }
    }
}

pub struct Proxy {
    /// The proxy's endpoint, for `AWS_ENDPOINT_URL`.
    pub url: String,
    state: Arc<Mutex<State>>,
    _server: Server,
}

impl Proxy {
    /// A proxy to the S3 server at `upstream` (`http://127.0.0.1:PORT`).
    pub fn start(upstream: &str, faults: Faults) -> Proxy {
        assert!(
            upstream.starts_with("http://127.0.0.1:"),
            "only a loopback server: {upstream}"
        );
        let state = Arc::new(Mutex::new(State {
            faults,
            seen: Seen::default(),
            gone: None,
        }));
        let upstream = upstream.trim_end_matches('/').to_string();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let (watched, served) = (state.clone(), state.clone());
        let server = Server::start(
            WhenDown::Drop,
            move || watched.lock().unwrap().is_gone(),
            move |req| forward(served.clone(), client.clone(), upstream.clone(), req),
        );
        Proxy {
            url: server.url.clone(),
            state,
            _server: server,
        }
    }

    /// The server is there again.
    pub fn back(&self) {
        self.state.lock().unwrap().gone = None;
    }

    pub fn seen<T>(&self, look: impl FnOnce(&Seen) -> T) -> T {
        look(&self.state.lock().unwrap().seen)
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

async fn forward(
    state: Arc<Mutex<State>>,
    client: reqwest::Client,
    upstream: String,
    request: Request<Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or("/".to_string(), |p| p.to_string());
    let writes = method == hyper::Method::PUT || method == hyper::Method::POST;
    let gone = || {
        std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected: the S3 server is gone",
        )
    };
    if state.lock().unwrap().is_gone() {
        return Err(gone());
    }
    // What to do to this request, decided under the lock (not held across a wait).
    let (slow_down, cut) = {
        let mut s = state.lock().unwrap();
        let slow_down = writes && s.faults.slow_down > 0;
        let cut = !slow_down
            && writes
            && s.faults
                .cut_write_to
                .as_ref()
                .is_some_and(|part| path.contains(part.as_str()));
        if slow_down {
            s.faults.slow_down -= 1;
            s.seen.slowed.push((path.clone(), Instant::now()));
        }
        if cut {
            s.faults.cut_write_to = None;
            s.seen.cut.push(format!("{method} {path}"));
            s.gone = Some(s.faults.gone_for.map(|d| Instant::now() + d));
        }
        (slow_down, cut)
    };
    if request.headers().contains_key("x-amz-copy-source") && {
        let mut s = state.lock().unwrap();
        let refuse = s.faults.refuse_copy;
        if refuse {
            s.seen.copies_refused.push(path.clone());
        }
        refuse
    } {
        return Ok(Response::builder()
            .status(501)
            .header("content-type", "application/xml")
            .body(full(NOT_IMPLEMENTED))
            .unwrap());
    }
    let fail_read = method == hyper::Method::GET && {
        let mut s = state.lock().unwrap();
        let fail = s
            .faults
            .fail_reads_of
            .as_ref()
            .is_some_and(|part| path.contains(part.as_str()));
        if fail {
            s.seen.reads_failed.push(path.clone());
        }
        fail
    };
    if fail_read {
        return Ok(Response::builder()
            .status(500)
            .header("content-type", "application/xml")
            .body(full(INTERNAL_ERROR))
            .unwrap());
    }
    if slow_down {
        return Ok(Response::builder()
            .status(503)
            .header("content-type", "application/xml")
            .header("retry-after", "0")
            .body(full(SLOW_DOWN))
            .unwrap());
    }
    if cut {
        // Part of the body arrives; then the server is gone.
        let mut body = request.into_body();
        let _ = body.frame().await;
        return Err(gone());
    }
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let mut upstream_request = client.request(
        reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).unwrap(),
        format!("{upstream}{path_and_query}"),
    );
    // The body is passed on whole: its length is the client's to set again.
    for (name, value) in &parts.headers {
        if !matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection"
        ) {
            upstream_request = upstream_request.header(name.as_str(), value.as_bytes());
        }
    }
    state
        .lock()
        .unwrap()
        .seen
        .passed
        .push((format!("{method} {path}"), Instant::now()));
    let conditional = parts.headers.contains_key("if-none-match");
    let answer = upstream_request
        .body(body)
        .send()
        .await
        .map_err(std::io::Error::other)?;
    if conditional
        && answer.status() == reqwest::StatusCode::PRECONDITION_FAILED
        && state.lock().unwrap().faults.ignore_if_none_match
    {
        return Ok(Response::builder()
            .status(200)
            .header("etag", "\"d41d8cd98f00b204e9800998ecf8427e\"")
            .body(full(Bytes::new()))
            .unwrap());
    }
    let mut response = Response::builder().status(answer.status().as_u16());
    for (name, value) in answer.headers() {
        if !matches!(name.as_str(), "transfer-encoding" | "connection") {
            response = response.header(name.as_str(), value.as_bytes());
        }
    }
    let bytes = answer.bytes().await.map_err(std::io::Error::other)?;
    Ok(response.body(full(bytes)).unwrap())
}

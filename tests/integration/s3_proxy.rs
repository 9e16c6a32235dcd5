//! A fault-injecting proxy in front of the real S3 server (SeaweedFS): every request is passed
//! on byte for byte (the `Host` header kept, so the client's SigV4 signature still holds), except
//! the ones a test asks to fail — answered `503 SlowDown` as S3 answers an overloaded bucket, or
//! cut off in the middle of their body with the server then gone (connections refused) for a
//! while or for good. Binds 127.0.0.1 only.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// S3's answer to a client that should slow down (the error document of the S3 API reference,
/// "Error responses": `SlowDown`, 503).
const SLOW_DOWN: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message><RequestId>4442587FB7D0A2F9</RequestId><HostId>wqm-test-proxy</HostId></Error>"#;

/// What the proxy does to the requests that write (`PUT`, `POST`).
#[derive(Default)]
pub struct Faults {
    /// Answer this many writes `503 SlowDown` before passing any on.
    pub slow_down: usize,
    /// Cut the next write whose path contains this, after reading part of its body, and be
    /// gone for `gone_for` (`None`: until `back` is called).
    pub cut_write_to: Option<String>,
    pub gone_for: Option<Duration>,
}

#[derive(Default)]
pub struct Seen {
    /// When each `503 SlowDown` was answered and when the next write came, as `(path, at)`.
    pub slowed: Vec<(String, Instant)>,
    /// Every request passed on: `METHOD path`.
    pub passed: Vec<(String, Instant)>,
    /// Requests cut off.
    pub cut: Vec<String>,
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
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
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
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (shutdown_tx, mut shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let shared = state.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                ready_tx.send(listener.local_addr().unwrap()).unwrap();
                let client = reqwest::Client::builder()
                    .no_proxy()
                    .build()
                    .unwrap();
                loop {
                    tokio::select! {
                        _ = &mut shutdown_rx => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            if shared.lock().unwrap().is_gone() {
                                drop(stream);
                                continue;
                            }
                            let (state, client, upstream) = (shared.clone(), client.clone(), upstream.clone());
                            tokio::spawn(async move {
                                let service = hyper::service::service_fn(move |req| {
                                    forward(state.clone(), client.clone(), upstream.clone(), req)
                                });
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                    .await;
                            });
                        }
                    }
                }
            });
        });
        let addr: SocketAddr = ready_rx.recv().unwrap();
        Proxy {
            url: format!("http://{addr}"),
            state,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
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

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
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
    let answer = upstream_request
        .body(body)
        .send()
        .await
        .map_err(std::io::Error::other)?;
    let mut response = Response::builder().status(answer.status().as_u16());
    for (name, value) in answer.headers() {
        if !matches!(name.as_str(), "transfer-encoding" | "connection") {
            response = response.header(name.as_str(), value.as_bytes());
        }
    }
    let bytes = answer.bytes().await.map_err(std::io::Error::other)?;
    Ok(response.body(full(bytes)).unwrap())
}

//! A real Qdrant server for tests: started from `WQM_TEST_QDRANT_BIN` on 127.0.0.1 with its own
//! storage (one per test), or the one at `WQM_TEST_QDRANT_URL` (shared: tests take turns and
//! clean up). Tests that use it carry `#[cfg_attr(not(real_qdrant), ignore = ...)]`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const SKIP: &str = "needs a real Qdrant: set WQM_TEST_QDRANT_BIN or WQM_TEST_QDRANT_URL";

pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA that signed `cert`, for the harness's own client.
    pub ca: PathBuf,
}

/// Serialises tests on a shared external server.
static SHARED: Mutex<()> = Mutex::new(());

/// Options for starting a server.
#[derive(Default)]
pub struct Options {
    pub api_key: Option<String>,
    pub read_only_key: Option<String>,
    /// Serve https with these PEM files.
    pub tls: Option<Tls>,
    /// Run in distributed mode: `Some(None)` starts a cluster, `Some(Some(port))` joins the
    /// node whose p2p port that is.
    pub cluster: Option<Option<u16>>,
}

pub struct Server {
    rest: Rest,
    /// Its peer-to-peer port (0 for an external server).
    pub p2p_port: u16,
    child: Option<Child>,
    /// Starts it again (`restart`).
    respawn: Option<Box<dyn Fn() -> Child + Send + Sync>>,
    /// The server's own directory (storage, snapshots) when we started it.
    pub dir: Option<tempfile::TempDir>,
    _shared: Option<MutexGuard<'static, ()>>,
}

/// REST calls to a server, usable from any thread (each has its own small runtime).
pub struct Rest {
    pub url: String,
    pub api_key: Option<String>,
    ca: Option<PathBuf>,
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
}

impl std::ops::Deref for Server {
    type Target = Rest;

    fn deref(&self) -> &Rest {
        &self.rest
    }
}

impl Rest {
    fn new(url: String, api_key: Option<String>, ca: Option<PathBuf>) -> Rest {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Rest {
            http: client(ca.as_deref()),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            url,
            api_key,
            ca,
        }
    }

    /// Another handle on the same server, for another thread.
    pub fn handle(&self) -> Rest {
        Rest::new(self.url.clone(), self.api_key.clone(), self.ca.clone())
    }

    /// A REST call with the server's key; returns the status and the JSON body (or Null).
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.runtime.block_on(async {
            let mut request = self
                .http
                .request(method.parse().unwrap(), format!("{}{path}", self.url));
            if let Some(key) = &self.api_key {
                request = request.header("api-key", key);
            }
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        })
    }

    /// A REST call that must succeed; returns `result`.
    pub fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self.call(method, path, body);
        assert_eq!(status, 200, "{method} {path}: {value}");
        value["result"].clone()
    }

    pub fn collections(&self) -> Vec<String> {
        let mut names: Vec<String> = self.ok("GET", "/collections", None)["collections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    }

    pub fn exact_count(&self, collection: &str) -> u64 {
        self.ok(
            "POST",
            &format!("/collections/{collection}/points/count"),
            Some(json!({"exact": true})),
        )["count"]
            .as_u64()
            .unwrap()
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> Server {
        if let Some(url) = std::env::var("WQM_TEST_QDRANT_URL")
            .ok()
            .filter(|u| !u.is_empty())
        {
            assert!(
                options.tls.is_none() && options.api_key.is_none(),
                "an external server cannot be reconfigured"
            );
            let guard = SHARED.lock().unwrap_or_else(|e| e.into_inner());
            assert!(
                options.cluster.is_none(),
                "an external server cannot form a cluster"
            );
            let server = Server {
                rest: Rest::new(url, std::env::var("WQM_TEST_QDRANT_API_KEY").ok(), None),
                p2p_port: 0,
                child: None,
                respawn: None,
                dir: None,
                _shared: Some(guard),
            };
            server.delete_all_collections();
            return server;
        }
        let bin = std::env::var("WQM_TEST_QDRANT_BIN").expect(SKIP);
        let dir = tempfile::Builder::new()
            .prefix("wqm-qdrant-")
            .tempdir()
            .unwrap();
        let (http_port, grpc_port, p2p_port) = (free_port(), free_port(), free_port());
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let home = dir.path().to_path_buf();
        let (api_key, read_only_key, cluster) = (
            options.api_key.clone(),
            options.read_only_key.clone(),
            options.cluster,
        );
        let tls = options
            .tls
            .as_ref()
            .map(|tls| (tls.cert.clone(), tls.key.clone()));
        // Starts the server on its directory and ports (again, after `restart`).
        let spawn = move || {
            let mut command = Command::new(&bin);
            command
                .arg("--disable-telemetry")
                .current_dir(&home)
                .env("QDRANT__SERVICE__HOST", "127.0.0.1")
                .env("QDRANT__SERVICE__HTTP_PORT", http_port.to_string())
                .env("QDRANT__SERVICE__GRPC_PORT", grpc_port.to_string())
                .env("QDRANT__CLUSTER__P2P__PORT", p2p_port.to_string())
                .env("QDRANT__STORAGE__STORAGE_PATH", home.join("storage"))
                .env("QDRANT__STORAGE__SNAPSHOTS_PATH", home.join("snapshots"))
                .env("QDRANT__STORAGE__TEMP_PATH", home.join("tmp"))
                .env("QDRANT__TELEMETRY_DISABLED", "true")
                .env("QDRANT__LOG_LEVEL", "WARN")
                .stdout(Stdio::null())
                .stderr(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(home.join("qdrant.log"))
                        .unwrap(),
                );
            if let Some(key) = &api_key {
                command.env("QDRANT__SERVICE__API_KEY", key);
            }
            if let Some(key) = &read_only_key {
                command.env("QDRANT__SERVICE__READ_ONLY_API_KEY", key);
            }
            if let Some(join) = cluster {
                command
                    .env("QDRANT__CLUSTER__ENABLED", "true")
                    .arg("--uri")
                    .arg(format!("http://127.0.0.1:{p2p_port}"));
                if let Some(first) = join {
                    command
                        .arg("--bootstrap")
                        .arg(format!("http://127.0.0.1:{first}"));
                }
            }
            if let Some((cert, key)) = &tls {
                command
                    .env("QDRANT__SERVICE__ENABLE_TLS", "true")
                    .env("QDRANT__TLS__CERT", cert)
                    .env("QDRANT__TLS__KEY", key);
            }
            command
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"))
        };
        let child = spawn();
        let ca = options.tls.as_ref().map(|tls| tls.ca.clone());
        let server = Server {
            rest: Rest::new(
                format!("{scheme}://127.0.0.1:{http_port}"),
                options.api_key.clone(),
                ca,
            ),
            p2p_port,
            child: Some(child),
            respawn: Some(Box::new(spawn)),
            dir: Some(dir),
            _shared: None,
        };
        server.wait_ready();
        server
    }

    /// Kills the server (`kill -9`); `start_again` brings it back.
    pub fn kill(&mut self) {
        let child = self.child.as_mut().expect("a server we started");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts a killed server again on the same storage and ports.
    pub fn start_again(&mut self) {
        self.child = Some((self.respawn.as_ref().expect("a server we started"))());
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = self.runtime.block_on(async {
                self.http
                    .get(format!("{}/readyz", self.url))
                    .send()
                    .await
                    .map(|r| r.status().is_success())
            });
            if ready.unwrap_or(false) {
                return;
            }
            if Instant::now() > deadline {
                let log = self.dir.as_ref().map(|d| {
                    std::fs::read_to_string(d.path().join("qdrant.log")).unwrap_or_default()
                });
                panic!(
                    "Qdrant did not become ready at {}; log:\n{}",
                    self.url,
                    log.unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn delete_all_collections(&self) {
        for name in self.collections() {
            self.ok("DELETE", &format!("/collections/{name}"), None);
        }
    }

    /// Snapshots the server lists for `collection`, and `.snapshot` files in its snapshot
    /// directory (when we started it).
    pub fn snapshots_left(&self) -> Vec<String> {
        let mut left: Vec<String> = Vec::new();
        for name in self.collections() {
            for s in self
                .ok("GET", &format!("/collections/{name}/snapshots"), None)
                .as_array()
                .unwrap()
            {
                left.push(format!("{name}/{}", s["name"].as_str().unwrap()));
            }
        }
        if let Some(dir) = &self.dir {
            left.extend(files_named(&dir.path().join("snapshots"), ".snapshot"));
        }
        left.sort();
        left.dedup();
        left
    }
}

fn files_named(dir: &Path, suffix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_named(&path, suffix));
        } else if path.to_string_lossy().ends_with(suffix) {
            found.push(path.display().to_string());
        }
    }
    found
}

fn client(ca: Option<&Path>) -> reqwest::Client {
    // No reuse of idle connections: Qdrant closes them after a few seconds.
    let mut builder = reqwest::Client::builder().pool_max_idle_per_host(0);
    if let Some(ca) = ca {
        builder = builder.tls_certs_merge(
            reqwest::Certificate::from_pem_bundle(&std::fs::read(ca).unwrap()).unwrap(),
        );
    }
    builder.build().unwrap()
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        } else {
            self.delete_all_collections();
        }
    }
}

pub const DIM: usize = 16;

/// A deterministic vector for point `id`.
pub fn vector(id: u64, salt: u64) -> Vec<f32> {
    (0..DIM)
        .map(|i| (((id * 31 + i as u64 * 17 + salt * 7) % 97) as f32) / 97.0 + 0.01)
        .collect()
}

/// The collections of a real workspace-qdrant-mcp: `projects`, `libraries` (named dense +
/// sparse vectors), `rules` (one unnamed vector), `scratchpad`; keyword payload indexes, and the
/// alias `current-project` → `projects`.
pub fn workspace(server: &Server) {
    let named = json!({
        "vectors": {"dense": {"size": DIM, "distance": "Cosine"}},
        "sparse_vectors": {"keywords": {}}
    });
    for (name, config, points) in [
        ("projects", named.clone(), 300u64),
        ("libraries", named.clone(), 150),
        (
            "rules",
            json!({"vectors": {"size": DIM, "distance": "Dot"}}),
            20,
        ),
        ("scratchpad", named, 30),
    ] {
        server.ok("PUT", &format!("/collections/{name}"), Some(config));
        server.ok(
            "PUT",
            &format!("/collections/{name}/index?wait=true"),
            Some(json!({"field_name": "tenant_id", "field_schema": "keyword"})),
        );
        upsert(server, name, 0..points, 0);
    }
    server.ok(
        "POST",
        "/collections/aliases",
        Some(json!({"actions": [{"create_alias": {"collection_name": "projects", "alias_name": "current-project"}}]})),
    );
}

/// Upserts points `ids` into `collection` (named or unnamed vectors as the collection has).
pub fn upsert(server: &Rest, collection: &str, ids: std::ops::Range<u64>, salt: u64) {
    let unnamed = collection == "rules";
    let points: Vec<Value> = ids
        .map(|id| {
            let vector = if unnamed {
                json!(vector(id, salt))
            } else {
                json!({"dense": vector(id, salt), "keywords": {"indices": [id % 50, 100 + id % 7], "values": [0.5, 0.25]}})
            };
            json!({"id": id, "vector": vector, "payload": {"tenant_id": format!("tenant-{}", id % 3), "text": format!("chunk {id} of {collection}"), "salt": salt}})
        })
        .collect();
    server.ok(
        "PUT",
        &format!("/collections/{collection}/points?wait=true"),
        Some(json!({"points": points})),
    );
}

/// A cluster of real Qdrant nodes on 127.0.0.1.
pub struct Cluster {
    nodes: Vec<Option<Server>>,
}

impl Cluster {
    pub fn start(size: usize) -> Cluster {
        let first = Server::start_with(Options {
            cluster: Some(None),
            ..Options::default()
        });
        let port = first.p2p_port;
        let mut nodes = vec![Some(first)];
        for _ in 1..size {
            nodes.push(Some(Server::start_with(Options {
                cluster: Some(Some(port)),
                ..Options::default()
            })));
        }
        let cluster = Cluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(30);
        while cluster.node(0).ok("GET", "/cluster", None)["peers"]
            .as_object()
            .map_or(0, |p| p.len())
            < size
        {
            assert!(Instant::now() < deadline, "the cluster did not form");
            std::thread::sleep(Duration::from_millis(200));
        }
        cluster
    }

    pub fn node(&self, index: usize) -> &Server {
        self.nodes[index].as_ref().expect("a running node")
    }

    pub fn running(&self) -> impl Iterator<Item = &Server> {
        self.nodes.iter().flatten()
    }

    /// The REST URL of every node.
    pub fn all_urls(&self) -> Vec<String> {
        self.nodes.iter().flatten().map(|n| n.url.clone()).collect()
    }

    /// Kills node `index`.
    pub fn stop(&mut self, index: usize) {
        self.nodes[index] = None;
    }

    /// Shard snapshots and uploaded files left on any running node (in its snapshots directory).
    pub fn snapshots_left(&self) -> Vec<String> {
        self.running()
            .flat_map(|n| {
                files_named(
                    &n.dir.as_ref().unwrap().path().join("snapshots"),
                    ".snapshot",
                )
            })
            .collect()
    }
}

/// Every point of `collection` (ids, vectors, payloads), sorted by id.
pub fn points(server: &Rest, collection: &str) -> Vec<Value> {
    let mut all = server.ok(
        "POST",
        &format!("/collections/{collection}/points/scroll"),
        Some(json!({"limit": 10_000, "with_payload": true, "with_vector": true})),
    )["points"]
        .as_array()
        .unwrap()
        .clone();
    all.sort_by_key(|p| p["id"].as_u64());
    all
}

/// What must come back after a restore: points, payload index schema, vector config, aliases.
pub fn fingerprint(server: &Rest) -> Value {
    let mut collections = serde_json::Map::new();
    for name in server.collections() {
        let info = server.ok("GET", &format!("/collections/{name}"), None);
        let params = &info["config"]["params"];
        collections.insert(
            name.clone(),
            json!({
                "points": points(server, &name),
                "payload_schema": info["payload_schema"],
                "vectors": params["vectors"],
                "sparse_vectors": params["sparse_vectors"],
            }),
        );
    }
    json!({"collections": collections, "aliases": server.ok("GET", "/aliases", None)})
}

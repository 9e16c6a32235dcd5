//! `wqm backup restore` against the Qdrant test double: every phase, refusal and fault. The
//! scene and the helpers are here; the tests, by what they are about, in the files below.

use std::fs;
use std::path::Path;
use std::time::Duration;

use tempfile::TempDir;

use crate::fixtures;
use crate::qdrant_double::{Double, Faults};
use crate::test::Test;

mod damaged;
mod live;
mod plan;
mod uploads;

/// A test directory with a live state DB in `data/` and a backup in `b` of the double's
/// collections (`small-named` with alias `notes`, `small-plain`) and that DB.
pub fn scene(double: &Double, create_args: &str) -> TempDir {
    let t = Test::new();
    fs::create_dir_all(t.join("data")).unwrap();
    fixtures::state_db(&t.join("data/state.db"));
    let (_, tmp) = t
        .env("QDRANT_URL", &double.url)
        .env("WQM_DATA_DIR", "{TMP}/data")
        .args(&format!("backup create {{TMP}}/b {create_args}"))
        .stdout_with(|o| assert!(o.contains("Backup created: "), "{o}"))
        .run();
    tmp
}

/// The server lost everything.
pub fn lose_everything(double: &Double) {
    let mut state = double.state();
    state.collections.clear();
    state.aliases.clear();
}

/// `wqm` in the scene's directory, pointed at the double and the live data directory.
fn wqm(tmp: TempDir, double: &Double, args: &str) -> Test {
    Test::in_dir(tmp)
        .env("QDRANT_URL", &double.url)
        .env("WQM_DATA_DIR", "{TMP}/data")
        .args(args)
}

fn count(db: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

pub fn uploads(double: &Double) -> Vec<String> {
    double
        .requests()
        .into_iter()
        .filter(|r| r.contains("/snapshots/upload"))
        .collect()
}

pub fn safety_backups(dir: &Path) -> Vec<String> {
    let mut found: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("safety-"))
        .collect();
    found.sort();
    found
}

/// Decompresses a database out of a backup for inspection.
fn copy_out(backup: &Path, rel: &str, dir: &Path) -> std::path::PathBuf {
    let out = dir.join("inspect.db");
    fs::write(
        &out,
        zstd::decode_all(&fs::read(backup.join(rel)).unwrap()[..]).unwrap(),
    )
    .unwrap();
    out
}

/// The points of each collection the double holds.
fn points(double: &Double) -> Vec<(String, u64)> {
    let state = double.state();
    state
        .collections
        .iter()
        .map(|(name, c)| (name.clone(), c.points))
        .collect()
}

fn other_db(path: &Path) {
    rusqlite::Connection::open(path)
        .unwrap()
        .execute_batch("CREATE TABLE docs(id INTEGER PRIMARY KEY, body TEXT); INSERT INTO docs(body) VALUES ('x');")
        .unwrap();
}

fn database_names(backup: &Path) -> Vec<String> {
    wqm::format::manifest::Manifest::load(&backup.join("metadata/manifest.json"))
        .unwrap()
        .databases
        .into_iter()
        .map(|d| d.name)
        .collect()
}

/// Every file under `dir`, as bytes.
fn all_bytes(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_bytes(&path));
        } else {
            out.push((path.clone(), fs::read(&path).unwrap()));
        }
    }
    out
}

/// The stored path of `collection`'s snapshot in the scene's backup.
fn snapshot_file(tmp: &TempDir, collection: &str) -> String {
    let m = wqm::format::manifest::Manifest::load(&tmp.path().join("b/metadata/manifest.json"))
        .unwrap();
    m.collection_details[collection].snapshot.clone()
}

/// A daemon's gRPC port for tests: it accepts connections while `file` exists, closing
/// `close_delay` after the file goes (as a daemon takes a moment to exit), until dropped.
struct PortDaemon {
    address: String,
    quit: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PortDaemon {
    fn follow(file: std::path::PathBuf, close_delay: Duration) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let quit = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let (address, quit) = (address.clone(), quit.clone());
            std::thread::spawn(move || {
                let mut listener = file.exists().then_some(listener);
                while !quit.load(std::sync::atomic::Ordering::Relaxed) {
                    match (&listener, file.exists()) {
                        (Some(_), false) => {
                            std::thread::sleep(close_delay);
                            listener = None;
                        }
                        (None, true) => {
                            listener = Some(std::net::TcpListener::bind(&address).unwrap())
                        }
                        _ => {}
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        PortDaemon {
            address,
            quit,
            thread: Some(thread),
        }
    }
}

impl Drop for PortDaemon {
    fn drop(&mut self) {
        self.quit.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

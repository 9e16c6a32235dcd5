//! Backups for the tests, written through the library's own staged writer, and the real
//! Qdrant snapshots and state.db schema they hold.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use wqm::checksum::Algorithm;
use wqm::compress::Compression;
use wqm::format::layout;
use wqm::format::manifest::{
    CollectionDetails, Collections, DatabaseDetails, FileKind, Manifest, SystemInfo,
};
use wqm::store::Staging;

pub const SMALL_PLAIN: &[u8] = include_bytes!("../fixtures/qdrant/small-plain.snapshot");
pub const SMALL_NAMED: &[u8] = include_bytes!("../fixtures/qdrant/small-named.snapshot");
const SCHEMA_SQL: &str = include_str!("../fixtures/state-db/schema.sql");
const SAMPLE_SQL: &str = include_str!("../fixtures/state-db/sample-data.sql");

pub const CONFIG_YAML: &str =
    "qdrant:\n  url: http://localhost:6333\nbackup:\n  compression: true\n";

/// The exact Python manifest of `upstream-implementations.md` §1.
pub const PYTHON_MANIFEST: &str = r#"{"version": "0.3.0", "timestamp": 1761037200.123456, "collections": {"a": 120, "b": 30},
 "total_documents": 150, "python_version": "3.12.9", "during_operations": false,
 "partial_backup": true, "selected_collections": ["a", "b"], "description": "pre-upgrade"}"#;

/// What a test backup holds.
pub struct Spec {
    pub version: String,
    pub timestamp: f64,
    pub description: Option<String>,
    pub compression: Compression,
    pub algorithm: Algorithm,
    /// (name, real snapshot bytes, point count)
    pub collections: Vec<(&'static str, &'static [u8], u64)>,
    pub state_db: bool,
    pub config: bool,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            version: wqm::VERSION.to_string(),
            timestamp: wqm::now() - 3600.0,
            description: Some("test backup".to_string()),
            compression: Compression::None,
            algorithm: Algorithm::Xxhash64,
            collections: vec![
                ("small-named", SMALL_NAMED, 120),
                ("small-plain", SMALL_PLAIN, 200),
            ],
            state_db: true,
            config: true,
        }
    }
}

/// A state.db of the real v49 schema with the sample rows, in WAL mode like the daemon's.
pub fn state_db(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA journal_mode=WAL;").unwrap();
    conn.execute_batch(SCHEMA_SQL).unwrap();
    conn.execute_batch(SAMPLE_SQL).unwrap();
}

/// Writes a format-1 backup at `target` and returns its manifest.
pub fn backup(target: &Path, spec: &Spec) -> Manifest {
    let staging = Staging::begin(target, false).unwrap();
    let mut manifest = Manifest::new(spec.version.clone(), spec.timestamp);
    manifest.description = spec.description.clone();
    manifest.compression = Some(spec.compression.into());
    manifest.checksum_algorithm = Some(spec.algorithm);
    manifest.qdrant_version = Some("1.18.3".to_string());
    manifest.system_info = Some(SystemInfo {
        hostname: "test-host".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        wqm_version: wqm::VERSION.into(),
    });

    let mut counts = BTreeMap::new();
    for (name, bytes, points) in &spec.collections {
        let rel = layout::snapshot_path(name, spec.compression.into());
        let entry = write(
            &staging,
            &rel,
            FileKind::CollectionSnapshot,
            spec.compression,
            spec.algorithm,
            bytes,
        );
        let params = wqm::snapshot::inspect(*bytes).unwrap().params;
        manifest.collection_details.insert(
            name.to_string(),
            CollectionDetails {
                points_count: *points,
                points_count_after: None,
                snapshot: rel,
                shards: vec![],
                config: None,
                params: Some(params),
                payload_schema: Some(
                    serde_json::json!({"tag": {"data_type": "keyword", "points": points}}),
                ),
                aliases: if *name == "small-named" {
                    vec!["notes".into()]
                } else {
                    vec![]
                },
            },
        );
        manifest.files.push(entry);
        counts.insert(name.to_string(), *points);
    }
    manifest.total_documents = Some(counts.values().sum());
    manifest.collections = Some(Collections::Counts(counts));

    if spec.state_db {
        let scratch = tempfile::tempdir().unwrap();
        let db = scratch.path().join("state.db");
        state_db(&db);
        let rel = layout::database_path("state.db", spec.compression.into());
        let entry = write(
            &staging,
            &rel,
            FileKind::SqliteDatabase,
            spec.compression,
            spec.algorithm,
            &fs::read(&db).unwrap(),
        );
        manifest.databases.push(DatabaseDetails {
            name: "state.db".into(),
            file: rel,
            schema_version: Some(49),
        });
        manifest.files.push(entry);
    } else {
        manifest.notes.push("no state database was found".into());
    }
    if spec.config {
        let entry = write(
            &staging,
            "config/config.yaml",
            FileKind::Config,
            Compression::None,
            spec.algorithm,
            CONFIG_YAML.as_bytes(),
        );
        manifest.files.push(entry);
    }
    staging.write_manifest(&manifest).unwrap();
    staging.commit().unwrap();
    manifest
}

fn write(
    staging: &Staging,
    rel: &str,
    kind: FileKind,
    compression: Compression,
    algorithm: Algorithm,
    bytes: &[u8],
) -> wqm::format::manifest::FileEntry {
    let mut sink = staging
        .create_file(rel, kind, compression.into(), algorithm)
        .unwrap();
    sink.write_all(bytes).unwrap();
    sink.finish().unwrap()
}

/// A backup as the earlier Python wqm wrote it: the manifest, a config.json per collection and
/// a plain copy of state.db.
pub fn legacy_backup(target: &Path) {
    for dir in ["metadata", "collections", "sqlite"] {
        fs::create_dir_all(target.join(dir)).unwrap();
    }
    fs::write(target.join("metadata/manifest.json"), PYTHON_MANIFEST).unwrap();
    for (name, count) in [("a", 120), ("b", 30)] {
        let config = serde_json::json!({"name": name, "vectors_count": count, "points_count": count,
                                        "config": {"params": {"vectors": {"size": 384, "distance": "Cosine"}}}});
        fs::write(
            target.join(format!("collections/{name}.config.json")),
            config.to_string(),
        )
        .unwrap();
    }
    state_db(&target.join("sqlite/state.db"));
    // A clean close leaves no -wal/-shm, as a copy2 of a quiet database would.
    assert!(!target.join("sqlite/state.db-wal").exists());
}

/// Flips one byte in the middle of `path`.
pub fn flip_byte(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    fs::write(path, bytes).unwrap();
}

/// Cuts `path` to half its length.
pub fn truncate(path: &Path) {
    let bytes = fs::read(path).unwrap();
    fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
}

/// Rewrites the manifest JSON through `edit`.
pub fn edit_manifest(backup: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = backup.join("metadata/manifest.json");
    let mut value: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut value);
    fs::write(&path, serde_json::to_string_pretty(&value).unwrap()).unwrap();
}

/// The manifest's `files[]` entry of `rel`.
fn file_entry<'m>(manifest: &'m mut serde_json::Value, rel: &str) -> &'m mut serde_json::Value {
    manifest["files"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|f| f["path"] == rel)
        .unwrap()
}

/// Replaces the stored file `rel` with `stored` and makes the manifest agree with it (size and
/// checksum of the stored bytes; the recorded content is left as it was): damage no checksum
/// can see.
pub fn replace_stored(backup: &Path, rel: &str, stored: &[u8]) {
    fs::write(backup.join(rel), stored).unwrap();
    edit_manifest(backup, |m| {
        let algorithm: Algorithm = serde_json::from_value(m["checksum_algorithm"].clone()).unwrap();
        let checksum = wqm::checksum::digest(stored, &[algorithm]).get(algorithm);
        let entry = file_entry(m, rel);
        entry["size"] = stored.len().into();
        entry["checksum"] = serde_json::to_value(checksum).unwrap();
    });
}

/// Replaces the content of `rel` (compressed as the backup compresses) and makes the manifest
/// agree with it entirely: a hostile backup that every checksum vouches for.
pub fn replace_content(backup: &Path, rel: &str, content: &[u8]) {
    let compression = if rel.ends_with(".zst") {
        Compression::Zstd
    } else {
        Compression::None
    };
    let mut encoder = compression.encoder(Vec::new()).unwrap();
    encoder.write_all(content).unwrap();
    let stored = encoder.finish().unwrap();
    replace_stored(backup, rel, &stored);
    let sha = wqm::checksum::digest(content, &[Algorithm::Sha256])
        .get(Algorithm::Sha256)
        .unwrap()
        .value;
    edit_manifest(backup, |m| {
        let entry = file_entry(m, rel);
        entry["content_size"] = content.len().into();
        entry["content_sha256"] = sha.into();
    });
}

/// `snapshot` with an extra member named `member` (written raw: `tar` itself refuses to write
/// `..` or absolute names) before its first entry.
pub fn with_member(snapshot: &[u8], member: &str) -> Vec<u8> {
    let mut header = tar::Header::new_old();
    header.as_old_mut().name[..member.len()].copy_from_slice(member.as_bytes());
    header.set_size(5);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut out = header.as_bytes().to_vec();
    let mut data = b"evil\n".to_vec();
    data.resize(512, 0);
    out.extend_from_slice(&data);
    out.extend_from_slice(snapshot);
    out
}

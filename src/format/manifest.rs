//! `metadata/manifest.json`: the record of what a backup holds (schema in `docs/manifest.md`).
//!
//! Format 1 is a superset of the earlier Python manifest: every Python field keeps its name and
//! meaning, so old tooling keeps reading new backups, and old backups (no `format_version`) still load.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::checksum::Checksum;
use crate::compress::Stored;
use crate::exit::{Classify, ExitCode};
use crate::format::names::{self, Database, EntryPath};

/// The manifest format of a full backup (what wqm 0.3 reads too).
pub const FULL_FORMAT: u32 = 1;
/// The format of an incremental backup, whose files may be chunk indexes (`compression:
/// chunks`): older wqm versions refuse it instead of misreading it.
pub const CHUNKED_FORMAT: u32 = 2;
/// The newest manifest format this wqm reads.
pub const FORMAT_VERSION: u32 = CHUNKED_FORMAT;

/// The largest manifest wqm reads (`docs/manifest.md`): a backup of thousands of collections
/// or shards needs a few MiB; anything larger is refused before it is parsed.
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("Backup manifest is missing or invalid: `{}` does not exist", path.display())]
    Missing { path: PathBuf },
    #[error("Backup manifest is missing or invalid: cannot read `{}`: {source}", path.display())]
    Unreadable { path: PathBuf, source: io::Error },
    #[error("Backup manifest is missing or invalid: `{}`: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    /// An encrypted repository's manifest, read without its key.
    #[error("`{}` is encrypted; password needed", path.display())]
    Encrypted { path: PathBuf },
    #[error("Backup manifest `{}` has format_version {found}, newer than the {supported} this wqm reads", path.display())]
    NewerFormat {
        path: PathBuf,
        found: u64,
        supported: u32,
    },
}

impl Classify for ManifestError {
    fn exit_code(&self) -> ExitCode {
        match self {
            ManifestError::Encrypted { .. } => ExitCode::Usage,
            _ => ExitCode::InvalidBackup,
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            ManifestError::Encrypted { .. } => format!(
                "give the repository's password: {}",
                crate::crypto::PASSWORD_WAYS
            ),
            ManifestError::NewerFormat { .. } => {
                "this backup was written by a newer wqm; upgrade wqm to read it".to_string()
            }
            _ => "run `wqm backup validate PATH --verbose` for details, or pick an earlier backup with `wqm backup list DIR --sort timestamp`".to_string(),
        })
    }
}

/// `collections` of the Python manifest: a name → point count map, or (oldest form) a list of names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Collections {
    Counts(BTreeMap<String, u64>),
    Names(Vec<String>),
}

impl Collections {
    pub fn names(&self) -> Vec<&str> {
        match self {
            Collections::Counts(map) => map.keys().map(String::as_str).collect(),
            Collections::Names(names) => names.iter().map(String::as_str).collect(),
        }
    }

    pub fn count_of(&self, name: &str) -> Option<u64> {
        match self {
            Collections::Counts(map) => map.get(name).copied(),
            Collections::Names(_) => None,
        }
    }
}

/// What a stored file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// A Qdrant collection snapshot (an uncompressed tar before our compression).
    CollectionSnapshot,
    /// A Qdrant shard snapshot (one shard of a collection of a cluster; the per-shard layout).
    ShardSnapshot,
    /// A SQLite database copied with SQLite's online backup API.
    SqliteDatabase,
    /// The configuration file, byte for byte.
    Config,
}

/// One stored file of a format-1 backup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the backup directory, `/`-separated.
    pub path: String,
    pub kind: FileKind,
    /// Bytes on disk.
    pub size: u64,
    pub compression: Stored,
    /// Of the stored bytes, with `checksum_algorithm`; null when that is `none`.
    pub checksum: Option<Checksum>,
    /// Size of the original (uncompressed) content.
    pub content_size: u64,
    /// sha256 of the original content; Qdrant verifies snapshot uploads with it.
    pub content_sha256: String,
}

/// Per-collection facts recorded with `include_collection_stats` (the point count is always kept).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollectionDetails {
    /// Exact point count just before the snapshot.
    pub points_count: u64,
    /// Exact count just after, when it differed: points changed during the snapshot, whose
    /// count lies between the two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points_count_after: Option<u64>,
    /// The stored snapshot, a `files[].path` (empty when the collection is stored by shards).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub snapshot: String,
    /// The shards of a collection backed up from a cluster, one snapshot each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardDetails>,
    /// The whole collection configuration (`params`, `hnsw_config`, `optimizer_config`, ...),
    /// recorded for sharded collections, which a restore must create before loading shards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
    /// `config.params` of the collection: vectors, sparse_vectors, shard_number, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
    /// The collection's payload index schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_schema: Option<Value>,
    /// Aliases pointing at this collection (snapshots do not hold them).
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// One shard of a collection backed up from a cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardDetails {
    pub id: u32,
    /// Its shard key (custom sharding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Value>,
    /// Exact point count of the shard when its snapshot was taken.
    pub points_count: u64,
    /// The stored shard snapshot, a `files[].path`.
    pub snapshot: String,
    /// The peer whose replica was snapshotted, and its REST URL.
    pub peer_id: u64,
    pub node: String,
    /// When this shard's snapshot was taken (epoch seconds): shards are not taken at one instant.
    pub snapshot_timestamp: f64,
}

impl CollectionDetails {
    /// The files holding the collection's data: its snapshot, or its shard snapshots.
    pub fn snapshot_files(&self) -> Vec<&str> {
        if self.shards.is_empty() {
            vec![self.snapshot.as_str()]
        } else {
            self.shards.iter().map(|s| s.snapshot.as_str()).collect()
        }
    }
}

/// A SQLite database in the backup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatabaseDetails {
    /// `state.db`, `search.db` or `graph.db`.
    pub name: String,
    /// The stored file, a `files[].path`.
    pub file: String,
    /// `MAX(version)` of its schema table, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<i64>,
}

/// Host facts recorded with `include_system_info`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SystemInfo {
    pub hostname: String,
    pub os: String,
    pub arch: String,
    pub wqm_version: String,
}

/// `metadata/chunk-refs`: how many references it holds and the sha256 of the whole file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRefs {
    pub count: u64,
    pub sha256: String,
}

/// `metadata/manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Absent in legacy (Python) manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format_version: Option<u32>,
    /// The product version that wrote the backup.
    pub version: String,
    /// Epoch seconds (float), as Python's `time.time()`.
    pub timestamp: f64,
    #[serde(default)]
    pub collections: Option<Collections>,
    #[serde(default)]
    pub total_documents: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python_version: Option<String>,
    #[serde(default)]
    pub during_operations: bool,
    #[serde(default)]
    pub partial_backup: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected_collections: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_path: Option<String>,

    // Format 1 additions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qdrant_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Stored>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_algorithm: Option<crate::checksum::Algorithm>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileEntry>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub collection_details: BTreeMap<String, CollectionDetails>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<DatabaseDetails>,
    /// Things an operator should know about this backup ("no state DB found at ...").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_info: Option<SystemInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_metadata: Option<Map<String, Value>>,
    /// The secrets replaced by a marker in `config/config.yaml` (restore keeps the live values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_redacted: Vec<crate::secrets::Redaction>,
    /// Whether the daemon ran while the backup was made (informational: the copies are
    /// consistent either way). Absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon_running: Option<bool>,
    /// The reference list of an incremental backup (`metadata/chunk-refs`), which garbage
    /// collection reads instead of the indexes while it matches this record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_refs: Option<ChunkRefs>,

    /// Keys this version does not know; kept so a rewrite loses nothing (Python's `additional_metadata`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Manifest {
    /// A new format-1 manifest with the given product version and time.
    pub fn new(version: impl Into<String>, timestamp: f64) -> Self {
        Manifest {
            format_version: Some(FULL_FORMAT),
            version: version.into(),
            timestamp,
            collections: None,
            total_documents: None,
            database_version: None,
            python_version: None,
            during_operations: false,
            partial_backup: false,
            selected_collections: None,
            description: None,
            created_by: None,
            backup_path: None,
            qdrant_version: None,
            compression: None,
            checksum_algorithm: None,
            files: Vec::new(),
            collection_details: BTreeMap::new(),
            databases: Vec::new(),
            notes: Vec::new(),
            system_info: None,
            custom_metadata: None,
            config_redacted: Vec::new(),
            daemon_running: None,
            chunk_refs: None,
            extra: Map::new(),
        }
    }

    /// A manifest without `format_version` was written by the earlier Python wqm.
    pub fn is_legacy(&self) -> bool {
        self.format_version.is_none()
    }

    /// `wqm/1` for format 1, `legacy` for Python backups.
    pub fn format_name(&self) -> String {
        match self.format_version {
            Some(v) => format!("wqm/{v}"),
            None => "legacy".to_string(),
        }
    }

    /// Names of the collections the backup holds.
    pub fn collection_names(&self) -> Vec<&str> {
        self.collections
            .as_ref()
            .map(Collections::names)
            .unwrap_or_default()
    }

    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == path)
    }

    /// `timestamp` as Python's `format_timestamp()` printed it: UTC ISO 8601 with `+00:00`.
    pub fn formatted_timestamp(&self) -> String {
        format_timestamp(self.timestamp)
    }

    /// Parses manifest text; `path` only names the file in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Self, ManifestError> {
        let invalid = |reason: String| ManifestError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let value: Value = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let object = value
            .as_object()
            .ok_or_else(|| invalid("expected a JSON object".to_string()))?;
        // Check the format first: a newer format may change any other field.
        match object.get("format_version") {
            None => {}
            Some(Value::Number(n)) if n.as_u64().is_some() => {
                let found = n.as_u64().unwrap_or_default();
                if found > u64::from(FORMAT_VERSION) {
                    return Err(ManifestError::NewerFormat {
                        path: path.to_path_buf(),
                        found,
                        supported: FORMAT_VERSION,
                    });
                }
                if found == 0 {
                    return Err(invalid("`format_version` must be 1 or more".to_string()));
                }
            }
            Some(other) => {
                return Err(invalid(format!(
                    "`format_version` must be a positive integer, found {other}"
                )))
            }
        }
        let manifest: Manifest =
            serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
        manifest.check_names().map_err(invalid)?;
        Ok(manifest)
    }

    /// Reads a manifest from `reader` (its text is at most `MAX_MANIFEST_BYTES`); `path` only
    /// names the file in errors.
    pub fn read_from(reader: impl Read, path: &Path) -> Result<Self, ManifestError> {
        let mut bytes = Vec::new();
        reader
            .take(MAX_MANIFEST_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| ManifestError::Unreadable {
                path: path.to_path_buf(),
                source,
            })?;
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(too_large(path));
        }
        if bytes.starts_with(&crate::crypto::MAGIC) {
            return Err(ManifestError::Encrypted {
                path: path.to_path_buf(),
            });
        }
        let text = String::from_utf8(bytes).map_err(|_| ManifestError::Invalid {
            path: path.to_path_buf(),
            reason: "not UTF-8 text".to_string(),
        })?;
        Self::from_json(&text, path)
    }

    /// Every name the manifest carries, checked before any of them is used: collection and
    /// alias names, database names, stored file paths. The error names the field.
    pub fn check_names(&self) -> Result<(), String> {
        let unsafe_field = |field: String, value: &str, reason: names::Reason| {
            Err(format!(
                "`{field}` is unsafe: `{}` {reason}",
                names::shown(value)
            ))
        };
        let collection = |field: String, name: &str| match names::check_collection_name(name) {
            Ok(()) => Ok(()),
            Err(reason) => unsafe_field(field, name, reason),
        };
        let entry_path = |field: String, path: &str| match EntryPath::parse(path) {
            Ok(_) => Ok(()),
            Err(reason) => unsafe_field(field, path, reason),
        };
        match &self.collections {
            Some(Collections::Counts(counts)) => {
                for name in counts.keys() {
                    collection(format!("collections.{}", names::shown(name)), name)?;
                }
            }
            Some(Collections::Names(list)) => {
                for (i, name) in list.iter().enumerate() {
                    collection(format!("collections[{i}]"), name)?;
                }
            }
            None => {}
        }
        for (i, name) in self.selected_collections.iter().flatten().enumerate() {
            collection(format!("selected_collections[{i}]"), name)?;
        }
        for (name, details) in &self.collection_details {
            let field = format!("collection_details.{}", names::shown(name));
            collection(field.clone(), name)?;
            for (i, alias) in details.aliases.iter().enumerate() {
                collection(format!("{field}.aliases[{i}]"), alias)?;
            }
            if !details.snapshot.is_empty() {
                entry_path(format!("{field}.snapshot"), &details.snapshot)?;
            }
            for (i, shard) in details.shards.iter().enumerate() {
                entry_path(format!("{field}.shards[{i}].snapshot"), &shard.snapshot)?;
            }
        }
        for (i, database) in self.databases.iter().enumerate() {
            if let Err(reason) = Database::parse(&database.name) {
                return unsafe_field(format!("databases[{i}].name"), &database.name, reason);
            }
            entry_path(format!("databases[{i}].file"), &database.file)?;
        }
        for (i, file) in self.files.iter().enumerate() {
            entry_path(format!("files[{i}].path"), &file.path)?;
        }
        Ok(())
    }

    /// Reads the manifest file at `path`, which must be a regular file (a symlink is refused,
    /// never followed) of at most `MAX_MANIFEST_BYTES`. `store::BackupDir::read_manifest` reads a
    /// backup's own manifest with every component of its path checked.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let mut options = std::fs::OpenOptions::new();
        options.read(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::custom_flags(
            &mut options,
            rustix::fs::OFlags::NOFOLLOW.bits() as i32,
        );
        let file = options.open(path).map_err(|e| {
            #[cfg(unix)]
            if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                return ManifestError::Invalid {
                    path: path.to_path_buf(),
                    reason: "is a symbolic link; wqm never follows links in a backup".to_string(),
                };
            }
            load_error(path, e)
        })?;
        Self::read_opened(file, path)
    }

    /// Reads an opened manifest file: its size is checked before a byte is parsed.
    pub fn read_opened(file: std::fs::File, path: &Path) -> Result<Self, ManifestError> {
        let len = file.metadata().map_err(|e| load_error(path, e))?.len();
        if len > MAX_MANIFEST_BYTES {
            return Err(too_large(path));
        }
        Self::read_from(io::BufReader::new(file), path)
    }

    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a manifest always serializes");
        text.push('\n');
        text
    }

    /// Writes the manifest atomically (temp file, fsync, rename, fsync of the directory),
    /// creating missing parent directories.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        crate::fs::write_atomic(path, self.to_json().as_bytes())
    }
}

/// An error opening a manifest, as the manifest error it is.
pub fn load_error(path: &Path, source: io::Error) -> ManifestError {
    match source.kind() {
        io::ErrorKind::NotFound => ManifestError::Missing {
            path: path.to_path_buf(),
        },
        io::ErrorKind::InvalidData => ManifestError::Invalid {
            path: path.to_path_buf(),
            reason: source.to_string(),
        },
        _ => ManifestError::Unreadable {
            path: path.to_path_buf(),
            source,
        },
    }
}

fn too_large(path: &Path) -> ManifestError {
    ManifestError::Invalid {
        path: path.to_path_buf(),
        reason: format!(
            "larger than {} MiB, the most a manifest may have; not read",
            MAX_MANIFEST_BYTES >> 20
        ),
    }
}

/// Formats epoch seconds as `2009-02-13T23:31:30+00:00`.
pub fn format_timestamp(timestamp: f64) -> String {
    let seconds = timestamp.floor() as i64;
    chrono::DateTime::from_timestamp(seconds, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string())
        .unwrap_or_else(|| format!("{timestamp} (out of range)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PYTHON_EXAMPLE: &str = r#"{"version": "0.3.0", "timestamp": 1761037200.123456, "collections": {"a": 120, "b": 30},
 "total_documents": 150, "python_version": "3.12.9", "during_operations": false,
 "partial_backup": true, "selected_collections": ["a", "b"], "description": "pre-upgrade"}"#;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::from_json(text, Path::new("m.json"))
    }

    #[test]
    fn reads_the_python_manifest() {
        let m = parse(PYTHON_EXAMPLE).unwrap();
        assert!(m.is_legacy());
        assert_eq!(m.version, "0.3.0");
        assert_eq!(m.collection_names(), ["a", "b"]);
        assert_eq!(m.collections.as_ref().unwrap().count_of("a"), Some(120));
        assert_eq!(m.total_documents, Some(150));
        assert!(m.partial_backup);
        assert_eq!(
            m.selected_collections.as_deref(),
            Some(&["a".to_string(), "b".to_string()][..])
        );
        assert_eq!(m.python_version.as_deref(), Some("3.12.9"));
        assert_eq!(m.description.as_deref(), Some("pre-upgrade"));
    }

    #[test]
    fn minimal_manifest_has_no_collections() {
        let m = parse(r#"{"version": "0.2.1", "timestamp": 1}"#).unwrap();
        assert_eq!(m.collections, None);
        assert_eq!(m.total_documents, None);
        assert!(!m.partial_backup && !m.during_operations);
    }

    #[test]
    fn collections_may_be_a_list_of_names() {
        let m =
            parse(r#"{"version": "0.2.1", "timestamp": 1, "collections": ["x", "y"]}"#).unwrap();
        assert_eq!(m.collection_names(), ["x", "y"]);
        assert_eq!(m.collections.unwrap().count_of("x"), None);
    }

    #[test]
    fn unknown_keys_survive_a_round_trip() {
        let m = parse(r#"{"version": "0.2.1", "timestamp": 1, "custom_key": "v", "number": 42}"#)
            .unwrap();
        assert_eq!(m.extra.get("number"), Some(&Value::from(42)));
        let again = parse(&m.to_json()).unwrap();
        assert_eq!(again.extra.get("custom_key"), Some(&Value::from("v")));
    }

    #[test]
    fn unset_optional_fields_are_left_out_but_flags_stay() {
        let json = Manifest::new("0.3.0", 1.0).to_json();
        assert!(!json.contains("python_version"));
        assert!(!json.contains("database_version"));
        assert!(json.contains("\"during_operations\": false"));
        assert!(json.contains("\"partial_backup\": false"));
        assert!(json.contains("\"format_version\": 1"));
    }

    #[test]
    fn rejects_broken_manifests() {
        let missing_version = parse(r#"{"timestamp": 1}"#).unwrap_err();
        assert!(
            missing_version
                .to_string()
                .contains("missing field `version`"),
            "{missing_version}"
        );
        assert!(parse("{not json")
            .unwrap_err()
            .to_string()
            .starts_with("Backup manifest is missing or invalid"));
        assert!(parse("[1]").is_err());
        assert!(parse(r#"{"version": "0.3.0", "timestamp": 1, "format_version": "1"}"#).is_err());
        assert!(parse(r#"{"version": "0.3.0", "timestamp": 1, "format_version": 0}"#).is_err());
    }

    #[test]
    fn refuses_a_newer_format() {
        let err = parse(r#"{"version": "9.0.0", "timestamp": 1, "format_version": 3, "files": 7}"#)
            .unwrap_err();
        assert!(matches!(
            err,
            ManifestError::NewerFormat {
                found: 3,
                supported: 2,
                ..
            }
        ));
        assert!(err.to_string().contains("format_version 3"));
    }

    #[test]
    fn formats_timestamps_like_python() {
        assert_eq!(format_timestamp(1234567890.0), "2009-02-13T23:31:30+00:00");
        assert_eq!(format_timestamp(1234567890.9), "2009-02-13T23:31:30+00:00");
    }

    #[test]
    fn save_creates_parents_and_load_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/metadata/manifest.json");
        let mut m = Manifest::new("0.3.0", 1761037200.5);
        m.description = Some("d".into());
        m.save(&path).unwrap();
        assert_eq!(Manifest::load(&path).unwrap(), m);
        assert!(matches!(
            Manifest::load(&dir.path().join("nope.json")),
            Err(ManifestError::Missing { .. })
        ));
    }
}

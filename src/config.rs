//! Settings: where the config file is, what it says, and what the environment and flags override.
//!
//! Precedence is defaults < file < environment < flags. The file is shared with the rest of
//! workspace-qdrant, so only the `backup:` section is checked strictly; `qdrant:` is read for
//! `url`, `api_key` and `ca_cert` and every other section is left alone.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};

use crate::checksum::Algorithm;
use crate::exit::{Classify, ExitCode};

pub const DEFAULT_QDRANT_URL: &str = "http://localhost:6333";
/// Where upstream's daemon (memexd) serves gRPC unless `grpc.host`/`grpc.port` say otherwise.
pub const DEFAULT_DAEMON_ADDRESS: &str = "127.0.0.1:50051";
/// Environment variables `WQM_BACKUP__<KEY>[__<SUBKEY>]` override `backup.<key>[.<subkey>]`.
pub const BACKUP_ENV_PREFIX: &str = "WQM_BACKUP__";

/// A snapshot of the environment, so settings can be computed (and tested) without touching
/// the process's own variables. Empty values count as unset.
#[derive(Clone, Debug, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    pub fn from_process() -> Self {
        Env {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn path(&self, key: &str) -> Option<PathBuf> {
        self.get(key).map(PathBuf::from)
    }

    fn home(&self) -> Result<PathBuf, ConfigError> {
        self.path("HOME").ok_or(ConfigError::NoHome)
    }

    fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.vars
            .iter()
            .filter(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Where a setting came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    File { path: PathBuf, line: Option<usize> },
    EnvVar(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File {
                path,
                line: Some(line),
            } => write!(f, "`{}` line {line}", path.display()),
            Origin::File { path, line: None } => write!(f, "`{}`", path.display()),
            Origin::EnvVar(name) => write!(f, "environment variable `{name}`"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file `{}` (from {from}) does not exist", path.display())]
    NotFound { path: PathBuf, from: &'static str },
    #[error("cannot read config file `{}`: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("config file `{}` is not valid YAML: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("unknown config key `{key}` in {origin}{}", suggestion.as_ref().map(|s| format!("; did you mean `{s}`?")).unwrap_or_default())]
    UnknownKey {
        key: String,
        suggestion: Option<String>,
        origin: Origin,
    },
    #[error("invalid value for `{key}` in {origin}: {message}")]
    InvalidValue {
        key: String,
        message: String,
        origin: Origin,
    },
    #[error("cannot locate the home directory: `HOME` is not set")]
    NoHome,
}

impl Classify for ConfigError {
    fn exit_code(&self) -> ExitCode {
        ExitCode::Usage
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            ConfigError::NotFound { .. } => "pass an existing file with --config, or unset `WQM_CONFIG_PATH` to use the default location".to_string(),
            ConfigError::UnknownKey { .. } | ConfigError::InvalidValue { .. } => {
                "every `backup:` key, its type and default are listed in config.example.yaml".to_string()
            }
            ConfigError::NoHome => "set `HOME`, or `WQM_CONFIG_PATH` and `WQM_DATA_DIR`".to_string(),
            _ => return None,
        })
    }
}

// ---- the `backup:` section -------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupSettings {
    /// Master switch: `false` makes `create` refuse.
    pub enabled: bool,
    pub auto_backup_before_restore: bool,
    /// Where `create` without PATH writes, and where safety backups go.
    pub default_backup_directory: Option<PathBuf>,
    pub retention_days: u32,
    /// `prune`'s rules for the safety backups `restore` makes.
    pub safety_retention: SafetyRetentionSettings,
    /// zstd-compress snapshots and databases.
    pub compression: bool,
    /// Incremental backups: snapshots and databases go to the chunk store of the backups
    /// directory, so a backup stores only what changed since the others.
    pub incremental: bool,
    pub validation: ValidationSettings,
    pub verification: VerificationSettings,
    pub metadata: MetadataSettings,
    pub transfer: TransferSettings,
    pub daemon: DaemonSettings,
}

impl Default for BackupSettings {
    fn default() -> Self {
        BackupSettings {
            enabled: true,
            auto_backup_before_restore: true,
            default_backup_directory: None,
            retention_days: 30,
            safety_retention: SafetyRetentionSettings::default(),
            compression: true,
            incremental: false,
            validation: ValidationSettings::default(),
            verification: VerificationSettings::default(),
            metadata: MetadataSettings::default(),
            transfer: TransferSettings::default(),
            daemon: DaemonSettings::default(),
        }
    }
}

/// How many of restore's safety backups `prune` keeps (`backup.safety_retention.*`); a safety
/// backup kept by either rule stays, and so does the newest valid one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SafetyRetentionSettings {
    /// Keep the newest N.
    pub keep_last: u32,
    /// Keep those made within this many days before the newest one.
    pub keep_within_days: u32,
}

impl Default for SafetyRetentionSettings {
    fn default() -> Self {
        SafetyRetentionSettings {
            keep_last: 3,
            keep_within_days: 7,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidationSettings {
    pub strict_version_check: bool,
    pub allow_dev_versions: bool,
    pub allow_patch_downgrade: bool,
    pub allow_minor_downgrade: bool,
    /// Days after which a backup counts as old.
    pub version_warning_threshold: u32,
    pub check_schema_compatibility: bool,
}

impl Default for ValidationSettings {
    fn default() -> Self {
        ValidationSettings {
            strict_version_check: true,
            allow_dev_versions: false,
            allow_patch_downgrade: false,
            allow_minor_downgrade: false,
            version_warning_threshold: 90,
            check_schema_compatibility: true,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerificationSettings {
    pub verify_after_backup: bool,
    pub verify_before_restore: bool,
    pub checksum_algorithm: Algorithm,
}

impl Default for VerificationSettings {
    fn default() -> Self {
        VerificationSettings {
            verify_after_backup: true,
            verify_before_restore: true,
            checksum_algorithm: Algorithm::Xxhash64,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetadataSettings {
    pub include_collection_stats: bool,
    pub include_system_info: bool,
    /// Free-form key/values copied into the manifest's `custom_metadata`.
    pub custom_metadata: serde_json::Map<String, serde_json::Value>,
}

impl Default for MetadataSettings {
    fn default() -> Self {
        MetadataSettings {
            include_collection_stats: true,
            include_system_info: true,
            custom_metadata: serde_json::Map::new(),
        }
    }
}

/// Timeouts and retries of the connection to Qdrant (`backup.transfer.*`).
#[derive(Clone, Debug)]
pub struct Timeouts {
    pub connect: Duration,
    /// How long a transfer may go without a byte before it is abandoned (and resumed).
    pub read_idle: Duration,
    /// How long Qdrant may take to create a snapshot (it sends nothing meanwhile). Recovering
    /// one from an upload has no limit while Qdrant answers.
    pub operation: Duration,
    /// A dropped download is resumed at least this many times in a row without progress ...
    pub retries: u32,
    /// ... and for at least this long (with exponential backoff), so Qdrant can restart.
    pub retry_for: Duration,
}

/// Timeouts and retries of transfers to and from Qdrant (seconds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransferSettings {
    pub connect_timeout: u64,
    /// Seconds without a byte before a transfer is abandoned (a download is then resumed), and
    /// that a recovering Qdrant may go without answering.
    pub read_timeout: u64,
    /// Seconds Qdrant may take to create a snapshot (it sends nothing meanwhile).
    pub operation_timeout: u64,
    /// A dropped download is resumed at least this many times in a row without progress ...
    pub retries: u32,
    /// ... and for at least this many seconds (backoff 0.25 s doubling to 8 s).
    pub retry_timeout: u64,
    /// Send the content's sha256 with each upload (`?checksum=`) so that Qdrant verifies it
    /// before recovering (wqm checks the stored file on its way either way).
    pub checksum: bool,
    /// Snapshots in flight at once: being made on a server (at most one per node) or
    /// downloading; on restore, uploads at once (at most one per node).
    pub parallel: std::num::NonZeroUsize,
}

impl Default for TransferSettings {
    fn default() -> Self {
        TransferSettings {
            connect_timeout: 10,
            read_timeout: 120,
            operation_timeout: 3600,
            retries: 3,
            retry_timeout: 60,
            checksum: true,
            parallel: std::num::NonZeroUsize::new(2).expect("2 is not zero"),
        }
    }
}

impl TransferSettings {
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(self.connect_timeout),
            read_idle: Duration::from_secs(self.read_timeout),
            operation: Duration::from_secs(self.operation_timeout),
            retries: self.retries,
            retry_for: Duration::from_secs(self.retry_timeout),
        }
    }
}

/// How restore finds, stops and starts the workspace-qdrant daemon (memexd).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonSettings {
    /// A shell command that exits 0 when the daemon runs (besides the `daemon.lock` check).
    pub status_command: Option<String>,
    /// A shell command that stops the daemon (e.g. `systemctl --user stop memexd`).
    pub stop_command: Option<String>,
    /// A shell command that starts it again.
    pub start_command: Option<String>,
    /// The daemon's gRPC address: it runs while something accepts connections there, and a
    /// started daemon is ready once something does. Unset: upstream's `grpc.host`:`grpc.port`
    /// of the same file, else 127.0.0.1:50051.
    pub address: String,
    /// The daemon's process name: it runs while a process of this name does.
    pub process_name: String,
    /// Seconds to wait for the daemon to stop, or to accept connections after a start.
    pub timeout: u64,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        DaemonSettings {
            status_command: None,
            stop_command: None,
            start_command: None,
            address: DEFAULT_DAEMON_ADDRESS.to_string(),
            process_name: "memexd".to_string(),
            timeout: 30,
        }
    }
}

// ---- the `qdrant:` section (shared; only our keys are read) ----------------------------------

#[derive(Clone, Debug, Default, Deserialize)]
struct QdrantFile {
    url: Option<String>,
    api_key: Option<String>,
    ca_cert: Option<PathBuf>,
    nodes: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
struct FileConfig {
    #[serde(default)]
    backup: Option<BackupSettings>,
    #[serde(default)]
    qdrant: Option<QdrantFile>,
    /// Upstream's `grpc:` section (`host`, `port`): where memexd listens.
    #[serde(default)]
    grpc: Option<Value>,
}

/// `grpc.host`:`grpc.port` of upstream's config, when the file sets either.
fn upstream_grpc_address(grpc: Option<&Value>) -> Option<String> {
    let grpc = grpc?.as_mapping()?;
    let text = |key: &str| match grpc.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let (host, port) = (text("host"), text("port"));
    if host.is_none() && port.is_none() {
        return None;
    }
    let (default_host, default_port) = DEFAULT_DAEMON_ADDRESS.rsplit_once(':')?;
    let host = host.unwrap_or_else(|| default_host.to_string());
    let port = port.unwrap_or_else(|| default_port.to_string());
    // An IPv6 host needs brackets in a socket address.
    Some(if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

/// How to reach Qdrant.
#[derive(Clone, Debug, PartialEq)]
pub struct QdrantSettings {
    pub url: String,
    pub api_key: Option<String>,
    /// A PEM file of extra trusted CA certificates for https.
    pub ca_cert: Option<PathBuf>,
    /// REST URLs of every node of a cluster (`url` is the entry point).
    pub nodes: Vec<String>,
}

/// Flags that override settings.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub qdrant_url: Option<String>,
}

/// Everything `wqm` needs to know about its surroundings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub backup: BackupSettings,
    pub qdrant: QdrantSettings,
    /// The config file read, if any; `create` copies it into the backup.
    pub config_file: Option<PathBuf>,
    /// Where `restore --with-config` writes: the config file read, else the default place.
    pub config_target: Option<PathBuf>,
    /// workspace-qdrant's data directory (holds `daemon.lock`, `search.db`, `graph.db`).
    pub data_dir: PathBuf,
    /// The SQLite state database.
    pub state_db: PathBuf,
}

impl Settings {
    /// Reads the config file and environment of `env`, then applies `overrides`.
    pub fn load(env: &Env, overrides: &Overrides) -> Result<Self, ConfigError> {
        let config_file = discover_config_file(env, overrides)?;
        let (file, backup_tree) = match &config_file {
            Some(path) => read_config_file(path)?,
            None => (FileConfig::default(), Value::Mapping(Mapping::new())),
        };
        let mut backup = file.backup.unwrap_or_default();
        let mut tree = backup_tree;
        for (name, raw) in env.with_prefix(BACKUP_ENV_PREFIX) {
            backup = apply_env_override(&mut tree, name, raw)?;
        }
        let address_set = tree
            .get("daemon")
            .and_then(|d| d.get("address"))
            .is_some_and(|a| !a.is_null());
        if !address_set {
            if let Some(address) = upstream_grpc_address(file.grpc.as_ref()) {
                backup.daemon.address = address;
            }
        }
        let home = env.home().ok();
        backup.default_backup_directory = backup
            .default_backup_directory
            .map(|p| expand_tilde(&p, home.as_deref()));

        let qdrant_file = file.qdrant.unwrap_or_default();
        let qdrant = QdrantSettings {
            url: overrides
                .qdrant_url
                .clone()
                .or_else(|| env.get("QDRANT_URL").map(str::to_string))
                .or(qdrant_file.url)
                .unwrap_or_else(|| DEFAULT_QDRANT_URL.to_string()),
            api_key: env
                .get("QDRANT_API_KEY")
                .map(str::to_string)
                .or(qdrant_file.api_key),
            ca_cert: env
                .path("QDRANT_CA_CERT")
                .or(qdrant_file.ca_cert)
                .map(|p| expand_tilde(&p, home.as_deref())),
            nodes: env
                .get("QDRANT_NODES")
                .map(|list| {
                    list.split(',')
                        .map(str::trim)
                        .filter(|u| !u.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .or(qdrant_file.nodes)
                .unwrap_or_default(),
        };

        let data_dir = match env.path("WQM_DATA_DIR") {
            Some(dir) => dir,
            None => match env.path("XDG_DATA_HOME") {
                Some(xdg) => xdg.join("workspace-qdrant"),
                None => env.home()?.join(".local/share/workspace-qdrant"),
            },
        };
        let state_db = env
            .path("WQM_DATABASE_PATH")
            .unwrap_or_else(|| data_dir.join("state.db"));

        Ok(Settings {
            backup,
            qdrant,
            config_target: config_file
                .clone()
                .or_else(|| config_dir(env).map(|d| d.join("config.yaml"))),
            config_file,
            data_dir,
            state_db,
        })
    }
}

/// `--config` > `WQM_CONFIG_PATH` > `<config dir>/config.yaml` > `<config dir>/config.yml`, where
/// the config dir is `WQM_CONFIG_DIR` > `$XDG_CONFIG_HOME/workspace-qdrant` > `~/.config/workspace-qdrant`.
/// No file at the default places means defaults; an explicitly named file must exist.
pub fn discover_config_file(
    env: &Env,
    overrides: &Overrides,
) -> Result<Option<PathBuf>, ConfigError> {
    let explicit = overrides
        .config
        .clone()
        .map(|p| (p, "--config"))
        .or_else(|| env.path("WQM_CONFIG_PATH").map(|p| (p, "WQM_CONFIG_PATH")));
    if let Some((path, from)) = explicit {
        return if path.is_file() {
            Ok(Some(path))
        } else {
            Err(ConfigError::NotFound { path, from })
        };
    }
    let Some(dir) = config_dir(env) else {
        return Ok(None);
    };
    Ok(["config.yaml", "config.yml"]
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file()))
}

/// `WQM_CONFIG_DIR` > `$XDG_CONFIG_HOME/workspace-qdrant` > `~/.config/workspace-qdrant`.
fn config_dir(env: &Env) -> Option<PathBuf> {
    env.path("WQM_CONFIG_DIR")
        .or_else(|| {
            env.path("XDG_CONFIG_HOME")
                .map(|xdg| xdg.join("workspace-qdrant"))
        })
        .or_else(|| {
            env.home()
                .ok()
                .map(|home| home.join(".config/workspace-qdrant"))
        })
}

fn read_config_file(path: &Path) -> Result<(FileConfig, Value), ConfigError> {
    let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let document: Value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_yaml::from_str(&text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?
    };
    let backup_tree = match &document {
        Value::Mapping(top) => top.get("backup").cloned().unwrap_or(Value::Null),
        _ => Value::Null,
    };
    let backup_tree = match backup_tree {
        Value::Null => Value::Mapping(Mapping::new()),
        other => other,
    };
    // The typed parse gives line numbers; the walk over the tree names the key and a suggestion.
    let typed: Result<FileConfig, _> = if document.is_null() {
        Ok(FileConfig::default())
    } else {
        serde_yaml::from_str(&text)
    };
    let line = |e: &serde_yaml::Error| e.location().map(|l| l.line());
    if let Some((key, suggestion)) = find_unknown_key(&backup_tree) {
        let line = typed.as_ref().err().and_then(line);
        return Err(ConfigError::UnknownKey {
            key,
            suggestion,
            origin: Origin::File {
                path: path.to_path_buf(),
                line,
            },
        });
    }
    let typed = typed.map_err(|e| {
        let (key, message) = split_serde_message(&e.to_string());
        ConfigError::InvalidValue {
            key,
            message,
            origin: Origin::File {
                path: path.to_path_buf(),
                line: line(&e),
            },
        }
    })?;
    Ok((typed, backup_tree))
}

/// serde_yaml says `backup.compression: invalid type: ... at line 3 column 16`; split off the key
/// and the location (reported separately).
fn split_serde_message(message: &str) -> (String, String) {
    let without_location = match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    };
    match without_location.split_once(": ") {
        Some((key, rest)) if !key.contains(' ') => (key.to_string(), rest.to_string()),
        _ => ("backup".to_string(), without_location.to_string()),
    }
}

/// Applies `WQM_BACKUP__A__B=value` to the `backup` tree and re-reads the settings from it.
fn apply_env_override(
    tree: &mut Value,
    name: &str,
    raw: &str,
) -> Result<BackupSettings, ConfigError> {
    let origin = Origin::EnvVar(name.to_string());
    let segments: Vec<String> = name[BACKUP_ENV_PREFIX.len()..]
        .split("__")
        .map(str::to_ascii_lowercase)
        .collect();
    let key = format!("backup.{}", segments.join("."));
    let known = schema_paths();
    if !known.contains(&key) {
        return Err(ConfigError::UnknownKey {
            suggestion: suggest(&key, &known),
            key,
            origin,
        });
    }
    let value: Value = serde_yaml::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
    let mut node = &mut *tree;
    for (i, segment) in segments.iter().enumerate() {
        let map = match node {
            Value::Mapping(map) => map,
            other => {
                *other = Value::Mapping(Mapping::new());
                other.as_mapping_mut().expect("just made a mapping")
            }
        };
        let entry = map
            .entry(Value::String(segment.clone()))
            .or_insert(Value::Null);
        if i + 1 == segments.len() {
            *entry = value.clone();
        }
        node = entry;
    }
    serde_yaml::from_value(tree.clone()).map_err(|e| ConfigError::InvalidValue {
        key: key.clone(),
        message: split_serde_message(&e.to_string()).1,
        origin,
    })
}

/// The default `backup:` section as a YAML tree: the single source of the valid key names.
fn schema() -> Value {
    serde_yaml::to_value(BackupSettings::default()).expect("defaults serialize")
}

/// Every valid key, as `backup.a` and `backup.a.b`. A mapping whose default is empty
/// (`custom_metadata`) is free-form and counts as one key.
pub fn schema_paths() -> Vec<String> {
    fn walk(value: &Value, prefix: &str, out: &mut Vec<String>) {
        if let Value::Mapping(map) = value {
            for (k, v) in map {
                let path = format!("{prefix}.{}", k.as_str().unwrap_or_default());
                match v {
                    Value::Mapping(inner) if !inner.is_empty() => walk(v, &path, out),
                    _ => out.push(path),
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(&schema(), "backup", &mut out);
    out
}

/// The first key of `tree` (a `backup:` section) that the schema does not know, with the
/// closest valid key.
fn find_unknown_key(tree: &Value) -> Option<(String, Option<String>)> {
    fn walk(value: &Value, schema: &Value, prefix: &str) -> Option<String> {
        let (Value::Mapping(map), Value::Mapping(known)) = (value, schema) else {
            return None;
        };
        for (k, v) in map {
            let name = match k {
                Value::String(s) => s.clone(),
                other => serde_yaml::to_string(other)
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            };
            let path = format!("{prefix}.{name}");
            match known.get(k) {
                None => return Some(path),
                Some(Value::Mapping(inner)) if !inner.is_empty() => {
                    if let Some(found) = walk(v, &known[k], &path) {
                        return Some(found);
                    }
                }
                Some(_) => {}
            }
        }
        None
    }
    let key = walk(tree, &schema(), "backup")?;
    let suggestion = suggest(&key, &schema_paths());
    Some((key, suggestion))
}

/// The valid key closest to `key`: the same leaf under another parent, else a near spelling.
fn suggest(key: &str, known: &[String]) -> Option<String> {
    let leaf = |k: &str| k.rsplit('.').next().unwrap_or(k).to_string();
    let parent = |k: &str| {
        k.rsplit_once('.')
            .map(|(p, _)| p.to_string())
            .unwrap_or_default()
    };
    let (wanted_leaf, wanted_parent) = (leaf(key), parent(key));
    if let Some(same_leaf) = known.iter().find(|k| leaf(k) == wanted_leaf) {
        return Some(same_leaf.clone());
    }
    known
        .iter()
        .map(|k| {
            let mut score = strsim::jaro_winkler(&leaf(k), &wanted_leaf);
            if parent(k) == wanted_parent {
                score += 0.05;
            }
            (score, k)
        })
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k.clone())
}

/// `~/x` → `$HOME/x`.
fn expand_tilde(path: &Path, home: Option<&Path>) -> PathBuf {
    match (path.strip_prefix("~"), home) {
        (Ok(rest), Some(home)) => home.join(rest),
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        path
    }

    fn load_with(env: &[(&str, &str)], overrides: Overrides) -> Result<Settings, ConfigError> {
        Settings::load(&Env::from_pairs(env.iter().copied()), &overrides)
    }

    fn load_file(text: &str) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "c.yaml", text);
        load_with(
            &[("HOME", "/home/u")],
            Overrides {
                config: Some(path),
                ..Overrides::default()
            },
        )
    }

    #[test]
    fn defaults_are_the_seeds() {
        let s = load_with(&[("HOME", "/home/u")], Overrides::default()).unwrap();
        assert_eq!(s.backup, BackupSettings::default());
        assert!(s.backup.enabled && s.backup.compression && s.backup.auto_backup_before_restore);
        assert_eq!(s.backup.retention_days, 30);
        assert_eq!(s.backup.validation.version_warning_threshold, 90);
        assert_eq!(
            s.backup.verification.checksum_algorithm,
            Algorithm::Xxhash64
        );
        assert_eq!(s.qdrant.url, DEFAULT_QDRANT_URL);
        assert_eq!(s.qdrant.api_key, None);
        assert_eq!(s.config_file, None);
        assert_eq!(
            s.data_dir,
            Path::new("/home/u/.local/share/workspace-qdrant")
        );
        assert_eq!(
            s.state_db,
            Path::new("/home/u/.local/share/workspace-qdrant/state.db")
        );
    }

    #[test]
    fn discovers_the_config_file_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let home = d.join("home");
        let env_home = [("HOME", home.to_str().unwrap())];
        assert_eq!(
            discover_config_file(&Env::from_pairs(env_home), &Overrides::default()).unwrap(),
            None
        );

        let yml = write(&home, ".config/workspace-qdrant/config.yml", "");
        assert_eq!(
            discover_config_file(&Env::from_pairs(env_home), &Overrides::default()).unwrap(),
            Some(yml)
        );
        let yaml = write(&home, ".config/workspace-qdrant/config.yaml", "");
        assert_eq!(
            discover_config_file(&Env::from_pairs(env_home), &Overrides::default()).unwrap(),
            Some(yaml)
        );

        let xdg = d.join("xdg");
        let xdg_file = write(&xdg, "workspace-qdrant/config.yaml", "");
        let env = Env::from_pairs([
            ("HOME", home.to_str().unwrap()),
            ("XDG_CONFIG_HOME", xdg.to_str().unwrap()),
        ]);
        assert_eq!(
            discover_config_file(&env, &Overrides::default()).unwrap(),
            Some(xdg_file)
        );

        let own = d.join("own");
        let own_file = write(&own, "config.yml", "");
        let env = Env::from_pairs([
            ("HOME", home.to_str().unwrap()),
            ("XDG_CONFIG_HOME", xdg.to_str().unwrap()),
            ("WQM_CONFIG_DIR", own.to_str().unwrap()),
        ]);
        assert_eq!(
            discover_config_file(&env, &Overrides::default()).unwrap(),
            Some(own_file)
        );

        let named = write(d, "named.yaml", "");
        let env = Env::from_pairs([
            ("HOME", home.to_str().unwrap()),
            ("WQM_CONFIG_PATH", named.to_str().unwrap()),
        ]);
        assert_eq!(
            discover_config_file(&env, &Overrides::default()).unwrap(),
            Some(named.clone())
        );
        let flag = write(d, "flag.yaml", "");
        let overrides = Overrides {
            config: Some(flag.clone()),
            ..Overrides::default()
        };
        assert_eq!(discover_config_file(&env, &overrides).unwrap(), Some(flag));

        let env = Env::from_pairs([("WQM_CONFIG_PATH", "/nonexistent/c.yaml")]);
        let err = discover_config_file(&env, &Overrides::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config file `/nonexistent/c.yaml` (from WQM_CONFIG_PATH) does not exist"
        );
    }

    #[test]
    fn reads_the_backup_section_and_ignores_other_sections() {
        let s = load_file(
            "qdrant:\n  url: http://q:6333\n  api_key: k\n  timeout: 30s\n  prefer_grpc: true\n\
             grpc:\n  host: 127.0.0.1\nbackup:\n  compression: false\n  default_backup_directory: ~/backups\n\
             \x20 verification:\n    checksum_algorithm: sha256\n  metadata:\n    custom_metadata:\n      environment: production\n",
        )
        .unwrap();
        assert!(!s.backup.compression);
        assert_eq!(
            s.backup.default_backup_directory.as_deref(),
            Some(Path::new("/home/u/backups"))
        );
        assert_eq!(s.backup.verification.checksum_algorithm, Algorithm::Sha256);
        assert_eq!(
            s.backup.metadata.custom_metadata["environment"],
            "production"
        );
        assert!(
            s.backup.verification.verify_after_backup,
            "unset keys keep their defaults"
        );
        assert_eq!(s.qdrant.url, "http://q:6333");
        assert_eq!(s.qdrant.api_key.as_deref(), Some("k"));
    }

    #[test]
    fn an_empty_file_or_section_means_defaults() {
        assert_eq!(load_file("").unwrap().backup, BackupSettings::default());
        assert_eq!(
            load_file("backup:\n").unwrap().backup,
            BackupSettings::default()
        );
    }

    #[test]
    fn unknown_keys_name_the_key_the_line_and_the_closest_valid_one() {
        let err = load_file("qdrant:\n  url: x\nbackup:\n  enabled: true\n  compresion: false\n")
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("unknown config key `backup.compresion` in `"),
            "{text}"
        );
        assert!(
            text.ends_with("line 5; did you mean `backup.compression`?"),
            "{text}"
        );

        let err = load_file("backup:\n  validation:\n    strict_version_chek: true\n").unwrap_err();
        assert!(err
            .to_string()
            .contains("`backup.validation.strict_version_chek`"));
        assert!(
            err.to_string()
                .contains("did you mean `backup.validation.strict_version_check`?"),
            "{err}"
        );

        // The right key under the wrong parent.
        let err = load_file("backup:\n  checksum_algorithm: md5\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("did you mean `backup.verification.checksum_algorithm`?"),
            "{err}"
        );

        let err = load_file("backup:\n  zzz: 1\n").unwrap_err();
        assert!(err.to_string().ends_with("line 2"), "{err}");
        assert_eq!(err_code(&err), ExitCode::Usage);
    }

    fn err_code(err: &ConfigError) -> ExitCode {
        err.exit_code()
    }

    #[test]
    fn wrong_types_name_the_key_the_expected_type_and_the_line() {
        let err = load_file("backup:\n  enabled: true\n  compression: yes\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("invalid value for `backup.compression` in `"),
            "{text}"
        );
        assert!(text.contains("line 3"), "{text}");
        assert!(text.contains("expected a boolean"), "{text}");

        let err = load_file("backup:\n  retention_days: soon\n").unwrap_err();
        assert!(
            err.to_string().contains("`backup.retention_days`") && err.to_string().contains("u32"),
            "{err}"
        );

        let err =
            load_file("backup:\n  verification:\n    checksum_algorithm: crc32\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("`backup.verification.checksum_algorithm`"),
            "{err}"
        );
        assert!(err.to_string().contains("xxhash64"), "{err}");

        let err = load_file("backup: [1]\n").unwrap_err();
        assert!(err.to_string().contains("`backup`"), "{err}");

        let err = load_file("backup:\n  a: [\n").unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
    }

    #[test]
    fn environment_overrides_the_file_and_flags_override_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "c.yaml",
            "qdrant:\n  url: http://file:6333\n  api_key: file-key\nbackup:\n  compression: true\n",
        );
        let p = path.to_str().unwrap();
        let s = load_with(
            &[
                ("HOME", "/h"),
                ("WQM_CONFIG_PATH", p),
                ("QDRANT_URL", "http://env:6333"),
                ("QDRANT_API_KEY", "env-key"),
                ("WQM_BACKUP__COMPRESSION", "false"),
                ("WQM_BACKUP__VALIDATION__ALLOW_DEV_VERSIONS", "true"),
                ("WQM_BACKUP__DEFAULT_BACKUP_DIRECTORY", "/var/backups/wqm"),
            ],
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(s.qdrant.url, "http://env:6333");
        assert_eq!(s.qdrant.api_key.as_deref(), Some("env-key"));
        assert!(!s.backup.compression);
        assert!(s.backup.validation.allow_dev_versions);
        assert_eq!(
            s.backup.default_backup_directory.as_deref(),
            Some(Path::new("/var/backups/wqm"))
        );

        let s = load_with(
            &[
                ("HOME", "/h"),
                ("WQM_CONFIG_PATH", p),
                ("QDRANT_URL", "http://env:6333"),
            ],
            Overrides {
                qdrant_url: Some("http://flag:6333".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(s.qdrant.url, "http://flag:6333");
        assert_eq!(s.qdrant.api_key.as_deref(), Some("file-key"));
    }

    #[test]
    fn the_daemon_address_follows_upstreams_grpc_section_unless_set() {
        assert_eq!(
            load_file("").unwrap().backup.daemon.address,
            DEFAULT_DAEMON_ADDRESS
        );
        assert_eq!(
            load_file("grpc:\n  host: 127.0.0.1\n  port: 50052\n")
                .unwrap()
                .backup
                .daemon
                .address,
            "127.0.0.1:50052"
        );
        assert_eq!(
            load_file("grpc:\n  port: \"50053\"\n")
                .unwrap()
                .backup
                .daemon
                .address,
            "127.0.0.1:50053"
        );
        assert_eq!(
            load_file("grpc:\n  host: \"::1\"\n")
                .unwrap()
                .backup
                .daemon
                .address,
            "[::1]:50051"
        );
        assert_eq!(
            load_file("grpc:\n  port: 50052\nbackup:\n  daemon:\n    address: 127.0.0.1:6000\n")
                .unwrap()
                .backup
                .daemon
                .address,
            "127.0.0.1:6000"
        );
    }

    #[test]
    fn cluster_nodes_come_from_the_file_or_the_environment() {
        let s = load_file("qdrant:\n  nodes: [\"http://a:6333\", \"http://b:6333\"]\n").unwrap();
        assert_eq!(s.qdrant.nodes, ["http://a:6333", "http://b:6333"]);
        let s = load_with(
            &[
                ("HOME", "/h"),
                ("QDRANT_NODES", " http://x:6333, ,http://y:6333 "),
            ],
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(s.qdrant.nodes, ["http://x:6333", "http://y:6333"]);
        assert!(load_with(&[("HOME", "/h")], Overrides::default())
            .unwrap()
            .qdrant
            .nodes
            .is_empty());
    }

    #[test]
    fn bad_environment_overrides_name_the_variable() {
        let err = load_with(
            &[("HOME", "/h"), ("WQM_BACKUP__COMPRESION", "false")],
            Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown config key `backup.compresion` in environment variable `WQM_BACKUP__COMPRESION`; did you mean `backup.compression`?"
        );
        let err = load_with(
            &[("HOME", "/h"), ("WQM_BACKUP__RETENTION_DAYS", "-3")],
            Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("invalid value for `backup.retention_days` in environment variable `WQM_BACKUP__RETENTION_DAYS`"), "{err}");
    }

    #[test]
    fn state_db_discovery() {
        let s = load_with(
            &[("HOME", "/h"), ("XDG_DATA_HOME", "/xdg")],
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(s.state_db, Path::new("/xdg/workspace-qdrant/state.db"));
        let s = load_with(
            &[
                ("HOME", "/h"),
                ("XDG_DATA_HOME", "/xdg"),
                ("WQM_DATA_DIR", "/data"),
            ],
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(s.data_dir, Path::new("/data"));
        assert_eq!(s.state_db, Path::new("/data/state.db"));
        let s = load_with(
            &[("WQM_DATA_DIR", "/data"), ("WQM_DATABASE_PATH", "/db/s.db")],
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(s.state_db, Path::new("/db/s.db"));
        assert!(matches!(
            load_with(&[], Overrides::default()),
            Err(ConfigError::NoHome)
        ));
    }

    #[test]
    fn the_example_config_documents_every_key_with_its_default() {
        let text = include_str!("../config.example.yaml");
        let document: Value = serde_yaml::from_str(text).unwrap();
        let example: BackupSettings = serde_yaml::from_value(document["backup"].clone()).unwrap();
        assert_eq!(example, BackupSettings::default());
        let mut documented = Vec::new();
        fn walk(v: &Value, prefix: &str, out: &mut Vec<String>) {
            if let Value::Mapping(m) = v {
                for (k, v) in m {
                    let p = format!("{prefix}.{}", k.as_str().unwrap());
                    match v {
                        Value::Mapping(inner)
                            if !inner.is_empty() && !p.ends_with("custom_metadata") =>
                        {
                            walk(v, &p, out)
                        }
                        _ => out.push(p),
                    }
                }
            }
        }
        walk(&document["backup"], "backup", &mut documented);
        assert_eq!(documented, schema_paths());
    }
}

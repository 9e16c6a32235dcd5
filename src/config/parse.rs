//! Reading the config file: YAML syntax, the strictly checked `backup:` section (unknown keys
//! with their line and the closest valid key, wrong types), and the errors settings can have.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_norway::{Mapping, Value};

use super::schema::{schema, schema_paths, BackupSettings};
use crate::exit::{Classify, ExitCode};

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

/// The `qdrant:` section (shared with the rest of workspace-qdrant; only wqm's keys are read).
#[derive(Clone, Debug, Default, Deserialize)]
pub(super) struct QdrantFile {
    pub(super) url: Option<String>,
    pub(super) api_key: Option<String>,
    pub(super) ca_cert: Option<PathBuf>,
    pub(super) nodes: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct FileConfig {
    #[serde(default)]
    pub(super) backup: Option<BackupSettings>,
    #[serde(default)]
    pub(super) qdrant: Option<QdrantFile>,
    /// Upstream's `grpc:` section (`host`, `port`): where memexd listens.
    #[serde(default)]
    pub(super) grpc: Option<Value>,
}

pub(super) fn read_config_file(path: &Path) -> Result<(FileConfig, Value), ConfigError> {
    let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let document: Value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_norway::from_str(&text).map_err(|e| ConfigError::Syntax {
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
        serde_norway::from_str(&text)
    };
    let line = |e: &serde_norway::Error| e.location().map(|l| l.line());
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

/// serde_norway says `backup.compression: invalid type: ... at line 3 column 16`; split off the key
/// and the location (reported separately).
pub(super) fn split_serde_message(message: &str) -> (String, String) {
    let without_location = match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    };
    match without_location.split_once(": ") {
        Some((key, rest)) if !key.contains(' ') => (key.to_string(), rest.to_string()),
        _ => ("backup".to_string(), without_location.to_string()),
    }
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
                other => serde_norway::to_string(other)
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
pub(super) fn suggest(key: &str, known: &[String]) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::tests::load_file;
    use super::*;
    use crate::checksum::Algorithm;

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
}

//! What overrides the config file: the environment (`Env`, a snapshot of it, and its
//! `WQM_BACKUP__*` overrides of `backup:` keys) and the flags (`Overrides`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_norway::{Mapping, Value};

use super::parse::{split_serde_message, suggest, ConfigError, Origin};
use super::schema::{schema_paths, BackupSettings};

/// Environment variables `WQM_BACKUP__<KEY>[__<SUBKEY>]` override `backup.<key>[.<subkey>]`.
pub const BACKUP_ENV_PREFIX: &str = "WQM_BACKUP__";

/// Flags that override settings.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub qdrant_url: Option<String>,
}

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

    pub(super) fn path(&self, key: &str) -> Option<PathBuf> {
        self.get(key).map(PathBuf::from)
    }

    pub(super) fn home(&self) -> Result<PathBuf, ConfigError> {
        self.path("HOME").ok_or(ConfigError::NoHome)
    }

    pub(super) fn with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.vars
            .iter()
            .filter(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Applies `WQM_BACKUP__A__B=value` to the `backup` tree and re-reads the settings from it.
pub(super) fn apply_env_override(
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
    let value: Value =
        serde_norway::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
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
    serde_norway::from_value(tree.clone()).map_err(|e| ConfigError::InvalidValue {
        key: key.clone(),
        message: split_serde_message(&e.to_string()).1,
        origin,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::tests::{load_with, write};
    use super::Overrides;

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
}

//! Settings: where the config file is, what it says, and what the environment and flags override.
//!
//! Precedence is defaults < file < environment < flags. The file is shared with the rest of
//! workspace-qdrant, so only the `backup:` section is checked strictly; `qdrant:` is read for
//! `url`, `api_key` and `ca_cert` and every other section is left alone.

mod discovery;
mod env;
mod parse;
mod qdrant;
mod schema;

use std::path::PathBuf;

use serde_norway::{Mapping, Value};

pub use discovery::discover_config_file;
pub use env::{Env, Overrides, BACKUP_ENV_PREFIX};
pub use parse::{ConfigError, Origin};
pub use qdrant::{QdrantSettings, DEFAULT_QDRANT_URL};
pub use schema::{
    schema_paths, BackupSettings, DaemonSettings, MetadataSettings, Timeouts, TransferSettings,
    ValidationSettings, VerificationSettings, DEFAULT_DAEMON_ADDRESS,
};

use discovery::{config_dir, data_paths, expand_tilde};
use env::apply_env_override;
use parse::{read_config_file, FileConfig};

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

        let qdrant = QdrantSettings::resolve(
            file.qdrant.unwrap_or_default(),
            env,
            overrides,
            home.as_deref(),
        );
        let (data_dir, state_db) = data_paths(env)?;

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

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use super::*;
    use crate::checksum::Algorithm;

    pub(super) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        path
    }

    pub(super) fn load_with(
        env: &[(&str, &str)],
        overrides: Overrides,
    ) -> Result<Settings, ConfigError> {
        Settings::load(&Env::from_pairs(env.iter().copied()), &overrides)
    }

    pub(super) fn load_file(text: &str) -> Result<Settings, ConfigError> {
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
}

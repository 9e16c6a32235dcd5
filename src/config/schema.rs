//! The `backup:` section: its keys, their types and defaults (the one source of the valid key
//! names), and the timeouts the transfer settings make.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_norway::Value;

use crate::checksum::Algorithm;

/// Where upstream's daemon (memexd) serves gRPC unless `grpc.host`/`grpc.port` say otherwise.
pub const DEFAULT_DAEMON_ADDRESS: &str = "127.0.0.1:50051";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupSettings {
    /// Master switch: `false` makes `create` refuse.
    pub enabled: bool,
    pub auto_backup_before_restore: bool,
    /// Where `create` without PATH writes, `prune` and `cleanup` work without DIR (a local
    /// directory or `s3://BUCKET/PREFIX`), and where safety backups go when it is local.
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
    pub s3: S3Settings,
    pub encryption: EncryptionSettings,
}

impl BackupSettings {
    /// `default_backup_directory` when it is a local directory, not `s3://`: safety backups are
    /// written only locally.
    pub fn local_backup_directory(&self) -> Option<&std::path::Path> {
        let dir = self.default_backup_directory.as_deref()?;
        let local = match dir.to_str() {
            Some(given) => matches!(
                crate::backend::Location::parse(given),
                Ok(crate::backend::Location::Local(_))
            ),
            None => true,
        };
        local.then_some(dir)
    }
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
            s3: S3Settings::default(),
            encryption: EncryptionSettings::default(),
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
    /// An incremental create compares 1/N of the chunks it reuses with its data (a rotating
    /// group by day), so each is compared once every N days; 1: all of them every night.
    pub compare_reused_cycle: std::num::NonZeroU32,
}

impl Default for VerificationSettings {
    fn default() -> Self {
        VerificationSettings {
            verify_after_backup: true,
            verify_before_restore: true,
            checksum_algorithm: Algorithm::Xxhash64,
            compare_reused_cycle: std::num::NonZeroU32::new(7).expect("7 is not zero"),
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

/// How `s3://` locations are reached (`backup.s3.*`): each set value wins over the AWS chain
/// (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_PROFILE`, `~/.aws/{config,credentials}`). Credentials
/// are not settings: they come from that chain only, never from wqm's config file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Settings {
    /// The server (`https://…`, or `http://…` for one on this machine); unset: AWS itself.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// The profile of `~/.aws/credentials` and `~/.aws/config` to take credentials from.
    pub profile: Option<String>,
}

impl S3Settings {
    /// The options an S3 client is built with: these settings, the rest from the AWS chain.
    pub fn options(&self) -> crate::backend::S3Options {
        crate::backend::S3Options {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            profile: self.profile.clone(),
            ..Default::default()
        }
    }
}

/// Encrypted repositories (`backup.encryption.*`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncryptionSettings {
    /// A command whose output is the repository's password (run without a shell, as restic
    /// runs `--password-command`), asked after `--password-file`, `WQM_BACKUP_PASSWORD_FILE` and
    /// `WQM_BACKUP_PASSWORD`.
    pub password_command: Option<String>,
}

/// The default `backup:` section as a YAML tree: the single source of the valid key names.
pub(super) fn schema() -> Value {
    serde_norway::to_value(BackupSettings::default()).expect("defaults serialize")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_documents_every_key_with_its_default() {
        let text = include_str!("../../config.example.yaml");
        let document: Value = serde_norway::from_str(text).unwrap();
        let example: BackupSettings = serde_norway::from_value(document["backup"].clone()).unwrap();
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

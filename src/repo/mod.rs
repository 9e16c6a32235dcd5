//! A repository's own objects (issue 21): its config, which says whether its backups are
//! encrypted, and, when they are, the key objects that wrap its master key, one per password.
//! Everything goes through the `Backend` interface, so a local backups directory and
//! `s3://BUCKET/PREFIX` behave alike.
//!
//! ```text
//! .wqm-repo/config          plain JSON: {"version": 1, "encrypted": true, "master_key_id": …}
//! .wqm-repo/keys/<key_id>   one key object per password (crypto::KeyObject, KDF params inside)
//! ```
//!
//! `init` writes the key object first and the config last with `save_new`, so of two racing
//! inits one wins and the other removes its key and refuses; a killed init leaves at most a key
//! object nothing names (a key that opens another master key than the config's is skipped).
//! The commands open every encrypted repository they touch before anything else
//! (`commands::guard`: `read_config`, then `Unlocked::open` with the password) and hand its
//! master key to the storage seam (`store::seal`). `password` reads passwords from the
//! non-interactive sources; prompting is the edge's.

pub mod password;

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, BackendError, Name};
use crate::crypto::{CryptoError, KdfParams, KeyLabel, KeyObject, Keyring, MasterKey, Password};
use crate::exit::{Classify, ExitCode};
use crate::store::{Scan, Seen};

/// The repository's own directory (hidden: no backup can be named so, `list` never shows it).
pub use crate::format::layout::REPO_DIR;
/// The config object.
pub const CONFIG: &str = crate::format::layout::REPO_CONFIG;
/// Where the key objects are, one per password.
pub const KEYS: &str = ".wqm-repo/keys/";
/// The config format this wqm writes and reads.
pub const FORMAT: u32 = 1;
/// A config larger than this is refused before it is parsed.
const CONFIG_LIMIT: u64 = 64 * 1024;

/// Why a repository operation refused. Names the repository, never a password or a key.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("`{repository}` is not a repository: it has no `{CONFIG}`")]
    NotARepository { repository: String },
    #[error("`{repository}` is a repository already (encrypted: `{encrypted}`)")]
    AlreadyRepository { repository: String, encrypted: bool },
    #[error("`{repository}` holds backups already (`{example}`); a repository is made empty")]
    HoldsBackups { repository: String, example: String },
    #[error("`{repository}` is not encrypted: it has no keys")]
    NotEncrypted { repository: String },
    /// An encrypted repository, and no password to open it with (what its config says).
    #[error("`{repository}` is encrypted; password needed (repository format `{version}`, master key `{master_key_id}`)")]
    Encrypted {
        repository: String,
        version: u32,
        master_key_id: String,
    },
    #[error("`{repository}` has repository format `{version}`; this wqm knows format `{FORMAT}`")]
    NewerFormat { repository: String, version: u32 },
    #[error("`{repository}`'s config `{CONFIG}` is unreadable: {reason}")]
    BadConfig { repository: String, reason: String },
    #[error("`{repository}`'s server does not honour conditional writes (`If-None-Match: *`), so two runs could overwrite each other's objects")]
    NoConditionalPut { repository: String },
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl Classify for RepoError {
    fn exit_code(&self) -> ExitCode {
        match self {
            RepoError::NotARepository { .. }
            | RepoError::AlreadyRepository { .. }
            | RepoError::HoldsBackups { .. }
            | RepoError::NotEncrypted { .. }
            | RepoError::Encrypted { .. }
            | RepoError::NoConditionalPut { .. } => ExitCode::Usage,
            RepoError::NewerFormat { .. } => ExitCode::Incompatible,
            RepoError::BadConfig { .. } => ExitCode::InvalidBackup,
            RepoError::Backend(e) => e.exit_code(),
            RepoError::Crypto(e) => e.exit_code(),
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            RepoError::NotARepository { repository } => format!("make it one with `wqm backup init {repository} --encrypt` (or without `--encrypt`)"),
            RepoError::AlreadyRepository { repository, encrypted: true } => format!("it is ready; `wqm backup key list {repository}` shows its keys"),
            RepoError::AlreadyRepository { .. } => "it is ready; a repository's encryption cannot be changed: make a new one with `wqm backup init DIR --encrypt`".to_string(),
            RepoError::HoldsBackups { .. } => "make the repository in an empty directory or a new prefix (`wqm backup init DIR --encrypt`); the backups here stay as they are".to_string(),
            RepoError::NotEncrypted { .. } => "keys belong to encrypted repositories: make one with `wqm backup init DIR --encrypt`".to_string(),
            RepoError::Encrypted { .. } => format!("give its password: {}", crate::crypto::PASSWORD_WAYS),
            RepoError::NewerFormat { .. } => "use the wqm that made the repository, or a newer one".to_string(),
            RepoError::BadConfig { .. } => "the config was damaged or written by something else; restore it from another copy of the repository".to_string(),
            RepoError::NoConditionalPut { .. } => "use an S3 server that supports conditional writes (AWS S3, MinIO, SeaweedFS)".to_string(),
            RepoError::Backend(e) => return e.hint(),
            RepoError::Crypto(e) => return e.hint(),
        })
    }
}

/// The repository's config (`.wqm-repo/config`), plain JSON: nothing secret in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoConfig {
    pub version: u32,
    pub encrypted: bool,
    /// The master key's id (as every encrypted object's header carries it): a key object that
    /// opens another master key is not this repository's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_key_id: Option<String>,
    /// RFC 3339, UTC.
    pub created: String,
    /// The wqm that made it (`wqm 0.3.0`).
    pub created_by: String,
}

impl RepoConfig {
    fn new(master_key_id: Option<String>) -> Self {
        RepoConfig {
            version: FORMAT,
            encrypted: master_key_id.is_some(),
            master_key_id,
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            created_by: format!("wqm {}", crate::VERSION),
        }
    }

    /// Parses a stored config: a newer format is refused, an encrypted one must name its
    /// master key.
    pub fn parse(bytes: &[u8], repository: &str) -> Result<Self, RepoError> {
        let bad = |reason: String| RepoError::BadConfig {
            repository: repository.to_string(),
            reason,
        };
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let version: Version = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if version.version != FORMAT {
            return Err(RepoError::NewerFormat {
                repository: repository.to_string(),
                version: version.version,
            });
        }
        let config: RepoConfig = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        match (&config.master_key_id, config.encrypted) {
            (Some(id), true) if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {}
            (None, false) => {}
            (Some(_), true) => return Err(bad("`master_key_id` is not 32 hex digits".into())),
            (None, true) => return Err(bad("an encrypted repository names no master key".into())),
            (Some(_), false) => {
                return Err(bad("an unencrypted repository names a master key".into()))
            }
        }
        Ok(config)
    }

    fn to_json(&self) -> Vec<u8> {
        let mut text = serde_json::to_vec_pretty(self).expect("a config serializes");
        text.push(b'\n');
        text
    }
}

fn name(text: &str) -> Name {
    Name::new(text).expect("wqm's own object names are valid")
}

/// The repository's config, or `None` when it is no repository.
pub async fn read_config(
    backend: &dyn Backend,
    repository: &str,
) -> Result<Option<RepoConfig>, RepoError> {
    let config = name(CONFIG);
    let size = match backend.stat(&config).await {
        Ok(info) => info.size,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if size > CONFIG_LIMIT {
        return Err(RepoError::BadConfig {
            repository: repository.to_string(),
            reason: format!("{size} bytes, more than a config ever holds"),
        });
    }
    let bytes = load_small(backend, &config)
        .await?
        .map_err(|e| RepoError::BadConfig {
            repository: repository.to_string(),
            reason: e.to_string(),
        })?;
    RepoConfig::parse(&bytes, repository).map(Some)
}

/// A small object (config, key object), at most `CONFIG_LIMIT` + 1 bytes of it: the backend's
/// refusal, or what reading its bytes gave.
async fn load_small(
    backend: &dyn Backend,
    name: &Name,
) -> Result<std::io::Result<Vec<u8>>, BackendError> {
    let data = backend.load(name, Some(0..CONFIG_LIMIT + 1)).await?;
    Ok(crate::backend::collect(data).await)
}

/// What `init` made.
#[derive(Debug)]
pub struct Initialized {
    pub config: RepoConfig,
    /// The first key object, when encrypted.
    pub key: Option<KeyObject>,
}

/// Makes a repository in `backend` (`check_free` passed): refused where there is one already;
/// with `encryption`, a new master key wrapped by the password in the first key object, saved
/// before the config (`save_new`: of two racing inits one wins, the other removes its key).
pub async fn init(
    backend: &dyn Backend,
    repository: &str,
    encryption: Option<(&Password, KdfParams)>,
) -> Result<Initialized, RepoError> {
    if let Some(config) = read_config(backend, repository).await? {
        return Err(RepoError::AlreadyRepository {
            repository: repository.to_string(),
            encrypted: config.encrypted,
        });
    }
    let (config, key) = match encryption {
        None => (RepoConfig::new(None), None),
        Some((password, params)) => {
            let (keyring, master) = Keyring::init(password, params, KeyLabel::current())?;
            let key = keyring.keys()[0].clone();
            backend
                .save_new(&key_name(key.key_id()), Bytes::from(key.to_json()))
                .await?;
            (RepoConfig::new(Some(master.id_hex())), Some(key))
        }
    };
    match backend
        .save_new(&name(CONFIG), Bytes::from(config.to_json()))
        .await
    {
        Ok(()) => Ok(Initialized { config, key }),
        Err(e) => {
            if let Some(key) = &key {
                // Lost a race (or failed): the key wraps a master key no config names.
                let _ = backend.remove(&key_name(key.key_id())).await;
            }
            match e {
                BackendError::AlreadyExists { .. } => Err(RepoError::AlreadyRepository {
                    repository: repository.to_string(),
                    encrypted: read_config(backend, repository)
                        .await?
                        .is_some_and(|c| c.encrypted),
                }),
                other => Err(other.into()),
            }
        }
    }
}

/// Refuses a place that is a repository already or holds backups: `scan` (the one scanner of
/// a backups directory, `store::scan_at`) found a backup, an unreadable one or a create at work,
/// or there is a chunk store or a run record. `init`'s caller checks this first (and before it
/// asks for a password); `init` itself refuses an existing config again, atomically.
pub async fn check_free(
    backend: &dyn Backend,
    repository: &str,
    scan: &Scan,
) -> Result<(), RepoError> {
    if let Some(config) = read_config(backend, repository).await? {
        return Err(RepoError::AlreadyRepository {
            repository: repository.to_string(),
            encrypted: config.encrypted,
        });
    }
    let found = scan.entries.iter().find_map(|e| match &e.seen {
        Seen::Backup(_) | Seen::Unreadable(_) => Some(e.name.clone()),
        Seen::Other(_) if e.name.ends_with(crate::format::layout::STAGING_SUFFIX) => {
            Some(e.name.clone())
        }
        Seen::Other(_) => None,
    });
    let found = match found {
        Some(name) => Some(name),
        None => {
            let mut kept = None;
            // Listed by prefix: a local backend enters only these directories.
            for part in [".wqm-chunks/", ".wqm-runs/"] {
                if let Some(object) = backend.list(part).await?.into_iter().next() {
                    kept = Some(object.name);
                    break;
                }
            }
            kept
        }
    };
    match found {
        Some(example) => Err(RepoError::HoldsBackups {
            repository: repository.to_string(),
            example,
        }),
        None => Ok(()),
    }
}

fn key_name(key_id: &str) -> Name {
    name(&format!("{KEYS}{key_id}"))
}

/// The parameters of new key objects: `KdfParams::DEFAULT`. A debug build (what the tests
/// run) takes the cheapest ones when `WQM_TEST_FAST_KDF=1`, so a test of many keys does not
/// spend seconds on each; a release build ignores it.
pub fn new_key_params() -> KdfParams {
    #[cfg(debug_assertions)]
    if std::env::var_os("WQM_TEST_FAST_KDF").is_some_and(|v| v == "1") {
        return KdfParams::FOR_TESTS;
    }
    KdfParams::DEFAULT
}

/// One key object as `key list` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct KeyInfo {
    pub key_id: String,
    pub host: String,
    pub username: Option<String>,
    pub created: String,
    pub kdf: KdfParams,
    /// The key this run's password opened.
    pub current: bool,
}

/// An encrypted repository opened with a password: its keys, the master key, and which key
/// opened it. Key changes go to storage at once; no data is touched.
pub struct Unlocked {
    backend: Arc<dyn Backend>,
    keyring: Keyring,
    master: MasterKey,
    in_use: String,
    /// Key objects that could not be read (named, never used).
    pub unreadable: Vec<String>,
}

impl std::fmt::Debug for Unlocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unlocked")
            .field("in_use", &self.in_use)
            .field("keys", &self.keyring.keys().len())
            .finish_non_exhaustive()
    }
}

/// The config of an encrypted repository: `NotARepository` and `NotEncrypted` otherwise.
pub async fn encrypted_config(
    backend: &dyn Backend,
    repository: &str,
) -> Result<RepoConfig, RepoError> {
    match read_config(backend, repository).await? {
        None => Err(RepoError::NotARepository {
            repository: repository.to_string(),
        }),
        Some(config) if !config.encrypted => Err(RepoError::NotEncrypted {
            repository: repository.to_string(),
        }),
        Some(config) => Ok(config),
    }
}

impl Unlocked {
    /// Opens the encrypted repository (its `config` read by `encrypted_config`) with
    /// `password`: "wrong password or no key for this repository" when no key object of it
    /// opens the master key the config names. Changes nothing.
    pub async fn open(
        backend: Arc<dyn Backend>,
        config: &RepoConfig,
        password: &Password,
    ) -> Result<Self, RepoError> {
        let mut stored = Vec::new();
        for object in backend.list(KEYS).await? {
            // One too large or unreadable is left out as unreadable (reported), not fatal.
            let bytes = if object.size > crate::crypto::KEY_OBJECT_LIMIT as u64 {
                Vec::new()
            } else {
                load_small(&*backend, &name(&object.name))
                    .await?
                    .unwrap_or_default()
            };
            stored.push((object.name, bytes));
        }
        let (keyring, refused) = match Keyring::parse(
            stored
                .iter()
                .map(|(name, bytes)| (name.as_str(), bytes.as_slice())),
        ) {
            Ok(parsed) => parsed,
            // Every key object is unreadable: none can open it.
            Err(_) => return Err(CryptoError::WrongPassword.into()),
        };
        let expected = config.master_key_id.as_deref().unwrap_or_default();
        for object in keyring.keys() {
            match object.unwrap_master(password) {
                Ok(master) if master.id_hex() == expected => {
                    let in_use = object.key_id().to_string();
                    return Ok(Unlocked {
                        backend,
                        keyring,
                        master,
                        in_use,
                        unreadable: refused.iter().map(ToString::to_string).collect(),
                    });
                }
                // A key of another master key (a killed or beaten init's): not this repository's.
                Ok(_) | Err(CryptoError::WrongPassword) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(CryptoError::WrongPassword.into())
    }

    /// Every readable key object, oldest first.
    pub fn keys(&self) -> Vec<KeyInfo> {
        let mut keys: Vec<KeyInfo> = self.keyring.keys().iter().map(|k| self.info(k)).collect();
        keys.sort_by(|a, b| (&a.created, &a.key_id).cmp(&(&b.created, &b.key_id)));
        keys
    }

    /// The master key, for the storage seam (`store::seal`) to encrypt and decrypt with.
    pub fn into_master(self) -> MasterKey {
        self.master
    }

    /// The id of the key this run opened the repository with.
    pub fn in_use(&self) -> &str {
        &self.in_use
    }

    fn info(&self, key: &KeyObject) -> KeyInfo {
        let label = key.label();
        KeyInfo {
            key_id: key.key_id().to_string(),
            host: label.host.clone(),
            username: label.username.clone(),
            created: label.created.clone(),
            kdf: key.params(),
            current: key.key_id() == self.in_use,
        }
    }

    /// A new key object for `password`, wrapping the same master key, saved.
    pub async fn add(
        &mut self,
        password: &Password,
        params: KdfParams,
    ) -> Result<KeyInfo, RepoError> {
        let key = self
            .keyring
            .add(&self.master, password, params, KeyLabel::current())?
            .clone();
        self.backend
            .save_new(&key_name(key.key_id()), Bytes::from(key.to_json()))
            .await?;
        Ok(self.info(&key))
    }

    /// Removes key `key_id`: never the one this run opened with (so never the last).
    pub async fn remove(&mut self, key_id: &str) -> Result<KeyInfo, RepoError> {
        let removed = self.keyring.remove(key_id, &self.in_use)?;
        self.backend.remove(&key_name(removed.key_id())).await?;
        Ok(self.info(&removed))
    }

    /// Changes the password of the key in use: the new key object is saved before the old one
    /// is removed, so a crash between leaves both, never neither. Returns (new, old).
    pub async fn change_password(
        &mut self,
        password: &Password,
        params: KdfParams,
    ) -> Result<(KeyInfo, KeyInfo), RepoError> {
        let (new, old) = self.keyring.change_password(
            &self.master,
            &self.in_use,
            password,
            params,
            KeyLabel::current(),
        )?;
        self.backend
            .save_new(&key_name(new.key_id()), Bytes::from(new.to_json()))
            .await?;
        self.backend.remove(&key_name(old.key_id())).await?;
        let old_info = self.info(&old);
        self.in_use = new.key_id().to_string();
        Ok((self.info(&new), old_info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_is_checked_before_it_is_used() {
        let ok = RepoConfig::new(Some("0123456789abcdef0123456789abcdef".into()));
        assert_eq!(RepoConfig::parse(&ok.to_json(), "r").unwrap(), ok);
        let plain = RepoConfig::new(None);
        assert!(!RepoConfig::parse(&plain.to_json(), "r").unwrap().encrypted);
        for (text, code) in [
            (
                r#"{"version": 2, "encrypted": true}"#,
                ExitCode::Incompatible,
            ),
            ("not json", ExitCode::InvalidBackup),
            (
                r#"{"version": 1, "encrypted": true, "created": "", "created_by": ""}"#,
                ExitCode::InvalidBackup,
            ),
            (
                r#"{"version": 1, "encrypted": true, "master_key_id": "zz", "created": "", "created_by": ""}"#,
                ExitCode::InvalidBackup,
            ),
        ] {
            let e = RepoConfig::parse(text.as_bytes(), "r").unwrap_err();
            assert_eq!(e.exit_code(), code, "{text}: {e}");
        }
    }
}

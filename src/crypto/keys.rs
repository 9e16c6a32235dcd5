//! Keys, as restic keeps them: a random master key, wrapped in one key object per password by a
//! key that Argon2id derives from that password. Changing a password writes a new key object for
//! the same master key and removes the old one; no data is re-encrypted.
//!
//! A key object is JSON (at most [`KEY_OBJECT_LIMIT`] bytes):
//!
//! ```json
//! {"version": 1,
//!  "kdf": {"name": "argon2id", "params": {"m_kib": 32768, "t": 8, "p": 1}, "salt": "<base64, 16 bytes>"},
//!  "created": "2026-12-04T00:00:00Z", "host": "laptop", "username": "me",
//!  "key_id": "<32 hex digits: this key object's id>",
//!  "wrapped": "<base64: 24-byte nonce ‖ XChaCha20-Poly1305(master key) ‖ 16-byte tag>"}
//! ```
//!
//! The wrapped master key is its id (16 bytes, the id every encrypted object's header carries),
//! its encryption key (32) and its MAC key for chunk names (32). The associated data of the
//! wrapping binds it to the key object's id and KDF, so moving a wrapped key between key objects
//! fails.

use std::fmt;

use argon2::{Algorithm, Argon2, AssociatedData, ParamsBuilder, Version};
use base64ct::{Base64, Encoding};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{random_bytes, CryptoError};
use crate::checksum::to_hex;

/// The largest key object read: a real one is about 400 bytes.
pub const KEY_OBJECT_LIMIT: usize = 64 * 1024;
const KEY_FORMAT: u32 = 1;
const KDF_NAME: &str = "argon2id";
pub(crate) const ID_LEN: usize = 16;
const KEY_LEN: usize = 32;
const MASTER_LEN: usize = ID_LEN + 2 * KEY_LEN;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const WRAPPED_LEN: usize = NONCE_LEN + MASTER_LEN + TAG_LEN;
const SALT_LEN: usize = 16;
const SALT_RANGE: std::ops::RangeInclusive<usize> = 8..=64;
/// The longest `host` or `username` a key object may carry.
const LABEL_LIMIT: usize = 256;

/// The most memory a stored KDF may ask for (256 MiB), its most lanes, and the most work
/// (memory × passes: 4 GiB, about 3 s on the reference machine). Anything beyond is refused
/// before any work.
const MAX_MEMORY_KIB: u32 = 256 * 1024;
const MAX_PARALLELISM: u32 = 16;
const MAX_WORK_KIB: u64 = 4 * 1024 * 1024;

/// The repository's master key: its id (not secret: every encrypted object's header names it),
/// the encryption key of every object and the MAC key of chunk names. Zeroized on drop; its
/// `Debug` shows the id only.
pub struct MasterKey {
    id: [u8; ID_LEN],
    encryption: Zeroizing<[u8; KEY_LEN]>,
    mac: Zeroizing<[u8; KEY_LEN]>,
}

impl MasterKey {
    /// A new random master key (for `init`).
    pub fn generate() -> Result<Self, CryptoError> {
        let mut bytes = Zeroizing::new([0u8; MASTER_LEN]);
        random_bytes(&mut bytes[..])?;
        Ok(Self::from_bytes(&bytes))
    }

    fn from_bytes(bytes: &[u8; MASTER_LEN]) -> Self {
        let mut key = MasterKey {
            id: [0; ID_LEN],
            encryption: Zeroizing::new([0; KEY_LEN]),
            mac: Zeroizing::new([0; KEY_LEN]),
        };
        key.id.copy_from_slice(&bytes[..ID_LEN]);
        key.encryption
            .copy_from_slice(&bytes[ID_LEN..ID_LEN + KEY_LEN]);
        key.mac.copy_from_slice(&bytes[ID_LEN + KEY_LEN..]);
        key
    }

    fn to_bytes(&self) -> Zeroizing<[u8; MASTER_LEN]> {
        let mut bytes = Zeroizing::new([0u8; MASTER_LEN]);
        bytes[..ID_LEN].copy_from_slice(&self.id);
        bytes[ID_LEN..ID_LEN + KEY_LEN].copy_from_slice(&self.encryption[..]);
        bytes[ID_LEN + KEY_LEN..].copy_from_slice(&self.mac[..]);
        bytes
    }

    /// The id every object encrypted with this key carries in its header.
    pub fn id(&self) -> [u8; ID_LEN] {
        self.id
    }

    /// The id as 32 lowercase hex digits.
    pub fn id_hex(&self) -> String {
        to_hex(&self.id)
    }

    /// A chunk's name in an encrypted repository: HMAC-SHA256 of its content under the MAC key,
    /// so the name reveals nothing about the content to whoever lacks the key.
    pub fn chunk_id(&self, content: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.mac[..])
            .expect("HMAC takes a key of any length");
        mac.update(content);
        mac.finalize().into_bytes().into()
    }

    /// A file's stored name in an encrypted repository: HMAC-SHA256 of its path in its backup
    /// under the MAC key, after a label that keeps these names apart from chunk names, so a
    /// stored name tells nothing of what it holds (a collection's name).
    pub fn file_name_id(&self, path: &str) -> [u8; 32] {
        let mut labelled = b"wqm file name\0".to_vec();
        labelled.extend_from_slice(path.as_bytes());
        self.chunk_id(&labelled)
    }

    /// The AEAD of every object (its key schedule is a copy of the key).
    pub(crate) fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&*self.encryption).into())
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id_hex())
            .finish_non_exhaustive()
    }
}

/// A password, zeroized on drop, never shown (`Debug` prints a placeholder).
pub struct Password(Zeroizing<Vec<u8>>);

impl Password {
    pub fn new(password: impl Into<Vec<u8>>) -> Self {
        Password(Zeroizing::new(password.into()))
    }

    fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<hidden>)")
    }
}

/// Argon2id's cost parameters, stored in each key object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    #[serde(rename = "m_kib")]
    pub memory_kib: u32,
    /// Passes over the memory.
    #[serde(rename = "t")]
    pub iterations: u32,
    /// Lanes (computed one after the other here).
    #[serde(rename = "p")]
    pub parallelism: u32,
}

impl KdfParams {
    /// New keys: 32 MiB (keeping a run under the 64 MB RSS target), 8 passes, one lane: about
    /// 0.13 s on the reference machine (`examples/kdf_cost.rs`; docs/architecture.md,
    /// "Encryption"), paid by every run that opens the repository.
    pub const DEFAULT: KdfParams = KdfParams {
        memory_kib: 32 * 1024,
        iterations: 8,
        parallelism: 1,
    };

    /// The cheapest parameters Argon2id allows: for tests only, never for a real repository.
    #[doc(hidden)]
    pub const FOR_TESTS: KdfParams = KdfParams {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
    };

    /// Refuses parameters outside what wqm accepts (a hostile key object's), before any work.
    pub fn check(&self) -> Result<(), String> {
        let KdfParams {
            memory_kib: m,
            iterations: t,
            parallelism: p,
        } = *self;
        if !(1..=MAX_PARALLELISM).contains(&p) {
            return Err(format!("`p` = `{p}` lanes (1 to {MAX_PARALLELISM})"));
        }
        if m < 8 * p || m > MAX_MEMORY_KIB {
            return Err(format!(
                "`m_kib` = `{m}` (from 8 × `p` to {MAX_MEMORY_KIB} KiB)"
            ));
        }
        if t == 0 || u64::from(m) * u64::from(t) > MAX_WORK_KIB {
            return Err(format!(
                "`t` = `{t}` passes over `{m}` KiB (at least 1; memory × passes at most {MAX_WORK_KIB} KiB)"
            ));
        }
        Ok(())
    }
}

/// Argon2id (version 0x13) with an optional secret and associated data (the RFC 9106 vectors use
/// both; wqm's keys use neither).
pub(crate) fn argon2id(
    params: KdfParams,
    password: &[u8],
    salt: &[u8],
    secret: &[u8],
    data: &[u8],
    out: &mut [u8],
) -> Result<(), String> {
    let mut builder = ParamsBuilder::new();
    builder
        .m_cost(params.memory_kib)
        .t_cost(params.iterations)
        .p_cost(params.parallelism)
        .output_len(out.len());
    if !data.is_empty() {
        builder.data(AssociatedData::new(data).map_err(|e| e.to_string())?);
    }
    let built = builder.build().map_err(|e| e.to_string())?;
    let argon2 = if secret.is_empty() {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, built)
    } else {
        Argon2::new_with_secret(secret, Algorithm::Argon2id, Version::V0x13, built)
            .map_err(|e| e.to_string())?
    };
    argon2
        .hash_password_into(password, salt, out)
        .map_err(|e| e.to_string())
}

/// Who made a key object and when: shown by `key list`, not authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLabel {
    /// RFC 3339, UTC.
    pub created: String,
    pub host: String,
    pub username: Option<String>,
}

impl KeyLabel {
    /// This host, this user, now.
    pub fn current() -> Self {
        let username = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .ok()
            .filter(|u| !u.is_empty());
        KeyLabel {
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            username,
        }
    }
}

/// One password's key object: the master key wrapped by the key Argon2id derives from the
/// password and `salt`. Parsed and checked (sizes, KDF bounds) before any work.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyObject {
    key_id: String,
    params: KdfParams,
    salt: Vec<u8>,
    label: KeyLabel,
    wrapped: Vec<u8>,
}

/// The JSON shape of a key object.
#[derive(Serialize, Deserialize)]
struct Stored {
    version: u32,
    kdf: StoredKdf,
    created: String,
    host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    key_id: String,
    wrapped: String,
}

#[derive(Serialize, Deserialize)]
struct StoredKdf {
    name: String,
    params: KdfParams,
    salt: String,
}

impl KeyObject {
    /// A new key object for `password`, wrapping `master`.
    pub fn new(
        master: &MasterKey,
        password: &Password,
        params: KdfParams,
        label: KeyLabel,
    ) -> Result<Self, CryptoError> {
        if password.as_bytes().is_empty() {
            return Err(CryptoError::EmptyPassword);
        }
        params.check().map_err(|reason| CryptoError::KdfParams {
            what: "new key".into(),
            reason,
        })?;
        let mut id = [0u8; ID_LEN];
        random_bytes(&mut id)?;
        let mut salt = vec![0u8; SALT_LEN];
        random_bytes(&mut salt)?;
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce)?;
        let mut object = KeyObject {
            key_id: to_hex(&id),
            params,
            salt,
            label,
            wrapped: Vec::new(),
        };
        let wrapping = object.derive(password)?;
        let sealed = wrapping
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &master.to_bytes()[..],
                    aad: object.associated_data().as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 seals a key of 80 bytes");
        object.wrapped = [&nonce[..], &sealed].concat();
        Ok(object)
    }

    /// Reads a key object named `what` (its storage name), refusing anything oversized, malformed
    /// or with KDF parameters out of bounds, before any key derivation.
    pub fn parse(bytes: &[u8], what: &str) -> Result<Self, CryptoError> {
        let bad = |reason: String| CryptoError::BadKeyObject {
            what: what.to_string(),
            reason,
        };
        if bytes.len() > KEY_OBJECT_LIMIT {
            return Err(bad(format!(
                "{} bytes, more than a key object's {KEY_OBJECT_LIMIT}",
                bytes.len()
            )));
        }
        let stored: Stored =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not a key object: {e}")))?;
        if stored.version != KEY_FORMAT {
            return Err(bad(format!(
                "key format `{}`; this wqm reads format {KEY_FORMAT}",
                stored.version
            )));
        }
        if stored.kdf.name != KDF_NAME {
            return Err(bad(format!(
                "key derivation `{}`; this wqm knows `{KDF_NAME}`",
                stored.kdf.name
            )));
        }
        stored
            .kdf
            .params
            .check()
            .map_err(|reason| CryptoError::KdfParams {
                what: what.to_string(),
                reason,
            })?;
        if stored.key_id.len() != 2 * ID_LEN
            || !stored
                .key_id
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(bad(format!("`key_id` is not {} hex digits", 2 * ID_LEN)));
        }
        for (field, value) in [
            ("host", Some(&stored.host)),
            ("username", stored.username.as_ref()),
        ] {
            if value.is_some_and(|v| v.len() > LABEL_LIMIT) {
                return Err(bad(format!("`{field}` is longer than {LABEL_LIMIT} bytes")));
            }
        }
        if stored.created.len() > 64 {
            return Err(bad("`created` is not a time".into()));
        }
        let salt = decode_base64(&stored.kdf.salt, SALT_RANGE, "kdf.salt").map_err(&bad)?;
        let wrapped =
            decode_base64(&stored.wrapped, WRAPPED_LEN..=WRAPPED_LEN, "wrapped").map_err(&bad)?;
        Ok(KeyObject {
            key_id: stored.key_id,
            params: stored.kdf.params,
            salt,
            label: KeyLabel {
                created: stored.created,
                host: stored.host,
                username: stored.username,
            },
            wrapped,
        })
    }

    /// The key object as JSON, ready to store.
    pub fn to_json(&self) -> Vec<u8> {
        let stored = Stored {
            version: KEY_FORMAT,
            kdf: StoredKdf {
                name: KDF_NAME.into(),
                params: self.params,
                salt: Base64::encode_string(&self.salt),
            },
            created: self.label.created.clone(),
            host: self.label.host.clone(),
            username: self.label.username.clone(),
            key_id: self.key_id.clone(),
            wrapped: Base64::encode_string(&self.wrapped),
        };
        let mut json = serde_json::to_vec_pretty(&stored).expect("a key object serializes");
        json.push(b'\n');
        json
    }

    /// The master key, if `password` is this key object's; `WrongPassword` otherwise.
    pub fn unwrap_master(&self, password: &Password) -> Result<MasterKey, CryptoError> {
        let wrapping = self.derive(password)?;
        let (nonce, sealed) = self.wrapped.split_at(NONCE_LEN);
        let plain = Zeroizing::new(
            wrapping
                .decrypt(
                    &XNonce::try_from(nonce).expect("the nonce's length was checked"),
                    Payload {
                        msg: sealed,
                        aad: self.associated_data().as_bytes(),
                    },
                )
                .map_err(|_| CryptoError::WrongPassword)?,
        );
        let bytes: &[u8; MASTER_LEN] =
            plain
                .as_slice()
                .try_into()
                .map_err(|_| CryptoError::BadKeyObject {
                    what: self.key_id.clone(),
                    reason: "the wrapped key has the wrong length".into(),
                })?;
        Ok(MasterKey::from_bytes(bytes))
    }

    /// This key object's id (32 hex digits), the name `key remove` takes.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn params(&self) -> KdfParams {
        self.params
    }

    pub fn label(&self) -> &KeyLabel {
        &self.label
    }

    fn derive(&self, password: &Password) -> Result<XChaCha20Poly1305, CryptoError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        argon2id(
            self.params,
            password.as_bytes(),
            &self.salt,
            &[],
            &[],
            &mut key[..],
        )
        .map_err(|reason| CryptoError::KdfParams {
            what: self.key_id.clone(),
            reason,
        })?;
        Ok(XChaCha20Poly1305::new((&*key).into()))
    }

    /// What the wrapping authenticates besides the key: this object's id and KDF.
    fn associated_data(&self) -> String {
        let p = self.params;
        format!(
            "wqm key object {KEY_FORMAT} {} {KDF_NAME} m={} t={} p={} salt={}",
            self.key_id,
            p.memory_kib,
            p.iterations,
            p.parallelism,
            Base64::encode_string(&self.salt)
        )
    }
}

impl fmt::Debug for KeyObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyObject")
            .field("key_id", &self.key_id)
            .field("params", &self.params)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

fn decode_base64(
    text: &str,
    lengths: std::ops::RangeInclusive<usize>,
    field: &str,
) -> Result<Vec<u8>, String> {
    // Base64 of the longest accepted value, plus padding: refuse longer text before decoding.
    if text.len() > lengths.end().div_ceil(3) * 4 {
        return Err(format!("`{field}` is too long"));
    }
    let bytes = Base64::decode_vec(text).map_err(|_| format!("`{field}` is not base64"))?;
    if !lengths.contains(&bytes.len()) {
        return Err(format!(
            "`{field}` holds {} bytes, not {} to {}",
            bytes.len(),
            lengths.start(),
            lengths.end()
        ));
    }
    Ok(bytes)
}

/// A repository's key objects, in memory: storing them is the backend's job.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    objects: Vec<KeyObject>,
}

impl Keyring {
    /// A new repository's keys: a new master key and one key object for `password`.
    pub fn init(
        password: &Password,
        params: KdfParams,
        label: KeyLabel,
    ) -> Result<(Keyring, MasterKey), CryptoError> {
        let master = MasterKey::generate()?;
        let object = KeyObject::new(&master, password, params, label)?;
        Ok((
            Keyring {
                objects: vec![object],
            },
            master,
        ))
    }

    pub fn new(objects: Vec<KeyObject>) -> Self {
        Keyring { objects }
    }

    /// Parses stored key objects (name, bytes). Unreadable ones are left out and returned beside
    /// the keyring, to be reported; when none is readable, the first error is the answer.
    pub fn parse<'a>(
        stored: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<(Keyring, Vec<CryptoError>), CryptoError> {
        let mut objects = Vec::new();
        let mut refused = Vec::new();
        for (name, bytes) in stored {
            match KeyObject::parse(bytes, name) {
                Ok(object) => objects.push(object),
                Err(e) => refused.push(e),
            }
        }
        if objects.is_empty() && !refused.is_empty() {
            return Err(refused.remove(0));
        }
        Ok((Keyring { objects }, refused))
    }

    pub fn keys(&self) -> &[KeyObject] {
        &self.objects
    }

    /// Tries each key object with `password`: the master key and the id of the key object that
    /// opened it, or `WrongPassword` (also when there is no key object at all).
    pub fn open(&self, password: &Password) -> Result<(MasterKey, String), CryptoError> {
        for object in &self.objects {
            match object.unwrap_master(password) {
                Ok(master) => return Ok((master, object.key_id.clone())),
                Err(CryptoError::WrongPassword) => continue,
                Err(other) => return Err(other),
            }
        }
        Err(CryptoError::WrongPassword)
    }

    /// Adds a key object for `password` wrapping the same `master`; returns it (to store).
    pub fn add(
        &mut self,
        master: &MasterKey,
        password: &Password,
        params: KdfParams,
        label: KeyLabel,
    ) -> Result<&KeyObject, CryptoError> {
        let object = KeyObject::new(master, password, params, label)?;
        self.objects.push(object);
        Ok(self.objects.last().expect("just pushed"))
    }

    /// Removes key object `key_id`, but never `in_use`, the one this run opened with (so the last
    /// key can never go); returns it (to delete from storage).
    pub fn remove(&mut self, key_id: &str, in_use: &str) -> Result<KeyObject, CryptoError> {
        if key_id == in_use {
            return Err(CryptoError::KeyInUse {
                key_id: key_id.to_string(),
            });
        }
        let at = self
            .objects
            .iter()
            .position(|o| o.key_id == key_id)
            .ok_or_else(|| CryptoError::NoSuchKey {
                key_id: key_id.to_string(),
            })?;
        Ok(self.objects.remove(at))
    }

    /// Changes the password of key `in_use`: a new key object for `password`, then the old one
    /// removed. Returns (new, removed): storage writes the new one before deleting the old.
    pub fn change_password(
        &mut self,
        master: &MasterKey,
        in_use: &str,
        password: &Password,
        params: KdfParams,
        label: KeyLabel,
    ) -> Result<(KeyObject, KeyObject), CryptoError> {
        let at = self
            .objects
            .iter()
            .position(|o| o.key_id == in_use)
            .ok_or_else(|| CryptoError::NoSuchKey {
                key_id: in_use.to_string(),
            })?;
        let new = KeyObject::new(master, password, params, label)?;
        let old = std::mem::replace(&mut self.objects[at], new.clone());
        Ok((new, old))
    }
}

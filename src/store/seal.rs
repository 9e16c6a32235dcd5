//! Encrypted repositories on the storage seam (issue 21): which repositories this run unlocked,
//! and the one place their objects are encrypted and decrypted.
//!
//! The edge unlocks every encrypted repository a command touches before the command runs
//! (`commands::guard`: the password, then `repo::Unlocked::open`), and registers its master key
//! here ([`unlock`]). From then on the seam finds the key by where the bytes are: a local
//! backups directory by its canonical path, a repository on a backend by how it is shown
//! (`s3://BUCKET/PREFIX`). Encryption sits **beneath** the stored bytes: a `FileSink`
//! compresses, hashes the stored (compressed) bytes for the manifest, then encrypts them, and
//! `BackupDir::open_file` decrypts before anything else reads them. So a manifest's `size` and
//! `checksum` describe the plaintext stored bytes, every check above the seam is unchanged, and
//! every object on disk or on S3 is ciphertext with its [`Identity`] bound in: the manifest as
//! `manifest/<backup>`, each file as `file/<backup>/<path>`.
//!
//! Files are stored under keyed names (`Seal::stored_name`: `collections/<32 hex digits>`), so
//! not even a collection's name shows; the manifest (encrypted) maps each path to it.
//!
//! A directory that is an encrypted repository but was not unlocked is never written in
//! plaintext: `Staging::begin` asks [`require_local`], which reads its config.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::{Arc, LazyLock, Mutex};

use crate::crypto::{
    self, CryptoError, DecryptingReader, EncryptingWriter, Identity, MasterKey, HEADER_LEN,
    SEGMENT, TAG_LEN,
};
use crate::format::layout::{LayoutError, MANIFEST_PATH, REFS_PATH};

/// The repositories this run unlocked: where → master key.
static UNLOCKED: LazyLock<Mutex<HashMap<String, Arc<MasterKey>>>> = LazyLock::new(Mutex::default);

/// An unlocked repository's key, as the seam uses it.
#[derive(Clone)]
pub struct Seal {
    key: Arc<MasterKey>,
}

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seal")
            .field("key_id", &self.key.id_hex())
            .finish()
    }
}

/// Registers the master key of the repository at `where_`: a local directory (as given, any
/// form of its path) or a remote repository as shown (`s3://BUCKET/PREFIX`).
pub fn unlock(where_: &str, key: Arc<MasterKey>) {
    let id = identify(where_);
    UNLOCKED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, key);
}

/// Registers `seal` for `where_` too: a local directory whose backups belong to the
/// repository it is the seal of (a backup staged on its way to S3).
pub fn share(where_: &str, seal: &Seal) {
    unlock(where_, seal.key.clone());
}

/// The seal of the repository at `where_`, when this run unlocked it.
pub fn of(where_: &str) -> Option<Seal> {
    let unlocked = UNLOCKED.lock().unwrap_or_else(|e| e.into_inner());
    if unlocked.is_empty() {
        return None;
    }
    unlocked
        .get(&identify(where_))
        .map(|key| Seal { key: key.clone() })
}

/// The seal of the local backups directory `dir`.
pub fn of_local(dir: &Path) -> Option<Seal> {
    of(&dir.to_string_lossy())
}

/// The seal of the local backups directory `dir`: none for a directory that is no repository
/// or an unencrypted one, and `LayoutError::Locked` (exit 2) for an encrypted repository this
/// run did not unlock (its config says so).
pub fn require_local(dir: &Path) -> Result<Option<Seal>, LayoutError> {
    if let Some(seal) = of_local(dir) {
        return Ok(Some(seal));
    }
    if is_encrypted_repository(dir) {
        return Err(LayoutError::Locked {
            repository: dir.to_path_buf(),
        });
    }
    Ok(None)
}

/// Whether the config of the repository at `dir` says "encrypted" (read without following a
/// link; an unreadable one counts as encrypted, so nothing plaintext goes where it may be).
fn is_encrypted_repository(dir: &Path) -> bool {
    let Ok(file) = super::open_in(dir, crate::format::layout::REPO_CONFIG) else {
        return false;
    };
    let mut text = Vec::new();
    if file.take(64 * 1024).read_to_end(&mut text).is_err() {
        return true;
    }
    match serde_json::from_slice::<serde_json::Value>(&text) {
        Ok(config) => config.get("encrypted") != Some(&serde_json::Value::Bool(false)),
        Err(_) => true,
    }
}

/// A local path as the registry knows it (canonical when it exists); a remote one as shown,
/// without a trailing `/`.
fn identify(where_: &str) -> String {
    if where_.contains("://") {
        return where_.trim_end_matches('/').to_string();
    }
    std::fs::canonicalize(where_)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| where_.to_string())
}

impl Seal {
    /// A writer that encrypts what it is given into `inner` as the object `identity`.
    pub fn writer<W: Write>(
        &self,
        inner: W,
        identity: &Identity,
    ) -> Result<EncryptingWriter<W>, CryptoError> {
        EncryptingWriter::new(inner, &self.key, identity)
    }

    /// A reader of the object `identity` in `inner`: only authenticated plaintext comes out.
    pub fn reader<R: Read>(
        &self,
        inner: R,
        identity: &Identity,
    ) -> io::Result<DecryptingReader<R>> {
        DecryptingReader::new(inner, &self.key, identity).map_err(CryptoError::into_io)
    }

    /// A whole small object (a manifest, a chunk) encrypted.
    pub fn seal(&self, identity: &Identity, plaintext: &[u8]) -> io::Result<Vec<u8>> {
        crypto::encrypt(&self.key, identity, plaintext).map_err(CryptoError::into_io)
    }

    /// A whole small object decrypted and authenticated.
    pub fn open(&self, identity: &Identity, object: &[u8]) -> Result<Vec<u8>, CryptoError> {
        crypto::decrypt(&self.key, identity, object)
    }

    /// A chunk's keyed name: HMAC-SHA256 of its content under the repository's MAC key.
    pub fn chunk_id(&self, content: &[u8]) -> [u8; 32] {
        self.key.chunk_id(content)
    }

    /// Where a backup's file `rel` is stored in an encrypted repository: in the same top
    /// directory (`collections/`, `sqlite/`, `config/`), under a keyed name (32 hex digits of
    /// `MasterKey::file_name_id`), so no collection or database name shows. The manifest and
    /// the reference list keep their names: the layout says them already.
    pub fn stored_name(&self, rel: &str) -> String {
        if rel == MANIFEST_PATH || rel == REFS_PATH {
            return rel.to_string();
        }
        let top = rel.split('/').next().unwrap_or_default();
        let id = crate::checksum::to_hex(&self.key.file_name_id(rel));
        format!("{top}/{}", &id[..32])
    }
}

/// How long the object holding `plain` bytes is once encrypted: the header, and a tag per
/// segment (the last segment always shorter than a full one).
pub fn sealed_len(plain: u64) -> u64 {
    let segments = plain / SEGMENT as u64 + 1;
    HEADER_LEN as u64 + plain + segments * TAG_LEN as u64
}

/// A writer that encrypts or not: what a `FileSink` writes its stored bytes into.
pub enum MaybeSealed<W: Write> {
    Plain(W),
    Sealed(Box<EncryptingWriter<W>>),
}

impl<W: Write> MaybeSealed<W> {
    /// `inner`, encrypted as `identity` when there is a seal.
    pub fn new(inner: W, seal: Option<&Seal>, identity: &Identity) -> io::Result<Self> {
        Ok(match seal {
            None => MaybeSealed::Plain(inner),
            Some(seal) => MaybeSealed::Sealed(Box::new(
                seal.writer(inner, identity).map_err(CryptoError::into_io)?,
            )),
        })
    }

    /// Writes the last segment (when encrypting) and hands back the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            MaybeSealed::Plain(inner) => Ok(inner),
            MaybeSealed::Sealed(writer) => writer.finish().map_err(CryptoError::into_io),
        }
    }
}

impl<W: Write> Write for MaybeSealed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            MaybeSealed::Plain(inner) => inner.write(buf),
            MaybeSealed::Sealed(writer) => writer.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            MaybeSealed::Plain(inner) => inner.flush(),
            MaybeSealed::Sealed(writer) => writer.flush(),
        }
    }
}

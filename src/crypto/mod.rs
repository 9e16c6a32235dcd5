//! Encryption at rest: the cryptographic core of encrypted repositories (issue 21). `src/repo/`
//! stores a repository's key objects through the backend (`init --encrypt`, `key`); the data
//! paths wire in the object format next. It holds no storage of its own: every function works on
//! bytes, readers and writers.
//!
//! - **Keys** (`keys.rs`, restic's model): a random [`MasterKey`] (an encryption key and a MAC key
//!   for chunk names) is wrapped by a key derived from a password with Argon2id, in a JSON
//!   [`KeyObject`]; a [`Keyring`] holds a repository's key objects and opens, adds, removes and
//!   changes passwords without touching any data.
//! - **Objects** (`object.rs`): [`encrypt`]/[`decrypt`] and the streaming [`EncryptingWriter`] and
//!   [`DecryptingReader`]: a plaintext header (magic, format, the master key's id), then
//!   XChaCha20-Poly1305 in the STREAM construction (`aead-stream`, 1 MiB segments). The associated
//!   data binds every segment to the header and to the object's [`Identity`] (`chunk/<id>`,
//!   `manifest/<backup>`, `file/<backup>/<path>`), so an altered, truncated, reordered, extended or
//!   swapped object fails authentication.
//! - **Chunk names** ([`MasterKey::chunk_id`]): HMAC-SHA256 of the content under the repository's
//!   MAC key, so a chunk's name does not reveal a hash of its content.
//!
//! Compression is the callers' job and happens before encryption (ciphertext does not compress).
//! The choices, their measurements and the formats are in docs/architecture.md ("Encryption").
//! Nothing secret (keys, passwords, plaintext) appears in any `Debug`, `Display` or error.

mod keys;
mod object;
#[cfg(test)]
mod tests;

pub use keys::{KdfParams, KeyLabel, KeyObject, Keyring, MasterKey, Password, KEY_OBJECT_LIMIT};
pub use object::{
    decrypt, encrypt, DecryptingReader, EncryptingWriter, Header, Identity, BATCH, HEADER_LEN,
    MAGIC, SEGMENT, TAG_LEN,
};

use std::io;

/// The ways a password is given, in the order they are tried (then a prompt on a terminal).
pub const PASSWORD_WAYS: &str = "`--password-file FILE`, `WQM_BACKUP_PASSWORD_FILE`, `WQM_BACKUP_PASSWORD` or `backup.encryption.password_command`";

use crate::exit::{Classify, ExitCode};

/// Why a cryptographic operation refused: a wrong password, an object that failed
/// authentication, a hostile key object. Names the object, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// No key object of the repository opens with this password (or there is none).
    #[error("wrong password or no key for this repository")]
    WrongPassword,
    #[error("an empty password is not allowed")]
    EmptyPassword,
    #[error("no key `{key_id}` in this repository")]
    NoSuchKey { key_id: String },
    #[error(
        "key `{key_id}` is the one this run opened the repository with; it cannot remove itself"
    )]
    KeyInUse { key_id: String },
    /// Authentication failed: the object was altered, damaged, reordered, extended or swapped
    /// with another object.
    #[error("`{what}` is damaged: it failed authentication (altered, swapped with another object, or not from this repository)")]
    Damaged { what: String },
    #[error("`{what}` is truncated: it ends before its last encrypted segment")]
    Truncated { what: String },
    #[error("`{what}` is not an encrypted object wqm can read: {reason}")]
    UnknownFormat { what: String, reason: String },
    #[error("`{what}` is encrypted with another repository key (`{found}`), not this repository's (`{expected}`)")]
    OtherKey {
        what: String,
        found: String,
        expected: String,
    },
    #[error("key object `{what}` is unreadable: {reason}")]
    BadKeyObject { what: String, reason: String },
    /// Stored key-derivation parameters beyond what wqm accepts: refused before any work, so a
    /// hostile key object cannot make `wqm` spend minutes or gigabytes on it.
    #[error("key object `{what}` asks for key derivation parameters out of bounds: {reason}")]
    KdfParams { what: String, reason: String },
    #[error("the system's random number generator failed: {reason}")]
    Random { reason: String },
    #[error("cannot read or write `{what}`: {source}")]
    Io { what: String, source: io::Error },
}

impl CryptoError {
    /// As an `io::Error` (for `Read`/`Write`), keeping the error inside so `output::classify`
    /// still finds its exit code.
    pub(crate) fn into_io(self) -> io::Error {
        match self {
            CryptoError::Io { source, .. } => source,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

impl Classify for CryptoError {
    fn exit_code(&self) -> ExitCode {
        match self {
            CryptoError::WrongPassword
            | CryptoError::EmptyPassword
            | CryptoError::NoSuchKey { .. }
            | CryptoError::KeyInUse { .. } => ExitCode::Usage,
            CryptoError::Damaged { .. }
            | CryptoError::Truncated { .. }
            | CryptoError::UnknownFormat { .. }
            | CryptoError::OtherKey { .. }
            | CryptoError::BadKeyObject { .. }
            | CryptoError::KdfParams { .. } => ExitCode::InvalidBackup,
            CryptoError::Random { .. } | CryptoError::Io { .. } => ExitCode::Failure,
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            CryptoError::WrongPassword => "check the password: each key of the repository has its own, and none of them opened with this one".to_string(),
            CryptoError::KeyInUse { .. } => "open the repository with another key's password to remove this one, or change its password instead".to_string(),
            CryptoError::Damaged { .. } | CryptoError::Truncated { .. } => "the object cannot be trusted; restore from another copy of the repository".to_string(),
            CryptoError::OtherKey { .. } => "the object comes from another repository, whose key this one does not have; copying between repositories must re-encrypt".to_string(),
            _ => return None,
        })
    }
}

/// Fills `bytes` from the operating system's random number generator (`getrandom`).
pub(crate) fn random_bytes(bytes: &mut [u8]) -> Result<(), CryptoError> {
    getrandom::fill(bytes).map_err(|e| CryptoError::Random {
        reason: e.to_string(),
    })
}

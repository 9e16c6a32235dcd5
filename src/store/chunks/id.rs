//! A chunk's name.

use std::fmt;
use std::io;

use super::CHUNKS_DIR;
use crate::checksum::{sha256, to_hex};
use crate::crypto::Identity;
use crate::store::seal::Seal;

/// A chunk's name: the sha256 of its content.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub(super) [u8; 32]);

impl ChunkId {
    pub fn of(content: &[u8]) -> Self {
        ChunkId(sha256(content))
    }

    /// 64 lowercase hex digits, nothing else.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut id = [0u8; 32];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(ChunkId(id))
    }

    /// The name of a chunk of `content` in a repository encrypted with `seal` (its HMAC-SHA256
    /// under the repository's key), or in a plain one (`None`: its sha256).
    pub fn named_by(seal: Option<&Seal>, content: &[u8]) -> Self {
        match seal {
            None => ChunkId::of(content),
            Some(seal) => ChunkId(seal.chunk_id(content)),
        }
    }

    /// The stored bytes of this chunk from its compressed content `compressed`: encrypted and
    /// bound to this name with `seal`, or as they are in a plain repository (`None`).
    pub fn stored_by(&self, seal: Option<&Seal>, compressed: &[u8]) -> io::Result<Vec<u8>> {
        match seal {
            None => Ok(compressed.to_vec()),
            Some(seal) => seal.seal(&self.identity(), compressed),
        }
    }

    /// What an encrypted chunk is bound to.
    pub(super) fn identity(&self) -> Identity {
        Identity::chunk(&self.0)
    }

    /// Where the chunk lives in the store, relative to it.
    pub(super) fn rel(&self) -> String {
        let hex = self.to_string();
        format!("{CHUNKS_DIR}/{}/{hex}", &hex[..2])
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({self})")
    }
}

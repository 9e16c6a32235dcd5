//! `store.json`: how a store cuts, names and stores its chunks, and the features a reader must
//! know. The format evolves by features, so old stores read unchanged.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{pack, ChunkError, ChunkStore, LARGEST_CHUNK, PARAMS_FILE};

/// The format of a store whose `required_features` this wqm knows (or has none).
pub(super) const FORMAT: u32 = 1;
/// A store needing features raises its format to this, so that a wqm from before features
/// (which reads format 1 only) refuses it too.
pub(super) const FEATURES_FORMAT: u32 = 2;
/// The store is guarded by the lock objects of its backups directory (`store::lock`), not by
/// `flock` on its `lock` file: a wqm that only knows the `flock` must not use it.
pub(super) const LOCK_OBJECTS: &str = "lock-objects";
/// Features a store may require that this wqm implements. A future one (pack files, another
/// hash) is listed in the store's `required_features` and refused by this wqm.
pub(super) const KNOWN_REQUIRED: [&str; 2] = [LOCK_OBJECTS, pack::PACKS];

/// How an encrypted repository's store names chunks (`MasterKey::chunk_id`).
pub(super) const KEYED_HASH: &str = "hmac-sha256";
/// How a plain store names its chunks.
pub(super) const PLAIN_HASH: &str = "sha256";

/// How files are cut, fixed when the store is made: every backup in it must cut alike to share.
/// Read from `store.json`; the format evolves by features, so old stores read unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    /// 1, or 2 when `required_features` is not empty.
    pub format: u32,
    /// `fastcdc-2020` (normalization level 1, the crate's default gear table).
    pub chunker: String,
    pub min_size: usize,
    pub avg_size: usize,
    pub max_size: usize,
    /// How chunks are named and stored.
    pub hash: String,
    pub compression: String,
    /// What a reader must implement to use the store: one it does not know refuses the store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_features: Vec<String>,
    /// What the store has that a reader may ignore.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub optional_features: Vec<String>,
}

impl Params {
    /// A new store's: its chunks in pack files (`pack.rs`), guarded by lock objects
    /// (`LOCK_OBJECTS`), so format 2.
    pub fn with_average(avg_size: usize) -> Self {
        Params {
            format: FEATURES_FORMAT,
            chunker: "fastcdc-2020".to_string(),
            min_size: avg_size / 4,
            avg_size,
            max_size: avg_size * 4,
            hash: PLAIN_HASH.to_string(),
            compression: "zstd".to_string(),
            required_features: vec![LOCK_OBJECTS.to_string(), pack::PACKS.to_string()],
            optional_features: Vec::new(),
        }
    }

    /// The store of an encrypted repository: chunks named by HMAC-SHA256 under the
    /// repository's key, and stored encrypted.
    pub fn keyed(mut self) -> Self {
        self.hash = KEYED_HASH.to_string();
        self
    }

    /// These parameters for a store of pack files (`pack.rs`).
    pub fn packed(mut self) -> Self {
        if !self.is_packed() {
            self.required_features.push(pack::PACKS.to_string());
        }
        self.format = FEATURES_FORMAT;
        self
    }

    /// These parameters for a store of loose chunks, one file each: a staging store's (its
    /// chunks are packed on their way to the repository).
    pub fn loose(mut self) -> Self {
        self.required_features.retain(|f| f != pack::PACKS);
        self
    }

    /// Whether the store keeps its chunks in pack files.
    pub fn is_packed(&self) -> bool {
        self.required_features.iter().any(|f| f == pack::PACKS)
    }

    /// Whether chunks are named by a keyed hash (an encrypted repository's store).
    pub fn is_keyed(&self) -> bool {
        self.hash == KEYED_HASH
    }

    /// These parameters for a store that is keyed (an encrypted repository's) or not: the same
    /// cut and storage, chunks named as such a store names them.
    pub fn keyed_as(self, keyed: bool) -> Self {
        match keyed {
            true => self.keyed(),
            false => Params {
                hash: PLAIN_HASH.to_string(),
                ..self
            },
        }
    }

    /// The features of `required_features` this wqm does not implement.
    fn unknown_features(&self) -> Vec<String> {
        self.required_features
            .iter()
            .filter(|f| !KNOWN_REQUIRED.contains(&f.as_str()))
            .cloned()
            .collect()
    }

    /// What this wqm can cut with: FastCDC's bounds (chunks of at most `LARGEST_CHUNK`), its
    /// known algorithm and storage.
    fn check(&self) -> Result<(), String> {
        use fastcdc::v2020 as cdc;
        if self.format != FORMAT && self.format != FEATURES_FORMAT {
            return Err(format!(
                "store format {} (this wqm reads {FORMAT} and {FEATURES_FORMAT})",
                self.format
            ));
        }
        if (self.chunker.as_str(), self.compression.as_str()) != ("fastcdc-2020", "zstd")
            || ![PLAIN_HASH, KEYED_HASH].contains(&self.hash.as_str())
        {
            return Err(format!(
                "unknown chunking `{}`/`{}`/`{}`",
                self.chunker, self.hash, self.compression
            ));
        }
        let sizes_ok = (cdc::MINIMUM_MIN..=cdc::MINIMUM_MAX).contains(&self.min_size)
            && (cdc::AVERAGE_MIN..=cdc::AVERAGE_MAX).contains(&self.avg_size)
            && (cdc::MAXIMUM_MIN..=LARGEST_CHUNK).contains(&self.max_size)
            && self.min_size <= self.avg_size
            && self.avg_size <= self.max_size
            && [self.min_size, self.avg_size, self.max_size]
                .iter()
                .all(|s| s % 2 == 0);
        if !sizes_ok {
            return Err(format!(
                "chunk sizes {}/{}/{} outside FastCDC's bounds (chunks of at most {LARGEST_CHUNK} bytes)",
                self.min_size, self.avg_size, self.max_size
            ));
        }
        Ok(())
    }
}

impl ChunkStore {
    /// `store.json`'s text, checked: this wqm knows its features and can cut with it.
    pub fn parse_params(root: &Path, text: &str) -> Result<Params, ChunkError> {
        let not_a_store = |reason: String| ChunkError::NotAStore {
            path: root.to_path_buf(),
            reason,
        };
        let params: Params =
            serde_json::from_str(text).map_err(|e| not_a_store(format!("`{PARAMS_FILE}`: {e}")))?;
        let unknown = params.unknown_features();
        if !unknown.is_empty() {
            return Err(ChunkError::NewerStore {
                path: root.to_path_buf(),
                features: unknown,
            });
        }
        params.check().map_err(not_a_store)?;
        Ok(params)
    }
}

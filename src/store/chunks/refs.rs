//! A backup's chunk reference list, `metadata/chunk-refs`: the chunks its indexes name, as the
//! sorted first 8 bytes of each id, so garbage collection reads 8 bytes per chunk a backup
//! names once instead of an 80-byte index line per chunk of every file (a year of nights names
//! each chunk hundreds of times).
//!
//! Why a prefix is enough: collection keeps every stored chunk whose prefix some backup names,
//! so a chunk a backup names is always kept; two ids sharing a prefix (about one pair in 2^64
//! per pair of chunks) only keep a garbage chunk one collection longer. Why a wrong list cannot
//! delete a needed chunk: the list is used only while it is exactly what the manifest records
//! (its size, and the sha256 of the whole file, written before the manifest by `create`);
//! missing, damaged or replaced, the indexes are read instead, as for a backup made before lists
//! existed. `validate` compares the list with the indexes.

use std::io::{self, Read};
use std::path::Path;

use super::{visit_chunks, ChunkId};
use crate::checksum::{sha256, to_hex};
use crate::format::manifest::{ChunkRefs, Manifest};
use crate::store::BackupDir;

pub use crate::format::layout::REFS_PATH;
const HEADER: &[u8] = b"wqm-chunk-refs 1\n";

/// A set of chunks by the first 8 bytes of their ids (big-endian, so sorted as the ids are).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refs(Vec<u64>);

fn key(id: &ChunkId) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&id.0[..8]);
    u64::from_be_bytes(first)
}

impl Refs {
    fn from_keys(mut keys: Vec<u64>) -> Self {
        keys.sort_unstable();
        keys.dedup();
        Refs(keys)
    }

    #[cfg(test)]
    pub(super) fn of(ids: &[ChunkId]) -> Self {
        Self::from_keys(ids.iter().map(key).collect())
    }

    /// Whether a chunk with `id`'s first 8 bytes is in the set.
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.0.binary_search(&key(id)).is_ok()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds `other`'s references: one merge of two sorted lists, nothing copied when `other`
    /// adds nothing (a night names mostly what the set holds already).
    pub fn extend(&mut self, other: &Refs) {
        let (a, b) = (&self.0, &other.0);
        let mut i = 0;
        let adds = b.iter().any(|k| {
            while i < a.len() && a[i] < *k {
                i += 1;
            }
            i == a.len() || a[i] != *k
        });
        if !adds {
            return;
        }
        let mut merged = Vec::with_capacity(a.len() + b.len());
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            let next = a[i].min(b[j]);
            i += usize::from(a[i] == next);
            j += usize::from(b[j] == next);
            merged.push(next);
        }
        merged.extend_from_slice(&a[i..]);
        merged.extend_from_slice(&b[j..]);
        self.0 = merged;
    }

    /// The list as stored, and the manifest's record of it.
    fn encode_with_record(&self) -> (Vec<u8>, ChunkRefs) {
        let bytes = self.encode();
        let record = ChunkRefs {
            count: self.len() as u64,
            sha256: to_hex(&sha256(&bytes)),
        };
        (bytes, record)
    }

    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(HEADER.len() + 8 * self.0.len());
        bytes.extend_from_slice(HEADER);
        for k in &self.0 {
            bytes.extend_from_slice(&k.to_be_bytes());
        }
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let body = bytes
            .strip_prefix(HEADER)
            .ok_or("it does not start with `wqm-chunk-refs 1`")?;
        if body.len() % 8 != 0 {
            return Err("it is cut short".into());
        }
        let keys: Vec<u64> = body
            .chunks_exact(8)
            .map(|k| u64::from_be_bytes(k.try_into().expect("8 bytes")))
            .collect();
        if keys.windows(2).any(|w| w[0] >= w[1]) {
            return Err("it is not sorted".into());
        }
        Ok(Refs(keys))
    }
}

/// What `backup`'s indexes name, read from them. An unreadable index is an error.
pub fn refs_from_indexes(backup: &BackupDir) -> io::Result<Refs> {
    let mut keys = Vec::new();
    visit_chunks(backup, |line| keys.push(key(&line.id)))?;
    Ok(Refs::from_keys(keys))
}

/// The reference list of the backup staged in `dir` (its indexes written, its manifest
/// `manifest` not yet), encoded, and the manifest's record of it; the caller saves it before
/// the manifest. `None` when the backup has no chunked file.
pub fn refs_of(dir: &Path, manifest: &Manifest) -> io::Result<Option<(Vec<u8>, ChunkRefs)>> {
    let staged = BackupDir::local(dir.to_path_buf(), manifest.clone());
    if !staged
        .manifest
        .files
        .iter()
        .any(|f| f.compression == crate::compress::Stored::Chunked)
    {
        return Ok(None);
    }
    let refs = refs_from_indexes(&staged)?;
    Ok(Some(refs.encode_with_record()))
}

/// The reference list of a backup whose indexes name `ids` (before any encryption) and the
/// manifest's record of it.
pub fn encode_refs<'a>(ids: impl IntoIterator<Item = &'a ChunkId>) -> (Vec<u8>, ChunkRefs) {
    Refs::from_keys(ids.into_iter().map(key).collect()).encode_with_record()
}

/// `backup`'s reference list: `Ok(None)` when its manifest records none (a backup made before
/// lists existed, or a full one); an error saying why when the file is missing, unreadable or
/// not exactly what the manifest records.
pub fn read_refs(backup: &BackupDir) -> Result<Option<Refs>, String> {
    let Some(record) = &backup.manifest.chunk_refs else {
        return Ok(None);
    };
    let size = record
        .count
        .checked_mul(8)
        .and_then(|n| n.checked_add(HEADER.len() as u64))
        .ok_or("the manifest records an impossible count")?;
    let mut bytes = Vec::new();
    backup
        .open_file(REFS_PATH)
        .and_then(|f| f.take(size + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 != size {
        return Err(format!(
            "it holds {} bytes, the manifest's record {size}",
            bytes.len()
        ));
    }
    if to_hex(&sha256(&bytes)) != record.sha256 {
        return Err("its sha256 is not the manifest's".into());
    }
    Refs::decode(&bytes).map(Some)
}

/// The chunks `backup` names, for garbage collection: its reference list when it is exactly
/// what the manifest records, its indexes otherwise.
pub fn backup_refs(backup: &BackupDir) -> io::Result<Refs> {
    match read_refs(backup) {
        Ok(Some(refs)) => Ok(refs),
        Ok(None) | Err(_) => refs_from_indexes(backup),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(first: u8, last: u8) -> ChunkId {
        let mut bytes = [0u8; 32];
        bytes[0] = first;
        bytes[31] = last;
        ChunkId(bytes)
    }

    #[test]
    fn a_set_merges_sorted_and_knows_a_chunk_by_its_first_eight_bytes() {
        let mut set = Refs::from_keys(vec![key(&id(5, 0)), key(&id(1, 0)), key(&id(5, 0))]);
        assert_eq!(set.len(), 2);
        set.extend(&Refs::from_keys(vec![key(&id(3, 0)), key(&id(9, 0))]));
        set.extend(&Refs::from_keys(vec![key(&id(1, 0))]));
        assert_eq!(set.len(), 4);
        assert!(set.0.windows(2).all(|w| w[0] < w[1]), "{set:?}");
        for first in [1, 3, 5, 9] {
            assert!(set.contains(&id(first, 0)) && set.contains(&id(first, 7)));
        }
        assert!(!set.contains(&id(2, 0)) && !set.contains(&id(10, 0)));
    }

    #[test]
    fn a_list_reads_back_and_nothing_else_decodes() {
        let set = Refs::from_keys(vec![7, 1, u64::MAX]);
        assert_eq!(Refs::decode(&set.encode()).unwrap(), set);
        let good = set.encode();
        for bad in [
            &good[..good.len() - 1],
            &good[1..],
            &[HEADER, &9u64.to_be_bytes(), &3u64.to_be_bytes()].concat()[..],
            &[HEADER, &3u64.to_be_bytes(), &3u64.to_be_bytes()].concat()[..],
        ] {
            assert!(Refs::decode(bad).is_err(), "{bad:?}");
        }
    }
}

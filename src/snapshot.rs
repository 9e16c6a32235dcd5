//! Qdrant collection snapshots: checking that a stream is a snapshot Qdrant can restore.
//!
//! A collection snapshot is an uncompressed GNU tar (`qdrant-snapshot-api.md` §3): one directory
//! per shard id with `segments/<uuid>.tar` (nested tars), `wal/…`, `replica_state.json` and
//! `shard_config.json`, then `version.info`, `config.json`, `shard_key_mapping.json` and
//! `payload_index.json` last. The check reads the stream once, front to back.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::Component;

use serde::Serialize;
use tar::{Archive, EntryType};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a readable tar archive: {0}")]
    Tar(io::Error),
    #[error(
        "entry `{path}` has type {kind:?}; Qdrant accepts only files, directories and sparse files"
    )]
    EntryType { path: String, kind: EntryType },
    #[error("entry `{0}` has an unsafe path")]
    UnsafePath(String),
    #[error("nested segment archive `{path}` is not readable: {source}")]
    Segment { path: String, source: io::Error },
    #[error("`{0}` is missing")]
    Missing(&'static str),
    #[error("`{path}` is not valid JSON: {reason}")]
    BadJson { path: String, reason: String },
    #[error("the snapshot has no shard directories")]
    NoShards,
    #[error("shard {shard} lacks `{file}`")]
    ShardIncomplete { shard: u32, file: &'static str },
    #[error("shard {shard} holds no local data (`is_local: false`); Qdrant cannot restore it on a single node")]
    RemoteShard { shard: u32 },
}

/// What a readable snapshot contains.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Collection storage version from `version.info` (not the Qdrant version).
    pub storage_version: String,
    /// `params` of `config.json`.
    pub params: serde_json::Value,
    pub shards: Vec<ShardSummary>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ShardSummary {
    pub id: u32,
    pub segments: usize,
    pub is_local: bool,
}

#[derive(Default)]
struct ShardSeen {
    segments: usize,
    replica_state: Option<bool>,
    shard_config: bool,
}

/// Reads a collection snapshot from `reader` to its end and checks its structure.
pub fn inspect(reader: impl Read) -> Result<Summary, SnapshotError> {
    inspect_layout(reader, Layout::Collection)
}

/// Reads a shard snapshot (one shard's layout at the archive root, as
/// `POST /collections/{c}/shards/{id}/snapshots` makes it) to its end and checks it.
pub fn inspect_shard(reader: impl Read) -> Result<ShardSummary, SnapshotError> {
    let summary = inspect_layout(reader, Layout::Shard)?;
    Ok(summary
        .shards
        .into_iter()
        .next()
        .expect("a shard snapshot has its one shard"))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Shard directories, then `config.json` and `version.info`.
    Collection,
    /// One shard's files at the root.
    Shard,
}

fn inspect_layout(reader: impl Read, layout: Layout) -> Result<Summary, SnapshotError> {
    let mut archive = Archive::new(reader);
    let mut shards: BTreeMap<u32, ShardSeen> = BTreeMap::new();
    let mut storage_version = None;
    let mut config = None;
    for entry in archive.entries().map_err(SnapshotError::Tar)? {
        let mut entry = entry.map_err(SnapshotError::Tar)?;
        let path = entry_path(&entry)?;
        check_entry_type(&entry, &path)?;
        if path.is_empty() {
            continue;
        }
        let mut parts = path.split('/').filter(|p| !p.is_empty()).peekable();
        let shard = match layout {
            Layout::Shard => Some(0),
            Layout::Collection => parts.peek().and_then(|first| first.parse::<u32>().ok()),
        };
        if shard.is_some() && layout == Layout::Collection {
            parts.next();
        }
        let rest: Vec<&str> = parts.collect();
        if let Some(shard) = shard {
            let seen = shards.entry(shard).or_default();
            match rest.as_slice() {
                ["segments", name] if name.ends_with(".tar") => {
                    check_segment(&mut entry, &path)?;
                    seen.segments += 1;
                }
                ["replica_state.json"] => {
                    let state = read_json(&mut entry, &path)?;
                    seen.replica_state = Some(
                        state
                            .get("is_local")
                            .and_then(|v| v.as_bool())
                            .unwrap_or(true),
                    );
                }
                ["shard_config.json"] => {
                    read_json(&mut entry, &path)?;
                    seen.shard_config = true;
                }
                _ => {}
            }
            continue;
        }
        match path.as_str() {
            "version.info" => {
                let mut text = String::new();
                entry
                    .read_to_string(&mut text)
                    .map_err(|e| SnapshotError::BadJson {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                storage_version = Some(text.trim().to_string());
            }
            "config.json" => config = Some(read_json(&mut entry, &path)?),
            "shard_key_mapping.json" | "payload_index.json" => {
                read_json(&mut entry, &path)?;
            }
            _ => {}
        }
    }
    // Read the tar's trailing padding too, so a hash over the stream covers every byte.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(SnapshotError::Tar)?;

    let (config, storage_version) = match layout {
        Layout::Shard => (serde_json::Value::Null, String::new()),
        Layout::Collection => (
            config.ok_or(SnapshotError::Missing("config.json"))?,
            storage_version.ok_or(SnapshotError::Missing("version.info"))?,
        ),
    };
    if shards.is_empty() {
        return Err(SnapshotError::NoShards);
    }
    let mut summaries = Vec::new();
    for (id, seen) in shards {
        let is_local = seen.replica_state.ok_or(SnapshotError::ShardIncomplete {
            shard: id,
            file: "replica_state.json",
        })?;
        if !seen.shard_config {
            return Err(SnapshotError::ShardIncomplete {
                shard: id,
                file: "shard_config.json",
            });
        }
        if !is_local {
            return Err(SnapshotError::RemoteShard { shard: id });
        }
        summaries.push(ShardSummary {
            id,
            segments: seen.segments,
            is_local,
        });
    }
    Ok(Summary {
        storage_version,
        params: config.get("params").cloned().unwrap_or_default(),
        shards: summaries,
    })
}

fn entry_path<R: Read>(entry: &tar::Entry<R>) -> Result<String, SnapshotError> {
    let path = entry.path().map_err(SnapshotError::Tar)?;
    let safe = !path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    let text = path.to_string_lossy().trim_start_matches("./").to_string();
    if safe {
        Ok(text)
    } else {
        Err(SnapshotError::UnsafePath(text))
    }
}

fn check_entry_type<R: Read>(entry: &tar::Entry<R>, path: &str) -> Result<(), SnapshotError> {
    let kind = entry.header().entry_type();
    if matches!(
        kind,
        EntryType::Regular | EntryType::Directory | EntryType::GNUSparse
    ) {
        Ok(())
    } else {
        Err(SnapshotError::EntryType {
            path: path.to_string(),
            kind,
        })
    }
}

/// A segment is itself a tar; walk its entries (their bodies are skipped, not decoded).
fn check_segment(entry: &mut impl Read, path: &str) -> Result<(), SnapshotError> {
    let segment_error = |source| SnapshotError::Segment {
        path: path.to_string(),
        source,
    };
    let mut nested = Archive::new(entry);
    let mut count = 0;
    for inner in nested.entries().map_err(segment_error)? {
        let inner = inner.map_err(segment_error)?;
        let inner_path = entry_path(&inner)?;
        check_entry_type(&inner, &format!("{path}/{inner_path}"))?;
        count += 1;
    }
    if count == 0 {
        return Err(segment_error(io::Error::new(
            io::ErrorKind::InvalidData,
            "empty archive",
        )));
    }
    // Drain the nested archive's padding so the outer entry ends where the outer tar expects.
    io::copy(&mut nested.into_inner(), &mut io::sink()).map_err(segment_error)?;
    Ok(())
}

fn read_json(entry: &mut impl Read, path: &str) -> Result<serde_json::Value, SnapshotError> {
    let mut text = Vec::new();
    entry
        .read_to_end(&mut text)
        .map_err(|e| SnapshotError::BadJson {
            path: path.to_string(),
            reason: e.to_string(),
        })?;
    serde_json::from_slice(&text).map_err(|e| SnapshotError::BadJson {
        path: path.to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &[u8] = include_bytes!("../tests/fixtures/qdrant/small-plain.snapshot");
    const NAMED: &[u8] = include_bytes!("../tests/fixtures/qdrant/small-named.snapshot");

    #[test]
    fn reads_real_snapshots() {
        let plain = inspect(PLAIN).unwrap();
        assert_eq!(plain.storage_version, "0.4.2");
        assert_eq!(plain.params["vectors"]["size"], 8);
        assert_eq!(plain.shards.len(), 1);
        assert!(plain.shards[0].segments >= 1);
        let named = inspect(NAMED).unwrap();
        assert_eq!(named.params["vectors"]["dense"]["distance"], "Cosine");
        assert!(named.params["sparse_vectors"]["keywords"].is_object());
    }

    #[test]
    fn rejects_damaged_snapshots() {
        assert!(inspect(&PLAIN[..PLAIN.len() / 2]).is_err(), "truncated");
        assert!(inspect(&b"definitely not a tar archive, just some text..."[..]).is_err());
        let mut flipped = PLAIN.to_vec();
        flipped[100] ^= 0xff; // inside the first header's name: the header checksum breaks
        assert!(inspect(&flipped[..]).is_err());
    }

    #[test]
    fn rejects_a_snapshot_without_config() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(4);
        header.set_cksum();
        builder
            .append_data(&mut header, "version.info", &b"0.4."[..])
            .unwrap();
        let bytes = builder.into_inner().unwrap();
        assert!(matches!(
            inspect(&bytes[..]),
            Err(SnapshotError::Missing("config.json"))
        ));
    }
}

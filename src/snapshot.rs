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
    #[error("`{path}` is larger than the {limit} bytes wqm reads of it")]
    TooLarge { path: String, limit: u64 },
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
    let mut archive = Archive::new(Guard::new(reader));
    let mut shards: BTreeMap<u32, ShardSeen> = BTreeMap::new();
    let mut top = TopLevel::default();
    for entry in archive.entries().map_err(SnapshotError::Tar)? {
        let mut entry = entry.map_err(SnapshotError::Tar)?;
        let path = entry_path(&entry)?;
        check_entry_type(&entry, &path)?;
        if path.is_empty() {
            continue;
        }
        match split_shard(&path, layout) {
            Some((shard, rest)) => shards
                .entry(shard)
                .or_default()
                .read(&mut entry, &path, &rest)?,
            None => top.read(&mut entry, &path)?,
        }
    }
    // Read the tar's trailing padding too, so a hash over the stream covers every byte.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(SnapshotError::Tar)?;

    let (config, storage_version) = match layout {
        Layout::Shard => (serde_json::Value::Null, String::new()),
        Layout::Collection => (
            top.config.ok_or(SnapshotError::Missing("config.json"))?,
            top.storage_version
                .ok_or(SnapshotError::Missing("version.info"))?,
        ),
    };
    if shards.is_empty() {
        return Err(SnapshotError::NoShards);
    }
    let shards = shards
        .into_iter()
        .map(|(id, seen)| seen.summary(id))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Summary {
        storage_version,
        params: config.get("params").cloned().unwrap_or_default(),
        shards,
    })
}

/// The shard an entry belongs to and its path inside the shard; `None` for a collection's
/// own files (a shard snapshot has only its one shard, numbered 0 here).
fn split_shard(path: &str, layout: Layout) -> Option<(u32, Vec<&str>)> {
    let mut parts = path.split('/').filter(|p| !p.is_empty()).peekable();
    let shard = match layout {
        Layout::Shard => 0,
        Layout::Collection => {
            let shard = parts.peek()?.parse::<u32>().ok()?;
            parts.next();
            shard
        }
    };
    Some((shard, parts.collect()))
}

impl ShardSeen {
    /// Checks one entry of the shard (`rest` is its path inside the shard) and notes what it is.
    fn read(
        &mut self,
        entry: &mut impl Read,
        path: &str,
        rest: &[&str],
    ) -> Result<(), SnapshotError> {
        match rest {
            ["segments", name] if name.ends_with(".tar") => {
                check_segment(entry, path)?;
                self.segments += 1;
            }
            ["replica_state.json"] => {
                let state = read_json(entry, path)?;
                self.replica_state = Some(
                    state
                        .get("is_local")
                        .and_then(|v| v.as_bool())
                        .unwrap_or(true),
                );
            }
            ["shard_config.json"] => {
                read_json(entry, path)?;
                self.shard_config = true;
            }
            _ => {}
        }
        Ok(())
    }

    /// A shard Qdrant can restore on a single node: both state files, and its data local.
    fn summary(self, id: u32) -> Result<ShardSummary, SnapshotError> {
        let is_local = self.replica_state.ok_or(SnapshotError::ShardIncomplete {
            shard: id,
            file: "replica_state.json",
        })?;
        if !self.shard_config {
            return Err(SnapshotError::ShardIncomplete {
                shard: id,
                file: "shard_config.json",
            });
        }
        if !is_local {
            return Err(SnapshotError::RemoteShard { shard: id });
        }
        Ok(ShardSummary {
            id,
            segments: self.segments,
            is_local,
        })
    }
}

/// A collection snapshot's own files, outside the shard directories.
#[derive(Default)]
struct TopLevel {
    storage_version: Option<String>,
    config: Option<serde_json::Value>,
}

impl TopLevel {
    /// Checks one top-level entry; the JSON files must parse, `version.info` is kept as text.
    fn read(&mut self, entry: &mut impl Read, path: &str) -> Result<(), SnapshotError> {
        match path {
            "version.info" => {
                let mut text = String::new();
                entry
                    .take(MAX_JSON_BYTES)
                    .read_to_string(&mut text)
                    .map_err(|e| SnapshotError::BadJson {
                        path: path.to_string(),
                        reason: e.to_string(),
                    })?;
                self.storage_version = Some(text.trim().to_string());
            }
            "config.json" => self.config = Some(read_json(entry, path)?),
            "shard_key_mapping.json" | "payload_index.json" => {
                read_json(entry, path)?;
            }
            _ => {}
        }
        Ok(())
    }
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
    let mut nested = Archive::new(Guard::new(entry));
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
        .take(MAX_JSON_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|e| SnapshotError::BadJson {
            path: path.to_string(),
            reason: e.to_string(),
        })?;
    if text.len() as u64 > MAX_JSON_BYTES {
        return Err(SnapshotError::TooLarge {
            path: path.to_string(),
            limit: MAX_JSON_BYTES,
        });
    }
    serde_json::from_slice(&text).map_err(|e| SnapshotError::BadJson {
        path: path.to_string(),
        reason: e.to_string(),
    })
}

/// The most of a JSON file of a snapshot (`config.json`, `replica_state.json`, ...) that is
/// read; Qdrant's are a few KiB.
const MAX_JSON_BYTES: u64 = 16 << 20;

/// The largest GNU long-name or PAX extension entry let through: `tar` reads those into memory
/// whole, and a compressed stream of a few KiB can declare gigabytes of one.
const MAX_EXTENSION_BYTES: u64 = 1 << 20;

const BLOCK: usize = 512;

/// Watches the tar headers go by and stops an extension entry (`L`, `K`, `x`, `g`) larger than
/// `MAX_EXTENSION_BYTES` before `tar` would allocate it. It follows the archive as `tar` does
/// (sizes rounded to blocks, PAX `size`, GNU sparse extension blocks); at a header it cannot
/// vouch for (a bad checksum, an unreadable size) it stops watching, and `tar` reports it.
struct Guard<R> {
    inner: R,
    /// The block being collected, when a header (or sparse extension block) is expected.
    block: Vec<u8>,
    state: GuardState,
    /// PAX `size` for the next entry.
    pax_size: Option<u64>,
}

enum GuardState {
    /// The next bytes are a header block.
    Header,
    /// The next bytes are GNU sparse extension blocks, then `data` bytes of the entry.
    SparseExtension { data: u64 },
    /// Entry data (rounded up to blocks) to pass by; a PAX header's is kept to read `size`.
    Data { left: u64, pax: Option<Vec<u8>> },
    /// The end of the archive, or a header the guard cannot follow: it passes everything.
    Off,
}

impl<R: Read> Guard<R> {
    fn new(inner: R) -> Self {
        Guard {
            inner,
            block: Vec::with_capacity(BLOCK),
            state: GuardState::Header,
            pax_size: None,
        }
    }

    fn watch(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match &mut self.state {
                GuardState::Off => return Ok(()),
                GuardState::Data { left, pax } => {
                    let n = (*left).min(bytes.len() as u64) as usize;
                    if let Some(pax) = pax {
                        pax.extend_from_slice(&bytes[..n]);
                    }
                    *left -= n as u64;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        if let Some(pax) = pax.take() {
                            self.pax_size = pax_size(&pax);
                        }
                        self.state = GuardState::Header;
                    }
                }
                GuardState::Header | GuardState::SparseExtension { .. } => {
                    let n = (BLOCK - self.block.len()).min(bytes.len());
                    self.block.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    if self.block.len() == BLOCK {
                        let block = std::mem::take(&mut self.block);
                        self.next_block(&block)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn next_block(&mut self, block: &[u8]) -> io::Result<()> {
        if let GuardState::SparseExtension { data } = self.state {
            self.state = if block[504] != 0 {
                GuardState::SparseExtension { data }
            } else {
                data_state(data, false)
            };
            return Ok(());
        }
        let (Some(size), true) = (numeric(&block[124..136]), checksum_ok(block)) else {
            // The end (zero blocks) or a header tar itself refuses or reads differently.
            self.state = GuardState::Off;
            return Ok(());
        };
        let kind = block[156];
        let extension = matches!(kind, b'L' | b'K' | b'x' | b'g');
        if extension && size > MAX_EXTENSION_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "an extension header of {size} bytes, more than the {MAX_EXTENSION_BYTES} wqm reads"
                ),
            ));
        }
        let size = match self.pax_size.take().filter(|_| !extension) {
            Some(pax) => pax,
            None => size,
        };
        self.state = if kind == b'S' && block[482] != 0 {
            GuardState::SparseExtension { data: size }
        } else {
            data_state(size, kind == b'x')
        };
        Ok(())
    }
}

fn data_state(size: u64, keep: bool) -> GuardState {
    match size.checked_add(BLOCK as u64 - 1) {
        Some(rounded) if rounded >= BLOCK as u64 => GuardState::Data {
            left: rounded & !(BLOCK as u64 - 1),
            pax: keep.then(Vec::new),
        },
        Some(_) => GuardState::Header,
        None => GuardState::Off,
    }
}

/// A tar number: octal text, or base-256 when the high bit of the first byte is set.
fn numeric(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut value: u64 = 0;
        for (i, &b) in field.iter().enumerate() {
            let b = if i == 0 { b & 0x7f } else { b };
            value = value.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(value);
    }
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c: char| c == ' ' || c == '\0');
    if text.is_empty() {
        return None;
    }
    u64::from_str_radix(text, 8).ok()
}

fn checksum_ok(block: &[u8]) -> bool {
    let sum: u32 = block[..148]
        .iter()
        .chain(&block[156..])
        .map(|&b| u32::from(b))
        .sum::<u32>()
        + 8 * 32;
    numeric(&block[148..156]).is_some_and(|c| c == u64::from(sum))
}

/// `size` of a PAX extended header's records (`<len> size=<n>\n`).
fn pax_size(records: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(records);
    text.lines()
        .filter_map(|line| line.split_once(' ').map(|(_, record)| record))
        .filter_map(|record| record.strip_prefix("size="))
        .next_back()
        .and_then(|n| n.trim().parse().ok())
}

impl<R: Read> Read for Guard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.watch(&buf[..n])?;
        Ok(n)
    }
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

    /// A header with `name`, `kind` and a declared `size`, and no data.
    fn header(name: &str, kind: u8, size: u64) -> Vec<u8> {
        let mut header = tar::Header::new_gnu();
        header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_size(size);
        header.set_entry_type(EntryType::new(kind));
        header.set_cksum();
        header.as_bytes().to_vec()
    }

    #[test]
    fn a_huge_long_name_is_refused_before_tar_reads_it() {
        // 4 GiB of a long name: zeros compress to almost nothing, so a small backup can hold it.
        let stream = io::Cursor::new(header("././@LongLink", b'L', 4 << 30))
            .chain(io::repeat(0).take(4 << 30));
        let err = inspect(stream).unwrap_err();
        assert!(
            err.to_string()
                .contains("an extension header of 4294967296 bytes"),
            "{err}"
        );
        let pax = io::Cursor::new(header("pax", b'x', 1 << 40)).chain(io::repeat(b'1'));
        assert!(inspect(pax).is_err());
    }

    #[test]
    fn a_huge_json_member_is_read_no_further_than_the_limit() {
        let size = MAX_JSON_BYTES + 1024;
        let stream = io::Cursor::new(header("config.json", b'0', size))
            .chain(io::repeat(b' ').take(size))
            .chain(io::repeat(0).take(1024 + 2048));
        let err = inspect(stream).unwrap_err();
        assert!(
            matches!(&err, SnapshotError::TooLarge { path, .. } if path == "config.json"),
            "{err}"
        );
    }

    #[test]
    fn the_guard_follows_long_names_pax_sizes_and_real_snapshots() {
        let mut builder = tar::Builder::new(Vec::new());
        for i in 0..3 {
            let name = format!("0/segments/{}/{i}.bin", "d".repeat(150));
            let mut h = tar::Header::new_gnu();
            h.set_size(700);
            h.set_cksum();
            builder.append_data(&mut h, &name, &[7u8; 700][..]).unwrap();
        }
        // A PAX header whose `size` overrides the next entry's.
        let record = b"16 size=1000000\n";
        let mut pax = header("pax", b'x', record.len() as u64);
        pax.extend_from_slice(record);
        pax.resize(pax.len() + 512 - record.len(), 0);
        let mut bytes = builder.into_inner().unwrap();
        let end = bytes.len() - 1024;
        bytes.truncate(end);
        bytes.extend_from_slice(&pax);
        bytes.extend_from_slice(&header("big", b'0', 5));
        bytes.extend(std::iter::repeat_n(0u8, 1_000_000 + 448 + 1024));
        let mut archive = Archive::new(Guard::new(&bytes[..]));
        let sizes: Vec<u64> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().size())
            .collect();
        assert_eq!(sizes, [700, 700, 700, 1_000_000]);
        for real in [PLAIN, NAMED] {
            let mut guarded = Guard::new(real);
            io::copy(&mut guarded, &mut io::sink()).unwrap();
            assert!(
                matches!(guarded.state, GuardState::Off),
                "followed to the end"
            );
        }
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

//! Entry points for hostile input: each takes arbitrary bytes, runs one parser wqm points at
//! untrusted data, and checks what must hold whatever the bytes are. The fuzz targets in
//! `fuzz/` call these, and so do the property and regression tests (`tests/integration/
//! hostile.rs`), so a crash a fuzzer finds becomes a test of the same function. None may
//! panic, and none may allocate more than a bounded amount.

use std::io::Read;
use std::path::Path;

use crate::config::{Env, Overrides, Settings};
use crate::format::compat;
use crate::format::manifest::{Manifest, MAX_MANIFEST_BYTES};
use crate::format::names::{self, Database, EntryPath};
use crate::snapshot;

/// A manifest, as `validate`, `info`, `list` and `restore` read one: bounded, every name
/// checked. An accepted manifest names only paths inside the backup and known databases, and
/// survives being written and read again.
pub fn manifest(data: &[u8]) {
    let path = Path::new("fuzz/metadata/manifest.json");
    let Ok(manifest) = Manifest::read_from(data, path) else {
        return;
    };
    assert!(data.len() as u64 <= MAX_MANIFEST_BYTES);
    for file in &manifest.files {
        let entry = EntryPath::parse(&file.path).expect("accepted paths are safe");
        let joined = Path::new("/backup").join(entry.as_str());
        assert!(joined.starts_with("/backup/"));
        assert!(!joined
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir)));
    }
    for database in &manifest.databases {
        Database::parse(&database.name).expect("accepted databases are known");
    }
    for name in manifest
        .collection_names()
        .into_iter()
        .chain(manifest.collection_details.keys().map(String::as_str))
    {
        names::check_collection_name(name).expect("accepted collection names are safe");
    }
    let again = Manifest::from_json(&manifest.to_json(), path).expect("a manifest reparses");
    assert_eq!(again.files, manifest.files);
    assert_eq!(again.databases, manifest.databases);
}

/// A configuration file (the copy a backup holds, which `restore --with-config` puts in
/// place): checking it is quick and loading one that passes never panics.
pub fn config(data: &[u8]) {
    // `validate --check-files` and `restore --with-config` check a backup's configuration
    // first; only one that passes would ever be loaded.
    if config_refusal(data).is_some() {
        return;
    }
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let file = dir.path().join("config.yaml");
    if std::fs::write(&file, data).is_err() {
        return;
    }
    let home = dir.path().display().to_string();
    let env = Env::from_pairs([("HOME", home.as_str())]);
    let overrides = Overrides {
        config: Some(file),
        qdrant_url: None,
    };
    let _ = Settings::load(&env, &overrides);
}

/// Why the check of a backup's configuration refuses these bytes, if it does.
pub fn config_refusal(data: &[u8]) -> Option<String> {
    match std::str::from_utf8(data) {
        Err(e) => Some(format!("the configuration is not UTF-8: {e}")),
        Ok(text) => crate::verify::check_config_text(text).err(),
    }
}

/// A version string from a manifest: parsing, comparing and the restore decision.
pub fn version(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (backup, current) = text.split_once('\n').unwrap_or((&text, crate::VERSION));
    if let Ok(version) = compat::Version::parse(backup) {
        let _ = version.key();
    }
    let policy = compat::Policy {
        strict_version_check: data.first().is_some_and(|b| b & 1 == 1),
        allow_dev_versions: data.first().is_some_and(|b| b & 2 == 2),
        allow_patch_downgrade: data.first().is_some_and(|b| b & 4 == 4),
        allow_minor_downgrade: data.first().is_some_and(|b| b & 8 == 8),
        allow_downgrade: data.first().is_some_and(|b| b & 16 == 16),
    };
    // The verdict restore, validate, info and list give, with the real migration registry.
    let _ = crate::format::migrations::verdict(backup, current, &policy);
}

/// A collection or shard snapshot as `validate --check-files` and every restore read it: the
/// whole stream is read, no member outside the archive is accepted.
pub fn snapshot(data: &[u8]) {
    if let Ok(summary) = snapshot::inspect(data) {
        assert!(!summary.shards.is_empty());
    }
    let _ = snapshot::inspect_shard(data);
    // Accepted archives hold no member that leaves the archive.
    if snapshot::inspect(data).is_ok() || snapshot::inspect_shard(data).is_ok() {
        let mut archive = tar::Archive::new(data);
        if let Ok(entries) = archive.entries() {
            for entry in entries.flatten() {
                if let Ok(path) = entry.path() {
                    assert!(!path.is_absolute(), "{}", path.display());
                    assert!(!path
                        .components()
                        .any(|c| matches!(c, std::path::Component::ParentDir)));
                }
            }
        }
    }
}

/// The same as `snapshot`, for a zstd-compressed stream, the way a backup stores it.
pub fn compressed_snapshot(data: &[u8]) {
    if let Ok(decoder) = crate::compress::Compression::Zstd.decoder(data) {
        // A small stream can expand a lot: read no more than a bounded amount.
        let _ = snapshot::inspect(decoder.take(64 << 20));
    }
}

/// A chunk index (`store::chunks`), as restore, validate, prune and export read one: line by
/// line, each accepted line naming a chunk by 64 hex digits (a path inside the store, nothing
/// else) of a length a chunk may have, and no line read without bound.
pub fn chunk_index(data: &[u8]) {
    use crate::store::chunks::IndexReader;
    let Ok(mut index) = IndexReader::new(data) else {
        return;
    };
    while let Ok(Some(line)) = index.next_line() {
        let name = line.id.to_string();
        assert!(name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(line.len >= 1 && line.len <= crate::store::chunks::LARGEST_CHUNK);
    }
}

/// A pack file's index object (`store::chunks::pack`), as every reader of a store on S3 and its
/// garbage collection read one: an accepted index names chunks by 64 hex digits, each of a
/// length a chunk may have, none overlapping the one before.
pub fn pack_index(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let largest = crate::store::chunks::LARGEST_CHUNK;
    if let Ok(entries) = crate::store::chunks::parse_pack_index(text, largest) {
        for pair in entries.windows(2) {
            assert!(pair[0].range().end <= u64::from(pair[1].offset));
        }
        assert!(entries
            .iter()
            .all(|e| e.stored > 0 && e.len as usize <= largest));
    }
}

/// A key object, as opening an encrypted repository reads each one before asking Argon2id for
/// anything: bounded, and whatever passes asks for bounded work. Opening one that parses with a
/// password never panics.
pub fn key_object(data: &[u8]) {
    let Ok(object) = crate::crypto::KeyObject::parse(data, "keys/fuzz") else {
        return;
    };
    assert!(data.len() <= crate::crypto::KEY_OBJECT_LIMIT);
    object
        .params()
        .check()
        .expect("accepted parameters are bounded");
    // Only cheap parameters are tried: the bound, not the fuzzer, limits the work.
    if object.params().memory_kib <= 64 && object.params().iterations <= 2 {
        let _ = object.unwrap_master(&crate::crypto::Password::new("fuzz"));
    }
}

/// An encrypted object, as every read of an encrypted repository decrypts one: any bytes are
/// refused with an error naming the object, never a panic, and nothing unauthenticated comes
/// out (bytes not made by this key never decrypt).
pub fn encrypted_object(data: &[u8]) {
    use std::sync::OnceLock;
    static KEY: OnceLock<crate::crypto::MasterKey> = OnceLock::new();
    let key = KEY.get_or_init(|| crate::crypto::MasterKey::generate().expect("randomness"));
    let identity = crate::crypto::Identity::file("fuzz", "object");
    // Give the bytes this key's header, so the segments are what gets tested.
    let mut object = data.to_vec();
    if object.len() >= crate::crypto::HEADER_LEN {
        object[..8].copy_from_slice(&crate::crypto::MAGIC);
        object[8] = 1;
        object[9..25].copy_from_slice(&key.id());
    }
    for bytes in [data, &object[..]] {
        let error = crate::crypto::decrypt(key, &identity, bytes)
            .expect_err("bytes not made with this key never decrypt");
        assert!(error.to_string().contains("`file/fuzz/object`"), "{error}");
    }
}
